"""CoOp's on-disk layout (``coop:ROOT[:A,B]``): the 11 few-shot datasets and the 4 ImageNet shifts.

The folders are those of CoOp's ``DATASETS.md``. Four kinds of reader cover the 15 datasets:

* ``split_zhou_<Name>.json`` (9 datasets): ``{"train": [...], "val": [...], "test": [...]}``, each entry
  ``[image path relative to the image folder, label, class name]``. Class names come from the entries.
* FGVCAircraft: ``variants.txt`` (one class per line, label = line order) and
  ``images_variant_{train,val,test}.txt`` (lines ``<image id> <variant, may contain spaces>``).
* ImageNet: ``images/train/<wnid>/`` and ``images/val/<wnid>/``, names from ``classnames.txt``
  (lines ``<wnid> <class name>``), labels in sorted wnid order. As in CoOp, ``val/`` is the test split
  and the val split is a copy of it (so a few-shot val draw has something to draw from).
* ImageNet shifts (V2, Sketch, A, R): test split only. V2 folders are ``0..999`` (the label itself); the
  others are wnid folders. A and R hold 200 of the 1000 classes: the classes are the wnid folders
  present, labelled 0..199 in sorted wnid order. Each reads ``classnames.txt`` from its own folder (as
  CoOp's DATASETS.md asks) or, failing that, from ``imagenet/classnames.txt``.

Every sample's ``ref`` is relative to the dataset's image folder; the loader opens ``image_dir / ref``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from mma.coop_layout import COOP_DATASETS, coop_folder_names, coop_root
from mma.coop_layout import COOP_FOLDERS as _INFO
from mma.coop_layout import CoopFolder as _Info
from mma.errors import MmaError, closest, one_line
from mma.probe.data.base import DEFAULT_TEMPLATE, SPLITS, ImageDataset, Sample
from mma.probe.data.folder import IMAGE_SUFFIXES

__all__ = [
    "COOP_DATASETS",
    "COOP_SOURCE",
    "COOP_SHIFTS",
    "PUBLISHED_TEMPLATES",
    "canonical_coop_name",
    "describe_coop",
    "find_coop",
    "load_coop",
]


#: the benchmark's source dataset (cross-dataset and domain generalisation train on it) and its shifted variants
COOP_SOURCE = "imagenet"
COOP_SHIFTS = {COOP_SOURCE: ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")}

#: the zero-shot prompt of each dataset in the published CLIP rows: CoOp's ``trainers/zsclip.py`` CUSTOM_TEMPLATES
#: (github.com/KaiyangZhou/CoOp, commit ff61507), which CLIP-Adapter's ``clip_adapter.py`` repeats character for
#: character; every ImageNet variant reads "a photo of a {}."
PUBLISHED_TEMPLATES = {
    "oxford_pets": "a photo of a {}, a type of pet.",
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "food101": "a photo of {}, a type of food.",
    "ucf101": "a photo of a person doing {}.",
}

RESEARCH_ONLY = "see dataset website (research only)"

# name: (classes, train, val, test) as loaded from CoOp's files; 0 = an empty split. ImageNet's val is its
# test list (see the module docstring).
_SIZES = {
    "imagenet": (1000, 1281167, 50000, 50000),
    "caltech101": (100, 4128, 1649, 2465),
    "oxford_pets": (37, 2944, 736, 3669),
    "stanford_cars": (196, 6509, 1635, 8041),
    "oxford_flowers": (102, 4093, 1633, 2463),
    "food101": (101, 50500, 20200, 30300),
    "fgvc_aircraft": (100, 3334, 3333, 3333),
    "sun397": (397, 15880, 3970, 19850),
    "dtd": (47, 2820, 1128, 1692),
    "eurosat": (10, 13500, 5400, 8100),
    "ucf101": (101, 7639, 1898, 3783),
    "imagenetv2": (1000, 0, 0, 10000),
    "imagenet_sketch": (1000, 0, 0, 50889),
    "imagenet_a": (200, 0, 0, 7500),
    "imagenet_r": (200, 0, 0, 30000),
}

# The datasets' own terms of use, in short; check each dataset's website before redistributing anything.
_LICENCES = {
    "imagenet": "ImageNet terms of access (non-commercial research)",
    "oxford_pets": "CC BY-SA 4.0 (see dataset website)",
    "fgvc_aircraft": "see dataset website (non-commercial research only)",
    "eurosat": "MIT (see dataset website)",
}


# Other spellings, compared after lower-casing and dropping everything but letters and digits.
_ALIASES = {
    "flowers": "oxford_flowers",
    "flowers102": "oxford_flowers",
    "oxfordflowers102": "oxford_flowers",
    "pets": "oxford_pets",
    "cars": "stanford_cars",
    "aircraft": "fgvc_aircraft",
    "fgvc": "fgvc_aircraft",
    "caltech": "caltech101",
    "food": "food101",
    "sun": "sun397",
    "describabletextures": "dtd",
    "ucf": "ucf101",
    "imagenetadversarial": "imagenet_a",
    "imagenetrendition": "imagenet_r",
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_LOOKUP = {_key(n): n for n in COOP_DATASETS} | _ALIASES


def _canonical(name: str) -> str:
    """The canonical dataset name for *name* (case-insensitive, aliases accepted)."""
    found = _LOOKUP.get(_key(str(name)))
    if found is None:
        hint = closest(str(name).lower(), COOP_DATASETS + tuple(_ALIASES))
        raise MmaError(
            f"Unknown CoOp dataset {name!r}"
            + (f" ({hint})" if hint else "")
            + f"; valid names: {', '.join(COOP_DATASETS)}."
        )
    return found


# -- small file helpers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Opener:
    """``opener(ref) -> PIL image`` for refs relative to one folder (a class, so it pickles for workers)."""

    folder: Path

    def __call__(self, ref: str) -> Image.Image:
        return Image.open(self.folder / ref)


def _dataset(
    info: _Info,
    classnames: list[str],
    splits: dict[str, list[Sample]],
    image_dir: Path,
    fingerprint: str,
    source: str,
) -> ImageDataset:
    return ImageDataset(
        info.name, classnames, splits, _Opener(image_dir), fingerprint=fingerprint, source=source,
        published_template=PUBLISHED_TEMPLATES.get(info.name, DEFAULT_TEMPLATE),
    )  # fmt: skip


def _missing(root: Path, info: _Info, path: str) -> MmaError:
    return MmaError(
        f"The CoOp dataset {info.name!r} is incomplete: {str(root / path)!r} does not exist; expected "
        f"ROOT/{info.layout} under ROOT={str(root)!r} (CoOp's DATASETS.md)."
    )


def _first_existing(root: Path, info: _Info, candidates: Iterable[str]) -> Path:
    """The first of *candidates* (relative to root) that exists; else an error naming the first one."""
    candidates = list(candidates)
    for rel in candidates:
        if (root / rel).exists():
            return root / rel
    raise _missing(root, info, candidates[0])


def _require(root: Path, info: _Info, *paths: str) -> list[Path]:
    """``root / p`` for every path, or an error naming the first that is missing."""
    for rel in paths:
        if not (root / rel).exists():
            raise _missing(root, info, rel)
    return [root / rel for rel in paths]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MmaError(f"The file {str(path)!r} is not UTF-8 text ({exc.reason}); re-download it.") from None


def _digest(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()[:16]


def _images_in(folder: Path) -> list[str]:
    """Sorted names of the (non-hidden) image files directly inside *folder*."""
    with os.scandir(folder) as entries:
        return sorted(
            e.name
            for e in entries
            if not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file()
        )


def _subfolders(folder: Path) -> list[str]:
    """Sorted names of the (non-hidden) folders directly inside *folder*."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())


