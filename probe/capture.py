"""Hook-based capture of every layer of both towers in ONE forward pass, pooled inside the hooks.

:class:`LayerCapture` is a context manager: it registers a forward pre-hook on block 1 (XEmbed) and a
forward hook on every block (1..L) of each tower, pools each token map the moment it is produced (so no
full token map is ever kept), and removes every hook in ``finally``. XProj is the tower's own return
value (``encode_image`` / ``encode_text``), so it is exactly what the model returns.

Pooling (SPEC.md section 1):

* ``mean`` (default): image, mean over all tokens (CLS + patches); text, mean over positions up to and
  including the readout (EOT) token.
* ``cls``: image CLS token; text readout (EOT) token, CLIP's own readout tokens.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from torch import nn

from mma.errors import MmaError

from .layers import LayerMap, text_readout_index

__all__ = ["POOLINGS", "LayerCapture", "pool_tokens"]

POOLINGS = ("mean", "cls")


def pool_tokens(x: torch.Tensor, pooling: str, readout: torch.Tensor | None = None) -> torch.Tensor:
    """Pool a batch-first token map ``[B, T, D]`` to ``[B, D]``.

    *readout* (text only) is the index of each sequence's readout token; mean pooling then covers
    positions ``0..readout`` inclusive, ``cls`` pooling takes the readout token. Without it (images) the
    mean covers every token and ``cls`` takes token 0.
    """
    if pooling == "mean":
        if readout is None:
            return x.mean(dim=1)
        positions = torch.arange(x.shape[1], device=x.device)[None, :]
        mask = (positions <= readout[:, None]).to(x.dtype)[..., None]
        return (x * mask).sum(dim=1) / mask.sum(dim=1)
    if pooling == "cls":
        if readout is None:
            return x[:, 0]
        return x[torch.arange(x.shape[0], device=x.device), readout]
    raise MmaError(f"The pooling {pooling!r} is not valid (valid: {', '.join(POOLINGS)}).")


class LayerCapture(AbstractContextManager):
    """Capture pooled features of layers XEmbed, 1..L, XProj of the towers in *maps*.

    Example::

        with LayerCapture(model, maps, pooling="mean") as cap:
            feats = cap.encode_image(images)        # list of L+2 tensors [B, D_layer]
            feats = cap.encode_text(tokens)         # list of L+2 tensors [B, D_layer]
    """

    def __init__(self, model: nn.Module, maps: dict[str, LayerMap], *, pooling: str = "mean") -> None:
        if pooling not in POOLINGS:
            raise MmaError(f"The pooling {pooling!r} is not valid (valid: {', '.join(POOLINGS)}).")
        self.model = model
        self.maps = maps
        self.pooling = pooling
        self._handles: list = []
        self._buffer: dict[int, torch.Tensor] = {}
        self._active: str | None = None
        self._readout: torch.Tensor | None = None

    # -- hooks -----------------------------------------------------------------------------------
    def _tokens(self, tower: str, x: torch.Tensor) -> torch.Tensor:
        return x if self.maps[tower].batch_first else x.transpose(0, 1)

    def _store(self, tower: str, index: int, x: torch.Tensor) -> None:
        if self._active != tower:  # e.g. a block shared with something else; ignore
            return
        readout = self._readout if tower == "text" else None
        self._buffer[index] = pool_tokens(self._tokens(tower, x), self.pooling, readout).float()

    def __enter__(self) -> LayerCapture:
        try:
            for tower, lmap in self.maps.items():
                blocks = lmap.blocks(self.model)
                self._handles.append(
                    blocks[0].register_forward_pre_hook(lambda _m, args, t=tower: self._store(t, 0, args[0]))
                )
                for i, block in enumerate(blocks, start=1):
                    self._handles.append(
                        block.register_forward_hook(lambda _m, _args, out, t=tower, i=i: self._store(t, i, out))
                    )
        except BaseException:
            self._remove()
            raise
        return self

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __exit__(self, *exc) -> None:
        self._remove()
        self._buffer.clear()

    # -- forward passes --------------------------------------------------------------------------
    def _collect(self, tower: str, final: torch.Tensor) -> list[torch.Tensor]:
        depth = self.maps[tower].depth
        missing = [i for i in range(depth + 1) if i not in self._buffer]
        if missing:
            raise RuntimeError(f"hooks did not fire for {tower} layers {missing}")
        feats = [self._buffer[i] for i in range(depth + 1)] + [final.float()]
        self._buffer.clear()
        return feats

    def encode_image(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Pooled features ``[B, D]`` of every image layer, XEmbed first, XProj last."""
        self._active, self._readout = "image", None
        try:
            final = self.model.encode_image(images)
            return self._collect("image", final)
        finally:
            self._active = None

    def encode_text(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Pooled features ``[B, D]`` of every text layer, XEmbed first, XProj last."""
        self._active, self._readout = "text", text_readout_index(self.model, tokens)
        try:
            final = self.model.encode_text(tokens)
            return self._collect("text", final)
        finally:
            self._active, self._readout = None, None
