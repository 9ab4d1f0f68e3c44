"""Learned tokens in the blocks of one tower of an unmodified open_clip model (deep prompts), through hooks.

The deep prompt learners (MaPLe, PromptSRC, MMRL) put learned tokens into a tower's hidden states at the input
of chosen blocks. This module does that with forward (pre-)hooks read from the tower's
:class:`~mma.probe.layers.LayerMap` (block paths, layout, the image tower's ``embed_norm``), never forking
open_clip. One :class:`TowerPrompts` holds the hooks of one tower; :func:`prompted` does both towers at once.

API
---
``TowerPrompts(model, tower, tokens, *, insert=False)``: learned tokens in *tower* (``"image"`` or ``"text"``)
of *model*. ``attach()`` registers the hooks (returns self), ``detach()`` removes every one of them (a no-op when
not attached; the model is then exactly as it was); ``with TowerPrompts(...):`` attaches for the block and
always detaches after it. ``prompted(model, image=..., text=..., text_insert=False)`` is the context manager
for both towers (either may be None or empty).

*tokens* maps a **place** to the tokens put there:

* place ``j`` in ``1..L``: the input of block ``j`` (1-based, as the LayerMap numbers blocks);
* place ``0``: the embedding, below block 1, where CoOp and the official MaPLe / PromptSRC code put their
  first-layer prompts: in the **text** tower the token embedding's output (before the positional embedding is
  added, as CoOp's context, see :mod:`mma.adapters.coop`); in the **image** tower the input of the tower's
  ``embed_norm`` (after the class token and the positional embedding, before ``ln_pre``), or block 1's input
  when the tower has no such norm.

Each value is a tensor or a zero-argument callable returning one (called at every forward, so a hook attached
once reads the current value of a parameter, or a projection of it): ``[n, width]`` (the same tokens for every
sequence of the batch) or ``[B, n, width]`` (one set per sequence; ``B`` must be the batch: the number of
prompts ``P`` in the text tower, the number of images in the image tower). ``n`` must be the same at every place
of one tower; ``width`` is the tower's width at that place. Values are cast to the hidden states' dtype; the
gradient flows back into them.

What happens at each place:

* **text** (default, ``insert=False``): the hidden states at positions ``1..n`` (right after the SOT token) are
  *replaced* by the tokens, at every place; the sequence keeps its length, so the causal mask, the live-length
  cut (:mod:`mma.probe.textcut`) and the EOT readout are untouched. The prompt's own tokens at ``1..n``
  (placeholder words, as CoOp's) are what the tokens replace.
* **text, ``insert=True``** (MMRL): at the *first* place (a block, not 0: the positional embedding has the
  sequence's length) the tokens are *inserted* after position 0, lengthening the sequence by ``n``; at later
  places they replace positions ``1..n``; the block's causal mask (argument ``attn_mask``) is lengthened to match
  at every block from the first place on, and the ``n`` tokens are removed from the output of the last block, so
  the final norm and the readout see exactly the original positions.
* **image**: at the *first* place the tokens are *appended* after the existing tokens (class token, patches, any
  register tokens); at later places they replace those ``n`` appended tokens (the last ``n``); blocks without
  a place pass them on as computed; and they are removed from the output of the last block, so the tower's own
  pooling (class token, average, attention pooling), ``ln_post`` and projection see exactly the original tokens.
  (The image tower has no attention mask and no positions after the embedding, so appending is the same as the
  official MMRL code's inserting after the class token.)

Layouts ``NLD`` and ``LND`` (``LayerMap.layout``) are both handled (the embedding places are batch-first in
both). Hook order: the pre-hooks are registered with ``prepend=True`` (any other pre-hook or forward hook of the
block sees the prompted input); the removal at the last block is a forward hook registered last among that
block's hooks at attach time, so hooks registered before it (an adapter's) see the lengthened output.
Shapes are checked when the hooks run; a wrong one is an :class:`~mma.errors.MmaError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from mma.errors import MmaError
from mma.probe.layers import LayerMap, layer_maps

from .coop import token_embedding

__all__ = ["TowerPrompts", "prompted", "TokenSource"]

#: tokens at one place: a tensor ``[n, width]`` / ``[B, n, width]``, or a callable returning one at every forward
TokenSource = torch.Tensor | Callable[[], torch.Tensor]

_TOKEN_LAYOUTS = ("NLD", "LND")


class TowerPrompts:
    """Learned tokens at chosen places of one tower (module docstring); ``attach`` / ``detach`` or ``with``."""

    def __init__(
        self, model: nn.Module, tower: str, tokens: Mapping[int, TokenSource], *, insert: bool = False
    ) -> None:
        self.model, self.tower, self.insert = model, tower, insert
        self.tokens = dict(tokens)
        self._handles: list[RemovableHandle] = []
        self._n: int | None = None  # tokens added in the running forward (image / insert), for the removal
        self.lmap: LayerMap = layer_maps(model)[tower]
        self._check()

    # -- checks ------------------------------------------------------------------------------------

    def _check(self) -> None:
        m = self.lmap
        if self.tower not in ("image", "text"):
            raise MmaError(f"tower={self.tower!r} is not a tower (valid: 'image', 'text').")
        if m.layout not in _TOKEN_LAYOUTS or not m.transformer:
            raise MmaError(
                f"Deep prompts need a transformer tower whose blocks hold tokens; the {self.tower} tower is "
                f"{m.family} ({m.layout}); choose a ViT model."
            )
        bad = [j for j in self.tokens if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j <= m.depth]
        if bad:
            raise MmaError(
                f"Prompt place(s) {bad} are out of range for the {self.tower} tower (valid: 0, the embedding, or a "
                f"block 1..{m.depth})."
            )
        if self.tower == "image" and m.embed_norm is None and {0, 1} <= set(self.tokens):
            raise MmaError(
                "Image places 0 and 1 are both block 1's input in this tower (it has no norm before block 1); give "
                "one of them."
            )
        if self.insert and (self.tower != "text" or 0 in self.tokens):
            raise MmaError(
                "insert=True puts tokens into the text tower at a block (valid: text places 1..L, not 0, where the "
                "positional embedding fixes the length)."
            )

    @property
    def places(self) -> list[int]:
        return sorted(self.tokens)

    def _value(self, j: int, batch: int, dtype: torch.dtype) -> torch.Tensor:
        """The tokens of place *j* as ``[batch, n, width]`` in *dtype*, checked against the tower."""
        src = self.tokens[j]
        t = src() if callable(src) else src
        width = self.lmap.layers[max(j, 1)].width
        if t.dim() not in (2, 3) or t.shape[-1] != width or (t.dim() == 3 and t.shape[0] != batch):
            raise MmaError(
                f"The prompt tokens at {self.tower} place {j} have shape {tuple(t.shape)} (valid: [n, {width}] or "
                f"[{batch}, n, {width}], one set per sequence)."
            )
        n = t.shape[-2]
        if self._n is not None and n != self._n:
            raise MmaError(
                f"The prompt tokens at {self.tower} place {j} are {n}, but {self._n} at an earlier place (valid: "
                "the same number at every place of a tower)."
            )
        self._n = n
        t = t.to(dtype)
        return t.expand(batch, -1, -1) if t.dim() == 2 else t

    # -- what each place does, on batch-first tokens [B, T, D] ----------------------------------------

    def _put(self, j: int, x: torch.Tensor) -> torch.Tensor:
        """Batch-first hidden states *x* with place *j*'s tokens put in (appended, inserted or replacing)."""
        first = j == self.places[0]
        if first:
            self._n = None
        c = self._value(j, x.shape[0], x.dtype)
        n = c.shape[1]
        if self.tower == "image":
            return torch.cat([x, c] if first else [x[:, :-n], c], dim=1)
        if first and self.insert:
            return torch.cat([x[:, :1], c, x[:, 1:]], dim=1)
        if x.shape[1] < 1 + n:
            raise MmaError(f"{n} prompt tokens do not fit after the SOT token of {x.shape[1]}-token texts.")
        return torch.cat([x[:, :1], c, x[:, 1 + n :]], dim=1)

    def _remove(self, x: torch.Tensor) -> torch.Tensor:
        """Batch-first hidden states *x* without the added tokens (image: the last n; inserted text: 1..n)."""
        n = self._n or 0
        if self.tower == "image":
            return x[:, : x.shape[1] - n]
        return torch.cat([x[:, :1], x[:, 1 + n :]], dim=1)

    @property
    def _adds(self) -> bool:
        """Whether the tokens lengthen the sequence (and must be removed at the last block)."""
        return self.tower == "image" or self.insert

    # -- hooks -------------------------------------------------------------------------------------------

    def _in_layout(self, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``fn`` applied to *x* (a block's hidden states in the tower's layout) as batch-first tokens."""
        if self.lmap.batch_first:
            return fn(x)
        return fn(x.transpose(0, 1)).transpose(0, 1)

    def _block_pre(self, j: int | None, _module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Pre-hook of a block: its input with place *j*'s tokens (None: nothing put), and a lengthened mask."""
        x = self.lmap.block_input(args, kwargs)
        if j is not None:
            x = self._in_layout(x, lambda t: self._put(j, t))
        if args:
            args = (x, *args[1:])
        else:
            kwargs = {**kwargs, self.lmap.input_name: x}
        if self.insert:
            args, kwargs = self._with_mask(x.shape[0 if not self.lmap.batch_first else 1], args, kwargs)
        return args, kwargs

    @staticmethod
    def _with_mask(length: int, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """A block's arguments with its causal ``attn_mask`` (keyword, or open_clip's 4th positional argument under
        gradient checkpointing) made *length* long: the inserted tokens are attended causally, as every token."""
        positional = len(args) > 3
        mask = args[3] if positional else kwargs.get("attn_mask")
        if mask is None or mask.shape[-1] == length:
            return args, kwargs
        if mask.dim() != 2:
            raise MmaError("Inserted text tokens need a plain causal text mask; this text tower pads its masks.")
        if mask.dtype == torch.bool:
            new = torch.ones(length, length, dtype=torch.bool, device=mask.device).triu(1)
        else:
            new = torch.full((length, length), float("-inf"), dtype=mask.dtype, device=mask.device).triu(1)
        if positional:
            return (*args[:3], new, *args[4:]), kwargs
        return args, {**kwargs, "attn_mask": new}

    def _last_post(self, _module, _args, _kwargs, output: Any) -> Any:
        """Forward hook of the last block: its output without the added tokens."""
        h = self.lmap.block_output(output)
        return self.lmap.with_block_output(output, self._in_layout(h, self._remove))

    def _embed_hook(self) -> RemovableHandle:
        """The hook of place 0 (module docstring): text token embedding output, image ``embed_norm`` input."""
        if self.tower == "text":
            emb = token_embedding(self.model)
            return emb.register_forward_hook(lambda _m, _a, out: self._put(0, out), prepend=True)
        if self.lmap.embed_norm is None:  # no norm below block 1: place 0 is block 1's input
            block = self.lmap.blocks(self.model)[0]
            return block.register_forward_pre_hook(lambda m, a, kw: self._block_pre(0, m, a, kw), **_PRE)
        norm = self.model.get_submodule(self.lmap.embed_norm)
        return norm.register_forward_pre_hook(lambda _m, args: (self._put(0, args[0]), *args[1:]), prepend=True)

    @property
    def is_attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> TowerPrompts:
        """Register the hooks (module docstring); returns self. Already attached: an MmaError."""
        if self._handles:
            raise MmaError(f"These {self.tower} prompts are already attached; call detach() first.")
        if not self.tokens:
            return self
        blocks = self.lmap.blocks(self.model)
        try:
            if 0 in self.tokens:
                self._handles.append(self._embed_hook())
            first = self.places[0]
            # an inserted text sequence needs its lengthened mask at every block from the first place on
            for j in range(max(first, 1), self.lmap.depth + 1):
                if j in self.tokens or self.insert:
                    put = j if j in self.tokens else None
                    hook = _bind_pre(self, put)
                    self._handles.append(blocks[j - 1].register_forward_pre_hook(hook, **_PRE))
            if self._adds:
                self._handles.append(blocks[-1].register_forward_hook(self._last_post, with_kwargs=True))
        except BaseException:
            self.detach()
            raise
        return self

    def detach(self) -> None:
        """Remove every hook (the model is then exactly as it was); a no-op when not attached."""
        while self._handles:
            self._handles.pop().remove()
        self._n = None

    def __enter__(self) -> TowerPrompts:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()


_PRE = {"with_kwargs": True, "prepend": True}


def _bind_pre(prompts: TowerPrompts, j: int | None) -> Callable:
    def hook(module, args, kwargs):
        return prompts._block_pre(j, module, args, kwargs)

    return hook


@contextlib.contextmanager
def prompted(
    model: nn.Module,
    *,
    image: Mapping[int, TokenSource] | None = None,
    text: Mapping[int, TokenSource] | None = None,
    text_insert: bool = False,
) -> Iterator[None]:
    """While inside, *model* carries the *image* and *text* tokens (places as in the module docstring)."""
    with contextlib.ExitStack() as stack:
        if image:
            stack.enter_context(TowerPrompts(model, "image", image))
        if text:
            stack.enter_context(TowerPrompts(model, "text", text, insert=text_insert))
        yield
