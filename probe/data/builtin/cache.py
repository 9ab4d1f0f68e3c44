"""The on-disk form of a built dataset: one compressed ``.npz`` per (dataset, image size, build version).

The file holds ``{split}_x`` (uint8 images ``[N, size, size, 3]``), ``{split}_y`` (int64 labels ``[N]``) for
every split, and ``digest``, the sha256 of the arrays, which the dataset's fingerprint is made from.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from ..base import SPLITS
from .drawing import Array

Arrays = dict[str, tuple[Array, Array]]  # {split: (images, labels)}


def content_digest(arrays: Arrays) -> str:
    """sha256 of every split's shapes, images and labels, in :data:`SPLITS` order."""
    h = hashlib.sha256()
    for split in SPLITS:
        x, y = arrays[split]
        h.update(f"{split}:{x.shape}:{y.shape}".encode())
        h.update(np.ascontiguousarray(x).tobytes())
        h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()


def save_arrays(path: Path, arrays: Arrays, digest: str) -> None:
    payload = {"digest": np.array(digest)}
    for split, (x, y) in arrays.items():
        payload[f"{split}_x"], payload[f"{split}_y"] = x, y
    with open(path, "wb") as fh:  # a file object, so numpy does not append ".npz" to the temporary name
        np.savez_compressed(fh, **payload)


def load_arrays(path: Path) -> tuple[Arrays, str] | None:
    """The arrays and digest saved at *path*, or None when the file cannot be read (the caller rebuilds)."""
    try:
        with np.load(path) as z:
            arrays = {split: (z[f"{split}_x"], z[f"{split}_y"]) for split in SPLITS}
            return arrays, str(z["digest"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # unreadable or from an older layout: rebuild
