"""CoOp's "linear probe CLIP": logistic regression on the frozen model's final image features.

The recipe of the CoOp paper's baseline (its ``lpclip`` scripts, read at github.com/KaiyangZhou/CoOp): the
features are ``encode_image`` of the training shots and of the few-shot validation split under the test-time
preprocessing (no augmentation, no normalisation); an L2-regularised multinomial logistic regression (lbfgs, at
most 1,000 iterations) is fitted for ``C`` in 1e6, 1e4, ..., 1e-6, the first best ``C`` on the validation split
(ties: the larger) is refined by 8 bisection steps in log C between a tenth and ten times it (each keeps the
better end, ties: the smaller), and the classifier fitted on the training shots at the last step's winner is
evaluated (:func:`search_c`; ``lpclip/linear_probe.py``).

It has a weight per training class and nothing else, so it cannot name a class it was not trained on: novel
classes, and other datasets' classes, are "not applicable" (the papers leave those cells empty). A shifted
variant whose classes are among the trained ones (domain generalisation) is evaluated on those columns.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from mma.errors import MmaError
from mma.probe.data.reading import ImageReader, ReadReport, collate_readable, readable_batches

from .method_base import (
    MethodBase,
    TrainResult,
    check_feature_width,
    feature_width,
    freeze,
    model_device_dtype,
    whole_image_tower,
)

__all__ = ["LinearProbeMethod", "SEARCH_CS", "search_c", "choose_c"]

#: The initial grid of inverse L2 strengths, as CoOp's linear probe searches it.
SEARCH_CS = (1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e4, 1e6)
SEARCH_STEPS = 8


def _fit_lr(C: float, X: np.ndarray, y: np.ndarray):
    # lazy: scikit-learn adds about 0.6 s to every import of mma.adapters; only the linear probe's fit needs it
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=C, solver="lbfgs", max_iter=1000).fit(X, y)


def search_c(score: Callable[[float], float], *, steps: int = SEARCH_STEPS) -> float:
    """The C that CoOp's ``lpclip/linear_probe.py`` ends with, given ``score(C)`` (validation accuracy).

    The grid from 1e6 down to 1e-6, its first best (ties go to the larger C); then *steps* bisection steps in
    log10 C between a tenth and ten times that peak: each fits both ends, the right end wins only when strictly
    better (ties go to the smaller C), and the interval shrinks to the winner's half. The last step's winner is
    the choice (the peak itself when *steps* is 0), not the best C seen over all steps.
    """
    grid = sorted(SEARCH_CS, reverse=True)
    accs = [score(c) for c in grid]
    peak = grid[int(np.argmax(accs))]
    left, right, chosen = peak / 10, peak * 10, peak
    for _ in range(steps):
        chosen = right if score(left) < score(right) else left
        mid = 10 ** (0.5 * (math.log10(left) + math.log10(right)))
        left, right = (mid, right) if chosen == right else (left, mid)
    return chosen


def choose_c(
    X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, *, steps: int = SEARCH_STEPS
) -> tuple[float, float, list[tuple[float, float]]]:
    """``(C, its val accuracy, every (C, accuracy) scored)``: :func:`search_c` on classifiers fitted on the training
    features and scored on the validation features."""
    scored: dict[float, float] = {}

    def score(C: float) -> float:
        if C not in scored:
            scored[C] = float((_fit_lr(C, X_train, y_train).predict(X_val) == y_val).mean())
        return scored[C]

    chosen = search_c(score, steps=steps)
    return chosen, scored[chosen], list(scored.items())


class LinearProbeMethod(MethodBase):
    """A linear classifier over the trained classes on ``encode_image`` features; ``weight`` / ``bias`` buffers."""

    name: ClassVar[str] = "linear-probe"
    title: ClassVar[str] = "linear probe"
    paper: ClassVar[dict] = {}
    uses: ClassVar[tuple[str, ...]] = ("shots", "precision", "workers")
    reads_template: ClassVar[bool] = False  # a classifier on image features: no text at all

    def __init__(self, *, embed_dim: int, classnames: Sequence[str], C: float = float("nan")) -> None:
        super().__init__()
        self.embed_dim, self.classnames, self.C = embed_dim, list(classnames), float(C)
        self.val_accuracy = float("nan")  # set by fit
        self.register_buffer("weight", torch.zeros(len(self.classnames), embed_dim))
        self.register_buffer("bias", torch.zeros(len(self.classnames)))

    def num_parameters(self) -> int:
        """The classifier's weights and biases (fitted, not trained by SGD)."""
        return self.weight.numel() + self.bias.numel()

    def config(self) -> dict[str, Any]:
        return {"method": self.name, "embed_dim": self.embed_dim, "classnames": self.classnames, "C": self.C}

    @classmethod
    def build(cls, loaded, cfg, classnames: Sequence[str] = ()) -> LinearProbeMethod:
        freeze(loaded.model)
        return cls(embed_dim=feature_width(loaded), classnames=classnames).to(model_device_dtype(loaded.model)[0])

    @classmethod
    def restore(cls, config: Mapping[str, Any], loaded) -> LinearProbeMethod:
        check_feature_width(cls.name, config, loaded, fitted=True)
        freeze(loaded.model)
        method = cls(embed_dim=config["embed_dim"], classnames=config["classnames"], C=config["C"])
        return method.to(model_device_dtype(loaded.model)[0])

    def fitted_values(self) -> dict[str, float]:
        """The C it chose and its accuracy on the validation split (%)."""
        return {"C": self.C, "val_accuracy": self.val_accuracy}

    def can_classify(self, classnames: Sequence[str]) -> bool:
        return self.columns(classnames) is not None

    def columns(self, classnames: Sequence[str]) -> list[int] | None:
        """The classifier rows of *classnames*, or None if one of them was not trained (not applicable)."""
        index = {c: i for i, c in enumerate(self.classnames)}
        if any(c not in index for c in classnames):
            return None
        return [index[c] for c in classnames]

    def image_start(self, loaded) -> int:
        return whole_image_tower(loaded)  # a classifier on the final feature

    def head(self, loaded, classnames, template, device, *, train: bool):
        return {"columns": self.columns(classnames)}

    def logits(self, model, features, head, *, train: bool) -> torch.Tensor:
        with torch.no_grad():
            out = features.float() @ self.weight.float().T + self.bias.float()
        return out[:, head["columns"]]

    def classifier(self, loaded, classnames, template, device):
        if self.columns(classnames) is None:
            raise MmaError(f"linear-probe cannot classify classes it was not fitted on ({list(classnames)[:3]}...).")
        return super().classifier(loaded, classnames, template, device)

    def load_fit(self, clf, C: float) -> None:
        """Copy a fitted scikit-learn classifier in (a binary one as logits ``[0, z]``)."""
        coef, intercept = np.asarray(clf.coef_, dtype=np.float32), np.asarray(clf.intercept_, dtype=np.float32)
        if coef.shape[0] == 1 and len(self.classnames) == 2:
            coef = np.concatenate([np.zeros_like(coef), coef])
            intercept = np.concatenate([np.zeros_like(intercept), intercept])
        weight = torch.zeros_like(self.weight)
        bias = torch.full_like(self.bias, -1e4)  # a class without training images is never predicted
        classes = [int(c) for c in clf.classes_] if coef.shape[0] > 1 else [0, 1]
        weight[classes] = torch.from_numpy(coef).to(weight)
        bias[classes] = torch.from_numpy(intercept).to(bias)
        self.weight.copy_(weight)
        self.bias.copy_(bias)
        self.C = float(C)

    @staticmethod
    def fit(
        loaded, dataset, samples, classnames, cfg, *, seed, device, template=None, state_path=None, val=(), report=None
    ):
        """Extract the features of *samples* and *val*, choose C on val (on the training shots if val is empty),
        fit at that C on the training shots. Deterministic; every torchrun rank fits the same classifier. *report*:
        where unreadable images are counted (:mod:`mma.probe.data.reading`)."""
        start = time.perf_counter()
        method = LinearProbeMethod.build(loaded, cfg, classnames)
        X, y = _features(loaded, dataset, samples, device, cfg.workers, report)
        if len(np.unique(y)) < 2:
            raise MmaError(f"linear-probe needs training images of at least 2 classes in {dataset.name!r}.")
        Xv, yv = _features(loaded, dataset, list(val), device, cfg.workers, report) if val else (X, y)
        C, val_acc, path = choose_c(X, y, Xv, yv)
        method.load_fit(_fit_lr(C, X, y), C)
        method.val_accuracy, method.path = 100 * val_acc, path
        return TrainResult(method, len(path), time.perf_counter() - start, float("nan"), [], len(samples))


def _features(
    loaded, dataset, samples, device, workers: int, report: ReadReport | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Unnormalised ``encode_image`` features (float64) and labels under the test-time preprocessing."""
    reader = ImageReader(dataset, samples, loaded.preprocess, strict=report is not None and report.strict)
    loader = torch.utils.data.DataLoader(reader, batch_size=256, num_workers=workers, collate_fn=collate_readable)
    feats, labels = [], []
    with torch.no_grad():
        for _, images, y in readable_batches(loader, samples, report):
            if images is None:
                continue
            feats.append(loaded.model.encode_image(images.to(device)).float().cpu())
            labels.append(y)
    if not feats:
        raise MmaError(f"No readable images in dataset {dataset.name!r} for the linear probe.")
    return torch.cat(feats).double().numpy(), torch.cat(labels).numpy()
