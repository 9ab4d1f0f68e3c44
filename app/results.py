"""The results of a run folder: every result JSON rolled into tidy tables, the summaries and the side-by-side views.

``results.csv`` holds one row per (protocol, dataset, seed, k, method, metric); ``results_summary.csv`` the mean,
std and count over seeds per dataset, and the averages over datasets. The metrics a protocol reports and leads
with are the protocol's (:mod:`mma.adapters.protocols`); the order of methods, the baseline every method is
compared with and the colours of the figure are the method registry's (:mod:`mma.adapters.methods`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mma.adapters.methods import BASELINE, method_names, registry
from mma.adapters.protocols import PROTOCOLS
from mma.analysis.compare import Setup
from mma.analysis.plots import depth_text, plot_methods
from mma.errors import MmaError
from mma.io import atomic_write, read_json
from mma.metrics import harmonic_mean

__all__ = [
    "METRIC_ORDER",
    "load_results",
    "summarise_results",
    "summary_table",
    "method_averages",
    "methods_table",
    "method_figure",
    "beside_the_default",
    "comparison_setup",
]


def load_results(out: Path) -> pd.DataFrame:
    """Every result JSON under ``out/results`` as tidy rows (seed and k blank for the baseline, which has neither)."""
    rows = []
    for path in sorted((Path(out) / "results").rglob("*.json")):
        if path.name == "skipped.json":
            continue
        r = read_json(path)
        prompts = r.get("prompts", {})  # the prompt of every evaluated dataset (a target's may differ)
        for metric, value in r["metrics"].items():
            evaluated = metric.split(":", 1)[1] if metric.startswith("target:") else r["dataset"]
            rows.append(
                {
                    "protocol": r["protocol"],
                    "dataset": r["dataset"],
                    "seed": r["seed"],
                    "k": r["k"],
                    "k_image": r.get("k_image"),
                    "k_text": r.get("k_text"),
                    "depth": r.get("depth", ""),  # the method's own words for its depth ("prompt depth 9")
                    "depth_key": r.get("depth_key", f"k{r['k']}" if r["k"] is not None else None),  # its files' name
                    "method": r["method"],
                    "metric": metric,
                    "value": value,
                    "template": prompts.get(evaluated, r.get("template", "")),
                }
            )
    if not rows:
        raise MmaError(f"No result JSON under {str(Path(out) / 'results')!r}; run 'mma train-selected' first.")
    results = pd.DataFrame(rows)
    # whole numbers, blank for the zero-shot rows (which have neither)
    return results.astype({"seed": "Int64", **dict.fromkeys(DEPTH, "Int64")})


#: a run's depth in the tables: the shared k (blank when a tower starts apart from it) and each tower's start block
DEPTH = ["k", "k_image", "k_text"]


METRIC_ORDER = (
    "base", "novel", "hm", "all", "mean_of_seed_hms", "accuracy", "source", "target_average", "mean_of_hms",
)  # fmt: skip


def _hm_of_seed_means(per_dataset: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, ``hm`` becomes the HM of the seed-averaged base and novel (the papers' convention); the mean
    of the per-seed HMs stays as ``mean_of_seed_hms``. Both keep the spread (std) of the per-seed HMs."""
    keys = ["protocol", "method", *DEPTH, "dataset"]
    out = per_dataset.copy()
    extra = []
    for _, g in out.groupby(keys, dropna=False, sort=False):
        means = dict(zip(g["metric"], g["mean"]))
        if not {"base", "novel", "hm"} <= set(means):
            continue
        row = g.index[g["metric"] == "hm"][0]
        seed_hms = out.loc[row].copy()
        seed_hms["metric"] = "mean_of_seed_hms"
        extra.append(seed_hms)
        b, n = means["base"], means["novel"]
        out.loc[row, "mean"] = harmonic_mean(b, n)
    if not extra:
        return out
    return pd.concat([out, pd.DataFrame(extra)], ignore_index=True)


