"""Nothing lost: Ctrl-C or a killed process during extraction, probing or training resumes to the same outputs."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch

from mma.adapters.mma import MultiModalAdapter
from mma.adapters.protocols import make_tasks
from mma.adapters.train import fit_adapter
from mma.app.jobs.probe_layers import ProbeLayersConfig, probe_layers
from mma.errors import MmaError
from mma.probe import load_model
from mma.probe.data import load_datasets


@pytest.fixture(scope="module")
def tiny():
    return load_model()


@pytest.fixture(scope="module")
def task():
    (d,) = load_datasets("builtin:colors")
    return make_tasks("base2novel", [d], shots=4, seed=1)[0]  # 6 base classes x 4 shots = 24 images


# 3 steps per epoch (24 images, batch 8); augmentation on, so the RNG states must be restored too
CFG = MultiModalAdapter.make_config(k=4, epochs=3, batch_size=8, shots=4, consistency=0.5)


def _fit(loaded, task, **kw):
    result = fit_adapter(loaded, task.dataset, task.train, task.classnames, CFG, seed=1, **kw)
    result.adapter.detach()
    return result


def _interrupt_at_step(monkeypatch, n: int, exc=KeyboardInterrupt):
    original, calls = torch.optim.SGD.step, [0]

    def step(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise exc()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step)


def test_interrupted_training_resumes_from_the_last_epoch_to_the_same_adapter(tiny, task, tmp_path, monkeypatch):
    full = _fit(tiny, task)
    state = tmp_path / "state.pt"
    _interrupt_at_step(monkeypatch, 5)  # in epoch 2: the state after epoch 1 is on disk
    with pytest.raises(KeyboardInterrupt):
        _fit(tiny, task, state_path=state)
    monkeypatch.undo()
    assert torch.load(state, weights_only=True)["epoch"] == 1
    assert not tiny.model.visual.transformer.resblocks[3]._forward_hooks  # the failed run detached its adapter
    resumed = _fit(tiny, task, state_path=state)
    for name, value in full.adapter.state_dict().items():
        assert torch.equal(resumed.adapter.state_dict()[name], value), name
    assert resumed.losses == full.losses and resumed.steps == full.steps == 9


def test_a_state_from_other_settings_is_not_resumed(tiny, task, tmp_path):
    state = tmp_path / "state.pt"
    _fit(tiny, task, state_path=state)
    other = dataclasses.replace(CFG, lr=CFG.lr * 2)
    result = fit_adapter(tiny, task.dataset, task.train, task.classnames, other, seed=1, state_path=state)
    result.adapter.detach()
    assert result.steps == 9  # trained from epoch 0, not resumed from the finished state
    state.write_bytes(b"not a checkpoint")  # a damaged file is ignored, never trusted
    assert _fit(tiny, task, state_path=state).steps == 9


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_state(tiny, task, tmp_path, monkeypatch):
    state = tmp_path / "state.pt"
    original, calls = torch.nn.functional.cross_entropy, [0]

    def diverging(*args, **kwargs):
        calls[0] += 1
        loss = original(*args, **kwargs)
        return loss * float("nan") if calls[0] > 4 else loss  # epoch 2 goes non-finite

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", diverging)
    with pytest.raises(MmaError, match=r"non-finite loss in epoch 2; the state after epoch 1 is kept in .*state\.pt"):
        _fit(tiny, task, state_path=state)
    saved = torch.load(state, weights_only=True)
    assert saved["epoch"] == 1 and all(torch.isfinite(v).all() for v in saved["adapter"].values())


# A real SIGKILL (no cleanup handler runs) at a chosen moment, in a child process running the CLI.
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from mma.probe.data.reading import ImageReader
    target, n = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(int(sys.argv[3]))  # as many as this test process: float sums in the same order
    calls = [0]
    def counting(original):
        def wrapper(self, *args, **kwargs):
            calls[0] += 1
            if calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, *args, **kwargs)
        return wrapper
    if target == "read":
        ImageReader.__getitem__ = counting(ImageReader.__getitem__)
    else:
        torch.optim.SGD.step = counting(torch.optim.SGD.step)
    from mma.app.cli import app
    app(sys.argv[4:], prog_name="mma")
    """
)


