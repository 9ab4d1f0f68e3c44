"""Measured results beside the published ones: per dataset and averaged, the difference, and whether it is noise.

:func:`compare` takes the per-seed result rows of train-selected runs (``results.csv``: protocol, dataset,
seed, k, method, metric, value) and gives one tidy row per (protocol, method, dataset, metric) with the
published value and its source, the measured mean, its standard deviation over seeds, and the difference.
Methods are rows (``method``: the toolkit's name, ``published_method``: the papers'), so any method the
toolkit trains appears beside its published numbers when the table has them.

Conventions (the papers'):

* base-to-novel: a dataset's HM is the HM of its seed-averaged base and novel; the average's base and
  novel are means over datasets and its HM is the HM of those means;
* cross-dataset and domain generalisation: ``accuracy (source)`` is ImageNet itself, the average is over
  the targets only.

**Averages over the datasets measured.** A published average covers all of a protocol's datasets (11, 10
or 4). When fewer were measured (datasets missing from the data root), the row compares the measured
average with the mean of the published cells of those same datasets, marked ``derived`` (and, like the
cells, ``recalled``).

**Seed noise** (:func:`verdicts`). The papers publish no per-seed spread, so it is estimated from this
run: with ``s`` the standard deviation over seeds of the measured average (each seed's average over the
datasets) and ``n`` the number of seeds, a published mean of 3 seeds and a measured mean of ``n`` seeds
differ by seed noise alone with a standard deviation of ``s * sqrt(1/n + 1/3)``; an average lies *within
seed noise* when it differs by at most twice that. With one seed nothing can be said. The zero-shot model
(the baseline) has no seed: its averages are compared with a fixed tolerance of :data:`ZERO_SHOT_TOLERANCE` points
(**[ours]**: rounding, image decoding and resizing differ between code bases). When an average lies
outside, the datasets that differ most on the protocol's headline metric are named.

What the comparison needs to know of the toolkit (each protocol's metrics, which method is the baseline, how
methods are named) arrives as a :class:`Setup`; this room never imports the methods or the protocols.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from mma.metrics import harmonic_mean

from .published import published_method, published_numbers

__all__ = [
    "Setup",
    "ZERO_SHOT_TOLERANCE",
    "Verdict",
    "compare",
    "verdicts",
    "side_by_side",
    "context_table",
    "markdown_table",
    "render_markdown",
]

SOURCE_METRIC = "accuracy (source)"
ZERO_SHOT_TOLERANCE = 0.5  # points; the zero-shot model is deterministic (see the module docstring)
PAPER_SEEDS = 3
COLUMNS = [
    "protocol",
    "method",
    "published_method",
    "dataset",
    "metric",
    "published",
    "published_source",
    "published_check",
    "measured",
    "measured_std",
    "seeds",
    "difference",
    "datasets",
    "prompt",
]


#: a protocol's metric in the published tables' words: the average over the targets is their "accuracy"; the
#: source's accuracy is its own row (:data:`SOURCE_METRIC`)
_PUBLISHED_METRIC = {"target_average": "accuracy", "source": None}


@dataclass(frozen=True)
class Setup:
    """What a comparison asks of the toolkit, given by its caller (``mma.app.results.comparison_setup``).

    *protocols*: name -> an object with ``metrics`` (the averaged metrics it reports, the headline last) and
    ``headline``; *baseline*: the method without a seed, held to :data:`ZERO_SHOT_TOLERANCE`; *labels* and
    *names*: how the tables name a method, and its name in the published tables, where they differ from its own
    (others are matched loosely, :func:`~mma.analysis.published.published_method`).
    """

    protocols: Mapping = field(default_factory=dict)
    baseline: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    names: Mapping[str, str] = field(default_factory=dict)

    def metrics(self, protocol: str) -> tuple[str, ...]:
        """*protocol*'s averaged metrics in the published words (base, novel, hm; or accuracy)."""
        if protocol not in self.protocols:
            return ("accuracy",)
        words = (_PUBLISHED_METRIC.get(m, m) for m in self.protocols[protocol].metrics)
        return tuple(dict.fromkeys(w for w in words if w))

    def headline(self, protocol: str) -> str:
        return self.metrics(protocol)[-1]

    def published_name(self, method: str) -> str:
        return self.names.get(method) or published_method(method) or ""

    def label(self, method: str, published: str) -> str:
        return self.labels.get(method) or published or method


