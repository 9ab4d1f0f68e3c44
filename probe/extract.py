"""Extraction: stream pooled per-layer features of images and class prompts into the feature store.

One forward pass per batch fills every layer at once (:class:`~mma.probe.capture.LayerCapture`). Text
features are computed once per distinct prompt (one row per class); a sample's text feature is its
class's row.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from mma import distributed
from mma.errors import MmaError

from .capture import LayerCapture
from .data.base import ImageDataset, Sample
from .data.reading import ImageReader, collate_readable, unreadable_error
from .layers import XEMBED_POINTS, layer_maps
from .specs import LoadedModel
from .store import StoreEntry, open_entry

__all__ = ["resolve_device", "autocast_for", "extract_images", "extract_prompts"]

PRECISIONS = ("fp32", "fp16", "bf16")


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise MmaError(f"The device {device!r} is not valid (valid: auto, cpu, cuda, cuda:N).")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MmaError(f"The device {device!r} was asked for but torch sees no CUDA GPU; use --device cpu or auto.")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise MmaError(f"The device {device!r} does not exist: torch sees {torch.cuda.device_count()} GPU(s).")
    return torch.device(device)


def autocast_for(device: torch.device, precision: str):
    """Autocast on CUDA for fp16/bf16; a no-op context for fp32 (and on the CPU)."""
    if precision not in PRECISIONS:
        raise MmaError(f"The precision {precision!r} is not valid (valid: {', '.join(PRECISIONS)}).")
    if precision == "fp32" or device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.float16 if precision == "fp16" else torch.bfloat16)


def _key_fields(
    loaded: LoadedModel, dataset: ImageDataset, tower: str, pooling: str, precision: str, device: torch.device
) -> dict:
    cfg = getattr(loaded.model.visual, "preprocess_cfg", {})
    return {
        "model": str(loaded.spec),
        "weights": loaded.weights_id,
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint,
        "tower": tower,
        "pooling": pooling,
        "precision": precision if device.type == "cuda" else "fp32",
        "preprocess": {"size": loaded.image_size, **{k: v for k, v in cfg.items() if k != "size"}},
    }


def _layer_info(loaded: LoadedModel, tower: str) -> tuple[list[str], list[int]]:
    lmap = layer_maps(loaded.model)[tower]
    return lmap.names, [layer.width for layer in lmap]


def _open_shared(store_root, name: str, key: dict, **fields) -> StoreEntry:
    """Rank 0 opens (or creates) the entry and folds in an interrupted run's progress; then the others open it."""
    main = distributed.world().main
    if main:
        entry = open_entry(store_root, name, key, **fields)
        if not entry.done:
            entry.finalise()
    distributed.barrier()
    return entry if main else open_entry(store_root, name, key, create=False, **fields)


def _finish(entry: StoreEntry, store_root, name: str, key: dict, **fields) -> StoreEntry:
    """Rank 0 folds every rank's records into the manifest; everyone reopens the finished entry."""
    records = distributed.all_gather(entry.progress)
    if distributed.world().main:
        entry.finalise(records)
    distributed.barrier()
    entry = open_entry(store_root, name, key, create=False, **fields)  # fresh maps: every rank's rows
    if not entry.done:
        raise MmaError(
            f"The store entry {str(entry.folder)!r} is incomplete after extraction "
            f"({sum(b - a for a, b in entry.done_ranges)} of {entry.manifest['rows']} rows recorded); "
            "rerun the same command to finish it."
        )
    return entry


