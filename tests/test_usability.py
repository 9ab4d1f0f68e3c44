"""What a new user meets first: bad specs, small datasets, failed commands, pipes, progress and tables.

Each test pins one rough edge of issue 11: a text file as checkpoint, a checkpoint path without its
architecture, misspelt rules, small folder datasets (``--samples``, ``--shots``, ``--batch-size``), the data
spec a checkpoint records, run folders left behind by failed commands, ``mma models | head``, progress bars
after reuse, results.csv and the summary table, ``--alpha-eval 0``, table width, ``--help`` and the hub offline.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import colour_folder, one_line_error, run_mma, tripwire

from mma.errors import MmaError

# -- model specs ----------------------------------------------------------------------------------------


def test_a_text_file_as_checkpoint_is_one_sentence_and_leaves_no_folder(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\nline two\n")
    code, out = run_mma("probe", "layers", "--model", f"ViT-B-16:{notes}", "--out", tmp_path / "run")
    one_line_error(code, out, f"The checkpoint file {str(notes)!r} for model 'ViT-B-16' is a text file")
    assert not (tmp_path / "run").exists()
    junk = tmp_path / "weights.bin"
    junk.write_bytes(b"\x00\x01\x02 not weights")
    code, out = run_mma("probe", "layers", "--model", f"ViT-B-16:{junk}", "--out", tmp_path / "run")
    one_line_error(code, out, "is not a weights file")


def test_a_zip_that_is_no_checkpoint_is_one_sentence(tmp_path):
    from mma.probe.specs import load_model

    archive = tmp_path / "weights.pt"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("hello.txt", "not a torch checkpoint")
    with pytest.raises(MmaError, match=r"The checkpoint '.*weights\.pt' does not fit model 'mma-tiny' \("):
        load_model(f"mma-tiny:{archive}")


def test_a_path_alone_as_model_hints_name_colon_path(tmp_path):
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"PK\x03\x04")
    code, out = run_mma("probe", "layers", "--model", weights, "--out", tmp_path / "run")
    one_line_error(code, out, f"write NAME:PATH with the architecture the weights belong to, e.g. 'ViT-B-16:{weights}'")
    code, out = run_mma("probe", "layers", "--model", "ViT-B-16.pt", "--out", tmp_path / "run")
    one_line_error(code, out, "it looks like a checkpoint file")


def test_values_with_newlines_stay_on_one_line(tmp_path):
    code, out = run_mma("probe", "layers", "--model", "ViT-B-16:/no/such\nfile.pt", "--out", tmp_path / "run")
    one_line_error(code, out, r"'/no/such\nfile.pt'")


# -- rules ------------------------------------------------------------------------------------------------


def test_misspelt_rule_gets_did_you_mean_and_knee_takes_no_threshold(tmp_path, monkeypatch):
    tripwire(monkeypatch, "mma.probe.extract.extract_images")
    out = tmp_path / "run"
    code, text = run_mma("probe", "layers", "--rule", "saturaton", "--out", out)
    one_line_error(
        code, text, "--rule 'saturaton' is not valid (valid: saturation, gap, knee); did you mean 'saturation'?"
    )
    code, text = run_mma("probe", "layers", "--rule", "knee", "--threshold", "0.3", "--out", out)
    one_line_error(
        code, text, "--rule 'knee' takes no --threshold (got 0.3); the rules with a threshold are saturation, gap"
    )
    code, text = run_mma("probe", "select", "--run", out, "--rule", "knee", "--threshold", "0.3")
    one_line_error(code, text, "takes no --threshold")
    assert not out.exists()


# -- small folder datasets ----------------------------------------------------------------------------------


def _folder(root: Path, colours: dict, train: int, seed: int) -> str:
    counts = {"train": train, "val": 1, "test": 2}
    return f"folder:{colour_folder(root, colours, counts, seed=seed, noise=20, size=16)}"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Two 4-class folder datasets (base-to-novel needs 4) with 5 training images per class (20 each)."""
    root = tmp_path_factory.mktemp("small")
    warm = {"red": (220, 30, 30), "yellow": (230, 220, 30), "orange": (240, 140, 20), "pink": (240, 60, 170)}
    cold = {"blue": (30, 40, 220), "green": (30, 200, 40), "cyan": (30, 210, 220), "purple": (110, 40, 200)}
    return [_folder(root / "warm", warm, 5, 0), _folder(root / "cold", cold, 5, 1)]


