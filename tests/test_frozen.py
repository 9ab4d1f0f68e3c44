"""Pay only for what trains: the frozen image part computed once gives the numbers recomputation gives, bit for bit."""

from __future__ import annotations

import pytest
import torch
from conftest import colour_folder

from mma.adapters import frozen
from mma.adapters.evaluate import method_accuracy
from mma.adapters.frozen import FrozenInputs, ImagePart, image_part
from mma.adapters.methods import get_method
from mma.adapters.protocols import make_tasks
from mma.adapters.train import fit_method
from mma.app.jobs.train_selected import TrainSelectedConfig, train_selected
from mma.io import read_json
from mma.probe import load_model
from mma.probe.data import load_datasets
from mma.probe.layers import layer_maps

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    colour_folder(root, COLOURS, {"train": 10, "val": 2, "test": 5}, seed=0, noise=40, size=32)
    return root


@pytest.fixture(scope="module")
def data(root):
    (d,) = load_datasets(f"folder:{root}")
    return d


@pytest.fixture(scope="module")
def tiny():
    return load_model("mma-tiny:random")


@pytest.mark.parametrize("start", [2, 5, 12, 13])
def test_prefix_then_rest_is_encode_image_bit_for_bit(tiny, start):
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    part = ImagePart(tiny, start)
    with torch.no_grad():
        x = part.prefix(images)
        assert x.shape[0] == 6 and x.ndim == (3 if start <= 12 else 2)  # tokens [B, T, D], or the feature
        assert torch.equal(part.rest(x), tiny.model.encode_image(images))
    depth = layer_maps(tiny.model)["image"].depth
    assert len(layer_maps(tiny.model)["image"].blocks(tiny.model)) == depth  # the block list is restored
    assert not any(m._forward_pre_hooks for m in tiny.model.modules())


def test_rest_trains_the_adapter_blocks_only(tiny):
    method = get_method("mma")
    adapter = method.build(tiny, method.make_config(k=6, alpha=0.5, dim=4), ["a", "b"]).attach(tiny.model)
    try:
        part = image_part(tiny, adapter.image_start(tiny))
        images = torch.randn(3, 3, 32, 32)
        full = tiny.model.encode_image(images)
        got = part.rest(part.prefix(images))
        torch.testing.assert_close(got, full, rtol=0, atol=0)
        got.sum().backward()
        grads = {n for n, p in adapter.named_parameters() if p.grad is not None}
        assert any(".image." in n for n in grads)
    finally:
        adapter.detach()


def test_methods_say_where_their_image_tower_changes(tiny):
    depth = layer_maps(tiny.model)["image"].depth
    cfg = get_method("mma").make_config(k=7)
    assert get_method("mma").build(tiny, cfg, ["a"]).image_start(tiny) == 7
    for name in ("coop", "cocoop", "clip-adapter", "linear-probe", "zeroshot"):
        method = get_method(name)
        built = method.build(tiny, method.make_config(method.paper), ["a", "b"])
        assert built.image_start(tiny) == depth + 1, name
    assert image_part(tiny, None) is None and image_part(tiny, 1) is None


@pytest.mark.parametrize("name", ["mma", "coop", "cocoop", "clip-adapter"])
def test_training_with_the_cache_equals_training_without_it(tiny, data, tmp_path, name):
    method = get_method(name)
    values = {**method.paper, "epochs": 2, "batch_size": 4, "shots": 4, "augment": False}
    if name == "mma":
        values.update(k=5, alpha=0.1, lr=0.01)
    (task,) = make_tasks("base2novel", [data], shots=4, seed=1)
    runs = {}
    for cache in (True, False):
        cfg = method.make_config({**values, "cache": cache})
        result = fit_method(tiny, method, data, task.train, task.classnames, cfg, seed=3, cache_dir=tmp_path / "cache")
        result.adapter.detach()
        acc = method_accuracy(
            tiny, result.adapter, data, task.evals[0].samples, task.classnames, "a photo of a {}.",
            cache=cache, cache_dir=tmp_path / "cache",
        )  # fmt: skip
        runs[cache] = (result.losses, {k: v.clone() for k, v in result.adapter.state_dict().items()}, acc)
    (losses_on, state_on, acc_on), (losses_off, state_off, acc_off) = runs[True], runs[False]
    assert losses_on == losses_off and acc_on == acc_off
    assert all(torch.equal(state_on[k], state_off[k]) for k in state_on)
    assert any((tmp_path / "cache").iterdir())  # the cached run did write its inputs


