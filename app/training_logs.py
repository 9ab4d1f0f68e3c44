"""Training logs: every trained run's per-epoch history as a CSV, and optional TensorBoard and Weights & Biases runs
that name their scalars the way open_clip's trainer does (``--log tensorboard`` / ``--log wandb``).

In a ``train-selected`` run folder (:mod:`mma.app.jobs.train_selected`)::

    results/<protocol>/<dataset>/<run>.history.csv   one row per epoch: epoch, steps, loss (the mean of its steps),
                                                     lr (the one it ran at), seconds; the result JSON's
                                                     ``train.history``, beside it (<run>: e.g. seed1-k4-mma)
    logs/<protocol>/<dataset>/<run>/                 --log: one TensorBoard run (event files) and / or W&B run
                                                     (``wandb/``) per trained run; ``tensorboard --logdir <out>/logs``

The scalars are open_clip_train's (``train.py``): ``train/loss`` (each step's loss) and ``train/lr`` (the learning
rate the step ran at) at the 0-based global step, and ``val/<metric>`` (``val/base``, ``val/novel``, ``val/hm``,
``val/accuracy``, ...; in %; a cell the method cannot fill is left out) once, at the number of steps trained
(open_clip's TensorBoard puts its val scalars at the epoch; one x axis is clearer here). W&B runs go to project
``mma`` in offline mode unless ``WANDB_MODE`` is set (``wandb sync <out>/logs/...`` uploads them later), with the
run's settings as their config.

A run is logged once its training and evaluation are done (not live, epoch by epoch), from its history: a resumed
run logs what an uninterrupted one does, a training reused from the cache is logged like a fresh one, and a run
logged again (a crash before its result JSON was written) replaces its folder. The linear probe is fitted
without epochs or steps (:mod:`mma.adapters.linear_probe`; its C and validation accuracy are in its result JSON):
it has no history and no CSV, and logs its ``val/`` scalars alone.

The event files and W&B folders are written by the libraries themselves, in place rather than through
:func:`mma.io.atomic_write` (a cut-off log is visible as such, and mma never reads one back); the history CSV is
written atomically, before the result JSON that marks the run done.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from mma.errors import MmaError
from mma.io import atomic_write

__all__ = ["LOGGERS", "HISTORY_COLUMNS", "WANDB_PROJECT", "check_loggers", "history_path", "write_history", "log_run"]

#: --log value -> the package it needs (the extra of the same name installs it)
LOGGERS = {"tensorboard": "tensorboard", "wandb": "wandb"}
HISTORY_COLUMNS = ("epoch", "steps", "loss", "lr", "seconds")
WANDB_PROJECT = "mma"


def check_loggers(names: Iterable[str]) -> list[str]:
    """The --log names, checked before any training: known, and their package installed (one sentence if not)."""
    names = names.split(",") if isinstance(names, str) else names or ()  # "tensorboard,wandb" from the Python API
    names = list(dict.fromkeys(n.strip().lower() for n in names if n.strip()))
    for name in names:
        if name not in LOGGERS:
            raise MmaError(f"--log {name!r} is not a logger; choose {' or '.join(LOGGERS)}.")
        package = LOGGERS[name]
        if not _installed(package):
            raise MmaError(
                f"--log {name} needs the {package} package: pip install 'mma-toolkit[{name}]' "
                f"(or pip install {package})."
            )
    return names


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def history_path(result: Path) -> Path:
    """Where the history of the run whose result JSON is *result* goes: beside it, ``<run>.history.csv``."""
    return result.with_name(f"{result.stem}.history.csv")


def write_history(path: Path, history: Sequence[Mapping]) -> Path | None:
    """*history* (``TrainResult.history``) as a CSV at *path*, atomically; None (nothing written) for no epochs."""
    if not history:
        return None
    table = pd.DataFrame([{c: row.get(c) for c in HISTORY_COLUMNS} for row in history], columns=list(HISTORY_COLUMNS))
    return atomic_write(path, lambda p: table.to_csv(p, index=False))


def _scalars(history: Sequence[Mapping], losses: Sequence[float]):
    """``(step, {tag: value})`` for every training step (0-based, as open_clip_train counts them)."""
    step = 0
    for row in history:
        for _ in range(int(row["steps"])):
            values = {"train/loss": float(losses[step])}
            if row.get("lr") is not None:
                values["train/lr"] = float(row["lr"])
            yield step, values
            step += 1


def log_run(
    loggers: Sequence[str],
    folder: Path,
    name: str,
    *,
    history: Sequence[Mapping],
    losses: Sequence[float],
    metrics: Mapping[str, float],
    config: Mapping | None = None,
) -> None:
    """Log one trained run to every logger of *loggers* (:func:`check_loggers`) in *folder* (replaced if it exists).

    *history* and *losses*: ``TrainResult.history`` and ``TrainResult.losses`` (every step's loss); *metrics*: its
    evaluation (``val/<name>``, at the number of steps); *name* and *config*: the W&B run's name and config.
    """
    if not loggers:
        return
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    train = list(_scalars(history, losses))
    steps = len(train)
    # a cell the method cannot fill (the linear probe's novel classes) is not logged
    val = {f"val/{m}": float(v) for m, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    for logger in loggers:
        if logger == "tensorboard":
            _tensorboard(folder, train, val, steps)
        elif logger == "wandb":
            _wandb(folder, name, train, val, steps, config)


def _tensorboard(folder: Path, train, val: dict, steps: int) -> None:
    # optional dependency (the tensorboard extra), checked by check_loggers before any training
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))  # writes its own event file, in place (module doc)
    try:
        for step, values in train:
            for tag, value in values.items():
                writer.add_scalar(tag, value, step)
        for tag, value in val.items():
            writer.add_scalar(tag, value, steps)
    finally:
        writer.close()


def _wandb(folder: Path, name: str, train, val: dict, steps: int, config: Mapping | None) -> None:
    # optional dependency (the wandb extra), checked by check_loggers before any training
    import wandb

    mode = None if os.environ.get("WANDB_MODE") else "offline"  # the user's WANDB_MODE wins; no account needed
    run = wandb.init(project=WANDB_PROJECT, name=name, dir=str(folder), config=dict(config or {}), mode=mode)
    try:
        for step, values in train:
            run.log(values, step=step)
        if val:
            run.log(val, step=steps)
    finally:
        run.finish()
