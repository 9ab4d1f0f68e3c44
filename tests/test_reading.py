"""No image is lost silently: training, evaluation and predict count unreadable images one way, record them in
their JSON, leave them out of the denominators, and stop naming the file under --strict (issue 24)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from conftest import colour_folder, run_mma
from PIL import Image

from mma.io import read_json

COLOURS = {"red": (220, 30, 30), "yellow": (230, 220, 30), "blue": (30, 40, 220), "green": (30, 200, 40)}
BROKEN = {  # three kinds of unreadable file a user's folder holds
    "train/red/bad.png": b"this is a text file named like an image",
    "test/blue/empty.jpg": b"",
}


def _folder(root: Path, seed: int) -> Path:
    return colour_folder(root, COLOURS, {"train": 4, "val": 1, "test": 3}, seed=seed, noise=20, size=16)


def _break(root: Path) -> None:
    for ref, data in BROKEN.items():
        (root / ref).write_bytes(data)
    whole = (root / "test" / "red" / "0.png").read_bytes()
    (root / "test" / "red" / "truncated.png").write_bytes(whole[: len(whole) // 2])


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    root = _folder(tmp_path_factory.mktemp("data") / "colours", 0)
    _break(root)
    return root


@pytest.fixture(scope="module")
def trained(broken, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    code, text = run_mma(
        "train-selected", "--model", "mma-tiny:random", "--k", "3", "--protocol", "few-shot", "--shots", "4",
        "--epochs", "1", "--data", f"folder:{broken}", "--out", out, "--method", "mma,linear-probe",
    )  # fmt: skip
    assert code == 0, text
    return out, text


def test_training_and_evaluation_count_and_name_unreadable_images(trained):
    out, text = trained
    # one line per dataset and stage, said once although every epoch and method met the same files
    assert text.count("colours (training): skipped 1 unreadable image(s), e.g. ['train/red/bad.png'].") == 1, text
    line = re.findall(r"colours \(test\): skipped 2 unreadable image\(s\), e\.g\. \[([^\]]*)\]\.", text)
    assert len(line) == 1 and "'test/blue/empty.jpg'" in line[0] and "'test/red/truncated.png'" in line[0], text
    # 4 shots of each of the 4 classes; the draw took the text file named bad.png among red's 5 files
    training = {
        "dataset": "colours", "stage": "training", "images": 4 * 4 - 1, "unreadable": 1,
        "examples": ["train/red/bad.png"],
    }  # fmt: skip
    validation = {"dataset": "colours", "stage": "validation", "images": 4, "unreadable": 0, "examples": []}
    expected = {"seed1-k3-mma.json": training, "seed1-linear-probe.json": {**training, "validation": validation}}
    for name, read in expected.items():  # the linear probe also read the validation images (to choose its C)
        result = read_json(out / "results" / "few-shot" / "colours" / name)
        assert result["train"]["read"] == read
        evaluated = result["evaluated"]["colours"]
        assert evaluated["images"] == 4 * 3 and evaluated["unreadable"] == 2  # 14 test files, 12 readable
    zero = read_json(out / "results" / "few-shot" / "colours" / "zeroshot.json")["evaluated"]["colours"]
    assert zero["images"] == 12 and sorted(zero["examples"]) == ["test/blue/empty.jpg", "test/red/truncated.png"]


def test_accuracy_denominators_are_the_readable_images(trained, broken, tmp_path):
    """The stored accuracy is the share of correct top-1 predictions among the 12 readable test images, recounted
    from mma predict's rows (whose file paths name the true class)."""
    out, _ = trained
    accuracy = read_json(out / "results" / "few-shot" / "colours" / "seed1-k3-mma.json")["metrics"]["accuracy"]
    ckpt = out / "checkpoints" / "few-shot-colours-seed1-k3.safetensors"
    code, text = run_mma("predict", "--checkpoint", ckpt, "--images", broken / "test", "--out", tmp_path / "p.csv")
    assert code == 0, text
    rows = list(csv.DictReader(io.StringIO((tmp_path / "p.csv").read_text())))
    correct = sum(Path(r["path"]).parent.name == r["class_1"] for r in rows)
    assert len(rows) == 12 and 0 < correct < 12  # neither 0 nor 100%, where /12 and /14 could not differ
    assert accuracy == pytest.approx(100 * correct / 12) != pytest.approx(100 * correct / 14)


