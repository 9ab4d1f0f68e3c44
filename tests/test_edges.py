"""Issue 24's smaller edges, each as the command a user would type and what it must print.

An adapter checkpoint given as a model's weights, one folder probed alone, a one-class dataset, a class with only
test images, a folder split without split subfolders, a torch / torchvision build mismatch, ``reproduce --help``
and its missing ROOT, ``builtin:``, ``--seeds 1,1``, ``mean_of_hms`` on dataset rows, and a path with a quote.
"""

from __future__ import annotations

import builtins
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import safetensors.torch
import torch
from conftest import one_line_error, run_mma, tripwire
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from mma.adapters.checkpoint import read_adapter, save_adapter
from mma.adapters.protocols import check_shots, make_tasks
from mma.app.cli import app
from mma.app.results import summary_table
from mma.coop_layout import coop_folder_names
from mma.errors import MmaError, command_line
from mma.probe.data import ImageDataset, Sample, load_datasets, parse_data_spec
from mma.probe.openclip import build_mismatch
from mma.probe.specs import adapter_checkpoint_record

runner = CliRunner()


def _images(folder: Path, n: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        Image.fromarray(torch.randint(0, 255, (16, 16, 3), generator=g, dtype=torch.uint8).numpy()).save(
            folder / f"{i}.png"
        )


def _split_folder(root: Path, classes: list[str], n: int = 4) -> str:
    for s, split in enumerate(("train", "val", "test")):
        for c, name in enumerate(classes):
            _images(root / split / name, n, seed=10 * s + c)
    return f"folder:{root}"


# -- 1. an adapter checkpoint as a model's weights ---------------------------------------------------------


class _Adapter(nn.Module):
    """Enough of a method for save_adapter, the writer every adapter checkpoint comes from."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(2, 2)

    def config(self) -> dict:
        return {"k": 11}


@pytest.fixture
def adapter_checkpoint(tmp_path) -> Path:
    path = tmp_path / "few-shot-scenes-seed1-k11.safetensors"
    save_adapter(_Adapter(), path, {"model": "mma-tiny", "protocol": "few-shot", "dataset": "scenes"})
    assert read_adapter(path)[1]["adapter"] == {"k": 11}  # what mma evaluate reads
    return path


@pytest.mark.parametrize("model", ["mma-tiny", "ViT-B-16"])
def test_an_adapter_checkpoint_as_model_weights_is_one_sentence_naming_evaluate(
    model, adapter_checkpoint, tmp_path, monkeypatch
):
    """mma-tiny:ADAPTER printed a raw 'RuntimeError: Error(s) in loading state_dict'; now both say what it is."""
    tripwire(monkeypatch, "mma.probe.specs.load_model")
    code, out = run_mma("probe", "layers", "--model", f"{model}:{adapter_checkpoint}", "--out", tmp_path / "run")
    one_line_error(
        code,
        out,
        f"The checkpoint file {str(adapter_checkpoint)!r} given as the weights of model {model!r} looks like an "
        "adapter checkpoint written by 'mma train-selected', not a model's weights; 'mma evaluate --checkpoint' "
        "reads it, and --model takes the model it adapts ('mma-tiny').",
    )
    assert not (tmp_path / "run").exists()


def test_other_weights_for_the_embedded_model_are_one_sentence(tmp_path):
    other = tmp_path / "other.safetensors"
    safetensors.torch.save_file({"a": torch.zeros(3)}, str(other))
    assert adapter_checkpoint_record(other) is None
    code, out = run_mma("probe", "layers", "--model", f"mma-tiny:{other}", "--out", tmp_path / "run")
    one_line_error(code, out, f"The checkpoint {str(other)!r} does not fit model 'mma-tiny' (RuntimeError: ")
    assert not (tmp_path / "run").exists()


# -- 2. one folder probed alone ------------------------------------------------------------------------------


def test_probing_one_folder_alone_says_add_builtin_before_loading_the_model(tmp_path, monkeypatch):
    tripwire(monkeypatch, "mma.probe.specs.parse_model_spec", "mma.probe.specs.load_model")
    one = _split_folder(tmp_path / "pets", ["cat", "dog"])
    code, out = run_mma("probe", "layers", "--data", one, "--out", tmp_path / "run")
    one_line_error(
        code,
        out,
        "A 'which dataset?' probe needs at least 2 datasets to tell apart, and --data gives 1 (['pets']); add "
        "another, e.g. --data builtin beside it.",
    )
    assert not (tmp_path / "run").exists()


# -- 3. a one-class dataset ------------------------------------------------------------------------------------


def test_a_one_class_folder_is_refused_in_few_shot_before_loading_the_model(tmp_path, monkeypatch):
    """few-shot on one class printed 'accuracy 100.0'."""
    tripwire(monkeypatch, "mma.probe.specs.load_model")
    one = _split_folder(tmp_path / "one", ["cat"])
    code, out = run_mma(
        "train-selected", "--k", "11", "--data", one, "--protocol", "few-shot", "--seeds", "1", "--out", tmp_path / "r"
    )
    one_line_error(code, out, "Dataset 'one' has 1 class(es) ['cat']; a classifier needs at least 2 classes")
    assert not (tmp_path / "r").exists()


def test_a_one_class_target_is_refused_across_datasets(tmp_path):
    (source,) = load_datasets(_split_folder(tmp_path / "src", ["cat", "dog"]))
    (target,) = load_datasets(_split_folder(tmp_path / "tgt", ["eel"]))
    with pytest.raises(MmaError, match=r"Dataset 'tgt' has 1 class\(es\) \['eel'\]; a classifier needs at least 2"):
        make_tasks("cross-dataset", [source, target], shots=2, seed=1)
    assert make_tasks("few-shot", [source], shots=2, seed=1)  # two classes are fine


# -- 4. a class with test images only ---------------------------------------------------------------------------


def _test_only() -> ImageDataset:
    splits = {
        "train": [Sample(f"t{i}", y) for y in (0, 1) for i in range(3)],
        "val": [],
        "test": [Sample(f"e{i}", y) for y in (0, 1, 2) for i in range(2)],
    }
    return ImageDataset("zoo", ["cat", "dog", "eel"], splits, loader=lambda ref: None)


def test_a_class_with_test_images_only_is_said_as_that_not_as_fewer_shots():
    """It read 'fewer than 16 training images (0)'."""
    note = check_shots(_test_only(), 2)
    assert note == (
        "Dataset 'zoo': class 'eel' has no training images (only test images); it trains on none and is still "
        "evaluated."
    )
    with pytest.raises(MmaError, match=r"class 'eel' has no training images \(only test images\); add training images"):
        check_shots(_test_only(), 2, strict=True)
    assert check_shots(_test_only(), 3, labels=[0, 1]) is None  # the other classes have enough


def test_train_selected_says_the_test_only_class_in_one_line(tmp_path, monkeypatch):
    tripwire(monkeypatch, "mma.probe.specs.load_model")
    data = _split_folder(tmp_path / "zoo", ["cat", "dog"])
    _images(tmp_path / "zoo" / "test" / "eel", 2, seed=99)
    code, out = run_mma(
        "train-selected", "--k", "11", "--data", data, "--protocol", "few-shot", "--seeds", "1", "--strict",
        "--out", tmp_path / "r",
    )  # fmt: skip
    one_line_error(code, out, "Dataset 'zoo': class 'eel' has no training images (only test images)")
    assert "fewer than" not in out


# -- 5. the implicit 60/20/20 split, said once ---------------------------------------------------------------


def test_a_folder_without_split_subfolders_says_its_split_once(tmp_path, monkeypatch):
    for c, name in enumerate(("cat", "dog", "fox")):
        _images(tmp_path / "flat" / name, 5, seed=c)
    (flat,) = load_datasets(f"folder:{tmp_path / 'flat'}")
    note = (
        f"folder:{tmp_path / 'flat'} has no train/val/test subfolders; its images are split 60/20/20 (train/val/test) "
        "per class by a fixed seeded draw (seed 0, the same every run)."
    )
    assert flat.notes == [note]
    (split,) = load_datasets(_split_folder(tmp_path / "split", ["cat", "dog"]))
    assert split.notes == []
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "".join(f"flat/{c}/{i}.png,{c}\n" for c in ("cat", "dog") for i in range(5)))
    (csv,) = load_datasets(f"csv:{manifest}")
    assert csv.notes and "has no 'split' column; its images are split 60/20/20" in csv.notes[0]
    # the jobs say it once per dataset (two seeds), before the model loads, and record it
    tripwire(monkeypatch, "mma.probe.specs.load_model")
    flat_spec = f"folder:{tmp_path / 'flat'}"
    result = runner.invoke(
        app,
        ["train-selected", "--k", "11", "--data", flat_spec, "--protocol", "few-shot", "--seeds", "1,2",
         "--shots", "1", "--out", str(tmp_path / "run")],
    )  # fmt: skip
    assert isinstance(result.exception, AssertionError)  # the tripwire: the note came before the model
    assert result.output.count("has no train/val/test subfolders") == 1, result.output


# -- 6. torch and torchvision from different builds ---------------------------------------------------------


def test_a_torch_torchvision_mismatch_is_one_sentence_with_the_fix(tmp_path, monkeypatch):
    real = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == "open_clip" or name.startswith("open_clip."):
            raise RuntimeError("operator torchvision::nms does not exist")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken)
    fix = "pip install --force-reinstall torch torchvision (with the same --index-url for a CPU or CUDA build)."
    for args in (["models"], ["probe", "layers", "--out", tmp_path / "run"]):
        code, out = run_mma(*args)
        one_line_error(code, out, "are builds that do not match")
        assert "'operator torchvision::nms does not exist'" in out and out.rstrip().endswith(fix)
    assert not (tmp_path / "run").exists()


def test_other_import_errors_are_not_called_a_mismatch():
    assert build_mismatch(RuntimeError("CUDA out of memory")) is None
    assert build_mismatch(ImportError("torchvision::nms")) is None


# -- 7. reproduce: the expected folders in the help, ROOT checked first ---------------------------------


def test_reproduce_help_lists_the_coop_folders_without_importing_torch():
    code = (
        "import sys; from typer.testing import CliRunner; from mma.app.cli import app; "
        "r = CliRunner().invoke(app, ['reproduce', '--help'], terminal_width=400); "
        "print(r.output); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.rstrip().endswith("False"), out  # the help stays cheap
    folders = coop_folder_names()
    assert len(folders) == 15 and "caltech-101" in folders and "imagenet-rendition" in folders
    listed = " ".join(out.split())
    assert ", ".join(f"{f}/" for f in folders) in listed, listed


def test_reproduce_checks_root_before_loading_the_model(tmp_path, monkeypatch):
    tripwire(monkeypatch, "mma.probe.specs.parse_model_spec", "mma.probe.specs.load_model")
    missing = tmp_path / "no-such-root"
    code, out = run_mma("reproduce", "--data", f"coop:{missing}", "--out", tmp_path / "run")
    one_line_error(code, out, f"The CoOp data root {str(missing)!r} does not exist")
    assert "caltech-101/" in out and "imagenet-rendition/" in out
    assert not (tmp_path / "run").exists()
    code = (  # and before torch is imported at all (the check needs the spec syntax and the folder names only)
        "import sys; from typer.testing import CliRunner; from mma.app.cli import app; "
        f"r = CliRunner().invoke(app, ['reproduce', '--data', {f'coop:{missing}'!r}]); "
        "print(r.exit_code, r.output.count(chr(10)), 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert done.split() == ["2", "1", "False"], done


# -- 8. builtin: with nothing after the colon --------------------------------------------------------------


def test_builtin_colon_is_an_error_like_folder_colon(tmp_path):
    code, out = run_mma("probe", "layers", "--data", "builtin:", "--out", tmp_path / "run")
    one_line_error(
        code,
        out,
        "The data spec 'builtin:' has nothing after ':'; write builtin for the whole suite, or builtin:NAME,... for "
        "some of its datasets ('mma datasets' lists them).",
    )
    code, out = run_mma("probe", "layers", "--data", "folder:", "--out", tmp_path / "run")
    one_line_error(code, out, "The data spec 'folder:' needs a path: folder:PATH.")
    assert parse_data_spec("builtin").names is None and parse_data_spec("builtin:shapes").names == ("shapes",)
    assert not (tmp_path / "run").exists()


# -- 9. --seeds 1,1 ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["tune"],
        ["probe", "layers"],
        ["sweep-k", "--ks", "3"],
        ["reproduce", "--data", "coop:."],
        ["train-selected", "--k", "3"],
    ],
    ids=lambda c: c[0] if c[0] != "probe" else "probe-layers",
)
def test_a_repeated_seed_is_refused_by_every_command_with_seeds(command, tmp_path, monkeypatch):
    tripwire(monkeypatch, "mma.probe.specs.load_model")
    code, out = run_mma(*command, "--seeds", "1,1", "--out", tmp_path / "run")
    one_line_error(code, out, "--seeds [1, 1] repeats a seed; give distinct seeds.")
    assert not (tmp_path / "run").exists()


# -- 10. mean_of_hms on dataset rows ------------------------------------------------------------------------------


def test_mean_of_hms_is_filled_on_dataset_rows_with_their_hm():
    rows = []
    for dataset, (b, n, hm) in {"a": (80.0, 60.0, 68.57), "b": (50.0, 40.0, 44.44)}.items():
        for metric, mean in (("base", b), ("novel", n), ("hm", hm), ("mean_of_seed_hms", hm)):
            rows.append(dict(dataset=dataset, metric=metric, mean=mean, std=0.0, n=1))
    for metric, mean in (
        ("base", 65.0),
        ("novel", 50.0),
        ("hm", 56.52),
        ("mean_of_seed_hms", 56.5),
        ("mean_of_hms", 56.505),
    ):
        rows.append(dict(dataset="average", metric=metric, mean=mean, std=float("nan"), n=2))
    summary = pd.DataFrame(rows).assign(protocol="base2novel", method="mma", k=5, vs_zeroshot=float("nan"))
    table = summary_table(summary).set_index("dataset")
    assert table.loc["a", "mean_of_hms"] == table.loc["a", "hm"] == "68.6"
    assert table.loc["b", "mean_of_hms"] == "44.4"
    assert table.loc["average", "mean_of_hms"] == "56.5" and table.loc["average", "hm"] == "56.5"
    assert (table["mean_of_hms"] != "").all()


# -- 11. a path with a quote ------------------------------------------------------------------------------------


def test_a_suggested_command_with_a_quoted_path_does_not_nest_quotes(tmp_path):
    run = tmp_path / "it's"
    run.mkdir()
    for args, lead in (
        (["probe", "select", "--run", run], "has no layers_summary.csv; make it first with: "),
        (
            ["train-selected", "--run", run, "--out", tmp_path / "o"],
            "has no selection.json; pass --k, or make it first with: ",
        ),
    ):
        code, out = run_mma(*args)
        one_line_error(code, out, f"The run folder {str(run)!r} " + lead)
        suggested = out.rstrip("\n").split(lead, 1)[1]
        assert shlex.split(suggested) == ["mma", "probe", "layers", "--out", str(run)]  # pastes as it reads
        assert "''" not in out
    assert command_line("mma", "probe", "layers", "--out", "/runs/a") == "mma probe layers --out /runs/a"
    assert command_line("mma", "--out", "/my runs") == "mma --out '/my runs'"
