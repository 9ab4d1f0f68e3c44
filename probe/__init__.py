"""Reading models and data: model specs and loading, layer maps, dataset sources, few-shot draws.

Nothing here imports :mod:`mma.analysis` or :mod:`mma.adapters`.
"""

from __future__ import annotations

from .layers import TOWERS, Layer, LayerMap, layer_maps
from .specs import DEFAULT_MODEL, LoadedModel, ModelSpec, list_model_specs, load_model, parse_model_spec
from .towers import FAMILIES, architecture_support

__all__ = [
    "DEFAULT_MODEL",
    "FAMILIES",
    "TOWERS",
    "Layer",
    "LayerMap",
    "architecture_support",
    "LoadedModel",
    "ModelSpec",
    "layer_maps",
    "list_model_specs",
    "load_model",
    "parse_model_spec",
]
