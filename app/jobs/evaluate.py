"""Evaluate a saved adapter (``mma evaluate --checkpoint ...``): on its own protocol and data, or on any dataset.

On the checkpoint's own dataset the protocol runs again on the seeded draw the checkpoint was trained with (base /
novel / HM, accuracy, or source / targets). On any other dataset the adapted model classifies that dataset's test
split among all its classes, by their names (the methods that cannot name new classes, the linear probe, say so
before anything is evaluated). Every row has the zero-shot model's accuracy on the same images beside it, and the
images its accuracy counted (the unreadable ones are left out of the denominator, counted and named once).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mma import distributed
from mma.adapters.checkpoint import load_adapter, read_adapter
from mma.adapters.methods import BASELINE, registry
from mma.adapters.mma import check_alpha
from mma.adapters.protocols import (
    EvalSplit,
    Task,
    check_two_classes,
    evaluate_task,
    get_protocol,
    make_tasks,
    task_metrics,
)
from mma.errors import MmaError
from mma.probe.data import load_datasets
from mma.probe.data.reading import unreadable_line
from mma.probe.extract import resolve_device
from mma.probe.specs import load_model

__all__ = ["evaluate_checkpoint", "metrics_of", "COLUMNS"]

# the table evaluate_checkpoint returns (and mma evaluate prints): one row per reported number
COLUMNS = ["dataset", "metric", "images", "unreadable", "accuracy", "zero_shot"]


def evaluate_checkpoint(
    checkpoint: Path,
    *,
    data: list[str] | None = None,
    device: str = "auto",
    alpha_eval: float | None = None,
    strict: bool = False,
    all_classes: bool = False,
    say=None,
) -> pd.DataFrame | None:
    """Rebuild the checkpoint's model and method (any of :mod:`mma.adapters.methods`) and evaluate it beside the
    zero-shot model: a table of :data:`COLUMNS`.

    Without *data*, the data specs recorded in the checkpoint (the ones it was trained on; checkpoints written
    before they were recorded fall back to the built-in dataset of that name) and its protocol. With *data*, the
    checkpoint's own dataset among them is evaluated by its protocol, every other one on its test split among all
    its classes. *alpha_eval*: a method with that option (MMA) is evaluated at it, 0 being the frozen model.
    *all_classes*: the own dataset also among all its classes (``--all-classes``, base-to-novel's ``all``).
    *strict*: an unreadable image stops the evaluation naming it; otherwise *say* (a line printer, rank 0) hears
    each evaluated split's unreadable images, and the datasets' own notes (an implicit split). Under torchrun each
    rank evaluates a shard; rank 0 returns the table, the others None.
    """
    if alpha_eval is not None:
        check_alpha(alpha_eval, "--alpha-eval")  # before any weights are loaded
    _, meta = read_adapter(checkpoint)
    recorded = meta.get("data") or [f"builtin:{meta['dataset']}"]
    specs = data or ([recorded] if isinstance(recorded, str) else list(recorded))
    datasets = [d for spec in specs for d in load_datasets(spec)]
    protocol = get_protocol(meta["protocol"])
    if all_classes:
        protocol.check_all_classes()  # before any weights load
    own = [d for d in datasets if d.name == meta["dataset"]]
    if not data or (own and not protocol.per_dataset):
        own, others = datasets, []  # the protocol over every dataset it reads (cross-dataset: the targets too)
    else:
        others = [d for d in datasets if d.name != meta["dataset"]]
    world, dev = distributed.setup(resolve_device(device))
    say = say if world.main else None
    for note in (n for d in datasets for n in d.notes):  # the sources' own (an implicit split)
        if say is not None:
            say(note)
    loaded = load_model(meta["model"], device=str(dev))
    adapter, meta = load_adapter(checkpoint, loaded)
    method = type(adapter)
    try:
        if alpha_eval is not None:
            if "alpha_eval" not in method.option_names():
                takes = [m.title or m.name for m in registry().values() if "alpha_eval" in m.option_names()]
                holds = f"{str(checkpoint)!r} holds {method.name!r}"
                raise MmaError(f"--alpha-eval applies to {', '.join(takes)} checkpoints only; {holds}.")
            adapter.after_training(method.make_config(alpha_eval=alpha_eval))
        for d in others:
            if not adapter.can_classify(d.classnames):
                raise MmaError(
                    f"A {method.title or method.name} checkpoint names only the {len(meta['classnames'])} classes it "
                    f"was trained on; {d.name!r} has others, so it cannot be evaluated there."
                )
        tasks = []  # (task, scored by the checkpoint's protocol)
        if own:
            task = make_tasks(protocol.name, own, shots=meta["train_config"]["shots"], seed=meta["seed"])[0]
            if task.classnames != meta["classnames"]:
                raise MmaError(
                    f"The dataset's classes differ from those the checkpoint {str(checkpoint)!r} was trained on."
                )
            tasks.append((protocol.with_all_classes(task) if all_classes else task, True))
        tasks += [(_test_task(d), False) for d in others]
        rows = []
        for task, scored in tasks:
            rows += _rows(loaded, adapter, task, meta, dev, strict, say, scored=scored)
    finally:
        adapter.detach()
    return pd.DataFrame(rows, columns=COLUMNS) if world.main else None


def metrics_of(table: pd.DataFrame, column: str = "accuracy") -> dict[str, float]:
    """``{metric: value}`` of one dataset's rows of :func:`evaluate_checkpoint`'s table (*column*: ``accuracy``,
    the adapted model's, or ``zero_shot``)."""
    if table["dataset"].nunique() != 1:
        raise ValueError(f"the table holds {table['dataset'].nunique()} datasets; select one first")
    return dict(zip(table["metric"], table[column]))


def _test_task(dataset) -> Task:
    """A dataset's test split among all its classes (nothing is trained: the task only evaluates)."""
    if not dataset.test:
        raise MmaError(f"Dataset {dataset.name!r} has no test images to evaluate on.")
    split = EvalSplit(dataset.name, dataset, list(dataset.test), list(dataset.classnames))
    return check_two_classes([Task("test", dataset.name, dataset, [], list(dataset.classnames), [split])])[0]


def _rows(loaded, adapter, task: Task, meta: dict, device, strict: bool, say, *, scored: bool) -> list[dict]:
    """The adapted model's and the zero-shot model's numbers on *task*, with the images each split counted."""
    method = type(adapter)
    # the prompt it was trained with on its own data; on new data the user's template if training had one
    given = meta.get("user_template")  # the --template of its training run (None: each method's own prompt)
    if scored and "user_template" not in meta:  # a checkpoint from before it was recorded: its training prompt
        given = meta.get("template")
    template = given if scored else method.prompt_template(task.dataset, given)
    read: dict = {}
    accs = evaluate_task(loaded, task, device, template, method=adapter, cache=False, strict=strict, read=read)
    adapter.detach()
    try:
        zero = evaluate_task(loaded, task, device, given, method=BASELINE.build(loaded), cache=False, strict=strict)
    finally:
        adapter.attach(loaded.model)
    for record in read.values():
        if say is not None and unreadable_line(record):
            say(unreadable_line(record))
    if scored:
        ours, theirs = task_metrics(task, accs), task_metrics(task, zero)
    else:
        ours, theirs = {"accuracy": accs[task.name]}, {"accuracy": zero[task.name]}
    rows = []
    for metric, value in ours.items():
        split = _split_of(metric, task, read)
        rows.append(
            {
                "dataset": task.name,
                "metric": metric,
                "images": split["images"] if split else None,
                "unreadable": split["unreadable"] if split else None,
                "accuracy": value,
                "zero_shot": theirs.get(metric),
            }
        )
    return rows


def _split_of(metric: str, task: Task, read: dict) -> dict | None:
    """The read record of the split a metric was computed on (None for one derived from several: HM, averages)."""
    if metric in read:
        return read[metric]
    if metric.startswith("target:") and metric.removeprefix("target:") in read:
        return read[metric.removeprefix("target:")]
    if metric == "source":  # cross-dataset's: the task's own dataset
        return read.get(task.name)
    return next(iter(read.values())) if len(read) == 1 else None
