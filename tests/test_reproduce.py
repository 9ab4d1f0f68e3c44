"""mma reproduce on a fake CoOp tree with a random-weight mma-tiny, and the tables it writes beside the papers'.

The tree (the generators of test_coop.py) holds ImageNet (5 classes), ImageNetV2, ImageNet-Sketch, EuroSAT and
DTD (4 classes each, so base-to-novel keeps them); the other 10 CoOp datasets are missing.
"""

from __future__ import annotations

import csv
import json
import math
import re

import pandas as pd
import pytest
from conftest import patch_everywhere
from test_coop import WNIDS, FakeCoop, write_image
from typer.testing import CliRunner

from mma.analysis.compare import ZERO_SHOT_TOLERANCE, compare, side_by_side, verdicts
from mma.analysis.published import published_numbers
from mma.app.cli import app
from mma.app.jobs.reproduce import ReproduceConfig, protocol_plans, reproduce
from mma.app.results import comparison_setup
from mma.errors import MmaError
from mma.io import read_json

MODEL = "mma-tiny:random"
SETUP = comparison_setup()
FOUR = {
    "eurosat": ("eurosat", "2750", "EuroSAT", ["AnnualCrop", "Forest", "Herbaceous_Vegetation", "Highway"]),
    "dtd": ("dtd", "images", "DescribableTextures", ["banded", "blotchy", "braided", "bubbly"]),
}
PRESENT = {"imagenet", "imagenetv2", "imagenet_sketch", "eurosat", "dtd"}
MISSING = [
    "caltech101",
    "oxford_pets",
    "stanford_cars",
    "oxford_flowers",
    "food101",
    "fgvc_aircraft",
    "sun397",
    "ucf101",
    "imagenet_a",
    "imagenet_r",
]


def _four_class_zhou(root, name: str) -> None:
    folder, images, stem, classes = FOUR[name]
    split = {s: [] for s in ("train", "val", "test")}
    for label, cls in enumerate(classes):
        for s, n in (("train", 2), ("val", 1), ("test", 2)):
            for i in range(n):
                ref = f"{cls}/{cls}_{s}_{i}.jpg"
                write_image(root / folder / images / ref)
                split[s].append([ref, label, cls])
    (root / folder / f"split_zhou_{stem}.json").write_text(json.dumps(split))


@pytest.fixture(scope="module")
def coop_root(tmp_path_factory):
    fake = FakeCoop(tmp_path_factory.mktemp("coop") / "data")
    fake.imagenet()
    fake.imagenetv2()
    fake.wnid_folders("imagenet-sketch", "images", WNIDS)
    for name in FOUR:
        _four_class_zhou(fake.root, name)
    return fake.root


def _config(root, out, **kw) -> ReproduceConfig:
    kw.setdefault("seeds", [1, 2])
    return ReproduceConfig(data=f"coop:{root}", model=MODEL, out=out, device="cpu", progress=False, **kw)


