"""Extraction: stream pooled per-layer features of images and class prompts into the feature store.

One forward pass per batch fills every layer at once (:class:`~mma.probe.capture.LayerCapture`). Text
features are computed once per distinct prompt (one row per class); a sample's text feature is its
class's row.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from .capture import LayerCapture
from .data.base import ImageDataset, Sample
from .data.reading import ImageReader, collate_readable
from .layers import layer_maps
from .specs import LoadedModel
from .store import StoreEntry, open_entry

__all__ = ["resolve_device", "autocast_for", "extract_images", "extract_prompts"]

PRECISIONS = ("fp32", "fp16", "bf16")


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is a clear error."""
    from mma.errors import MmaError

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise MmaError(f"The device {device!r} is not valid (valid: auto, cpu, cuda, cuda:N).")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MmaError(f"The device {device!r} was asked for but torch sees no CUDA GPU; use --device cpu or auto.")
    return torch.device(device)


def autocast_for(device: torch.device, precision: str):
    """Autocast on CUDA for fp16/bf16; a no-op context for fp32 (and on the CPU)."""
    from mma.errors import MmaError

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
) -> StoreEntry:
    """Pooled features of every image layer for *samples* (in order), reused or resumed from the store.

    *progress* is an optional callable ``progress(n_images)`` called after each batch.
    """
    names, widths = _layer_info(loaded, "image")
    refs = [s.ref for s in samples]
    key = _key_fields(loaded, dataset, "image", pooling, precision, device)
    key["samples"] = _digest(refs)
    entry = open_entry(
        store_root,
        f"{dataset.name}-image",
        key,
        refs=refs,
        labels=[s.label for s in samples],
        layer_names=names,
        widths=widths,
    )
    if entry.done:
        return entry
    start = entry.rows_done
    if progress and start:
        progress(start)
    reader = ImageReader(dataset, list(samples)[start:], loaded.preprocess, strict=strict)
    loader = torch.utils.data.DataLoader(
        reader,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_readable,
        pin_memory=device.type == "cuda",
    )
    maps = layer_maps(loaded.model)
    row = start
    with torch.no_grad(), LayerCapture(loaded.model, {"image": maps["image"]}, pooling=pooling) as cap:
        for idx, images, _, bad in loader:
            n = len(idx) + len(bad)
            layers = [np.full((n, w), np.nan, dtype=np.float16) for w in widths]
            if images is not None:
                with autocast_for(device, precision):
                    feats = cap.encode_image(images.to(device, non_blocking=True))
                pos = (idx - (row - start)).numpy()
                for out, f in zip(layers, feats):
                    out[pos] = f.cpu().numpy()
            entry.write_rows(row, layers)
            entry.commit(row + n, unreadable=[start + b for b in bad])
            row += n
            if progress:
                progress(n)
    entry.commit(row, done=True)
    return entry


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
    """Pooled features of every text layer for each class prompt (one row per class)."""
    names, widths = _layer_info(loaded, "text")
    prompts = dataset.prompts(template)
    key = _key_fields(loaded, dataset, "text", pooling, precision, device)
    key.pop("preprocess")
    key["prompts"] = _digest(prompts)
    entry = open_entry(
        store_root,
        f"{dataset.name}-text",
        key,
        refs=prompts,
        labels=list(range(len(prompts))),
        layer_names=names,
        widths=widths,
    )
    if entry.done:
        return entry
    maps = layer_maps(loaded.model)
    with torch.no_grad(), LayerCapture(loaded.model, {"text": maps["text"]}, pooling=pooling) as cap:
        for start in range(0, len(prompts), batch_size):
            tokens = loaded.tokenizer(prompts[start : start + batch_size]).to(device)
            with autocast_for(device, precision):
                feats = cap.encode_text(tokens)
            entry.write_rows(start, [f.cpu().numpy() for f in feats])
            entry.commit(start + len(tokens))
    entry.commit(len(prompts), done=True)
    return entry


def _digest(items: Sequence[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]
