"""The methods beside MMA (CoOp, CoCoOp, CLIP-Adapter, linear probe): formulas, frozen trunk, parameter counts, jobs."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from test_coop import WNIDS, FakeCoop
from test_reproduce import FOUR, _four_class_zhou
from typer.testing import CliRunner

from mma.adapters.clip_adapter import ClipAdapter
from mma.adapters.coop import CoCoOp, CoOp
from mma.adapters.frozen import image_part
from mma.adapters.linear_probe import SEARCH_CS, LinearProbeMethod, choose_c
from mma.adapters.methods import get_method, method_names, parse_methods
from mma.adapters.mma import MultiModalAdapter
from mma.adapters.protocols import make_tasks
from mma.adapters.train import TrainConfig, fit_method, schedule_for
from mma.app.cli import app
from mma.app.jobs.evaluate import evaluate_checkpoint, metrics_of
from mma.app.jobs.train_selected import TrainSelectedConfig, methods_table, train_selected
from mma.errors import MmaError
from mma.probe.data import load_datasets
from mma.probe.layers import layer_maps

TRAINED = ("coop", "cocoop", "clip-adapter", "linear-probe")
FAST = {"epochs": 2, "shots": 2, "batch_size": 4}  # every SGD method: a few steps


@pytest.fixture(scope="module")
def small():
    """A tiny open_clip CLIP (16 px, widths 64 / 32, 2 blocks each, context 24) with the embedded tokenizer."""
    import open_clip

    from mma.probe import load_model

    torch.manual_seed(0)
    model = open_clip.model.CLIP(
        embed_dim=24,
        vision_cfg=dict(image_size=16, patch_size=4, layers=2, width=64, head_width=16),
        text_cfg=dict(context_length=24, vocab_size=49408, width=32, heads=2, layers=2),
    ).eval()
    base = load_model("mma-tiny:random")
    return dataclasses.replace(base, model=model)


def _images(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


CLASSES = ["red circle", "green_square", "blue"]


def _text_by_hand(model, tokens: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    """open_clip's text tower written out, with ``ctx`` ([n, w] or [prompts, n, w]) at positions 1..n."""
    x = model.token_embedding(tokens)
    ctx = ctx.expand(len(tokens), -1, -1) if ctx.dim() == 2 else ctx
    x = torch.cat([x[:, :1], ctx, x[:, 1 + ctx.shape[1] :]], dim=1)
    x = x + model.positional_embedding
    x = model.transformer(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    return x[torch.arange(len(tokens)), tokens.argmax(dim=-1)] @ model.text_projection


def _inputs(method, loaded, images):
    """What the method reads of *images*: the frozen image tower's output below its ``image_start``."""
    part = image_part(loaded, method.image_start(loaded))
    return part.prefix(images) if part is not None else images


def _build(cls, loaded, **cfg):
    method = cls.build(loaded, cls.make_config({**cls.paper, **cfg}), CLASSES)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in method.parameters():  # make every part matter
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return method


# -- each method's forward equals its formula ---------------------------------------------------------------


def test_coop_logits_equal_the_prompt_written_out(small):
    model = small.model
    method = _build(CoOp, small, n_ctx=4)
    tokens = small.tokenizer([f"X X X X {c.replace('_', ' ')}." for c in CLASSES])
    images = _images()
    with torch.no_grad():
        img = F.normalize(model.encode_image(images), dim=-1)
        txt = F.normalize(_text_by_hand(model, tokens, method.ctx), dim=-1)
        want = model.logit_scale.exp() * img @ txt.T
        got_train = method.logits(
            model, _inputs(method, small, images), method.head(small, CLASSES, "", "cpu", train=True), train=True
        )
    got_eval = method.classifier(small, CLASSES, "ignored {}", torch.device("cpu"))(_inputs(method, small, images))
    torch.testing.assert_close(got_train, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_eval, want, rtol=1e-5, atol=1e-5)


def test_cocoop_logits_equal_one_prompt_set_per_image_written_out(small):
    model = small.model
    method = _build(CoCoOp, small)  # 4 context vectors from "a photo of a"
    tokens = small.tokenizer([f"a photo of a {c.replace('_', ' ')}." for c in CLASSES])
    images = _images(4)
    with torch.no_grad():
        img = F.normalize(model.encode_image(images), dim=-1)
        want = []
        for f in img:
            shift = method.meta_net[2](torch.relu(method.meta_net[0](f)))
            txt = F.normalize(_text_by_hand(model, tokens, method.ctx + shift), dim=-1)
            want.append(model.logit_scale.exp() * f @ txt.T)
        want = torch.stack(want)
        got = method.logits(
            model, _inputs(method, small, images), method.head(small, CLASSES, "", "cpu", train=True), train=True
        )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        method.classifier(small, CLASSES, "", torch.device("cpu"))(_inputs(method, small, images)), want
    )


