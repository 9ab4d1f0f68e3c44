"""Pay only for what trains: the frozen part of a tower runs once per input, not once per step.

Every method trains a few parameters on a frozen model, so the part of a tower below the first layer a method
changes gives the same output every epoch. A method says where its image tower starts to change
(:meth:`~mma.adapters.method_base.MethodBase.image_start`): MMA at its first adapted image block; CoOp, CoCoOp,
CLIP-Adapter, the linear probe and the zero-shot model nowhere (start ``L + 1``: the final image feature is all
they read); a method that says nothing reads the images themselves.

:class:`ImagePart` splits the image tower there: ``prefix(images)`` is the input of the start block as
batch-first tokens ``[B, T, D]`` (or the final feature ``[B, E]``), ``rest(x)`` the feature from it, with the
method's hooks taking part. ``rest(prefix(images))`` runs exactly the operations of ``encode_image(images)``,
so it is equal bit for bit. ``rest`` calls the tower's own forward with two temporary changes read from the
layer map (the one trick of :mod:`mma.adapters.text_cache` too, :func:`from_block`): the block list is cut to
the start block and above, and that block's input is replaced by *x*. The stem (patch embedding) still runs,
on a zero image: about 1/12 of one ViT-B/16 block, nothing copied from open_clip. Towers whose blocks sit in
several stages (Swin) cannot be cut there; a method starting inside one reads images.

:class:`FrozenInputs` keeps ``prefix`` of every image of a sample list when the images' preprocessing is
deterministic (``augment`` off, or evaluation): computed once, in order, in batches, and read back row by row
by the training loop and the evaluation. With a folder it lives on disk as ``inputs.npy`` (a float32 memmap:
exact for fp32, fp16 and bf16 activations alike; the activation dtype is restored when read) beside a
``manifest.json`` that records the key and the rows written so far, so an interrupted run resumes with the
rows it had and a later method, seed or k of the same run reuses them. The key hashes everything that changes
the numbers: model and weights, dataset fingerprint, the exact samples, the preprocessing, the start block,
precision and device type. ViT-B/16 at block 5 holds 197 x 768 floats per image: 16,000 ImageNet shots take
9.7 GB. Without a folder the rows are kept in memory for the run.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch import nn

from mma import distributed
from mma.io import atomic_write_json, read_json
from mma.probe.data.base import ImageDataset, Sample
from mma.probe.data.reading import ImageReader, collate_readable
from mma.probe.extract import autocast_for
from mma.probe.layers import LayerMap, layer_maps
from mma.probe.store import store_key

__all__ = [
    "from_block",
    "block_input",
    "to_layout",
    "ImagePart",
    "image_part",
    "FrozenInputs",
    "method_inputs",
    "FROZEN_VERSION",
]

FROZEN_VERSION = 1
_FILL_BATCH = 256  # the evaluation's batch: its rows are the ones evaluation computed before the cache


class _Reached(Exception):
    """Raised by a forward pre-hook to stop a tower once the wanted block input is captured."""


@contextlib.contextmanager
def from_block(model: nn.Module, lmap: LayerMap, k: int, hidden: torch.Tensor) -> Iterator[None]:
    """While inside, the tower of *lmap* runs blocks k..L only, and block k receives *hidden* (the blocks' layout).

    Everything before the blocks (embeddings, stem) and after them (final norm, pooling, projection) is the
    tower's own code; the stem's output is discarded. The swap runs before any pre-hook a method put on block k
    (``prepend``), so a method that puts tokens into that block's input (MMRL) puts them into *hidden*.
    """
    parent, _, attr = lmap.blocks_path.rpartition(".")
    container = model.get_submodule(parent) if parent else model
    original = getattr(container, attr)
    tail = list(original)[k - 1 :]
    setattr(container, attr, nn.Sequential(*tail) if isinstance(original, nn.Sequential) else nn.ModuleList(tail))

    def swap_input(_module, args, kwargs):
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, lmap.input_name: hidden}

    handle = tail[0].register_forward_pre_hook(swap_input, with_kwargs=True, prepend=True)
    try:
        yield
    finally:
        handle.remove()
        setattr(container, attr, original)


def block_input(model: nn.Module, lmap: LayerMap, k: int, run) -> torch.Tensor:
    """The input block *k* of *lmap*'s tower receives while ``run()`` encodes; the tower stops right there, before
    any pre-hook a method put on block k changes it (``prepend``)."""
    captured = {}

    def grab(_module, args, kwargs):
        captured["x"] = lmap.block_input(args, kwargs).detach()
        raise _Reached

    handle = lmap.blocks(model)[k - 1].register_forward_pre_hook(grab, with_kwargs=True, prepend=True)
    try:
        run()
    except _Reached:
        pass
    finally:
        handle.remove()
    return captured["x"]


def to_layout(lmap: LayerMap, tokens: torch.Tensor) -> torch.Tensor:
    """Batch-first tokens ``[B, T, D]`` back into the blocks' own layout (the inverse of ``LayerMap.tokens``)."""
    return tokens.transpose(0, 1) if lmap.layout == "LND" else tokens


class ImagePart:
    """The image tower split at block *start* (1-based; ``depth + 1``: the final feature) of *loaded*'s model."""

    def __init__(self, loaded, start: int) -> None:
        self.model = loaded.model
        self.map = layer_maps(loaded.model)["image"]
        self.start = start
        self.image_size = loaded.image_size
        self.final = start > self.map.depth

    @torch.no_grad()
    def prefix(self, images: torch.Tensor) -> torch.Tensor:
        """What the frozen part gives: block *start*'s input ``[B, T, D]``, or the final feature ``[B, E]``."""
        if self.final:
            return self.model.encode_image(images)
        x = block_input(self.model, self.map, self.start, lambda: self.model.encode_image(images))
        return self.map.tokens(x)

    def rest(self, x: torch.Tensor) -> torch.Tensor:
        """The image feature (unnormalised) from :meth:`prefix`'s output, through the trainable part."""
        if self.final:
            return x
        w = next(self.model.visual.parameters())
        blank = torch.zeros(len(x), 3, self.image_size, self.image_size, device=x.device, dtype=w.dtype)
        with from_block(self.model, self.map, self.start, to_layout(self.map, x)):
            return self.model.encode_image(blank)

    def key(self) -> dict:
        return {"start": "final" if self.final else self.start, "layout": self.map.layout}


def image_part(loaded, start: int | None) -> ImagePart | None:
    """The split at *start* (:meth:`~mma.adapters.method_base.MethodBase.image_start`), or None when the method
    reads images (no start given, block 1, or a start inside a tower whose blocks cannot be cut there)."""
    if start is None or start <= 1:
        return None
    lmap = layer_maps(loaded.model)["image"]
    if start <= lmap.depth and (lmap.blocks_path is None or not lmap.transformer):
        return None
    return ImagePart(loaded, start)


def method_inputs(
    part: ImagePart | None,
    loaded,
    dataset: ImageDataset,
    samples: Sequence[Sample],
    transform,
    *,
    cached: bool,
    device: torch.device,
    precision: str = "fp32",
    folder: str | Path | None = None,
    workers: int = 0,
    strict: bool = False,
):
    """``(reader, prefix)``: *samples* as a method's inputs. Read back from the frozen cache when *cached* (and
    the method has a frozen part; *transform* must then be deterministic), with ``prefix`` None; otherwise the
    images under *transform*, with the function that turns a batch of them into inputs (None: the images are the
    inputs). Both readers yield ``(index, inputs, label)`` for :func:`~mma.probe.data.reading.collate_readable`, with
    None for an unreadable image (walk them with :func:`~mma.probe.data.reading.readable_batches`); *strict*: the
    image reader stops at the first unreadable one (a cached one stops the walk)."""
    if part is not None and cached:
        frozen = FrozenInputs(
            part, loaded, dataset, samples, transform, device=device, precision=precision, folder=folder,
            workers=workers, strict=strict,
        )  # fmt: skip
        return frozen.rows(), None
    return ImageReader(dataset, samples, transform, strict=strict), part.prefix if part is not None else None


class _Rows(torch.utils.data.Dataset):
    """``rows[i] -> (i, prefix tensor, label)``, or ``(i, None, label)`` for an image that could not be read."""

    def __init__(self, array, unreadable: set[int], labels: Sequence[int], dtype: torch.dtype) -> None:
        self.array, self.unreadable, self.labels, self.dtype = array, unreadable, list(labels), dtype

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        if i in self.unreadable:
            return i, None, self.labels[i]
        return i, torch.from_numpy(np.array(self.array[i])).to(self.dtype), self.labels[i]


class FrozenInputs:
    """The frozen prefix of every image of *samples* under a deterministic *transform*, computed once.

    ``folder``: the cache root (an entry per key inside it); None keeps the rows in memory. Use
    :meth:`rows` as a DataLoader dataset (with :func:`~mma.probe.data.reading.collate_readable`).
    """

    def __init__(
        self,
        part: ImagePart,
        loaded,
        dataset: ImageDataset,
        samples: Sequence[Sample],
        transform,
        *,
        device: torch.device,
        precision: str = "fp32",
        folder: str | Path | None = None,
        workers: int = 0,
        strict: bool = False,
    ) -> None:
        self.strict = strict
        self.part, self.loaded, self.dataset, self.samples = part, loaded, dataset, list(samples)
        self.transform, self.device, self.precision, self.workers = transform, device, precision, workers
        self.fields = {
            "version": FROZEN_VERSION,
            "model": str(loaded.spec),
            "weights": loaded.weights_id,
            "dataset": dataset.name,
            "dataset_fingerprint": dataset.fingerprint,
            "samples": store_key({"refs": [s.ref for s in self.samples]}),
            "transform": repr(transform),
            "part": part.key(),
            "precision": precision if device.type == "cuda" else "fp32",
            "device": device.type,
        }
        self.key = store_key(self.fields)
        world = distributed.world()
        suffix = f"-rank{world.rank}" if world.many else ""  # every rank fills its own (no shared writes)
        self.entry = Path(folder) / f"{dataset.name}-{self.key}{suffix}" if folder is not None else None
        self._rows: _Rows | None = None

    def rows(self) -> _Rows:
        """The cached rows (computing those not yet on disk first)."""
        if self._rows is None:
            self._rows = self._fill()
        return self._rows

    # -- filling ------------------------------------------------------------------------------------

    def _batches(self, start: int):
        """``(indices, prefix or None, unreadable indices)`` for the samples from *start* on, in order."""
        reader = ImageReader(self.dataset, self.samples[start:], self.transform, strict=self.strict)
        loader = torch.utils.data.DataLoader(
            reader, batch_size=_FILL_BATCH, num_workers=self.workers, collate_fn=collate_readable
        )
        for idx, images, _, bad in loader:
            x = None
            if images is not None:
                with autocast_for(self.device, self.precision):
                    x = self.part.prefix(images.to(self.device, non_blocking=True))
            yield idx + start, x, [b + start for b in bad]

    def _fill(self) -> _Rows:
        labels = [s.label for s in self.samples]
        if self.entry is None:
            out, bad, dtype = None, set(), torch.float32
            for idx, x, unreadable in self._batches(0):
                bad.update(unreadable)
                if x is None:
                    continue
                if out is None:
                    out, dtype = torch.zeros(len(self.samples), *x.shape[1:], dtype=x.dtype), x.dtype
                out[idx] = x.cpu()
            return _Rows(out.numpy() if out is not None else np.zeros(0), bad, labels, dtype)
        return self._fill_on_disk(labels)

    def _fill_on_disk(self, labels) -> _Rows:
        manifest = self._open()
        bad = set(manifest["unreadable"])
        if not manifest["done"]:
            array = None
            if manifest.get("shape") is not None:  # an interrupted fill: go on writing where it stopped
                array = open_memmap(self.entry / "inputs.npy", mode="r+")
            for idx, x, unreadable in self._batches(manifest["rows_done"]):
                bad.update(unreadable)
                if x is not None:
                    if array is None:
                        manifest.update(shape=list(x.shape[1:]), dtype=str(x.dtype).removeprefix("torch."))
                        shape = (len(self.samples), *x.shape[1:])
                        array = open_memmap(self.entry / "inputs.npy", mode="w+", dtype=np.float32, shape=shape)
                    array[idx.numpy()] = x.float().cpu().numpy()
                    array.flush()
                last = max([int(idx.max()) if len(idx) else -1, *unreadable]) + 1
                manifest.update(rows_done=max(manifest["rows_done"], last), unreadable=sorted(bad))
                atomic_write_json(self.entry / "manifest.json", manifest)  # only after the rows are on disk
            manifest["done"] = True
            atomic_write_json(self.entry / "manifest.json", manifest)
        dtype = getattr(torch, manifest.get("dtype") or "float32")
        stored = manifest.get("shape") is not None  # else no image was readable
        read = np.load(self.entry / "inputs.npy", mmap_mode="r") if stored else np.zeros(0)
        return _Rows(read, bad, labels, dtype)

    def _open(self) -> dict:
        """This key's manifest (a fresh one, with the folder emptied, when it is missing or belongs elsewhere)."""
        path = self.entry / "manifest.json"
        try:
            manifest = read_json(path) if path.is_file() else None
        except (OSError, ValueError, json.JSONDecodeError):
            manifest = None
        if manifest is None or manifest.get("key") != self.key or manifest.get("rows") != len(self.samples):
            shutil.rmtree(self.entry, ignore_errors=True)
            self.entry.mkdir(parents=True)
            manifest = {"key": self.key, **self.fields, "rows": len(self.samples), "rows_done": 0}
            manifest.update(unreadable=[], done=False, shape=None, dtype=None, storage="float32")
            atomic_write_json(path, manifest)
        return manifest
