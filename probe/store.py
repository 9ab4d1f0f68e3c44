"""The feature store: per (model, dataset, tower) layer-major float16 memmaps plus a JSON manifest.

One store entry is a folder::

    <dataset>-<tower>-<key>/
        manifest.json     key fields, layer names and widths, rows, done_ranges, rows_done, done, unreadable rows
                          (rows_done: rows 0..rows_done-1 are all written, the prefix format 1 trusted)
        samples.json      the sample refs and labels, row by row (written once)
        blocks.npy        float16 [L+1, rows, width]   layers XEmbed, 1..L (width: the widest of them; a
                                                       narrower layer, e.g. a Swin or convolutional stage,
                                                       fills its first widths[i] columns)
        proj.npy          float16 [rows, embed_dim]    layer XProj (its width differs)
        progress-<R>.json rows that process R has written since the manifest was last finalised

Rows are written as they are computed. A process records a batch in its own ``progress-<R>.json`` only
after the arrays are flushed, so a recorded row is always on disk; rank 0 folds every progress file into
the manifest (``done_ranges``) when the extraction starts and when it ends. Under torchrun each rank writes
disjoint rows of the same arrays (rank 0 also receives the other ranks' records directly, so it does not
depend on seeing their files); in one process the rank is 0. All JSON is written atomically. An entry
with ``done: true`` is reused by any later run with the same key; an interrupted one (Ctrl-C, a killed
process, a lost node) resumes with only the rows not yet recorded and ends byte-identical to an
uninterrupted run. The key hashes everything that changes the numbers: model spec and weights hash,
dataset fingerprint, the exact sample list, tower, pooling, prompt template, image preprocessing and
precision.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from mma.errors import MmaError
from mma.io import atomic_write_json, read_json

__all__ = ["StoreEntry", "store_key", "open_entry"]

FORMAT_VERSION = 1


def store_key(fields: dict) -> str:
    """A short stable hash of the key fields (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class StoreEntry:
    """An open store entry; ``blocks`` and ``proj`` are numpy memmaps."""

    folder: Path
    manifest: dict
    blocks: np.ndarray
    proj: np.ndarray
    progress: dict | None = None  # what this process recorded since it opened the entry

    @property
    def done(self) -> bool:
        return bool(self.manifest.get("done"))

    @property
    def layer_names(self) -> list[str]:
        return list(self.manifest["layer_names"])

    def samples(self) -> tuple[list[str], np.ndarray]:
        data = read_json(self.folder / "samples.json")
        return data["refs"], np.asarray(data["labels"], dtype=np.int64)

    def layer(self, index: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Features of layer *index* (0..L+1) as float32 ``[rows, width]`` (only *rows*, if given)."""
        if index == len(self.blocks):
            feats = self.proj
        else:
            feats = self.blocks[index][:, : int(self.manifest["widths"][index])]
        return np.asarray(feats if rows is None else feats[rows], dtype=np.float32)

    def valid_rows(self) -> np.ndarray:
        """Boolean mask of rows whose image could be read."""
        mask = np.ones(self.manifest["rows"], dtype=bool)
        mask[list(self.manifest.get("unreadable_rows", []))] = False
        return mask

    @property
    def done_ranges(self) -> list[list[int]]:
        """Finished rows as sorted, merged ``[start, stop)`` ranges (format 1 stored only a prefix count)."""
        rows_done = int(self.manifest.get("rows_done", 0))
        return self.manifest.get("done_ranges", [[0, rows_done]] if rows_done else [])

    def pending_rows(self) -> np.ndarray:
        """Row indices not yet recorded as written, ascending."""
        todo = np.ones(self.manifest["rows"], dtype=bool)
        for a, b in self.done_ranges:
            todo[a:b] = False
        return np.flatnonzero(todo)

    def write_rows(self, rows: np.ndarray, layers: list[np.ndarray]) -> None:
        """Write *rows* (ascending indices) of every layer: XEmbed..L into blocks, XProj into proj."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and rows[-1] - rows[0] + 1 == len(rows):  # contiguous: plain slices
            rows = slice(int(rows[0]), int(rows[-1]) + 1)
        for i, feats in enumerate(layers[:-1]):
            self.blocks[i, rows, : feats.shape[1]] = feats
        self.proj[rows] = layers[-1]

    def record(self, rank: int, rows: np.ndarray, *, unreadable: list[int] = ()) -> None:
        """Flush the arrays, then add *rows* to this process's progress file (atomically)."""
        self.blocks.flush()
        self.proj.flush()
        path = self.folder / f"progress-{rank}.json"
        if self.progress is None:  # a file left by an earlier process of this rank is kept, not overwritten
            self.progress = read_json(path) if path.exists() else {"ranges": [], "unreadable_rows": []}
        progress = self.progress
        progress["ranges"] = _merge(progress["ranges"] + _ranges(rows))
        progress["unreadable_rows"] = sorted(set(progress["unreadable_rows"]) | {int(r) for r in unreadable})
        atomic_write_json(path, progress)

    def finalise(self, records: list[dict | None] = ()) -> None:
        """Fold every progress file (and *records*, the progress other processes sent) into the manifest.

        Marks the entry done when every row is, then removes the progress files. Only one process (rank 0)
        may call this, while no other process is recording.
        """
        files = sorted(self.folder.glob("progress-*.json"))
        ranges, unreadable = list(self.done_ranges), set(self.manifest.get("unreadable_rows", []))
        for progress in [read_json(path) for path in files] + [r for r in records if r]:
            ranges += progress["ranges"]
            unreadable |= set(progress["unreadable_rows"])
        ranges = _merge(ranges)
        rows = self.manifest["rows"]
        self.manifest.update(
            done_ranges=ranges,
            rows_done=ranges[0][1] if ranges and ranges[0][0] == 0 else 0,
            unreadable_rows=sorted(unreadable),
            done=ranges == [[0, rows]] or rows == 0,
        )
        atomic_write_json(self.folder / "manifest.json", self.manifest)
        for path in files:
            path.unlink()
        for tmp in self.folder.glob(".*.tmp"):  # left by a process killed mid-write
            tmp.unlink(missing_ok=True)


def _ranges(rows: np.ndarray) -> list[list[int]]:
    """Ascending row indices as ``[start, stop)`` ranges."""
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows):
        return []
    cuts = np.flatnonzero(np.diff(rows) != 1) + 1
    return [[int(run[0]), int(run[-1]) + 1] for run in np.split(rows, cuts)]


def _merge(ranges: list[list[int]]) -> list[list[int]]:
    merged: list[list[int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return merged


def open_entry(
    root: str | Path,
    name: str,
    key_fields: dict,
    *,
    refs: list[str],
    labels: list[int],
    layer_names: list[str],
    widths: list[int],
    create: bool = True,
) -> StoreEntry:
    """Open (resume or reuse) the entry for *key_fields* under *root*, or create it.

    Under torchrun rank 0 creates the entry and the others open it (``create=False``) after a barrier.
    """
    key = store_key({**key_fields, "format": FORMAT_VERSION})
    folder = Path(root) / f"{name}-{key}"
    manifest_path = folder / "manifest.json"
    rows = len(refs)
    if manifest_path.exists():
        manifest = read_json(manifest_path)
        mode = "r" if manifest.get("done") else "r+"
        return StoreEntry(
            folder, manifest, open_memmap(folder / "blocks.npy", mode=mode), open_memmap(folder / "proj.npy", mode=mode)
        )
    if not create:
        raise MmaError(
            f"The store entry {str(folder)!r} that rank 0 created is not visible here; --out must be on a "
            "file system every process shares."
        )
    folder.mkdir(parents=True, exist_ok=True)
    block_width = max(widths[:-1])
    blocks = open_memmap(folder / "blocks.npy", mode="w+", dtype=np.float16, shape=(len(widths) - 1, rows, block_width))
    proj = open_memmap(folder / "proj.npy", mode="w+", dtype=np.float16, shape=(rows, widths[-1]))
    atomic_write_json(folder / "samples.json", {"refs": list(refs), "labels": [int(y) for y in labels]})
    manifest = {
        "key": key,
        **key_fields,
        "format": FORMAT_VERSION,
        "layer_names": list(layer_names),
        "widths": list(widths),
        "rows": rows,
        "done_ranges": [],
        "rows_done": 0,
        "unreadable_rows": [],
        "done": False,
    }
    blocks.flush()
    proj.flush()
    atomic_write_json(manifest_path, manifest)
    return StoreEntry(folder, manifest, blocks, proj)
