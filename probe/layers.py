"""The layer map of each tower: ``XEmbed``, blocks ``1``..``L``, ``XProj``, and one resolver for them.

Like timm's ``feature_info``, tools ask the map, not a hard-coded list. Each layer has an integer index
0..L+1, a name, the module it is read from, how it is read and its width:

=========  =====  =====================================================  ==================
name       index  read from                                              how
=========  =====  =====================================================  ==================
XEmbed     0      input of block 1 (image: after ``ln_pre``, i.e. patch   forward pre-hook
                  embedding + class token + positional embedding + ln_pre;
                  text: token + positional embedding)
1..L       1..L   output of residual block i                             forward hook
XProj      L+1    the tower's own output (``encode_image``/``encode_text``) return value
=========  =====  =====================================================  ==================

XEmbed sits *after* ``ln_pre`` (open_clip applies ``ln_pre`` inside ``_embeds``, before the blocks), so
it is exactly what block 1 sees. Only open_clip's native transformer towers are mapped; timm or
Hugging Face towers get a clear "not supported" error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mma.errors import MmaError

__all__ = ["Layer", "LayerMap", "layer_maps", "TOWERS", "text_readout_index"]

TOWERS = ("image", "text")


@dataclass(frozen=True)
class Layer:
    index: int
    name: str
    module: str
    hook: str  # "block_input", "block_output" or "tower_output"
    width: int


@dataclass(frozen=True)
class LayerMap:
    """The layers of one tower, index 0..L+1."""

    tower: str
    layers: tuple[Layer, ...]
    blocks_path: str
    batch_first: bool

    @property
    def depth(self) -> int:
        """L, the number of residual blocks."""
        return len(self.layers) - 2

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

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

    def blocks(self, model: nn.Module) -> list[nn.Module]:
        """The residual blocks 1..L of this tower, in order."""
        return list(model.get_submodule(self.blocks_path))


def _is_openclip_transformer(module: object) -> bool:
    from open_clip.transformer import Transformer

    return isinstance(module, Transformer)


def _proj_width(proj, width: int) -> int:
    if proj is None:
        return width
    if isinstance(proj, nn.Linear):
        return proj.out_features
    return int(proj.shape[1])


def _build(tower: str, prefix: str, transformer: nn.Module, out_width: int, out_module: str) -> LayerMap:
    blocks_path = f"{prefix}transformer.resblocks"
    width = transformer.width
    n_blocks = len(transformer.resblocks)
    layers = [Layer(0, "XEmbed", f"{blocks_path}.0", "block_input", width)]
    layers += [Layer(i, str(i), f"{blocks_path}.{i - 1}", "block_output", width) for i in range(1, n_blocks + 1)]
    layers.append(Layer(n_blocks + 1, "XProj", out_module, "tower_output", out_width))
    return LayerMap(tower, tuple(layers), blocks_path, bool(getattr(transformer, "batch_first", True)))


def layer_maps(model: nn.Module) -> dict[str, LayerMap]:
    """``{"image": LayerMap, "text": LayerMap}`` for an open_clip CLIP / CustomTextCLIP model."""
    from open_clip.transformer import TextTransformer, VisionTransformer

    visual = getattr(model, "visual", None)
    if not isinstance(visual, VisionTransformer):
        raise MmaError(
            f"The image tower {type(visual).__name__} is not supported; mma maps open_clip's native "
            "VisionTransformer towers only (timm, Hugging Face and ResNet towers have no layer map yet)."
        )
    image = _build("image", "visual.", visual.transformer, visual.output_dim, "visual")

    text_tower = getattr(model, "text", None)
    if text_tower is None and _is_openclip_transformer(getattr(model, "transformer", None)):
        text = _build("text", "", model.transformer, _proj_width(model.text_projection, model.transformer.width), "")
    elif isinstance(text_tower, TextTransformer):
        text = _build(
            "text", "text.", text_tower.transformer, _proj_width(text_tower.text_projection, text_tower.width), "text"
        )
    else:
        raise MmaError(
            f"The text tower {type(text_tower).__name__} is not supported; mma maps open_clip's CLIP text "
            "transformer and TextTransformer only (Hugging Face text towers have no layer map yet)."
        )
    return {"image": image, "text": text}


def text_readout_index(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Position of the token each text is read out from (CLIP: the EOT token, the largest id)."""
    tower = getattr(model, "text", model)
    pool = getattr(tower, "text_pool_type", None) or getattr(tower, "pool_type", "argmax")
    if pool == "argmax":
        return tokens.argmax(dim=-1)
    if pool == "eos":
        eos = getattr(tower, "text_eos_id", None) or getattr(tower, "eos_id", None)
        return (tokens == eos).int().argmax(dim=-1)
    if pool == "last":
        return torch.full((tokens.shape[0],), tokens.shape[1] - 1, dtype=torch.long, device=tokens.device)
    if pool == "first":
        return torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
    raise MmaError(f"Text pooling {pool!r} has no single readout token; mma supports argmax, eos, last and first.")
