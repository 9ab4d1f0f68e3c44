"""A method from another package: ``examples/plugin_method``, installed, runs like a built-in one.

The example package is installed (``pip install --target``) into a folder of its own, which the CLI processes
below see on their path; the test session's own registry stays the built-in one.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mma.adapters.methods import ENTRY_POINT_GROUP

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin_method"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The example package, installed into a folder of its own (no dependencies: mma is already here); built with
    this environment's setuptools when it has one, else in pip's isolated build environment."""
    target = tmp_path_factory.mktemp("site")
    source = shutil.copytree(EXAMPLE, tmp_path_factory.mktemp("build") / "plugin_method")  # builds write beside it
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *isolation, "--target", target, source],
        check=True,
        cwd=source,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    return target


def _mma(site: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-m", "mma", *map(str, args)]
    return subprocess.run(argv, cwd=cwd, env=env, text=True, capture_output=True)


def test_the_example_declares_its_entry_point():
    text = (EXAMPLE / "pyproject.toml").read_text()
    assert f'[project.entry-points."{ENTRY_POINT_GROUP}"]' in text and "feature-lora" in text


@pytest.mark.slow
def test_a_plugin_method_runs_end_to_end_like_a_built_in_one(site, tmp_path):
    listed = _mma(site, "methods", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "feature-lora" in line)
    # 2 towers x (96 x 4 + 4 x 96) on mma-tiny's 96-wide features
    assert "mma_feature_lora" in row and "rank=4" in row and "1,536" in row

    out = tmp_path / "run"
    config = tmp_path / "values.toml"
    config.write_text("epochs = 3\n[feature-lora]\nrank = 2\nlr = 0.05\n")  # its own table: its own values
    args = ["train-selected", "--model", "mma-tiny", "--k", "10", "--data", "builtin:colors", "--seeds", "1"]
    done = _mma(site, *args, "--method", "mma,feature-lora", "--config", config, "--out", out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Recipe mma-tiny, base2novel (feature-lora): " in done.stdout  # its own recipe line
    assert "methods side by side" in done.stdout and "feature-lora" in done.stdout.split("methods side by side")[1]

    summary = list(csv.DictReader((out / "results_summary.csv").open()))
    assert {r["method"] for r in summary} == {"zeroshot", "mma", "feature-lora"}
    mine = {r["metric"]: r for r in summary if r["method"] == "feature-lora" and r["dataset"] == "average"}
    assert {"base", "novel", "hm"} <= set(mine) and mine["hm"]["vs_zeroshot"] != ""
    assert "feature-lora" in (out / "methods.csv").read_text() and (out / "methods.png").stat().st_size > 0

    result = json.loads((out / "results" / "base2novel" / "colors" / "seed1-feature-lora.json").read_text())
    assert result["k"] is None and result["train"]["trainable_parameters"] == 2 * (96 * 2 + 2 * 96)
    assert result["train_config"]["rank"] == 2 and result["train_config"]["lr"] == 0.05
    assert result["train_config"]["epochs"] == 3 and "alpha" not in result["train_config"]  # MMA's are not its own
    record = json.loads((out / "train-feature-lora.json").read_text())
    assert record["train_sources"]["rank"] == f"config file ({config}) (feature-lora)"  # its own table
    assert record["train_sources"]["epochs"] == f"config file ({config})"  # the flat value

    again = _mma(site, "evaluate", "--checkpoint", result["checkpoint"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    for metric in ("base", "novel", "hm"):  # the table's row: dataset, metric, images, unreadable, accuracy, ...
        assert re.search(rf"\W{metric}\W+(\d+\W+0\W+)?{result['metrics'][metric]:.2f}\W", again.stdout), again.stdout


def test_a_broken_plugin_is_one_sentence_naming_it(tmp_path):
    """An entry point that does not load names itself, and mma says so in one line (exit 2)."""
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nbroken = no_such_module:Method\n")
    done = _mma(tmp_path, "train-selected", "--method", "broken", cwd=tmp_path)
    assert done.returncode == 2
    assert "'broken' (no_such_module:Method) cannot be imported" in done.stderr and "Traceback" not in done.stderr
