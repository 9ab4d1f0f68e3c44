"""Turning features and results into knowledge: per-layer probes, separability tables, choosing k, plots.

The names below are loaded on first use (as :mod:`mma` does): importing one module of this room, such as
``mma.analysis.compare``, does not load scikit-learn and matplotlib with the probes and the plots (about 1 s,
which every job and every refusal of a bad option would pay).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module of this room that defines it
_EXPORTS: dict[str, str] = {
    "DEFAULT_RULE": "select_k",
    "RULES": "select_k",
    "TEXT_SPLITS": "separability",
    "LinearProbe": "linear_probe",
    "ProbeInput": "separability",
    "knn_accuracy": "linear_probe",
    "layer_separability": "separability",
    "linear_cka": "similarity",
    "plot_k_sweep": "plots",
    "plot_layers": "plots",
    "probe_accuracy": "linear_probe",
    "select_k": "select_k",
    "selection_record": "select_k",
    "summarise": "separability",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
