"""Re-evaluate one adapter checkpoint (``mma evaluate --checkpoint ...``)."""

from __future__ import annotations

from pathlib import Path

from mma import distributed
from mma.adapters.checkpoint import load_adapter, read_adapter
from mma.adapters.methods import registry
from mma.adapters.mma import check_alpha
from mma.adapters.protocols import evaluate_task, get_protocol, make_tasks, task_metrics
from mma.errors import MmaError
from mma.probe.data import load_datasets
from mma.probe.extract import resolve_device
from mma.probe.specs import load_model

__all__ = ["evaluate_checkpoint"]


def evaluate_checkpoint(
    checkpoint: Path, *, data: list[str] | None = None, device: str = "auto", alpha_eval: float | None = None
) -> dict[str, float] | None:
    """Rebuild the checkpoint's model and method (any of :mod:`mma.adapters.methods`) and evaluate its protocol on
    its dataset (seeded draw).

    Without *data*, the data specs recorded in the checkpoint (the ones it was trained on; checkpoints
    written before they were recorded fall back to the built-in dataset of that name). *alpha_eval*: a method
    with that option (MMA) is evaluated at it, 0 being the frozen model. Under torchrun each rank evaluates a
    shard; rank 0 returns the metrics, the others None.
    """
    if alpha_eval is not None:
        check_alpha(alpha_eval, "--alpha-eval")  # before any weights are loaded
    _, meta = read_adapter(checkpoint)
    world, dev = distributed.setup(resolve_device(device))
    loaded = load_model(meta["model"], device=str(dev))
    adapter, meta = load_adapter(checkpoint, loaded)
    if alpha_eval is not None:
        method = type(adapter)
        if "alpha_eval" not in method.option_names():
            adapter.detach()
            takes = [m.title or m.name for m in registry().values() if "alpha_eval" in m.option_names()]
            holds = f"{str(checkpoint)!r} holds {method.name!r}"
            raise MmaError(f"--alpha-eval applies to {', '.join(takes)} checkpoints only; {holds}.")
        adapter.after_training(method.make_config(alpha_eval=alpha_eval))
    recorded = meta.get("data") or [f"builtin:{meta['dataset']}"]
    specs = data or ([recorded] if isinstance(recorded, str) else list(recorded))
    datasets = [d for spec in specs for d in load_datasets(spec)]
    protocol = get_protocol(meta["protocol"])
    if protocol.per_dataset:
        datasets = [d for d in datasets if d.name == meta["dataset"]]
        if not datasets:
            raise MmaError(f"--data has no dataset named {meta['dataset']!r}, the checkpoint's dataset.")
    tasks = make_tasks(protocol.name, datasets, shots=meta["train_config"]["shots"], seed=meta["seed"])
    if tasks[0].classnames != meta["classnames"]:
        raise MmaError(f"The dataset's classes differ from those the checkpoint {str(checkpoint)!r} was trained on.")
    try:
        metrics = task_metrics(tasks[0], evaluate_task(loaded, tasks[0], dev, meta.get("template"), method=adapter))
    finally:
        adapter.detach()
    return metrics if world.main else None