def extract_images(
    loaded: LoadedModel,
    dataset: ImageDataset,
    samples: Sequence[Sample],
    store_root: str | Path,
    *,
    pooling: str = "mean",
    batch_size: int = 64,
    device: torch.device = torch.device("cpu"),
    precision: str = "fp32",
    workers: int = 0,
    strict: bool = False,
    progress=None,
    say=None,
    xembed: str = XEMBED_POINTS[0],
) -> StoreEntry:
    """Pooled features of every image layer for *samples* (in order), reused or resumed from the store.

    *xembed*: which side of the image tower's ``ln_pre`` XEmbed is read (:data:`mma.probe.layers.XEMBED_POINTS`);
    the other point is another store entry (the key holds it whenever it is not the default, so the stores
    written before the option existed stay valid for the default).

    Under torchrun every rank extracts its share of the pending batches into the same entry. *progress*
    is an optional callable ``progress(n_images)``: called at once with the rows already stored (a reused
    or resumed entry), then after each batch; under torchrun each rank scales its own count to the whole,
    so rank 0's bar tracks the whole job and ends at 100%. *say* (optional, ``say(text)``) is told, in one
    line, when rows are reused or resumed.
    """
    names, widths = _layer_info(loaded, "image")
    refs = [s.ref for s in samples]
    key = _key_fields(loaded, dataset, "image", pooling, precision, device)
    key["samples"] = _digest(refs)
    if xembed != XEMBED_POINTS[0]:
        key["xembed"] = xembed
    fields = dict(refs=refs, labels=[s.label for s in samples], layer_names=names, widths=widths)
    entry = _open_shared(store_root, f"{dataset.name}-image", key, **fields)
    if entry.done:
        if progress:
            progress(len(refs))
        if say:
            say(f"{dataset.name}: reusing all {len(refs)} stored rows.")
        return entry
    w = distributed.world()
    pending = entry.pending_rows()
    if len(pending) < len(refs):
        if progress:
            progress(len(refs) - len(pending))
        if say:
            say(f"{dataset.name}: resuming: {len(refs) - len(pending)} of {len(refs)} rows already done.")
    batches = distributed.shard_batches(pending, batch_size, w)
    mine = np.concatenate(batches) if batches else np.empty(0, dtype=np.int64)
    reader = ImageReader(dataset, [samples[i] for i in mine], loaded.preprocess, strict=strict)
    offsets = np.cumsum([0] + [len(b) for b in batches])
    loader = torch.utils.data.DataLoader(
        reader,
        batch_sampler=[list(range(a, b)) for a, b in zip(offsets[:-1], offsets[1:])],
        num_workers=workers,
        collate_fn=collate_readable,
        pin_memory=device.type == "cuda",
    )
    maps = layer_maps(loaded.model)
    done_here = shown = 0
    capture = LayerCapture(loaded.model, {"image": maps["image"]}, pooling=pooling, xembed=xembed)
    with torch.no_grad(), capture as cap:
        for (idx, images, _, bad), first in zip(loader, offsets[:-1]):
            rows = mine[first : first + len(idx) + len(bad)]
            layers = [np.full((len(rows), w_), np.nan, dtype=np.float16) for w_ in widths]
            if images is not None:
                with autocast_for(device, precision):
                    feats = cap.encode_image(images.to(device, non_blocking=True))
                pos = (idx - first).numpy()
                for out, f in zip(layers, feats):
                    out[pos] = f.cpu().numpy()
            if strict and bad:  # read in a worker: the reader left the sentence to this process
                raise unreadable_error(reader.samples[bad[0]].ref, dataset.name)
            entry.write_rows(rows, layers)
            entry.record(w.rank, rows, unreadable=mine[bad].tolist())
            if progress:
                done_here += len(rows)
                shown, before = round(done_here * len(pending) / len(mine)), shown
                progress(shown - before)
    return _finish(entry, store_root, f"{dataset.name}-image", key, **fields)


def extract_prompts(
    loaded: LoadedModel,
    dataset: ImageDataset,
    store_root: str | Path,
    *,
    pooling: str = "mean",
    template: str | None = None,
    batch_size: int = 256,
    device: torch.device = torch.device("cpu"),
    precision: str = "fp32",
) -> StoreEntry:
    """Pooled features of every text layer for each class prompt (one row per class; rank 0 computes them)."""
    names, widths = _layer_info(loaded, "text")
    prompts = dataset.prompts(template)
    key = _key_fields(loaded, dataset, "text", pooling, precision, device)
    key.pop("preprocess")
    key["prompts"] = _digest(prompts)
    fields = dict(refs=prompts, labels=list(range(len(prompts))), layer_names=names, widths=widths)
    entry = _open_shared(store_root, f"{dataset.name}-text", key, **fields)
    if entry.done:
        return entry
    if distributed.world().main:
        maps = layer_maps(loaded.model)
        with torch.no_grad(), LayerCapture(loaded.model, {"text": maps["text"]}, pooling=pooling) as cap:
            for rows in distributed.shard_batches(entry.pending_rows(), batch_size, distributed.World()):
                tokens = loaded.tokenizer([prompts[i] for i in rows]).to(device)
                with autocast_for(device, precision):
                    feats = cap.encode_text(tokens)
                entry.write_rows(rows, [f.cpu().numpy() for f in feats])
                entry.record(0, rows)
    return _finish(entry, store_root, f"{dataset.name}-text", key, **fields)


def _digest(items: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]
