"""The Multi-Modal Adapter and the methods beside it (CoOp, CoCoOp, CLIP-Adapter, linear probe), training,
protocols and checkpoints."""

from __future__ import annotations

from .checkpoint import load_adapter, read_adapter, save_adapter
from .evaluate import accuracy, harmonic_mean
from .methods import METHODS, get_method, parse_methods
from .mma import MultiModalAdapter, add_adapter
from .protocols import PROTOCOLS, evaluate_task, make_tasks, task_metrics
from .recipes import RECIPES, resolve_recipe
from .text_cache import TextPrefixCache
from .train import TrainConfig, fit_adapter, fit_method

__all__ = [
    "METHODS",
    "PROTOCOLS",
    "RECIPES",
    "MultiModalAdapter",
    "TextPrefixCache",
    "TrainConfig",
    "accuracy",
    "add_adapter",
    "evaluate_task",
    "fit_adapter",
    "fit_method",
    "get_method",
    "parse_methods",
    "harmonic_mean",
    "load_adapter",
    "make_tasks",
    "read_adapter",
    "resolve_recipe",
    "save_adapter",
    "task_metrics",
]