def test_cocoop_context_starts_from_its_init_words(small):
    method = CoCoOp.build(small, CoCoOp.make_config(CoCoOp.paper), CLASSES)
    ids = small.tokenizer(["a photo of a"])[0][1:5]
    torch.testing.assert_close(method.ctx.detach(), small.model.token_embedding(ids).detach())
    with pytest.raises(MmaError, match="has 4 tokens but n_ctx=16"):
        CoCoOp.build(small, CoCoOp.make_config({**CoCoOp.paper, "n_ctx": 16}), CLASSES)


def test_clip_adapter_logits_equal_the_residual_blend_written_out(small):
    model = small.model
    method = _build(ClipAdapter, small)
    tokens = small.tokenizer([f"a photo of a {c}." for c in CLASSES])
    images = _images()
    with torch.no_grad():
        f = model.encode_image(images)
        a = torch.relu(torch.relu(f @ method.fc[0].weight.T) @ method.fc[2].weight.T)
        img = F.normalize(0.2 * a + 0.8 * f, dim=-1)
        txt = F.normalize(model.encode_text(tokens), dim=-1)
        want = model.logit_scale.exp() * img @ txt.T
    got = method.classifier(small, CLASSES, "a photo of a {}.", torch.device("cpu"))(_inputs(method, small, images))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not method.fc[0].bias and method.fc[0].weight.shape == (24 // 4, 24)


def test_linear_probe_is_scikit_learns_classifier_and_chooses_c_on_val(small):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 24)) * 2
    X = np.concatenate([centres[y] + rng.normal(size=(6, 24)) for y in range(3)])
    y = np.repeat(np.arange(3), 6)
    Xv = np.concatenate([centres[y] + rng.normal(size=(2, 24)) for y in range(3)])
    yv = np.repeat(np.arange(3), 2)
    C, acc, path = choose_c(X, y, Xv, yv)
    assert sorted(c for c, _ in path[: len(SEARCH_CS)]) == sorted(SEARCH_CS)
    assert C == _lpclip(dict(path).__getitem__) and acc == dict(path)[C]
    clf = LogisticRegression(C=C, solver="lbfgs", max_iter=1000).fit(X, y)
    method = LinearProbeMethod(embed_dim=24, classnames=CLASSES)
    method.load_fit(clf, C)
    logits = torch.from_numpy(X).float() @ method.weight.T + method.bias
    np.testing.assert_array_equal(logits.argmax(-1).numpy(), clf.predict(X))
    assert method.can_classify(["blue", "red circle"]) and not method.can_classify(["purple"])
    images = _images()
    with torch.no_grad():
        want = (small.model.encode_image(images) @ method.weight.T + method.bias)[:, [2, 0]]
    got = method.classifier(small, ["blue", "red circle"], "", torch.device("cpu"))(_inputs(method, small, images))
    torch.testing.assert_close(got, want)


def _lpclip(score, num_step: int = 8) -> float:
    """CoOp's lpclip/linear_probe.py search, re-stated line for line in its own shape: the grid from 1e6 down, its
    np.argmax; then num_step steps that fit both ends, "if acc_left < acc_right" the right wins, else the left; the
    interval halves in log10; the last step's winner is the C its reported accuracy belongs to."""
    search_list = [1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6]
    acc_list = [score(c) for c in search_list]
    c_peak = search_list[int(np.argmax(acc_list))]
    c_left, c_right = 0.1 * c_peak, 10 * c_peak
    c_final = c_peak
    for _ in range(num_step):
        acc_left, acc_right = score(c_left), score(c_right)
        if acc_left < acc_right:
            c_final = c_right
            c_left = 0.5 * (np.log10(c_right) + np.log10(c_left))
            c_right = np.log10(c_right)
        else:
            c_final = c_left
            c_right = 0.5 * (np.log10(c_right) + np.log10(c_left))
            c_left = np.log10(c_left)
        c_left, c_right = 10**c_left, 10**c_right
    return c_final


