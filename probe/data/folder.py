"""Your own data: an image-folder tree (``folder:PATH``) or a CSV manifest (``csv:PATH``)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

from PIL import Image

from mma.data_spec import user_path
from mma.errors import MmaError, one_line
from mma.io import sha256_file

from .base import SPLITS, ImageDataset, Sample

__all__ = ["IMAGE_SUFFIXES", "load_folder", "load_csv"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def images_in(folder: Path) -> list[Path]:
    """Every image file under *folder* (recursively, by suffix), sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _split_default(samples: list[Sample], seed: int = 0) -> dict[str, list[Sample]]:
    """A deterministic 60/20/20 per-class split, for sources that ship no split of their own."""
    rng = random.Random(seed)
    by_label: dict[int, list[Sample]] = {}
    for s in samples:
        by_label.setdefault(s.label, []).append(s)
    out: dict[str, list[Sample]] = {k: [] for k in SPLITS}
    for label in sorted(by_label):
        items = by_label[label][:]
        rng.shuffle(items)
        n = len(items)
        n_val = n_test = max(1, n // 5) if n >= 3 else 0
        out["test"] += items[:n_test]
        out["val"] += items[n_test : n_test + n_val]
        out["train"] += items[n_test + n_val :]
    return out


def _split_note(source: str, missing: str) -> str:
    """The sentence a source without a split of its own says once: how :func:`_split_default` split it."""
    return (
        f"{source} has no {missing}; its images are split 60/20/20 (train/val/test) per class by a fixed "
        "seeded draw (seed 0, the same every run)."
    )


def _path_loader(root: Path):
    def load(ref: str) -> Image.Image:
        return Image.open(root / ref)

    return load


def load_folder(path: str | Path, *, spec: str = "") -> ImageDataset:
    """One subfolder per class (``PATH/CLASS/*.jpg``), optionally under ``train/``, ``val/``, ``test/``.

    Without split folders, a deterministic 60/20/20 split per class is made.
    """
    root = user_path(path, "The folder")
    if not root.is_dir():
        raise MmaError(
            f"The folder {str(root)!r} does not exist; folder:PATH expects PATH/CLASS/image.jpg "
            "(optionally PATH/train/CLASS/..., PATH/val/..., PATH/test/...)."
        )
    split_dirs = [s for s in SPLITS if (root / s).is_dir()]
    if split_dirs:
        class_dirs = sorted({d.name for s in split_dirs for d in (root / s).iterdir() if d.is_dir()})
    else:
        class_dirs = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not class_dirs:
        raise MmaError(f"The folder {str(root)!r} has no class subfolders; expected PATH/CLASS/image.jpg.")
    label_of = {c: i for i, c in enumerate(class_dirs)}
    if split_dirs:
        splits: dict[str, list[Sample]] = {s: [] for s in SPLITS}
        for s in split_dirs:
            for c in class_dirs:
                if (root / s / c).is_dir():
                    splits[s] += [Sample(str(p.relative_to(root)), label_of[c]) for p in images_in(root / s / c)]
    else:
        samples = [Sample(str(p.relative_to(root)), label_of[c]) for c in class_dirs for p in images_in(root / c)]
        splits = _split_default(samples)
    if not any(splits.values()):
        raise MmaError(f"The folder {str(root)!r} has class subfolders but no images ({sorted(IMAGE_SUFFIXES)}).")
    source = spec or f"folder:{root}"
    notes = [] if split_dirs else [_split_note(source, "train/val/test subfolders")]
    return ImageDataset(root.name, class_dirs, splits, _path_loader(root), source=source, notes=notes)


def load_csv(path: str | Path, *, spec: str = "") -> ImageDataset:
    """A CSV manifest with columns ``path``, ``label`` and optionally ``split`` (train/val/test).

    ``label`` is a class name; image paths are relative to the CSV's folder (or absolute). Without a
    ``split`` column a deterministic 60/20/20 split per class is made.
    """
    file = user_path(path, "The manifest")
    if not file.is_file():
        raise MmaError(
            f"The manifest {str(file)!r} does not exist; csv:PATH expects a CSV with columns path,label[,split]."
        )
    try:
        with open(file, newline="", encoding="utf-8-sig") as fh:  # -sig: spreadsheet exports start with a BOM
            reader = csv.DictReader(fh)
            rows, header = list(reader), reader.fieldnames or []
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MmaError(f"The manifest {str(file)!r} is not a UTF-8 CSV file ({one_line(exc)}).") from None
    if not {"path", "label"} <= set(header):
        raise MmaError(
            f"The manifest {str(file)!r} needs columns 'path' and 'label' (optional 'split'); found {header}."
        )
    if not rows:
        raise MmaError(f"The manifest {str(file)!r} has its header but no rows; add one row per image.")
    short = [i for i, r in enumerate(rows, start=1) if r["path"] is None or r["label"] is None]
    if short:
        raise MmaError(f"The manifest {str(file)!r} has rows without a path or a label: data rows {short[:5]}.")
    classnames = sorted({r["label"] for r in rows})
    label_of = {c: i for i, c in enumerate(classnames)}
    samples = [(Sample(r["path"], label_of[r["label"]]), (r.get("split") or "").strip()) for r in rows]
    if "split" in header:
        bad = sorted({s for _, s in samples if s not in SPLITS})
        if bad:
            raise MmaError(f"The manifest {str(file)!r} has split values {bad}; valid: {list(SPLITS)}.")
        splits = {s: [x for x, sp in samples if sp == s] for s in SPLITS}
    else:
        splits = _split_default([x for x, _ in samples])
    return ImageDataset(
        file.stem,
        classnames,
        splits,
        _path_loader(file.parent),
        fingerprint=sha256_file(file)[:16],
        source=spec or f"csv:{file}",
        notes=[] if "split" in header else [_split_note(spec or f"csv:{file}", "'split' column")],
    )
