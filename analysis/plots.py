"""Figures: per-layer separability (the paper's Figure 1), accuracy against k, and the methods side by side.

Every figure is written as PNG (README) and PDF (papers), with the CSV it was drawn from beside it, so
``mma plot`` can redraw it without recomputing anything.

The figures say what they show and nothing more: bars start at 0 and carry their value; an error bar (or band) is
drawn only from two seeds up and the caption says what it is; a metric a method does not give reads "n/a" where
its bar would be; every label sits off the data (the k each rule chose is a row of its own under a layer panel);
a figure's width follows the number of its groups, and its caption is written from the data it draws (how many
seeds) and what the caller knows of the run (datasets, samples). ``*_figure`` build a figure and return it (the
tests read it); ``plot_*`` build it and save it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from mma.io import atomic_write  # noqa: E402

__all__ = [
    "plot_layers",
    "plot_k_sweep",
    "plot_methods",
    "save_figure",
    "layers_figure",
    "k_sweep_figure",
    "methods_figure",
    "depth_text",
    "regret_figure",
    "plot_regret",
]

TOWER_COLOURS = {"text": "#d62728", "image": "#1f77b4"}
CHOSEN = "#2ca02c"  # the k that was used: its line, its row and its shading
CAPTION_SIZE = 8
LABEL_SIZE = 7  # the values on the bars, "n/a" and the rows under a layer panel


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


def _caption(fig, sentences: list[str]) -> None:
    """The caption under the figure (gid ``caption``), wrapped to the figure's width; the tight bounding box of
    :func:`save_figure` keeps it in the file."""
    text = " ".join(s for s in sentences if s)
    if not text:
        return
    chars = max(40, int(fig.get_figwidth() * 72 / (CAPTION_SIZE * 0.6)))
    fig.text(
        0.01,
        -0.01,
        textwrap.fill(text, chars),
        fontsize=CAPTION_SIZE,
        color="#444444",
        ha="left",
        va="top",
        gid="caption",
    )


def _seeds_phrase(n: int | None, what: str) -> str:
    """What a line or bar is over *n* seeds (None: several, number unknown), and what its spread is (none below
    two seeds)."""
    if n is not None and n <= 1:
        return f"{what}: one seed, so no spread is shown."
    over = "the seeds" if n is None else f"{n} seeds"
    return f"{what}: mean over {over}; {'bands' if what == 'Lines' else 'error bars'}: one standard deviation."


def _seed_counts(data: pd.DataFrame, by: list[str]) -> pd.Series:
    """How many seeds each group of *data* has: its non-blank seeds (a seedless model: 0), or its rows when the
    table has no seed column."""
    if "seed" in data.columns:
        return data.groupby(by, sort=False)["seed"].count()
    return data.groupby(by, sort=False)["value"].size()


def _beside(fig, legend, plot_w: float) -> None:
    """Make *fig* as wide as its plot area (*plot_w* inches with the axis labels) plus the legend drawn beside it,
    so that the layout keeps the plot its width instead of squeezing it for the legend."""
    fig.set_figwidth(plot_w + legend.get_window_extent().width / fig.dpi + 0.3)


def _upright_if_crowded(fig, axes) -> bool:
    """Turn the x tick labels of every axes in *axes* whose neighbouring labels touch upright (measured with the
    renderer after a layout pass); whether any turned."""
    fig.draw_without_rendering()
    turned = False
    for ax in axes:
        boxes = [t.get_window_extent() for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        if any(a.x1 + 3 > b.x0 for a, b in zip(boxes, boxes[1:])):  # a few pixels apart at least
            ax.tick_params(axis="x", labelrotation=90)
            turned = True
    return turned


# -- Figure 1: probe accuracy against layer ---------------------------------------------------------------------


def _selection_rows(record: dict) -> list[tuple[str, int, bool]]:
    """The rows under a layer panel: (label, k, emphasised) for the rule that chose k (first), every other rule,
    and each seed's k when the seeds disagree (one row when they agree)."""
    used = record.get("rule")
    rules = record.get("rules") or {}
    rows = []
    for rule, value in sorted(rules.items(), key=lambda kv: kv[0] != used):
        if value.get("k") is not None:
            rows.append(
                (f"{rule} rule: k = {value['k']}" + (" (used)" if rule == used else ""), value["k"], rule == used)
            )
    if not rows and record.get("k") is not None:
        rows.append((f"selected: k = {record['k']}", record["k"], True))
    per_seed = {int(s): int(k) for s, k in (record.get("per_seed_k") or {}).items()}
    if len(set(per_seed.values())) > 1:
        rows += [(f"seed {s}: k = {k}", k, False) for s, k in sorted(per_seed.items())]
    elif len(per_seed) > 1:
        rows.append(
            (f"all {len(per_seed)} seeds: k = {next(iter(per_seed.values()))}", next(iter(per_seed.values())), False)
        )
    return rows