@pytest.mark.parametrize("case", range(40))
def test_the_c_search_is_lpclips_on_scores_with_ties(case):
    """search_c against the re-statement on score functions full of ties (accuracies on a coarse grid), as few
    validation images give; ties on the grid go to the larger C, ties in a step to the smaller one."""
    from mma.adapters.linear_probe import search_c

    rng = np.random.default_rng(case)
    levels = rng.integers(0, 4, size=8) / 4  # a step function of log10 C with few distinct values

    def score(c: float) -> float:
        return float(levels[int(np.clip(np.floor((np.log10(c) + 7) / 2), 0, 7))])

    assert search_c(score) == pytest.approx(_lpclip(score), rel=1e-12)
    assert search_c(score, steps=0) == _lpclip(score, num_step=0)
    flat = search_c(lambda c: 0.5)  # every C ties: the grid's first (1e6), then the left end each step
    assert flat == pytest.approx(_lpclip(lambda c: 0.5)) and flat < 1e6


# -- parameter counts: ViT-B/16's widths next to the published numbers -------------------------------------


def test_trainable_parameters_at_vit_b16_widths_match_the_published_counts():
    import open_clip

    cfg = open_clip.get_model_config("ViT-B-16")
    width, embed = cfg["text_cfg"]["width"], cfg["embed_dim"]
    assert (width, embed) == (512, 512)
    assert CoOp(width=width, embed_dim=embed, n_ctx=16).num_parameters() == 8_192  # CoOp: 16 x 512
    # CoOp as the CoCoOp protocol runs it (the published base-to-novel rows): 4 vectors from "a photo of a"
    ctxv1 = CoOp.paper_protocols["base2novel"]
    assert ctxv1 == {"n_ctx": 4, "ctx_init": "a photo of a"} == CoOp.paper_protocols["cross-dataset"]
    assert CoOp(width=width, embed_dim=embed, n_ctx=ctxv1["n_ctx"]).num_parameters() == 2_048
    assert "n_ctx" not in CoOp.paper_protocols.get("few-shot", {})  # few-shot: the CoOp paper's 16 vectors
    assert CoCoOp(width=width, embed_dim=embed, n_ctx=4).num_parameters() == 35_360  # CoCoOp's paper
    assert ClipAdapter(embed_dim=embed, reduction=4).num_parameters() == 131_072  # 2 x 512 x 128
    model = open_clip.create_model("ViT-B-16")
    assert MultiModalAdapter(layer_maps(model), k=5).num_parameters() == 674_560  # MMA, k = 5


# -- frozen trunk, exact removal, the schedule -------------------------------------------------------------


@pytest.fixture(scope="module")
def colors_task():
    (d,) = load_datasets("builtin:colors")
    return make_tasks("base2novel", [d], shots=4, seed=1)[0]  # 6 base classes x 4 shots


