"""Linear probe of one layer's features: the CLIP paper's logistic-regression recipe, plus a kNN check.

The recipe (SPEC section 1, "Classifier [ours]"):

1. Standardise the features with training statistics (:class:`~sklearn.preprocessing.StandardScaler`).
2. Fit multinomial logistic regression (:class:`~sklearn.linear_model.LogisticRegression`, lbfgs, L2)
   for every C of a coarse log grid, in increasing C order, each fit warm-started from the previous
   solution (the regularisation path), and score each on the validation split.
3. Refine around the best grid value by bisection in log C: each step scores the geometric midpoints
   between the current best and its two bracket ends and halves the bracket.
4. Keep the C with the best validation accuracy; ties go to the smaller C (stronger regularisation).
5. Refit scaler and classifier on train + val with that C (``refit=True``, the default), cold, so the
   final model equals ``make_pipeline(StandardScaler(), LogisticRegression(C=C_, ...))`` fitted on the
   concatenated data.

Warm starting only changes where lbfgs starts, not the optimum it converges to; on a fixed dataset the
warm and cold paths choose the same C (``tests/test_linear_probe.py`` pins it, and
``benchmarks/bench_probe_path.py`` checks it at scale while timing both).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits  # a scikit-learn dependency

from mma.errors import MmaError

__all__ = ["DEFAULT_CS", "LinearProbe", "knn_accuracy", "probe_accuracy"]

#: Coarse grid of inverse L2 strengths: 10^-6 .. 10^6, one point per decade (13 values).
DEFAULT_CS: tuple[float, ...] = tuple(10.0**k for k in range(-6, 7))


def _path_start(solutions: dict[float, tuple[np.ndarray, np.ndarray]], C: float) -> tuple[np.ndarray, ...]:
    """Starting (coef, intercept) for a fit at C from the solutions fitted so far (secant predictor).

    Linear in log C through the two nearest solutions: interpolation between the neighbours that
    bracket C (bisection points), extrapolation from the last two below it (the increasing grid); the
    only solution when there is one. On the bench sweep this trims lbfgs iterations by 10-20% over
    restarting from the nearest solution; the optimum, hence the chosen C, does not depend on it.
    """
    below = sorted(c for c in solutions if c < C)
    above = sorted(c for c in solutions if c > C)
    if below and above:
        a, b = below[-1], above[0]
    elif len(below) >= 2:
        a, b = below[-2], below[-1]
    elif len(above) >= 2:
        a, b = above[0], above[1]
    else:
        return tuple(x.copy() for x in solutions[(below or above)[0]])
    f = (math.log(C) - math.log(a)) / (math.log(b) - math.log(a))
    return tuple((1.0 - f) * xa + f * xb for xa, xb in zip(solutions[a], solutions[b], strict=True))


def _bad(owner: str, name: str, rule: str, value: Any) -> MmaError:
    """One sentence in scikit-learn's template: parameter, rule, bad value."""
    return MmaError(f"The '{name}' parameter of {owner} must be {rule}. Got {value!r} instead.")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _as_2d(name: str, X: Any) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise MmaError(f"'{name}' must be a non-empty array of shape (n_samples, n_features); got shape {X.shape}.")
    if not np.all(np.isfinite(X)):
        raise MmaError(f"'{name}' contains NaN or infinite values; features must be finite.")
    return X