def _model_seeds(d: pd.DataFrame) -> int | None:
    """The number of seeds behind a model's curves (``n_seeds``; without it, 1 when no std is known and None,
    several but not said how many, when one is)."""
    if "n_seeds" in d.columns and d["n_seeds"].notna().any():
        return int(d["n_seeds"].max())
    return 1 if d["std"].isna().all() else None


def _layer_ticks(ax, names: list[str], width_in: float) -> None:
    """Layer names under *ax*: level when they fit the panel's width, upright (never slanted into each other)
    when they do not."""
    ax.set_xticks(range(len(names)))
    crowded = sum(len(str(n)) + 2 for n in names) * 8 * 0.6 > width_in * 72
    ax.set_xticklabels(names, rotation=90 if crowded else 0, fontsize=8)


def _layer_data(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows Figure 1 draws (and writes as its CSV): *metric* of the image and text towers."""
    data = summary[(summary["metric"] == metric) & summary["tower"].isin(["image", "text"])].copy()
    if "model" not in data.columns:
        data["model"] = "model"
    return data


def layers_figure(
    summary: pd.DataFrame,
    *,
    selections: dict[str, dict] | None = None,
    selected_k: dict[str, int] | None = None,
    metric: str = "probe_accuracy",
    title: str | None = None,
    chance: float | None = None,
    caption: str | None = None,
):
    """Figure 1 (see :func:`plot_layers`); returns the figure."""
    _theme(1.1)
    data = _layer_data(summary, metric)
    models = list(dict.fromkeys(data["model"]))
    records = {m: {"k": k, "rules": {}, "per_seed_k": {}} for m, k in (selected_k or {}).items() if k is not None}
    records.update({m: r for m, r in (selections or {}).items() if r and r.get("k") is not None})
    rows = {m: _selection_rows(records[m]) if m in records else [] for m in models}
    n_rows = max((len(r) for r in rows.values()), default=0)
    labels_w = max((len(r[0]) for v in rows.values() for r in v), default=0) * LABEL_SIZE * 0.62 / 72
    panel_w, main_h, strip_h = 4.8 + labels_w, 3.2, 0.2 * n_rows + 0.15
    if n_rows:
        fig, grid = plt.subplots(
            2,
            len(models),
            figsize=(panel_w * len(models), main_h + strip_h + 1.0),
            squeeze=False,
            sharex="col",
            gridspec_kw={"height_ratios": [main_h, strip_h]},
        )
        axes, strips = grid[0], grid[1]
    else:
        fig, grid = plt.subplots(1, len(models), figsize=(panel_w * len(models), main_h + 0.9), squeeze=False)
        axes, strips = grid[0], [None] * len(models)
    for ax in axes[1:]:
        ax.sharey(axes[0])
    seeds = {}
    for ax, strip, model in zip(axes, strips, models):
        d = data[data["model"] == model]
        names = d.sort_values("layer_index").drop_duplicates("layer_index")["layer_name"].astype(str).tolist()
        seeds[model] = _model_seeds(d)
        for tower in ("text", "image"):
            t = d[d["tower"] == tower].sort_values("layer_index")
            colour = TOWER_COLOURS[tower]
            ax.plot(
                t["layer_index"], t["mean"] * 100, marker="o", ms=3.5, lw=1.8, color=colour, label=tower.capitalize()
            )
            if seeds[model] != 1 and t["std"].notna().any():
                lo, hi = (t["mean"] - t["std"]) * 100, (t["mean"] + t["std"]) * 100
                ax.fill_between(t["layer_index"], lo, hi, color=colour, alpha=0.2, lw=0)
        if chance is not None:
            ax.axhline(100 * chance, color="grey", ls=":", lw=1.1, label=f"chance ({100 * chance:.0f}%)", gid="chance")
        depth = len(names) - 2
        if model in records:
            k = records[model]["k"]
            ax.axvspan(k - 0.5, depth + 0.5, color=CHOSEN, alpha=0.08, lw=0)
            ax.axvline(k - 0.5, color=CHOSEN, ls="--", lw=1.4, label="first adapted block k (used)")
        ax.set_title(model, fontsize=10)
        ax.set_xlim(-0.4, len(names) - 0.6)
        bottom = strip if strip is not None else ax
        if strip is not None:
            ax.tick_params(labelbottom=False)
            _draw_rows(strip, rows[model], n_rows, depth)
        _layer_ticks(bottom, names, panel_w - labels_w - 1.0)
        bottom.set_xlabel("layer")
    axes[0].set_ylabel("dataset-probe accuracy (%)")
    axes[0].set_ylim(bottom=0)  # accuracy from 0: the chance line and the curves keep their true distance
    legend = axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    _beside(fig, legend, panel_w * len(models))
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(h_pad=0.4)  # the rows of k close under their panel
    if _upright_if_crowded(fig, [s if s is not None else a for a, s in zip(axes, strips)]):
        fig.tight_layout(h_pad=0.4)
    counts = set(seeds.values())
    if len(counts) == 1:
        said = _seeds_phrase(counts.pop(), "Lines")
    else:
        said = "Lines: mean over seeds ({}); bands: one standard deviation, drawn from two seeds up.".format(
            ", ".join(f"{m}: " + ("one seed" if n == 1 else f"{n or 'several'} seeds") for m, n in seeds.items())
        )
    under = ""
    if n_rows:
        under = (
            "Under each panel: the first adapted block k each rule chose (bold: the rule used; bars: the adapted "
            "blocks k..L)"
            + (", and each seed's k" if any(len(r.get("per_seed_k") or {}) > 1 for r in records.values()) else "")
            + "."
        )
    _caption(fig, [said, under, caption or ""])
    return fig


def _draw_rows(strip, rows: list[tuple[str, int, bool]], n_rows: int, depth: int) -> None:
    """One row per rule (and seed) under a layer panel: a bar over the blocks k..L it would adapt, named on the
    left (the rule used in bold)."""
    for i, (_label, k, emphasised) in enumerate(rows):
        colour = CHOSEN if emphasised else "#7f7f7f"
        strip.barh(i, depth + 1 - k, left=k - 0.5, height=0.6, color=colour, alpha=0.45 if emphasised else 0.25, lw=0)
        strip.plot([k - 0.5] * 2, [i - 0.3, i + 0.3], color=colour, lw=2.4 if emphasised else 1.4)
    strip.set_yticks(range(len(rows)))
    strip.set_yticklabels([r[0] for r in rows], fontsize=LABEL_SIZE)
    for tick, row in zip(strip.get_yticklabels(), rows):
        if row[2]:
            tick.set_fontweight("bold")
    strip.set_ylim(n_rows - 0.5, -0.5)
    strip.grid(False, axis="y")
    if not rows:
        strip.set_yticks([])


def plot_layers(
    summary: pd.DataFrame,
    stem: str | Path,
    *,
    selections: dict[str, dict] | None = None,
    selected_k: dict[str, int] | None = None,
    metric: str = "probe_accuracy",
    title: str | None = None,
    chance: float | None = None,
    caption: str | None = None,
) -> list[Path]:
    """One panel per model: text and image accuracy (mean line; std band from two seeds up) against XEmbed,
    1..L, XProj, the y axis from 0.

    *selections* (model -> its ``selection.json`` record) or *selected_k* (model -> k): the used k is a dashed
    line with the adapted blocks k..L shaded, and under the panel one row per rule (the used one in bold) and per
    seed when the seeds disagree says which k each chose. *chance* (e.g. 1 / number of datasets) is a dotted
    line. The caption says how many seeds the lines are over, then *caption* (what the caller knows of the run).
    """
    fig = layers_figure(
        summary,
        selections=selections,
        selected_k=selected_k,
        metric=metric,
        title=title,
        chance=chance,
        caption=caption,
    )
    return save_figure(fig, stem, _layer_data(summary, metric))


# -- accuracy against k -------------------------------------------------------------------------------------------


def _rule_lines(ax, selected_k: int | None, rules: dict[str, int] | None, rule: str | None) -> None:
    """The selected k (dashed, the rule that chose it named) and every other rule's k (dotted, fainter); rules that
    chose the same k share one line."""
    by_k: dict[int, list[str]] = {}
    for name, k in (rules or {}).items():
        by_k.setdefault(int(k), []).append(name)
    if selected_k is not None:
        named = by_k.pop(int(selected_k), [rule] if rule else [])
        chose = f" ({', '.join(named)} rule{'s' if len(named) > 1 else ''}, used)" if named else ""
        ax.axvline(selected_k, color="grey", ls="--", lw=1.6, label=f"probe-selected k = {selected_k}{chose}")
    for (k, names), colour in zip(sorted(by_k.items()), ("#8c564b", "#e377c2", "#17becf", "#bcbd22")):
        plural = "s" if len(names) > 1 else ""
        ax.axvline(k, color=colour, ls=":", lw=1.2, label=f"{', '.join(names)} rule{plural}: k = {k}")


def _sweep_line(ax, results: pd.DataFrame, metric: str, colour: str, label: str) -> None:
    """A metric's mean against k, with a one-std band where a k has two seeds or more."""
    d = results[results["metric"] == metric]
    stats = d.groupby("k")["value"].agg(["mean", "std"]).reset_index()
    if stats.empty:
        return
    stats["n"] = _seed_counts(d, ["k"]).reindex(stats["k"]).to_numpy()
    ax.plot(stats["k"], stats["mean"], marker="o", ms=4, color=colour, label=label)
    band = stats[(stats["n"] > 1) & stats["std"].notna()]
    if len(band):
        ax.fill_between(
            band["k"], band["mean"] - band["std"], band["mean"] + band["std"], color=colour, alpha=0.15, lw=0
        )


def k_sweep_figure(
    results: pd.DataFrame,
    *,
    selected_k: int | None = None,
    baseline: dict[str, float] | None = None,
    title: str | None = None,
    others: dict[str, dict[str, float]] | None = None,
    rules: dict[str, int] | None = None,
    rule: str | None = None,
    caption: str | None = None,
):
    """Accuracy against k (see :func:`plot_k_sweep`); returns the figure."""
    metrics = [m for m in ("base", "novel", "hm") if m in set(results["metric"])]
    names = {m: _METRIC_NAMES.get(m, m) for m in metrics}
    if others:
        _theme(1.0)
        fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.4), sharey=False)
        for ax, metric in zip(axes, ("base", "novel", "hm")):
            _sweep_line(ax, results, metric, CHOSEN, "MMA (against k)")
            if baseline and metric in baseline:
                ax.axhline(baseline[metric], color="black", ls=":", lw=1.2, label="zero-shot")
            for (name, values), colour in zip(others.items(), _METHOD_COLOURS):
                if metric in values:
                    ax.axhline(values[metric], color=colour, ls="--", lw=1.2, label=name)
            _rule_lines(ax, selected_k, rules, rule)
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
        legend = axes[-1].legend(
            handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False
        )
        _beside(fig, legend, 11.0)
        if title:
            fig.suptitle(title, fontsize=10)
    else:
        _theme(1.1)
        fig, ax = plt.subplots(figsize=(6.6, 3.6))
        colours = {"base": "#1f77b4", "novel": "#ff7f0e", "hm": CHOSEN}
        for metric in metrics:
            _sweep_line(ax, results, metric, colours[metric], names[metric])
            if baseline and metric in baseline:
                ax.axhline(baseline[metric], color=colours[metric], ls=":", lw=1.2, label=f"zero-shot {names[metric]}")
        _rule_lines(ax, selected_k, rules, rule)
        ax.set_xlabel("first adapted block k (adapters on blocks k..L)")
        ax.set_ylabel("accuracy (%)")
        ax.set_xticks(sorted(results["k"].unique()))
        legend = ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)  # off the curves
        _beside(fig, legend, 5.4)
        if title:
            ax.set_title(title, fontsize=10)
    fig.tight_layout()
    n = int(_seed_counts(results, ["k", "metric"]).max()) if len(results) else 0
    _caption(
        fig,
        [_seeds_phrase(n, "Lines"), "Dotted horizontal lines: the zero-shot model." if baseline else "", caption or ""],
    )
    return fig


