"""--all-classes: base-to-novel also classifies every test image among all of a dataset's classes (issue 26's
open-world reading), checked against the zero-shot code's own accuracy over the whole test split."""

from __future__ import annotations

import pytest
from conftest import colour_folder, one_line_error, run_mma, tripwire

from mma.adapters.protocols import get_protocol, make_tasks
from mma.io import read_json
from mma.probe.data import load_datasets

COLOURS = {"red": (220, 30, 30), "yellow": (230, 220, 30), "blue": (30, 40, 220), "green": (30, 200, 40)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "paints"
    return colour_folder(root, COLOURS, {"train": 3, "val": 1, "test": 3}, seed=3, noise=40, size=16)


def test_the_union_split_is_every_test_image_among_every_class(folder):
    (d,) = load_datasets(f"folder:{folder}")
    protocol = get_protocol("base2novel")
    (task,) = make_tasks("base2novel", [d], shots=2, seed=1)
    (wide,) = [protocol.with_all_classes(task)]
    assert [e.name for e in wide.evals] == ["base", "novel", "all"] and wide.evals[:2] == task.evals
    union = wide.evals[-1]
    assert union.classnames == d.classnames and union.samples == d.test  # labels as the dataset's own
    assert (wide.train, wide.classnames, wide.val) == (task.train, task.classnames, task.val)  # training unchanged


def test_train_selected_reports_all_beside_base_and_novel(folder, tmp_path):
    from mma.probe import load_model
    from mma.probe.zeroshot import zero_shot_accuracy

    out = tmp_path / "run"
    args = ["train-selected", "--model", "mma-tiny:random", "--k", "3", "--data", f"folder:{folder}", "--seeds", "1"]
    args += ["--epochs", "1", "--shots", "2", "--method", "mma,linear-probe", "--out", out]
    code, text = run_mma(*args, "--all-classes")
    assert code == 0, text
    results = out / "results" / "base2novel" / "paints"
    zero, mma = read_json(results / "zeroshot.json"), read_json(results / "seed1-k3-mma.json")
    assert set(mma["metrics"]) == {"base", "novel", "hm", "all"} and mma["all_classes"]
    assert mma["evaluated"]["all"]["images"] == 4 * 3 and mma["evaluated"]["all"]["stage"] == "test, all classes"
    assert set(read_json(results / "seed1-linear-probe.json")["metrics"]) == {"base"}  # it names base classes only
    # the zero-shot model's 'all' is the zero-shot code's accuracy over the whole test split, computed apart
    (d,) = load_datasets(f"folder:{folder}")
    reference = 100 * zero_shot_accuracy(load_model("mma-tiny:random"), d, split="test")
    assert zero["metrics"]["all"] == pytest.approx(reference)
    assert ",all," in (out / "results.csv").read_text()
    # the side-by-side table shows it after HM; the headline stays HM; the linear probe's is n/a
    line = next(x for x in text.splitlines() if x.split()[:2] == ["method", "seeds"])
    assert line.split() == ["method", "seeds", "base", "novel", "hm", "all", "hm", "vs", "zero-shot"], line
    probe = next(x for x in reversed(text.splitlines()) if x.split() and x.split()[0] == "linear-probe")
    assert probe.split()[-3:] == ["n/a", "n/a", "n/a"], probe
    # mma evaluate gives the checkpoint's numbers again, 'all' included, with the zero-shot model's beside them
    from mma.app.jobs.evaluate import evaluate_checkpoint, metrics_of

    ckpt = out / "checkpoints" / "base2novel-paints-seed1-k3.safetensors"
    table = evaluate_checkpoint(ckpt, device="cpu", all_classes=True)
    assert metrics_of(table) == pytest.approx(mma["metrics"]) and metrics_of(table, "zero_shot") == pytest.approx(
        zero["metrics"]
    )
    assert table.set_index("metric").loc["all", "images"] == 4 * 3
    # the same run without --all-classes evaluates afresh: a result is reused only on the same splits
    code, text = run_mma(*args)
    assert code == 0, text
    again = read_json(results / "seed1-k3-mma.json")
    assert "all" not in again["metrics"] and not again["all_classes"]
    assert again["metrics"]["hm"] == pytest.approx(mma["metrics"]["hm"])  # the same training and base / novel


def test_all_classes_is_refused_where_the_classes_are_not_split(folder, tmp_path, monkeypatch):
    tripwire(monkeypatch, "mma.probe.specs.load_model")
    args = ["train-selected", "--model", "mma-tiny:random", "--k", "3", "--protocol", "few-shot"]
    code, text = run_mma(*args, "--data", f"folder:{folder}", "--all-classes", "--out", tmp_path / "run")
    one_line_error(
        code, text, "--all-classes applies to the protocols that split a dataset's classes (base2novel); few-shot"
    )
    assert not (tmp_path / "run").exists()