def _per_seed(results: pd.DataFrame) -> pd.DataFrame:
    """Result rows in the published vocabulary: one value per (protocol, method, seed, dataset, metric)."""
    rows = []
    for r in results.itertuples(index=False):
        seed = 0 if pd.isna(r.seed) else int(r.seed)  # the zero-shot model: one evaluation, no seed
        metric, dataset = r.metric, r.dataset
        if metric == "source":
            metric = SOURCE_METRIC
        elif metric.startswith("target:"):
            metric, dataset = "accuracy", metric.split(":", 1)[1]
        elif metric not in ("base", "novel", "accuracy"):
            continue  # HMs and averages are recomputed here
        rows.append((r.protocol, r.method, seed, dataset, metric, float(r.value)))
    per_seed = pd.DataFrame(rows, columns=["protocol", "method", "seed", "dataset", "metric", "value"])
    keys = ["protocol", "method", "seed", "dataset"]
    wide = per_seed[per_seed["metric"].isin(["base", "novel"])].pivot_table(
        index=keys, columns="metric", values="value", aggfunc="first"
    )
    if {"base", "novel"} <= set(wide.columns):  # each seed's HM (its spread is the per-dataset HM's std)
        wide = wide.dropna(subset=["base", "novel"])
        hm = [harmonic_mean(b, n) for b, n in zip(wide["base"], wide["novel"])]
        extra = wide.index.to_frame(index=False).assign(metric="hm", value=hm)
        per_seed = pd.concat([per_seed, extra[per_seed.columns]], ignore_index=True)
    return per_seed


def _measured(per_seed: pd.DataFrame, setup: Setup) -> pd.DataFrame:
    """Per dataset and averaged: measured mean, std over seeds (NaN for one), seeds, and the datasets averaged."""
    keys = ["protocol", "method", "dataset", "metric"]
    per = per_seed.groupby(keys, sort=False)["value"].agg(measured="mean", measured_std="std", seeds="count")
    per = per.reset_index()
    per["datasets"] = ""
    out = [per]
    for (protocol, method), g in per_seed.groupby(["protocol", "method"], sort=False):
        wide = g[g["metric"] != SOURCE_METRIC].pivot_table(
            index="seed", columns="dataset", values="value", aggfunc="first"
        )
        means = {}
        for metric in setup.metrics(protocol):
            if metric == "hm":
                continue
            table = g[g["metric"] == metric].pivot_table(index="seed", columns="dataset", values="value")
            means[metric] = table.mean(axis=1)  # each seed's average over the datasets
        if not means:
            continue
        per_seed_avg = pd.DataFrame(means)
        if {"base", "novel"} <= set(per_seed_avg):
            per_seed_avg["hm"] = [harmonic_mean(b, n) for b, n in zip(per_seed_avg["base"], per_seed_avg["novel"])]
        rows = []
        for metric in per_seed_avg:
            values = per_seed_avg[metric]
            mean = values.mean()
            if metric == "hm":
                mean = harmonic_mean(per_seed_avg["base"].mean(), per_seed_avg["novel"].mean())
            std = values.std() if len(values) > 1 else float("nan")
            rows.append(
                {"protocol": protocol, "method": method, "dataset": "average", "metric": metric}
                | {"measured": mean, "measured_std": std, "seeds": len(values), "datasets": ",".join(wide.columns)}
            )
        out.append(pd.DataFrame(rows))
    measured = pd.concat(out, ignore_index=True)
    # base-to-novel: a dataset's HM is the HM of its seed-averaged base and novel (its std stays the per-seed HMs')
    wide = measured[measured["dataset"] != "average"].pivot_table(
        index=["protocol", "method", "dataset"], columns="metric", values="measured", aggfunc="first"
    )
    if {"base", "novel"} <= set(wide.columns):
        is_hm = (measured["metric"] == "hm") & (measured["dataset"] != "average")
        for i in measured.index[is_hm]:
            r = measured.loc[i]
            b, n = wide.loc[(r["protocol"], r["method"], r["dataset"]), ["base", "novel"]]
            measured.loc[i, "measured"] = harmonic_mean(b, n)
    measured.loc[measured["seeds"] <= 1, "measured_std"] = float("nan")
    return measured


