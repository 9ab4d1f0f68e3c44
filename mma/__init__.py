"""mma: layer probes, adapter-depth selection and the Multi-Modal Adapter for open_clip models.

The public API is re-exported here lazily, so ``import mma`` (and ``mma --help``) stays fast and does not
import torch until a function that needs it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "MmaError": "mma.errors",
    "seed_everything": "mma.seeding",
    "ModelSpec": "mma.probe.specs",
    "parse_model_spec": "mma.probe.specs",
    "load_model": "mma.probe.specs",
    "list_model_specs": "mma.probe.specs",
    "LayerMap": "mma.probe.layers",
    "layer_maps": "mma.probe.layers",
    "architecture_support": "mma.probe.towers",
    "DatasetSpec": "mma.probe.data",
    "parse_data_spec": "mma.probe.data",
    "load_datasets": "mma.probe.data",
    "list_dataset_sources": "mma.probe.data",
    "draw_few_shot": "mma.probe.data",
    "split_base_novel": "mma.probe.data",
    "ProbeLayersConfig": "mma.app.jobs.probe_layers",
    "probe_layers": "mma.app.jobs.probe_layers",
    "select_from_run": "mma.app.jobs.probe_layers",
    "TrainSelectedConfig": "mma.app.settings",
    "train_selected": "mma.app.jobs.train_selected",
    "sweep_k": "mma.app.jobs.sweep_k",
    "resolve_settings": "mma.app.settings",
    "ReproduceConfig": "mma.app.jobs.reproduce",
    "reproduce": "mma.app.jobs.reproduce",
    "published_numbers": "mma.analysis.published",
    "compare": "mma.analysis.compare",
    "evaluate_checkpoint": "mma.app.jobs.evaluate",
    "MultiModalAdapter": "mma.adapters.mma",
    "add_adapter": "mma.adapters.mma",
    "MethodBase": "mma.adapters.method_base",
    "get_method": "mma.adapters.methods",
    "method_names": "mma.adapters.methods",
    "fit_method": "mma.adapters.train",
    "methods_table": "mma.app.results",
    "pretrain_tiny": "mma.probe.embedded.pretrain",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mma' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