def _depth(model: str) -> int:
    from mma.probe import layer_maps, load_model

    return layer_maps(load_model(model).model)["image"].depth


def test_probe_caps_samples_per_dataset_says_it_once_and_shows_reuse(small, tmp_path):
    out = tmp_path / "probe"
    args = ["probe", "layers", "--model", "mma-tiny:random", "--samples", "150", "--seeds", "1,2", "--out", out]
    code, text = run_mma(*args, *[a for d in small for a in ("--data", d)])
    assert code == 0, text
    for name in ("warm", "cold"):
        note = f"Dataset {name!r} has 20 training images, fewer than --samples 150: using all 20 of them."
        assert text.count(note) == 1, text
    assert re.search(r"extract mma-tiny:random: 100%.*40/40", text), text
    code, again = run_mma(*args, *[a for d in small for a in ("--data", d)])
    assert code == 0, again
    assert "warm: reusing all 20 stored rows." in again and "cold: reusing all 20 stored rows." in again
    probes = 2 * 2 * (_depth("mma-tiny:random") + 2)  # seeds x towers x layers
    assert f"mma-tiny:random: reusing {probes} probes (2 of 2 seeds)" in again, again
    assert re.search(rf"probe mma-tiny:random: 100%.*{probes}/{probes}", again), again
    assert re.search(r"extract mma-tiny:random: 100%.*40/40", again), again


def test_an_interrupted_extraction_says_what_it_resumes(small, tmp_path, monkeypatch):
    from mma.probe import capture

    original, calls = capture.LayerCapture.encode_image, [0]

    def interrupt_second_batch(self, images):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return original(self, images)

    monkeypatch.setattr(capture.LayerCapture, "encode_image", interrupt_second_batch)
    args = ["probe", "layers", "--model", "mma-tiny:random", "--samples", "10", "--seeds", "1", "--batch-size", "4"]
    args += ["--out", tmp_path / "probe", *[a for d in small for a in ("--data", d)]]
    code, text = run_mma(*args)
    assert code == 130 and "Interrupted; rerun the same command to resume." in text
    assert (tmp_path / "probe" / "store").is_dir()  # the work done so far stays
    monkeypatch.undo()
    code, text = run_mma(*args)
    assert code == 0, text
    assert "warm: resuming: 4 of 10 rows already done." in text, text
    assert re.search(r"extract mma-tiny:random: 100%.*20/20", text), text


def test_probe_splits_that_cannot_work_are_refused_before_extracting(small, tmp_path, monkeypatch):
    tripwire(monkeypatch, "mma.probe.extract.extract_images")
    data = [a for d in small for a in ("--data", d)]
    code, out = run_mma("probe", "layers", "--samples", "2", *data, "--out", tmp_path / "a")
    one_line_error(code, out, "Dataset 'warm' gives 2 sample(s) to the probe, which needs at least 3 per dataset")
    two = _folder(tmp_path / "two", {"red": (220, 30, 30), "blue": (30, 40, 220)}, 5, 2)
    code, out = run_mma("probe", "layers", "--text-split", "by-class", "--data", two, *data, "--out", tmp_path / "b")
    one_line_error(
        code,
        out,
        "--text-split by-class needs at least 3 classes per dataset; 'two' has 2 (use --text-split by-sample).",
    )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def trained(small, tmp_path_factory):
    """train-selected on the small folders: 16 shots and batch 16 asked, 5 and 8 images there."""
    from mma.app.jobs.train_selected import TrainSelectedConfig, train_selected

    out = tmp_path_factory.mktemp("trained")
    cfg = TrainSelectedConfig(
        model="mma-tiny:random",
        k=5,
        data=small,
        seeds=[1],
        out=out,
        progress=False,
        train={"epochs": 1, "shots": 16, "batch_size": 16, "augment": False, "alpha": 0.1, "lr": 0.05},
    )
    return cfg, train_selected(cfg)


