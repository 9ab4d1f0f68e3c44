"""Figures: per-layer separability (the paper's Figure 1) and accuracy against k.

Every figure is written as PNG (README) and PDF (papers), with the CSV it was drawn from beside it, so
``mma plot`` can redraw it without recomputing anything.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from mma.io import atomic_write  # noqa: E402

__all__ = ["plot_layers", "plot_k_sweep", "plot_methods", "save_figure"]

TOWER_COLOURS = {"text": "#d62728", "image": "#1f77b4"}


def _theme(font_scale: float) -> None:
    """seaborn's paper theme for the next figure."""
    # lazy: seaborn, with the SciPy it loads, takes about 0.7 s, which every job that imports this module would
    # pay before its first figure (and every refusal of a bad option before any)
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper", font_scale=font_scale)


def save_figure(fig, stem: str | Path, data: pd.DataFrame | None = None) -> list[Path]:
    """Write ``stem.png``, ``stem.pdf`` (and ``stem.csv`` from *data*) atomically; return the paths."""
    stem = Path(stem)
    paths = []
    for ext in ("png", "pdf"):
        paths.append(
            atomic_write(
                stem.with_suffix(f".{ext}"), lambda p, ext=ext: fig.savefig(p, format=ext, dpi=150, bbox_inches="tight")
            )
        )
    if data is not None:
        paths.append(atomic_write(stem.with_suffix(".csv"), lambda p: data.to_csv(p, index=False)))
    plt.close(fig)
    return paths


def plot_layers(
    summary: pd.DataFrame,
    stem: str | Path,
    *,
    selected_k: dict[str, int] | None = None,
    metric: str = "probe_accuracy",
    title: str | None = None,
    chance: float | None = None,
    caption: str | None = None,
) -> list[Path]:
    """One panel per model: text and image accuracy (mean line, std band) against XEmbed, 1..L, XProj.

    Each panel marks its model's selected first adapted block k (label in the panel) and shades the adapted
    blocks k..L; *chance* (e.g. 1 / number of datasets) is drawn as a dotted line in every panel, and
    *caption* is written under the figure.
    """
    _theme(1.1)
    data = summary[(summary["metric"] == metric) & summary["tower"].isin(["image", "text"])].copy()
    if "model" not in data.columns:
        data["model"] = "model"
    models = list(dict.fromkeys(data["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.6), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models):
        d = data[data["model"] == model]
        names = d.sort_values("layer_index").drop_duplicates("layer_index")["layer_name"].tolist()
        for tower in ("text", "image"):
            t = d[d["tower"] == tower].sort_values("layer_index")
            ax.plot(
                t["layer_index"],
                t["mean"] * 100,
                marker="o",
                ms=3.5,
                lw=1.8,
                color=TOWER_COLOURS[tower],
                label=tower.capitalize(),
            )
            ax.fill_between(
                t["layer_index"],
                (t["mean"] - t["std"]) * 100,
                (t["mean"] + t["std"]) * 100,
                color=TOWER_COLOURS[tower],
                alpha=0.2,
                lw=0,
            )
        if chance is not None:
            ax.axhline(100 * chance, color="grey", ls=":", lw=1.1, label="chance")
        if selected_k and model in selected_k:
            k = selected_k[model]
            depth = len(names) - 2
            ax.axvspan(k - 0.5, depth + 0.5, color="#2ca02c", alpha=0.08, lw=0)
            ax.axvline(k - 0.5, color="#2ca02c", ls="--", lw=1.2, label="first adapted block k")
            ax.text(k - 0.35, 0.03, f"k = {k}", transform=ax.get_xaxis_transform(), color="#2ca02c", fontsize=9)
        ax.set_xticks(range(len(names)))
        crowded = sum(len(n) + 1 for n in names) > 30  # would the labels touch if written level?
        rotation = 90 if len(names) > 16 else 40 if crowded else 0
        ax.set_xticklabels(names, rotation=rotation, fontsize=8, ha="right" if rotation == 40 else "center")
        if rotation == 40:
            for label in ax.get_xticklabels():
                label.set_rotation_mode("anchor")
        ax.set_xlabel("layer")
        ax.set_title(model, fontsize=10)
        ax.set_xlim(-0.3, len(names) - 0.7)
    axes[0][0].set_ylabel("dataset-probe accuracy (%)")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    if caption:
        fig.text(0.01, -0.02, caption, fontsize=8, color="#444444", ha="left", va="top", wrap=True)
    return save_figure(fig, stem, data)


def plot_k_sweep(
    results: pd.DataFrame,
    stem: str | Path,
    *,
    selected_k: int | None = None,
    baseline: dict[str, float] | None = None,
    title: str | None = None,
    others: dict[str, dict[str, float]] | None = None,
) -> list[Path]:
    """Base, novel and HM accuracy (mean, std band over seeds) against the first adapted block k.

    *results* has columns ``k``, ``metric`` (base / novel / hm) and ``value`` (one row per seed);
    *baseline* (e.g. the zero-shot model's ``{"base": .., "novel": .., "hm": ..}``) is drawn as dotted lines.
    *others*: methods without a k (``{"coop": {"base": .., "novel": .., "hm": ..}}``); with them the figure has
    one panel per metric, each method a horizontal line beside the curve against k.
    """
    if others:
        return _k_sweep_panels(results, stem, selected_k=selected_k, baseline=baseline, title=title, others=others)
    _theme(1.1)
    fig, ax = plt.subplots(figsize=(6.6, 3.6))
    colours = {"base": "#1f77b4", "novel": "#ff7f0e", "hm": "#2ca02c"}
    for metric in ("base", "novel", "hm"):
        d = results[results["metric"] == metric].groupby("k")["value"].agg(["mean", "std"]).reset_index()
        if d.empty:
            continue
        d["std"] = d["std"].fillna(0.0)
        ax.plot(
            d["k"],
            d["mean"],
            marker="o",
            ms=4,
            color=colours[metric],
            label=metric.upper() if metric == "hm" else metric,
        )
        ax.fill_between(d["k"], d["mean"] - d["std"], d["mean"] + d["std"], color=colours[metric], alpha=0.15, lw=0)
        if baseline and metric in baseline:
            ax.axhline(
                baseline[metric],
                color=colours[metric],
                ls=":",
                lw=1.2,
                label=f"zero-shot {metric.upper() if metric == 'hm' else metric}",
            )
    if selected_k is not None:
        ax.axvline(selected_k, color="grey", ls="--", lw=1.2, label=f"probe-selected k={selected_k}")
    ax.set_xlabel("first adapted block k (adapters on blocks k..L)")
    ax.set_ylabel("accuracy (%)")
    ax.set_xticks(sorted(results["k"].unique()))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)  # beside, never on the curves
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, stem, results)


_METHOD_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#1f77b4", "#bcbd22", "#17becf")
_METRIC_NAMES = {"hm": "HM", "target_average": "target average"}


def _k_sweep_panels(results, stem, *, selected_k, baseline, title, others) -> list[Path]:
    """One panel per metric: MMA against k (mean, std band), zero-shot and every other method as horizontal lines."""
    _theme(1.0)
    metrics = ("base", "novel", "hm")
    fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.4), sharey=False)
    for ax, metric in zip(axes, metrics):
        d = results[results["metric"] == metric].groupby("k")["value"].agg(["mean", "std"]).reset_index()
        d["std"] = d["std"].fillna(0.0)
        ax.plot(d["k"], d["mean"], marker="o", ms=4, color="#2ca02c", label="MMA (against k)")
        ax.fill_between(d["k"], d["mean"] - d["std"], d["mean"] + d["std"], color="#2ca02c", alpha=0.15, lw=0)
        if baseline and metric in baseline:
            ax.axhline(baseline[metric], color="black", ls=":", lw=1.2, label="zero-shot")
        for (name, values), colour in zip(others.items(), _METHOD_COLOURS):
            if metric in values:
                ax.axhline(values[metric], color=colour, ls="--", lw=1.2, label=name)
        if selected_k is not None:
            ax.axvline(selected_k, color="grey", ls="-.", lw=1.0, label=f"probe-selected k={selected_k}")
        ax.set_title(_METRIC_NAMES.get(metric, metric), fontsize=10)
        ax.set_xlabel("first adapted block k")
        ax.set_xticks(sorted(results["k"].unique()))
    axes[0].set_ylabel("accuracy (%)")
    handles, labels = [], []
    for ax in axes:  # one legend for all panels (the linear probe has no novel / HM line)
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    axes[-1].legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, stem, results)


