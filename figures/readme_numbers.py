"""The README's numbers about the embedded default, generated from the files ``figures/regenerate.sh`` writes.

Every number the README quotes about the embedded default sits in a block between ``<!-- numbers:NAME -->`` and
``<!-- /numbers:NAME -->``, written here from ``figures/*.csv`` / ``*.json``, the tuning records
(``adapters/tuned/``) and the checkpoint's record (``probe/embedded/mma-tiny.json``).
``tests/test_readme_numbers.py`` regenerates every block and fails when the README differs, and fails on a number
written by hand in those sections, so the text and the data cannot drift apart.

    python figures/readme_numbers.py --write    # rewrite the blocks in README.md
    python figures/readme_numbers.py --check    # exit 1 when a block differs
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import pandas as pd

from mma.adapters.methods import BASELINE, DEFAULT, get_method, method_names
from mma.analysis.plots import depth_text

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "figures"
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- numbers:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /numbers:(?P=name) -->)", re.S)
#: the README's sections whose numbers must all come from a block (a heading, and the next heading of its level)
CHECKED_SECTIONS = ("#### On the embedded default", "### On the embedded default")

ZS, MMA = BASELINE.name, DEFAULT.name  # the baseline and the method the README is about


def _f(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _signed(x: float, digits: int = 1) -> str:
    return f"{x:+.{digits}f}"


def _hm(b: float, n: float) -> float:
    return 2 * b * n / (b + n) if b + n else 0.0


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _summary(name: str) -> pd.DataFrame:
    return pd.read_csv(FIGURES / name)


def _cell(s: pd.DataFrame, method: str, dataset: str, metric: str, what: str = "mean") -> float:
    row = s[(s["method"] == method) & (s["dataset"] == dataset) & (s["metric"] == metric)]
    return float(row[what].iloc[0]) if len(row) else float("nan")


def _k_of(s: pd.DataFrame, method: str = MMA) -> str:
    """The depth *method* ran at in summary *s*, as tables print it (``4``, ``image 3, text 7``)."""
    row = s.loc[s["method"] == method].iloc[0]
    return depth_text(row["k"], row.get("k_image"), row.get("k_text"))


def _selected_k() -> int:
    """The k the default probe run selected (the base-to-novel folder also holds the k sweep's other ks)."""
    return int(json.loads((FIGURES / "selection.json").read_text())["selections"][0]["k"])


def _probe_depth() -> dict:
    """The depth ``train-selected --run`` trains MMA at: each tower's k of the default probe run where it gives them
    apart from k (as ``mma.app.settings`` reads a selection), else k."""
    sel = json.loads((FIGURES / "selection.json").read_text())["selections"][0]
    towers = (sel.get("k_image"), sel.get("k_text"))
    if None not in towers and set(towers) != {sel["k"]}:
        return {"k": None, "k_image": towers[0], "k_text": towers[1]}
    return {"k": sel["k"], "k_image": None, "k_text": None}


def _at_probe_depth(s: pd.DataFrame) -> pd.DataFrame:
    """The zero-shot rows and MMA's at the probe's depth (the base-to-novel folder also holds the sweeps' others)."""
    d = _probe_depth()
    if d["k"] is not None:
        mine = s["k"] == d["k"]
    else:
        mine = s["k"].isna() & (s["k_image"] == d["k_image"]) & (s["k_text"] == d["k_text"])
    return s[(s["method"] == ZS) | ((s["method"] == MMA) & mine)]


def _probe_label() -> str:
    return depth_text(*_probe_depth().values())


# -- the suite --------------------------------------------------------------------------------------------------
def suite() -> str:
    record = json.loads((ROOT / "probe" / "embedded" / "weights" / "mma-tiny.json").read_text())
    zs = record["zero_shot"]
    names = [n for n in zs["trained"] if not n.startswith("objects_")]
    rows = [[n, _f(100 * zs["random_init"][n]), f"**{_f(100 * zs['trained'][n])}**"] for n in names]
    mean = lambda d: 100 * sum(d[n] for n in names) / len(names)  # noqa: E731
    rows.append(["**mean**", _f(mean(zs["random_init"])), f"**{_f(mean(zs['trained']))}**"])
    variants = [[n, f"**{_f(100 * zs['trained'][n])}**"] for n in zs["trained"] if n.startswith("objects_")]
    return (
        "Zero-shot accuracy (%) on each test split (test draw 1), prompt \"a photo of a {}.\", from `probe/embedded/weights/mma-tiny.json`:\n\n"
        + _table(["dataset", "random init", "**mma-tiny**"], rows)
        + "\n\n"
        + _table(["shifted variant of objects", "**mma-tiny**"], variants)
        + "\n"
    )


# -- Figure 1 and the probe table --------------------------------------------------------------------------------
def _curve(f: pd.DataFrame, model: str, tower: str) -> pd.Series:
    rows = f[(f["model"] == model) & (f["tower"] == tower) & (f["metric"] == "probe_accuracy")]
    return pd.Series(100 * rows["mean"].to_numpy(), index=rows["layer_name"].astype(str)).rename(None)


def figure1() -> str:
    f = _summary("figure1.csv")
    img, txt = _curve(f, "mma-tiny", "image"), _curve(f, "mma-tiny", "text")
    rnd, rtxt = _curve(f, "mma-tiny:random", "image"), _curve(f, "mma-tiny:random", "text")
    blocks = [b for b in img.index if b.isdigit()]
    top = max(blocks, key=lambda b: img[b])
    gap = txt - img
    sel = json.loads((FIGURES / "selection.json").read_text())["selections"][0]
    rules = sel["rules"]
    seeds = ", ".join(str(v) for v in sel["per_seed_k"].values())
    return (
        f"In the pretrained model the image features tell the datasets apart better with depth: {_f(img['XEmbed'])}% "
        f"at XEmbed, {_f(img['1'])}% after block 1, {_f(img['4'])}% after block 4, {_f(img[top])}% after block {top} "
        f"(the highest block), {_f(img[blocks[-1]])}% after block {blocks[-1]} "
        f"({_signed(img[blocks[-1]] - img['1'])} points over block 1), {_f(img['XProj'])}% at XProj. The same "
        f"architecture with random weights goes from {_f(rnd['1'])}% after block 1 to {_f(rnd[blocks[-1]])}% after "
        f"block {blocks[-1]} (the suite's datasets differ in plain pixel statistics too), and its text curve is noise "
        f"({_f(rtxt.min(), 0)}-{_f(rtxt.max(), 0)}%). The text probe is split by class (it must name the dataset of "
        f"class prompts it never saw in probe training): {_f(txt.min(), 0)}-{_f(txt.max(), 0)}% in the pretrained "
        f"model. The text-image gap is {_signed(gap['XEmbed'])} points at XEmbed, between "
        f"{_signed(gap[blocks[:-1]].min())} and {_signed(gap[blocks[:-1]].max())} from block 1 to block "
        f"{blocks[-2]}, {_signed(gap[blocks[-1]])} after block {blocks[-1]} and {_signed(gap['XProj'])} at XProj. "
        f"The saturation rule picks **k = {rules['saturation']['k']}** (gap rule {rules['gap']['k']}, knee "
        f"{rules['knee']['k']}); the seeds alone give {seeds}.\n"
    )


def layers() -> str:
    f = _summary("layers_summary.csv")
    f = f[f["model"] == "mma-tiny"]

    def get(tower: str, metric: str, layer: str, what: str = "mean") -> float:
        row = f[(f["tower"] == tower) & (f["metric"] == metric) & (f["layer_name"].astype(str) == layer)]
        return float(row[what].iloc[0]) if len(row) else float("nan")

    names = list(dict.fromkeys(f["layer_name"].astype(str)))
    rows = []
    for layer in names:
        t, i = 100 * get("text", "probe_accuracy", layer), 100 * get("image", "probe_accuracy", layer)
        ts, is_ = 100 * get("text", "probe_accuracy", layer, "std"), 100 * get("image", "probe_accuracy", layer, "std")
        rows.append(
            [layer, f"{_f(t)} ± {_f(ts)}", f"{_f(i)} ± {_f(is_)}", _signed(t - i), _f(100 * get("image", "knn_accuracy", layer)),
             _f(get("both", "cka", layer), 2)]
        )  # fmt: skip
    return _table(["layer", "text (by class)", "image", "gap", "image kNN", "CKA"], rows) + "\n"


# -- base-to-novel ----------------------------------------------------------------------------------------------
def _b2n_rows(s: pd.DataFrame, method: str) -> tuple[list[list[str]], dict]:
    datasets = sorted(d for d in s["dataset"].unique() if d != "average")
    rows = []
    for d in datasets:
        zs = [_f(_cell(s, ZS, d, m)) for m in ("base", "novel", "hm")]
        mine = [f"{_f(_cell(s, method, d, m))} ± {_f(_cell(s, method, d, m, 'std'))}" for m in ("base", "novel", "hm")]
        rows.append([d, *zs, *mine])
    avg = {w: {m: _cell(s, w, "average", m) for m in ("base", "novel", "hm")} for w in (ZS, method)}
    rows.append(
        ["**average** (HM of averages)"]
        + [_f(avg[ZS][m]) if m != "hm" else f"**{_f(avg[ZS][m])}**" for m in ("base", "novel", "hm")]
        + [_f(avg[method][m]) if m != "hm" else f"**{_f(avg[method][m])}**" for m in ("base", "novel", "hm")]
    )
    return rows, avg


def _without(s: pd.DataFrame, method: str, left_out: str) -> tuple[float, float, float]:
    """The average gains over zero-shot (base, novel, HM of averages) without one dataset."""
    keep = [d for d in s["dataset"].unique() if d not in ("average", left_out)]
    out = []
    for m in ("base", "novel"):
        out.append(
            sum(_cell(s, method, d, m) - _cell(s, ZS, d, m) for d in keep) / len(keep)
        )
    b = {w: sum(_cell(s, w, d, "base") for d in keep) / len(keep) for w in (ZS, method)}
    n = {w: sum(_cell(s, w, d, "novel") for d in keep) / len(keep) for w in (ZS, method)}
    out.append(_hm(b[method], n[method]) - _hm(b[ZS], n[ZS]))
    return tuple(out)


def base2novel() -> str:
    s = _at_probe_depth(_summary("base2novel_summary.csv"))
    k = _probe_label()
    rows, avg = _b2n_rows(s, MMA)
    gain = {m: avg[MMA][m] - avg[ZS][m] for m in ("base", "novel", "hm")}
    header = ["dataset", "zero-shot base", "novel", "HM", f"**MMA k={k}** base", "novel", "HM"]
    return (
        _table(header, rows)
        + "\n\n"
        + f"MMA at k = {k} against zero-shot, averaged over the 9 datasets: base {_signed(gain['base'])}, novel "
        f"{_signed(gain['novel'])}, HM {_signed(gain['hm'])}.\n"
    )


def scenes() -> str:
    """How much of MMA's headline gains is `scenes` (base-to-novel at the selected k, and cross-dataset)."""
    s = _at_probe_depth(_summary("base2novel_summary.csv"))
    k = _probe_label()
    gain = {m: _cell(s, MMA, "average", m) - _cell(s, ZS, "average", m) for m in ("base", "novel", "hm")}
    one = {m: _cell(s, MMA, "scenes", m) - _cell(s, ZS, "scenes", m) for m in ("base", "novel", "hm")}
    wb, wn, wh = _without(s, MMA, "scenes")
    x = _summary("cross_dataset_summary.csv")
    source = x.loc[x["dataset"] != "average", "dataset"].iloc[0]
    targets = [m for m in x.loc[(x["dataset"] == source) & (x["method"] == MMA), "metric"] if m.startswith("target:")]
    diff = {m.split(":", 1)[1]: _cell(x, MMA, source, m) - _cell(x, ZS, source, m) for m in targets}
    rest = [v for name, v in diff.items() if name != "scenes"]
    return (
        f"On these test images, MMA's base-to-novel gain over zero-shot (k = {k}, the average of 9 datasets) is base "
        f"{_signed(gain['base'])}, novel {_signed(gain['novel'])}, HM {_signed(gain['hm'])}; `scenes` alone gains "
        f"{_signed(one['base'])} base, {_signed(one['novel'])} novel, {_signed(one['hm'])} HM, and without it the "
        f"other 8 datasets average {_signed(wb)} base, {_signed(wn)} novel, {_signed(wh)} HM. Under cross-dataset "
        f"transfer `scenes` gains {_signed(diff['scenes'])} points and the other {len(rest)} targets average "
        f"{_signed(sum(rest) / len(rest))}.\n"
    )


# -- tuning -----------------------------------------------------------------------------------------------------
def _records() -> dict[str, dict]:
    out = {}
    for path in sorted((ROOT / "adapters" / "tuned").glob("mma-tiny-*.json")):
        record = json.loads(path.read_text())
        out[record["search"]["method"]] = record
    return out


def _values(values: dict) -> str:
    return ", ".join(f"{k} {v!r}" if isinstance(v, str) else f"{k} {v}" for k, v in values.items())


def tuning() -> str:
    records = _records()
    rows = []
    for name in [m for m in method_names() if m in records]:
        search = records[name]["search"]
        tried = search["candidates"]
        chosen = tried[search["chosen"]]
        rows.append(
            [
                name,
                str(len(tried)),
                _values(tried[0]["values"]),
                _f(tried[0]["score"]),
                _values(chosen["values"]) if search["chosen"] else "(the published values)",
                f"**{_f(chosen['score'])}**",
                f"{search['seconds'] / 60:.0f} min",
            ]
        )
    any_search = next(iter(records.values()))["search"]
    header = ["method", "candidates", "published values", "val HM", "chosen values", "val HM", "search time"]
    return (
        f"Budget {any_search['budget']} candidates per method, seed(s) {', '.join(map(str, any_search['seeds']))}; "
        "score: HM of the averaged pseudo-base and pseudo-novel validation accuracies over the "
        f"{len(any_search['datasets'])} datasets; search time: the candidates' training and evaluation, summed (one "
        "thread, the other core busy):\n\n"
        + _table(header, rows)
        + "\n"
    )


# -- the methods ------------------------------------------------------------------------------------------------
def _methods_stats(name: str) -> dict[str, dict]:
    """Per method: base / novel / HM mean and std over seeds of the per-seed averages (HM: of the mean base and
    novel, std of the per-seed HMs), and its k."""
    t = _summary(name)
    out = {}
    for method, g in t.groupby("method"):
        stats = g.groupby("metric")["value"].agg(["mean", "std", "count"])
        row = {m: (stats.loc[m, "mean"], stats.loc[m, "std"]) for m in stats.index}
        if "base" in row and "novel" in row:
            row["hm"] = (_hm(row["base"][0], row["novel"][0]), stats.loc["hm", "std"])
        first = g.iloc[0]
        row["k"] = depth_text(first["k"], first.get("k_image"), first.get("k_text"))
        row["seeds"] = str(g["seed"].nunique()) if g["seed"].notna().any() else "-"
        out[method] = row
    return out


def _ms(pair) -> str:
    mean, std = pair
    return _f(mean) if std is None or (isinstance(std, float) and math.isnan(std)) else f"{_f(mean)} ± {_f(std)}"


def methods() -> str:
    tables = _recipe_tables()
    zs = tables["tuned"][ZS]["hm"][0]
    rows = []
    for method in method_names():
        searched = bool(get_method(method).search_space)
        for recipe in ("paper", "tuned") if searched else ("paper",):
            r = tables[recipe].get(method)
            if r is None:
                continue
            label = method + (f" (k={r['k']})" if r["k"] != "-" else "")
            cells = [_ms(r[m]) if m in r else "n/a" for m in ("base", "novel", "hm")]
            vs = _signed(r["hm"][0] - zs) if "hm" in r and method != ZS else ""
            shown = recipe if searched else "-" if not get_method(method).trains else "its own C search"
            if searched and method not in _records():
                shown = "paper (not tuned yet)"
            rows.append([label, shown, r["seeds"], *cells, vs])
    return _table(["method", "recipe", "seeds", "base", "novel", "HM", "HM vs zero-shot"], rows) + "\n"


def methods_per_dataset() -> str:
    s = _summary("methods_base2novel_summary.csv")
    datasets = sorted(d for d in s["dataset"].unique() if d != "average")
    present = [m for m in method_names() if m in set(s["method"])]
    rows = []
    for d in datasets:
        row = [d]
        for m in present:
            cells = [_cell(s, m, d, x) for x in ("base", "novel", "hm")]
            row.append(" / ".join(_f(c) for c in (cells if not math.isnan(cells[1]) else cells[:1])))
        rows.append(row)
    return _table(["dataset", *present], rows) + "\n"


def _recipe_tables() -> dict[str, dict]:
    """The methods at their paper recipes and at their tuned ones (a method without a tuning record is left out of
    the tuned table: the embedded recipe runs it at its paper values, shown in the paper table)."""
    tuned = _methods_stats("methods_base2novel.csv")
    keep = {m: r for m, r in tuned.items() if m in _records() or not get_method(m).search_space}
    return {"paper": _methods_stats("methods_base2novel_paper.csv"), "tuned": keep}


def _spread(row: dict) -> str:
    """``± std`` over the seeds of a method's HM, or what stands in for it with one seed."""
    return "(one seed)" if row["seeds"] == "1" else f"± {_f(row['hm'][1])}"


def verdict() -> str:
    """The ranking behind the paragraph on what the fair comparison shows, from the paper and tuned tables."""
    tables = _recipe_tables()
    lines = []
    for recipe, t in tables.items():
        zs = t[ZS]["hm"][0]
        ranked = sorted((m for m in t if "hm" in t[m] and m != ZS), key=lambda m: -t[m]["hm"][0])
        order = ", ".join(f"{m} {_signed(t[m]['hm'][0] - zs)} {_spread(t[m])}" for m in ranked)
        best_other = next(m for m in ranked if m != MMA)
        gap = t[MMA]["hm"][0] - t[best_other]["hm"][0]
        lines.append(
            f"At the {recipe} recipes, HM against zero-shot's {_f(zs)} (± the std over seeds): {order}; MMA "
            f"{'leads' if gap > 0 else 'trails'} the best other method ({best_other}) by {_f(abs(gap))}."
        )
    s = _summary("methods_base2novel_summary.csv")
    keep = [d for d in s["dataset"].unique() if d not in ("average", "scenes")]

    def hm_without(method: str) -> float:
        b, n = (sum(_cell(s, method, d, m) for d in keep) / len(keep) for m in ("base", "novel"))
        return _hm(b, n)

    others = [m for m in tables["tuned"] if m != ZS and not math.isnan(hm_without(m))]
    ranked = sorted(others, key=lambda m: -hm_without(m))
    lines.append(
        f"Without `scenes` (the other {len(keep)} datasets, tuned recipes), HM against zero-shot's "
        f"{_f(hm_without(ZS))}: " + ", ".join(f"{m} {_signed(hm_without(m) - hm_without(ZS))}" for m in ranked) + "."
    )
    return " ".join(lines) + "\n"


# -- transfer ---------------------------------------------------------------------------------------------------
def transfer() -> str:
    rows = []
    for label, name in (("cross-dataset", "cross_dataset_summary.csv"), ("domain-gen", "domain_gen_summary.csv")):
        s = _summary(name)
        k = _k_of(s)
        source = s.loc[s["dataset"] != "average", "dataset"].iloc[0]
        metrics = [m for m in s.loc[(s["dataset"] == source) & (s["method"] == MMA), "metric"]]
        order = ["source", *sorted(m for m in metrics if m.startswith("target:")), "target_average"]
        for m in order:
            shown = f"{source} (source)" if m == "source" else m.split(":", 1)[-1]
            shown = "**target average**" if m == "target_average" else shown
            zs, mean, std = (
                _cell(s, ZS, source, m),
                _cell(s, MMA, source, m),
                _cell(s, MMA, source, m, "std"),
            )
            rows.append([label, shown, _f(zs), f"{_f(mean)} ± {_f(std)}", _signed(mean - zs)])
    return _table(["protocol", "dataset", "zero-shot", f"**MMA k={k}**", "difference"], rows) + "\n"


# -- the k sweep ------------------------------------------------------------------------------------------------
def k_sweep() -> str:
    record = json.loads((FIGURES / "k_sweep.json").read_text())
    rows = []
    for k in map(str, record["ks"]):
        p = record["paired"][k]
        mark = " (selected)" if int(k) == record["selected_k"] else ""
        mark += " (highest mean)" if int(k) == record["best_k"] else ""
        band = f"±{_f(p['band'], 2)}" if p["band"] is not None else "n/a"
        rows.append([f"{k}{mark}", _f(record["hm"][k], 2), _signed(p["difference"], 2), band,
                     "yes" if p["within_noise"] else "no"])  # fmt: skip
    zs = record["zero_shot"]["hm"]
    return (
        _table(["k", "HM (mean of seeds)", "difference to the highest, paired by seed", "noise band", "within noise"], rows)
        + f"\n\nZero-shot HM: {_f(zs, 2)}. {record['selected_verdict']}\n"
    )


# -- the regret of the probe-chosen depth ------------------------------------------------------------------------
def regret() -> str:
    """Per layer-deep method: HM at the probe-chosen, published and best depth of its sweep, and the differences."""
    t = pd.read_csv(FIGURES / "regret.csv")

    def at(r, name: str) -> str:
        if pd.isna(r[f"{name}_hm"]):
            return "-"
        words = f" ({r[f'{name}_depth']})" if isinstance(r[f"{name}_depth"], str) and r[f"{name}_depth"] else ""
        return f"{r[name]}{words}: {_ms((r[f'{name}_hm'], r[f'{name}_std']))}"

    def gap(r, name: str) -> str:
        if pd.isna(r[f"{name}_vs_best"]):
            return "-"
        if str(r[name]) == str(r["best"]):
            return "it is the best"
        band = "" if pd.isna(r[f"{name}_band"]) else f" (band ±{_f(r[f'{name}_band'])})"
        within = "" if pd.isna(r[f"{name}_band"]) else (", within noise" if r[f"{name}_within_noise"] else "")
        return f"{_signed(r[f'{name}_vs_best'])}{band}{within}"

    rows = [
        [r["method"], at(r, "probe"), at(r, "published"), at(r, "best"), gap(r, "probe"), gap(r, "published"),
         str(int(r["depths"]))]
        for _, r in t.iterrows()
    ]  # fmt: skip
    header = ["method", "probe-chosen k: HM", "published k: HM", "best k of the sweep: HM", "probe - best",
              "published - best", "depths trained"]  # fmt: skip
    return _table(header, rows) + "\n"


# -- a folder of made-up names ----------------------------------------------------------------------------------
def made_up() -> str:
    s = _summary("made_up_names_summary.csv")
    d = s.loc[s["dataset"] != "average", "dataset"].iloc[0]
    zs, mean, std = _cell(s, ZS, d, "accuracy"), _cell(s, MMA, d, "accuracy"), _cell(s, MMA, d, "accuracy", "std")
    return f"Zero-shot {_f(zs)}%, MMA k = {_k_of(s)} **{_f(mean)} ± {_f(std)}%** ({_signed(mean - zs)} points).\n"


BLOCKS = {
    "figure1": figure1,
    "layers": layers,
    "suite": suite,
    "base-to-novel": base2novel,
    "scenes": scenes,
    "tuning": tuning,
    "methods": methods,
    "methods-per-dataset": methods_per_dataset,
    "verdict": verdict,
    "transfer": transfer,
    "k-sweep": k_sweep,
    "regret": regret,
    "made-up": made_up,
}


def render(text: str) -> str:
    """*text* with every block regenerated (an unknown block name is an error)."""

    def one(match: re.Match) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise KeyError(f"README block {name!r} has no generator (known: {', '.join(BLOCKS)})")
        return f"{match.group(1)}{BLOCKS[name]()}{match.group(4)}"

    return BLOCK.sub(one, text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true")
    group.add_argument("--check", action="store_true")
    args = ap.parse_args()
    text = README.read_text(encoding="utf-8")
    new = render(text)
    if args.write:
        README.write_text(new, encoding="utf-8")
        return 0
    if new != text:
        print("README.md's generated numbers differ from figures/; run python figures/readme_numbers.py --write")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
