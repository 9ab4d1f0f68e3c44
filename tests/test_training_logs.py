"""Training logs: one history row per epoch (its loss and the learning rate it ran at), the same after a resume, in
the result JSON and its history.csv; TensorBoard event files read back with tensorboard's own reader, and the W&B
calls (offline), with open_clip's scalar names."""

from __future__ import annotations

import dataclasses
import importlib.machinery
import json
import math
import sys
import types

import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mma.adapters.mma import MultiModalAdapter
from mma.adapters.protocols import make_tasks
from mma.adapters.train import fit_adapter
from mma.app import training_logs
from mma.app.cli import app
from mma.app.jobs.train_selected import TrainSelectedConfig, train_selected
from mma.errors import MmaError
from mma.probe.data import load_datasets

# 12 images (6 base classes x 2 shots), batch 4: 3 steps per epoch; adapted from block 10 and no augmentation, so
# that the frozen blocks below run once per image and the tests stay fast
CFG = MultiModalAdapter.make_config(k=10, epochs=3, batch_size=4, shots=2, augment=False)
FIELDS = ("epoch", "steps", "loss", "lr")  # every column but the wall-clock seconds


@pytest.fixture(scope="module")
def task():
    (d,) = load_datasets("builtin:colors")
    return make_tasks("base2novel", [d], shots=2, seed=1)[0]


@pytest.fixture(scope="module")
def full(tiny_random, task):
    """An uninterrupted training."""
    return _fit(tiny_random, task)


@pytest.fixture(scope="module")
def four_colours(tmp_path_factory):
    """A folder dataset of 4 plain colours (train 4, val 2, test 3 images each): base2novel trains on 2 classes."""
    root = tmp_path_factory.mktemp("colours")
    rgb = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        for name, colour in rgb.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (16, 16), tuple(c - 8 * i for c in colour)).save(root / split / name / f"{i}.png")
    return root


def _fit(loaded, task, cfg=CFG, **kw):
    result = fit_adapter(loaded, task.dataset, task.train, task.classnames, cfg, seed=1, **kw)
    result.adapter.detach()
    return result


def _torch_cosine(lr: float, epochs: int) -> list[float]:
    """The learning rate of each epoch under torch's own cosine schedule, stepped once per epoch."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_one_history_row_per_epoch_with_the_scheduled_lr(full):
    result = full
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert [r["steps"] for r in result.history] == [3, 3, 3] and result.steps == 9
    for i, row in enumerate(result.history):
        assert row["loss"] == pytest.approx(sum(result.losses[3 * i : 3 * i + 3]) / 3)
        assert row["seconds"] >= 0
    assert [r["lr"] for r in result.history] == pytest.approx(_torch_cosine(CFG.lr, 3))
    assert result.history[0]["lr"] == CFG.lr  # the first epoch runs at the full rate


def test_a_warm_up_epoch_is_recorded_at_its_constant_rate(tiny_random, task):
    """CoOp's recipe: one epoch at warmup_lr, then the cosine from the full rate as if it had not happened."""
    cfg = dataclasses.replace(CFG, warmup_epochs=1, warmup_lr=1e-5, epochs=3)
    lrs = [r["lr"] for r in _fit(tiny_random, task, cfg).history]
    cosine = [cfg.lr * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in range(2)]
    assert lrs == pytest.approx([1e-5, *cosine])