def _listing_fingerprint(classnames_file: Path, splits: dict[str, list[Sample]]) -> str:
    """Hash of the class-name file's bytes and every (split, ref, label), for folder-listed datasets."""
    rows = "".join(f"{split}\t{s.ref}\t{s.label}\n" for split in SPLITS for s in splits.get(split, ()))
    return _digest(classnames_file.read_bytes(), rows.encode())


# -- split_zhou_<Name>.json ------------------------------------------------------------------------


def _load_split_json(path: Path) -> tuple[dict, bytes]:
    """The parsed split file and its raw bytes; malformed JSON or a wrong shape raises MmaError."""
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MmaError(f"The split file {str(path)!r} is not valid JSON ({one_line(exc)}); re-download it.") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(s), list) for s in SPLITS):
        raise MmaError(
            f"The split file {str(path)!r} must be a JSON object with lists 'train', 'val' and 'test'; re-download it."
        )
    return data, raw


def _split_entry(path: Path, split: str, index: int, entry) -> tuple[str, int, str]:
    """One ``[image path, label, class name]`` entry, checked."""
    try:
        ref, label, classname = entry
        if not isinstance(ref, str) or not isinstance(classname, str) or isinstance(label, bool):
            raise TypeError
        return ref, int(label), classname
    except (TypeError, ValueError):
        raise MmaError(
            f"The split file {str(path)!r} has a malformed entry {split}[{index}] = {entry!r}; "
            "expected [image path, label, class name]."
        ) from None


