"""Protocol-aware training defaults: which source gives k and every other value, and the lines that say so."""

from __future__ import annotations

import json

import pytest

from mma.adapters.config import TrainConfig
from mma.adapters.methods import get_method
from mma.adapters.mma import MultiModalAdapter
from mma.adapters.recipes import RECIPES, MethodValues, Recipe, Settings, default_precision, get_recipe, settle
from mma.app.jobs.train_selected import TrainSelectedConfig, resolve_settings
from mma.errors import MmaError


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """An empty working directory: no runs/probe unless a test writes one."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _probe_run(folder, k: int, model: str = "mma-tiny:random"):
    folder.mkdir(parents=True)
    record = {"selections": [{"model": model, "k": k, "rule": "saturation"}]}
    (folder / "selection.json").write_text(json.dumps(record))
    return folder


def _resolve(device_type: str = "cpu", datasets=(), **kw):
    kw.setdefault("model", "mma-tiny:random")
    return resolve_settings(TrainSelectedConfig(**kw), device_type=device_type, datasets=datasets)


# -- the recipes themselves ---------------------------------------------------------------------------------


def _tuned(method: str) -> dict:
    """The values mma tune chose for *method* on the embedded default (adapters/tuned/)."""
    from mma.adapters.recipes import tuned_records

    return tuned_records()[method][1][method]


def test_the_paper_recipe_carries_the_published_settings():
    paper = RECIPES["paper"]
    assert paper.k_for("base2novel") == (5, "protocol default (paper, base2novel)")
    assert paper.k_for("cross-dataset") == (9, "protocol default (paper, cross-dataset)")
    assert paper.k_for("domain-gen") == (9, "protocol default (paper, domain-gen)")
    assert paper.k_for("few-shot") is None  # nothing published: the selection or --k decides
    assert settle(paper.layers("cross-dataset", "imagenet"))[0] == {"k": 9, "epochs": 1, "batch_size": 128}
    assert settle(paper.layers("base2novel", "imagenet"))[0] == {"k": 5, "batch_size": 128}
    assert settle(paper.layers("base2novel", "dtd"))[0] == {"k": 5}
    # the embedded recipe: the tuned values and no augmentation, and the paper's k for cross-dataset and domain-gen
    tiny = RECIPES["mma-tiny"]
    mine = tiny.values_for(MultiModalAdapter)
    assert dict(mine.values) == {**_tuned("mma"), "augment": False}
    assert tiny.k_for("cross-dataset") == (9, "protocol default (mma-tiny, cross-dataset)")
    assert settle(tiny.layers("domain-gen", "objects"))[0] == {**mine.values, "k": 9}
    assert tiny.k_for("base2novel") is None and tiny.k_for("few-shot") is None
    assert get_recipe("auto", "mma-tiny:random").name == "mma-tiny"
    assert get_recipe("auto", "ViT-B-16-quickgelu:openai").name == "paper"
    with pytest.raises(MmaError, match="--recipe 'fast' is not valid"):
        get_recipe("fast", "mma-tiny")


def test_a_recipe_takes_protocol_entries_but_no_per_dataset_k():
    recipe = Recipe(
        "mine", {"mma": MethodValues(values={"epochs": 3}, protocols={"domain-gen": {"k": 2, "epochs": 1}})}
    )
    assert recipe.layers("domain-gen") == [
        ("recipe mine", {"epochs": 3}),
        ("protocol default (mine, domain-gen)", {"k": 2, "epochs": 1}),
    ]
    assert settle(recipe.layers("base2novel")) == ({"epochs": 3}, {"epochs": "recipe mine"})
    with pytest.raises(ValueError, match="k cannot differ per dataset"):
        MethodValues(datasets={"imagenet": {"k": 3}})


def test_mixed_precision_is_the_default_on_cuda_only():
    assert default_precision("cuda") == ("fp16", "device default (cuda: fp16 AMP, as the official config)")
    assert default_precision("cpu") == ("fp32", "device default (cpu)")


# -- k: which source wins ----------------------------------------------------------------------------------


def test_cross_dataset_defaults_to_the_published_k_epochs_and_imagenet_batch(cwd):
    r = _resolve(protocol="cross-dataset", recipe="paper", datasets=["imagenet"])
    s = r.settings
    assert (s.values["k"], s.values["epochs"], s.values["batch_size"]) == (9, 1, 16)
    assert s.sources["k"] == s.sources["epochs"] == "protocol default (paper, cross-dataset)"
    values, sources = s.for_dataset("imagenet")
    assert (values["k"], values["epochs"], values["batch_size"]) == (9, 1, 128)
    assert sources["batch_size"] == "dataset default (paper, imagenet)"
    assert s.sources["lr"] == "paper default" and s.values["lr"] == TrainConfig().lr
    assert r.k_line == "k = 9 from the protocol default (paper, cross-dataset)."
    line = s.line()
    assert line.startswith("Recipe paper, cross-dataset: protocol default (paper, cross-dataset): k=9, epochs=1;")
    assert "on imagenet, dataset default (paper, imagenet): batch_size=128" in line
    assert "paper default: dim=32, alpha=0.001" in line and "device default (cpu): precision=fp32" in line
    assert sorted(s.values) == sorted(MultiModalAdapter.uses)  # every value MMA reads is named


def test_the_protocol_default_wins_over_the_default_probe_run_and_says_so(cwd):
    _probe_run(cwd / "runs" / "probe", k=3)
    r = _resolve(protocol="domain-gen", recipe="paper")
    assert r.settings.values["k"] == 9
    assert r.k_line == (
        "k = 9 from the protocol default (paper, domain-gen); it wins over k = 3 (probe selection (default run "
        "runs/probe/selection.json, rule saturation)) (pass --run runs/probe to train at the selected k)."
    )


def test_the_embedded_default_takes_the_probe_k_for_base2novel_and_the_recipes_k_for_transfer(cwd):
    _probe_run(cwd / "runs" / "probe", k=3, model="mma-tiny")
    for protocol in ("base2novel", "few-shot"):
        r = _resolve(model=None, protocol=protocol)  # `mma train-selected --protocol P`, nothing else
        assert (r.model, r.recipe.name, r.settings.values["k"]) == ("mma-tiny", "mma-tiny", 3)
        assert r.settings.sources["k"].startswith("probe selection (default run runs/probe/selection.json")
        assert r.k_line.startswith("k = 3 from the probe selection (default run")
    for protocol in ("cross-dataset", "domain-gen"):
        r = _resolve(model=None, protocol=protocol)
        assert (r.settings.values["k"], r.settings.values["epochs"]) == (9, _tuned("mma")["epochs"])
        assert r.settings.sources["k"] == f"protocol default (mma-tiny, {protocol})"
        assert r.k_line.startswith(f"k = 9 from the protocol default (mma-tiny, {protocol}); it wins over k = 3")


def test_a_named_probe_run_wins_over_the_protocol_default_and_the_user_flag_over_both(cwd):
    run = _probe_run(cwd / "probe-x", k=4)
    r = _resolve(protocol="cross-dataset", recipe="paper", run=run)
    assert r.settings.values["k"] == 4 and r.settings.values["epochs"] == 1  # only k is the selection's
    assert r.k_line.startswith(f"k = 4 from the probe selection ({run}/selection.json, rule saturation); it wins ")
    assert "k = 9 (protocol default (paper, cross-dataset))" in r.k_line
    r = _resolve(protocol="cross-dataset", recipe="paper", run=run, k=6)
    assert r.settings.values["k"] == 6 and r.settings.sources["k"] == "user flag"
    assert r.k_line.startswith("k = 6 from the user flag; it wins over k = 4 (probe selection (")


def test_a_config_file_sits_between_the_named_run_and_the_recipe(cwd):
    config = cwd / "train.toml"
    config.write_text("k = 7\nepochs = 2\nprecision = 'auto'\n")
    r = _resolve(protocol="cross-dataset", recipe="paper", config=config)
    assert (r.settings.values["k"], r.settings.values["epochs"]) == (7, 2)
    assert r.settings.sources["k"] == f"config file ({config})"
    assert r.settings.sources["precision"] == "device default (cpu)"  # 'auto' = the default
    r = _resolve(protocol="cross-dataset", recipe="paper", config=config, run=_probe_run(cwd / "p", k=4))
    assert r.settings.values["k"] == 4 and r.settings.values["epochs"] == 2
    r = _resolve(protocol="cross-dataset", recipe="paper", config=config, train={"epochs": 3})
    assert r.settings.values["epochs"] == 3 and r.settings.sources["epochs"] == "user flag"


def test_user_values_win_on_imagenet_too(cwd):
    r = _resolve(protocol="cross-dataset", recipe="paper", datasets=["imagenet"], train={"batch_size": 32})
    values, sources = r.settings.for_dataset("imagenet")
    assert values["batch_size"] == 32 and sources["batch_size"] == "user flag"
    assert r.settings.per_dataset == {}  # nothing differs on imagenet any more


def test_precision_defaults_to_fp16_amp_on_cuda_and_fp32_is_one_flag_away(cwd):
    r = _resolve("cuda", protocol="base2novel", recipe="paper")
    assert r.settings.values["precision"] == "fp16"
    assert r.settings.sources["precision"] == "device default (cuda: fp16 AMP, as the official config)"
    r = _resolve("cuda", protocol="base2novel", recipe="paper", train={"precision": "fp32"})
    assert (r.settings.values["precision"], r.settings.sources["precision"]) == ("fp32", "user flag")
    r = _resolve("cuda", protocol="base2novel", recipe="paper", train={"precision": "auto"})
    assert r.settings.values["precision"] == "fp16"
    assert _resolve("cpu", protocol="base2novel", recipe="paper").settings.values["precision"] == "fp32"


def test_no_source_of_k_is_one_sentence(cwd):
    with pytest.raises(MmaError, match=r"No k was given: recipe 'mma-tiny' has no k for --protocol few-shot and "):
        _resolve(protocol="few-shot")
    with pytest.raises(MmaError, match=r"recipe 'paper' has no k for --protocol few-shot and there is no "):
        _resolve(protocol="few-shot", recipe="paper")
    _probe_run(cwd / "runs" / "probe", k=3, model="ViT-B-16")
    with pytest.raises(MmaError, match=r"has no selection for model 'mma-tiny:random'.*pass --k"):
        _resolve(protocol="few-shot", recipe="paper")
    with pytest.raises(MmaError, match=r"The training option epochs=0 is not valid"):
        _resolve(protocol="cross-dataset", recipe="paper", train={"epochs": 0})
    with pytest.raises(MmaError, match=r"--protocol 'xd' is not valid"):
        _resolve(protocol="xd", recipe="paper")


def test_settings_record_and_line_name_every_value_and_its_source():
    s = Settings(
        "paper",
        "domain-gen",
        {"k": 9, "epochs": 1, "flip": True, "alpha_eval": None},
        {"k": "user flag", "epochs": "protocol default (paper, domain-gen)", "flip": "paper default"}
        | {"alpha_eval": "paper default"},
        {"imagenet": {"batch_size": (128, "dataset default (paper, imagenet)")}},
    )
    assert s.line() == (
        "Recipe paper, domain-gen: user flag: k=9; protocol default (paper, domain-gen): epochs=1; paper default: "
        "flip=true, alpha_eval=none; on imagenet, dataset default (paper, imagenet): batch_size=128."
    )
    record = s.record()
    assert record["per_dataset"] == {
        "imagenet": {"batch_size": {"value": 128, "source": "dataset default (paper, imagenet)"}}
    }
    assert record["sources"]["k"] == "user flag" and record["values"]["epochs"] == 1


def test_every_embedded_recipe_is_its_tuning_searchs_winner_on_validation_data():
    """``mma-tiny``'s values of every method are the best-scored candidate of its ``mma tune`` record, a search of
    the same budget and seeds for every method that read no test image and no novel class."""
    from mma.adapters.recipes import tuned_records
    from mma.adapters.search import candidates
    from mma.app.jobs.tune import READ

    records = tuned_records()
    assert set(records) == {"mma", "coop", "cocoop", "clip-adapter"}
    budgets = {
        (r["search"]["budget"], tuple(r["search"]["seeds"]), r["search"]["search_seed"]) for _, r in records.values()
    }
    assert len(budgets) == 1, f"the methods were tuned with different budgets: {budgets}"
    for name, (_, record) in records.items():
        search = record["search"]
        method = get_method(name)
        assert search["method"] == name and search["read"] == READ and search["protocol"] == "base2novel"
        assert search["metric"] == "hm"
        tried = search["candidates"]
        # the candidates are the published point and the draw mma.adapters.search makes, in order
        assert [c["values"] for c in tried] == candidates(method, search["budget"], search["base"], seed=0)
        assert tried[0]["published"] and not any(c["published"] for c in tried[1:])
        best = max(tried, key=lambda c: (c["score"], -c["index"]))
        assert record[name] == best["values"] and search["chosen"] == best["index"]
        values = RECIPES["mma-tiny"].values_for(method).values
        assert {k: values[k] for k in best["values"]} == best["values"] and values["augment"] is False
    assert records["mma"][1]["search"]["base"]["k"] == MultiModalAdapter.paper_protocols["base2novel"]["k"]


def test_the_embedded_transfer_protocols_take_the_papers_k_with_the_tuned_values():
    tuned = RECIPES["mma-tiny"].values_for(MultiModalAdapter)
    for protocol in ("cross-dataset", "domain-gen"):
        assert tuned.protocols[protocol] == {"k": MultiModalAdapter.paper_protocols[protocol]["k"]}


def test_the_released_recipe_runs_every_protocol_at_the_released_config_and_says_where_values_come_from(cwd):
    """The released MMA code ships only the base-to-novel configs: --recipe released runs cross-dataset and
    domain-gen at them (k 5, 5 epochs); --recipe paper takes k 9 and one epoch from the paper's text. Every value's
    official file is recorded with the settings."""
    released = _resolve(protocol="cross-dataset", recipe="released", datasets=["imagenet"]).settings
    assert (released.values["k"], released.values["epochs"]) == (5, 5)
    assert released.for_dataset("imagenet")[0]["batch_size"] == 128
    assert released.provenance["protocol default (released, cross-dataset)"].endswith("vit_b16_ep5.yaml")
    paper = _resolve(protocol="cross-dataset", recipe="paper", datasets=["imagenet"]).settings
    assert "paper's text" in paper.provenance["protocol default (paper, cross-dataset)"]
    assert paper.provenance["paper default"].endswith("vit_b16_ep5.yaml")
    assert paper.provenance["dataset default (paper, imagenet)"].endswith("vit_b16_ep5_imnet.yaml")
    assert "From: paper default = MMA configs/trainers/MultiModalAdapter/vit_b16_ep5.yaml" in paper.line()
    assert paper.record()["provenance"] == paper.provenance
    coop = _resolve(protocol="base2novel", recipe="paper", methods=["coop"]).method_settings["coop"]
    assert (coop.values["n_ctx"], coop.values["ctx_init"]) == (4, "a photo of a")
    assert "vit_b16_ctxv1.yaml" in coop.provenance["protocol default (paper, base2novel) (coop)"]
    few = _resolve(protocol="few-shot", recipe="paper", methods=["coop"]).method_settings["coop"]
    assert (few.values["n_ctx"], few.values["ctx_init"]) == (16, "")