def _protocol_datasets(published: pd.DataFrame, protocol: str, method: str) -> list[str]:
    """The datasets a published average covers (targets only for cross-dataset and domain generalisation): the
    method's own cells, or, for a method published as averages alone (PromptSRC, MMA++), the protocol's."""
    rows = published[published["protocol"] == protocol]
    rows = rows[(rows["dataset"] != "average") & (rows["metric"] != SOURCE_METRIC)]
    own = rows[rows["method"] == method]
    return list(dict.fromkeys((own if len(own) else rows)["dataset"]))


def _check(row) -> str:
    """A published cell's check status as printed: ``confirmed``, ..., or ``printed-differs (what reprints print)``."""
    check = str(getattr(row, "check", "") or "")
    note = str(getattr(row, "note", "") or "")
    return f"{check} ({note})" if check == "printed-differs" and note else check


def _published_average(published: pd.DataFrame, protocol: str, method: str, datasets: list[str]) -> dict:
    """``{metric: (value, source, check)}`` of *method*'s average over *datasets*: the published average when they
    are all the protocol's datasets, else the mean of the published cells (HM of the means), marked derived (its
    check: every check status of the cells it averages)."""
    rows = published[(published["protocol"] == protocol) & (published["method"] == method)]
    covered = _protocol_datasets(published, protocol, method)
    if covered and sorted(datasets) == sorted(covered):
        avg = rows[rows["dataset"] == "average"]
        if len(avg):
            return {r.metric: (r.value, r.source, _check(r)) for r in avg.itertuples()}
    cells = rows[rows["dataset"].isin(datasets) & (rows["metric"] != SOURCE_METRIC)]
    out = {}
    for metric, g in cells.groupby("metric", sort=False):
        if metric == "hm" or set(g["dataset"]) != set(datasets):
            continue
        sources = "/".join(sorted(set(g["source"])))
        checks = "/".join(sorted(set(g["check"]))) if "check" in g else ""
        out[metric] = (float(g["value"].mean()), f"derived from {sources} ({len(datasets)} of {len(covered)})", checks)
    if "base" in out and "novel" in out:
        out["hm"] = (harmonic_mean(out["base"][0], out["novel"][0]), out["base"][1], out["base"][2])
    return out