def _is_ignored(ref: str, classname: str, ignored: tuple[str, ...]) -> bool:
    return classname in ignored or ref.replace("\\", "/").split("/", 1)[0] in ignored


def _classnames_by_label(path: Path, entries: Iterable[tuple[str, int, str]]) -> dict[int, str]:
    """``{label: class name}`` from split entries; a label with two different names raises MmaError."""
    names: dict[int, str] = {}
    for _, label, classname in entries:
        if names.setdefault(label, classname) != classname:
            raise MmaError(
                f"The split file {str(path)!r} gives label {label} two class names, "
                f"{names[label]!r} and {classname!r}; re-download it."
            )
    return names


def _read_zhou(root: Path, info: _Info, source: str) -> ImageDataset:
    image_dir = _first_existing(root, info, info.images)
    (split_file,) = _require(root, info, info.split_path)
    data, raw = _load_split_json(split_file)
    entries = {
        split: [
            e
            for e in (_split_entry(split_file, split, i, x) for i, x in enumerate(data[split]))
            if not _is_ignored(e[0], e[2], info.ignored)
        ]
        for split in SPLITS
    }
    names = _classnames_by_label(split_file, (e for split in SPLITS for e in entries[split]))
    if not names:
        raise MmaError(f"The split file {str(split_file)!r} lists no images; re-download it.")
    # Labels are made contiguous (0..n-1, same order); they already are unless classes were dropped.
    relabel = {label: i for i, label in enumerate(sorted(names))}
    splits = {split: [Sample(ref, relabel[label]) for ref, label, _ in entries[split]] for split in SPLITS}
    classnames = [names[label] for label in sorted(names)]
    return _dataset(info, classnames, splits, image_dir, _digest(raw), source)


# -- FGVCAircraft ----------------------------------------------------------------------------------


def _read_fgvc_split(path: Path, label_of: dict[str, int]) -> list[Sample]:
    """Lines ``<image id> <variant name>``; the variant may contain spaces."""
    samples = []
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        image_id, _, variant = line.strip().partition(" ")
        variant = variant.strip()
        if variant not in label_of:
            raise MmaError(
                f"The FGVCAircraft file {str(path)!r} line {lineno} names the variant {variant!r}, "
                "which is not in variants.txt; re-download the dataset."
            )
        samples.append(Sample(f"{image_id}.jpg", label_of[variant]))
    return samples


