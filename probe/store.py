"""The feature store: per (model, dataset, tower) layer-major float16 memmaps plus a JSON manifest.

One store entry is a folder::

    <dataset>-<tower>-<key>/
        manifest.json   key fields, layer names and widths, rows, rows_done, done, unreadable rows
        samples.json    the sample refs and labels, row by row (written once)
        blocks.npy      float16 [L+1, rows, width]   layers XEmbed, 1..L
        proj.npy        float16 [rows, embed_dim]    layer XProj (its width differs)

Rows are written as they are computed and ``rows_done`` advances only after the arrays are flushed;
the manifest is always written atomically. An entry with ``done: true`` is reused by any later run with
the same key; an interrupted one resumes at ``rows_done`` and ends byte-identical to an uninterrupted
run. The key hashes everything that changes the numbers: model spec and weights hash, dataset
fingerprint, the exact sample list, tower, pooling, prompt template, image preprocessing and precision.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

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

    @property
    def done(self) -> bool:
        return bool(self.manifest.get("done"))

    @property
    def rows_done(self) -> int:
        return int(self.manifest["rows_done"])

    @property
    def layer_names(self) -> list[str]:
        return list(self.manifest["layer_names"])

    def samples(self) -> tuple[list[str], np.ndarray]:
        data = read_json(self.folder / "samples.json")
        return data["refs"], np.asarray(data["labels"], dtype=np.int64)

    def layer(self, index: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Features of layer *index* (0..L+1) as float32 ``[rows, width]`` (only *rows*, if given)."""
        feats = self.proj if index == len(self.blocks) else self.blocks[index]
        return np.asarray(feats if rows is None else feats[rows], dtype=np.float32)

    def valid_rows(self) -> np.ndarray:
        """Boolean mask of rows whose image could be read."""
        mask = np.ones(self.manifest["rows"], dtype=bool)
        mask[list(self.manifest.get("unreadable_rows", []))] = False
        return mask

    def write_rows(self, start: int, layers: list[np.ndarray]) -> None:
        """Write rows ``start:start+n`` of every layer (XEmbed..L into blocks, XProj into proj)."""
        n = len(layers[0])
        for i, feats in enumerate(layers[:-1]):
            self.blocks[i, start : start + n] = feats
        self.proj[start : start + n] = layers[-1]

    def commit(self, rows_done: int, *, unreadable: list[int] = (), done: bool = False) -> None:
        """Flush the arrays, then advance ``rows_done`` in the manifest (atomically)."""
        self.blocks.flush()
        self.proj.flush()
        self.manifest["rows_done"] = int(rows_done)
        self.manifest["unreadable_rows"] = sorted(set(self.manifest.get("unreadable_rows", [])) | set(unreadable))
        self.manifest["done"] = bool(done)
        atomic_write_json(self.folder / "manifest.json", self.manifest)


def open_entry(
    root: str | Path,
    name: str,
    key_fields: dict,
    *,
    refs: list[str],
    labels: list[int],
    layer_names: list[str],
    widths: list[int],
) -> StoreEntry:
    """Open (resume or reuse) the entry for *key_fields* under *root*, or create it."""
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
    folder.mkdir(parents=True, exist_ok=True)
    block_width = widths[0]
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
        "rows_done": 0,
        "unreadable_rows": [],
        "done": False,
    }
    entry = StoreEntry(folder, manifest, blocks, proj)
    entry.commit(0)
    return entry
