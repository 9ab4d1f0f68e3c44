"""The layer map of each tower: ``XEmbed``, blocks ``1``..``L``, ``XProj``, and one resolver for them.

Like timm's ``feature_info``, tools ask the map, not a hard-coded list. Each layer has an integer index
0..L+1, a name, the module it is read from, how it is read and its width:

=========  =====  ====================================================  ==================
name       index  read from                                             how
=========  =====  ====================================================  ==================
XEmbed     0      the input of block 1: what the first block sees        forward pre-hook
1..L       1..L   the output of block i                                 forward hook
XProj      L+1    the tower's own output (``encode_image``/``encode_text``) return value
=========  =====  ====================================================  ==================

**Which side of ``ln_pre`` XEmbed sits** (:data:`XEMBED_POINTS`, ``mma probe layers --xembed``). SPEC.md calls
XEmbed the token sequence "before the first transformer block (patch embedding + class token + positional
embedding)", which leaves open whether the image tower's pre-norm (open_clip's ``ln_pre``, timm's ``norm_pre``)
is part of it. ``after-ln-pre`` (the default, **[ours]**): the input of block 1, what the first block sees,
the same point in every tower family. ``before-ln-pre``: the sum of the patch, class and positional embeddings
before that norm (``LayerMap.embed_norm``'s input); for a tower without such a norm (Swin, convolutional stems,
every text tower) the two points are the same tensor.

A :class:`LayerMap` also says how to read a block, so that capture (:mod:`mma.probe.capture`) and the
adapter (:mod:`mma.adapters.mma`) never look inside a tower: the module path of every block, where a block
receives its hidden state (first positional argument or the keyword ``input_name``) and returns it (the
output, or its first element when a block returns a tuple), the token layout a block works in, the norm
whose output the adapter reads (``pre_norm``), whether the blocks are transformer blocks, and which token
the tower reads out. The maps themselves are built per tower family in :mod:`mma.probe.towers`, the one
place that looks at a tower's type.

Tower families (built in :mod:`mma.probe.towers`, chosen by the tower's type). For each: the towers,
XEmbed and the blocks, the readout token ``cls`` takes, and the adapter's input (``pre_norm``):

``open_clip-vit``
    open_clip ``VisionTransformer``. XEmbed after ``ln_pre`` (``before-ln-pre``: its input); blocks
    ``transformer.resblocks``; the class token; ``ln_1``.
``timm-vit``
    ``TimmModel`` around timm's ``VisionTransformer`` (ViT, SigLIP, MobileCLIP-B, ViTamin), ``Eva`` (EVA,
    PE-Core) or ViT-RelPos. XEmbed after ``norm_pre``, or before it (patches, class / register tokens,
    positions; for ViTamin and MobileCLIP-B after their convolutional stem); blocks ``trunk.blocks``; the class token if
    the trunk has one, else none (SigLIP's attention pool, global-average-pool ViTs, ViTamin); ``norm1``,
    or for post-norm blocks (EVA02-E's ``EvaBlockPostNorm``, timm's ``ResPostBlock``) the block's input.
``timm-swin``
    ``TimmModel`` around Swin. XEmbed after the patch embedding; every block of every stage (widths grow
    per stage); no readout token; ``norm1``.
``timm-stages``, ``resnet-stages``
    ``TimmModel`` around ConvNeXt or FastViT (MobileCLIP-S), open_clip's ``ModifiedResNet``. XEmbed = the
    stem's output, "blocks" = the stages (``trunk.stages``, ``layer1``..``layer4``); no readout token; no
    adapter: **MMA needs transformer blocks**.
``open_clip-text``
    CLIP's built-in text transformer and ``TextTransformer`` (CoCa too). XEmbed = token + positional
    embedding; blocks ``resblocks``; the EOT token (or the tower's ``eos`` / ``last`` / ``first`` pooling;
    CoCa: its appended class embedding); ``ln_1``.
``hf-text``
    ``HFTextEncoder`` (RoBERTa, XLM-R, BERT, mT5, NLLB / M2M100). XEmbed = the embeddings' output; blocks =
    the encoder's layer list; position 0 for a CLS pooler, none for a mean pooler; T5's
    ``layer.0.layer_norm``, M2M100's ``self_attn_layer_norm``, and for the post-norm RoBERTa / BERT layers
    **[ours]** the block's input, which is already the previous layer's LayerNorm output.

XProj is always the tower's own output (``encode_image`` / ``encode_text``, unnormalised): after the final
norm, the pooling or attention-pool head and the projection; for Hugging Face towers, the projection of the
pooler's output. The adapter's input is what the block's first sub-layer reads: its pre-norm's output for
pre-norm blocks, the block's input itself for post-norm blocks.

Pooling a token map ``[B, T, D]`` to ``[B, D]`` (:func:`mma.probe.capture.pool_tokens`, inside the capture hooks):

* ``mean``: image, every token (class / register tokens included); text, the positions the tower itself
  attends to: up to and including the EOT token for CLIP-style text towers, every non-padding token for
  Hugging Face towers.
* ``cls``: the token the tower reads out: the class token (image) or the EOT / class / last token (text).
  **[ours]** A tower that reads out no single token (an image tower without a class token, such as
  SigLIP's attention-pool head or a global-average-pool ViT; a convolutional stage; a mean-pooled Hugging
  Face text tower) has no CLS token: there ``cls`` pools like ``mean``, and ``mma probe layers`` says so.
"""

from __future__ import annotations

import torch
from torch import nn

from mma.errors import MmaError

from .layermap import Layer, LayerMap, TextReadout  # noqa: F401 (TextReadout: still importable from here)
from .towers import tower_maps

__all__ = ["Layer", "LayerMap", "layer_maps", "TOWERS", "LAYOUTS", "XEMBED_POINTS", "text_readout_index"]

TOWERS = ("image", "text")
LAYOUTS = ("NLD", "LND", "NHWC", "NCHW")  # tokens batch-first, sequence-first, channels-last grid, conv map
XEMBED_POINTS = ("after-ln-pre", "before-ln-pre")  # the first is the default (see the module docstring)


def layer_maps(model: nn.Module) -> dict[str, LayerMap]:
    """``{"image": LayerMap, "text": LayerMap}`` for an open_clip model (CLIP, CustomTextCLIP, CoCa).

    The family of each tower is chosen by its type in :func:`mma.probe.towers.tower_maps`; an unknown tower
    is an :class:`MmaError` naming it.
    """
    return tower_maps(model)


def text_readout_index(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Position of the token each text is read out from (CLIP: the EOT token, the largest id)."""
    index, _ = layer_maps(model)["text"].readout(tokens)
    if index is None:
        raise MmaError("This text tower reads out no single token (it mean-pools); it has no readout index.")
    return index
