#!/usr/bin/env bash
# Regenerate the reference figures and tables of the embedded default (mma-tiny on the downstream suite)
# that the README shows, and the tuned recipes behind it. Run from the repository root after `pip install -e .`;
# about four hours on two CPU cores (the tuning, the k sweep, the methods tables and the regret sweep are most of
# it); each step's time goes to $runs/timings.txt (copied to figures/). The README's numbers come from these files (and
# tests/test_readme_numbers.py checks them against the CSVs).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs/reference}"
step() { local start=$SECONDS; "$@"; echo "[$((SECONDS - start)) s] $*" | tee -a "$runs/timings.txt"; }
mkdir -p "$runs" && : > "$runs/timings.txt"

# Two chains of steps run side by side, one thread each (the machine this is built on has 2 cores).
export OMP_NUM_THREADS=1
# Every embedded run trains without augmentation (32 px images, the model's input; flips change letters and digits);
# the paper recipe otherwise, and the candidates of every method's tuning, are laid over this
NO_AUG=figures/tune/base.json
# Tuning: every method the same budget (8 candidates, its published values first) and seed, scored on the
# validation images of pseudo-base / pseudo-novel halves of the base classes; MMA at k = 5 (the paper's), set in
# advance. The chosen values become the recipe mma-tiny (adapters/tuned/).
tune() { step mma tune --method "$1" --budget 8 --seeds 1 --config "$NO_AUG" --out "$runs/tune/$1"; }
(tune mma; tune cocoop) &
chain_a=$!
(tune coop; tune clip-adapter) &
chain_b=$!
wait "$chain_a"
wait "$chain_b"
for m in mma coop cocoop clip-adapter; do cp "$runs/tune/$m/recipe.json" "adapters/tuned/mma-tiny-$m.json"; done

# the default run alone decides k (the README's first command); both chains read it
step mma probe layers --out "$runs/default"
python -m mma.probe.embedded.novel "$runs/made-up-names" > /dev/null
(
    # base-to-novel at the selected k, seeds 1-3 (tuned recipe); accuracy against k (reuses the selected k's results)
    step mma train-selected --run "$runs/default" --out "$runs/b2n"
    step mma sweep-k --run "$runs/default" --out "$runs/b2n"
    # cross-dataset and domain generalisation at the paper's protocol k (one cache: domain-gen reuses the adapter
    # cross-dataset trained on objects); a folder of pictures named with made-up words: zero-shot vs 16-shot MMA
    step mma train-selected --protocol cross-dataset --out "$runs/xd" --cache-dir "$runs/xd-dg-cache"
    step mma train-selected --protocol domain-gen --out "$runs/dg" --cache-dir "$runs/xd-dg-cache"
    step mma train-selected --run "$runs/default" --data "folder:$runs/made-up-names" --protocol few-shot \
        --out "$runs/made-up"
) &
chain_a=$!
(
    # Figure 1: the trained model and the same architecture with random weights, one panel each
    step mma probe layers --model mma-tiny --model mma-tiny:random --out "$runs/probe"
    # every method beside MMA, seeds 1-3: at its tuned recipe (a method without a tuning record: its paper values,
    # no augmentation), then at its paper recipe; the paper run reuses the trainings that are the same (one cache)
    methods=mma,mma++,maple,promptsrc,mmrl,coop,cocoop,clip-adapter,linear-probe,zeroshot
    step mma train-selected --run "$runs/default" --method "$methods" --out "$runs/methods"
    # CLIP-LoRA at seed 1 alone: its published budget (320 epochs here) costs about 25 minutes per seed
    step mma train-selected --run "$runs/default" --method clip-lora --seeds 1 --out "$runs/methods"
    step mma train-selected --run "$runs/default" --recipe paper --config "$NO_AUG" --method "$methods" \
        --out "$runs/methods-paper" --cache-dir "$runs/methods/cache"
    step mma train-selected --run "$runs/default" --recipe paper --config "$NO_AUG" --method clip-lora --seeds 1 \
        --out "$runs/methods-paper" --cache-dir "$runs/methods/cache"
) &
chain_b=$!
wait "$chain_a"
wait "$chain_b"
# the regret of the probe-chosen depth, every layer-deep method, on the first three datasets of the suite (the whole
# suite at every depth of every method costs hours on two cores); the probe's choices come from the methods' cache
step mma sweep-k --run "$runs/default" --data builtin:colors,digits,letters \
    --method mma,maple,mma++,promptsrc,mmrl --ks 2,6,10 --out "$runs/regret" --cache-dir "$runs/methods/cache"

cp "$runs/probe/figure1.png" "$runs/probe/figure1.csv" figures/
# what Figure 1 marks besides the curves (every rule's k, each seed's), so it can be redrawn from figures/ alone
cp "$runs/probe/selection.json" figures/figure1_selection.json
cp "$runs/probe/run.json" figures/figure1_run.json
cp "$runs/default/selection.json" "$runs/default/layers_summary.csv" figures/
cp "$runs/b2n/k_sweep.png" "$runs/b2n/k_sweep.csv" "$runs/b2n/k_sweep.json" figures/
cp "$runs/regret/regret.png" "$runs/regret/regret.csv" "$runs/regret/regret.json" figures/
cp "$runs/b2n/results_summary.csv" figures/base2novel_summary.csv
cp "$runs/xd/results_summary.csv" figures/cross_dataset_summary.csv
cp "$runs/dg/results_summary.csv" figures/domain_gen_summary.csv
cp "$runs/made-up/results_summary.csv" figures/made_up_names_summary.csv
cp "$runs/methods/methods.png" figures/methods_base2novel.png
cp "$runs/methods/methods.csv" figures/methods_base2novel.csv
cp "$runs/methods/results_summary.csv" figures/methods_base2novel_summary.csv
cp "$runs/methods-paper/methods.csv" figures/methods_base2novel_paper.csv
cp "$runs/methods-paper/results_summary.csv" figures/methods_base2novel_paper_summary.csv
cp "$runs/timings.txt" figures/timings.txt
python figures/readme_numbers.py --write  # the README's generated tables, from these files
echo "figures/ updated from $runs"