def _as_labels(name: str, y: Any, n: int, x_name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise MmaError(f"'{name}' must be 1-D with one label per row of '{x_name}' ({n}); got shape {y.shape}.")
    return y


def _as_train_and(other: str, X_train: Any, y_train: Any, X_other: Any, y_other: Any):
    """Checked ``X_train, y_train, X_<other>, y_<other>``: 2-D finite features, one label per row, equal widths."""
    X_train, X_other = _as_2d("X_train", X_train), _as_2d(f"X_{other}", X_other)
    y_train = _as_labels("y_train", y_train, X_train.shape[0], "X_train")
    y_other = _as_labels(f"y_{other}", y_other, X_other.shape[0], f"X_{other}")
    if X_other.shape[1] != X_train.shape[1]:
        raise MmaError(
            f"'X_{other}' has {X_other.shape[1]} features but 'X_train' has {X_train.shape[1]}; "
            "pass features of the same layer."
        )
    return X_train, y_train, X_other, y_other


class LinearProbe(ClassifierMixin, BaseEstimator):
    """Standardise, then multinomial logistic regression with C chosen on a validation split.

    Parameters
    ----------
    Cs : sequence of float, default=DEFAULT_CS
        Coarse grid of inverse L2 strengths (positive, finite), visited in increasing order whatever
        order is given. Default 10^-6 .. 10^6, one per decade.
    n_refine : int, default=4
        Bisection steps in log C around the best grid value (0: grid only). Each step costs at most two
        fits and halves the bracket; with the default grid, 4 steps resolve C to 10^(1/16) (about 15%).
    warm_start : bool, default=True
        Start each path fit from the solutions already fitted (the grid is visited in increasing C, so
        each grid fit starts from its smaller neighbours; see ``_path_start``). False fits every C from
        zero; it exists for benchmarks and checks, and chooses the same C up to solver tolerance.
    max_iter : int, default=1000
        lbfgs iteration cap for every fit. Large C on (nearly) separable features may hit it; path fits
        then run silently (the val accuracy is what matters), the final refit warns as scikit-learn does.
    tol : float, default=1e-5
        lbfgs gradient tolerance (scikit-learn's ``tol``). **[ours]** Tighter than scikit-learn's 1e-4:
        at 1e-4 the optimisation error flips single validation samples, and warm and cold paths chose
        different C on 2-4 of 14 layers of the bench sweep; at 1e-5 they agreed on 42 of 42 (3 seeds).
    refit : bool, default=True
        Refit scaler and classifier on train + val with the chosen C (the CLIP recipe). False keeps
        both fitted on train only (the validation split stays unseen by the final model).
    random_state : int or None, default=0
        Passed to LogisticRegression (lbfgs itself is deterministic; kept for solver swaps).
    blas_threads : int or None, default=1
        BLAS threads while fitting (restored afterwards; None: leave the library's
        setting). One per-layer problem is a few thousand x a few hundred: too small for threaded BLAS,
        whose start-up and spin-waiting then dominate. With NumPy and SciPy each shipping an OpenBLAS
        pool, the default threading made one lbfgs fit ~100x slower on a 2-core machine
        (``benchmarks/bench_probe_path.py --blas-threads 0``). Parallelise over layers instead.

    Attributes
    ----------
    C_ : float
        Chosen inverse L2 strength.
    val_accuracy_ : float
        Validation accuracy of the path fit at ``C_``.
    path_ : list of (float, float)
        Every (C, val accuracy) scored, in visiting order: the grid (increasing C), then bisection.
    path_n_iter_ : list of int
        lbfgs iterations of each path fit, aligned with ``path_``.
    scaler_ : StandardScaler
        Scaler of the final model (fitted on train + val if ``refit`` else on train).
    classifier_ : LogisticRegression
        Final classifier, fitted on standardised features with ``C=C_``.
    classes_ : ndarray of shape (n_classes,)
        Class labels seen in training.
    n_features_in_ : int
        Feature width seen in ``fit``.
    """

    def __init__(
        self,
        *,
        Cs: Sequence[float] = DEFAULT_CS,
        n_refine: int = 4,
        warm_start: bool = True,
        max_iter: int = 1000,
        tol: float = 1e-5,
        refit: bool = True,
        random_state: int | None = 0,
        blas_threads: int | None = 1,
    ) -> None:
        self.Cs = Cs
        self.n_refine = n_refine
        self.warm_start = warm_start
        self.max_iter = max_iter
        self.tol = tol
        self.refit = refit
        self.random_state = random_state
        self.blas_threads = blas_threads

    # -- validation ---------------------------------------------------------------------------------
    def _check_params(self) -> np.ndarray:
        """Validate the constructor arguments; return the grid sorted increasingly, duplicates removed."""
        owner = type(self).__name__
        try:
            grid = np.asarray(self.Cs, dtype=np.float64)
        except (TypeError, ValueError):
            grid = None
        if grid is None or grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid) & (grid > 0)):
            raise _bad(owner, "Cs", "a non-empty 1-D sequence of finite floats in the range (0, inf)", self.Cs)
        if not _is_int(self.n_refine) or self.n_refine < 0:
            raise _bad(owner, "n_refine", "an int in the range [0, inf)", self.n_refine)
        if not _is_int(self.max_iter) or self.max_iter < 1:
            raise _bad(owner, "max_iter", "an int in the range [1, inf)", self.max_iter)
        if not isinstance(self.tol, numbers.Real) or isinstance(self.tol, bool) or not (0 < self.tol < math.inf):
            raise _bad(owner, "tol", "a float in the range (0, inf)", self.tol)
        for name in ("warm_start", "refit"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise _bad(owner, name, "a bool", getattr(self, name))
        if self.random_state is not None and not _is_int(self.random_state):
            raise _bad(owner, "random_state", "an int or None", self.random_state)
        if self.blas_threads is not None and (not _is_int(self.blas_threads) or self.blas_threads < 1):
            raise _bad(owner, "blas_threads", "an int in the range [1, inf) or None", self.blas_threads)
        return np.unique(grid)

    def _new_classifier(self, C: float, *, warm_start: bool = False) -> LogisticRegression:
        return LogisticRegression(
            C=C,
            solver="lbfgs",
            max_iter=self.max_iter,
            tol=self.tol,
            warm_start=warm_start,
            random_state=self.random_state,
        )

    # -- fit ------------------------------------------------------------------------------------------
    def fit(self, X_train: Any, y_train: Any, X_val: Any, y_val: Any) -> LinearProbe:
        """Choose C on (X_val, y_val), then fit the final model.

        Parameters
        ----------
        X_train : array-like of shape (n_train, n_features)
        y_train : array-like of shape (n_train,)
            At least two classes.
        X_val : array-like of shape (n_val, n_features)
        y_val : array-like of shape (n_val,)

        Returns
        -------
        self : LinearProbe
        """
        grid = self._check_params()
        X_train, y_train, X_val, y_val = _as_train_and("val", X_train, y_train, X_val, y_val)
        n_classes = np.unique(y_train).size
        if n_classes < 2:
            raise MmaError(f"'y_train' must hold at least 2 classes; got {n_classes}.")
        with threadpool_limits(limits=self.blas_threads, user_api="blas"):
            self._fit(grid, X_train, y_train, X_val, y_val)
        return self

    def _fit(
        self, grid: np.ndarray, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray
    ) -> None:
        scaler = StandardScaler().fit(X_train)
        Z_train, Z_val = scaler.transform(X_train), scaler.transform(X_val)

        # One estimator for the whole path: with warm_start=True, sklearn starts lbfgs from the coef_
        # and intercept_ it holds, which we set from the solutions fitted so far (_path_start).
        clf = self._new_classifier(float(grid[0]), warm_start=self.warm_start)
        solutions: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        scores: dict[float, float] = {}
        path: list[tuple[float, float]] = []
        n_iters: list[int] = []

        def score(C: float) -> float:
            if C in scores:
                return scores[C]
            if self.warm_start and solutions:
                clf.coef_, clf.intercept_ = _path_start(solutions, C)
            clf.set_params(C=C)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(Z_train, y_train)
            if self.warm_start:
                solutions[C] = (clf.coef_.copy(), clf.intercept_.copy())
            acc = float(np.mean(clf.predict(Z_val) == y_val))
            scores[C] = acc
            path.append((C, acc))
            n_iters.append(int(np.max(clf.n_iter_)))
            return acc

        def best(candidates: Sequence[float]) -> float:
            # Highest val accuracy; ties go to the smaller C (stronger regularisation).
            return min(candidates, key=lambda c: (-scores[c], c))

        for C in grid:
            score(float(C))
        # Bracket (lo, mid, hi) in C, mid the best so far; the grid neighbours bound the first step.
        i = int(np.searchsorted(grid, best([float(c) for c in grid])))
        lo, mid, hi = float(grid[max(i - 1, 0)]), float(grid[i]), float(grid[min(i + 1, grid.size - 1)])
        for _ in range(self.n_refine):
            lo_mid = math.exp((math.log(lo) + math.log(mid)) / 2) if lo < mid else mid
            mid_hi = math.exp((math.log(mid) + math.log(hi)) / 2) if mid < hi else mid
            for C in (lo_mid, mid_hi):
                score(C)
            winner = best([lo_mid, mid, mid_hi])
            if winner == mid:
                lo, hi = lo_mid, mid_hi
            elif winner == lo_mid:
                lo, mid, hi = lo, lo_mid, mid
            else:
                lo, mid, hi = mid, mid_hi, hi

        self.path_ = path
        self.path_n_iter_ = n_iters
        self.C_ = best(list(scores))
        self.val_accuracy_ = scores[self.C_]

        if self.refit:
            X_fit = np.concatenate([X_train, X_val])
            y_fit = np.concatenate([y_train, y_val])
        else:
            X_fit, y_fit = X_train, y_train
        self.scaler_ = StandardScaler().fit(X_fit)
        self.classifier_ = self._new_classifier(self.C_).fit(self.scaler_.transform(X_fit), y_fit)
        self.classes_ = self.classifier_.classes_
        self.n_features_in_ = X_train.shape[1]

    # -- inference ------------------------------------------------------------------------------------
    def _transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "classifier_")
        X = _as_2d("X", X)
        if X.shape[1] != self.n_features_in_:
            raise MmaError(f"'X' has {X.shape[1]} features but the probe was fitted on {self.n_features_in_}.")
        return self.scaler_.transform(X)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels, array of shape (n_samples,)."""
        Z = self._transform(X)  # checks fitted first
        return self.classifier_.predict(Z)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, array of shape (n_samples, n_classes), columns in ``classes_`` order."""
        Z = self._transform(X)
        return self.classifier_.predict_proba(Z)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean accuracy on (X, y)."""
        return float(super().score(X, y, sample_weight=sample_weight))


def probe_accuracy(
    X_train: Any,
    y_train: Any,
    X_val: Any,
    y_val: Any,
    X_test: Any,
    y_test: Any,
    **kwargs: Any,
) -> dict[str, float]:
    """Fit a :class:`LinearProbe` (``kwargs`` go to its constructor) and score it on the test split.

    Returns
    -------
    dict with keys ``test_accuracy``, ``C`` (chosen), ``val_accuracy`` (at that C, before refit).
    """
    probe = LinearProbe(**kwargs).fit(X_train, y_train, X_val, y_val)
    X_test = _as_2d("X_test", X_test)
    y_test = _as_labels("y_test", y_test, X_test.shape[0], "X_test")
    return {
        "test_accuracy": probe.score(X_test, y_test),
        "C": float(probe.C_),
        "val_accuracy": float(probe.val_accuracy_),
    }


def knn_accuracy(X_train: Any, y_train: Any, X_test: Any, y_test: Any, *, k: int = 20) -> float:
    """Test accuracy of a cosine k-nearest-neighbour vote on standardised features (a cheap second opinion).

    Features are standardised with train statistics, then ``KNeighborsClassifier(n_neighbors=k,
    metric="cosine")`` votes uniformly (brute force). ``k`` is clipped to the number of training samples.

    Parameters
    ----------
    X_train : array-like of shape (n_train, n_features)
    y_train : array-like of shape (n_train,)
    X_test : array-like of shape (n_test, n_features)
    y_test : array-like of shape (n_test,)
    k : int, default=20
        Neighbours per vote, >= 1.
    """
    if not _is_int(k) or k < 1:
        raise _bad("knn_accuracy", "k", "an int in the range [1, inf)", k)
    X_train, y_train, X_test, y_test = _as_train_and("test", X_train, y_train, X_test, y_test)
    scaler = StandardScaler().fit(X_train)
    knn = KNeighborsClassifier(n_neighbors=min(k, X_train.shape[0]), metric="cosine", algorithm="brute")
    knn.fit(scaler.transform(X_train), y_train)
    return float(np.mean(knn.predict(scaler.transform(X_test)) == y_test))
