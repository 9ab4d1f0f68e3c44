"""What every dataset source yields: a :class:`ImageDataset` of labelled samples in fixed splits."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from PIL import Image

from mma.errors import MmaError

__all__ = ["Sample", "ImageDataset", "DEFAULT_TEMPLATE", "SPLITS", "clean_classname", "split_fingerprint"]

DEFAULT_TEMPLATE = "a photo of a {}."
SPLITS = ("train", "val", "test")


def clean_classname(name: str) -> str:
    """Class names are shown and prompted with spaces, never underscores (CoOp's convention)."""
    return " ".join(name.replace("_", " ").split())


@dataclass(frozen=True)
class Sample:
    """One labelled image.

    ``ref`` is how the dataset's loader finds the image: a path relative to the dataset root for on-disk
    sources, or a key such as ``"train/17"`` for the built-in in-memory suite.
    """

    ref: str
    label: int


def split_fingerprint(classnames: Sequence[str], splits: dict[str, Sequence[Sample]]) -> str:
    """A content hash of the split definition: class names and every (ref, label) of every split."""
    h = hashlib.sha256()
    h.update(json.dumps(list(classnames)).encode())
    for split in SPLITS:
        for s in splits.get(split, ()):
            h.update(f"{split}\t{s.ref}\t{s.label}\n".encode())
    return h.hexdigest()[:16]


@dataclass
class ImageDataset:
    """A dataset with class names, fixed train/val/test splits and an image loader.

    Parameters
    ----------
    name:
        Short lower-case name (``"eurosat"``, ``"shapes"``...).
    classnames:
        One name per label, underscores already replaced by spaces.
    splits:
        ``{"train": [...], "val": [...], "test": [...]}``; a missing split is an empty list.
    loader:
        ``loader(ref) -> PIL.Image``; :meth:`load_image` converts the result to RGB.
    fingerprint:
        Content hash of the split definition (for on-disk sources: of the split file itself). Keys caches.
    source:
        The data spec this dataset came from (e.g. ``"coop:/data"``), recorded in manifests.
    template:
        The prompt every method reads by default (``"a photo of a {}."``, MMA's official context).
    published_template:
        The per-dataset prompt of the published zero-shot rows, where the data source knows one (CoOp's
        ``zsclip.py`` templates for the CoOp datasets); methods that were published with it read it
        (:meth:`mma.adapters.method_base.MethodBase.prompt_template`). None: :attr:`template`.
    notes:
        What the source decided that the user should hear once (e.g. an implicit 60/20/20 split); the jobs
        print them with their other notes and record them in the run's JSON.
    """

    name: str
    classnames: list[str]
    splits: dict[str, list[Sample]]
    loader: Callable[[str], Image.Image] = field(repr=False)
    fingerprint: str = ""
    source: str = ""
    template: str = DEFAULT_TEMPLATE
    published_template: str | None = None
    notes: list[str] = field(default_factory=list, compare=False)

    def __post_init__(self) -> None:
        self.classnames = [clean_classname(c) for c in self.classnames]
        for split in SPLITS:
            self.splits.setdefault(split, [])
        if not self.fingerprint:
            self.fingerprint = split_fingerprint(self.classnames, self.splits)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def train(self) -> list[Sample]:
        return self.splits["train"]

    @property
    def val(self) -> list[Sample]:
        return self.splits["val"]

    @property
    def test(self) -> list[Sample]:
        return self.splits["test"]

    def load_image(self, sample: Sample | str) -> Image.Image:
        """The sample's image as an RGB PIL image."""
        ref = sample.ref if isinstance(sample, Sample) else sample
        img = self.loader(ref)
        return img if img.mode == "RGB" else img.convert("RGB")

    def prompts(self, template: str | None = None) -> list[str]:
        """One prompt per class, ``template.format(classname)`` (default ``"a photo of a {}."``)."""
        template = template or self.template
        if "{}" not in template:
            raise MmaError(f"The prompt template {template!r} has no '{{}}' where the class name goes.")
        return [template.format(c) for c in self.classnames]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
        return f"ImageDataset({self.name!r}, classes={self.num_classes}, {sizes})"