@pytest.mark.parametrize("name", TRAINED)
def test_training_leaves_the_trunk_frozen_and_removing_the_method_restores_the_model(tiny_random, colors_task, name):
    loaded = dataclasses.replace(tiny_random, model=copy.deepcopy(tiny_random.model))
    model = loaded.model
    model.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = loaded.tokenizer(["a photo of a red.", "a photo of a blue."])
    with torch.no_grad():
        ref = (model.encode_image(images), model.encode_text(tokens))
    cfg = get_method(name).make_config({**get_method(name).paper, **FAST, "shots": 4})
    t = colors_task
    result = fit_method(loaded, name, t.dataset, t.train, t.classnames, cfg, seed=1, val=t.val)
    method = result.adapter
    assert all(not p.requires_grad for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    if name != "linear-probe":
        assert all(p.requires_grad for p in method.parameters()) and result.losses
        assert all(math.isfinite(v) for v in result.losses)
    method.detach()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    with torch.no_grad():
        after = (model.encode_image(images), model.encode_text(tokens))
    assert torch.equal(after[0], ref[0]) and torch.equal(after[1], ref[1])


def test_the_warm_up_epoch_runs_at_its_constant_lr_then_the_cosine_starts_from_the_full_lr():
    cfg = TrainConfig(lr=0.002, epochs=4, warmup_epochs=1, warmup_lr=1e-5)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = schedule_for(opt, cfg)
    lrs = []
    for _ in range(cfg.epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    want = [1e-5] + [0.5 * 0.002 * (1 + math.cos(math.pi * e / 4)) for e in range(3)]
    assert lrs == pytest.approx(want)
    mma = TrainConfig(epochs=3)  # no warm-up: MMA's own cosine, unchanged
    assert type(schedule_for(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), mma)).__name__ == (
        "CosineAnnealingLR"
    )


# -- the registry and bad input ---------------------------------------------------------------------------


def test_methods_parse_from_commas_and_repeats_and_a_bad_name_is_one_sentence():
    assert parse_methods(None) == ["mma"]
    assert parse_methods(["mma,coop", "CoCoOp", "coop"]) == ["mma", "coop", "cocoop"]
    # the built-in methods first, in the tables' order (an installed plugin may follow)
    assert method_names()[:11] == (
        "zeroshot", "mma", "mma++", "maple", "promptsrc", "mmrl", "clip-lora", "coop", "cocoop", "clip-adapter",
        "linear-probe",
    )  # fmt: skip
    with pytest.raises(MmaError, match=r"--method 'copo' is not valid .* did you mean 'coop'"):
        parse_methods(["mma,copo"])
    done = CliRunner().invoke(app, ["train-selected", "--method", "adapter", "--k", "2"])
    assert done.exit_code == 2 and "--method 'adapter' is not valid" in done.output
    assert "Traceback" not in done.output


# -- end to end: every method, the built-in suite and a fake CoOp tree, with resume ---------------------------

ALL = ["mma", "coop", "cocoop", "clip-adapter", "linear-probe", "zeroshot"]


def _job(out, data, **kw):
    kw.setdefault("train", dict(FAST))
    return TrainSelectedConfig(k=3, data=data, seeds=[1], out=out, device="cpu", progress=False, methods=ALL, **kw)


def _interrupt_at_step(monkeypatch, n: int):
    original, calls = torch.optim.SGD.step, [0]

    def step(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step)


@pytest.fixture(scope="module")
def builtin_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("all-methods")
    return train_selected(_job(out, ["builtin:colors"]))


def test_every_method_runs_on_the_builtin_suite_into_one_table(builtin_run):
    r, summary = builtin_run.results, builtin_run.summary
    assert set(r["method"]) == set(ALL)
    assert sorted(set(summary["method"])) == sorted(ALL)
    lp = r[r["method"] == "linear-probe"]
    assert set(lp["metric"]) == {"base"}  # novel and HM: not applicable
    for m in ("coop", "cocoop", "clip-adapter"):
        assert set(r[r["method"] == m]["metric"]) == {"base", "novel", "hm"}
        assert r[r["method"] == m]["k"].isna().all()
    table = methods_table(r)["base2novel"]
    assert list(table["method"]) == ["zeroshot", "mma (k=3)", "coop", "cocoop", "clip-adapter", "linear-probe"]
    assert table.set_index("method").loc["linear-probe", "novel"] == "n/a"
    out = builtin_run.out
    for m in TRAINED:
        record = json.loads((out / f"train-{m}.json").read_text())
        assert record["method"] == m and record["settings"]["method"] == m
        result = json.loads((out / "results" / "base2novel" / "colors" / f"seed1-{m}.json").read_text())
        assert result["train_sources"]["shots"] == "user flag"
        assert result["train"]["trainable_parameters"] > 0
    coop = json.loads((out / "train-coop.json").read_text())
    # the embedded recipe: CoOp's tuned context (adapters/tuned/), recorded with its tuning record as the source
    from mma.adapters.recipes import tuned_records

    file, record = tuned_records()["coop"]
    assert coop["train_config"]["n_ctx"] == record["coop"]["n_ctx"]
    assert coop["train_sources"]["n_ctx"] == "recipe mma-tiny (coop)" and coop["settings"]["provenance"] == {
        "paper default (coop)": get_method("coop").paper_file(""),
        "recipe mma-tiny (coop)": file,
    }
    assert (out / "methods.png").is_file() and (out / "methods.csv").is_file()


@pytest.mark.parametrize("name", TRAINED)
def test_mma_evaluate_checkpoint_gives_each_methods_numbers_again(builtin_run, name):
    ckpt = builtin_run.out / "checkpoints" / f"base2novel-colors-seed1-{name}.safetensors"
    saved = json.loads((builtin_run.out / "results" / "base2novel" / "colors" / f"seed1-{name}.json").read_text())
    assert metrics_of(evaluate_checkpoint(ckpt, device="cpu")) == pytest.approx(saved["metrics"])
    if name != "mma":
        with pytest.raises(MmaError, match=r"--alpha-eval applies to MMA, MMA\+\+ checkpoints only"):
            evaluate_checkpoint(ckpt, device="cpu", alpha_eval=0.0)


def test_an_interrupted_run_of_every_method_resumes_to_the_same_results(builtin_run, tmp_path, monkeypatch):
    cut = tmp_path / "cut"
    _interrupt_at_step(monkeypatch, 10)  # 12 shots, batch 4: MMA's steps 1-6, CoOp's epoch 1 (7-9), then in epoch 2
    with pytest.raises(KeyboardInterrupt):
        train_selected(_job(cut, ["builtin:colors"]))
    monkeypatch.undo()
    assert any((cut / "state").iterdir())  # a CoOp epoch state waits to be resumed
    resumed = train_selected(_job(cut, ["builtin:colors"]))
    cols = ["protocol", "dataset", "seed", "k", "method", "metric"]
    a = resumed.results.sort_values(cols).reset_index(drop=True)
    b = builtin_run.results.sort_values(cols).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert not (cut / "state").exists()


def test_every_method_on_a_fake_coop_tree(tmp_path):
    fake = FakeCoop(tmp_path / "data")
    fake.imagenet()
    fake.wnid_folders("imagenet-sketch", "images", WNIDS)
    for name in FOUR:
        _four_class_zhou(fake.root, name)
    model = "mma-tiny:random"
    run = train_selected(_job(tmp_path / "b2n", [f"coop:{fake.root}:eurosat,dtd"], model=model))
    assert set(run.results["method"]) == set(ALL) and set(run.results["dataset"]) == {"eurosat", "dtd"}
    dg = train_selected(
        _job(tmp_path / "dg", [f"coop:{fake.root}:imagenet,imagenet_sketch"], model=model, protocol="domain-gen")
    )
    lp = dg.results[dg.results["method"] == "linear-probe"].set_index("metric")["value"]
    assert {"source", "target:imagenet_sketch", "target_average"} <= set(lp.index)  # a subset of its classes
    again = train_selected(_job(tmp_path / "b2n", [f"coop:{fake.root}:eurosat,dtd"], model=model))  # all reused
    pd.testing.assert_frame_equal(again.results, run.results)


def test_every_method_runs_unchanged_under_torchrun(tmp_path, one_and_two_ranks):
    """2 gloo ranks give the one-process table (augmentation off). CoOp's gradient reaches the text side and
    CLIP-Adapter's the image side through the same DDP-wrapped objective CoCoOp uses; the linear probe fits the
    same classifier on every rank."""
    args = ["train-selected", "--k", "3", "--data", "builtin:colors", "--seeds", "1", "--device", "cpu"]
    args += ["--method", "coop,clip-adapter,linear-probe", "--epochs", "2", "--shots", "2", "--batch-size", "2"]
    tables = one_and_two_ranks(args, tmp_path, "results.csv", "methods side by side")
    pd.testing.assert_frame_equal(tables[0], tables[1], atol=1e-3, rtol=0)


def test_sweep_k_draws_the_other_methods_as_lines_and_trains_them_once(tmp_path):
    from mma.app.jobs.sweep_k import sweep_k

    cfg = TrainSelectedConfig(
        data=["builtin:colors"], seeds=[1], out=tmp_path, device="cpu", progress=False, train=dict(FAST)
    )
    cfg.methods = ["coop", "linear-probe"]
    record = sweep_k(cfg, [2, 3])
    assert set(record["methods"]) == {"coop", "linear-probe"}
    assert set(record["methods"]["coop"]) == {"base", "novel", "hm"} and set(record["methods"]["linear-probe"]) == {
        "base"
    }
    results = pd.read_csv(tmp_path / "results.csv")
    assert len(results[(results["method"] == "coop") & (results["metric"] == "hm")]) == 1  # once, not per k
    assert (tmp_path / "k_sweep.png").is_file()
