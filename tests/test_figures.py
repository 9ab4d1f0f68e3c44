"""The figures do not flatter (issue 24): each kind is drawn from tiny synthetic tables (no model) and read back
with matplotlib's renderer.

Bars start at 0; an error bar is drawn from two seeds up only, and the caption says what it is; a metric a method
lacks reads "n/a"; a bar chart grows with its groups; no two labels overlap; the k rows under a layer panel stay
off the curves and the chance line, name every rule's k and each seed's when they disagree; a caption says how
many seeds the lines are over, and claims no band for one seed.
"""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import BarContainer
from matplotlib.transforms import Bbox

from mma.analysis.plots import k_sweep_figure, layers_figure, methods_figure, plot_methods
from mma.analysis.select_k import DEFAULT_RULE, RULES

DEPTH = 12


@pytest.fixture(autouse=True)
def _close_figures():
    """Every test's figures leave pyplot's registry (a closed figure still draws on its own canvas)."""
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def drawn():
    """The figures several tests read, each built once (keyed by name)."""
    return {"b2n": b2n_figure(), "layers3": layers(3), "layers1": layers(1)}


# -- tiny tables ------------------------------------------------------------------------------------------------


def method_rows(spec: dict[tuple[str, int | None], tuple[int, dict[str, float]]]) -> pd.DataFrame:
    """``{(method, k): (seeds, {metric: value})}`` -> the tidy table plot_methods reads; seeds 0 = seedless."""
    rows = []
    for (method, k), (seeds, values) in spec.items():
        for seed in range(1, seeds + 1) if seeds else [None]:
            for metric, value in values.items():
                rows.append((method, k, seed, metric, value + (0.7 * seed if seed else 0.0)))
    table = pd.DataFrame(rows, columns=["method", "k", "seed", "metric", "value"])
    return table.astype({"k": "Int64", "seed": "Int64"})


B2N = {
    ("zeroshot", None): (0, {"base": 56.7, "novel": 43.4, "hm": 49.2}),
    ("mma", 4): (3, {"base": 63.9, "novel": 47.0, "hm": 54.2}),
    ("coop", None): (1, {"base": 60.5, "novel": 39.1, "hm": 47.5}),
    ("cocoop", None): (3, {"base": 59.8, "novel": 40.2, "hm": 48.0}),
    ("clip-adapter", None): (3, {"base": 62.6, "novel": 42.9, "hm": 50.9}),
    ("linear-probe", None): (3, {"base": 60.0}),
}
FEW_SHOT = {("zeroshot", None): (0, {"accuracy": 4.0}), ("mma", 4): (3, {"accuracy": 80.6})}
CROSS = {
    ("zeroshot", None): (0, {"source": 58.2, "target_average": 34.6}),
    ("mma", 9): (3, {"source": 63.9, "target_average": 32.2}),
}


def b2n_figure():
    return methods_figure(method_rows(B2N), metrics=["base", "novel", "hm"], title="base2novel")


def layer_summary(models=("tiny", "tiny:random"), seeds: int = 3) -> pd.DataFrame:
    """Curves that cross the chance line (1/9) and each other, like a random model's text tower."""
    names = ["XEmbed", *map(str, range(1, DEPTH + 1)), "XProj"]
    rng = np.random.default_rng(0)
    rows = []
    for m, model in enumerate(models):
        for tower, start, stop in (("image", 0.4, 0.78), ("text", 0.05 + 0.6 * (m == 0), 0.2 + 0.5 * (m == 0))):
            means = np.clip(np.linspace(start, stop, len(names)) + rng.normal(0, 0.04, len(names)), 0.02, 0.98)
            for i, (name, mean) in enumerate(zip(names, means)):
                std = 0.05 if seeds > 1 else np.nan
                rows.append((model, tower, i, name, "probe_accuracy", mean, std, seeds))
    cols = ["model", "tower", "layer_index", "layer_name", "metric", "mean", "std", "n_seeds"]
    return pd.DataFrame(rows, columns=cols)


def record(model: str, ks=(4, 3, 9), per_seed=None) -> dict:
    """A selection.json record: every rule's k (the default rule first), each seed's k."""
    rules = {r: {"k": k, "threshold": None} for r, k in zip(RULES, ks)}
    return {"model": model, "rule": DEFAULT_RULE, "k": rules[DEFAULT_RULE]["k"], "rules": rules,
            "per_seed_k": {str(s): k for s, k in (per_seed or {}).items()}}  # fmt: skip


def sweep_rows(seeds: int) -> pd.DataFrame:
    rows = [
        (k, s, metric, base - 0.3 * k + 0.5 * s)
        for k in range(1, DEPTH + 1)
        for s in range(1, seeds + 1)
        for metric, base in (("base", 64.0), ("novel", 47.0), ("hm", 54.0))
    ]
    return pd.DataFrame(rows, columns=["k", "seed", "metric", "value"])


