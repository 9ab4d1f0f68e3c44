"""`mma probe layers` end to end: store reuse and resume, probes vs scikit-learn, k rules, figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mma.analysis.select_k import select_k, selection_record
from mma.analysis.separability import ProbeInput, layer_separability, split_rows
from mma.app.jobs.probe_layers import ProbeLayersConfig, plot_run, probe_layers, select_from_run
from mma.errors import MmaError
from mma.probe import load_model
from mma.probe.data import load_datasets
from mma.probe.data.reading import ImageReader
from mma.probe.extract import extract_images

FAST = dict(
    models=["mma-tiny:random"],
    data=["builtin:colors,scenes,shapes"],
    samples=30,
    seeds=[1, 2],
    progress=False,
    batch_size=16,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe")
    return probe_layers(ProbeLayersConfig(out=out, **FAST))


def test_run_writes_every_output(run):
    for name in (
        "layers.csv",
        "layers_summary.csv",
        "selection.json",
        "figure1.png",
        "figure1.pdf",
        "figure1.csv",
        "run.json",
    ):
        assert (run.out / name).is_file(), name
    tidy = pd.read_csv(run.out / "layers.csv")
    assert set(tidy.columns) == {"model", "tower", "layer_index", "layer_name", "seed", "metric", "value"}
    acc = tidy[tidy["metric"] == "probe_accuracy"]
    assert len(acc) == 2 * 2 * 14  # seeds x towers x layers (XEmbed, 1..12, XProj)
    assert acc["value"].between(0, 1).all()
    sel = run.selection["selections"][0]
    assert (
        sel["model"] == "mma-tiny:random" and 1 <= sel["k"] <= 12 and set(sel["rules"]) == {"saturation", "gap", "knee"}
    )
    assert "training images only" in run.selection["read"]  # the choice of k records the split it read


def test_rerun_reuses_the_store_and_probes(run, monkeypatch):
    from mma.probe.capture import LayerCapture

    monkeypatch.setattr(LayerCapture, "encode_image", lambda *a: pytest.fail("extraction was recomputed"))
    from mma.analysis import separability

    monkeypatch.setattr(separability, "probe_accuracy", lambda *a, **k: pytest.fail("a probe was refitted"))
    again = probe_layers(ProbeLayersConfig(out=run.out, **FAST))
    pd.testing.assert_frame_equal(again.summary, run.summary)


def test_interrupted_extraction_resumes_to_the_same_store(tmp_path, monkeypatch):
    loaded = load_model("mma-tiny:random")
    (d,) = load_datasets("builtin:shapes")
    samples = d.train[:70]
    full = extract_images(loaded, d, samples, tmp_path / "full", batch_size=16)

    original = ImageReader.__getitem__

    def flaky(self, i):
        if i == 40:
            raise KeyboardInterrupt
        return original(self, i)

    monkeypatch.setattr(ImageReader, "__getitem__", flaky)
    with pytest.raises(KeyboardInterrupt):
        extract_images(loaded, d, samples, tmp_path / "cut", batch_size=16)
    monkeypatch.setattr(ImageReader, "__getitem__", original)
    (entry_dir,) = (tmp_path / "cut").iterdir()
    import json

    manifest = json.loads((entry_dir / "manifest.json").read_text())
    progress = json.loads((entry_dir / "progress-0.json").read_text())
    assert not manifest["done"] and progress["ranges"] == [[0, 32]]  # two finished batches of 16
    resumed = extract_images(loaded, d, samples, tmp_path / "cut", batch_size=16)
    assert resumed.done and resumed.folder.name == full.folder.name
    for name in ("blocks.npy", "proj.npy"):
        assert (resumed.folder / name).read_bytes() == (full.folder / name).read_bytes()


def test_probe_equals_scikit_learn_at_the_chosen_strength():
    rng = np.random.default_rng(0)
    n, datasets = 120, np.repeat(np.arange(3), 40)
    klass = np.arange(n) % 12
    X = rng.normal(size=(n, 6)) + datasets[:, None] * 0.7
    data = ProbeInput(["XEmbed", "XProj"], [X, X * 2], [X[:, :4], X[:, 2:]], datasets, klass)
    tidy = layer_separability(data, seed=3)
    train, val, test = split_rows(datasets, klass, 3, "by-sample")
    row = tidy[(tidy.tower == "image") & (tidy.layer_index == 0)].set_index("metric")["value"]
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=row["probe_C"], max_iter=1000, tol=1e-5))
    fit_rows = np.concatenate([train, val])
    ref.fit(X[fit_rows], datasets[fit_rows])
    assert row["probe_accuracy"] == pytest.approx(ref.score(X[test], datasets[test]))


def test_by_class_split_keeps_classes_apart():
    datasets = np.repeat(np.arange(2), 50)
    klass = np.arange(100) // 5  # 10 classes per dataset
    train, val, test = split_rows(datasets, klass, 1, "by-class")
    assert not set(klass[train]) & set(klass[test]) and not set(klass[val]) & set(klass[test])
    assert len(np.unique(datasets[test])) == 2


CURVES = {
    "rising": {"image": np.array([0.2, 0.3, 0.6, 0.8, 0.85, 0.9]), "text": np.array([0.5, 0.6, 0.8, 0.9, 0.92, 0.95])},
    "text_flat": {"image": np.array([0.2, 0.3, 0.6, 0.8, 0.85, 0.9]), "text": np.ones(6)},
    "both_flat": {"image": np.full(6, 0.7), "text": np.ones(6)},
}


@pytest.mark.parametrize(
    "curves,rule,k",
    [
        ("rising", "saturation", 3),  # combined normalised: 0, .18, .62, .87, .93, 1 -> first >= .5 is block 3
        ("text_flat", "saturation", 3),  # the flat text curve is left out
        ("both_flat", "saturation", 1),
        ("rising", "gap", 4),  # gap .3, .3, .2, .1 -> closed by half (<= .15) at block 4
        ("both_flat", "gap", 6),  # a gap that never closes gives L
        ("rising", "knee", 4),
    ],
)
def test_k_rules(curves, rule, k):
    assert select_k(CURVES[curves], rule) == k


def test_bad_rule_and_threshold():
    with pytest.raises(MmaError, match="The rule 'elbow' is not valid"):
        select_k(CURVES["rising"], "elbow")
    with pytest.raises(MmaError, match=r"must be in \(0, 1\]"):
        select_k(CURVES["rising"], "gap", 1.5)


def test_select_and_plot_from_a_run(run):
    sel = select_from_run(run.out, rule="gap", threshold=0.3)
    assert sel["rule"] == "gap" and sel["selections"][0]["rules"]["gap"]["threshold"] == 0.3
    record = selection_record(run.summary, "mma-tiny:random", rule="gap", thresholds={"gap": 0.3})
    assert record["k"] == sel["selections"][0]["k"]
    (run.out / "figure1.png").unlink()
    assert plot_run(run.out).is_file()


def _tidy(curves_by_seed: dict[int, dict[str, list[float]]]) -> pd.DataFrame:
    """A tidy layers table (blocks only, plus XEmbed/XProj) from per-seed block curves."""
    rows = []
    for seed, curves in curves_by_seed.items():
        for tower, values in curves.items():
            names = ["XEmbed", *map(str, range(1, len(values) + 1)), "XProj"]
            for i, (name, v) in enumerate(zip(names, [values[0], *values, values[-1]])):
                rows.append(("m", tower, i, name, seed, "probe_accuracy", v))
    return pd.DataFrame(rows, columns=["model", "tower", "layer_index", "layer_name", "seed", "metric", "value"])


def _summary(tidy: pd.DataFrame) -> pd.DataFrame:
    from mma.analysis.separability import summarise

    return summarise(tidy)


def test_selection_records_each_seeds_k_and_warns_when_seeds_disagree():
    rising = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    late = [0.5, 0.5, 0.5, 0.6, 0.9, 0.95]
    tidy = _tidy({1: {"image": rising, "text": [1.0] * 6}, 2: {"image": late, "text": [1.0] * 6}})
    record = selection_record(_summary(tidy), "m", tidy=tidy)
    assert record["per_seed_k"] == {
        "1": select_k({"image": np.array(rising), "text": np.ones(6)}),
        "2": select_k({"image": np.array(late), "text": np.ones(6)}),
    }
    assert record["per_seed_k"]["1"] != record["per_seed_k"]["2"]
    assert any("seeds disagree" in w for w in record["warnings"])


def test_selection_warns_when_the_curves_are_nearly_flat():
    noisy = {
        s: {"image": list(0.4 + 0.02 * np.random.default_rng(s).standard_normal(6)), "text": [1.0] * 6}
        for s in (1, 2, 3)
    }
    tidy = _tidy(noisy)
    record = selection_record(_summary(tidy), "m", tidy=tidy)
    assert any("nearly flat" in w for w in record["warnings"])
    clear = _tidy({s: {"image": [0.3, 0.45, 0.6, 0.7, 0.75, 0.8], "text": [1.0] * 6} for s in (1, 2)})
    assert selection_record(_summary(clear), "m", tidy=clear)["warnings"] == []


def _first_half(curve) -> int:
    """Restated: the first block (1-based) whose min-max normalised value reaches one half."""
    c = np.asarray(curve, dtype=float)
    return int(np.flatnonzero((c - c.min()) / (c.max() - c.min()) >= 0.5 - 1e-12)[0]) + 1


def _knee(curve) -> int:
    """Restated: the block farthest above the chord of the normalised curve over normalised depth."""
    c = np.asarray(curve, dtype=float)
    c = (c - c.min()) / (c.max() - c.min())
    x = np.linspace(0, 1, len(c))
    return int(np.argmax(c - (c[0] + (c[-1] - c[0]) * x))) + 1


def test_each_tower_gets_its_own_k_by_the_same_rule():
    from mma.analysis.select_k import select_tower_ks

    early = [0.3, 0.6, 0.8, 0.85, 0.88, 0.9, 0.9, 0.91]  # the image tower separates early
    late = [0.2, 0.21, 0.22, 0.25, 0.3, 0.5, 0.8, 0.85]  # the text tower late
    curves = {"image": np.array(early), "text": np.array(late)}
    towers = select_tower_ks(curves, "saturation")
    assert towers == {"image": _first_half(early), "text": _first_half(late)} == {"image": 3, "text": 7}
    assert towers["image"] <= select_k(curves, "saturation") <= towers["text"]  # the shared k lies between
    assert select_tower_ks(curves, "knee") == {"image": _knee(early), "text": _knee(late)}
    shared = select_k(curves, "gap")
    assert select_tower_ks(curves, "gap") == {"image": shared, "text": shared}  # a relation of the two towers
    flat = {"image": np.array(early), "text": np.ones(8)}
    assert select_tower_ks(flat, "saturation")["text"] == 1  # a flat tower carries no depth


def test_the_selection_records_each_towers_k_and_each_seeds():
    early = [0.3, 0.6, 0.8, 0.85, 0.88, 0.9]
    late = [0.2, 0.21, 0.3, 0.5, 0.8, 0.85]
    slower = [0.3, 0.4, 0.5, 0.7, 0.88, 0.9]
    tidy = _tidy({1: {"image": early, "text": late}, 2: {"image": slower, "text": late}})
    record = selection_record(_summary(tidy), "m", tidy=tidy)
    mean = (np.array(early) + np.array(slower)) / 2
    assert (record["k_image"], record["k_text"]) == (_first_half(mean), _first_half(late))
    assert record["per_seed_k_image"] == {"1": _first_half(early), "2": _first_half(slower)} == {"1": 2, "2": 4}
    assert record["per_seed_k_text"] == {"1": _first_half(late), "2": _first_half(late)}
    for rule, entry in record["rules"].items():
        assert {"k", "k_image", "k_text", "threshold"} <= set(entry), rule