def plot_k_sweep(
    results: pd.DataFrame,
    stem: str | Path,
    *,
    selected_k: int | None = None,
    baseline: dict[str, float] | None = None,
    title: str | None = None,
    others: dict[str, dict[str, float]] | None = None,
    rules: dict[str, int] | None = None,
    rule: str | None = None,
    caption: str | None = None,
) -> list[Path]:
    """Base, novel and HM accuracy (mean; std band from two seeds up) against the first adapted block k.

    *results* has columns ``k``, ``metric`` (base / novel / hm), ``value`` and ``seed`` (one row per seed);
    *baseline* (e.g. the zero-shot model's ``{"base": .., "novel": .., "hm": ..}``) is drawn as dotted lines.
    *rules* (rule -> its k) and *rule* (the one that chose *selected_k*): every rule's k is a vertical line, the
    selected one dashed. *others*: methods without a k (``{"coop": {"base": .., "novel": .., "hm": ..}}``); with
    them the figure has one panel per metric, each method a horizontal line beside the curve against k.
    """
    fig = k_sweep_figure(
        results,
        selected_k=selected_k,
        baseline=baseline,
        title=title,
        others=others,
        rules=rules,
        rule=rule,
        caption=caption,
    )
    return save_figure(fig, stem, results)


# -- the methods side by side -----------------------------------------------------------------------------------

