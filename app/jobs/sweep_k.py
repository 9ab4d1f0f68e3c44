"""Job: accuracy against the first adapted block k (``mma sweep-k``), beside the k the probe selected.

Trains and evaluates the depth-indexed method (MMA) base-to-novel at every k (one train-selected run per k in
one folder, the model loaded once), the other methods of ``--method`` once, and plots base / novel / HM against
k with the zero-shot model and the other methods as horizontal lines. Writes ``k_sweep.png`` / ``.pdf`` /
``.csv`` and ``k_sweep.json`` (every k's HM, the best k, the selected k and each rule's k, how far each lies
below the best, and each k's difference to the best paired by seed with its noise band, :func:`paired_to_best`: the
selected k is called the best only when every other k lies below that band).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from mma import distributed
from mma.adapters.methods import BASELINE, DEFAULT, parse_methods, registry, trained_methods
from mma.adapters.protocols import get_protocol
from mma.analysis.plots import depth_text, plot_k_sweep, plot_regret
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
from mma.io import atomic_write, atomic_write_json
from mma.metrics import harmonic_mean
from mma.probe.extract import resolve_device
from mma.probe.layers import layer_maps
from mma.probe.specs import load_model, parse_model_spec
from mma.seeding import check_seeds

from .train_selected import depth_of, train_selected

__all__ = ["sweep_k", "regret", "depth_points", "probe_point", "paired_to_best", "REGRET_COLUMNS"]

_PLOTTED = ("base", "novel", "hm")


def sweep_k(cfg: TrainSelectedConfig, ks: list[int] | None = None, tower_ks: list[int] | None = None) -> dict | None:
    """Train and evaluate every depth-indexed method of ``--method`` at every k (or *ks*), and, for a method whose
    towers may start apart, at every pair of *tower_ks* (image, text) too; plot base / novel / HM against k, and
    report each method's regret (:func:`regret`). None off rank 0 under torchrun.

    The probe's choice (its shared k, or each tower's for a method that starts them apart) and each method's
    published k are always among the trained depths.
    """
    if not set(_PLOTTED) <= set(get_protocol(cfg.protocol).metrics):
        raise MmaError("sweep-k plots base / novel / HM, so it runs --protocol base2novel only.")
    check_seeds(cfg.seeds)  # before any weights are loaded
    check_template(cfg.template)
    cfg.log = check_loggers(cfg.log)
    methods = trained_methods(parse_methods(cfg.methods))
    swept = [m for m in methods if m.depth_indexed] or [DEFAULT]
    others = [m.name for m in methods if not m.depth_indexed]  # trained once, beside the first depth
    # the selected k and every rule's k, to say which rule would have chosen best; a given probe run must have a
    # selection, the default one may be missing
    selection = selection_layers(TrainSelectedConfig(run=cfg.run, model=cfg.model))
    chosen = (selection.run or selection.default_run or (None, {}))[1]
    selected, rules = selection.k, {}
    if selected is not None:
        rules = read_selection(cfg.run or DEFAULT_PROBE_RUN, selection.model).get("rules", {})
    spec = parse_model_spec(selection.model)
    for method in swept:
        method.check_spec(spec)  # before any weights are loaded
    _, device = distributed.setup(resolve_device(cfg.device))
    loaded = load_model(spec, device=str(device))
    depths = {t: m.depth for t, m in layer_maps(loaded.model).items()}
    if ks is None:
        ks = list(range(1, min(depths.values()) + 1))
    run = None
    for method in swept:
        for point in depth_points(method, ks, tower_ks or [], chosen, cfg.protocol):
            names = [method.name, *others]
            one = TrainSelectedConfig(
                **{**asdict(cfg), **point, "model": selection.model, "run": None, "methods": names}
            )
            run = train_selected(one, loaded=loaded)
    if not distributed.world().main:
        return None
    results = run.results[run.results["dataset"].isin(run.datasets)]  # the folder may hold other datasets' runs
    records = {
        m.name: _report(cfg, results, m, ks, selected, rules, str(spec), "" if len(swept) == 1 else m.name)
        for m in swept
    }
    table = regret(results, swept, chosen, cfg.protocol)
    _write_regret(cfg, table, str(spec))
    record = {**records[swept[0].name], "regret": json.loads(table.to_json(orient="records"))}
    return {**record, "methods_swept": records} if len(swept) > 1 else record


def depth_points(method, ks: list[int], tower_ks: list[int], chosen: dict, protocol: str) -> list[dict]:
    """The depths *method* trains at, each once: the probe's choice *chosen* (first, as ``train-selected --run``
    trains it, so a methods run's training is reused), every shared k of *ks*, every (image, text) pair of
    *tower_ks* whose towers differ (a method whose towers may start apart) and its published k."""
    points = [probe_point(method, chosen)] + [{"k": k, "k_image": None, "k_text": None} for k in ks]
    if method.per_tower:
        points += [{"k": None, "k_image": i, "k_text": t} for i in tower_ks for t in tower_ks if i != t]
    published = method.published_k(protocol)
    points.append({"k": published, "k_image": None, "k_text": None} if published else None)
    unique: dict[str, dict] = {}
    for point in filter(None, points):
        unique.setdefault(depth_of(point), point)
    return list(unique.values())


def probe_point(method, chosen: dict) -> dict | None:
    """The depth ``train-selected --run`` trains *method* at: the towers' own starts where the selection gives them
    and the method may start its towers apart, else the shared k (None: no selection)."""
    if not chosen:
        return None
    if method.per_tower and chosen.get("k_image") is not None:  # with the selection's k, as train-selected runs it
        return {"k": chosen["k"], "k_image": chosen["k_image"], "k_text": chosen["k_text"]}
    return {"k": chosen["k"], "k_image": None, "k_text": None}


def paired_to_best(per_seed, best_k, column: str = "k") -> dict:
    """For every k, its HM minus the best k's, paired by seed (the same few-shot draws): the mean, the standard
    deviation over seeds, and the noise band, twice the standard error of the mean (``2 * std / sqrt(n)``). A k lies
    *within noise* of the best when its mean difference is no further below zero than that band; with one seed
    nothing can be said (band None, within noise)."""
    wide = per_seed.pivot_table(index="seed", columns=column, values="hm")
    out = {}
    for k in wide.columns:
        diff = (wide[k] - wide[best_k]).dropna()
        n = len(diff)
        std = float(diff.std()) if n > 1 else float("nan")
        band = 2 * std / math.sqrt(n) if n > 1 else None
        within = band is None or float(diff.mean()) >= -band - 1e-9
        out[int(k) if column == "k" else k] = {
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


def _report(cfg, results, swept, ks: list[int], selected, rules: dict, model: str, suffix: str = "") -> dict:
    """The figure and ``k_sweep.json`` (``k_sweep-<method>.*`` when several methods were swept): every k's HM (mean of
    the per-seed HMs), the best and the selected k."""
    stem = "k_sweep" + (f"-{suffix}" if suffix else "")
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
    deep = [name for name, m in registry().items() if m.depth_indexed]  # swept methods have their own sweep
    beside = results[~results["method"].isin([swept.name, BASELINE.name, *deep])]
    for method, g in method_averages(beside).groupby("method"):
        others[method] = g.groupby("metric")["value"].mean().to_dict()
        if {"base", "novel"} <= set(others[method]):  # the HM of the seed-averaged base and novel
            others[method]["hm"] = harmonic_mean(others[method]["base"], others[method]["novel"])
    plot_k_sweep(
        tidy,
        Path(cfg.out) / stem,
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
    atomic_write_json(Path(cfg.out) / f"{stem}.json", record)
    return record


REGRET_COLUMNS = [
    "method", "depth_knob", "probe", "probe_depth", "probe_hm", "probe_std", "published", "published_depth",
    "published_hm", "published_std", "best", "best_depth", "best_hm", "best_std", "probe_vs_best", "probe_band",
    "probe_within_noise", "published_vs_best", "published_band", "published_within_noise", "depths", "seeds",
]  # fmt: skip


def regret(results, methods, chosen: dict, protocol: str):
    """Per method: the HM at the probe-chosen depth, at its published depth and at the best depth it was trained at,
    each the mean over seeds with its std, and the probe's and published depth's difference to the best paired by
    seed with its noise band (:func:`paired_to_best`). A tidy table, one row per method (:data:`REGRET_COLUMNS`)."""
    rows = []
    for method in methods:
        per_seed = _per_seed_hm(results, method.name)
        if per_seed.empty:
            continue
        hm = per_seed.groupby("point")["hm"].agg(["mean", "std"])
        best = str(hm["mean"].idxmax())
        paired = paired_to_best(per_seed, best, column="point")
        knob = per_seed.groupby("point")["depth"].first()
        row = {
            "method": method.name,
            "depth_knob": method.depth_knob,
            "depths": len(hm),
            "seeds": per_seed["seed"].nunique(),
        }
        published = method.published_k(protocol)
        for name, point in (
            ("probe", probe_point(method, chosen)),
            ("published", {"k": published, "k_image": None, "k_text": None} if published else None),
            ("best", None),
        ):
            label = best if name == "best" else (depth_of(point) if point else None)
            found = label in hm.index
            row[name] = label
            row[f"{name}_depth"] = knob.get(label, "") if found else ""
            row[f"{name}_hm"] = float(hm.loc[label, "mean"]) if found else float("nan")
            row[f"{name}_std"] = float(hm.loc[label, "std"]) if found else float("nan")
            if name != "best":
                p = paired.get(label)
                row[f"{name}_vs_best"] = p["difference"] if p else float("nan")
                row[f"{name}_band"] = p["band"] if p and p["band"] is not None else float("nan")
                row[f"{name}_within_noise"] = p["within_noise"] if p else None
        rows.append(row)
    return pd.DataFrame(rows, columns=REGRET_COLUMNS)


def _per_seed_hm(results, method: str):
    """Per (depth point, seed) of *method*: the dataset-averaged base and novel and their HM; ``point`` is the depth
    as tables print it (``4``, ``image 3, text 7``), ``depth`` the method's own words for it (``prompt depth 9``)."""
    rows = results[(results["method"] == method) & results["metric"].isin(["base", "novel"])].copy()
    if rows.empty:
        return pd.DataFrame(columns=["point", "seed", "base", "novel", "hm", "depth"])
    rows["point"] = [depth_text(*d) for d in zip(rows["k"], rows["k_image"], rows["k_text"])]
    per_seed = rows.groupby(["point", "seed", "metric"])["value"].mean().unstack("metric").reset_index()
    per_seed["hm"] = [harmonic_mean(b, n) for b, n in zip(per_seed["base"], per_seed["novel"])]
    words = rows.groupby("point")["depth"].first() if "depth" in rows else None
    per_seed["depth"] = per_seed["point"].map(words) if words is not None else ""
    return per_seed


def _write_regret(cfg, table, model: str) -> None:
    """``regret.csv`` / ``regret.json`` and ``regret.png`` / ``.pdf``: the table and one figure of it."""
    out = Path(cfg.out)
    atomic_write(out / "regret.csv", lambda p: table.to_csv(p, index=False))
    atomic_write_json(out / "regret.json", {"model": model, "rows": json.loads(table.to_json(orient="records"))})
    if len(table):
        plot_regret(table, out / "regret", title=f"{model}: HM at the probe-chosen, published and best depth")
