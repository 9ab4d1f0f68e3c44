"""Tower families: the one place that looks at a tower's type and builds its :class:`~mma.probe.layers.LayerMap`.

Every other module (capture, extraction, the adapter, the text prefix cache) reads only the map. A family
is chosen by the tower's Python type (:func:`tower_maps`, after a model is built) or, before any weights
are loaded, by the architecture's open_clip config (:func:`architecture_support`: a timm model's family is
the timm module that defines it); a test checks that the two agree for every name in
``open_clip.list_models()``. What each family's XEmbed, blocks, readout token and adapter input are is
defined in :mod:`mma.probe.layers` (module docstring).

Adding a family is one builder here, one line in ``_BUILDERS`` and one in the type dispatch
(``_image_family`` / ``_text_family``), plus one representative in ``tests/test_towers.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from mma.errors import MmaError

from .layermap import Layer, LayerMap, TextReadout
from .openclip import import_open_clip

__all__ = ["FAMILIES", "Family", "ArchitectureSupport", "tower_maps", "architecture_support", "check_mma_support"]


@dataclass(frozen=True)
class Family:
    name: str
    tower: str
    label: str  # for tables: what a user recognises
    transformer: bool  # MMA can attach


FAMILIES = {
    f.name: f
    for f in (
        Family("open_clip-vit", "image", "open_clip ViT", True),
        Family("timm-vit", "image", "timm ViT / EVA / SigLIP", True),
        Family("timm-swin", "image", "timm Swin", True),
        Family("timm-stages", "image", "timm ConvNeXt / FastViT (stages)", False),
        Family("resnet-stages", "image", "ModifiedResNet (stages)", False),
        Family("open_clip-text", "text", "CLIP text transformer", True),
        Family("hf-text", "text", "Hugging Face text encoder", True),
    )
}

_POST_NORM_BLOCKS = ("ResPostBlock", "ResPostRelPosBlock", "EvaBlockPostNorm")
# timm modules whose models open_clip wraps, by the family their trunks belong to
_TIMM_MODULES = {
    "timm.models.vision_transformer": "timm-vit",
    "timm.models.vision_transformer_hybrid": "timm-vit",
    "timm.models.vision_transformer_relpos": "timm-vit",
    "timm.models.eva": "timm-vit",
    "timm.models.vitamin": "timm-vit",
    "timm.models.swin_transformer": "timm-swin",
    "timm.models.convnext": "timm-stages",
    "timm.models.fastvit": "timm-stages",
}
# Hugging Face text encoders: model type -> (path of the layer list inside HFTextEncoder.transformer, pre-norm)
_HF_ENCODERS = {
    "roberta": ("encoder.layer", None),
    "xlm-roberta": ("encoder.layer", None),
    "bert": ("encoder.layer", None),
    "mt5": ("block", "layer.0.layer_norm"),
    "t5": ("block", "layer.0.layer_norm"),
    "m2m_100": ("layers", "self_attn_layer_norm"),
}


# -- building maps ---------------------------------------------------------------------------------


def _map(
    tower: str,
    family: str,
    paths: list[str],
    widths: list[int],
    out_width: int,
    out_module: str,
    **fields,
) -> LayerMap:
    """XEmbed (width ``widths[0]``), blocks 1..L (``widths[1:]``) and XProj for the blocks at *paths*."""
    n = len(paths)
    if n == 0:
        raise MmaError(f"The {tower} tower ({family}) has no blocks to map.")
    layers = [Layer(0, "XEmbed", paths[0], "block_input", int(widths[0]))]
    layers += [Layer(i, str(i), paths[i - 1], "block_output", int(widths[i])) for i in range(1, n + 1)]
    layers.append(Layer(n + 1, "XProj", out_module, "tower_output", int(out_width)))
    return LayerMap(tower, family, tuple(layers), tuple(paths), **fields)


def _proj_width(proj, width: int) -> int:
    if proj is None:
        return width
    if isinstance(proj, nn.Linear):
        return proj.out_features
    return int(proj.shape[1])


def _openclip_vit(model: nn.Module, embed_dim: int) -> LayerMap:
    visual = model.visual
    tr = visual.transformer
    path = "visual.transformer.resblocks"
    n = len(tr.resblocks)
    return _map(
        "image",
        "open_clip-vit",
        [f"{path}.{i}" for i in range(n)],
        [tr.width] * (n + 1),
        getattr(visual, "output_dim", embed_dim),
        "visual",
        layout="NLD" if getattr(tr, "batch_first", True) else "LND",
        pre_norm="ln_1",
        input_name="q_x",
        class_token=getattr(visual, "class_embedding", None) is not None,
        blocks_path=path,
        embed_norm="visual.ln_pre" if hasattr(visual, "ln_pre") else None,
    )


def _timm_out_width(visual: nn.Module) -> int:
    """Width of a TimmModel's output: its own projection head, else the trunk's classifier, else its features."""
    linears = [m for m in visual.head.modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[-1].out_features
    trunk = visual.trunk
    return int(getattr(trunk, "num_classes", 0) or trunk.num_features)


def _timm_vit(model: nn.Module, embed_dim: int) -> LayerMap:
    trunk = model.visual.trunk
    first = trunk.blocks[0]
    if not hasattr(first, "norm1"):
        raise MmaError(f"The timm block {type(first).__name__} has no norm1; mma maps timm ViT blocks that have one.")
    n = len(trunk.blocks)
    return _map(
        "image",
        "timm-vit",
        [f"visual.trunk.blocks.{i}" for i in range(n)],
        [trunk.embed_dim] * (n + 1),
        _timm_out_width(model.visual),
        "visual",
        pre_norm=None if type(first).__name__ in _POST_NORM_BLOCKS else "norm1",
        input_name="x",
        class_token=getattr(trunk, "cls_token", None) is not None,
        blocks_path="visual.trunk.blocks",
        embed_norm="visual.trunk.norm_pre" if hasattr(trunk, "norm_pre") else None,
    )


def _timm_swin(model: nn.Module, embed_dim: int) -> LayerMap:
    trunk = model.visual.trunk
    paths, widths = [], []
    for s, stage in enumerate(trunk.layers):
        for j, block in enumerate(stage.blocks):
            paths.append(f"visual.trunk.layers.{s}.blocks.{j}")
            widths.append(block.norm1.normalized_shape[0])
    return _map("image", "timm-swin", paths, [widths[0], *widths], embed_dim, "visual", layout="NHWC", pre_norm="norm1")


def _last_conv_channels(module: nn.Module) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise MmaError(f"Cannot read the output width of {type(module).__name__}: it has no convolution.")
    return convs[-1].out_channels


def _timm_stages(model: nn.Module, embed_dim: int) -> LayerMap:
    trunk = model.visual.trunk
    n = len(trunk.stages)
    widths = [_last_conv_channels(trunk.stem)] + [int(f["num_chs"]) for f in trunk.feature_info[:n]]
    return _map(
        "image",
        "timm-stages",
        [f"visual.trunk.stages.{i}" for i in range(n)],
        widths,
        _timm_out_width(model.visual),
        "visual",
        layout="NCHW",
        transformer=False,
        blocks_path="visual.trunk.stages",
    )


def _resnet_stages(model: nn.Module, embed_dim: int) -> LayerMap:
    visual = model.visual
    stages = [visual.layer1, visual.layer2, visual.layer3, visual.layer4]
    widths = [visual.bn3.num_features] + [stage[-1].bn3.num_features for stage in stages]
    return _map(
        "image",
        "resnet-stages",
        [f"visual.layer{i}" for i in range(1, 5)],
        widths,
        getattr(visual, "output_dim", embed_dim),
        "visual",
        layout="NCHW",
        transformer=False,
    )


def _native_text(model: nn.Module, embed_dim: int) -> LayerMap:
    # lazy, here and below: open_clip (with torchvision and timm) takes ~2.5 s to import on top of torch, and
    # this module is loaded with every `import mma.probe`, also where no model is built (see mma.probe.specs)
    from open_clip.transformer import TextTransformer

    text = getattr(model, "text", None)
    if isinstance(text, TextTransformer):
        prefix, tower, tr = "text.", text, text.transformer
        out_width = _proj_width(text.text_projection, text.width)
        pool, eos = text.pool_type, getattr(text, "eos_id", None)
        appended = getattr(text, "cls_emb", None) is not None
        padded = getattr(text, "use_pad_mask", False)
    else:
        prefix, tower, tr = "", model, model.transformer
        out_width = _proj_width(model.text_projection, tr.width)
        pool, eos = getattr(model, "text_pool_type", "argmax"), getattr(model, "text_eos_id", None)
        appended = padded = False
    # causal, and read out at a token: the positions after the batch's last readout token change nothing
    causal = getattr(tower, "attn_mask", None) is not None and not padded
    cuttable = causal and not appended and pool in ("argmax", "eos", "first")
    n = len(tr.resblocks)
    path = f"{prefix}transformer.resblocks"
    return _map(
        "text",
        "open_clip-text",
        [f"{path}.{i}" for i in range(n)],
        [tr.width] * (n + 1),
        out_width,
        prefix.rstrip(".") if tower is not model else "",
        layout="NLD" if getattr(tr, "batch_first", True) else "LND",
        pre_norm="ln_1",
        input_name="q_x",
        text_readout=TextReadout("appended" if appended else pool, eos_id=eos),
        blocks_path=path,
        prefix_cache=True,
        cut_owner=prefix.rstrip(".") if cuttable else None,
    )


def _hf_text(model: nn.Module, embed_dim: int) -> LayerMap:
    encoder = model.text
    model_type = encoder.config.model_type
    if model_type not in _HF_ENCODERS:
        raise MmaError(
            f"The Hugging Face text tower of model type {model_type!r} has no layer map "
            f"(mapped: {', '.join(sorted(_HF_ENCODERS))})."
        )
    layers_attr, pre_norm = _HF_ENCODERS[model_type]
    if model_type in ("mt5", "t5") and not hasattr(encoder.transformer, "block"):
        layers_attr = "encoder.block"  # a full encoder-decoder model: its encoder's blocks
    path = f"text.transformer.{layers_attr}"
    n = len(model.get_submodule(path))
    pooler = type(encoder.pooler).__name__
    return _map(
        "text",
        "hf-text",
        [f"{path}.{i}" for i in range(n)],
        [encoder.config.hidden_size] * (n + 1),
        getattr(encoder, "output_dim", embed_dim),
        "text",
        pre_norm=pre_norm,
        input_name="hidden_states",
        text_readout=TextReadout(
            "mask-first" if pooler.startswith("Cls") else "mask", pad_id=encoder.config.pad_token_id
        ),
        blocks_path=path,
    )


def _image_family(visual: nn.Module) -> str | None:
    # lazy: heavy, see _native_text
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        return "open_clip-vit"
    if isinstance(visual, ModifiedResNet):
        return "resnet-stages"
    if isinstance(visual, TimmModel):
        return _TIMM_MODULES.get(type(visual.trunk).__module__)
    return None


def _text_family(model: nn.Module) -> str | None:
    from open_clip.transformer import TextTransformer, Transformer  # lazy: heavy, see _native_text

    text = getattr(model, "text", None)
    if isinstance(text, TextTransformer) or (
        text is None and isinstance(getattr(model, "transformer", None), Transformer)
    ):
        return "open_clip-text"
    if type(text).__name__ == "HFTextEncoder":
        return "hf-text"
    return None


_BUILDERS: dict[str, Callable[[nn.Module, int], LayerMap]] = {
    "open_clip-vit": _openclip_vit,
    "timm-vit": _timm_vit,
    "timm-swin": _timm_swin,
    "timm-stages": _timm_stages,
    "resnet-stages": _resnet_stages,
    "open_clip-text": _native_text,
    "hf-text": _hf_text,
}


def _embed_dim(model: nn.Module) -> int:
    text = getattr(model, "text", None)
    if text is not None and getattr(text, "output_dim", None):
        return int(text.output_dim)
    proj = getattr(model, "text_projection", None)
    if proj is not None:
        return _proj_width(proj, 0)
    return int(getattr(model.visual, "output_dim", 0))


def tower_maps(model: nn.Module) -> dict[str, LayerMap]:
    """``{"image": LayerMap, "text": LayerMap}``, each built by the family its tower's type belongs to."""
    visual = getattr(model, "visual", None)
    image_family, text_family = _image_family(visual), _text_family(model)
    if image_family is None:
        inner = getattr(visual, "trunk", None)
        name = type(visual).__name__ + (f" around {type(inner).__name__}" if inner is not None else "")
        raise MmaError(
            f"The image tower {name} is not supported; mma maps open_clip ViTs, timm ViT / EVA / SigLIP / Swin "
            "trunks, ConvNeXt / FastViT and ModifiedResNet stages."
        )
    if text_family is None:
        raise MmaError(
            f"The text tower {type(getattr(model, 'text', None)).__name__} is not supported; mma maps CLIP's "
            "text transformer, TextTransformer and Hugging Face text encoders."
        )
    embed_dim = _embed_dim(model)
    return {"image": _BUILDERS[image_family](model, embed_dim), "text": _BUILDERS[text_family](model, embed_dim)}