def plot_methods(
    averages: pd.DataFrame,
    stem: str | Path,
    *,
    metrics: list[str],
    title: str | None = None,
    order: list[str] | None = None,
    colours: dict[str, str] | None = None,
) -> list[Path]:
    """Grouped bars: for every metric, one bar per method (mean over seeds, std as an error bar).

    *averages* has columns ``method``, ``k``, ``seed``, ``metric``, ``value`` (one row per seed; the metric already
    averaged over datasets). A method without a metric (the linear probe's novel and HM) has no bar there.
    *order*: the methods' order (default: as they come); *colours*: a method's own colour (the others take the
    palette's in turn).
    """
    _theme(1.0)
    data = averages.copy()
    rank = {m: i for i, m in enumerate(order or [])}
    data = data.sort_values("method", key=lambda c: c.map(lambda m: rank.get(m, len(rank))), kind="stable")
    data["label"] = [m if pd.isna(k) else f"{m} (k={int(k)})" for m, k in zip(data["method"], data["k"])]
    labels = list(dict.fromkeys(data["label"]))
    palette = iter(_METHOD_COLOURS)
    own = dict(zip(data["label"], data["method"].map(colours or {})))
    colours = {label: own[label] if isinstance(own[label], str) else next(palette, "#1f77b4") for label in labels}
    fig, ax = plt.subplots(figsize=(1.3 + 1.1 * len(metrics) * max(1, len(labels)) / 3, 3.4))
    width = 0.8 / max(1, len(labels))
    for i, label in enumerate(labels):
        d = data[data["label"] == label].groupby("metric")["value"].agg(["mean", "std"])
        xs = [j + (i - (len(labels) - 1) / 2) * width for j, m in enumerate(metrics) if m in d.index]
        ys = [d.loc[m, "mean"] for m in metrics if m in d.index]
        es = [0.0 if pd.isna(d.loc[m, "std"]) else d.loc[m, "std"] for m in metrics if m in d.index]
        ax.bar(xs, ys, width, yerr=es, capsize=2, color=colours[label], alpha=0.85, label=label)
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([_METRIC_NAMES.get(m, m) for m in metrics])
    ax.set_ylabel("accuracy (%), average over datasets")
    lo = data["value"].min()
    ax.set_ylim(max(0.0, lo - 10), min(100.0, data["value"].max() + 5))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, stem, averages)
