"""Run the frozen text blocks below k once per run, not once per step, on the live positions only.

The prompts never change during training, and every text block below the first adapted block k is
frozen, so block k's input is a constant. :class:`TextPrefixCache` computes it once, then each training
step runs only blocks k..L (with their adapters) and open_clip's own tail (final LayerNorm, EOT pooling,
projection) by calling ``model.encode_text`` with the tower cut at block k (:func:`mma.adapters.frozen.from_block`:
the block list holds blocks k..L and block k receives the cached hidden state; the embeddings still run, which
costs a lookup). Both passes run on the live positions only, up to the prompts' last end-of-text token
(:mod:`mma.probe.textcut`). Nothing of open_clip is copied, so the result equals ``encode_text`` (a test checks
it).
"""

from __future__ import annotations

import torch
from torch import nn

from mma.errors import MmaError
from mma.probe.layers import LayerMap
from mma.probe.textcut import cut_text, live_length

from .frozen import block_input, from_block

__all__ = ["TextPrefixCache"]


class TextPrefixCache:
    """``cache.encode()`` == ``model.encode_text(tokens)``, skipping the frozen blocks below *k*.

    Parameters
    ----------
    model:
        An open_clip model whose text tower's map allows it (``text_map.prefix_cache``: open_clip's own
        text towers; not Hugging Face encoders, whose layers may pass state such as T5's position bias from
        block 1 on).
    text_map:
        The text tower's :class:`~mma.probe.layers.LayerMap`.
    k:
        First text block whose input may change (1-based); blocks 1..k-1 must be frozen.
    tokens:
        ``[n_prompts, context_length]`` token ids.
    """

    def __init__(self, model: nn.Module, text_map: LayerMap, k: int, tokens: torch.Tensor) -> None:
        if not text_map.prefix_cache or text_map.blocks_path is None:
            raise MmaError(f"The {text_map.family} text tower cannot skip its frozen blocks; encode the text in full.")
        self.model = model
        self.text_map = text_map
        self.k = k
        self.tokens = tokens
        self.length = live_length(text_map, tokens)  # once: the prompts never change
        self.hidden = None
        if k > 1:
            with torch.no_grad(), cut_text(model, text_map, tokens, self.length) as live:
                self.hidden = block_input(model, text_map, k, lambda: model.encode_text(live))

    def encode(self) -> torch.Tensor:
        """Text features ``[n_prompts, embed_dim]`` (unnormalised), with gradients into blocks k..L."""
        with cut_text(self.model, self.text_map, self.tokens, self.length) as live:
            if self.hidden is None:
                return self.model.encode_text(live)
            with from_block(self.model, self.text_map, self.k, self.hidden):
                return self.model.encode_text(live)
