"""Turn per-layer separability curves into the first adapted block k (``mma probe select``).

The paper publishes no rule for k (its released settings are k = 5 for base-to-novel and k = 9 for
cross-dataset / domain generalisation on ViT-B/16); these rules are ours. Each reads the mean probe
accuracy of blocks 1..L only (XEmbed and XProj are not blocks an adapter can start at).

``saturation`` (default, threshold 0.5)
    Normalise each tower's block curve to [0, 1] (lowest block value -> 0, highest -> 1) and average the
    towers with equal weight. k = the first block whose combined value reaches the threshold: the depth by
    which separability has covered that fraction of its rise. A tower whose curve is flat (its blocks span
    less than ``FLAT`` = 1 accuracy point, e.g. a text probe at 100% everywhere) carries no depth information
    and is left out of the average; if both are flat, k = 1 (every block is equally dataset-specific).
``gap`` (threshold 0.5)
    gap(i) = text accuracy - image accuracy at block i. k = the first block where the gap has closed by
    the threshold fraction of its block-1 value, i.e. gap(i) <= (1 - threshold) * gap(1). No gap at block
    1 (gap(1) <= 0) gives 1; a gap that never closes gives L.
``knee``
    On the combined normalised curve over normalised depth, the block farthest above the straight chord
    from block 1 to block L (Kneedle for a rising, saturating curve): where separability stops rising
    quickly. A curve that never bends above its chord gives the block farthest below it.

Adapters then run from block k through block L.

Per tower (``k_image``, ``k_text``): the same rule on one tower's block curve alone, for methods that start each
tower at its own depth. ``saturation`` and ``knee`` read that curve as they read the combined one (a flat tower
gives 1); ``gap`` is a relation between the towers, so each tower's k is the shared one. The shared ``k`` stays
the default rule's answer on both towers together.

``selection.json`` also records the k that each seed's curves alone give, and warnings: when the seeds
disagree, and when the curves are *flat*: no tower's block curve spans ``WARN_SPAN`` = 5 accuracy points
and three standard errors of its seed mean. Every rule normalises the curves before it reads them, so a
3-point wiggle yields a k as confidently as a 30-point rise; the warning says when k reflects noise or
structureless variation rather than depth (a model with random weights is the usual case).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mma.errors import MmaError

__all__ = [
    "RULES",
    "DEFAULT_RULE",
    "TOWERS",
    "block_curves",
    "seed_curves",
    "select_k",
    "select_tower_ks",
    "selection_record",
    "warnings_for",
]

RULES = ("saturation", "gap", "knee")
DEFAULT_RULE = "saturation"
DEFAULT_THRESHOLDS = {"saturation": 0.5, "gap": 0.5, "knee": None}
FLAT = 0.01  # a block curve spanning less than one accuracy point carries no depth information
WARN_SPAN = 0.05  # below five points of rise, a selection gets a warning
TOWERS = ("image", "text")


def block_curves(
    summary: pd.DataFrame, model: str | None = None, metric: str = "probe_accuracy"
) -> dict[str, np.ndarray]:
    """``{"image": [L], "text": [L]}`` mean accuracy of blocks 1..L from a summary table."""
    s = summary[(summary["metric"] == metric)]
    if model is not None and "model" in s.columns:
        s = s[s["model"] == model]
    curves = {}
    for tower in ("image", "text"):
        t = s[s["tower"] == tower].sort_values("layer_index")
        blocks = t[~t["layer_name"].isin(["XEmbed", "XProj"])]
        if blocks.empty:
            raise MmaError(
                f"The summary has no {metric} rows for the {tower} tower blocks; run 'mma probe layers' first."
            )
        curves[tower] = blocks["mean"].to_numpy(dtype=float)
    if len(curves["image"]) != len(curves["text"]):
        raise MmaError("The image and text towers have different depths; pass curves resampled to one depth.")
    return curves


def seed_curves(tidy: pd.DataFrame, model: str | None = None) -> dict[int, dict[str, np.ndarray]]:
    """``{seed: {"image": [L], "text": [L]}}`` block accuracies of every seed in a tidy ``layers.csv`` table."""
    t = tidy[tidy["metric"] == "probe_accuracy"]
    if model is not None and "model" in t.columns:
        t = t[t["model"] == model]
    t = t[~t["layer_name"].astype(str).isin(["XEmbed", "XProj"])]
    out = {}
    for seed, d in t.groupby("seed"):
        towers = {tower: d[d["tower"] == tower].sort_values("layer_index") for tower in ("image", "text")}
        out[int(seed)] = {tower: rows["value"].to_numpy(float) for tower, rows in towers.items()}
    return out


def _standard_error(summary: pd.DataFrame, model: str | None, tower: str) -> float:
    """The median over blocks of the standard error of a block's mean accuracy (std / sqrt(seeds))."""
    s = summary[(summary["metric"] == "probe_accuracy") & (summary["tower"] == tower)]
    if model is not None and "model" in s.columns:
        s = s[s["model"] == model]
    s = s[~s["layer_name"].astype(str).isin(["XEmbed", "XProj"])]
    if not len(s):
        return 0.0
    n = s["n_seeds"] if "n_seeds" in s.columns else 1
    return float((s["std"] / np.sqrt(n)).median())


