#!/usr/bin/env bash
# Regenerate the reference figures of the embedded default (mma-tiny on the built-in suite) shown in the
# README. Run from the repository root after `pip install -e .`; about 15-20 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs/reference}"

mma probe layers --model mma-tiny --model mma-tiny:random --out "$runs/probe"   # trained vs random: two panels
mma train-selected --run "$runs/probe" --out "$runs/train"
mma sweep-k --run "$runs/probe" --out "$runs/train"   # reuses the selected k's results from train-selected

cp "$runs/probe/figure1.png" "$runs/probe/figure1.csv" "$runs/probe/selection.json" figures/
cp "$runs/train/k_sweep.png" "$runs/train/k_sweep.csv" "$runs/train/k_sweep.json" figures/
cp "$runs/train/results_summary.csv" figures/base2novel_summary.csv
echo "figures/ updated from $runs"