def test_augmentation_turns_the_cache_off(tiny, data, tmp_path):
    method = get_method("clip-adapter")
    (task,) = make_tasks("base2novel", [data], shots=4, seed=1)
    cfg = method.make_config({**method.paper, "epochs": 1, "batch_size": 4, "augment": True, "cache": True})
    fit_method(tiny, method, data, task.train, task.classnames, cfg, seed=1, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_an_interrupted_fill_resumes_with_the_rows_it_had(tiny, data, tmp_path, monkeypatch):
    samples = data.splits["train"]
    part = ImagePart(tiny, 4)
    monkeypatch.setattr(frozen, "_FILL_BATCH", 8)
    calls = {"n": 0}
    real = part.prefix

    def flaky(images):
        calls["n"] += 1
        if calls["n"] == 3 and not calls.get("resumed"):
            raise KeyboardInterrupt
        return real(images)

    part.prefix = flaky
    inputs = FrozenInputs(part, tiny, data, samples, tiny.preprocess, device=torch.device("cpu"), folder=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        inputs.rows()
    manifest = read_json(inputs.entry / "manifest.json")
    assert manifest["rows_done"] == 16 and not manifest["done"]
    calls.update(n=0, resumed=True)
    resumed = FrozenInputs(part, tiny, data, samples, tiny.preprocess, device=torch.device("cpu"), folder=tmp_path)
    rows = resumed.rows()
    fresh = FrozenInputs(
        ImagePart(tiny, 4), tiny, data, samples, tiny.preprocess, device=torch.device("cpu"), folder=None
    ).rows()
    assert read_json(resumed.entry / "manifest.json")["done"]
    for i in range(len(samples)):
        assert torch.equal(rows[i][1], fresh[i][1])
    assert calls["n"] == (len(samples) - 16 + 7) // 8  # only the rows not yet on disk were computed


def test_the_key_changes_with_what_changes_the_numbers(tiny, data, tmp_path):
    samples = data.splits["train"]
    cpu = torch.device("cpu")
    a = FrozenInputs(ImagePart(tiny, 4), tiny, data, samples, tiny.preprocess, device=cpu, folder=tmp_path)
    assert a.key == FrozenInputs(ImagePart(tiny, 4), tiny, data, samples, tiny.preprocess, device=cpu).key
    assert a.key != FrozenInputs(ImagePart(tiny, 5), tiny, data, samples, tiny.preprocess, device=cpu).key
    assert a.key != FrozenInputs(ImagePart(tiny, 4), tiny, data, samples[1:], tiny.preprocess, device=cpu).key
    other = load_model("mma-tiny:random")
    other.weights_id = "another"
    assert a.key != FrozenInputs(ImagePart(other, 4), other, data, samples, other.preprocess, device=cpu).key


def test_a_run_sharing_the_cache_reuses_an_identical_training(root, tmp_path):
    """What reproduce does for cross-dataset and domain generalisation: the same training is run once."""
    common = dict(
        model="mma-tiny:random", k=5, data=[f"folder:{root}"], seeds=[1], progress=False, cache_dir=tmp_path / "cache",
        methods=["mma", "clip-adapter"], train={"epochs": 1, "shots": 4, "batch_size": 4},
    )  # fmt: skip
    first = train_selected(TrainSelectedConfig(out=tmp_path / "a", **common))
    again = train_selected(TrainSelectedConfig(out=tmp_path / "b", **common))
    assert first.results["value"].tolist() == again.results["value"].tolist()
    for method in ("seed1-k5-mma", "seed1-clip-adapter"):
        a = read_json(tmp_path / "a" / "results" / "base2novel" / root.name / f"{method}.json")
        b = read_json(tmp_path / "b" / "results" / "base2novel" / root.name / f"{method}.json")
        assert "reused" not in a["train"] and b["train"]["reused"].startswith(str(tmp_path / "cache" / "trained"))
        assert a["train"]["final_loss"] == b["train"]["final_loss"] and a["metrics"] == b["metrics"]
    assert not (tmp_path / "a" / "cache").exists()  # the given cache folder, not the run folder's
