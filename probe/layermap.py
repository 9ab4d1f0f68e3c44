"""The layer-map types: :class:`Layer`, :class:`TextReadout` and :class:`LayerMap` (see :mod:`mma.probe.layers`).

They live apart from :mod:`mma.probe.layers` because both it and :mod:`mma.probe.towers` need them: towers
builds the maps, and layers resolves a model's maps through towers (:func:`~mma.probe.layers.layer_maps`).
With the types here, neither of the two imports the other in a circle. Import them from
:mod:`mma.probe.layers`, which re-exports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mma.errors import MmaError

__all__ = ["Layer", "TextReadout", "LayerMap"]


@dataclass(frozen=True)
class Layer:
    index: int
    name: str
    module: str
    hook: str  # "block_input", "block_output" or "tower_output"
    width: int


@dataclass(frozen=True)
class TextReadout:
    """How a text tower reads out its tokens (from the tower's own pooling settings).

    ``kind``: ``argmax`` (CLIP: the EOT token has the largest id), ``eos`` (the first ``eos_id``), ``last``,
    ``first``, ``appended`` (CoCa: a class embedding appended after the tokens), ``mask`` (Hugging Face
    mean pooling: no single token) or ``mask-first`` (Hugging Face CLS pooling: position 0).
    """

    kind: str
    eos_id: int | None = None
    pad_id: int | None = None


@dataclass(frozen=True)
class LayerMap:
    """The layers of one tower, index 0..L+1, and how to read its blocks.

    Attributes
    ----------
    tower : {"image", "text"}
    family : str
        The tower family that built this map (see :mod:`mma.probe.towers`), e.g. ``"timm-vit"``.
    layers : tuple[Layer, ...]
        XEmbed, blocks 1..L, XProj.
    block_paths : tuple[str, ...]
        Module path of block 1..L inside the model.
    layout : {"NLD", "LND", "NHWC", "NCHW"}
        How a block's input and output hold the tokens.
    transformer : bool
        Blocks are transformer blocks (the adapter can attach); False for convolutional stages.
    pre_norm : str or None
        Path, inside a block, of the norm whose output the block's first sub-layer reads (``ln_1``,
        ``norm1``, ...): the adapter's input. None: the block's input as it is (post-norm blocks, whose
        first sub-layer reads the un-normalised input).
    input_name : str
        Keyword under which a block may receive its hidden state (when not positional).
    class_token : bool
        Image towers: token 0 is a class token the tower reads out.
    text_readout : TextReadout or None
        Text towers: how the tower reads out its tokens.
    blocks_path : str or None
        Path of the one module list holding blocks 1..L, where there is one (the text prefix cache
        needs it); None for towers whose blocks sit in several stages.
    prefix_cache : bool
        The frozen blocks below k may be skipped by caching block k's input (native text towers).
    cut_owner : str or None
        Text towers whose positions after the last readout token cannot change any feature (open_clip's own
        causal text towers read out at a token: ``argmax``, ``eos`` or ``first``): path of the module that holds
        the tower's ``positional_embedding`` and causal ``attn_mask``, which :mod:`mma.probe.textcut` cuts to the
        live length. None: the tower runs in full (bidirectional towers, ``last`` or appended-token readouts,
        padding masks, Hugging Face encoders).
    embed_norm : str or None
        Image towers: path of the norm applied to the embeddings before block 1 (open_clip's ``visual.ln_pre``,
        timm's ``visual.trunk.norm_pre``); its input, batch-first tokens ``[B, T, D]``, is XEmbed
        ``before-ln-pre``. None: no such norm, both XEmbed points are block 1's input.
    """

    tower: str
    family: str
    layers: tuple[Layer, ...]
    block_paths: tuple[str, ...]
    layout: str = "NLD"
    transformer: bool = True
    pre_norm: str | None = None
    input_name: str = "x"
    class_token: bool = False
    text_readout: TextReadout | None = None
    blocks_path: str | None = None
    prefix_cache: bool = False
    embed_norm: str | None = None
    cut_owner: str | None = None

    # -- names and indices -------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """L, the number of blocks."""
        return len(self.layers) - 2

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def batch_first(self) -> bool:
        return self.layout != "LND"

    @property
    def has_readout_token(self) -> bool:
        """Whether ``cls`` pooling has a token to take (see :mod:`mma.probe.layers`)."""
        if self.tower == "image":
            return self.class_token
        return self.text_readout is not None and self.text_readout.kind != "mask"

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def resolve(self, key: int | str) -> Layer:
        """``"XEmbed"``, ``"XProj"``, a block name ``"7"`` or an index (0..L+1; negative counts from XProj)."""
        n = len(self.layers)
        if isinstance(key, str):
            k = key.strip()
            for layer in self.layers:
                if layer.name.lower() == k.lower():
                    return layer
            try:
                key = int(k)
            except ValueError:
                raise MmaError(
                    f"Layer {key!r} does not exist in the {self.tower} tower (valid: XEmbed, 1..{self.depth}, XProj)."
                ) from None
        idx = key + n if key < 0 else key
        if not 0 <= idx < n:
            raise MmaError(
                f"Layer index {key} is out of range for the {self.tower} tower (0 to {n - 1}, or -{n} to -1)."
            )
        return self.layers[idx]

    # -- reading blocks ----------------------------------------------------------------------------

    def blocks(self, model: nn.Module) -> list[nn.Module]:
        """The blocks 1..L of this tower, in order."""
        return [model.get_submodule(p) for p in self.block_paths]

    def block_input(self, args: Sequence[Any], kwargs: dict[str, Any]) -> torch.Tensor:
        """The hidden state a block was called with (from a forward pre-hook's or hook's arguments)."""
        if args:
            return args[0]
        if self.input_name in kwargs:
            return kwargs[self.input_name]
        raise RuntimeError(f"a {self.family} block was called without its input {self.input_name!r}")

    @staticmethod
    def block_output(output: Any) -> torch.Tensor:
        """The hidden state a block returned (its first element if it returned a tuple)."""
        return output[0] if isinstance(output, tuple) else output

    @staticmethod
    def with_block_output(output: Any, hidden: torch.Tensor) -> Any:
        """*output* with its hidden state replaced by *hidden* (same container type)."""
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    def adapter_input(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """What the adapter reads in a block: ``pre_norm(x)``, or *x* itself (see ``pre_norm``)."""
        return x if self.pre_norm is None else block.get_submodule(self.pre_norm)(x)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """A block's hidden state as batch-first tokens ``[B, T, D]``."""
        if self.layout == "NLD":
            return x
        if self.layout == "LND":
            return x.transpose(0, 1)
        if self.layout == "NHWC":
            return x.flatten(1, 2)
        return x.flatten(2).transpose(1, 2)  # NCHW: one token per position of the grid

    # -- readout -----------------------------------------------------------------------------------

    def readout(self, tokens: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(readout index [B] or None, mean mask [B, T] or None)`` for a batch.

        Image towers: the class token (index 0) if there is one, and no mask (every token). Text towers
        (*tokens* ``[B, T]`` required): the token the tower reads out and the positions ``mean`` covers.
        """
        if self.tower == "image":
            return None, None
        if tokens is None:
            raise ValueError("a text readout needs the token ids")
        r = self.text_readout or TextReadout("argmax")
        n, length = tokens.shape
        positions = torch.arange(length, device=tokens.device)[None, :]
        if r.kind in ("mask", "mask-first"):
            mask = tokens != r.pad_id
            index = torch.zeros(n, dtype=torch.long, device=tokens.device) if r.kind == "mask-first" else None
            return index, mask
        if r.kind == "argmax":
            eot = tokens.argmax(dim=-1)
        elif r.kind == "eos":
            eot = (tokens == r.eos_id).int().argmax(dim=-1)
        elif r.kind == "first":
            eot = torch.zeros(n, dtype=torch.long, device=tokens.device)
        elif r.kind in ("last", "appended"):
            eot = torch.full((n,), length - 1, dtype=torch.long, device=tokens.device)
        else:
            raise MmaError(f"Text pooling {r.kind!r} has no readout token mma knows.")
        mask = positions <= eot[:, None]
        index = torch.full((n,), length, dtype=torch.long, device=tokens.device) if r.kind == "appended" else eot
        return index, mask