def test_shots_and_batches_follow_what_a_small_dataset_has(trained):
    cfg, run = trained
    shots = [n for n in run.adjustments if "fewer than --shots 16" in n]
    batches = [n for n in run.adjustments if "fewer than --batch-size 16" in n]
    assert len(shots) == 2 and "using all of their images (the CoOp / Dassl rule)" in shots[0]
    # base-to-novel trains on the 2 base classes: 2 x 5 images in batches of all 10
    assert len(batches) == 2 and "has 10 training images for this task" in batches[0] and "hold 10" in batches[0]
    results = run.results[run.results["method"] == "mma"]
    assert len(results) == 2 * 3  # both datasets trained and evaluated (base, novel, hm)
    record = (cfg.out / "results" / "base2novel" / "warm" / "seed1-k5-mma.json").read_text()
    assert '"batch_size": 10' in record


def test_strict_keeps_the_shots_error_before_any_work(small, tmp_path, monkeypatch):
    tripwire(monkeypatch, "mma.adapters.train.fit_method", "mma.adapters.protocols.evaluate_task")
    args = ["train-selected", "--model", "mma-tiny:random", "--k", "2", "--shots", "16", "--strict"]
    code, out = run_mma(*args, *[a for d in small for a in ("--data", d)], "--out", tmp_path / "run")
    one_line_error(code, out, "Dataset 'warm' has 2 class(es) with fewer than --shots 16 training images")
    assert not (tmp_path / "run").exists()


def test_checkpoints_record_their_data_and_evaluate_uses_it(trained, small):
    from mma.adapters.checkpoint import read_adapter
    from mma.app.jobs.evaluate import evaluate_checkpoint, metrics_of
    from mma.io import read_json

    cfg, _ = trained
    ckpt = cfg.out / "checkpoints" / "base2novel-warm-seed1-k5.safetensors"
    _, meta = read_adapter(ckpt)
    assert meta["data"] == [f"folder:{Path(small[0][len('folder:') :]).absolute()}"]
    stored = read_json(cfg.out / "results" / "base2novel" / "warm" / "seed1-k5-mma.json")["metrics"]
    assert metrics_of(evaluate_checkpoint(ckpt, device="cpu")) == pytest.approx(stored)  # no --data: as recorded
    zero_shot = read_json(cfg.out / "results" / "base2novel" / "warm" / "zeroshot.json")["metrics"]
    frozen = evaluate_checkpoint(ckpt, device="cpu", alpha_eval=0.0)
    assert metrics_of(frozen) == pytest.approx(zero_shot) == metrics_of(frozen, "zero_shot")  # alpha 0: frozen
    code, out = run_mma("evaluate", "--checkpoint", ckpt, "--alpha-eval", "0", "--device", "cpu")
    assert code == 0 and re.search(rf"warm\W+hm\W+{zero_shot['hm']:.2f}\W+{zero_shot['hm']:.2f}", out), out
    code, out = run_mma("evaluate", "--checkpoint", ckpt, "--alpha-eval", "-1")
    one_line_error(code, out, "--alpha-eval=-1.0 is out of range")


def test_results_csv_holds_whole_seeds_and_ks(trained):
    cfg, _ = trained
    lines = (cfg.out / "results.csv").read_text().splitlines()
    # the depth (k, each tower's start, the method's own words, the files' name) and the prompt each row read
    assert lines[0] == "protocol,dataset,seed,k,k_image,k_text,depth,depth_key,method,metric,value,template"
    mma = [line.split(",") for line in lines[1:] if ",mma," in line]
    zero = [line.split(",") for line in lines[1:] if ",zeroshot," in line]
    assert mma and all(row[2] == "1" and row[3] == "5" and row[11] == "a photo of a {}." for row in mma)
    assert all(row[4:8] == ["5", "5", "blocks 5..12", "k5"] for row in mma)  # both towers from block 5 of 12
    assert zero and all(row[2] == "" and row[3] == "" and row[4] == "" for row in zero)


