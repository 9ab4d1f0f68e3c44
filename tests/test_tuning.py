"""``mma tune``: every method's candidates, the tuning tasks that read no test image and no novel class, the job."""

from __future__ import annotations

import json

import pytest
from test_train import colour_data  # noqa: F401  (a module fixture: four colour classes in a folder)

from mma.adapters.methods import BUILT_IN, get_method
from mma.adapters.protocols import get_protocol, make_tasks, tuning_tasks
from mma.adapters.search import candidates, flatten, space_size
from mma.app.jobs.train_selected import TrainSelectedConfig, resolve_settings
from mma.app.jobs.tune import READ, TuneConfig, tune
from mma.errors import MmaError
from mma.probe.data import ImageDataset, Sample, split_base_novel

SEARCHED = [m for m in BUILT_IN if m.search_space]


def _published_point(method) -> dict:
    return {**method.published_values(), **method.paper_protocols.get("base2novel", {})}


@pytest.mark.parametrize("method", SEARCHED, ids=lambda m: m.name)
def test_candidates_are_the_published_point_then_distinct_draws_from_the_space(method):
    base = _published_point(method)
    tried = candidates(method, 8, base)
    fields = set(tried[0])
    assert tried[0] == {f: base[f] for f in fields}  # the published values first
    assert len(tried) == min(8, space_size(method)) and all(set(c) == fields for c in tried)
    grid = {json.dumps(flatten(dict(zip(method.search_space, p))), sort_keys=True) for p in _product(method)}
    assert all(json.dumps(c, sort_keys=True) in grid for c in tried[1:])
    assert len({json.dumps(c, sort_keys=True) for c in tried}) == len(tried)
    assert tried == candidates(method, 8, base)  # deterministic
    assert candidates(method, 8, base, seed=1) != tried
    assert candidates(method, 1, base) == tried[:1]
    # a draw of the whole grid does not come back in grid order (a search of the first few points)
    whole = candidates(method, space_size(method), base)
    assert len(whole) == space_size(method)


def _product(method):
    import itertools

    return itertools.product(*method.search_space.values())


def test_grouped_options_stay_together_and_a_method_without_a_space_has_one_candidate():
    coop = get_method("coop")
    for c in candidates(coop, 20, _published_point(coop)):
        assert (c["n_ctx"] == 4) == (c["ctx_init"] == "a photo of a")
    probe = get_method("linear-probe")
    assert candidates(probe, 8, probe.published_values()) == [{}]
    with pytest.raises(MmaError, match="--budget 0 is not valid"):
        candidates(coop, 0, {})


def _labelled(n_classes: int) -> ImageDataset:
    splits = {
        split: [Sample(f"{split}/{y}/{i}", y) for y in range(n_classes) for i in range(count)]
        for split, count in (("train", 6), ("val", 3), ("test", 4))
    }
    return ImageDataset("d", [f"class {i}" for i in range(n_classes)], splits, loader=lambda ref: None)


def test_base_to_novel_tuning_splits_the_base_classes_again_and_reads_only_their_train_and_val_images():
    d = _labelled(10)
    base, novel = split_base_novel(10)
    (task,) = tuning_tasks("base2novel", [d], shots=2, seed=1)
    pseudo_base, pseudo_novel = (base[:3], base[3:])  # the base half of 10 is 5: 3 pseudo-base, 2 pseudo-novel
    refs = [s.ref for s in task.train] + [s.ref for e in task.evals for s in e.samples] + [s.ref for s in task.val]
    assert all(r.split("/")[0] in ("train", "val") for r in refs)  # no test image
    assert {int(r.split("/")[1]) for r in refs} == set(base)  # no novel class
    assert {int(s.ref.split("/")[1]) for s in task.train} == set(pseudo_base)
    evals = {e.name: e for e in task.evals}
    assert {int(s.ref.split("/")[1]) for s in evals["novel"].samples} == set(pseudo_novel)
    assert all(s.ref.startswith("val/") for e in task.evals for s in e.samples)
    assert evals["novel"].classnames == [d.classnames[i] for i in pseudo_novel]
    assert not set(evals["novel"].classnames) & set(task.classnames)
    # the same few-shot draw the real task trains on, restricted to the pseudo-base classes
    (real,) = make_tasks("base2novel", [d], shots=2, seed=1)
    assert [s.ref for s in task.train] == [s.ref for s in real.train if int(s.ref.split("/")[1]) in pseudo_base]
    # a dataset with fewer than 4 base classes cannot be split again
    with pytest.raises(MmaError, match="No dataset can be tuned on under base2novel"):
        tuning_tasks("base2novel", [_labelled(6)], shots=2, seed=1)


def test_transfer_tuning_reads_the_sources_validation_images_only():
    source, target = _labelled(4), _labelled(4)
    target.name = "target"
    for protocol in ("cross-dataset", "domain-gen", "few-shot"):
        tasks = tuning_tasks(protocol, [source, target], shots=2, seed=1)
        if not get_protocol(protocol).per_dataset:
            assert [t.name for t in tasks] == ["d"]
        for t in tasks:
            assert all(s.ref.startswith("val/") for e in t.evals for s in e.samples)
            assert [e.dataset.name for e in t.evals] == [t.name]
    assert get_protocol("cross-dataset").tuning_metric == "source"
    assert get_protocol("base2novel").tuning_metric == "hm"


