"""The CLI as a user meets it: each command once, and its error paths exit non-zero with one clear line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mma import __version__
from mma.app.cli import app

runner = CliRunner()


def _run(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_help_and_version():
    code, out = _run("--help")
    assert code == 0 and "probe" in out and "train-selected" in out and "sweep-k" in out and "reproduce" in out
    code, out = _run("--version")
    assert code == 0 and out.strip() == f"mma {__version__}"


def test_models_lists_the_embedded_model_first():
    code, out = _run("models")
    assert code == 0
    rows = [line for line in out.splitlines() if "│" in line]
    assert "mma-tiny" in rows[0] and "(default)" in rows[0]
    assert "ViT-B-16" in out and "QuickGELU" in out


def test_datasets_lists_the_builtin_suite_and_coop():
    code, out = _run("datasets")
    assert code == 0
    for name in ("digits", "shapes", "colors", "patterns", "scenes", "textures", "imagenet", "eurosat"):
        assert name in out


@pytest.mark.parametrize(
    "args,message",
    [
        (["probe", "layers", "--samples", "0"], "--samples must be at least 1"),
        (["probe", "layers", "--model", "ViT-B-61"], "Unknown model 'ViT-B-61'"),
        (["probe", "layers", "--data", "coop:/no/such/root"], "/no/such/root"),
        (["probe", "layers", "--seeds", "1,x"], "is not a comma-separated list of integers"),
        (["probe", "layers", "--pooling", "max"], "--pooling 'max' is not valid"),
        (
            ["probe", "layers", "--xembed", "middle"],
            "--xembed 'middle' is not valid (valid: after-ln-pre, before-ln-pre)",
        ),
        (["probe", "select", "--run", "/no/such/run"], "has no layers_summary.csv"),
        (["train-selected", "--run", "/no/such/run"], "has no selection.json"),
        (["train-selected", "--k", "13", "--data", "builtin:colors"], "k=13 is out of range"),
        (
            ["train-selected", "--k", "2", "--data", "builtin:polygons", "--shots", "500", "--strict"],
            "fewer than --shots 500",
        ),
        (["train-selected", "--k", "2", "--protocol", "zero"], "--protocol 'zero' is not valid"),
        (["evaluate", "--checkpoint", "/no/such.safetensors"], "does not exist"),
        (["pretrain-tiny", "--out", "model.pt"], "must end in .safetensors"),
    ],
)
def test_bad_input_is_one_clear_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out = _run(
        *args,
        *(
            ["--out", str(tmp_path / "run")]
            if args[0] in ("probe", "train-selected") and args[1:2] != ["select"]
            else []
        ),
    )
    assert code == 2, out
    assert message in out
    assert "Traceback" not in out
    assert out.strip().startswith("Error:") and len(out.strip().splitlines()) == 1


def test_unwritable_out_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    code, out = _run("probe", "layers", "--out", str(blocker))
    assert code == 2 and "is a file, not a folder" in out
    assert blocker.read_text() == "keep me"