def summarise_results(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Roll every result JSON into results.csv and results_summary.csv (written atomically).

    Summary rows: per (protocol, method, k, dataset, metric) the mean, std and count over seeds, then per
    (protocol, method, k) the averages over datasets (``dataset == "average"``). Base-to-novel follows the papers:
    a dataset's ``hm`` is the HM of its seed-averaged base and novel (its std: the spread of the per-seed HMs;
    ``mean_of_seed_hms`` is the mean of the per-seed HMs, for comparison), the average's ``hm`` is the HM of the
    averaged base and novel, and ``mean_of_hms`` the mean of the per-dataset HMs (average rows only: on a dataset
    row it would be that dataset's ``hm``, which :func:`summary_table` shows in its place). For every row
    of a trained method ``vs_zeroshot``: its mean minus the zero-shot model's on the same dataset and metric
    (blank where the zero-shot model has no such number).
    """
    results = load_results(out)
    group = ["protocol", "method", *DEPTH, "dataset", "metric"]
    per_dataset = results.groupby(group, dropna=False)["value"].agg(mean="mean", std="std", n="count").reset_index()
    per_dataset["std"] = per_dataset["std"].fillna(0.0)
    per_dataset = _hm_of_seed_means(per_dataset)
    summary = [per_dataset]
    for (protocol, method, *depth), d in per_dataset.groupby(["protocol", "method", *DEPTH], dropna=False):
        avg = d.groupby("metric")["mean"].mean()
        rows = [{"metric": m, "mean": v} for m, v in avg.items() if m != "hm"]
        if {"base", "novel"} <= set(avg.index):
            b, n = avg["base"], avg["novel"]
            rows.append({"metric": "hm", "mean": harmonic_mean(b, n)})
            rows.append({"metric": "mean_of_hms", "mean": avg.get("hm", float("nan"))})
        extra = pd.DataFrame(rows)
        extra[["protocol", "method", *DEPTH, "dataset", "std", "n"]] = [
            protocol,
            method,
            *depth,
            "average",
            float("nan"),
            d["dataset"].nunique(),
        ]
        summary.append(extra[per_dataset.columns])
    skipped = [read_json(p) for p in sorted((Path(out) / "results").rglob("skipped.json"))]
    if skipped:  # marked in the summary: a dataset the protocol left out, and why
        summary.append(
            pd.DataFrame(
                [
                    {"protocol": r["protocol"], "method": "-", "k": None, "dataset": r["dataset"], "metric": "skipped"}
                    | {"mean": float("nan"), "std": float("nan"), "n": 0, "note": r["reason"]}
                    for r in skipped
                ]
            )
        )
    summary = pd.concat(summary, ignore_index=True)
    summary = summary.astype(dict.fromkeys(DEPTH, "Int64"))
    is_baseline = summary["method"] == BASELINE.name
    zero = summary[is_baseline].set_index(["protocol", "dataset", "metric"])["mean"]
    keys = pd.MultiIndex.from_frame(summary[["protocol", "dataset", "metric"]])
    baseline = zero.reindex(keys).to_numpy() if len(zero) else float("nan")
    summary["vs_zeroshot"] = (summary["mean"] - baseline).where(~is_baseline)
    atomic_write(Path(out) / "results.csv", lambda p: results.to_csv(p, index=False))
    atomic_write(Path(out) / "results_summary.csv", lambda p: summary.to_csv(p, index=False))
    return results, summary


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as one printable table: a row per (protocol, method, k, dataset), metric columns in the
    order base, novel, hm (then the other metrics), each "mean ± std" over seeds ("mean" alone for one seed),
    a blank where a metric does not apply, and the headline metric's difference to the zero-shot model.

    ``mean_of_hms`` (the mean of per-dataset HMs) is a mean over a row's datasets: on an average row the mean over
    its datasets, on a dataset row the mean over that one dataset, i.e. its own ``hm`` (so it differs from ``hm``
    on the average rows alone, where the HM of averages and the mean of HMs part).
    """
    summary = summary.reindex(columns=[*summary.columns, *(c for c in DEPTH if c not in summary)])  # older ones
    metrics = list(dict.fromkeys(summary["metric"]))
    ordered = [m for m in METRIC_ORDER if m in metrics]
    ordered += sorted(m for m in metrics if m not in METRIC_ORDER)
    headlines = dict.fromkeys(p.headline for p in PROTOCOLS.values())
    headline = next((m for m in headlines if m in metrics), None)
    rows = []
    keys = ["protocol", "method", *DEPTH, "dataset"]
    order = {m: i for i, m in enumerate(method_names())}
    groups = summary.groupby(keys, dropna=False, sort=False)
    for (protocol, method, k, k_image, k_text, dataset), g in sorted(
        groups,
        key=lambda kv: (kv[0][0], order.get(kv[0][1], len(order)), kv[0][1], str(kv[0][2:5]), kv[0][5] == "average"),
    ):
        by_metric = g.set_index("metric")
        if dataset != "average" and "hm" in by_metric.index and "mean_of_hms" not in by_metric.index:
            by_metric.loc["mean_of_hms"] = by_metric.loc["hm"]  # the mean over this one dataset: its HM
        row = {"protocol": protocol, "method": method, "k": depth_text(k, k_image, k_text), "dataset": dataset}
        for m in ordered:
            if m not in by_metric.index:
                row[m] = ""
                continue
            r = by_metric.loc[m]
            one = pd.isna(r["std"]) or int(r["n"]) <= 1 or dataset == "average"
            row[m] = f"{r['mean']:.1f}" if one else f"{r['mean']:.1f} ± {r['std']:.1f}"
        if headline is not None:
            delta = by_metric["vs_zeroshot"].get(headline) if headline in by_metric.index else None
            row[f"{headline} vs zero-shot"] = "" if delta is None or pd.isna(delta) else f"{delta:+.1f}"
        rows.append(row)
    table = pd.DataFrame(rows)
    if table["protocol"].nunique() == 1:
        table = table.drop(columns="protocol")
    return table


def method_averages(results: pd.DataFrame) -> pd.DataFrame:
    """Per (protocol, method, k, seed): each metric averaged over the datasets, and base-to-novel's HM of those.

    Tidy: columns protocol, method, k, seed, metric, value (the zero-shot model: seed blank). A method that
    cannot name novel classes (the linear probe) has base only.
    """
    keep = results[~results["metric"].str.startswith("target:") & (results["metric"] != "hm")]
    keys = ["protocol", "method", *DEPTH, "seed"]
    rows = []
    for key, g in keep.groupby(keys, dropna=False, sort=False):
        means = g.groupby("metric")["value"].mean()
        if {"base", "novel"} <= set(means.index):
            b, n = means["base"], means["novel"]
            means["hm"] = harmonic_mean(b, n)
        rows += [dict(zip(keys, key), metric=m, value=float(v)) for m, v in means.items()]
    tidy = pd.DataFrame(rows, columns=[*keys, "metric", "value"])
    return tidy.astype({"seed": "Int64", **dict.fromkeys(DEPTH, "Int64")})


def methods_table(results: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per protocol, one row per method: the dataset-averaged metrics, "mean ± std" over seeds ("n/a" where a
    method cannot name the classes), and the headline metric's difference to the zero-shot model.

    Base-to-novel's HM is the HM of the seed-averaged base and novel (the papers' convention); its std is the
    spread of the per-seed HMs.
    """
    order = {m: i for i, m in enumerate(method_names())}
    avg = method_averages(results)
    tables = {}
    for protocol, p in avg.groupby("protocol", sort=True):
        shown = _shown_metrics(protocol) if protocol in PROTOCOLS else sorted(set(p["metric"]))
        metrics = [m for m in shown if m in set(p["metric"])]
        headline = PROTOCOLS[protocol].headline if protocol in PROTOCOLS else (metrics[-1] if metrics else None)
        headline = headline if headline in metrics else None
        means: dict = {}
        rows = []
        groups = sorted(p.groupby(["method", *DEPTH], dropna=False), key=lambda kv: order.get(kv[0][0], len(order)))
        for (method, *depth), g in groups:
            shown = depth_text(*depth)
            label = method if shown == "-" else f"{method} (k={shown})"
            stats = g.groupby("metric")["value"].agg(["mean", "std", "count"])
            if {"base", "novel"} <= set(stats.index):
                b, n = stats.loc["base", "mean"], stats.loc["novel", "mean"]
                stats.loc["hm", "mean"] = harmonic_mean(b, n)
            row = {"method": label, "seeds": int(stats["count"].max()) if g["seed"].notna().any() else "-"}
            for m in metrics:
                if m not in stats.index:
                    row[m] = "n/a"
                    continue
                mean, std, count = stats.loc[m, "mean"], stats.loc[m, "std"], stats.loc[m, "count"]
                row[m] = f"{mean:.1f}" if count <= 1 or pd.isna(std) else f"{mean:.1f} ± {std:.1f}"
                means[(method, m)] = mean
            rows.append(row)
        if headline is not None and (BASELINE.name, headline) in means:
            base = means[(BASELINE.name, headline)]
            for row, ((method, *_depth), _g) in zip(rows, groups):
                value = means.get((method, headline))
                row[f"{headline} vs zero-shot"] = (
                    "" if value is None or method == BASELINE.name else f"{value - base:+.1f}"
                )
        tables[protocol] = pd.DataFrame(rows)
    return tables


def _shown_metrics(protocol: str) -> tuple[str, ...]:
    """The averaged metrics a protocol's tables and figures show, and its all-classes one (``--all-classes``)."""
    chosen = PROTOCOLS[protocol]
    return (*chosen.metrics, *filter(None, [chosen.union_metric]))


def method_figure(out: Path, results: pd.DataFrame, protocol: str) -> None:
    """``methods.png`` / ``.pdf`` / ``.csv``: every method's dataset-averaged metrics side by side (mean, std)."""
    avg = method_averages(results[results["protocol"] == protocol])
    shown = _shown_metrics(protocol) if protocol in PROTOCOLS else ()
    metrics = [m for m in shown if m in set(avg["metric"])]
    if metrics:
        data = avg[avg["metric"].isin(metrics)]
        colours = {name: m.colour for name, m in registry().items() if m.colour}
        plot_methods(
            data, Path(out) / "methods", metrics=metrics, title=protocol, order=list(method_names()), colours=colours
        )


def beside_the_default(results: pd.DataFrame) -> bool:
    """Whether the results hold a method the per-dataset table alone does not show at its k: a trained method
    without a depth (the side-by-side table then averages every method over the datasets)."""
    methods = registry()
    return any(m in methods and methods[m].trains and not methods[m].depth_indexed for m in set(results["method"]))


def comparison_setup() -> Setup:
    """What the comparison with the published numbers needs to know: the protocols' metrics, the baseline, and how
    each method is named (by its title; the baseline as "zero-shot (CLIP)")."""
    names = {name: m.published_as for name, m in registry().items() if m.published_as}
    labels = {name: m.title for name, m in registry().items() if m.title}  # MMRL, CLIP-LoRA: no published name
    if BASELINE.published_as:
        labels[BASELINE.name] = f"{BASELINE.title or BASELINE.name} ({BASELINE.published_as})"
    return Setup(PROTOCOLS, BASELINE.name, labels, names)
