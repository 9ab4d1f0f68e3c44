"""How the embedded model's default recipe (``--recipe mma-tiny``) was chosen: on validation splits only.

For every candidate recipe, MMA is fitted base-to-novel on every dataset of the downstream suite (16 shots,
seeds given) and scored on the *validation* split: base validation images among the base classes, novel
validation images among the novel classes, HM of the two, averaged over datasets (HM of averages, as the
papers report). The candidate with the highest validation HM wins. No test image is ever read.

    python figures/recipe_search.py --k 4 --seeds 1 --out figures/recipe_search.csv

``--shard I/N`` evaluates every N-th candidate from the I-th (and the zero-shot row in shard 0 only), so two
cores can share the search; the shards' tables concatenate into the whole one (``--merge A B --out C``).
The table (one row per candidate, with validation base / novel / HM and the zero-shot model's) is written
to ``--out``; the README quotes it.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

import pandas as pd
import torch

from mma.adapters.evaluate import accuracy, harmonic_mean
from mma.adapters.mma import MultiModalAdapter
from mma.adapters.train import fit_adapter
from mma.probe import load_model
from mma.probe.data import draw_few_shot, load_datasets, split_base_novel, subsample_classes

GRID = {
    "alpha": (0.03, 0.1, 0.3),
    "lr": (0.01, 0.03, 0.1),
    "epochs": (5, 10),
}
# Beyond the grid's edges: around an earlier world's best corner (alpha 0.1, lr 0.1, 5 epochs), then around
# this grid's winner (alpha 0.03, lr 0.1, 10 epochs), which sat on three edges at once (smallest alpha, largest
# lr, most epochs)
EXTRA = (
    {"alpha": 0.1, "lr": 0.3, "epochs": 5},
    {"alpha": 0.1, "lr": 0.1, "epochs": 3},
    {"alpha": 0.1, "lr": 0.1, "epochs": 5, "batch_size": 8},
    {"alpha": 0.1, "lr": 0.1, "epochs": 5, "crop_scale_min": 0.6},
    {"alpha": 0.01, "lr": 0.1, "epochs": 10},
    {"alpha": 0.03, "lr": 0.3, "epochs": 10},
    {"alpha": 0.01, "lr": 0.3, "epochs": 10},
    {"alpha": 0.03, "lr": 0.1, "epochs": 10, "batch_size": 8},
    {"alpha": 0.03, "lr": 0.1, "epochs": 15},
    {"alpha": 0.03, "lr": 0.1, "epochs": 20},
)
FIXED = {"crop_scale_min": 1.0, "flip": False}  # 32 px images: no zoom; letters and digits must not be mirrored


def _val_split(d, labels):
    return subsample_classes(d.val, labels)


def evaluate_recipe(loaded, datasets, values: dict, seeds, k: int) -> dict:
    rows = []
    for d in datasets:
        base, novel = split_base_novel(d.num_classes)
        base_names = [d.classnames[i] for i in base]
        novel_names = [d.classnames[i] for i in novel]
        for seed in seeds:
            shots = subsample_classes(draw_few_shot(d, 16, seed).train, base)
            cfg = MultiModalAdapter.make_config({**FIXED, **values, "k": k, "shots": 16})
            if values:
                result = fit_adapter(loaded, d, shots, base_names, cfg, seed=seed)
            try:
                b = accuracy(loaded, d, _val_split(d, base), base_names)
                n = accuracy(loaded, d, _val_split(d, novel), novel_names)
            finally:
                if values:
                    result.adapter.detach()
            rows.append((d.name, seed, b, n))
    t = pd.DataFrame(rows, columns=["dataset", "seed", "base", "novel"]).groupby("dataset")[["base", "novel"]].mean()
    b, n = float(t["base"].mean()), float(t["novel"].mean())
    return {"val_base": b, "val_novel": n, "val_hm": harmonic_mean(b, n)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, required=True)
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--data", default="builtin")
    ap.add_argument("--out", type=Path, default=Path("figures/recipe_search.csv"))
    ap.add_argument("--shard", default="0/1", help="I/N: evaluate candidates I, I+N, I+2N, ...")
    ap.add_argument("--merge", nargs="+", type=Path, help="concatenate these shard tables into --out and stop")
    args = ap.parse_args()
    if args.merge:
        table = pd.concat([pd.read_csv(p) for p in args.merge], ignore_index=True)
        _report(table.sort_values("recipe", key=lambda r: r != "zero-shot", kind="stable"), args.out)
        return
    shard, shards = (int(v) for v in args.shard.split("/"))
    torch.set_num_threads(int(os.environ.get("MMA_THREADS", "2")))
    seeds = [int(s) for s in args.seeds.split(",")]
    loaded = load_model()
    datasets = load_datasets(args.data)
    rows = [{"recipe": "zero-shot", **evaluate_recipe(loaded, datasets, {}, seeds, args.k)}] if shard == 0 else []
    paper = {"alpha": 0.001, "lr": 0.0015, "epochs": 5, "crop_scale_min": 0.08, "flip": True}
    grid = [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())]
    candidates = [("paper", paper)] + [(" ".join(f"{k}={v}" for k, v in c.items()), c) for c in grid + list(EXTRA)]
    for name, values in candidates[shard::shards]:
        start = time.perf_counter()
        rows.append({"recipe": name, **values, **evaluate_recipe(loaded, datasets, values, seeds, args.k)})
        rows[-1]["seconds"] = round(time.perf_counter() - start, 1)
        print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    table = pd.DataFrame(rows)
    table["k"], table["seeds"] = args.k, args.seeds
    _report(table, args.out)


def _report(table: pd.DataFrame, out: Path) -> None:
    table.to_csv(out, index=False)
    tried = table[table["recipe"] != "zero-shot"].sort_values("val_hm", ascending=False)
    zero = table.loc[table["recipe"] == "zero-shot", "val_hm"]
    if len(tried) and len(zero):
        best = tried.iloc[0]
        print(f"best on validation HM: {best['recipe']} ({best['val_hm']:.1f}; zero-shot {zero.iloc[0]:.1f})")
    print(table[["recipe", "val_base", "val_novel", "val_hm"]].round(1).to_string(index=False))


if __name__ == "__main__":
    main()
