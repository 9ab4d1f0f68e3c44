"""Adapter checkpoints: the adapter weights and the configs that made them, nothing else, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from mma.errors import MmaError, one_line
from mma.io import atomic_write
from mma.probe.specs import CHECKPOINT_METADATA_KEY, LoadedModel

from .methods import DEFAULT, get_method

__all__ = ["save_adapter", "read_adapter", "load_adapter"]


def save_adapter(adapter: nn.Module, path: str | Path, meta: dict) -> Path:
    """Write ``adapter.state_dict()`` as safetensors with ``meta`` (+ the adapter config) as JSON metadata.

    *adapter*: any method of :mod:`mma.adapters.methods`; its config names it (``method``; MMA's has no such key,
    as before the other methods existed).
    """
    state = {k: v.detach().cpu().contiguous() for k, v in adapter.state_dict().items()}
    metadata = {CHECKPOINT_METADATA_KEY: json.dumps({**meta, "adapter": adapter.config()}, default=str)}
    return atomic_write(path, lambda p: safetensors.torch.save_file(state, str(p), metadata=metadata))


def read_adapter(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict and metadata of a checkpoint written by :func:`save_adapter`."""
    path = Path(path)
    if not path.is_file():
        raise MmaError(f"The checkpoint {str(path)!r} does not exist.")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get(CHECKPOINT_METADATA_KEY, "null"))
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, json.JSONDecodeError) as exc:
        raise MmaError(f"The checkpoint {str(path)!r} is not an mma adapter checkpoint ({one_line(exc)}).") from None
    if not isinstance(meta, dict) or "adapter" not in meta:
        raise MmaError(f"The checkpoint {str(path)!r} has no mma adapter metadata; was it written by mma?")
    return state, meta


def load_adapter(path: str | Path, loaded: LoadedModel) -> tuple[nn.Module, dict]:
    """Rebuild the method of *path* on *loaded*'s model (attached), refusing a checkpoint of another model."""
    state, meta = read_adapter(path)
    if meta.get("weights") and meta["weights"] != loaded.weights_id:
        raise MmaError(
            f"The checkpoint {str(path)!r} was trained on {meta.get('model')!r} "
            f"(weights {str(meta['weights'])[:12]!r}), not on {loaded.describe()!r}; "
            f"pass --model {meta.get('model')!r}."
        )
    adapter = get_method(meta["adapter"].get("method", DEFAULT.name)).restore(meta["adapter"], loaded)
    adapter.load_state_dict(state)
    param = next(loaded.model.parameters())
    adapter.to(device=param.device, dtype=param.dtype)
    for p in loaded.model.parameters():
        p.requires_grad_(False)
    adapter.attach(loaded.model)
    return adapter, meta