_METHOD_COLOURS = (
    "#9467bd", "#8c564b", "#e377c2", "#1f77b4", "#bcbd22", "#17becf", "#ff7f0e", "#d62728", "#aec7e8", "#ffbb78",
    "#c5b0d5", "#f7b6d2",
)  # fmt: skip
_METRIC_NAMES = {"hm": "HM", "target_average": "target average"}
BAR_IN = 0.3  # inches per bar: room for its value written upright above it, and for "n/a"


def methods_figure(
    averages: pd.DataFrame,
    *,
    metrics: list[str],
    title: str | None = None,
    order: list[str] | None = None,
    colours: dict[str, str] | None = None,
    caption: str | None = None,
):
    """The methods' bars (see :func:`plot_methods`); returns the figure."""
    _theme(1.0)
    data = averages.copy()
    if "seed" not in data.columns:
        data["seed"] = pd.NA
    rank = {m: i for i, m in enumerate(order or [])}
    data = data.sort_values("method", key=lambda c: c.map(lambda m: rank.get(m, len(rank))), kind="stable")
    depths = zip(*(data[c] if c in data else [None] * len(data) for c in ("k", "k_image", "k_text")))
    data["label"] = [m if (d := depth_text(*ks)) == "-" else f"{m} (k={d})" for m, ks in zip(data["method"], depths)]
    labels = list(dict.fromkeys(data["label"]))
    palette = iter(_METHOD_COLOURS)
    own = dict(zip(data["label"], data["method"].map(colours or {})))
    colours = {label: own[label] if isinstance(own[label], str) else next(palette, "#1f77b4") for label in labels}
    stats = data.groupby(["label", "metric"], sort=False)["value"].agg(["mean", "std"])
    stats["seeds"] = _seed_counts(data, ["label", "metric"])
    n = max(1, len(labels))
    axes_w = max(2.0, len(metrics) * (n * BAR_IN + 0.5))  # the plot grows with the groups, never a sliver
    fig, ax = plt.subplots(figsize=(axes_w + 1.0, 3.6))
    width = 0.8 / n
    top = 1.0
    missing = []
    for i, label in enumerate(labels):
        for j, metric in enumerate(metrics):
            x = j + (i - (n - 1) / 2) * width
            if (label, metric) not in stats.index:
                ax.text(x, 1.0, "n/a", ha="center", va="bottom", fontsize=LABEL_SIZE, color="#555555", gid="n/a")
                missing.append((label, _METRIC_NAMES.get(metric, metric)))
                continue
            s = stats.loc[(label, metric)]
            err = s["std"] if s["seeds"] > 1 and pd.notna(s["std"]) else None  # one seed or none: no spread to show
            ax.bar(
                [x], [s["mean"]], width, yerr=None if err is None else [err], capsize=3, color=colours[label],
                alpha=0.85, gid=f"{label}|{metric}", error_kw={"lw": 1.0},
            )  # fmt: skip
            ax.annotate(
                f"{s['mean']:.1f}", (x, s["mean"] + (err or 0.0)), xytext=(0, 3), textcoords="offset points",
                rotation=90, ha="center", va="bottom", fontsize=LABEL_SIZE, gid="value",
            )  # fmt: skip
            top = max(top, s["mean"] + (err or 0.0))
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([textwrap.fill(_METRIC_NAMES.get(m, m), 12) for m in metrics])
    ax.set_xlim(-0.5, len(metrics) - 0.5)
    ax.grid(False, axis="x")  # a group's grid line would run between its bars
    ax.set_ylabel("accuracy (%), average over datasets")
    ax.set_ylim(0, top / 0.8)  # from 0, so bar heights compare; headroom for the values
    handles = [Patch(facecolor=colours[label], alpha=0.85, label=label) for label in labels]
    legend = ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    _beside(fig, legend, axes_w + 1.0)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _caption(fig, [_bars_caption(stats, labels), _missing_caption(missing), caption or ""])
    return fig


