"""Per-layer dataset separability: "which dataset does this sample come from?", layer by layer.

For each seed, a balanced sample of *training* examples per dataset is drawn (label = the dataset), split
stratified into probe-train / probe-val / probe-test, and for every (tower, layer) a
:class:`~mma.analysis.linear_probe.LinearProbe` is fitted (L2 strength chosen on probe-val), refitted on
train+val and scored on probe-test. A cosine kNN gives a cheap second opinion, and linear CKA between each
image's feature and its class prompt's feature at the same layer measures how alike the towers are.

A sample's text feature is the feature of its class prompt (``"a photo of a {class}."``), so text
features repeat within a class. The image probe always splits by sample. ``text_split`` says how the
*text* probe splits its rows: ``"by-class"`` (the default of ``mma probe layers``) puts every class's
prompt in exactly one of probe-train / probe-val / probe-test, so the text probe must place class names
it never saw, and its accuracy says how well the layer groups the names of one dataset; with
``"by-sample"`` every prompt recurs in all three parts and the text probe is near 100% at every layer.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning

from mma.errors import MmaError

from .linear_probe import knn_accuracy, probe_accuracy
from .similarity import linear_cka

__all__ = ["TEXT_SPLITS", "ProbeInput", "draw_probe_samples", "split_rows", "layer_separability", "summarise"]

TEXT_SPLITS = ("by-sample", "by-class")
FRACTIONS = (0.6, 0.2, 0.2)


def draw_probe_samples(samples: Sequence, n: int, seed: int) -> list:
    """``n`` training samples drawn without replacement by ``random.Random(seed)`` (order kept)."""
    if n > len(samples):
        raise MmaError(f"--samples {n} is more than the {len(samples)} training samples available.")
    picks = sorted(random.Random(seed).sample(range(len(samples)), n))
    return [samples[i] for i in picks]


@dataclass
class ProbeInput:
    """Features of one model for one seed, aligned row by row.

    ``image[l]`` and ``text[l]`` are ``[n, d_l]`` float32 arrays for layer index ``l`` (0..L+1);
    ``dataset`` is the label (dataset index) and ``klass`` the global class id of each row. Towers of
    different depth (ViT-L-14's 24 image and 12 text blocks, convolutional stages) give the text tower's
    names in ``text_layer_names`` (default: ``layer_names`` for both).
    """

    layer_names: list[str]
    image: list[np.ndarray]
    text: list[np.ndarray]
    dataset: np.ndarray
    klass: np.ndarray
    text_layer_names: list[str] | None = None

    def names(self, tower: str) -> list[str]:
        return self.layer_names if tower == "image" or self.text_layer_names is None else self.text_layer_names


def split_rows(dataset: np.ndarray, klass: np.ndarray, seed: int, how: str) -> tuple[np.ndarray, ...]:
    """Row indices of probe-train / probe-val / probe-test (60/20/20), stratified by dataset."""
    if how not in TEXT_SPLITS:
        raise MmaError(f"--text-split {how!r} is not valid (valid: {', '.join(TEXT_SPLITS)}).")
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    for d in np.unique(dataset):
        rows = np.flatnonzero(dataset == d)
        if how == "by-sample":
            units = [np.array([r]) for r in rng.permutation(rows)]
        else:
            classes = rng.permutation(np.unique(klass[rows]))
            if len(classes) < 3:
                raise MmaError(
                    f"--text-split by-class needs at least 3 classes per dataset; dataset #{d} has {len(classes)} "
                    "(use --text-split by-sample)."
                )
            units = [rows[klass[rows] == c] for c in classes]
        n = len(units)
        n_val = max(1, round(n * FRACTIONS[1]))
        n_test = max(1, round(n * FRACTIONS[2]))
        n_train = n - n_val - n_test
        if n_train < 1:
            raise MmaError(f"Too few samples per dataset ({n}) to split into probe train/val/test; raise --samples.")
        bounds = [0, n_train, n_train + n_val, n]
        for p in range(3):
            chunk = units[bounds[p] : bounds[p + 1]]
            parts[p].extend(np.concatenate(chunk).tolist() if chunk else [])
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)


def layer_separability(
    data: ProbeInput,
    *,
    seed: int,
    text_split: str = "by-sample",
    knn_k: int = 20,
    probe_kwargs: dict | None = None,
    progress=None,
) -> pd.DataFrame:
    """Tidy rows ``tower, layer_index, layer_name, seed, metric, value`` for one model and one seed.

    The image probe splits by sample; the text probe by *text_split* (module docstring).

    Metrics: ``probe_accuracy``, ``probe_C``, ``probe_val_accuracy``, ``knn_accuracy`` and
    ``probe_converged`` (1 if the final fit converged within ``max_iter``, else 0; scikit-learn's
    ConvergenceWarning is recorded here instead of printed) per tower, and ``cka`` (image vs its class
    prompt, tower ``both``) per layer; towers of different depth have no common block, so their CKA is
    computed for XEmbed and XProj only (at the image tower's layer index).
    """
    by_sample = split_rows(data.dataset, data.klass, seed, "by-sample")
    splits = {"image": by_sample, "text": by_sample}
    if text_split != "by-sample":
        splits["text"] = split_rows(data.dataset, data.klass, seed, text_split)
    y = data.dataset
    rows = []
    kwargs = {"random_state": seed, **(probe_kwargs or {})}
    for tower, feats in (("image", data.image), ("text", data.text)):
        train, val, test = splits[tower]
        for index, X in enumerate(feats):
            name = data.names(tower)[index]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                res = probe_accuracy(X[train], y[train], X[val], y[val], X[test], y[test], **kwargs)
            converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
            knn = knn_accuracy(
                np.concatenate([X[train], X[val]]), np.concatenate([y[train], y[val]]), X[test], y[test], k=knn_k
            )
            for metric, value in (
                ("probe_accuracy", res["test_accuracy"]),
                ("probe_C", res["C"]),
                ("probe_val_accuracy", res["val_accuracy"]),
                ("knn_accuracy", knn),
                ("probe_converged", float(converged)),
            ):
                rows.append((tower, index, name, seed, metric, float(value)))
            if progress:
                progress(1)
    text_index = {name: i for i, name in enumerate(data.names("text"))}
    same_depth = len(data.image) == len(data.text)
    for index, name in enumerate(data.layer_names):
        if name not in text_index or not (same_depth or name in ("XEmbed", "XProj")):
            continue
        cka = linear_cka(data.image[index], data.text[text_index[name]])
        rows.append(("both", index, name, seed, "cka", float(cka)))
    return pd.DataFrame(rows, columns=["tower", "layer_index", "layer_name", "seed", "metric", "value"])


def summarise(tidy: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (model, tower, layer, metric), plus the text-minus-image gap."""
    keys = [c for c in ("model", "tower", "layer_index", "layer_name", "metric") if c in tidy.columns]
    out = tidy.groupby(keys, sort=False)["value"].agg(mean="mean", std="std", n_seeds="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    acc = tidy[tidy["metric"] == "probe_accuracy"]
    if not acc.empty:
        model_key = ["model"] if "model" in acc.columns else []
        wide = acc.pivot_table(
            index=model_key + ["layer_index", "layer_name", "seed"], columns="tower", values="value"
        ).reset_index()
        wide = wide.dropna(subset=["text", "image"])  # a layer only one tower has (towers of different depth)
        wide["value"] = wide["text"] - wide["image"]
        gap = (
            wide.groupby(model_key + ["layer_index", "layer_name"], sort=False)["value"]
            .agg(mean="mean", std="std", n_seeds="count")
            .reset_index()
        )
        gap["std"] = gap["std"].fillna(0.0)
        gap["tower"] = "both"
        gap["metric"] = "gap_text_minus_image"
        out = pd.concat([out, gap[out.columns]], ignore_index=True)
    return out.sort_values(
        [c for c in ("model", "tower", "metric", "layer_index") if c in out.columns], kind="stable"
    ).reset_index(drop=True)
