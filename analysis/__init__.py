"""Turning features and results into knowledge: per-layer probes, separability tables, choosing k, plots."""

from __future__ import annotations

from .linear_probe import LinearProbe, knn_accuracy, probe_accuracy
from .plots import plot_k_sweep, plot_layers
from .select_k import DEFAULT_RULE, RULES, select_k, selection_record
from .separability import TEXT_SPLITS, ProbeInput, layer_separability, summarise
from .similarity import linear_cka

__all__ = [
    "DEFAULT_RULE",
    "RULES",
    "TEXT_SPLITS",
    "LinearProbe",
    "ProbeInput",
    "knn_accuracy",
    "layer_separability",
    "linear_cka",
    "plot_k_sweep",
    "plot_layers",
    "probe_accuracy",
    "select_k",
    "selection_record",
    "summarise",
]