def _bars_caption(stats: pd.DataFrame, labels: list[str]) -> str:
    """What the bars and their error bars are, and which bars have none (one seed, or a model without seeds)."""
    seeds = stats.groupby(level="label", sort=False)["seeds"].max().reindex(labels)
    spread = seeds[seeds > 1]
    said = "Bars: mean over seeds of the metric averaged over the datasets."
    if len(spread):
        if spread.nunique() == 1:
            said += f" Error bars: one standard deviation over {int(spread.iloc[0])} seeds."
        else:
            said += " Error bars: one standard deviation over seeds ({}).".format(
                ", ".join(f"{label}: {int(v)}" for label, v in spread.items())
            )
    without = [
        f"{label} ({'no seed: deterministic' if v == 0 else 'one seed'})" for label, v in seeds.items() if v <= 1
    ]
    if without:
        said += f" No error bar: {', '.join(without)}."
    return said


def _missing_caption(missing: list[tuple[str, str]]) -> str:
    """Which methods give no value for a metric ("n/a" where the bar would be)."""
    if not missing:
        return ""
    by_label: dict[str, list[str]] = {}
    for label, metric in missing:
        by_label.setdefault(label, []).append(metric)
    return "n/a: the method gives no such metric ({}).".format(
        "; ".join(f"{label}: {', '.join(ms)}" for label, ms in by_label.items())
    )


