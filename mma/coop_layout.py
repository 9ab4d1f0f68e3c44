"""Where each CoOp dataset lives under ``coop:ROOT`` (CoOp's ``DATASETS.md`` layout), as plain data.

The CoOp data source (:mod:`mma.probe.data.coop`) owns these facts and reads the datasets by them; they live
here, on the ground floor, because ``mma reproduce --help`` lists the folders, and the help must not import torch
(every module of :mod:`mma.probe` does). Nothing here reads the disk but :func:`coop_root`, which
checks that ROOT is a folder (``mma reproduce`` asks it before importing torch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mma.data_spec import parse_data_spec, user_path
from mma.errors import MmaError

__all__ = ["COOP_DATASETS", "COOP_FOLDERS", "CoopFolder", "coop_folder_names", "coop_root", "coop_spec"]

#: the 11 few-shot datasets, then the 4 ImageNet shifts, in CoOp's order
COOP_DATASETS = (
    "imagenet",
    "caltech101",
    "oxford_pets",
    "stanford_cars",
    "oxford_flowers",
    "food101",
    "fgvc_aircraft",
    "sun397",
    "dtd",
    "eurosat",
    "ucf101",
    "imagenetv2",
    "imagenet_sketch",
    "imagenet_a",
    "imagenet_r",
)


_CALTECH_IGNORED = ("BACKGROUND_Google", "Faces_easy")


@dataclass(frozen=True)
class CoopFolder:
    """Where one CoOp dataset lives under ROOT and how to read it (all paths relative to ROOT)."""

    name: str
    folder: str  # the dataset's own folder
    reader: str  # "zhou" | "fgvc" | "imagenet" | "imagenetv2" | "wnid"
    images: tuple[str, ...]  # candidate image folders; the first that exists is used
    split: str = ""  # the split_zhou file ("zhou" reader)
    subset: bool = False  # "wnid" reader: classes = the wnid folders present (ImageNet-A / -R)
    ignored: tuple[str, ...] = ()  # class folders / names dropped from the split file

    @property
    def split_path(self) -> str:
        return f"{self.folder}/{self.split}"

    @property
    def classnames_paths(self) -> tuple[str, ...]:
        own = f"{self.folder}/classnames.txt"
        return (own,) if self.folder == "imagenet" else (own, "imagenet/classnames.txt")

    @property
    def layout(self) -> str:
        """The expected files, as one short phrase (used by describe_coop and in error messages)."""
        image = self.images[0] + "/"
        if self.reader == "zhou":
            return f"{image} + {self.split_path}"
        if self.reader == "fgvc":
            txt = f"{self.folder}/images_variant_{{train,val,test}}.txt"
            return f"{image}<id>.jpg + {self.folder}/variants.txt + {txt}"
        if self.reader == "imagenet":
            return f"{image}{{train,val}}/<wnid>/ + {self.classnames_paths[0]} (val/ is the test split)"
        folders = "<label 0..999>" if self.reader == "imagenetv2" else "<wnid>"
        return f"{image}{folders}/ + classnames.txt (test only)"


def _zhou(name: str, folder: str, images: str, stem: str, **kw) -> CoopFolder:
    """A dataset read from ``<folder>/split_zhou_<stem>.json`` with images under ``<folder>/<images>``."""
    image_dir = f"{folder}/{images}".rstrip("/")
    return CoopFolder(name, folder, "zhou", (image_dir,), split=f"split_zhou_{stem}.json", **kw)


COOP_FOLDERS: dict[str, CoopFolder] = {
    info.name: info
    for info in (
        CoopFolder("imagenet", "imagenet", "imagenet", ("imagenet/images",)),
        _zhou("caltech101", "caltech-101", "101_ObjectCategories", "Caltech101", ignored=_CALTECH_IGNORED),
        _zhou("oxford_pets", "oxford_pets", "images", "OxfordPets"),
        _zhou("stanford_cars", "stanford_cars", "", "StanfordCars"),
        _zhou("oxford_flowers", "oxford_flowers", "jpg", "OxfordFlowers"),
        _zhou("food101", "food-101", "images", "Food101"),
        CoopFolder("fgvc_aircraft", "fgvc_aircraft", "fgvc", ("fgvc_aircraft/images",)),
        _zhou("sun397", "sun397", "SUN397", "SUN397"),
        # DATASETS.md has dtd/images/; extracting the archive into dtd/ gives dtd/dtd/images/, also accepted.
        CoopFolder(
            "dtd",
            "dtd",
            "zhou",
            ("dtd/images", "dtd/dtd/images"),
            split="split_zhou_DescribableTextures.json",
        ),
        _zhou("eurosat", "eurosat", "2750", "EuroSAT"),
        _zhou("ucf101", "ucf101", "UCF-101-midframes", "UCF101"),
        CoopFolder("imagenetv2", "imagenetv2", "imagenetv2", ("imagenetv2/imagenetv2-matched-frequency-format-val",)),
        CoopFolder("imagenet_sketch", "imagenet-sketch", "wnid", ("imagenet-sketch/images",)),
        CoopFolder("imagenet_a", "imagenet-adversarial", "wnid", ("imagenet-adversarial/imagenet-a",), subset=True),
        CoopFolder("imagenet_r", "imagenet-rendition", "wnid", ("imagenet-rendition/imagenet-r",), subset=True),
    )
}


def coop_folder_names() -> list[str]:
    """The folder of each CoOp dataset under ROOT, in :data:`COOP_DATASETS` order (``caltech-101``, ...)."""
    return [COOP_FOLDERS[name].folder for name in COOP_DATASETS]


def coop_root(root: str | os.PathLike) -> Path:
    """*root* as a path; one sentence naming the expected folders if it is not a folder."""
    base = user_path(root, "The CoOp data root")
    if not base.is_dir():
        raise MmaError(
            f"The CoOp data root {str(base)!r} does not exist; coop:ROOT expects CoOp's DATASETS.md layout "
            f"with folders such as {', '.join(f'{f}/' for f in coop_folder_names())}."
        )
    return base


def coop_spec(text: str) -> tuple[str, tuple[str, ...] | None]:
    """``(ROOT, names or None)`` of a ``coop:ROOT[:A,B]`` spec whose ROOT is a folder; anything else is one sentence."""
    spec = parse_data_spec(text)
    if spec.kind != "coop":  # not a method: the CoOp data source
        raise MmaError(
            f"--data {text!r} is not a CoOp data spec; mma reproduce runs the paper's protocols on the CoOp "
            "datasets: give coop:ROOT or coop:ROOT:A,B (CoOp's DATASETS.md layout)."
        )
    coop_root(spec.root)
    return spec.root, spec.names
