"""Only live text positions: run a causal text tower up to the batch's last readout token, not its full context.

CLIP's text tower is causal (position ``i`` attends to positions ``<= i``) and reads its feature out at one
token (the end-of-text token), so no position after the batch's last readout token can change any feature:
"a photo of a {}." prompts end around position 8-15 of CLIP's 77. :func:`cut_text` runs open_clip's own
``encode_text`` on the tokens up to that position, with the tower's ``positional_embedding`` and causal
``attn_mask`` cut to the same length for the duration (both read from the module the layer map names,
``LayerMap.cut_owner``). Nothing of open_clip is copied; the features equal the full-length ones up to float
rounding (the attention's softmax sums fewer exact zeros; ``tests/test_textcut.py`` checks every tower family).

Towers whose map names no ``cut_owner`` (bidirectional towers, ``last`` or appended-token readouts, padding
masks, Hugging Face encoders) run in full: :func:`live_length` is None for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .layermap import LayerMap

__all__ = ["live_length", "cut_text", "encode_text"]


def live_length(text_map: LayerMap, tokens: torch.Tensor) -> int | None:
    """Positions the batch needs (last readout token + 1), or None when the tower must run in full."""
    if text_map.cut_owner is None or tokens.ndim != 2 or tokens.shape[1] == 0:
        return None
    index, _ = text_map.readout(tokens)
    return min(int(index.max()) + 1, tokens.shape[1])


@contextmanager
def cut_text(
    model: nn.Module, text_map: LayerMap, tokens: torch.Tensor, length: int | None = None
) -> Iterator[torch.Tensor]:
    """``with cut_text(model, text_map, tokens) as live: model.encode_text(live)``: the live columns of *tokens*.

    While inside, the tower's positional embedding and causal mask hold their first ``length`` positions
    (:func:`live_length` of *tokens* unless given: a caller encoding the same tokens every step computes it
    once). When the tower cannot be cut, *tokens* come back as they are and nothing changes.
    """
    n = live_length(text_map, tokens) if length is None else length
    if n is None or n >= tokens.shape[1]:
        yield tokens
        return
    owner = model.get_submodule(text_map.cut_owner)
    pos, mask = owner.positional_embedding, owner.attn_mask
    owner.positional_embedding = nn.Parameter(pos[:n], requires_grad=False)
    owner.attn_mask = mask[:n, :n]
    try:
        yield tokens[:, :n]
    finally:
        owner.positional_embedding = pos
        owner.attn_mask = mask


def encode_text(model: nn.Module, text_map: LayerMap, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)`` (unnormalised) on the live positions only."""
    with cut_text(model, text_map, tokens) as live:
        return model.encode_text(live)