def _killed(target: str, n: int, args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", KILLER, target, str(n), str(torch.get_num_threads()), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]


def test_killed_extraction_resumes_to_the_same_store_and_tables(tmp_path):
    args = ["probe", "layers", "--model", "mma-tiny:random", "--data", "builtin:colors,scenes", "--samples", "24"]
    args += ["--seeds", "1", "--batch-size", "8", "--device", "cpu"]
    _killed("read", 24 + 8 + 3, args + ["--out", str(tmp_path / "cut")])  # colors done; scenes in batch 2
    store = tmp_path / "cut" / "store"
    assert json.loads((next(store.glob("colors-image-*")) / "manifest.json").read_text())["done"]
    scenes = next(store.glob("scenes-image-*"))
    assert json.loads((scenes / "progress-0.json").read_text())["ranges"] == [[0, 8]]
    assert not json.loads((scenes / "manifest.json").read_text())["done"]
    probe_layers(_probe_cfg(tmp_path / "cut", seeds=[1]))
    probe_layers(_probe_cfg(tmp_path / "full", seeds=[1]))
    for path in sorted((tmp_path / "full" / "store").rglob("*.npy")):
        assert path.read_bytes() == (tmp_path / "cut" / path.relative_to(tmp_path / "full")).read_bytes()
    for name in ("layers.csv", "layers_summary.csv"):
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "full" / name).read_bytes()


LAYERS = 12 + 2  # mma-tiny: XEmbed, 12 blocks, XProj


def _probe_cfg(out, seeds=(1, 2)):
    return ProbeLayersConfig(
        models=["mma-tiny:random"],
        data=["builtin:colors,scenes"],
        samples=24,
        seeds=list(seeds),
        batch_size=8,
        device="cpu",
        out=out,
        progress=False,
    )


def test_interrupted_probing_resumes_from_the_finished_seeds(tmp_path, monkeypatch):
    from mma.analysis import separability

    full = probe_layers(_probe_cfg(tmp_path / "full"))
    original, calls = separability.probe_accuracy, [0]

    def flaky(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2 * LAYERS + 3:  # seed 1 done (2 towers x every layer), seed 2 under way
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(separability, "probe_accuracy", flaky)
    with pytest.raises(KeyboardInterrupt):
        probe_layers(_probe_cfg(tmp_path / "cut"))
    assert len(list((tmp_path / "cut" / "probes").glob("*.csv"))) == 1  # seed 1's probes are safe
    assert not (tmp_path / "cut" / "layers.csv").exists()
    calls[0] = -(10**6)  # no more interruptions; count the refits
    resumed = probe_layers(_probe_cfg(tmp_path / "cut"))
    assert calls[0] == -(10**6) + 2 * LAYERS  # only seed 2 was probed again
    pd.testing.assert_frame_equal(resumed.summary, full.summary)
    assert (tmp_path / "cut" / "layers.csv").read_bytes() == (tmp_path / "full" / "layers.csv").read_bytes()


def test_killed_training_job_resumes_to_the_same_results(tmp_path):
    from mma.app.jobs.train_selected import TrainSelectedConfig, train_selected

    train = {"epochs": 3, "shots": 4, "batch_size": 8}
    args = ["train-selected", "--k", "4", "--data", "builtin:colors,scenes", "--seeds", "1", "--device", "cpu"]
    args += ["--epochs", "3", "--shots", "4", "--batch-size", "8", "--out", str(tmp_path / "cut")]
    _killed("step", 3 * 3 + 2 + 1, args)  # colors (3 steps/epoch) saved; scenes (2/epoch) killed in epoch 2
    (state,) = (tmp_path / "cut" / "state").iterdir()
    assert "scenes" in state.name and torch.load(state, weights_only=True)["epoch"] == 1
    cfg = dict(k=4, data=["builtin:colors,scenes"], seeds=[1], device="cpu", progress=False, train=train)
    resumed = train_selected(TrainSelectedConfig(out=tmp_path / "cut", **cfg))
    full = train_selected(TrainSelectedConfig(out=tmp_path / "full", **cfg))
    pd.testing.assert_frame_equal(resumed.results, full.results)
    for path in sorted((tmp_path / "full" / "checkpoints").iterdir()):
        assert path.read_bytes() == (tmp_path / "cut" / "checkpoints" / path.name).read_bytes()
    assert not (tmp_path / "cut" / "state").exists()  # removed once every result was safe
    listing = [sorted(os.listdir(tmp_path / run / "results" / "base2novel")) for run in ("cut", "full")]
    assert listing[0] == listing[1] == ["colors", "scenes"]