def compare(results: pd.DataFrame, setup: Setup, published: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every measured number beside its published counterpart (columns: :data:`COLUMNS`).

    *results*: per-seed rows (protocol, dataset, seed, k, method, metric, value), e.g. ``results.csv`` of
    train-selected runs. *published*: the published table (default: the packaged one). ``published`` and
    ``published_source`` are blank where nothing is published (e.g. zero-shot cross-dataset).
    """
    published = published_numbers() if published is None else published
    measured = _measured(_per_seed(results), setup)
    measured["published_method"] = [setup.published_name(m) for m in measured["method"]]
    cells = published.set_index(["protocol", "method", "dataset", "metric"])
    values, sources, checks = [], [], []
    for r in measured.itertuples(index=False):
        if r.dataset == "average":
            avg = _published_average(published, r.protocol, r.published_method, r.datasets.split(","))
            value, source, check = avg.get(r.metric, (float("nan"), "", ""))
        else:
            key = (r.protocol, r.published_method, r.dataset, r.metric)
            value, source, check = (float("nan"), "", "")
            if key in cells.index:
                cell = cells.loc[key]
                value, source, check = cell["value"], cell["source"], _check(cell)
        values.append(float(value))
        sources.append(source)
        checks.append(check)
    measured["published"] = values
    measured["published_source"] = sources
    measured["published_check"] = checks
    measured["prompt"] = _prompts(results, measured)
    measured["difference"] = measured["measured"] - measured["published"]
    return measured[COLUMNS]


def _prompts(results: pd.DataFrame, measured: pd.DataFrame) -> list[str]:
    """The prompt each measured row used (results' ``template``; an average: the one prompt, or "per dataset")."""
    if "template" not in results:
        return [""] * len(measured)
    target = results["metric"].str.startswith("target:")
    evaluated = results["dataset"].where(~target, results["metric"].str.split(":", n=1).str[-1])
    keys = [results["protocol"], results["method"], evaluated]
    used = results["template"].groupby(keys).agg(lambda t: "/".join(sorted(set(t))))
    out = []
    for r in measured.itertuples(index=False):
        if r.dataset == "average":
            seen = {used.get((r.protocol, r.method, d), "") for d in r.datasets.split(",")} - {""}
            out.append(next(iter(seen)) if len(seen) == 1 else "per dataset" if seen else "")
        else:
            out.append(used.get((r.protocol, r.method, r.dataset), ""))
    return out


@dataclass(frozen=True)
class Verdict:
    """Whether one method's averages on one protocol lie within seed noise of the published ones."""

    protocol: str
    method: str
    within: bool | None  # None: nothing can be said (one seed, or nothing published)
    text: str


def verdicts(comparison: pd.DataFrame, setup: Setup, *, most: int = 3) -> list[Verdict]:
    """One :class:`Verdict` per (protocol, method): within seed noise, or not and which datasets differ most."""
    out = []
    for (protocol, method), g in comparison.groupby(["protocol", "method"], sort=False):
        label = setup.label(method, g["published_method"].iloc[0])
        is_baseline = method == setup.baseline
        avg = g[(g["dataset"] == "average") & g["published"].notna()]
        if avg.empty:
            out.append(Verdict(protocol, method, None, f"{protocol}, {label}: nothing published to compare with."))
            continue
        parts, within = [], True
        for r in avg.itertuples(index=False):
            if is_baseline:
                band, how = ZERO_SHOT_TOLERANCE, "tolerance"
            elif r.seeds >= 2 and not math.isnan(r.measured_std):
                band, how = 2 * r.measured_std * math.sqrt(1 / r.seeds + 1 / PAPER_SEEDS), "seed noise"
            else:
                band, how = None, ""
            if band is None:
                within = None
                parts.append(f"{r.metric} {r.published:.2f} published, {r.measured:.2f} measured ({r.difference:+.2f})")
                continue
            ok = abs(r.difference) <= band + 1e-9
            within = (within and ok) if within is not None else None
            parts.append(
                f"{r.metric} {r.published:.2f} published, {r.measured:.2f} measured ({r.difference:+.2f}; {how} "
                f"±{band:.2f})"
            )
        what = "; ".join(parts)
        if within is None:
            text = f"{protocol}, {label}: one seed, so seed noise is unknown: {what}."
        elif within:
            band_name = "the zero-shot tolerance" if is_baseline else "seed noise"
            text = f"{protocol}, {label}: the averages lie within {band_name} of the published ones: {what}."
        else:
            headline = setup.headline(protocol)
            per = g[(g["dataset"] != "average") & (g["metric"] == headline) & g["difference"].notna()]
            worst = per.reindex(per["difference"].abs().sort_values(ascending=False).index).head(most)
            names = ", ".join(f"{d} {v:+.2f}" for d, v in zip(worst["dataset"], worst["difference"]))
            text = (
                f"{protocol}, {label}: the averages do NOT lie within "
                f"{'the zero-shot tolerance' if is_baseline else 'seed noise'} of the published ones: {what}. "
                f"Differing most in {headline}: {names or 'no published per-dataset values'}."
            )
        out.append(Verdict(protocol, method, within, text))
    return out


def _number(value: float) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def _measured_text(r) -> str:
    text = _number(r.measured)
    if text and r.seeds > 1 and not math.isnan(r.measured_std):
        text += f" ± {r.measured_std:.2f}"
    return text


def _order(protocol: str, comparison: pd.DataFrame, published: pd.DataFrame) -> dict[str, int]:
    """Datasets in the published table's order (the source first), the average last."""
    known = list(dict.fromkeys(published.loc[published["protocol"] == protocol, "dataset"]))
    names = [d for d in dict.fromkeys([*known, *comparison["dataset"]]) if d != "average"]
    return {d: i for i, d in enumerate([*names, "average"])}


def side_by_side(
    comparison: pd.DataFrame, protocol: str, setup: Setup, published: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One protocol as a printable table: a row per (method, dataset), each metric as published / measured / Δ,
    and where the published value comes from (``recalled``, ``readme``, ``derived ...``)."""
    published = published_numbers() if published is None else published
    c = comparison[comparison["protocol"] == protocol]
    order = _order(protocol, c, published)
    metrics = setup.metrics(protocol)
    rows = []
    methods = sorted(c["method"].unique(), key=lambda m: (m == setup.baseline, m))
    for method in methods:
        g = c[c["method"] == method]
        for (dataset, is_source), d in sorted(
            g.groupby([g["dataset"], g["metric"] == SOURCE_METRIC], sort=False), key=lambda kv: (order[kv[0][0]], 0)
        ):
            label = f"{dataset} (source)" if is_source else dataset
            if dataset == "average":
                label = f"average ({len(d['datasets'].iloc[0].split(','))} datasets)"
            row = {"method": setup.label(method, d["published_method"].iloc[0]), "dataset": label}
            by_metric = {("accuracy" if m == SOURCE_METRIC else m): r for m, r in zip(d["metric"], d.itertuples())}
            for m in metrics:
                r = by_metric.get(m)
                row[f"{m} published"] = _number(r.published) if r else ""
                row[f"{m} measured"] = _measured_text(r) if r else ""
                row[f"{m} Δ"] = (f"{r.difference:+.2f}" if r and not math.isnan(r.difference) else "") if r else ""
            row["prompt"] = next((r.prompt for r in by_metric.values() if r.prompt), "")
            row["published source"] = next((r.published_source for r in by_metric.values() if r.published_source), "")
            row["check"] = "; ".join(dict.fromkeys(r.published_check for r in by_metric.values() if r.published_check))
            rows.append(row)
    return pd.DataFrame(rows)


def context_table(
    comparison: pd.DataFrame, protocol: str, setup: Setup, published: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The published methods (CLIP, CoOp, CoCoOp, MaPLe, ..., MMA) over the datasets measured here, then ours.

    Base-to-novel: the averages (base, novel, HM); cross-dataset and domain generalisation: the source, every
    target measured, and the average over them. Averages over fewer datasets than the papers' are derived from
    the published cells (see the module docstring).
    """
    published = published_numbers() if published is None else published
    c = comparison[comparison["protocol"] == protocol]
    p = published[published["protocol"] == protocol]
    metrics = setup.metrics(protocol)
    split = "novel" in metrics  # base-to-novel: the averages; else the source, every target and their average
    datasets = [d for d in _order(protocol, c, published) if d in set(c["dataset"]) and d != "average"]
    targets = [d for d in datasets if not ((c["dataset"] == d) & (c["metric"] == SOURCE_METRIC)).any()]
    source = [d for d in datasets if d not in targets]
    rows = []
    for method in p["method"].unique():
        row = {"method": method}
        cells = p[p["method"] == method].set_index(["dataset", "metric"])
        avg = _published_average(published, protocol, method, targets)
        shown, checked = set(), set()  # the sources and check statuses of the cells shown
        if split:
            for m in metrics:
                value, from_, check = avg.get(m, (float("nan"), "", ""))
                row[m] = _number(value)
                shown |= {from_} - {""}
                checked |= set(check.split("/")) - {""}
        else:
            for d, metric in [*((d, SOURCE_METRIC) for d in source), *((d, "accuracy") for d in targets)]:
                key = (d, metric)
                row[f"{d} (source)" if metric == SOURCE_METRIC else d] = _number(cells["value"].get(key, float("nan")))
                shown |= {cells["source"][key]} if key in cells.index else set()
                checked |= {cells["check"][key]} if key in cells.index else set()
            value, from_, check = avg.get("accuracy", (float("nan"), "", ""))
            row["average"] = _number(value)
            checked |= set(check.split("/")) - {""}
            if from_.startswith("derived"):
                row["source"] = "; ".join([*sorted(shown), f"average {from_}"])
                row["check"] = "/".join(sorted(checked))
                rows.append(row)
                continue
            shown |= {from_} - {""}
        row["source"] = "; ".join(sorted(shown))
        row["check"] = "/".join(sorted(checked))
        rows.append(row)
    for method, g in sorted(c.groupby("method", sort=False), key=lambda kv: kv[0] == setup.baseline):
        row = {"method": f"{setup.label(method, g['published_method'].iloc[0])}, measured"}
        by = {(r.dataset, r.metric): r.measured for r in g.itertuples()}
        if split:
            for m in metrics:
                row[m] = _number(by.get(("average", m), float("nan")))
        else:
            for d in source:
                row[f"{d} (source)"] = _number(by.get((d, SOURCE_METRIC), float("nan")))
            for d in targets:
                row[d] = _number(by.get((d, "accuracy"), float("nan")))
            row["average"] = _number(by.get(("average", "accuracy"), float("nan")))
        row["source"] = "this run"
        row["check"] = ""
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of *table* (every cell as text, ``|`` escaped)."""

    def cell(value) -> str:
        return (
            "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).replace("|", r"\|")
        )

    lines = ["| " + " | ".join(cell(c) for c in table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


LEGEND = (
    "Published: ViT-B/16, 16 shots, mean of seeds 1-3 (`published_numbers.csv`, shipped with mma). "
    "Source: `readme`, the official MMA README's averages; `recalled`, written from memory of the papers; "
    "`derived`, the mean of the published cells of the datasets measured here (the published average covers "
    "datasets this run did not have). Check, how each cell was verified against printed tables: `confirmed` (the "
    "same value printed), `secondary` / `secondary-weak` (read off a reprint), `unconfirmed` (no reprint found), "
    "`printed-differs` (reprints print another value, given beside it). Measured: mean ± "
    "standard deviation over seeds; Δ = measured - published. Seed noise: twice the standard deviation of the "
    "difference between two seed-means, the per-seed spread taken from this run's seeds (the papers publish none); "
    f"zero-shot has no seed and is held to ±{ZERO_SHOT_TOLERANCE} points."
)


def render_markdown(
    comparison: pd.DataFrame,
    setup: Setup,
    *,
    title: str,
    notes: list[str] = (),
    published: pd.DataFrame | None = None,
) -> str:
    """The whole report: per protocol the side-by-side table, the verdicts and the published context."""
    published = published_numbers() if published is None else published
    parts = [f"# {title}", "", LEGEND, ""]
    found = verdicts(comparison, setup)
    for protocol in dict.fromkeys(comparison["protocol"]):
        parts += [f"## {protocol}", "", markdown_table(side_by_side(comparison, protocol, setup, published)), ""]
        parts += [f"- {v.text}" for v in found if v.protocol == protocol] + [""]
        parts += ["Published context (the papers' methods over the same datasets):", ""]
        parts += [markdown_table(context_table(comparison, protocol, setup, published)), ""]
    if notes:
        parts += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(parts)
