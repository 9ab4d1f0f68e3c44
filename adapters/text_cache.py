"""Run the frozen text blocks below k once per run, not once per step.

The prompts never change during training, and every text block below the first adapted block k is
frozen, so block k's input is a constant. :class:`TextPrefixCache` computes it once, then each training
step runs only blocks k..L (with their adapters) and open_clip's own tail (final LayerNorm, EOT pooling,
projection) by calling ``model.encode_text`` with two temporary changes read from the layer map: the
tower's block list is cut to blocks k..L, and the input of block k is replaced by the cached hidden state
(the embeddings still run, which costs a lookup).
Nothing of open_clip is copied, so the result equals ``encode_text`` (a test checks it).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from mma.errors import MmaError
from mma.probe.layers import LayerMap

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
        parent, _, self._attr = text_map.blocks_path.rpartition(".")
        self._container = model.get_submodule(parent) if parent else model
        blocks = text_map.blocks(model)
        captured = {}

        def grab(_module, args, kwargs):
            captured["x"] = text_map.block_input(args, kwargs).detach()

        handle = blocks[k - 1].register_forward_pre_hook(grab, with_kwargs=True)
        try:
            with torch.no_grad():
                model.encode_text(tokens)  # one full pass; only block k's input is kept
        finally:
            handle.remove()
        self.hidden = captured["x"]  # in the blocks' own layout

    @contextmanager
    def _tail_only(self):
        original = getattr(self._container, self._attr)
        tail = list(original)[self.k - 1 :]
        setattr(
            self._container,
            self._attr,
            nn.Sequential(*tail) if isinstance(original, nn.Sequential) else nn.ModuleList(tail),
        )
        first = tail[0]
        name = self.text_map.input_name

        def swap_input(_module, args, kwargs):
            if args:
                return (self.hidden, *args[1:]), kwargs
            return args, {**kwargs, name: self.hidden}

        handle = first.register_forward_pre_hook(swap_input, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()
            setattr(self._container, self._attr, original)

    def encode(self) -> torch.Tensor:
        """Text features ``[n_prompts, embed_dim]`` (unnormalised), with gradients into blocks k..L."""
        if self.k == 1:
            return self.model.encode_text(self.tokens)
        with self._tail_only():
            return self.model.encode_text(self.tokens)