FAST = {"epochs": 1, "shots": 2, "batch_size": 4, "augment": False}


def test_tune_writes_a_recipe_train_selected_accepts_reads_no_test_image_and_resumes(
    tmp_path,
    monkeypatch,
    colour_data,  # noqa: F811
):
    import mma.app.jobs.tune as job

    (tmp_path / "fast.json").write_text(json.dumps(FAST))
    read: list[str] = []
    loader = colour_data.loader
    monkeypatch.setattr(colour_data, "loader", lambda ref: read.append(ref) or loader(ref))
    monkeypatch.setattr(job, "load_datasets", lambda text: [colour_data])  # the instrumented dataset
    cfg = TuneConfig(
        method="clip-adapter", data=["folder:x"], protocol="few-shot", budget=3, seeds=[1],
        out=tmp_path / "tune", model="mma-tiny:random", config=tmp_path / "fast.json", progress=False,
    )  # fmt: skip
    recipe = tune(cfg)
    assert read and not [r for r in read if r.split("/")[0] == "test"]
    search = recipe["search"]
    assert search["read"] == READ and search["budget"] == 3 and len(search["candidates"]) == 3
    assert search["candidates"][0]["published"] and search["base"]["epochs"] == 1
    best = max(search["candidates"], key=lambda c: (c["score"], -c["index"]))
    assert recipe["clip-adapter"] == best["values"] and search["chosen"] == best["index"]
    assert json.loads((tmp_path / "tune" / "recipe.json").read_text())["clip-adapter"] == best["values"]
    # resuming: every candidate is read back, none trains again
    monkeypatch.setattr(job, "fit_method", _refuse)
    assert tune(cfg)["clip-adapter"] == recipe["clip-adapter"]
    # train-selected --config recipe.json: the chosen values, for that method alone
    resolved = resolve_settings(
        TrainSelectedConfig(
            model="mma-tiny:random", k=3, config=tmp_path / "tune" / "recipe.json", methods=["mma", "clip-adapter"]
        ),
        device_type="cpu",
    )
    chosen = resolved.method_settings["clip-adapter"]
    for name, value in recipe["clip-adapter"].items():
        assert chosen.values[name] == value and chosen.sources[name].startswith("config file")
    assert "config file" not in " ".join(resolved.method_settings["mma"].sources.values())


def _refuse(*args, **kwargs):
    raise AssertionError("a finished candidate was trained again")


def test_tune_refuses_what_it_cannot_tune(tmp_path):
    with pytest.raises(MmaError, match="trains nothing"):
        tune(TuneConfig(method="zeroshot", out=tmp_path / "t", progress=False))
    with pytest.raises(MmaError, match="--seeds"):
        tune(TuneConfig(method="mma", seeds=[1, 1], out=tmp_path / "t", progress=False))
    assert not (tmp_path / "t").exists()


def test_mma_tune_on_the_command_line(run_cli, tmp_path, colour_data):  # noqa: F811
    (tmp_path / "fast.json").write_text(json.dumps(FAST))
    root = colour_data.source.split(":", 1)[1]
    result = run_cli(
        ["tune", "--method", "coop", "--data", f"folder:{root}", "--protocol", "few-shot", "--budget", "2",
         "--model", "mma-tiny:random", "--config", str(tmp_path / "fast.json"), "--out", str(tmp_path / "t")]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "<- chosen" in result.stdout and (tmp_path / "t" / "recipe.json").is_file()
    from typer.testing import CliRunner

    from mma.app.cli import app

    bad = CliRunner().invoke(app, ["tune", "--method", "nope", "--out", str(tmp_path / "u")])
    assert bad.exit_code != 0 and "--method 'nope' is not valid" in bad.output
    assert not (tmp_path / "u").exists()


def test_a_search_rerun_with_other_settings_does_not_reuse_the_candidates(tmp_path, monkeypatch, colour_data):  # noqa: F811
    import mma.app.jobs.tune as job

    monkeypatch.setattr(job, "load_datasets", lambda text: [colour_data])
    (tmp_path / "fast.json").write_text(json.dumps(FAST))
    cfg = TuneConfig(
        method="clip-adapter", data=["folder:x"], protocol="few-shot", budget=1, seeds=[1],
        out=tmp_path / "tune", model="mma-tiny:random", config=tmp_path / "fast.json", progress=False,
    )  # fmt: skip
    tune(cfg)
    (tmp_path / "fast.json").write_text(json.dumps({**FAST, "batch_size": 2}))  # another base: trains again
    trained = []
    monkeypatch.setattr(job, "fit_method", lambda *a, **k: trained.append(1) or original(*a, **k))
    again = tune(cfg)
    assert trained and again["search"]["base"]["batch_size"] == 2


from mma.adapters.train import fit_method as original  # noqa: E402
