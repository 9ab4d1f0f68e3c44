"""The on-disk form of built images: one compressed ``.npz`` of named arrays plus their content digest.

A downstream dataset stores ``{split}_x`` (uint8 images ``[N, size, size, 3]``) and ``{split}_y`` (int64
labels) for every split; the corpus stores its images, concept ids and caption tokens. ``digest`` is the
sha256 of the arrays, from which fingerprints are made. Files are cached under
``mma.io.cache_dir("embedded")``, keyed by what built them (name, image size, a hash of the generator
source), so a changed generator never reads an old file.
"""

from __future__ import annotations

import functools
import hashlib
import multiprocessing
import os
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from mma.io import atomic_write, cache_dir

Arrays = dict[str, np.ndarray]
GENERATORS = ("concepts.py", "render.py", "corpus.py", "suite.py")  # with art/*.py: the code that makes images


def content_digest(arrays: Arrays) -> str:
    """sha256 of every array's name, shape, dtype and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.shape}:{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _save(path: Path, arrays: Arrays, digest: str) -> None:
    with open(path, "wb") as fh:  # a file object, so numpy does not append ".npz" to the temporary name
        np.savez_compressed(fh, digest=np.array(digest), **arrays)


def _load(path: Path) -> tuple[Arrays, str] | None:
    """The arrays and digest saved at *path*, or None when the file cannot be read (the caller rebuilds)."""
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files if k != "digest"}, str(z["digest"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


@functools.cache
def source_digest() -> str:
    """A hash of the embedded world's generator code: any change to it invalidates every cached file."""
    here = Path(__file__).parent
    h = hashlib.sha256()
    for path in sorted([*(here / n for n in GENERATORS), *(here / "art").glob("*.py")]):
        h.update(path.relative_to(here).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:10]


def _path(key: str) -> Path:
    return cache_dir("embedded") / f"{key}-{source_digest()}.npz"


def is_cached(key: str) -> bool:
    return _path(key).is_file()


def cached_arrays(key: str, build: Callable[[], Arrays], built: Arrays | None = None) -> tuple[Arrays, str]:
    """The arrays stored under *key* (plus the generator digest), built and written atomically if missing.

    *built* gives arrays already made elsewhere (a worker process) to store instead of calling *build*.
    """
    path = _path(key)
    if path.is_file() and built is None:
        cached = _load(path)
        if cached is not None:
            return cached
    arrays = build() if built is None else built
    digest = content_digest(arrays)
    atomic_write(path, lambda tmp: _save(tmp, arrays, digest))
    return arrays, digest


def parallel_map(fn: Callable, items: Sequence, *, work: int) -> list:
    """``[fn(item) for item in items]``, over up to two worker processes when *work* (images) is large.

    Every image has its own seeded generator, so the result is the same however the items are shared out;
    workers are spawned (not forked), so no thread state of the parent leaks into them.
    """
    workers = min(len(items), os.cpu_count() or 1, 2)
    if workers < 2 or work < 4000 or multiprocessing.current_process().daemon:
        return [fn(item) for item in items]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(fn, items))