def plot_methods(
    averages: pd.DataFrame,
    stem: str | Path,
    *,
    metrics: list[str],
    title: str | None = None,
    order: list[str] | None = None,
    colours: dict[str, str] | None = None,
    caption: str | None = None,
) -> list[Path]:
    """Grouped bars from 0: for every metric, one bar per method, its value written above it (mean over seeds,
    one std as an error bar from two seeds up; none for one seed or a seedless model, and the caption says which).

    *averages* has columns ``method``, ``k``, ``seed``, ``metric``, ``value`` (one row per seed, seed blank for a
    model without seeds; the metric already averaged over datasets). A method without a metric (the linear probe's
    novel and HM) reads "n/a" where its bar would be. *order*: the methods' order (default: as they come);
    *colours*: a method's own colour (the others take the palette's in turn). The figure is as wide as its groups.
    """
    fig = methods_figure(averages, metrics=metrics, title=title, order=order, colours=colours, caption=caption)
    return save_figure(fig, stem, averages)


def depth_text(k, k_image=None, k_text=None) -> str:
    """A run's depth as tables and figures print it: ``4``; ``image 3, text 7`` when its towers start apart from a
    shared k (k blank); ``-`` for a run without a depth."""
    if k is not None and not pd.isna(k):
        return str(int(k))
    if k_image is None or k_text is None or pd.isna(k_image) or pd.isna(k_text):
        return "-"
    return f"image {int(k_image)}, text {int(k_text)}"