def layers(seeds: int = 3, per_seed=None):
    summary = layer_summary(seeds=seeds)
    per_seed = per_seed if per_seed is not None else ({1: 4, 2: 3, 3: 7} if seeds > 1 else {1: 4})
    selections = {"tiny": record("tiny", per_seed=per_seed), "tiny:random": record("tiny:random", (5, 1, 11))}
    return layers_figure(summary, selections=selections, chance=1 / 9, caption="9 datasets, 150 samples each.")


# -- reading a figure back -------------------------------------------------------------------------------------


def texts(fig) -> list:
    """Every visible, non-empty label of *fig* after a draw: ticks, titles, axis labels, legends, annotations,
    captions."""
    fig.canvas.draw()
    found = list(fig.texts)
    for ax in fig.axes:
        found += [*ax.get_xticklabels(), *ax.get_yticklabels(), *ax.texts, ax.title, ax.xaxis.label, ax.yaxis.label]
        if ax.get_legend() is not None:
            found += ax.get_legend().get_texts()
    return [t for t in found if t.get_visible() and t.get_text().strip()]


def box(artist) -> Bbox:
    """*artist*'s extent on the canvas, half a pixel in from each side (touching is not overlapping)."""
    b = artist.get_window_extent()
    return Bbox.from_extents(b.x0 + 0.5, b.y0 + 0.5, b.x1 - 0.5, b.y1 - 0.5)


def overlapping(fig) -> list[tuple[str, str]]:
    found = texts(fig)
    return [(a.get_text(), b.get_text()) for a, b in itertools.combinations(found, 2) if box(a).overlaps(box(b))]


def caption(fig) -> str:
    return " ".join(t.get_text() for t in fig.texts if t.get_gid() == "caption").replace("\n", " ")


def bars(ax) -> dict[str, BarContainer]:
    """Each bar's container by its gid, ``"label|metric"``."""
    return {c.patches[0].get_gid(): c for c in ax.containers if isinstance(c, BarContainer)}


def width_in(ax) -> float:
    return ax.get_position().width * ax.figure.get_figwidth()


# -- methods bar charts -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, metrics",
    [(B2N, ["base", "novel", "hm"]), (FEW_SHOT, ["accuracy"]), (CROSS, ["source", "target_average"])],
    ids=["base2novel", "few-shot", "cross-dataset"],
)
def test_method_bars_start_at_0_carry_their_values_and_no_labels_overlap(spec, metrics, drawn):
    fig = drawn["b2n"] if spec is B2N else methods_figure(method_rows(spec), metrics=metrics, title="protocol")
    ax = fig.axes[0]
    assert ax.get_ylim()[0] == 0
    drawn = bars(ax)
    assert ax.get_ylim()[1] >= max(c.patches[0].get_height() for c in drawn.values())
    values = sorted(t.get_text() for t in ax.texts if t.get_gid() == "value")
    assert values == sorted(f"{c.patches[0].get_height():.1f}" for c in drawn.values())  # each bar's value, once
    assert overlapping(fig) == []
    assert width_in(ax) >= 0.2 * len(drawn)  # the plot is not a sliver beside its legend


def test_error_bars_only_from_two_seeds_and_the_caption_says_what_they_are(drawn):
    fig = drawn["b2n"]
    drawn = bars(fig.axes[0])
    for gid, container in drawn.items():
        label = gid.split("|")[0]
        seeds = B2N[next(key for key in B2N if label.startswith(key[0]))][0]
        assert (container.errorbar is not None) == (seeds > 1), gid
    text = caption(fig)
    assert "Error bars: one standard deviation over 3 seeds." in text
    assert "No error bar: zeroshot (no seed: deterministic), coop (one seed)." in text


def test_a_metric_a_method_lacks_reads_n_a_where_its_bar_would_be(drawn):
    fig = drawn["b2n"]
    ax = fig.axes[0]
    na = [t for t in ax.texts if t.get_text() == "n/a"]
    assert len(na) == 2  # the linear probe's novel and HM
    assert not any(gid.startswith("linear-probe|") and not gid.endswith("|base") for gid in bars(ax))
    assert "n/a: the method gives no such metric (linear-probe: novel, HM)." in caption(fig)
    assert sorted(round(t.get_position()[0]) for t in na) == [1, 2]  # in the novel and HM groups


def test_a_bar_chart_grows_with_its_groups(drawn):
    one = methods_figure(method_rows(FEW_SHOT), metrics=["accuracy"])
    two = methods_figure(method_rows(CROSS), metrics=["source", "target_average"])
    six = drawn["b2n"]
    widths = [width_in(f.axes[0]) for f in (one, two, six)]
    assert widths == sorted(widths) and widths[0] < widths[1] < widths[2]
    assert [f.get_figwidth() for f in (one, two, six)] == sorted(f.get_figwidth() for f in (one, two, six))