@pytest.mark.parametrize("command", ["train-selected", "train-selected --workers 1", "evaluate", "predict"])
def test_strict_stops_at_the_first_unreadable_image_naming_it(trained, broken, tmp_path, command):
    out, _ = trained
    ckpt = out / "checkpoints" / "few-shot-colours-seed1-k3.safetensors"
    args = {
        "train-selected": [
            "--model", "mma-tiny:random", "--k", "3", "--protocol", "few-shot", "--shots", "4", "--epochs", "1",
            "--data", f"folder:{broken}", "--out", tmp_path / "strict",
        ],
        "train-selected --workers 1": [  # read in a DataLoader worker, said in one sentence all the same
            "--model", "mma-tiny:random", "--k", "3", "--protocol", "few-shot", "--shots", "4", "--epochs", "1",
            "--data", f"folder:{broken}", "--out", tmp_path / "strict", "--workers", "1",
        ],
        "evaluate": ["--checkpoint", ckpt, "--device", "cpu"],
        "predict": ["--checkpoint", ckpt, "--images", broken / "test", "--out", tmp_path / "p.csv"],
    }[command]  # fmt: skip
    code, text = run_mma(command.split()[0], *args, "--strict")
    last = text.strip().splitlines()[-1]  # train-selected has said its recipe and started its progress bar
    assert code == 2 and last.startswith("Error: ") and text.count("Error") == 1 and "Traceback" not in text, text
    assert re.search(r"Cannot read image '[^']*(bad\.png|empty\.jpg|truncated\.png)' of dataset '\w+'", last), text
    assert last.endswith("drop --strict to skip unreadable images.")
    assert not (tmp_path / "p.csv").exists()


def test_evaluate_prints_images_accuracy_and_zero_shot(trained):
    out, _ = trained
    ckpt = out / "checkpoints" / "few-shot-colours-seed1-k3.safetensors"
    code, text = run_mma("evaluate", "--checkpoint", ckpt, "--device", "cpu")
    assert code == 0, text
    stored = read_json(out / "results" / "few-shot" / "colours" / "seed1-k3-mma.json")["metrics"]["accuracy"]
    zero = read_json(out / "results" / "few-shot" / "colours" / "zeroshot.json")["metrics"]["accuracy"]
    assert re.search(rf"colours\W+accuracy\W+12\W+2\W+{stored:.2f}\W+{zero:.2f}", text), text
    assert "colours (test): skipped 2 unreadable image(s)" in text
    assert re.search(r"dataset\W+metric\W+images\W+unreadable\W+accuracy\W+zero-shot", text), text


def test_evaluate_data_on_another_dataset_names_its_classes(trained, tmp_path):
    from mma.app.jobs.evaluate import evaluate_checkpoint

    out, _ = trained
    ckpt = out / "checkpoints" / "few-shot-colours-seed1-k3.safetensors"
    other = _folder(tmp_path / "paints", 5)
    (other / "test" / "purple").mkdir()  # a class the checkpoint never saw
    Image.new("RGB", (16, 16), (110, 40, 200)).save(other / "test" / "purple" / "0.png")
    table = evaluate_checkpoint(ckpt, data=[f"folder:{other}"], device="cpu")
    assert table.to_dict("records")[0] | {"accuracy": 0, "zero_shot": 0} == {
        "dataset": "paints", "metric": "accuracy", "images": 13, "unreadable": 0, "accuracy": 0, "zero_shot": 0,
    }  # fmt: skip
    assert 0 <= table["accuracy"][0] <= 100 and 0 <= table["zero_shot"][0] <= 100
    probe = out / "checkpoints" / "few-shot-colours-seed1-linear-probe.safetensors"
    code, text = run_mma("evaluate", "--checkpoint", probe, "--data", f"folder:{other}", "--device", "cpu")
    assert code == 2 and text.count("\n") == 1, text
    assert "names only the 4 classes it was trained on; 'paints' has others" in text


def test_predict_writes_one_row_per_readable_image(trained, broken, tmp_path):
    out, _ = trained
    ckpt = out / "checkpoints" / "few-shot-colours-seed1-k3.safetensors"
    csv_path = tmp_path / "pred.csv"
    code, text = run_mma(
        "predict", "--checkpoint", ckpt, "--images", broken / "test", "--out", csv_path, "--top-k", "3"
    )
    assert code == 0, text
    assert "test (--images): skipped 2 unreadable image(s)" in text and "Predicted 12 image(s) among 4 classes" in text
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert list(rows[0]) == ["path", "class_1", "prob_1", "class_2", "prob_2", "class_3", "prob_3"]
    assert len(rows) == 12 and all(Path(r["path"]).is_file() for r in rows)
    for r in rows:
        probs = [float(r[f"prob_{i}"]) for i in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-5
        assert {r["class_1"], r["class_2"], r["class_3"]} <= set(COLOURS)
    # the same images through evaluation: predict's top class is the evaluated model's prediction
    listed = tmp_path / "list.txt"
    listed.write_text("# two images\n" + "\n".join(rows[i]["path"] for i in (0, 1)) + "\n\n")
    again = tmp_path / "again.csv"
    code, text = run_mma(
        "predict", "--checkpoint", ckpt, "--images", listed, "--out", again, "--classes", "cat, dog_toy"
    )
    assert code == 0, text
    new = list(csv.DictReader(io.StringIO(again.read_text())))
    assert [r["path"] for r in new] == [rows[0]["path"], rows[1]["path"]]
    assert all({r["class_1"], r["class_2"]} == {"cat", "dog toy"} for r in new)
    assert all(abs(float(r["prob_1"]) + float(r["prob_2"]) - 1) < 1e-4 for r in new)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--classes", "cat"], "--classes 'cat' names one class; a classifier needs at least 2."),
        (["--classes", "cat,,dog"], "has an empty name"),
        (["--classes", "cat,cat"], "--classes names 'cat' more than once"),
        (["--top-k", "0"], "--top-k 0 must be at least 1."),
    ],
)
def test_predict_refuses_bad_options_in_one_sentence(trained, broken, tmp_path, extra, message):
    out, _ = trained
    ckpt = out / "checkpoints" / "few-shot-colours-seed1-k3.safetensors"
    code, text = run_mma("predict", "--checkpoint", ckpt, "--images", broken, "--out", tmp_path / "p.csv", *extra)
    assert code == 2 and text.count("\n") == 1 and message in text, text


