"""Reading images for a model: one path, so every stage counts and reports unreadable files the same way.

:class:`ImageReader` is the torch ``Dataset`` over samples (an unreadable image yields ``None``);
:func:`collate_readable` stacks the readable rows; :func:`readable_batches` walks a DataLoader of such rows in
the main process and tells a :class:`ReadReport` which images it could not read. With ``strict`` the report (and
the reader, where it runs in this process) stops at the first one with one sentence naming the file. Extraction,
training, evaluation and ``mma predict`` all read through here, and record :meth:`ReadReport.record` in their JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from mma import distributed
from mma.errors import MmaError, one_line

from .base import ImageDataset, Sample

__all__ = ["ImageReader", "ReadReport", "collate_readable", "readable_batches", "unreadable_line"]

_EXAMPLES = 5


def unreadable_line(record: dict) -> str:
    """The one terminal line of a :meth:`ReadReport.record` ("" when every image was read)."""
    if not record["unreadable"]:
        return ""
    return f"{record['dataset']}: skipped {record['unreadable']} unreadable image(s), e.g. {record['examples'][:3]}."


def _unreadable_error(ref: str, dataset: str, why: str = "") -> MmaError:
    reason = f" ({why})" if why else ""
    return MmaError(
        f"Cannot read image {ref!r} of dataset {dataset!r}{reason}; drop --strict to skip unreadable images."
    )


@dataclass
class ReadReport:
    """Which images of one dataset could not be read (each counted once, however often it was tried) and how
    many were read.

    ``strict``: :meth:`add` raises :class:`MmaError` naming the image instead of counting it.
    """

    dataset: str = ""
    strict: bool = False
    read: int = 0  # images read (an image read every epoch counts once per pass: see :meth:`record`)
    refs: dict[str, None] = field(default_factory=dict)  # the unreadable ones, in the order they were met

    @property
    def unreadable(self) -> int:
        return len(self.refs)

    @property
    def examples(self) -> list[str]:
        return list(self.refs)[:_EXAMPLES]

    def add(self, ref: str) -> None:
        if self.strict:
            raise _unreadable_error(ref, self.dataset)
        self.refs.setdefault(ref, None)

    def merge_ranks(self) -> ReadReport:
        """Every torchrun rank's unreadable images and read count in each rank's report (a collective: call it on
        every rank; nothing to do in one process)."""
        if distributed.world().many:
            parts = distributed.all_gather((list(self.refs), self.read))
            self.refs = {ref: None for refs, _ in parts for ref in refs}
            self.read = sum(n for _, n in parts)
        return self

    def record(self, images: int | None = None) -> dict:
        """What a run's JSON keeps: the dataset, the images counted (*images*: what an accuracy's denominator saw,
        or the images trained on), the unreadable count and a few examples."""
        return {"dataset": self.dataset, "images": images, "unreadable": self.unreadable, "examples": self.examples}


class ImageReader(torch.utils.data.Dataset):
    """``reader[i] -> (index, image_tensor, label)``, or ``(index, None, label)`` for an unreadable image.

    With ``strict=True`` an unreadable image raises :class:`MmaError` naming the file (and why) instead.
    Use :func:`collate_readable` as the DataLoader's ``collate_fn`` and walk it with :func:`readable_batches`.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        samples: Sequence[Sample],
        transform: Callable,
        *,
        strict: bool = False,
    ) -> None:
        self.dataset = dataset
        self.samples = list(samples)
        self.transform = transform
        self.strict = strict

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        s = self.samples[i]
        try:
            img = self.dataset.load_image(s)
            img.load()
        except (OSError, ValueError, SyntaxError) as exc:
            if self.strict:
                raise _unreadable_error(s.ref, self.dataset.name, one_line(exc)) from exc
            return i, None, s.label
        return i, self.transform(img), s.label


def collate_readable(batch):
    """Stack the readable rows; returns ``(indices, images, labels, unreadable_indices)``."""
    ok = [b for b in batch if b[1] is not None]
    bad = [b[0] for b in batch if b[1] is None]
    if not ok:
        return torch.empty(0, dtype=torch.long), None, torch.empty(0, dtype=torch.long), bad
    idx = torch.tensor([b[0] for b in ok], dtype=torch.long)
    images = torch.stack([b[1] for b in ok])
    labels = torch.tensor([b[2] for b in ok], dtype=torch.long)
    return idx, images, labels, bad


def readable_batches(
    loader: Iterable, samples: Sequence[Sample], report: ReadReport | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
    """``(indices, inputs or None, labels)`` of each batch of *loader* (rows of :func:`collate_readable`, indices
    into *samples*); the unreadable rows go to *report* (which raises under ``strict``), the read ones are counted."""
    for idx, inputs, labels, bad in loader:
        if report is not None:
            for i in bad:
                report.add(samples[i].ref)
            report.read += len(idx)
        yield idx, inputs, labels