def test_plot_methods_writes_the_figure_and_its_numbers_unchanged(tmp_path):
    data = method_rows(B2N)
    paths = plot_methods(data, tmp_path / "methods", metrics=["base", "novel", "hm"])
    assert sorted(p.name for p in paths) == ["methods.csv", "methods.pdf", "methods.png"]
    back = pd.read_csv(tmp_path / "methods.csv")
    assert np.allclose(back["value"], data["value"])


# -- Figure 1 ---------------------------------------------------------------------------------------------------


def strips(fig) -> list:
    """The axes of k rows under the panels (their y tick labels name a k)."""
    return [ax for ax in fig.axes if any("k = " in t.get_text() for t in ax.get_yticklabels())]


def panels(fig) -> list:
    return [ax for ax in fig.axes if ax not in strips(fig)]


@pytest.mark.parametrize("seeds", [3, 1])
def test_figure1_labels_overlap_nothing(seeds, drawn):
    fig = drawn[f"layers{seeds}"]
    assert overlapping(fig) == []
    for ax in panels(fig):
        assert ax.get_ylim()[0] == 0


def test_the_k_labels_stay_off_the_curves_and_the_chance_line(drawn):
    fig = drawn["layers3"]
    labels = [t for t in texts(fig) if "k = " in t.get_text()]
    assert len(labels) == 2 * len(RULES) + 3  # every rule in both panels, the first panel's three seeds
    lines = [line for ax in panels(fig) for line in ax.get_lines()]
    assert any(line.get_gid() == "chance" for line in lines)
    for label, line in itertools.product(labels, lines):
        path = line.get_transform().transform_path(line.get_path())
        assert not path.intersects_bbox(box(label), filled=False), (label.get_text(), line.get_label())
    for ax in panels(fig):
        assert not [t for t in ax.texts if "k =" in t.get_text()]  # nothing written on the data


def test_every_rule_s_k_is_marked_the_used_one_bold_and_each_seed_s_when_they_disagree(drawn):
    fig = drawn["layers3"]
    first, second = ([t.get_text() for t in ax.get_yticklabels()] for ax in strips(fig))
    assert first == [
        f"{DEFAULT_RULE} rule: k = 4 (used)", f"{RULES[1]} rule: k = 3", f"{RULES[2]} rule: k = 9",
        "seed 1: k = 4", "seed 2: k = 3", "seed 3: k = 7",
    ]  # fmt: skip
    assert second[0] == f"{DEFAULT_RULE} rule: k = 5 (used)" and len(second) == len(RULES)
    bold = [t.get_text() for ax in strips(fig) for t in ax.get_yticklabels() if t.get_fontweight() == "bold"]
    assert bold == [f"{DEFAULT_RULE} rule: k = 4 (used)", f"{DEFAULT_RULE} rule: k = 5 (used)"]
    agreed = layers(per_seed={1: 4, 2: 4, 3: 4})
    assert [t.get_text() for t in strips(agreed)[0].get_yticklabels()][-1] == "all 3 seeds: k = 4"


@pytest.mark.parametrize("seeds", [1, 3])
def test_figure1_caption_says_how_many_seeds_and_claims_no_band_for_one(seeds, drawn):
    fig = drawn[f"layers{seeds}"]
    text = caption(fig)
    bands = [c for ax in panels(fig) for c in ax.collections if isinstance(c, PolyCollection)]
    if seeds == 1:
        assert "Lines: one seed, so no spread is shown." in text
        assert "band" not in text and "standard deviation" not in text and bands == []
    else:
        assert "Lines: mean over 3 seeds; bands: one standard deviation." in text and len(bands) == 4
    assert text.endswith("9 datasets, 150 samples each.")


def test_figure1_with_only_a_selected_k_still_marks_it():
    fig = layers_figure(layer_summary(("tiny",)), selected_k={"tiny": 6})
    assert [t.get_text() for t in strips(fig)[0].get_yticklabels()] == ["selected: k = 6"]
    assert overlapping(fig) == []


# -- accuracy against k -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seeds, others", [(1, None), (3, None), (1, {"coop": {"base": 60.0, "novel": 40.0, "hm": 48.0}})]
)
def test_k_sweep_marks_every_rule_and_bands_only_from_two_seeds(seeds, others):
    rules = dict(zip(RULES, (4, 3, 9)))
    baseline = {"base": 56.7, "novel": 43.4, "hm": 49.2}
    fig = k_sweep_figure(sweep_rows(seeds), selected_k=4, baseline=baseline, others=others, rules=rules)
    assert overlapping(fig) == []
    legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert f"probe-selected k = 4 ({DEFAULT_RULE} rule, used)" in legend
    assert f"{RULES[1]} rule: k = 3" in legend and f"{RULES[2]} rule: k = 9" in legend
    bands = [c for ax in fig.axes for c in ax.collections if isinstance(c, PolyCollection)]
    if seeds == 1:
        assert bands == [] and caption(fig).startswith("Lines: one seed, so no spread is shown.")
    else:
        assert len(bands) == 3 and caption(fig).startswith("Lines: mean over 3 seeds; bands: one standard deviation.")
