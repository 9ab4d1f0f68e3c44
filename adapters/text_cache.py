"""Run the frozen text blocks below k once per run, not once per step.

The prompts never change during training, and every text block below the first adapted block k is
frozen, so block k's input is a constant. :class:`TextPrefixCache` computes it once, then each training
step runs only blocks k..L (with their adapters) and open_clip's own tail (final LayerNorm, EOT pooling,
projection) by calling ``model.encode_text`` with two temporary, hook-level changes: the text
transformer's block list is cut to blocks k..L, and its input is replaced by the cached hidden state.
Nothing of open_clip is copied, so the result equals ``encode_text`` (a test checks it).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from mma.probe.layers import LayerMap

__all__ = ["TextPrefixCache"]


class TextPrefixCache:
    """``cache.encode()`` == ``model.encode_text(tokens)``, skipping the frozen blocks below *k*.

    Parameters
    ----------
    model:
        An open_clip CLIP / CustomTextCLIP model.
    text_map:
        The text tower's :class:`~mma.probe.layers.LayerMap`.
    k:
        First text block whose input may change (1-based); blocks 1..k-1 must be frozen.
    tokens:
        ``[n_prompts, context_length]`` token ids.
    """

    def __init__(self, model: nn.Module, text_map: LayerMap, k: int, tokens: torch.Tensor) -> None:
        self.model = model
        self.text_map = text_map
        self.k = k
        self.tokens = tokens
        self.transformer = model.get_submodule(text_map.blocks_path.rsplit(".", 1)[0])
        blocks = text_map.blocks(model)
        captured = {}

        def grab(_module, args):
            captured["x"] = args[0].detach()

        handle = blocks[k - 1].register_forward_pre_hook(grab)
        try:
            with torch.no_grad():
                model.encode_text(tokens)  # one full pass; only block k's input is kept
        finally:
            handle.remove()
        hidden = captured["x"]
        # the transformer's own input is batch-first; a block sees [L, N, D] when batch_first is False
        self.hidden = hidden if text_map.batch_first else hidden.transpose(0, 1)

    @contextmanager
    def _tail_only(self):
        original = self.transformer.resblocks
        self.transformer.resblocks = nn.ModuleList(list(original)[self.k - 1 :])

        def swap_input(_module, args, kwargs):
            return (self.hidden,) + tuple(args[1:]), kwargs

        handle = self.transformer.register_forward_pre_hook(swap_input, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()
            self.transformer.resblocks = original

    def encode(self) -> torch.Tensor:
        """Text features ``[n_prompts, embed_dim]`` (unnormalised), with gradients into blocks k..L."""
        if self.k == 1:
            return self.model.encode_text(self.tokens)
        with self._tail_only():
            return self.model.encode_text(self.tokens)