def _read_fgvc(root: Path, info: _Info, source: str) -> ImageDataset:
    split_names = [f"{info.folder}/images_variant_{split}.txt" for split in SPLITS]
    image_dir, variants_file, *split_files = _require(
        root, info, info.images[0], f"{info.folder}/variants.txt", *split_names
    )
    classnames = [line.strip() for line in _read_text(variants_file).splitlines() if line.strip()]
    if not classnames:
        raise MmaError(f"The FGVCAircraft file {str(variants_file)!r} is empty; expected one variant name per line.")
    label_of = {name: i for i, name in enumerate(classnames)}
    splits = {split: _read_fgvc_split(f, label_of) for split, f in zip(SPLITS, split_files, strict=True)}
    fingerprint = _digest(variants_file.read_bytes(), *(f.read_bytes() for f in split_files))
    return _dataset(info, classnames, splits, image_dir, fingerprint, source)


# -- ImageNet and its shifts -----------------------------------------------------------------------


def _read_classnames(path: Path) -> dict[str, str]:
    """``{wnid: class name}`` from lines ``<wnid> <class name with spaces>``, in file order."""
    names: dict[str, str] = {}
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        wnid, _, name = line.strip().partition(" ")
        if not name.strip():
            raise MmaError(
                f"The class-name file {str(path)!r} line {lineno} has no class name; "
                "expected '<wnid> <class name>' on every line."
            )
        names[wnid] = name.strip()
    if not names:
        raise MmaError(f"The class-name file {str(path)!r} is empty; expected '<wnid> <class name>' lines.")
    return names


def _wnid_samples(root: Path, info: _Info, folder: Path, wnids: list[str], prefix: str = "") -> list[Sample]:
    """Every image of ``folder/<wnid>/``, labelled by the wnid's position in *wnids*."""
    samples = []
    for label, wnid in enumerate(wnids):
        class_dir = folder / wnid
        if not class_dir.is_dir():
            raise _missing(root, info, str(class_dir.relative_to(root)))
        samples += [Sample(f"{prefix}{wnid}/{name}", label) for name in _images_in(class_dir)]
    return samples


def _check_known(path: Path, folders: list[str], names: dict[str, str], classnames_file: Path) -> None:
    unknown = [f for f in folders if f not in names]
    if unknown:
        raise MmaError(
            f"The folder {str(path)!r} has class folders not in {str(classnames_file)!r}: "
            f"{unknown[:5]}; use the classnames.txt from CoOp's DATASETS.md."
        )


def _read_imagenet(root: Path, info: _Info, source: str) -> ImageDataset:
    images = info.images[0]
    image_dir, train_dir, val_dir, names_file = _require(
        root, info, images, f"{images}/train", f"{images}/val", info.classnames_paths[0]
    )
    names = _read_classnames(names_file)
    wnids = sorted(names)
    for split_dir in (train_dir, val_dir):
        _check_known(split_dir, _subfolders(split_dir), names, names_file)
    train = _wnid_samples(root, info, train_dir, wnids, prefix="train/")
    test = _wnid_samples(root, info, val_dir, wnids, prefix="val/")
    splits = {"train": train, "val": list(test), "test": test}
    fingerprint = _listing_fingerprint(names_file, splits)
    return _dataset(info, [names[w] for w in wnids], splits, image_dir, fingerprint, source)


def _read_imagenetv2(root: Path, info: _Info, source: str) -> ImageDataset:
    (image_dir,) = _require(root, info, info.images[0])
    names_file = _first_existing(root, info, info.classnames_paths)
    names = _read_classnames(names_file)
    wnids = sorted(names)
    test = []
    for label in range(len(wnids)):
        class_dir = image_dir / str(label)
        if not class_dir.is_dir():
            raise _missing(root, info, str(class_dir.relative_to(root)))
        test += [Sample(f"{label}/{name}", label) for name in _images_in(class_dir)]
    splits = {"train": [], "val": [], "test": test}
    fingerprint = _listing_fingerprint(names_file, splits)
    return _dataset(info, [names[w] for w in wnids], splits, image_dir, fingerprint, source)