def test_a_resumed_run_has_the_history_of_an_uninterrupted_one(tiny_random, task, full, tmp_path, monkeypatch):
    state = tmp_path / "state.pt"
    original, calls = torch.optim.SGD.step, [0]

    def step(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 5:  # in epoch 2: the state after epoch 1 is on disk
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    with pytest.raises(KeyboardInterrupt):
        _fit(tiny_random, task, state_path=state)
    monkeypatch.undo()
    saved = torch.load(state, weights_only=True)
    assert [r["epoch"] for r in saved["history"]] == [1]
    resumed = _fit(tiny_random, task, state_path=state)
    assert [[r[f] for f in FIELDS] for r in resumed.history] == [[r[f] for f in FIELDS] for r in full.history]
    assert resumed.history[0]["seconds"] == saved["history"][0]["seconds"]  # the first epoch's, from the state


def test_train_selected_writes_the_history_and_a_tensorboard_run(four_colours, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = TrainSelectedConfig(
        k=10, data=[f"folder:{four_colours}"], seeds=[1], out=tmp_path, progress=False, log=["tensorboard"],
        methods=["mma", "linear-probe"], train={"epochs": 2, "shots": 3, "batch_size": 2},
    )  # fmt: skip
    train_selected(cfg)
    (folder,) = (tmp_path / "results" / "base2novel").iterdir()
    logs = tmp_path / "logs" / "base2novel" / folder.name
    record = json.loads((folder / "seed1-k10-mma.json").read_text())
    history = record["train"]["history"]
    assert [r["epoch"] for r in history] == [1, 2] and [r["steps"] for r in history] == [3, 3]
    csv = pd.read_csv(folder / "seed1-k10-mma.history.csv")
    assert list(csv.columns) == list(training_logs.HISTORY_COLUMNS)
    assert csv.to_dict("records") == history  # the same numbers, to the last digit

    events = EventAccumulator(str(logs / "seed1-k10-mma"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"train/loss", "train/lr", "val/base", "val/novel", "val/hm"}
    loss, lr = events.Scalars("train/loss"), events.Scalars("train/lr")
    assert [e.step for e in loss] == [e.step for e in lr] == list(range(6))  # open_clip's 0-based global step
    for epoch, row in enumerate(history):
        steps = range(3 * epoch, 3 * epoch + 3)
        assert sum(loss[s].value for s in steps) / 3 == pytest.approx(row["loss"], rel=1e-5)  # float32 in the file
        assert [lr[s].value for s in steps] == pytest.approx([row["lr"]] * 3, rel=1e-6)
    for metric in ("base", "novel", "hm"):
        (value,) = events.Scalars(f"val/{metric}")
        assert value.step == 6 and value.value == pytest.approx(record["metrics"][metric], rel=1e-6)

    probe = json.loads((folder / "seed1-linear-probe.json").read_text())
    assert probe["train"]["history"] == [] and not (folder / "seed1-linear-probe.history.csv").exists()
    events = EventAccumulator(str(logs / "seed1-linear-probe"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"val/base"}  # no epochs; novel classes are not applicable


def test_a_run_logged_again_replaces_its_tensorboard_folder(tmp_path):
    history = [{"epoch": 1, "steps": 2, "loss": 1.0, "lr": 0.1, "seconds": 0.5}]
    for _ in range(2):
        training_logs.log_run(
            ["tensorboard"], tmp_path / "run", "run", history=history, losses=[1.5, 0.5], metrics={"accuracy": 50.0}
        )
    assert len(list((tmp_path / "run").glob("events.out.tfevents.*"))) == 1


class _FakeRun:
    def __init__(self) -> None:
        self.logged: list[tuple[dict, int]] = []
        self.finished = False

    def log(self, values, step=None):
        self.logged.append((dict(values), step))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    """A stand-in ``wandb`` module that records what it is asked (the real one is an extra, not installed in CI)."""
    module = types.ModuleType("wandb")
    module.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    module.inits, module.runs = [], []

    def init(**kwargs):
        module.inits.append(kwargs)
        module.runs.append(_FakeRun())
        return module.runs[-1]

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_wandb_runs_offline_in_project_mma_with_open_clip_names(fake_wandb, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert training_logs.check_loggers(["wandb"]) == ["wandb"]
    history = [
        {"epoch": 1, "steps": 2, "loss": 1.0, "lr": 0.1, "seconds": 0.5},
        {"epoch": 2, "steps": 2, "loss": 0.5, "lr": 0.05, "seconds": 0.5},
    ]
    training_logs.log_run(
        ["wandb"], tmp_path / "run", "base2novel/colors/seed1-k4-mma", history=history, losses=[1.2, 0.8, 0.6, 0.4],
        metrics={"base": 80.0, "novel": float("nan")}, config={"k": 4},
    )  # fmt: skip
    (init,) = fake_wandb.inits
    assert init["project"] == "mma" and init["mode"] == "offline" and init["dir"] == str(tmp_path / "run")
    assert init["name"] == "base2novel/colors/seed1-k4-mma" and init["config"] == {"k": 4}
    (run,) = fake_wandb.runs
    assert run.finished and run.logged == [
        ({"train/loss": 1.2, "train/lr": 0.1}, 0),
        ({"train/loss": 0.8, "train/lr": 0.1}, 1),
        ({"train/loss": 0.6, "train/lr": 0.05}, 2),
        ({"train/loss": 0.4, "train/lr": 0.05}, 3),
        ({"val/base": 80.0}, 4),  # a not-applicable (NaN) cell is left out
    ]
    monkeypatch.setenv("WANDB_MODE", "online")  # the user's choice wins
    training_logs.log_run(["wandb"], tmp_path / "run", "r", history=history, losses=[1, 1, 1, 1], metrics={})
    assert fake_wandb.inits[-1]["mode"] is None


def test_a_missing_logger_is_one_sentence_and_exit_2_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(training_logs, "_installed", lambda package: False)
    with pytest.raises(MmaError, match=r"--log tensorboard needs the tensorboard package: pip install"):
        train_selected(TrainSelectedConfig(k=4, out=tmp_path / "run", progress=False, log=["tensorboard"]))
    assert not (tmp_path / "run").exists()  # refused before the run folder, the model or any training
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["train-selected", "--k", "4", "--log", "wandb", "--out", str(out)])
    assert result.exit_code == 2 and "--log wandb needs the wandb package: pip install" in result.output
    assert result.output.count("\n") == 1 and not out.exists()
    result = CliRunner().invoke(app, ["sweep-k", "--ks", "2", "--log", "nope,tensorboard", "--out", str(out)])
    assert result.exit_code == 2 and "--log 'nope' is not a logger; choose tensorboard or wandb." in result.output