def test_the_summary_table_reads_base_novel_hm_with_no_nan_and_the_gain(trained):
    from mma.app.jobs.train_selected import summary_table

    _, run = trained
    table = summary_table(run.summary)
    assert list(table.columns) == [
        "method", "k", "dataset", "base", "novel", "hm", "mean_of_seed_hms", "mean_of_hms", "hm vs zero-shot"
    ]  # fmt: skip
    text = table.to_string()
    assert "nan" not in text.lower() and "±" not in text  # one seed: no spread to show
    per = run.summary.set_index(["method", "dataset", "metric"])["mean"]
    mma = table[(table["method"] == "mma") & (table["dataset"] == "warm")].iloc[0]
    assert mma["mean_of_hms"] == mma["hm"]  # a mean over one dataset's HM: its HM (issue 24: it was blank)
    assert mma["hm vs zero-shot"] == f"{per['mma', 'warm', 'hm'] - per['zeroshot', 'warm', 'hm']:+.1f}"
    assert table[table["method"] == "zeroshot"]["hm vs zero-shot"].eq("").all()
    assert table["dataset"].tolist()[-1] == "average"
    csv = pd.read_csv(run.out / "results_summary.csv")
    assert csv.loc[csv["method"] == "zeroshot", "vs_zeroshot"].isna().all()


def test_two_seed_tables_show_the_spread(trained, tmp_path):
    from mma.app.jobs.train_selected import summary_table

    summary = trained[1].summary.copy()
    summary.loc[summary["dataset"] != "average", "n"] = 2
    summary.loc[summary["dataset"] != "average", "std"] = 1.25
    table = summary_table(summary)
    assert table[table["dataset"] == "warm"]["base"].str.contains("±").all()
    assert not table[table["dataset"] == "average"]["base"].str.contains("±").any()


def test_the_training_bar_names_dataset_and_seed_and_reuse(trained, small, capsys):
    from mma.app.jobs.train_selected import TrainSelectedConfig, train_selected

    cfg, _ = trained
    again = TrainSelectedConfig(**{**cfg.__dict__, "progress": True})
    train_selected(again)
    out = "".join(capsys.readouterr())
    assert "resuming: 2 of 2 runs already done." in out and re.search(r"train MMA k=5: 100%.*2/2", out), out
    (cfg.out / "results" / "base2novel" / "cold" / "seed1-k5-mma.json").unlink()
    train_selected(again)
    out = "".join(capsys.readouterr())
    assert "cold seed 1" in out and "resuming: 1 of 2 runs already done." in out, out


# -- run folders of failed commands ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["probe", "layers", "--data", "builtin:nosuch"],
        ["train-selected", "--model", "mma-tiny:random", "--k", "0", "--data", "builtin:nosuch"],
        ["train-selected", "--model", "mma-tiny:random", "--k", "99"],
        ["train-selected", "--model", "mma-tiny", "--k", "2", "--data", "folder:/no/such/folder"],
    ],
    ids=["bad-data", "k-0", "k-99", "missing-folder"],
)
def test_a_failed_command_removes_the_run_folder_it_created(args, tmp_path, monkeypatch):
    tripwire(monkeypatch, "mma.adapters.train.fit_method", "mma.probe.extract.extract_images")
    out = tmp_path / "new" / "deeper" / "run"
    code, text = run_mma(*args, "--out", out)
    assert code == 2, text
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    code, _ = run_mma(*args, "--out", existing)
    assert code == 2 and existing.is_dir()  # a folder that was there before is never removed


def test_a_run_folder_holding_work_is_kept(tmp_path):
    from mma.app.jobs.outdir import run_folder

    with pytest.raises(KeyboardInterrupt), run_folder(tmp_path / "a" / "run") as out:
        (out / "store").mkdir()
        (out / "store" / "rows.npy").write_bytes(b"work")
        raise KeyboardInterrupt
    assert (tmp_path / "a" / "run" / "store" / "rows.npy").is_file()
    with pytest.raises(MmaError), run_folder(tmp_path / "b" / "run") as out:
        (out / "empty-subfolder").mkdir()
        raise MmaError("late")
    assert not (tmp_path / "b").exists()