@pytest.fixture(scope="module")
def reproduced(coop_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    return reproduce(_config(coop_root, out))


def _published_cells() -> dict:
    """The packaged CSV read with the csv module: (protocol, method, dataset, metric) -> (value, source)."""
    from importlib import resources

    with resources.files("mma.analysis").joinpath("published_numbers.csv").open(encoding="utf-8") as f:
        return {
            (r["protocol"], r["method"], r["dataset"], r["metric"]): (r["value"], r["source"])
            for r in csv.DictReader(f)
        }


# -- the whole job ---------------------------------------------------------------------------------------------


def test_reproduce_runs_every_protocol_on_what_is_there_and_lists_what_is_not(reproduced):
    run = reproduced
    assert list(run.skipped) == MISSING and all("not found under" in why for why in run.skipped.values())
    assert run.skipped_protocols == {}
    assert set(run.runs) == {"base2novel", "cross-dataset", "domain-gen"}
    c = run.comparison
    assert set(c.loc[c["protocol"] == "base2novel", "dataset"]) == {"imagenet", "eurosat", "dtd", "average"}
    assert set(c.loc[c["protocol"] == "cross-dataset", "dataset"]) == {"imagenet", "eurosat", "dtd", "average"}
    assert set(c.loc[c["protocol"] == "domain-gen", "dataset"]) == {"imagenet", "imagenetv2", "imagenet_sketch"} | {
        "average"
    }
    assert set(c["method"]) == {"mma", "zeroshot"} and set(c["published_method"]) == {"MMA", "CLIP"}
    for name in ("comparison.csv", "comparison.md", "reproduce.json"):
        assert (run.out / name).is_file()
    assert pd.read_csv(run.out / "comparison.csv").shape == c.shape
    record = json.loads((run.out / "reproduce.json").read_text())
    assert record["skipped_datasets"].keys() == set(MISSING) and len(record["verdicts"]) == 6
    assert record["plans"]["cross-dataset"] == ["imagenet", "dtd", "eurosat"]  # CoOp order, the source first
    text = (run.out / "comparison.md").read_text()
    assert "## base2novel" in text and "## domain-gen" in text and "| recalled |" in text
    assert "Skipped (missing under ROOT): caltech101, oxford_pets," in text
    assert "k = 9 from the protocol default (paper, cross-dataset)." in text


def test_the_published_column_is_the_packaged_csv_exactly(reproduced):
    cells = _published_cells()
    c = reproduced.comparison
    direct = c[c["published_source"].isin(["recalled", "readme"])]
    assert len(direct) >= 3 * 3 * 2 + 3 + 3  # b2n 3 datasets x 3 metrics x 2 methods, XD and DG cells
    for r in direct.itertuples():
        metric = r.metric
        value, source = cells[(r.protocol, r.published_method, r.dataset, metric)]
        assert r.published == float(value) and r.published_source == source
    # an average over fewer datasets than the paper's is the mean of the same published cells, marked derived
    avg = c[(c["protocol"] == "base2novel") & (c["method"] == "mma") & (c["dataset"] == "average")]
    base = avg.set_index("metric")
    expected = sum(float(cells[("base2novel", "MMA", d, "base")][0]) for d in ("imagenet", "eurosat", "dtd")) / 3
    assert base.loc["base", "published"] == pytest.approx(expected)
    assert base.loc["base", "published_source"] == "derived from recalled (3 of 11)"
    # cross-dataset zero-shot has no published numbers: blank, not invented
    zs = c[(c["protocol"] == "cross-dataset") & (c["method"] == "zeroshot")]
    assert zs["published"].isna().all() and (zs["published_source"] == "").all()


def test_measured_values_are_the_runs_results(reproduced):
    c = reproduced.comparison.set_index(["protocol", "method", "dataset", "metric"])
    for protocol, run in reproduced.runs.items():
        r = run.results
        mma = r[(r["method"] == "mma") & (r["protocol"] == protocol)]
        if protocol == "base2novel":
            b = mma[(mma["dataset"] == "dtd") & (mma["metric"] == "base")]["value"]
            assert c.loc[(protocol, "mma", "dtd", "base"), "measured"] == pytest.approx(b.mean())
            assert c.loc[(protocol, "mma", "dtd", "base"), "seeds"] == 2
        else:
            t = mma[mma["metric"] == "target_average"]["value"]
            assert c.loc[(protocol, "mma", "average", "accuracy"), "measured"] == pytest.approx(t.mean())
            s = mma[mma["metric"] == "source"]["value"]
            assert c.loc[(protocol, "mma", "imagenet", "accuracy (source)"), "measured"] == pytest.approx(s.mean())


def test_each_protocol_records_its_published_settings_and_their_sources(reproduced):
    out = reproduced.out
    for protocol in ("cross-dataset", "domain-gen"):
        record = json.loads((out / protocol / "train-k9.json").read_text())
        assert record["k"] == 9 and record["k_source"] == f"protocol default (paper, {protocol})"
        assert record["train_config"]["epochs"] == 1
        assert record["train_sources"]["epochs"] == f"protocol default (paper, {protocol})"
        assert record["settings"]["per_dataset"]["imagenet"]["batch_size"] == {
            "value": 128,
            "source": "dataset default (paper, imagenet)",
        }
        result = json.loads((out / protocol / "results" / protocol / "imagenet" / "seed1-k9-mma.json").read_text())
        assert (result["train_config"]["k"], result["train_config"]["epochs"]) == (9, 1)
        assert result["train_config"]["batch_size"] == 128  # asked; 10 images, so the batches hold 10
        assert result["train_sources"]["batch_size"] == "dataset default (paper, imagenet)"
        assert result["train"]["batch_size"] == 10
    b2n = json.loads((out / "base2novel" / "train-k5.json").read_text())
    assert b2n["k_source"] == "protocol default (paper, base2novel)" and b2n["train_config"]["epochs"] == 5
    dtd = json.loads((out / "base2novel" / "results" / "base2novel" / "dtd" / "seed1-k5-mma.json").read_text())
    imagenet = json.loads(
        (out / "base2novel" / "results" / "base2novel" / "imagenet" / "seed1-k5-mma.json").read_text()
    )
    assert dtd["train_config"]["batch_size"] == 16 and imagenet["train_config"]["batch_size"] == 128


def test_an_overridden_protocol_default_is_recorded_as_overridden(coop_root, tmp_path):
    from mma.app.jobs.train_selected import TrainSelectedConfig, train_selected

    config = tmp_path / "train.json"
    config.write_text('{"epochs": 2}')
    run = train_selected(
        TrainSelectedConfig(
            model=MODEL,
            k=3,
            data=[f"coop:{coop_root}:imagenet,imagenetv2"],
            protocol="domain-gen",
            seeds=[1],
            out=tmp_path / "run",
            device="cpu",
            progress=False,
            train={"batch_size": 4},
            config=config,
        )
    )
    record = json.loads((tmp_path / "run" / "train-k3.json").read_text())
    assert run.k == 3 and record["k_source"] == "user flag"  # over the recipe's protocol k (mma-tiny: 9)
    assert record["train_sources"]["epochs"] == f"config file ({config})" and record["train_config"]["epochs"] == 2
    assert record["train_sources"]["batch_size"] == "user flag" and record["train_config"]["batch_size"] == 4
    assert record["settings"]["per_dataset"] == {}


def test_an_interrupted_reproduction_resumes_to_the_same_tables(reproduced, coop_root, tmp_path, monkeypatch):
    calls = []

    def counting(*args, **kwargs):
        calls.append(kwargs.get("seed"))
        if stop_at and len(calls) == stop_at:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    original = patch_everywhere(monkeypatch, "mma.adapters.train.fit_method", counting)
    stop_at = 8  # base-to-novel 3 datasets x 2 seeds, then cross-dataset's second seed
    with pytest.raises(KeyboardInterrupt):
        reproduce(_config(coop_root, tmp_path / "run"))
    assert not (tmp_path / "run" / "comparison.csv").exists()
    calls.clear()
    stop_at = 0
    run = reproduce(_config(coop_root, tmp_path / "run"))
    assert calls == [2]  # cross-dataset's second seed; domain-gen trains the same ImageNet adapters: reused
    dg = sorted((tmp_path / "run" / "domain-gen" / "results" / "domain-gen").rglob("seed*.json"))
    assert dg and all(read_json(p)["train"]["reused"] for p in dg)
    columns = ["protocol", "method", "dataset", "metric", "published", "measured", "measured_std", "seeds"]
    pd.testing.assert_frame_equal(run.comparison[columns], reproduced.comparison[columns])
    calls.clear()
    reproduce(_config(coop_root, tmp_path / "run"))  # a finished run is all reused
    assert calls == []


# -- the command line ---------------------------------------------------------------------------------------


def _cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_the_command_skips_a_missing_dataset_with_one_line_and_prints_the_tables(coop_root, tmp_path):
    args = ["reproduce", "--model", MODEL, "--data", f"coop:{coop_root}:eurosat,Pets,dtd", "--protocol", "base2novel"]
    code, out = _cli(*args, "--seeds", "1", "--device", "cpu", "--out", tmp_path / "run")
    assert code == 0, out
    lines = out.splitlines()
    assert [line for line in lines if line.startswith("Skipping")] == [
        f"Skipping oxford_pets: not found under {str(coop_root)!r} (expected "
        "ROOT/oxford_pets/images/ + oxford_pets/split_zhou_OxfordPets.json)."
    ]
    assert lines.count("Skipped (missing under ROOT): oxford_pets.") == 1  # listed again at the end
    assert "k = 5 from the protocol default (paper, base2novel)." in lines
    assert any(
        line.startswith("Recipe paper, base2novel: protocol default (paper, base2novel): k=5;") for line in lines
    )
    assert "base2novel: measured beside published (Δ = measured - published)" in out
    assert "recalled" in out and "derived from recalled (2 of 11)" in out
    assert "base2novel, MMA: one seed, so seed noise is unknown" in out
    assert "cross-dataset" not in out  # only the protocol asked for


@pytest.mark.parametrize(
    "args,message",
    [
        (["--data", "builtin"], "is not a CoOp data spec; mma reproduce runs the paper's protocols"),
        (["--data", "coop:/no/such/root"], "The CoOp data root '/no/such/root' does not exist"),
        (["--data", "coop:ROOT", "--protocol", "few-shot"], "--protocol 'few-shot' is not one mma reproduce runs"),
        (["--data", "coop:ROOT", "--protocol", "base2novel,fewshot"], "--protocol 'fewshot' is not one"),
        (["--data", "coop:ROOT:pets,cars"], "Nothing to reproduce under"),
        (["--data", "coop:ROOT:eurosat", "--protocol", "cross-dataset"], "it trains on imagenet, which is not in"),
        (["--data", "coop:ROOT:nosuch"], "Unknown CoOp dataset 'nosuch'"),
        (["--data", "coop:ROOT", "--seeds", "1,1"], "repeats a seed"),
    ],
)
def test_bad_input_is_one_sentence_and_leaves_nothing(coop_root, tmp_path, args, message):
    args = [a.replace("ROOT", str(coop_root)) for a in args]
    code, out = _cli("reproduce", "--model", MODEL, *args, "--device", "cpu", "--out", tmp_path / "run")
    assert code == 2 and out.startswith("Error: ") and out.count("\n") == 1, out
    assert message in out
    assert not (tmp_path / "run").exists()


def test_a_run_folder_of_another_model_is_refused(reproduced, coop_root):
    with pytest.raises(MmaError, match=r"holds a reproduction of model 'mma-tiny:random', not 'mma-tiny'"):
        reproduce(ReproduceConfig(data=f"coop:{coop_root}", model="mma-tiny", out=reproduced.out, progress=False))


def test_protocol_plans_need_imagenet_and_a_target():
    plans, skipped = protocol_plans(["base2novel", "cross-dataset", "domain-gen"], ["imagenet", "dtd"], None)
    assert plans == {"base2novel": ["imagenet", "dtd"], "cross-dataset": ["imagenet", "dtd"]}
    assert skipped == {
        "domain-gen": "none of its targets (imagenetv2, imagenet_sketch, imagenet_a, imagenet_r) is there"
    }
    plans, skipped = protocol_plans(["cross-dataset"], ["dtd", "eurosat"], None)
    assert plans == {} and skipped == {"cross-dataset": "it trains on imagenet, which is not found"}


# -- torchrun ------------------------------------------------------------------------------------------------


def test_reproduce_runs_unchanged_under_torchrun(coop_root, tmp_path, one_and_two_ranks):
    """2 gloo ranks give the tables one process gives (augmentation off: the same adapter up to rounding)."""
    args = ["reproduce", "--model", MODEL, "--data", f"coop:{coop_root}:imagenet,imagenetv2", "--protocol"]
    args += ["domain-gen", "--seeds", "1", "--device", "cpu"]
    tables = one_and_two_ranks(args, tmp_path, "comparison.csv", "domain-gen: measured beside published")
    pd.testing.assert_frame_equal(tables[0], tables[1])


# -- the conventions ----------------------------------------------------------------------------------------


def _results(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["protocol", "dataset", "seed", "k", "method", "metric", "value"])


def _hm(b, n):
    return 2 * b * n / (b + n)


def test_hm_of_seed_means_by_hand_in_summaries_and_comparisons(tmp_path):
    """Two datasets, two seeds. By hand: A: base (80+70)/2 = 75, novel (60+50)/2 = 55, HM 2*75*55/130 = 63.4615;
    per-seed HMs 68.5714 and 58.3333 (mean 63.4524). B: base 75, novel 50, HM 60.0; per-seed HMs 45.0 and 64.6154
    (mean 54.8077). Average: base 75, novel 52.5, HM 2*75*52.5/127.5 = 61.7647; mean of per-dataset HMs 61.7308."""
    from mma.app.jobs.train_selected import summarise_results

    per_seed = {("A", 1): (80, 60), ("A", 2): (70, 50), ("B", 1): (90, 30), ("B", 2): (60, 70)}
    for (dataset, seed), (b, n) in per_seed.items():
        path = tmp_path / "results" / "base2novel" / dataset / f"seed{seed}-k5-mma.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"protocol": "base2novel", "dataset": dataset, "seed": seed, "k": 5, "method": "mma"}
        path.write_text(json.dumps(record | {"metrics": {"base": b, "novel": n, "hm": _hm(b, n)}}))
    results, summary = summarise_results(tmp_path)
    s = summary.set_index(["dataset", "metric"])["mean"]
    assert s["A", "hm"] == pytest.approx(63.4615, abs=1e-4)
    assert s["A", "mean_of_seed_hms"] == pytest.approx(63.4524, abs=1e-4)
    assert s["B", "hm"] == pytest.approx(60.0) and s["B", "mean_of_seed_hms"] == pytest.approx(54.8077, abs=1e-4)
    assert s["average", "hm"] == pytest.approx(61.7647, abs=1e-4)
    assert s["average", "mean_of_hms"] == pytest.approx(61.7308, abs=1e-4)
    std = summary.set_index(["dataset", "metric"])["std"]
    assert std["A", "hm"] == pytest.approx(pd.Series([68.5714, 58.3333]).std(), abs=1e-3)  # spread of per-seed HMs
    c = compare(results, SETUP).set_index(["dataset", "metric"])
    assert c.loc[("A", "hm"), "measured"] == pytest.approx(63.4615, abs=1e-4)
    assert c.loc[("average", "hm"), "measured"] == pytest.approx(61.7647, abs=1e-4)
    from mma.app.results import summary_table

    table = summary_table(summary)
    assert list(table.columns) == [
        "method",
        "k",
        "dataset",
        "base",
        "novel",
        "hm",
        "mean_of_seed_hms",
        "mean_of_hms",
        "hm vs zero-shot",
    ]
    assert table.set_index("dataset").loc["A", "hm"] == "63.5 ± 7.2"


def _at_published(method: str, shift: dict | None = None, seeds=(1, 2, 3), wobble: float = 0.4) -> pd.DataFrame:
    """Base-to-novel results at the published per-dataset values, +-wobble between seeds, some datasets shifted."""
    p = published_numbers()
    p = p[(p["protocol"] == "base2novel") & (p["method"] == SETUP.published_name(method)) & (p["dataset"] != "average")]
    rows = []
    for r in p[p["metric"] != "hm"].itertuples():
        for i, seed in enumerate(seeds):
            value = r.value + wobble * (i - 1) + (shift or {}).get(r.dataset, 0.0)
            baseline = method == SETUP.baseline  # the baseline has no seed
            rows.append(("base2novel", r.dataset, None if baseline else seed, 5, method, r.metric, value))
            if baseline:
                break
    return _results(rows)


def test_averages_within_seed_noise_say_so_and_outside_name_the_datasets():
    (inside,) = verdicts(compare(_at_published("mma"), SETUP), SETUP)
    assert inside.within is True and inside.text.startswith("base2novel, MMA: the averages lie within seed noise")
    c = compare(_at_published("mma"), SETUP)
    avg = c[c["dataset"] == "average"].set_index("metric")
    assert avg.loc["hm", "published"] == 79.87 and avg.loc["hm", "published_source"] == "readme"
    band = 2 * avg.loc["hm", "measured_std"] * math.sqrt(1 / 3 + 1 / 3)
    assert f"seed noise ±{band:.2f}" in inside.text
    (outside,) = verdicts(compare(_at_published("mma", shift={"eurosat": -30.0, "dtd": 8.0}), SETUP), SETUP)
    assert outside.within is False and "do NOT lie within seed noise" in outside.text
    assert re.search(r"Differing most in hm: eurosat -30\.0\d, dtd \+8\.\d\d, ", outside.text), outside.text
    (zero,) = verdicts(compare(_at_published("zeroshot", wobble=0.0), SETUP), SETUP)
    assert zero.within is True and f"tolerance ±{ZERO_SHOT_TOLERANCE:.2f}" in zero.text
    (one,) = verdicts(compare(_at_published("mma", seeds=(1,)), SETUP), SETUP)
    assert one.within is None and "one seed, so seed noise is unknown" in one.text


def test_side_by_side_marks_recalled_cells_and_readme_averages():
    table = side_by_side(compare(_at_published("mma"), SETUP), "base2novel", SETUP)
    assert list(table.columns)[:5] == ["method", "dataset", "base published", "base measured", "base Δ"]
    rows = table.set_index("dataset")
    assert rows.loc["imagenet", "published source"] == "recalled"
    assert rows.loc["average (11 datasets)", "published source"] == "readme"
    assert rows.loc["average (11 datasets)", "hm published"] == "79.87"
    assert rows.loc["imagenet", "base measured"] == "77.31 ± 0.40"


# -- zero-shot as published, every method with published rows compared -----------------------------------------


def test_zero_shot_reads_coops_published_prompts_and_mma_its_official_one(reproduced):
    """The CLIP rows were measured with CoOp's per-dataset templates (trainers/zsclip.py): so is the zero-shot model
    on coop: data; MMA keeps "a photo of a {}." (its released TEXT_CTX_INIT); the tables say which each row read."""
    out = reproduced.out
    zs = json.loads((out / "base2novel" / "results" / "base2novel" / "eurosat" / "zeroshot.json").read_text())
    assert zs["template"] == "a centered satellite photo of {}."
    dtd = json.loads((out / "base2novel" / "results" / "base2novel" / "dtd" / "zeroshot.json").read_text())
    assert dtd["template"] == "{} texture."
    (mine,) = (out / "base2novel" / "results" / "base2novel" / "eurosat").glob("seed1-k*-mma.json")
    assert json.loads(mine.read_text())["template"] == "a photo of a {}."
    xd = json.loads((out / "cross-dataset" / "results" / "cross-dataset" / "imagenet" / "zeroshot.json").read_text())
    assert xd["prompts"] == {
        "imagenet": "a photo of a {}.",
        "dtd": "{} texture.",
        "eurosat": "a centered satellite photo of {}.",
    }
    c = reproduced.comparison.set_index(["protocol", "method", "dataset", "metric"])
    assert c.loc[("base2novel", "zeroshot", "eurosat", "base"), "prompt"] == "a centered satellite photo of {}."
    assert c.loc[("cross-dataset", "zeroshot", "dtd", "accuracy"), "prompt"] == "{} texture."
    assert c.loc[("base2novel", "zeroshot", "average", "base"), "prompt"] == "per dataset"
    assert c.loc[("base2novel", "mma", "average", "base"), "prompt"] == "a photo of a {}."
    text = (out / "comparison.md").read_text()
    assert "| prompt |" in text and "a centered satellite photo of {}." in text


def test_a_user_template_is_every_methods_prompt(coop_root):
    from mma.adapters.methods import registry
    from mma.probe.data import load_datasets

    (eurosat,) = load_datasets(f"coop:{coop_root}:eurosat")
    assert eurosat.published_template == "a centered satellite photo of {}."
    published = {name for name, m in registry().items() if m.prompt_template(eurosat) == eurosat.published_template}
    assert published == {"zeroshot", "clip-adapter", "mmrl"}  # those published with CoOp's per-dataset templates
    (mine,) = load_datasets(f"coop:{coop_root}:eurosat", template="a photo of {}.")
    assert {m.prompt_template(mine) for m in registry().values()} == {"a photo of {}."}


def test_reproduce_compares_every_method_with_published_rows(coop_root, tmp_path):
    fast = {"epochs": 1, "batch_size": 4}
    run = reproduce(_config(coop_root, tmp_path / "r", seeds=[1], methods=["coop", "cocoop"], train=fast))
    c = run.comparison
    for protocol in ("base2novel", "cross-dataset", "domain-gen"):
        for method, published in (("coop", "CoOp"), ("cocoop", "CoCoOp")):
            rows = c[(c["protocol"] == protocol) & (c["method"] == method)]
            assert (rows["published_method"] == published).all() and rows["published"].notna().any(), protocol
    text = (run.out / "comparison.md").read_text()
    assert "CoOp" in text and "CoCoOp" in text and "| check |" in text
    # CoOp ran at the CoCoOp protocol's configuration behind its published rows: 4 vectors from "a photo of a"
    record = json.loads((run.out / "base2novel" / "train-coop.json").read_text())
    assert (record["train_config"]["n_ctx"], record["train_config"]["ctx_init"]) == (4, "a photo of a")
    assert "vit_b16_ctxv1.yaml" in record["recipe_line"]
