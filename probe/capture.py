"""Hook-based capture of every layer of both towers in ONE forward pass, pooled inside the hooks.

:class:`LayerCapture` is a context manager: it registers a forward pre-hook on block 1 (XEmbed) and a
forward hook on every block (1..L) of each tower, pools each token map the moment it is produced (so no
full token map is ever kept), and removes every hook in ``finally``. XProj is the tower's own return
value (``encode_image`` / ``encode_text``), so it is exactly what the model returns.

Pooling (SPEC.md section 1; per tower family in :mod:`mma.probe.layers`):

* ``mean`` (default): image, mean over all tokens (class / register tokens + patches; for convolutional
  stages, the global average); text, mean over the positions the tower attends to (up to and including
  the EOT token for CLIP-style towers, the non-padding tokens for Hugging Face towers).
* ``cls``: the token the tower reads out (image class token; text EOT / class token). Towers that read out
  no single token have none, and ``cls`` pools like ``mean`` there.

XEmbed is block 1's input (``xembed="after-ln-pre"``, the default) or, with ``xembed="before-ln-pre"``, the
input of the image tower's pre-norm (``LayerMap.embed_norm``: open_clip's ``ln_pre``, timm's ``norm_pre``);
see :mod:`mma.probe.layers`.

Capture reads only the :class:`~mma.probe.layers.LayerMap`: which modules are the blocks, how a block
receives and returns its hidden state and in which token layout, and which token the tower reads out.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from torch import nn

from mma.errors import MmaError

from .layers import XEMBED_POINTS, LayerMap

__all__ = ["POOLINGS", "LayerCapture", "pool_tokens"]

POOLINGS = ("mean", "cls")


def pool_tokens(
    x: torch.Tensor, pooling: str, readout: torch.Tensor | None = None, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Pool a batch-first token map ``[B, T, D]`` to ``[B, D]``.

    *readout* is the index of each sequence's readout token (``cls`` takes it; without one, ``cls`` pools
    like ``mean``). *mask* ``[B, T']`` (``T' <= T``; missing positions count as outside) marks the tokens
    ``mean`` covers; without a mask, a *readout* alone means "positions ``0..readout``" (CLIP text) and
    neither means every token.
    """
    if pooling not in POOLINGS:
        raise MmaError(f"The pooling {pooling!r} is not valid (valid: {', '.join(POOLINGS)}).")
    if pooling == "cls" and readout is not None:
        return x[torch.arange(x.shape[0], device=x.device), readout]
    if mask is None and readout is not None:
        mask = torch.arange(x.shape[1], device=x.device)[None, :] <= readout[:, None]
    if mask is None:
        return x.mean(dim=1)
    if mask.shape[1] < x.shape[1]:
        mask = torch.nn.functional.pad(mask, (0, x.shape[1] - mask.shape[1]), value=False)
    weights = mask.to(x.dtype)[..., None]
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1)


class LayerCapture(AbstractContextManager):
    """Capture pooled features of layers XEmbed, 1..L, XProj of the towers in *maps*.

    Example::

        with LayerCapture(model, maps, pooling="mean") as cap:
            feats = cap.encode_image(images)        # list of L+2 tensors [B, D_layer]
            feats = cap.encode_text(tokens)         # list of L+2 tensors [B, D_layer]
    """

    def __init__(
        self, model: nn.Module, maps: dict[str, LayerMap], *, pooling: str = "mean", xembed: str = XEMBED_POINTS[0]
    ) -> None:
        if pooling not in POOLINGS:
            raise MmaError(f"The pooling {pooling!r} is not valid (valid: {', '.join(POOLINGS)}).")
        if xembed not in XEMBED_POINTS:
            raise MmaError(f"The XEmbed point {xembed!r} is not valid (valid: {', '.join(XEMBED_POINTS)}).")
        self.model = model
        self.maps = maps
        self.pooling = pooling
        self.xembed = xembed
        self._handles: list = []
        self._buffer: dict[int, torch.Tensor] = {}
        self._active: str | None = None
        self._readout: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None

    # -- hooks -----------------------------------------------------------------------------------
    def _store(self, tower: str, index: int, x: torch.Tensor, batch_first: bool = False) -> None:
        if self._active != tower:  # e.g. a block shared with something else; ignore
            return
        lmap = self.maps[tower]
        tokens = x if batch_first else lmap.tokens(x)
        if tower == "image":  # every image token counts for mean; cls takes the class token, if any
            first = self.pooling == "cls" and lmap.class_token
            readout = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device) if first else None
            self._buffer[index] = pool_tokens(tokens, self.pooling, readout).float()
        else:
            self._buffer[index] = pool_tokens(tokens, self.pooling, self._readout, self._mask).float()

    def __enter__(self) -> LayerCapture:
        try:
            for tower, lmap in self.maps.items():
                blocks = lmap.blocks(self.model)

                if self.xembed == "before-ln-pre" and lmap.embed_norm is not None:

                    def embed(_m, args, t=tower):  # the norm's input: batch-first tokens
                        self._store(t, 0, args[0], batch_first=True)

                    norm = self.model.get_submodule(lmap.embed_norm)
                    self._handles.append(norm.register_forward_pre_hook(embed))
                else:

                    def embed(_m, args, kwargs, t=tower, lmap=lmap):
                        self._store(t, 0, lmap.block_input(args, kwargs))

                    self._handles.append(blocks[0].register_forward_pre_hook(embed, with_kwargs=True))
                for i, block in enumerate(blocks, start=1):

                    def out(_m, _args, output, t=tower, i=i, lmap=lmap):
                        self._store(t, i, lmap.block_output(output))

                    self._handles.append(block.register_forward_hook(out))
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
        self._active, self._readout, self._mask = "image", None, None
        try:
            final = self.model.encode_image(images, normalize=False)
            return self._collect("image", final)
        finally:
            self._active = None

    def encode_text(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Pooled features ``[B, D]`` of every text layer, XEmbed first, XProj last."""
        self._readout, self._mask = self.maps["text"].readout(tokens)
        self._active = "text"
        try:
            final = self.model.encode_text(tokens, normalize=False)
            return self._collect("text", final)
        finally:
            self._active, self._readout, self._mask = None, None, None
