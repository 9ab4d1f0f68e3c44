"""The Multi-Modal Adapter, putting it into a model from block k, training, protocols and checkpoints."""

from __future__ import annotations

from .checkpoint import load_adapter, read_adapter, save_adapter
from .evaluate import accuracy, harmonic_mean
from .mma import MultiModalAdapter, add_adapter
from .protocols import PROTOCOLS, evaluate_task, make_tasks, task_metrics
from .recipes import RECIPES, resolve_recipe
from .text_cache import TextPrefixCache
from .train import TrainConfig, fit_adapter

__all__ = [
    "PROTOCOLS",
    "RECIPES",
    "MultiModalAdapter",
    "TextPrefixCache",
    "TrainConfig",
    "accuracy",
    "add_adapter",
    "evaluate_task",
    "fit_adapter",
    "harmonic_mean",
    "load_adapter",
    "make_tasks",
    "read_adapter",
    "resolve_recipe",
    "save_adapter",
    "task_metrics",
]