_REGRET_POINTS = (("probe", "probe-chosen", "#2ca02c", "o"), ("published", "published", "#7f7f7f", "s"),
                  ("best", "best of the sweep", "#1f77b4", "^"))  # fmt: skip


def regret_figure(table: pd.DataFrame, *, title: str | None = None, caption: str | None = None):
    """One column per method: its HM at the probe-chosen, the published and the best depth of its sweep (mean over
    seeds, one std as an error bar), each marker labelled with the depth (see :func:`plot_regret`)."""
    import matplotlib.pyplot as plt

    _theme(1.0)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(table) + 1.5), 3.6))
    offsets = {name: (i - 1) * 0.22 for i, (name, *_rest) in enumerate(_REGRET_POINTS)}
    for name, label, colour, marker in _REGRET_POINTS:
        xs, ys, errs, texts = [], [], [], []
        for x, (_, row) in enumerate(table.iterrows()):
            if pd.isna(row[f"{name}_hm"]):
                continue
            xs.append(x + offsets[name])
            ys.append(row[f"{name}_hm"])
            errs.append(0.0 if pd.isna(row[f"{name}_std"]) else row[f"{name}_std"])
            texts.append(str(row[name]).replace("image ", "i").replace(", text ", "/t"))  # i3/t7: towers apart
        ax.errorbar(xs, ys, yerr=errs, fmt=marker, color=colour, label=label, capsize=3, ms=5)
        for x, y, text in zip(xs, ys, texts):
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(0, -11), ha="center", fontsize=LABEL_SIZE - 1)
    ax.set_xticks(range(len(table)))
    ax.set_xticklabels(table["method"])
    ax.set_ylabel("HM (base-to-novel, mean over seeds)")
    ax.legend(fontsize=LABEL_SIZE, loc="best")
    if title:
        ax.set_title(title, fontsize=9)
    seeds = int(table["seeds"].max()) if len(table) else 0
    _caption(
        fig,
        [
            caption or "",
            f"Error bars: one std over {seeds} seeds." if seeds > 1 else "One seed: no error bars.",
            "Each marker is labelled with its depth: the shared start block k, or each tower's (i3/t7: the image "
            "tower from block 3, the text tower from block 7).",
        ],
    )
    return fig


def plot_regret(table: pd.DataFrame, stem: str | Path, *, title: str | None = None, caption: str | None = None):
    """``stem.png`` / ``.pdf`` / ``.csv``: what choosing the depth from the probes costs or gains per method (the
    regret table of ``mma sweep-k``: columns method, probe / published / best and their ``_hm``, ``_std``)."""
    return save_figure(regret_figure(table, title=title, caption=caption), stem, table)
