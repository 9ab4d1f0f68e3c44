"""The GPU benchmark script still runs (a CPU smoke run: tiny model, tiny batches, one step)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_gpu_smoke_run_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    args = ["--device", "cpu", "--model", "mma-tiny:random", "--steps", "1", "--repeats", "1", "--warmup", "0"]
    args += ["--extract-batch-sizes", "4", "--train-batch-sizes", "4", "--classes", "5", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    assert [(r["batch"], r["precision"]) for r in record["training"]] == [(4, "fp32"), (4, "fp16"), (4, "bf16")]
    assert all(r["steps_per_s"] > 0 for r in record["training"])
    assert all(r["capture_img_per_s"] > 0 and r["plain_img_per_s"] > 0 for r in record["extraction"])
    assert "(no autocast on cpu: same as fp32)" in done.stdout  # CPU rows are labelled honestly