def test_predict_keeps_an_existing_csv_and_refuses_new_classes_for_the_linear_probe(trained, broken, tmp_path):
    out, _ = trained
    kept = tmp_path / "kept.csv"
    kept.write_text("mine\n")
    ckpt = out / "checkpoints" / "few-shot-colours-seed1-k3.safetensors"
    code, text = run_mma("predict", "--checkpoint", ckpt, "--images", broken, "--out", kept)
    assert code == 2 and "exists; pass --overwrite" in text and kept.read_text() == "mine\n", text
    probe = out / "checkpoints" / "few-shot-colours-seed1-linear-probe.safetensors"
    code, text = run_mma(
        "predict", "--checkpoint", probe, "--images", broken, "--out", tmp_path / "x.csv", "--classes", "a,b"
    )
    assert code == 2 and "names only the classes it was trained on" in text, text
    code, text = run_mma("predict", "--checkpoint", probe, "--images", broken / "nope", "--out", tmp_path / "x.csv")
    assert code == 2 and "does not exist; give a folder of images" in text, text
    assert not (tmp_path / "x.csv").exists()


def test_evaluate_on_a_folder_without_splits_says_how_it_was_split(trained, tmp_path):
    out, _ = trained
    ckpt = out / "checkpoints" / "few-shot-colours-seed1-k3.safetensors"
    for name, rgb in (("red", (220, 30, 30)), ("blue", (30, 40, 220))):
        (tmp_path / "flat" / name).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (16, 16), rgb).save(tmp_path / "flat" / name / f"{i}.png")
    code, text = run_mma("evaluate", "--checkpoint", ckpt, "--data", f"folder:{tmp_path / 'flat'}", "--device", "cpu")
    assert code == 0, text
    assert text.count("has no train/val/test subfolders; its images are split 60/20/20") == 1, text
    assert re.search(r"flat\W+accuracy\W+2\W+0\W", text), text  # 1 test image of each class


def test_evaluate_data_refuses_a_one_class_dataset(trained, tmp_path):
    out, _ = trained
    ckpt = out / "checkpoints" / "few-shot-colours-seed1-k3.safetensors"
    (tmp_path / "one" / "test" / "red").mkdir(parents=True)
    Image.new("RGB", (16, 16), (220, 30, 30)).save(tmp_path / "one" / "test" / "red" / "0.png")
    code, text = run_mma("evaluate", "--checkpoint", ckpt, "--data", f"folder:{tmp_path / 'one'}", "--device", "cpu")
    assert code == 2 and text.count("\n") == 1, text  # not 'accuracy 100.00' (every image of its only class)
    assert "Dataset 'one' has 1 class(es) ['red']; a classifier needs at least 2 classes" in text


def test_each_reported_number_names_the_split_it_counted():
    from mma.adapters.protocols import EvalSplit, Task
    from mma.app.jobs.evaluate import _split_of

    def record(n):
        return {"dataset": "d", "stage": "test", "images": n, "unreadable": 0, "examples": []}

    cross = Task("cross-dataset", "src", None, [], ["a", "b"], [EvalSplit(n, None, [], []) for n in ("src", "t1")])
    read = {"src": record(10), "t1": record(7)}
    assert _split_of("source", cross, read)["images"] == 10 and _split_of("target:t1", cross, read)["images"] == 7
    assert _split_of("target_average", cross, read) is None  # derived from several splits: no one denominator
    b2n = {"base": record(5), "novel": record(6)}
    assert _split_of("novel", cross, b2n)["images"] == 6 and _split_of("hm", cross, b2n) is None
    assert _split_of("accuracy", cross, {"src": record(4)})["images"] == 4  # few-shot: the one split


def test_two_torchrun_ranks_count_the_same_images_as_one_process(trained, broken, tmp_path, run_cli):
    """Each rank reads a shard; the records merge the ranks' reports, so they equal the one-process records."""
    out, _ = trained
    args = [
        "train-selected", "--model", "mma-tiny:random", "--k", "3", "--protocol", "few-shot", "--shots", "4",
        "--epochs", "1", "--data", f"folder:{broken}", "--method", "mma,linear-probe", "--out", tmp_path / "two",
    ]  # fmt: skip
    run_cli(args, 2)
    for name in ("seed1-k3-mma.json", "seed1-linear-probe.json", "zeroshot.json"):
        one = read_json(out / "results" / "few-shot" / "colours" / name)
        two = read_json(tmp_path / "two" / "results" / "few-shot" / "colours" / name)
        assert two["evaluated"] == one["evaluated"], name
        assert two.get("train", {}).get("read") == one.get("train", {}).get("read"), name