def warnings_for(
    curves: dict[str, np.ndarray], errors: dict[str, float], per_seed: dict[int, int], k: int
) -> list[str]:
    """Plain-language warnings about a selection: flat curves, seeds that disagree (module docstring)."""
    out = []
    spans = {t: float(curves[t].max() - curves[t].min()) for t in ("image", "text")}
    if not any(spans[t] >= max(WARN_SPAN, 3 * errors.get(t, 0.0)) for t in spans):
        out.append(
            "The block curves are nearly flat (image spans {:.1f} points, text {:.1f}; a curve needs {:.0f} points "
            "and 3 standard errors of its seed mean to carry depth information): k = {} reflects noise or "
            "structureless variation, not depth.".format(100 * spans["image"], 100 * spans["text"], 100 * WARN_SPAN, k)
        )
    if len(set(per_seed.values())) > 1:
        each = ", ".join(f"seed {s} -> {v}" for s, v in sorted(per_seed.items()))
        out.append(f"The seeds disagree on k ({each}); the mean curves give k = {k}.")
    return out


def _combined(curves: dict[str, np.ndarray]) -> np.ndarray:
    """Mean of the towers' curves normalised to [0, 1], flat towers left out (all flat: ones)."""
    normalised = [
        (c - c.min()) / (c.max() - c.min()) for c in (curves["image"], curves["text"]) if c.max() - c.min() >= FLAT
    ]
    if not normalised:
        return np.ones_like(curves["image"])
    return np.mean(normalised, axis=0)


def select_k(curves: dict[str, np.ndarray], rule: str = DEFAULT_RULE, threshold: float | None = None) -> int:
    """The first adapted block k (1-based) by *rule*; see the module docstring."""
    if rule not in RULES:
        raise MmaError(f"The rule {rule!r} is not valid (valid: {', '.join(RULES)}).")
    if threshold is None:
        threshold = DEFAULT_THRESHOLDS[rule]
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise MmaError(f"The threshold for rule {rule!r} must be in (0, 1]; got {threshold}.")
    depth = len(curves["image"])
    if rule == "saturation":
        combined = _combined(curves)
        return int(np.flatnonzero(combined >= threshold - 1e-12)[0]) + 1
    if rule == "gap":
        gap = curves["text"] - curves["image"]
        if gap[0] <= 0:
            return 1
        closed = np.flatnonzero(gap <= (1.0 - threshold) * gap[0] + 1e-12)
        return int(closed[0]) + 1 if len(closed) else depth
    combined = _combined(curves)
    if depth < 3:
        return 1
    x = np.linspace(0.0, 1.0, depth)
    chord = combined[0] + (combined[-1] - combined[0]) * x
    diff = combined - chord
    return int(np.argmax(diff) if diff.max() > 1e-12 else np.argmin(diff)) + 1


def select_tower_ks(curves: dict[str, np.ndarray], rule: str = DEFAULT_RULE, threshold: float | None = None) -> dict:
    """``{"image": k, "text": k}``: *rule* on each tower's block curve alone (module docstring; gap: the shared k)."""
    if rule == "gap":  # a relation between the towers: no answer for one alone
        k = select_k(curves, rule, threshold)
        return {tower: k for tower in TOWERS}
    return {tower: select_k({t: curves[tower] for t in TOWERS}, rule, threshold) for tower in TOWERS}


def selection_record(
    summary: pd.DataFrame,
    model: str,
    *,
    rule: str = DEFAULT_RULE,
    thresholds: dict[str, float] | None = None,
    tidy: pd.DataFrame | None = None,
) -> dict:
    """Every rule's k (shared and per tower), the default rule's, the thresholds, the curves, each seed's k and
    warnings.

    *tidy* (the per-seed ``layers.csv`` table) gives the per-seed k; without it that part is empty.
    """
    thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    curves = block_curves(summary, model)
    ks = {r: select_k(curves, r, thresholds[r]) for r in RULES}
    towers = {r: select_tower_ks(curves, r, thresholds[r]) for r in RULES}
    depth = len(curves["image"])
    per_seed, per_seed_towers = {}, {}
    if tidy is not None:
        seeds = {s: c for s, c in seed_curves(tidy, model).items() if len(c["image"])}
        per_seed = {s: select_k(c, rule, thresholds[rule]) for s, c in seeds.items()}
        per_seed_towers = {s: select_tower_ks(c, rule, thresholds[rule]) for s, c in seeds.items()}
    errors = {t: _standard_error(summary, model, t) for t in ("image", "text")}
    return {
        "model": model,
        "depth": depth,
        "rule": rule,
        "k": ks[rule],
        **{f"k_{tower}": towers[rule][tower] for tower in TOWERS},
        "per_seed_k": {str(s): k for s, k in per_seed.items()},
        **{f"per_seed_k_{t}": {str(s): ks_[t] for s, ks_ in per_seed_towers.items()} for t in TOWERS},
        "warnings": warnings_for(curves, errors, per_seed, ks[rule]),
        "rules": {
            r: {"k": ks[r], **{f"k_{t}": towers[r][t] for t in TOWERS}, "threshold": thresholds[r]} for r in RULES
        },
        "curves": {
            "blocks": list(range(1, depth + 1)),
            "image": [round(float(v), 6) for v in curves["image"]],
            "text": [round(float(v), 6) for v in curves["text"]],
            "combined_normalised": [round(float(v), 6) for v in _combined(curves)],
        },
    }