def test_conv_towers_are_refused_by_train_selected_before_loading(tmp_path, monkeypatch):
    tripwire(monkeypatch, "mma.probe.specs.load_model")
    code, out = run_mma("train-selected", "--model", "RN50", "--k", "1", "--out", tmp_path / "run")
    one_line_error(code, out, "MMA needs transformer blocks, but the image tower of 'RN50' is a convolutional network")
    assert not (tmp_path / "run").exists()


# -- pipes, tables, help -----------------------------------------------------------------------------------


def test_a_closed_pipe_is_silent_and_exit_0():
    proc = subprocess.Popen(
        [sys.executable, "-m", "mma", "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ
    )
    proc.stdout.close()  # like 'head' that has read its lines
    err = proc.stderr.read().decode()
    assert proc.wait() == 0 and err == "", err


def test_rich_tables_respect_the_terminal_width():
    code, out = run_mma("models", env={"FORCE_COLOR": "1", "COLUMNS": "100", "TTY_COMPATIBLE": "1"})
    assert code == 0
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    table = [line for line in plain.splitlines() if "│" in line or "━" in line]
    assert table and max(len(line) for line in table) <= 100
    code, out = run_mma("models", env={"COLUMNS": "100"})  # not a terminal: wide enough not to wrap
    assert max(len(line) for line in out.splitlines() if "│" in line) >= 100


def test_models_marks_what_each_architecture_supports():
    code, out = run_mma("models", "--all")
    rows = {
        line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
        for line in out.splitlines()
        if line.count("│") >= 6
    }
    assert rows["EVA02-B-16"][-2:] == ["yes", "yes"]
    assert rows["RN50"][-2:] == ["yes", "no (stages)"]
    assert rows["MobileCLIP-B"][-2:] == ["yes", "yes"]


def test_help_shows_no_bool_placeholder():
    for args in (["--help"], ["probe", "layers", "--help"], ["train-selected", "--help"], ["models", "--help"]):
        code, out = run_mma(*args, env={"COLUMNS": "200"})
        assert code == 0 and "<bool>" not in out, out
        assert "--help" in out


# -- the hub, offline ------------------------------------------------------------------------------------


def test_offline_hub_models_fail_at_once_without_retries(monkeypatch):
    import huggingface_hub
    import huggingface_hub.utils._http as http

    from mma.probe import hub
    from mma.probe.specs import load_model

    def retried(*args, **kwargs):
        raise AssertionError("the hub was asked (with retries) although it cannot be reached")

    monkeypatch.setattr(http, "_http_backoff_base", retried)
    monkeypatch.setattr(hub, "_reachable", False)  # as found by the one short probe of an offline machine
    before = huggingface_hub.constants.HF_HUB_OFFLINE
    message = r"Could not load the tokenizer of 'hf-hub:nobody/nothing': the Hugging Face hub cannot be reached"
    with pytest.raises(MmaError, match=message):
        load_model("hf-hub:nobody/nothing")
    assert huggingface_hub.constants.HF_HUB_OFFLINE is before  # the switch is restored afterwards
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "_reachable", None)
    assert hub.hub_reachable() is False and hub._reachable is None  # HF_HUB_OFFLINE: not even the probe


def test_a_repeated_seed_is_refused_by_every_command_that_trains(tmp_path):
    """probe layers and reproduce refused --seeds 1,1; train-selected and sweep-k ran the seed once, silently."""
    for command in ("train-selected", "sweep-k"):
        code, out = run_mma(command, "--k" if command == "train-selected" else "--ks", "3", "--seeds", "1,1",
                         "--out", str(tmp_path / command))  # fmt: skip
        one_line_error(code, out, "--seeds [1, 1] repeats a seed; give distinct seeds.")
        assert not (tmp_path / command).exists()