# -- before loading: what an architecture supports, from its config --------------------------------


@dataclass(frozen=True)
class ArchitectureSupport:
    """What mma can do with an architecture, decided from its config alone (no weights loaded)."""

    name: str
    image: str | None  # a FAMILIES key, or None when mma has no map for it
    text: str | None

    @property
    def probe(self) -> bool:
        return self.image is not None and self.text is not None

    @property
    def mma(self) -> bool:
        return self.probe and FAMILIES[self.image].transformer and FAMILIES[self.text].transformer

    @property
    def label(self) -> str:
        parts = [FAMILIES[f].label if f else "unknown" for f in (self.image, self.text)]
        return " + ".join(parts)


def _image_family_of_config(vision: dict) -> str | None:
    timm_name = vision.get("timm_model_name")
    if timm_name:
        try:
            import timm.models  # lazy: heavy (imports torchvision), and optional: see the except

            module = timm.models.model_entrypoint(timm_name).__module__
        except (ImportError, RuntimeError):  # timm missing, or a model this timm does not know
            return None
        return _TIMM_MODULES.get(module)
    if isinstance(vision.get("layers"), (list, tuple)):
        return "resnet-stages"
    return "open_clip-vit"


def _config_of(name: str) -> dict | None:
    """The open_clip model config of an architecture name or ``local-dir:PATH`` (None for ``hf-hub:``)."""
    open_clip = import_open_clip()  # lazy: heavy, see _native_text

    if name.startswith("hf-hub:"):
        return None
    if name.startswith("local-dir:"):
        path = Path(name[len("local-dir:") :]).expanduser() / "open_clip_config.json"
        try:
            return json.loads(path.read_text(encoding="utf-8")).get("model_cfg")
        except (OSError, ValueError):
            return None
    return open_clip.get_model_config(name)


def architecture_support(name: str) -> ArchitectureSupport | None:
    """The families of an architecture's towers, from its open_clip config; None if the config is unknown."""
    cfg = _config_of(name)
    if not cfg:
        return None
    text = cfg.get("text_cfg", {})
    text_family = "hf-text" if text.get("hf_model_name") else "open_clip-text"
    return ArchitectureSupport(name, _image_family_of_config(cfg.get("vision_cfg", {})), text_family)


def check_mma_support(name: str) -> None:
    """An :class:`MmaError` before any weights are loaded if the adapter cannot attach to *name*'s towers."""
    support = architecture_support(name)
    if support is None or support.mma:
        return
    if not support.probe:
        raise MmaError(f"The model {name!r} has a tower mma cannot map ({support.label}); see 'mma models'.")
    tower = next(t for t in (support.image, support.text) if not FAMILIES[t].transformer)
    raise MmaError(
        f"MMA needs transformer blocks, but the image tower of {name!r} is a convolutional network "
        f"({FAMILIES[tower].label}); 'mma probe layers' can probe its stages, but the adapter cannot attach. "
        "Choose a ViT-family model (see 'mma models')."
    )
