"""Whole commands against their baselines, timed in one run: what a user waits for.

Each comparison runs two command lines in fresh folders (side by side, one thread each, as on the project's
2-core machine; ``--sequential`` runs one after the other with all threads) and prints both times and their ratio:

* ``methods``   ``train-selected --method <all six> --seeds 1,2,3``  vs  ``train-selected --seeds 1,2,3`` (MMA alone)
* ``sweep``     ``sweep-k`` (k = 1..12, seeds 1-3)                   vs  ``train-selected --seeds 1,2,3``
* ``pipeline``  ``mma probe layers && mma train-selected`` with this checkout  vs  the same with ``--baseline``, the
  Python of another environment (e.g. one with ``main`` installed): the default pipeline before and after a change

Both sides of ``methods`` and ``sweep`` read the selection of one probe run (``--run``; made first when missing).

    python benchmarks/bench_runs.py methods sweep
    python benchmarks/bench_runs.py pipeline --baseline ~/venv-main/bin/python
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mma.io import atomic_write

ALL_METHODS = "mma,coop,cocoop,clip-adapter,linear-probe,zeroshot"


def _run(python: str, steps: list[list[str]], cwd: Path, threads: int | None) -> float:
    """Seconds for *steps* (``mma`` argument lists) run one after the other in *cwd*."""
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cwd.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for args in steps:
        log = cwd / f"{args[0]}.log"
        done = subprocess.run([python, "-m", "mma", *args], cwd=cwd, capture_output=True, text=True, env=env)
        atomic_write(log, lambda path, text=done.stdout + done.stderr: path.write_text(text))
        if done.returncode:
            sys.exit(f"'mma {' '.join(args)}' failed in {cwd} (see {log}).")
    return time.perf_counter() - start


def _pair(a, b, sequential: bool) -> tuple[float, float]:
    """Both sides' seconds: side by side on one thread each, or one after the other."""
    if sequential:
        return _run(*a, threads=None), _run(*b, threads=None)
    with ThreadPoolExecutor(2) as pool:
        fa, fb = pool.submit(_run, *a, threads=1), pool.submit(_run, *b, threads=1)
        return fa.result(), fb.result()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="+", choices=["methods", "sweep", "pipeline"])
    p.add_argument("--run", type=Path, default=None, help="probe run whose selection gives k (default: a fresh one)")
    p.add_argument("--baseline", default=None, help="the Python of the environment to compare the pipeline with")
    p.add_argument("--sequential", action="store_true", help="one command after the other, all threads")
    p.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="mma-bench-runs-"))
    me = sys.executable
    rows = []
    if {"methods", "sweep"} & set(args.what):
        run = args.run or work / "probe"
        if not (run / "selection.json").is_file():
            _run(me, [["probe", "layers", "--out", str(run)]], work, threads=None)
        sel = ["--run", str(run.resolve())]
    if "methods" in args.what:
        a = (me, [["train-selected", *sel, "--method", ALL_METHODS, "--out", "run"]], work / "methods-all")
        b = (me, [["train-selected", *sel, "--out", "run"]], work / "methods-mma")
        rows.append(("all six methods, 3 seeds", "MMA alone, 3 seeds", *_pair(a, b, args.sequential), 3.0))
    if "sweep" in args.what:
        a = (me, [["sweep-k", *sel, "--out", "run"]], work / "sweep")
        b = (me, [["train-selected", *sel, "--out", "run"]], work / "one")
        rows.append(("sweep-k, k = 1..12", "one train-selected", *_pair(a, b, args.sequential), 6.0))
    if "pipeline" in args.what:
        if not args.baseline:
            sys.exit("pipeline needs --baseline PYTHON, the interpreter of the environment to compare with.")
        steps = [["probe", "layers"], ["train-selected"]]
        base, mine = _pair((args.baseline, steps, work / "before"), (me, steps, work / "after"), args.sequential)
        rows.append(("default pipeline, before", "after", base, mine, None))
    print(f"runs in {work} ({'one after the other' if args.sequential else 'side by side, one thread each'})")
    for name_a, name_b, ta, tb, target in rows:
        goal = f"  (target <= {target:g}x)" if target else "  (target >= 1.5x)"
        print(f"  {name_a}: {ta:8.1f} s | {name_b}: {tb:8.1f} s | ratio {ta / tb:5.2f}x{goal}")


if __name__ == "__main__":
    main()
