"""Training and evaluation of the adapter: prefix cache, protocols, results, checkpoints."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import colour_folder, patch_everywhere

from mma.adapters.checkpoint import load_adapter, read_adapter, save_adapter
from mma.adapters.evaluate import accuracy, harmonic_mean
from mma.adapters.mma import MultiModalAdapter, add_adapter
from mma.adapters.protocols import make_tasks, task_metrics
from mma.adapters.text_cache import TextPrefixCache
from mma.adapters.train import fit_adapter
from mma.errors import MmaError
from mma.probe import layer_maps, load_model
from mma.probe.data import load_datasets

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    colour_folder(root, COLOURS, {"train": 20, "val": 4, "test": 6}, seed=0, noise=25, size=16)
    (d,) = load_datasets(f"folder:{root}")
    return d


@pytest.fixture()
def tiny():
    return load_model("mma-tiny:random")


@pytest.mark.parametrize("k", [1, 6, 12])
def test_text_prefix_cache_equals_encode_text(tiny, k):
    model = tiny.model
    depth = len(model.transformer.resblocks)
    for p in model.parameters():
        p.requires_grad_(False)
    tokens = tiny.tokenizer(["a photo of a red.", "a photo of a green thing.", "a blue"])
    adapter = add_adapter(model, k=k, dim=8, alpha=0.5)
    for p in adapter.parameters():  # make the adapters matter
        torch.nn.init.normal_(p, std=0.2)
    cache = TextPrefixCache(model, layer_maps(model)["text"], adapter.k_text, tokens)
    torch.testing.assert_close(cache.encode(), model.encode_text(tokens), rtol=1e-5, atol=1e-5)
    cache.encode().sum().backward()  # gradients reach the adapters of blocks k..L
    assert all(p.grad is not None for n, p in adapter.named_parameters() if ".text." in n or "shared" in n)
    assert len(model.transformer.resblocks) == depth  # the block list is restored


def test_fit_adapter_learns_and_is_deterministic(tiny, colour_data):
    cfg = MultiModalAdapter.make_config(k=4, epochs=3, batch_size=8, shots=8, alpha=0.1, lr=0.01)
    task = make_tasks("few-shot", [colour_data], shots=cfg.shots, seed=1)[0]
    before = accuracy(tiny, colour_data, task.evals[0].samples, task.classnames)
    first = fit_adapter(tiny, colour_data, task.train, task.classnames, cfg, seed=1)
    after = accuracy(tiny, colour_data, task.evals[0].samples, task.classnames)
    first.adapter.detach()
    again = fit_adapter(tiny, colour_data, task.train, task.classnames, cfg, seed=1)
    again.adapter.detach()
    assert first.steps == again.steps == 3 * (len(task.train) // 8)
    assert first.losses == again.losses
    assert math.isfinite(first.final_loss) and first.losses[-1] < first.losses[0]
    assert after > before  # random weights + adapter fitted on colours beat the random zero-shot
    only_adapter = {n for n, p in tiny.model.named_parameters() if p.requires_grad}
    assert only_adapter == set()


def test_base2novel_tasks_follow_the_coop_split(colour_data):
    (task,) = make_tasks("base2novel", [colour_data], shots=4, seed=2)
    assert task.classnames == ["blue", "green"]  # sorted folder names: blue, green | red, yellow
    base, novel = task.evals
    assert base.classnames == ["blue", "green"] and novel.classnames == ["red", "yellow"]
    assert {s.label for s in task.train} == {0, 1} and len(task.train) == 8
    assert {s.label for s in novel.samples} == {0, 1} and len(novel.samples) == 12


def test_protocol_errors(colour_data):
    with pytest.raises(MmaError, match=r"fewer than --shots 50 training images .* lower --shots to at most 20"):
        make_tasks("base2novel", [colour_data], shots=50, seed=1, strict=True)
    with pytest.raises(MmaError, match="--protocol 'zero' is not valid"):
        make_tasks("zero", [colour_data], shots=1, seed=1)
    with pytest.raises(MmaError, match="domain-gen needs the source"):
        make_tasks("domain-gen", [colour_data], shots=1, seed=1)


def test_checkpoint_round_trip_and_wrong_model(tiny, colour_data, tmp_path):
    cfg = MultiModalAdapter.make_config(k=5, epochs=1, batch_size=8, shots=4, alpha=0.1)
    task = make_tasks("few-shot", [colour_data], shots=cfg.shots, seed=1)[0]
    result = fit_adapter(tiny, colour_data, task.train, task.classnames, cfg, seed=1)
    acc = accuracy(tiny, colour_data, task.evals[0].samples, task.classnames)
    meta = {"model": str(tiny.spec), "weights": tiny.weights_id, "protocol": "few-shot", "dataset": colour_data.name}
    path = save_adapter(result.adapter, tmp_path / "a.safetensors", meta)
    result.adapter.detach()
    state, got = read_adapter(path)
    assert set(state) == set(result.adapter.state_dict()) and got["adapter"]["k"] == 5
    fresh = load_model("mma-tiny:random")
    adapter, _ = load_adapter(path, fresh)
    assert accuracy(fresh, colour_data, task.evals[0].samples, task.classnames) == acc
    adapter.detach()
    other = load_model("mma-tiny:random", seed=7)
    with pytest.raises(MmaError, match="was trained on 'mma-tiny:random'"):
        load_adapter(path, other)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(MmaError, match="not an mma adapter checkpoint"):
        read_adapter(tmp_path / "junk.safetensors")


def test_harmonic_mean():
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_train_config_validation():
    with pytest.raises(MmaError, match=r"alpha=-1 is not valid; it must be a float > 0"):
        MultiModalAdapter.make_config(alpha=-1).validate()
    with pytest.raises(MmaError, match=r"alpha=0 is not valid; it must be a float > 0"):
        MultiModalAdapter.make_config(alpha=0).validate()  # training divides by alpha; only evaluation may use 0
    MultiModalAdapter.make_config(alpha_eval=0.0).validate()  # --alpha-eval 0: the frozen model
    with pytest.raises(MmaError, match=r"alpha_eval=-0.1 is not valid; it must be a float >= 0"):
        MultiModalAdapter.make_config(alpha_eval=-0.1).validate()
    with pytest.raises(MmaError, match=r"Unknown training option\(s\) \['lrr'\]"):
        MultiModalAdapter.make_config({"lrr": 1})


def test_train_selected_end_to_end_resumes_and_reevaluates(tmp_path, monkeypatch):
    from mma.app.jobs import train_selected as job
    from mma.app.jobs.evaluate import evaluate_checkpoint, metrics_of

    cfg = job.TrainSelectedConfig(
        k=4,
        data=["builtin:colors,scenes"],
        seeds=[1],
        out=tmp_path,
        progress=False,
        train={"epochs": 1, "shots": 4, "batch_size": 8},
    )
    run = job.train_selected(cfg)
    assert run.recipe == "mma-tiny" and run.k == 4
    summary = pd.read_csv(tmp_path / "results_summary.csv")
    average = summary[(summary.method == "mma") & (summary.dataset == "average")].set_index("metric")["mean"]
    assert {"base", "novel", "hm", "mean_of_hms"} <= set(average.index)
    per = summary[(summary.method == "mma") & (summary.dataset != "average") & (summary.metric.isin(["base", "novel"]))]
    b, n = per[per.metric == "base"]["mean"].mean(), per[per.metric == "novel"]["mean"].mean()
    assert average["hm"] == pytest.approx(2 * b * n / (b + n))
    assert (tmp_path / "results" / "base2novel" / "colors" / "zeroshot.json").is_file()
    ckpt = tmp_path / "checkpoints" / "base2novel-colors-seed1-k4.safetensors"
    stored = json.loads((tmp_path / "results" / "base2novel" / "colors" / "seed1-k4-mma.json").read_text())
    table = evaluate_checkpoint(ckpt, device="cpu")
    assert metrics_of(table) == pytest.approx(stored["metrics"])
    zero = json.loads((tmp_path / "results" / "base2novel" / "colors" / "zeroshot.json").read_text())
    assert metrics_of(table, "zero_shot") == pytest.approx(zero["metrics"])  # the zero-shot model beside it

    retrained = lambda *a, **k: pytest.fail("a finished run was retrained")  # noqa: E731
    patch_everywhere(monkeypatch, "mma.adapters.train.fit_method", retrained)
    job.train_selected(cfg)  # everything is reused


def test_sweep_k_plots_and_compares_with_the_selection(tmp_path):
    from mma.app.jobs import sweep_k as job
    from mma.app.settings import TrainSelectedConfig

    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "selection.json").write_text(
        json.dumps({"selections": [{"model": "mma-tiny", "k": 5, "rule": "saturation"}]})
    )
    cfg = TrainSelectedConfig(
        run=probe,
        data=["builtin:colors"],
        seeds=[1, 2],
        out=tmp_path / "sweep",
        progress=False,
        train={"epochs": 1, "shots": 2, "batch_size": 4},
    )
    record = job.sweep_k(cfg, [5, 6])
    assert record["ks"] == [5, 6] and record["selected_k"] == 5 and record["best_k"] in (5, 6)
    assert 0 < record["selected_over_best"] <= 1
    assert set(record["paired"]) == {5, 6} and record["best_k"] in record["within_noise_of_best"]
    assert record["selected_verdict"].startswith("The selected k = 5")
    for name in ("k_sweep.png", "k_sweep.pdf", "k_sweep.csv", "k_sweep.json"):
        assert (tmp_path / "sweep" / name).is_file()


def test_cross_dataset_and_domain_gen_tasks(colour_data, tmp_path):
    import shutil

    # a "shifted variant": the same class names drawn darker, in its own folder
    shifted_root = tmp_path / "colours_dark"
    shutil.copytree(_root_of(colour_data), shifted_root)
    (shifted,) = load_datasets(f"folder:{shifted_root}")
    (task,) = make_tasks("domain-gen", [colour_data, shifted], shots=4, seed=1)
    assert [e.name for e in task.evals] == [colour_data.name, shifted.name]
    assert task.evals[1].classnames == colour_data.classnames and len(task.train) == 16
    (cross,) = make_tasks("cross-dataset", [colour_data, shifted], shots=2, seed=1)
    assert len(cross.evals) == 2 and len(cross.train) == 8
    metrics = task_metrics(cross, {colour_data.name: 50.0, shifted.name: 70.0})
    assert metrics == {"source": 50.0, f"target:{shifted.name}": 70.0, "target_average": 70.0}


def _root_of(dataset):
    return Path(dataset.source.partition(":")[2])


def test_mma_plus_plus_options(tiny, colour_data):
    cfg = MultiModalAdapter.make_config(
        k=5, epochs=1, batch_size=8, shots=4, alpha=0.1, consistency=2.5, alpha_eval=0.05
    )
    task = make_tasks("few-shot", [colour_data], shots=cfg.shots, seed=1)[0]
    plain_cfg = dataclasses.replace(cfg, options=dataclasses.replace(cfg.options, consistency=0.0))
    plain = fit_adapter(tiny, colour_data, task.train, task.classnames, plain_cfg, seed=1)
    plain.adapter.detach()
    result = fit_adapter(tiny, colour_data, task.train, task.classnames, cfg, seed=1)
    result.adapter.detach()
    assert result.adapter.alpha == 0.05  # the inference alpha is set after training
    # the consistency term (-lambda * cosine, two towers) lowers the loss by up to 2 * lambda
    assert all(c < p for c, p in zip(result.losses, plain.losses))


def test_the_k_sweep_pairs_each_k_with_the_best_by_seed_and_calls_best_only_beyond_noise():
    import pandas as pd

    from mma.app.jobs.sweep_k import _verdict, paired_to_best

    # three seeds: k 2 is best on average, k 1 trails it by a steady 1 point, k 3 by a noisy 0.5
    rows = [(1, s, 50.0 + s) for s in (1, 2, 3)] + [(2, s, 51.0 + s) for s in (1, 2, 3)]
    rows += [(3, 1, 53.0), (3, 2, 51.5), (3, 3, 53.0)]
    per_seed = pd.DataFrame(rows, columns=["k", "seed", "hm"])
    paired = paired_to_best(per_seed, best_k=2)
    assert paired[2] == {"difference": 0.0, "std": 0.0, "seeds": 3, "band": 0.0, "within_noise": True}
    assert paired[1]["difference"] == pytest.approx(-1.0) and paired[1]["band"] == pytest.approx(0.0)
    assert not paired[1]["within_noise"]  # the same -1 on every seed: beyond noise
    d3 = [53.0 - 52.0, 51.5 - 53.0, 53.0 - 54.0]
    assert paired[3]["difference"] == pytest.approx(np.mean(d3))
    assert paired[3]["band"] == pytest.approx(2 * np.std(d3, ddof=1) / np.sqrt(3)) and paired[3]["within_noise"]
    assert "not the best beyond noise" in _verdict(2, 2, paired) and "k = 3" in _verdict(2, 2, paired)
    assert _verdict(1, 2, paired).startswith("The selected k = 1 lies below the seed noise of the best k = 2")
    assert _verdict(3, 2, paired).startswith("The selected k = 3 lies within seed noise of the best k = 2")
    clear = paired_to_best(per_seed[per_seed["k"] != 3], best_k=2)
    assert (
        _verdict(2, 2, clear)
        == "The selected k = 2 is the best k beyond seed noise (every other k lies below its band)."
    )
    one = paired_to_best(per_seed[per_seed["seed"] == 1], best_k=2)
    assert one[1]["band"] is None and one[1]["within_noise"]  # one seed: nothing can be said
