"""The methods (the zero-shot model, the Multi-Modal Adapter, CoOp, CoCoOp, CLIP-Adapter, the linear probe and any
plugin), their configuration, training, protocols and checkpoints."""

from __future__ import annotations

from .checkpoint import load_adapter, read_adapter, save_adapter
from .config import Options, TrainConfig
from .evaluate import accuracy, harmonic_mean
from .method_base import MethodBase
from .methods import get_method, method_names, parse_methods, registry
from .mma import MultiModalAdapter, add_adapter
from .protocols import PROTOCOLS, Protocol, evaluate_task, make_tasks, task_metrics
from .recipes import RECIPES, resolve_recipe
from .text_cache import TextPrefixCache
from .train import fit_adapter, fit_method

__all__ = [
    "PROTOCOLS",
    "RECIPES",
    "MethodBase",
    "MultiModalAdapter",
    "Options",
    "Protocol",
    "TextPrefixCache",
    "TrainConfig",
    "accuracy",
    "add_adapter",
    "evaluate_task",
    "fit_adapter",
    "fit_method",
    "get_method",
    "harmonic_mean",
    "load_adapter",
    "make_tasks",
    "method_names",
    "parse_methods",
    "read_adapter",
    "registry",
    "resolve_recipe",
    "save_adapter",
    "task_metrics",
]
