"""The five layer-deep methods beside MMA (MMA++, MaPLe, PromptSRC, MMRL, CLIP-LoRA) in the jobs: under 2-rank
torchrun, and in ``mma reproduce`` beside the published rows at their published depths."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from test_reproduce import MODEL, coop_root  # noqa: F401 (coop_root: the fake CoOp tree fixture)

from mma.adapters.methods import get_method
from mma.analysis.compare import compare
from mma.app.jobs.reproduce import ReproduceConfig, reproduce
from mma.app.results import comparison_setup

SETUP = comparison_setup()

DEEP = ("mma++", "maple", "promptsrc", "mmrl", "clip-lora")


# -- torchrun ------------------------------------------------------------------------------------------------


def _results(out) -> dict[str, dict]:
    """Every result JSON of a train-selected run folder, by its path under ``results/``."""
    return {str(p.relative_to(out / "results")): json.loads(p.read_text()) for p in (out / "results").rglob("*.json")}


def test_the_deep_methods_train_under_two_ranks_as_in_one_process(tmp_path, run_cli):
    """2 gloo ranks fit the one-process adapter of every deep method, up to rounding (augmentation off).

    The dropouts of MMA++ (the shared layer's) and CLIP-LoRA (LoRA's) are off too: like the crops and flips they
    draw from each rank's own torch stream (``_augmentation_seed``: rank 1's differs from the one process's by
    design), so with them on, two ranks fit another, equally valid adapter, not the same one. MMA++'s consistency
    term stays on: its alpha draw comes from Python's ``random``, shared by the ranks. The remaining tolerance is
    rounding: two ranks sum each half batch's gradient and all-reduce the means, one process sums the whole batch.
    """
    config = tmp_path / "train.json"
    config.write_text(json.dumps({"augment": False, "mma++": {"dropout": 0.0}, "clip-lora": {"dropout_rate": 0.0}}))
    # colors: 6 base classes x 2 shots = 12 images, 3 global steps of 4 (2 per rank): DDP reduces more than once,
    # so a parameter left out of a step's graph would stop the second step
    args = ["train-selected", "--k", "4", "--data", "builtin:colors", "--seeds", "1", "--device", "cpu"]
    args += ["--method", ",".join(DEEP), "--epochs", "1", "--shots", "2", "--batch-size", "4", "--config", config]
    runs = {n: run_cli([*args, "--out", tmp_path / f"p{n}"], n) for n in (1, 2)}
    for n, done in runs.items():
        assert done.stdout.count(f": wrote {tmp_path / f'p{n}'}/ (results.csv") == 1  # rank 0 alone reports
    one, two = _results(tmp_path / "p1"), _results(tmp_path / "p2")
    assert one.keys() == two.keys()
    trained = {r["method"]: path for path, r in one.items() if r["method"] != "zeroshot"}
    assert sorted(trained) == sorted(DEEP) and len(one) == len(DEEP) + 1  # each written once, beside zero-shot
    for path, r in one.items():
        if r["method"] == "zeroshot":  # evaluation shards count exactly
            assert two[path]["metrics"] == r["metrics"]
            continue
        # weights equal up to rounding (below) may still tip one near-tied test image: half a point, as MMA's test
        assert two[path]["metrics"] == pytest.approx(r["metrics"], abs=0.5), path
        assert two[path]["train"]["final_loss"] == pytest.approx(r["train"]["final_loss"], rel=1e-4), path
        assert (r["train"]["processes"], two[path]["train"]["processes"]) == (1, 2)
        assert two[path]["train"]["steps"] == r["train"]["steps"] == 3
    ckpts = sorted((tmp_path / "p1" / "checkpoints").iterdir())
    assert sorted(p.name for p in (tmp_path / "p2" / "checkpoints").iterdir()) == [p.name for p in ckpts]
    assert len([p for p in ckpts if p.suffix == ".safetensors"]) == len(DEEP)
    for path in ckpts:
        if path.suffix != ".safetensors":
            continue
        a, b = load_file(path), load_file(tmp_path / "p2" / "checkpoints" / path.name)
        assert a.keys() == b.keys() and a, path.name
        for name in a:
            torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=f"{path.name}: {name}")
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "p1" / "results.csv"), pd.read_csv(tmp_path / "p2" / "results.csv"), atol=0.5, rtol=0
    )


# -- reproduce -------------------------------------------------------------------------------------------------

#: each method's published base-to-novel depth as k on 12-block towers, and its own words for it (mma-tiny's towers
#: have 12 blocks, as ViT-B/16's)
PUBLISHED_DEPTH = {
    "maple": (4, "prompt depth 9"),
    "promptsrc": (4, "prompt depth 9"),
    "mmrl": (6, "representation tokens from layer 6"),
    "clip-lora": (1, "LoRA on blocks 1..12"),
    "mma++": (5, "blocks 5..12"),
}
PUBLISHED_AS = {"maple": "MaPLe", "promptsrc": "PromptSRC", "mma++": "MMA++"}


def _published(method: str) -> pd.DataFrame:
    """*method*'s base-to-novel rows of the packaged CSV, read with pandas alone (not the toolkit's reader)."""
    from importlib import resources

    with resources.files("mma.analysis").joinpath("published_numbers.csv").open(encoding="utf-8") as f:
        table = pd.read_csv(f)
    return table[(table["protocol"] == "base2novel") & (table["method"] == method)].set_index(["dataset", "metric"])


def _on_every_dataset(results: pd.DataFrame, methods, datasets) -> pd.DataFrame:
    """The measured rows of *methods* on their first dataset, copied to each of *datasets* (a full coverage)."""
    rows = results[results["method"].isin(methods)]
    rows = rows[rows["dataset"] == rows["dataset"].iloc[0]]
    return pd.concat([rows.assign(dataset=d) for d in datasets], ignore_index=True)


def test_reproduce_runs_the_deep_methods_at_their_depths_beside_the_published_rows(coop_root, tmp_path):  # noqa: F811
    fast = {"epochs": 1, "batch_size": 4}
    cfg = ReproduceConfig(
        data=f"coop:{coop_root}:eurosat", model=MODEL, out=tmp_path / "r", device="cpu", progress=False,
        protocols=["base2novel"], seeds=[1], methods=list(PUBLISHED_DEPTH), train=fast,
    )  # fmt: skip
    run = reproduce(cfg)
    c = run.comparison
    assert set(c["method"]) == {"zeroshot", "mma", *PUBLISHED_DEPTH} and set(c["protocol"]) == {"base2novel"}
    for method in PUBLISHED_DEPTH:
        rows = c[c["method"] == method]
        assert set(rows["dataset"]) == {"eurosat", "average"}, method
        assert len(rows) == 6 and rows["measured"].notna().all() and (rows["seeds"] == 1).all(), method
    # MaPLe: its recalled per-dataset cells, and their mean for the average over 1 of the 11 datasets
    maple, cells = c[c["method"] == "maple"].set_index(["dataset", "metric"]), _published("MaPLe")
    assert (maple["published_method"] == "MaPLe").all()
    for dataset in ("eurosat",):
        for metric in ("base", "novel", "hm"):
            assert maple.loc[(dataset, metric), "published"] == cells.loc[(dataset, metric), "value"]
            assert maple.loc[(dataset, metric), "published_source"] == "recalled"
    for metric in ("base", "novel"):
        assert maple.loc[("average", metric), "published"] == pytest.approx(cells.loc[("eurosat", metric), "value"])
        assert maple.loc[("average", metric), "published_source"] == "derived from recalled (1 of 11)"
    # PromptSRC and MMA++ publish 11-dataset averages alone: nothing to set beside 1 dataset, but beside 11 their
    # README averages (the same measured rows copied to the 11 datasets)
    for method in ("promptsrc", "mma++"):
        rows = c[c["method"] == method]
        assert (rows["published_method"] == PUBLISHED_AS[method]).all()
        assert rows["published"].isna().all() and (rows["published_source"] == "").all(), method
    datasets = sorted(set(_published("MaPLe").index.get_level_values("dataset")) - {"average"})
    assert len(datasets) == 11
    full = compare(_on_every_dataset(run.runs["base2novel"].results, ["promptsrc", "mma++"], datasets), SETUP)
    full = full[full["dataset"] == "average"].set_index(["method", "metric"])
    for method in ("promptsrc", "mma++"):
        averages = _published(PUBLISHED_AS[method]).loc["average"]
        assert len(averages) == (3 if method == "promptsrc" else 1)  # MMA++: its HM alone
        for metric, value in averages["value"].items():
            assert full.loc[(method, metric), "published"] == value
            assert full.loc[(method, metric), "published_source"] == "readme"
    # MMRL and CLIP-LoRA publish no base-to-novel numbers: measured rows, an empty published column
    for method in ("mmrl", "clip-lora"):
        rows = c[c["method"] == method]
        assert rows["published"].isna().all() and (rows["published_source"] == "").all(), method
    text = (run.out / "comparison.md").read_text()
    for method in PUBLISHED_DEPTH:  # a row per dataset in the Markdown table, by the method's title
        assert f"| {get_method(method).title} | eurosat |" in text, method
    # each ran at its published depth: the recorded train config, the result's, and its own words for the depth
    results = run.runs["base2novel"].results
    for method, (k, words) in PUBLISHED_DEPTH.items():
        record = json.loads((run.out / "base2novel" / f"train-k{k}-{method}.json").read_text())
        assert record["k"] == k and record["train_config"]["k"] == k, method
        own = (f"protocol default (paper, base2novel) ({method})", f"paper default ({method})")
        assert record["k_source"] in own, record["k_source"]  # its own published value, not MMA's k 5
        assert record["train_config"]["epochs"] == 1 and record["train_config"]["batch_size"] == 4, method
        result = json.loads(
            (run.out / "base2novel" / "results" / "base2novel" / "eurosat" / f"seed1-k{k}-{method}.json").read_text()
        )
        assert result["train_config"]["k"] == k, method
        assert set(results.loc[results["method"] == method, "depth"]) == {words}, method