def _read_wnid_folders(root: Path, info: _Info, source: str) -> ImageDataset:
    """ImageNet-Sketch (all 1000 classes) and ImageNet-A / -R (the wnid folders present)."""
    (image_dir,) = _require(root, info, info.images[0])
    names_file = _first_existing(root, info, info.classnames_paths)
    names = _read_classnames(names_file)
    present = _subfolders(image_dir)
    _check_known(image_dir, present, names, names_file)
    wnids = present if info.subset else sorted(names)
    if not wnids:
        raise MmaError(f"The folder {str(image_dir)!r} has no class folders; expected {info.layout}.")
    splits = {"train": [], "val": [], "test": _wnid_samples(root, info, image_dir, wnids)}
    fingerprint = _listing_fingerprint(names_file, splits)
    return _dataset(info, [names[w] for w in wnids], splits, image_dir, fingerprint, source)


_READERS = {
    "zhou": _read_zhou,
    "fgvc": _read_fgvc,
    "imagenet": _read_imagenet,
    "imagenetv2": _read_imagenetv2,
    "wnid": _read_wnid_folders,
}


# -- public API ------------------------------------------------------------------------------------


def _present(root: Path, info: _Info) -> bool:
    """Whether a dataset looks installed. ``imagenet/`` alone may only hold the shifts' classnames.txt,
    so ImageNet counts as present when ``imagenet/images/`` exists."""
    return (root / (info.images[0] if info.name == "imagenet" else info.folder)).is_dir()


def load_coop(root: str | os.PathLike, names: list[str] | None = None, *, spec: str = "") -> list[ImageDataset]:
    """The CoOp datasets under *root*, in the order asked (``names=None``: every one whose folder exists).

    Names are case-insensitive and accept aliases (``flowers102``, ``pets``, ``imagenet-sketch``...).
    Any problem (unknown name, missing folder or split file, malformed split file) raises MmaError.
    """
    base = coop_root(root)
    folders = ", ".join(f"{f}/" for f in coop_folder_names())
    if names is None:
        wanted = [n for n in COOP_DATASETS if _present(base, _INFO[n])]
        if not wanted:
            raise MmaError(
                f"No CoOp dataset was found under {str(base)!r}; expected one or more of the folders "
                f"{folders} (CoOp's DATASETS.md)."
            )
    else:
        if not names:
            raise MmaError(f"The CoOp dataset list is empty; give names from {', '.join(COOP_DATASETS)}.")
        wanted = list(dict.fromkeys(_canonical(n) for n in names))
    source = spec or f"coop:{base}"
    return [_READERS[_INFO[n].reader](base, _INFO[n], source) for n in wanted]


def canonical_coop_name(name: str) -> str:
    """The toolkit's name of a CoOp dataset (case-insensitive, aliases accepted); an MmaError if unknown."""
    return _canonical(name)


def find_coop(root: str | os.PathLike, names: Iterable[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """Which of *names* (default: all 15) are installed under *root*: ``(present, {missing: why})``, in order.

    Only the dataset's folder is looked at (reading it is :func:`load_coop`'s job, which names any missing file).
    """
    base = coop_root(root)
    wanted = COOP_DATASETS if names is None else list(dict.fromkeys(_canonical(n) for n in names))
    present, missing = [], {}
    for name in wanted:
        info = _INFO[name]
        if _present(base, info):
            present.append(name)
        else:
            missing[name] = f"not found under {str(base)!r} (expected ROOT/{info.layout})"
    return present, missing


def describe_coop() -> list[dict]:
    """One row per CoOp dataset: name, classes, CoOp's split sizes (None where a split is empty), the
    expected layout and the dataset's own terms of use. Reads nothing from disk."""
    rows = []
    for name in COOP_DATASETS:
        classes, *sizes = _SIZES[name]
        train, val, test = (n or None for n in sizes)
        source = f"CoOp layout: {_INFO[name].layout}"
        licence = _LICENCES.get(name, RESEARCH_ONLY)
        rows.append(dict(name=name, classes=classes, train=train, val=val, test=test, source=source, licence=licence))
    return rows
