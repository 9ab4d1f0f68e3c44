"""Job: accuracy against the first adapted block k (``mma sweep-k``), beside the k the probe selected.

Trains and evaluates the depth-indexed method (MMA) base-to-novel at every k (one train-selected run per k in
one folder, the model loaded once), the other methods of ``--method`` once, and plots base / novel / HM against
k with the zero-shot model and the other methods as horizontal lines. Writes ``k_sweep.png`` / ``.pdf`` /
``.csv`` and ``k_sweep.json`` (every k's HM, the best k, the selected k and each rule's k, how far each lies
below the best, and each k's difference to the best paired by seed with its noise band, :func:`paired_to_best`: the
selected k is called the best only when every other k lies below that band).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

from mma import distributed
from mma.adapters.methods import BASELINE, DEFAULT, parse_methods, trained_methods
from mma.adapters.protocols import get_protocol
from mma.analysis.plots import plot_k_sweep
from mma.app.results import method_averages
from mma.app.settings import (
    DEFAULT_PROBE_RUN,
    TrainSelectedConfig,
    check_template,
    read_selection,
    selection_layers,
)
from mma.app.training_logs import check_loggers
from mma.errors import MmaError
from mma.io import atomic_write_json
from mma.metrics import harmonic_mean
from mma.probe.extract import resolve_device
from mma.probe.layers import layer_maps
from mma.probe.specs import load_model, parse_model_spec
from mma.seeding import check_seeds

from .train_selected import train_selected

__all__ = ["sweep_k"]

_PLOTTED = ("base", "novel", "hm")


def sweep_k(cfg: TrainSelectedConfig, ks: list[int] | None = None) -> dict | None:
    """Train and evaluate at every k (or *ks*), plot base / novel / HM against k, compare with the selected k.

    None off rank 0 under torchrun.
    """
    if not set(_PLOTTED) <= set(get_protocol(cfg.protocol).metrics):
        raise MmaError("sweep-k plots base / novel / HM, so it runs --protocol base2novel only.")
    check_seeds(cfg.seeds)  # before any weights are loaded
    check_template(cfg.template)
    cfg.log = check_loggers(cfg.log)
    methods = trained_methods(parse_methods(cfg.methods))
    swept = [m for m in methods if m.depth_indexed] or [DEFAULT]
    if len(swept) > 1:
        raise MmaError(f"sweep-k sweeps one method with a depth; --method names {', '.join(m.name for m in swept)}.")
    swept = swept[0]
    names = [swept.name, *(m.name for m in methods if m is not swept)]  # the others train once, at the first k
    # the selected k and every rule's k, to say which rule would have chosen best; a given probe run must have a
    # selection, the default one may be missing
    selection = selection_layers(TrainSelectedConfig(run=cfg.run, model=cfg.model))
    selected, rules = selection.k, {}
    if selected is not None:
        rules = read_selection(cfg.run or DEFAULT_PROBE_RUN, selection.model).get("rules", {})
    spec = parse_model_spec(selection.model)
    swept.check_spec(spec)  # before any weights are loaded
    _, device = distributed.setup(resolve_device(cfg.device))
    loaded = load_model(spec, device=str(device))
    if ks is None:
        ks = list(range(1, min(m.depth for m in layer_maps(loaded.model).values()) + 1))
    runs = []
    for k in ks:
        one = TrainSelectedConfig(**{**asdict(cfg), "k": k, "model": selection.model, "run": None, "methods": names})
        runs.append(train_selected(one, loaded=loaded))
    if not distributed.world().main:
        return None
    return _report(cfg, runs[-1].results, swept, ks, selected, rules, str(spec))


def paired_to_best(per_seed, best_k: int) -> dict[int, dict]:
    """For every k, its HM minus the best k's, paired by seed (the same few-shot draws): the mean, the standard
    deviation over seeds, and the noise band, twice the standard error of the mean (``2 * std / sqrt(n)``). A k lies
    *within noise* of the best when its mean difference is no further below zero than that band; with one seed
    nothing can be said (band None, within noise)."""
    wide = per_seed.pivot_table(index="seed", columns="k", values="hm")
    out = {}
    for k in wide.columns:
        diff = (wide[k] - wide[best_k]).dropna()
        n = len(diff)
        std = float(diff.std()) if n > 1 else float("nan")
        band = 2 * std / math.sqrt(n) if n > 1 else None
        within = band is None or float(diff.mean()) >= -band - 1e-9
        out[int(k)] = {
            "difference": float(diff.mean()), "std": std, "seeds": n, "band": band, "within_noise": bool(within),
        }  # fmt: skip
    return out


def _verdict(selected: int | None, best_k: int, paired: dict[int, dict]) -> str:
    """One sentence on the selected k: the best beyond seed noise, within the noise of the best, or below it."""
    close = [k for k, p in paired.items() if p["within_noise"] and k != best_k]
    if selected is None or selected not in paired:
        return f"k = {best_k} has the highest mean HM; within seed noise of it: {close or 'no other k'}."
    if selected == best_k:
        if close:
            return (
                f"The selected k = {selected} has the highest mean HM, but k = {', '.join(map(str, close))} lie within "
                "seed noise of it, so it is not the best beyond noise."
            )
        return f"The selected k = {selected} is the best k beyond seed noise (every other k lies below its band)."
    p = paired[selected]
    where = "within seed noise of" if p["within_noise"] else "below the seed noise of"
    return f"The selected k = {selected} lies {where} the best k = {best_k} ({p['difference']:+.2f} HM, noise band " + (
        f"±{p['band']:.2f})." if p["band"] is not None else "unknown with one seed)."
    )


def _report(cfg, results, swept, ks: list[int], selected, rules: dict, model: str) -> dict:
    """The figure and ``k_sweep.json``: every k's HM (mean of the per-seed HMs), the best and the selected k."""
    rows = results[(results["method"] == swept.name) & results["k"].isin(ks)]
    per_seed = (
        rows[rows["metric"].isin(["base", "novel"])]
        .groupby(["k", "seed", "metric"])["value"]
        .mean()
        .unstack("metric")
        .reset_index()
    )
    per_seed["hm"] = [harmonic_mean(b, n) for b, n in zip(per_seed["base"], per_seed["novel"])]
    tidy = per_seed.melt(id_vars=["k", "seed"], value_vars=list(_PLOTTED), var_name="metric")
    zs = results[(results["method"] == BASELINE.name) & results["metric"].isin(["base", "novel"])]
    zs_avg = zs.groupby("metric")["value"].mean()
    baseline = None
    if {"base", "novel"} <= set(zs_avg.index):
        b, n = zs_avg["base"], zs_avg["novel"]
        baseline = {"base": b, "novel": n, "hm": harmonic_mean(b, n)}
    others = {}
    for method, g in method_averages(results[~results["method"].isin([swept.name, BASELINE.name])]).groupby("method"):
        others[method] = g.groupby("metric")["value"].mean().to_dict()
        if {"base", "novel"} <= set(others[method]):  # the HM of the seed-averaged base and novel
            others[method]["hm"] = harmonic_mean(others[method]["base"], others[method]["novel"])
    plot_k_sweep(
        tidy,
        Path(cfg.out) / "k_sweep",
        selected_k=selected,
        baseline=baseline,
        title=f"{model}: {swept.title or swept.name} base-to-novel vs first adapted block k",
        others=others or None,
        rules={r: v["k"] for r, v in rules.items() if v.get("k") is not None},  # the rules giving k name its line
    )
    hm = tidy[tidy["metric"] == "hm"].groupby("k")["value"].mean()
    best_k = int(hm.idxmax())
    paired = paired_to_best(per_seed, best_k)
    record = {
        "ks": ks,
        "hm": {int(k): float(v) for k, v in hm.items()},
        "best_k": best_k,
        "paired": paired,
        "within_noise_of_best": [k for k, p in paired.items() if p["within_noise"]],
        "selected_verdict": _verdict(selected, best_k, paired),
        "selected_k": selected,
        "selected_over_best": (float(hm[selected] / hm[best_k]) if selected in hm.index else None),
        "selected_below_best": (float(hm[best_k] - hm[selected]) if selected in hm.index else None),
        "rules": {
            r: {"k": v["k"], "hm": float(hm[v["k"]]), "below_best": float(hm[best_k] - hm[v["k"]])}
            for r, v in rules.items()
            if v["k"] in hm.index
        },
        "zero_shot": {m: float(v) for m, v in baseline.items()} if baseline else None,
        "methods": {m: {k: float(v) for k, v in vals.items()} for m, vals in others.items()},
    }
    atomic_write_json(Path(cfg.out) / "k_sweep.json", record)
    return record
