"""MMA++: its published recipe, its names beside MMA's, its objective (MMA's plus the alpha-consistency term), the
decoupled test-time alpha, the shared layer's dropout, its parameters, checkpoint, training and resume."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import mma.adapters.mma_pp as mma_pp_module
from mma.adapters.checkpoint import load_adapter, save_adapter
from mma.adapters.frozen import image_part
from mma.adapters.methods import get_method, parse_methods
from mma.adapters.mma import MMAObjective, MultiModalAdapter
from mma.adapters.mma_pp import MMAPlusPlus, SharedLayer
from mma.adapters.protocols import make_tasks
from mma.adapters.train import fit_method
from mma.analysis.published import published_method
from mma.app.jobs.train_selected import TrainSelectedConfig, train_selected
from mma.errors import MmaError
from mma.probe.data import load_datasets
from mma.probe.layers import layer_maps

CLASSES = ["red circle", "green square", "blue"]
TEMPLATE = "a photo of a {}."


@pytest.fixture()
def loaded(tiny_random):
    """The embedded 12-block architecture (random weights), a private copy of its model."""
    return dataclasses.replace(tiny_random, model=copy.deepcopy(tiny_random.model))


def _images(n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _built(loaded, **values) -> MMAPlusPlus:
    """MMA++ at its published values (and *values*), weights drawn large enough that every branch matters."""
    method = MMAPlusPlus.build(loaded, MMAPlusPlus.make_config({**MMAPlusPlus.paper, **values}), CLASSES)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in method.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return method


# -- the published recipe, the names ------------------------------------------------------------------------------


def test_the_recipe_is_the_hand_crafted_prompt_config_and_x2d_for_cross_dataset():
    values = MMAPlusPlus.published_values()
    # b2n_hc.yaml: LR 0.3, MAX_EPOCH 50, BATCH_SIZE 16, TRAIN_SCALE 0.01, SCALE_REG 2.5, TEST_SCALE 0.0065, DROP 0.2;
    # train.py: ADAPTER_DIM 32; the official model never calls gsl.py (no gradient scaling); no warm-up
    want = {"lr": 0.3, "epochs": 50, "batch_size": 16, "shots": 16, "dim": 32, "alpha": 0.01, "alpha_eval": 0.0065}
    want |= {"consistency": 2.5, "dropout": 0.2, "grad_scale": False, "warmup_epochs": 0, "momentum": 0.9}
    assert {name: values[name] for name in want} == want
    # ADAPTER_START 5 .. ADAPTER_END 12 for every protocol (MMA's cross-dataset k is 9); x2d.yaml beyond that
    xd = {"k": 5, "epochs": 15, "consistency": 1.0, "alpha_eval": 0.005, "dropout": 0.1}
    assert MMAPlusPlus.paper_protocols == {"base2novel": {"k": 5}, "cross-dataset": xd, "domain-gen": xd}
    assert MMAPlusPlus.paper_datasets == {} and MultiModalAdapter.paper_datasets  # no ImageNet batch 128 here
    files = MMAPlusPlus.paper_files
    assert "MultiModalAdapterPP/b2n_hc.yaml" in files[""] and "b2n_hc.yaml" in files["base2novel"]
    assert all("MultiModalAdapterPP/x2d.yaml" in files[p] for p in ("cross-dataset", "domain-gen"))
    assert all("ADAPTER_START 5" in f for f in files.values())
    assert "82.07" in files[""] and "LLM-written" in files[""] and "b2n_cupl.yaml" in files[""]
    doc = mma_pp_module.__doc__
    assert "82.07" in doc and "LLM-written" in doc and "Not implemented" in doc and "80 ImageNet templates" in doc
    with pytest.raises(MmaError, match=r"dropout=1\.0 is not valid; it must be a float in \[0, 1\)"):
        MMAPlusPlus.make_config(dropout=1.0).validate()


def test_its_names_are_its_own_and_never_mmas():
    assert get_method("mma++") is MMAPlusPlus and parse_methods(["mma++,mma", "MMA++"]) == ["mma++", "mma"]
    assert (MMAPlusPlus.title, MMAPlusPlus.depth_indexed, MMAPlusPlus.colour != MultiModalAdapter.colour) == (
        "MMA++",
        True,
        True,
    )
    assert MMAPlusPlus.run_key(1, "k5") == "seed1-k5-mma++" and MultiModalAdapter.run_key(1, "k5") == "seed1-k5-mma"
    assert MMAPlusPlus.file_key(1, "k5") == "seed1-k5-mma++" and MultiModalAdapter.file_key(1, "k5") == "seed1-k5"
    assert MMAPlusPlus.record_name("k5") == "train-k5-mma++.json" and MultiModalAdapter.record_name("k5") == (
        "train-k5.json"
    )
    assert MMAPlusPlus.qualify("paper default") == "paper default (mma++)"
    assert MultiModalAdapter.qualify("paper default") == "paper default"
    # the published tables: "MMA++" is not "MMA" (the loose match keeps the pluses)
    assert published_method("mma++") == "MMA++" and published_method("mma") == "MMA"


# -- the objective: MMA's cross-entropy plus the alpha-consistency term ------------------------------------------------


def _consistency_by_hand(model, method, images, tokens, u: float) -> torch.Tensor:
    """-(mean cosine of the image features at alpha and at u * alpha) - (the same for the text features)."""
    with torch.no_grad():
        alpha = method.alpha
        img = F.normalize(model.encode_image(images).float(), dim=-1)
        txt = F.normalize(model.encode_text(tokens).float(), dim=-1)
        method.alpha = u * alpha
        img2 = F.normalize(model.encode_image(images).float(), dim=-1)
        txt2 = F.normalize(model.encode_text(tokens).float(), dim=-1)
        method.alpha = alpha
    return -((img * img2).sum(-1).mean() + (txt * txt2).sum(-1).mean())


def test_the_objective_is_mmas_cross_entropy_plus_consistency_times_the_term_written_out(loaded):
    model = loaded.model
    method = _built(loaded, alpha=0.05, dropout=0.0, consistency=2.5).attach(model)
    cfg = MMAPlusPlus.make_config({**MMAPlusPlus.paper, "alpha": 0.05, "dropout": 0.0, "consistency": 2.5})
    objective = method.objective(loaded, CLASSES, TEMPLATE, cfg)
    assert {id(p) for p in objective.parameters()} == {id(p) for p in method.parameters()}  # what DDP wraps
    images, labels = _images(), torch.tensor([0, 1, 2, 0])
    part = image_part(loaded, method.image_start(loaded))
    inputs = part.prefix(images)
    tokens = loaded.tokenizer([TEMPLATE.format(c) for c in CLASSES])
    plain = MMAObjective(loaded, method, tokens, None, 0.0, part)  # MMA's own loss, no consistency
    random.seed(7)
    got = objective(inputs, labels)
    random.seed(7)
    u = random.random()  # the alpha2 / alpha the objective drew
    want = plain(inputs, labels) + 2.5 * _consistency_by_hand(model, method, images, tokens, u)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert abs(float(got.detach() - plain(inputs, labels).detach())) > 1.0  # the term is there: about -2 * 2.5
    got.backward()
    assert all(p.grad is not None for p in method.parameters())
    method.detach()


def test_dropout_acts_in_both_passes_of_a_training_step_and_never_in_evaluation(loaded):
    model = loaded.model
    cfg = MMAPlusPlus.make_config({**MMAPlusPlus.paper, "alpha": 0.05, "dropout": 0.5})
    method = _built(loaded, alpha=0.05, dropout=0.5).attach(model)
    same = _built(loaded, alpha=0.05, dropout=0.0)  # the same weights, no dropout
    images, labels = _images(), torch.tensor([0, 1, 2, 0])
    inputs = image_part(loaded, method.image_start(loaded)).prefix(images)
    calls: list[bool] = []
    method.shared["12"].register_forward_hook(lambda layer, args, out: calls.append(layer.active))
    random.seed(7)
    torch.manual_seed(0)
    dropped = method.objective(loaded, CLASSES, TEMPLATE, cfg)(inputs, labels)
    assert calls == [True] * 4  # image and text, the loss's pass and the consistency pass
    assert not any(layer.active for layer in method.shared.values())
    with torch.no_grad():
        evaluated = model.encode_image(images), model.encode_text(loaded.tokenizer(["a photo of a blue."]))
    method.detach()
    same.attach(model)
    random.seed(7)
    torch.manual_seed(0)
    kept = same.objective(loaded, CLASSES, TEMPLATE, cfg)(inputs, labels)
    with torch.no_grad():
        reference = model.encode_image(images), model.encode_text(loaded.tokenizer(["a photo of a blue."]))
    same.detach()
    assert not torch.allclose(dropped, kept)
    assert torch.equal(evaluated[0], reference[0]) and torch.equal(evaluated[1], reference[1])


def test_the_shared_layer_is_a_linear_then_a_dropout_mask_of_zero_or_one_over_keep():
    torch.manual_seed(0)
    layer = SharedLayer(32, 32)
    x = torch.randn(400, 32)
    linear = x @ layer.weight.T + layer.bias
    layer.p = 0.5
    torch.testing.assert_close(layer(x), linear)  # inactive: the linear layer
    layer.active = True
    out = layer(x)
    kept = out != 0
    torch.testing.assert_close(out[kept], linear[kept] / 0.5)
    assert abs(float((~kept).float().mean()) - 0.5) < 0.03


# -- the decoupled alpha, the parameters, the initialisation ------------------------------------------------------


def test_after_training_evaluates_at_alpha_eval(loaded):
    method = _built(loaded)
    assert method.alpha == 0.01 and method.grad_scale is False and method.dropout == 0.2
    method.after_training(MMAPlusPlus.make_config(MMAPlusPlus.paper))
    assert method.alpha == 0.0065
    method.after_training(MMAPlusPlus.make_config({**MMAPlusPlus.paper, **MMAPlusPlus.paper_protocols["domain-gen"]}))
    assert method.alpha == 0.005
    method.after_training(MMAPlusPlus.make_config(alpha_eval=None))
    assert method.alpha == 0.005  # none given: unchanged


def test_vit_b16_parameter_count_is_mmas_at_the_same_k():
    import open_clip

    maps = layer_maps(open_clip.create_model("ViT-B-16"))
    # per adapted block: text down 512*32+32 and up 32*512+512, image down 768*32+32 and up 32*768+768, shared
    # 32*32+32; blocks 5..12 are 8 blocks, 9..12 are 4
    per_block = (512 * 32 + 32 + 32 * 512 + 512) + (768 * 32 + 32 + 32 * 768 + 768) + (32 * 32 + 32)
    assert per_block == 84_320
    for k, blocks in ((5, 8), (9, 4)):
        method = MMAPlusPlus(maps, k=k, dim=32)
        assert method.num_parameters() == blocks * per_block == MultiModalAdapter(maps, k=k).num_parameters()
    assert MMAPlusPlus(maps, k=5).num_parameters() == 674_560


def test_weights_are_mmas_draw_and_biases_keep_pytorchs_default(loaded):
    maps = layer_maps(loaded.model)
    torch.manual_seed(0)
    mma = MultiModalAdapter(maps, k=5, dim=8)
    torch.manual_seed(0)
    pp = MMAPlusPlus(maps, k=5, dim=8)
    for (name, a), (other, b) in zip(mma.named_parameters(), pp.named_parameters(), strict=True):
        assert name == other
        if name.endswith("weight"):
            assert torch.equal(a, b), name  # Kaiming normal, fan-out, as MMA
        else:
            bound = 1 / math.sqrt(dict(pp.named_modules())[name.rsplit(".", 1)[0]].in_features)
            assert not a.any() and b.abs().max() <= bound and b.any(), name  # MMA zeroes, MMA++ does not


# -- checkpoint, training, resume, the jobs' files -----------------------------------------------------------------


def test_checkpoint_round_trip_restores_mma_pp_with_its_dropout(loaded, tmp_path):
    model = loaded.model
    method = _built(loaded, dropout=0.1)
    images = _images()
    with method.attached(model), torch.no_grad():
        want = model.encode_image(images)
    path = save_adapter(method, tmp_path / "ckpt.safetensors", {})
    restored, _ = load_adapter(path, loaded)
    assert type(restored) is MMAPlusPlus and restored.dropout == 0.1 and restored.config() == method.config()
    assert all(isinstance(layer, SharedLayer) for layer in restored.shared.values())
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), want)
    restored.detach()
    with pytest.raises(MmaError, match=r"dropout=1 is out of range"):
        restored.dropout = 1


@pytest.fixture(scope="module")
def colors_task():
    (d,) = load_datasets("builtin:colors")
    return make_tasks("base2novel", [d], shots=4, seed=1)[0]  # 6 base classes x 4 shots = 24 images


def test_training_resumes_to_the_same_adapter_and_restores_the_model(loaded, colors_task, tmp_path, monkeypatch):
    """Dropout draws from the CPU RNG the saved state restores: an interrupted run resumes to the same weights."""
    t, model = colors_task, loaded.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    values = {"k": 4, "epochs": 2, "batch_size": 8, "shots": 4, "augment": False}  # dropout: the one random draw
    cfg = MMAPlusPlus.make_config({**MMAPlusPlus.paper, **values})

    def fit(**kw):
        result = fit_method(loaded, "mma++", t.dataset, t.train, t.classnames, cfg, seed=1, **kw)
        result.adapter.detach()
        return result

    full = fit()
    assert full.adapter.alpha == 0.0065 and all(math.isfinite(v) for v in full.losses)
    original, calls = torch.optim.SGD.step, [0]

    def step(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 4:  # the first step of epoch 2: the state after epoch 1 is on disk
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    with pytest.raises(KeyboardInterrupt):
        fit(state_path=tmp_path / "state.pt")
    monkeypatch.undo()
    resumed = fit(state_path=tmp_path / "state.pt")
    for name, value in full.adapter.state_dict().items():
        assert torch.equal(resumed.adapter.state_dict()[name], value), name
    assert resumed.losses == full.losses and resumed.steps == full.steps == 6
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks for m in model.modules())


def test_mma_and_mma_pp_run_side_by_side_into_files_of_their_own(tmp_path):
    run = train_selected(
        TrainSelectedConfig(
            k=3,
            data=["builtin:colors"],
            seeds=[1],
            out=tmp_path,
            device="cpu",
            progress=False,
            methods=["mma", "mma++"],
            train={"epochs": 1, "shots": 2, "batch_size": 4},
        )  # fmt: skip
    )
    results = tmp_path / "results" / "base2novel" / "colors"
    assert {p.name for p in results.glob("seed1-*.json")} == {"seed1-k3-mma.json", "seed1-k3-mma++.json"}
    assert json.loads((results / "seed1-k3-mma++.json").read_text())["method"] == "mma++"
    assert (tmp_path / "train-k3-mma++.json").is_file() and (tmp_path / "train-k3.json").is_file()
    record = json.loads((tmp_path / "train-k3-mma++.json").read_text())
    assert record["train_config"]["alpha_eval"] == 0.0065 and record["train_config"]["consistency"] == 2.5
    assert set(run.results["method"]) == {"mma", "mma++", "zeroshot"}
    (ckpt,) = [p for p in tmp_path.rglob("*mma++*") if p.suffix == ".safetensors"]
    assert ckpt.name.startswith("base2novel-colors-seed1-k3-mma++")


# -- beside the published numbers ----------------------------------------------------------------------------------

B2N = ["imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft"]
B2N += ["sun397", "dtd", "eurosat", "ucf101"]
TARGETS = B2N[1:]


def _b2n_results(method: str, datasets) -> pd.DataFrame:
    rows = [("base2novel", d, s, 5, method, m, 70.0 + s) for d in datasets for s in (1, 2) for m in ("base", "novel")]
    return pd.DataFrame(rows, columns=["protocol", "dataset", "seed", "k", "method", "metric", "value"])


def test_published_averages_alone_stand_beside_a_run_of_every_dataset_and_never_beside_fewer():
    from mma.analysis.compare import compare
    from mma.app.results import comparison_setup

    setup = comparison_setup()
    results = pd.concat([_b2n_results("mma++", B2N), _b2n_results("promptsrc", B2N)], ignore_index=True)
    c = compare(results, setup)
    avg = c[c["dataset"] == "average"].set_index(["method", "metric"])
    assert avg.loc[("mma++", "hm"), "published"] == 82.07 and avg.loc[("mma++", "hm"), "published_method"] == "MMA++"
    assert avg.loc[("mma++", "hm"), "published_check"] == "unconfirmed" and math.isnan(
        avg.loc[("mma++", "base"), "published"]
    )
    assert (avg.loc[("promptsrc", "base"), "published"], avg.loc[("promptsrc", "hm"), "published"]) == (84.26, 79.97)
    assert avg.loc[("promptsrc", "hm"), "published_check"] == "confirmed"
    fewer = compare(_b2n_results("mma++", ["dtd", "eurosat"]), setup)
    assert fewer[fewer["dataset"] == "average"]["published"].isna().all()  # an 11-dataset HM is not a 2-dataset one
    xd = [("cross-dataset", "imagenet", 1, 5, "mma++", "source", 70.0)]
    xd += [("cross-dataset", "imagenet", 1, 5, "mma++", f"target:{d}", 60.0) for d in TARGETS]
    c = compare(pd.DataFrame(xd, columns=["protocol", "dataset", "seed", "k", "method", "metric", "value"]), setup)
    assert c[(c["dataset"] == "average") & (c["metric"] == "accuracy")]["published"].tolist() == [69.66]
