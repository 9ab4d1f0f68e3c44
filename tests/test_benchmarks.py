"""The GPU benchmark script still runs (a CPU smoke run: tiny model, tiny batches, one step)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench(script: str, args: list[str]) -> str:
    """Run ``benchmarks/<script>`` with *args*; its stdout (the run must succeed)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_bench_gpu_smoke_run_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    args = ["--device", "cpu", "--model", "mma-tiny:random", "--steps", "1", "--repeats", "1", "--warmup", "0"]
    args += ["--extract-batch-sizes", "4", "--train-batch-sizes", "4", "--classes", "5", "--json", str(out)]
    stdout = _bench("bench_gpu.py", args)
    record = json.loads(out.read_text())
    assert [(r["batch"], r["precision"]) for r in record["training"]] == [(4, "fp32"), (4, "fp16"), (4, "bf16")]
    assert all(r["steps_per_s"] > 0 for r in record["training"])
    assert all(r["capture_img_per_s"] > 0 and r["plain_img_per_s"] > 0 for r in record["extraction"])
    assert "(no autocast on cpu: same as fp32)" in stdout  # CPU rows are labelled honestly


def test_bench_methods_smoke_run_prints_every_method_and_its_ratio_to_mma(tmp_path):
    out = tmp_path / "methods.json"
    args = ["--model", "mma-tiny:random", "--classes", "3", "--steps", "1", "--warmup", "0", "--shots", "2"]
    args += ["--batch-size", "2", "--device", "cpu", "--json", str(out)]
    stdout = _bench("bench_methods.py", args)
    (record,) = json.loads(out.read_text())
    rows = {r["method"]: r for r in record["rows"]}
    assert list(rows) == [
        "mma", "mma++", "maple", "promptsrc", "mmrl", "clip-lora", "coop", "cocoop", "clip-adapter", "linear-probe",
    ]  # fmt: skip
    assert rows["maple"]["k"] == 4 and rows["clip-lora"]["k"] == 1  # each at its published k (depth 9, "all")
    assert rows["mma"]["ratio_to_mma"] == 1.0 and all(r["step_s"] > 0 for m, r in rows.items() if m != "linear-probe")
    assert rows["linear-probe"]["fit_s"] > 0 and "ratio to MMA" in stdout
    assert all(r["step_uncached_s"] > 0 and r["cache_speedup"] > 0 for m, r in rows.items() if m != "linear-probe")


def test_bench_train_step_smoke_run_prints_its_ratios():
    args = ["--model", "mma-tiny", "--classes", "4", "--steps", "1", "--batch-size", "2", "--k", "3"]
    stdout = _bench("bench_train_step.py", args)
    assert "recompute / cached" in stdout and "cached / limit" in stdout
