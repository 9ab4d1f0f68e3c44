"""LinearProbe, probe_accuracy, knn_accuracy and linear_cka, checked against scikit-learn and formulas."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from mma.analysis.linear_probe import DEFAULT_CS, LinearProbe, knn_accuracy, probe_accuracy
from mma.analysis.similarity import linear_cka
from mma.errors import MmaError


def _split(X, y, seed=0):
    """50/25/25 stratified train/val/test."""
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, train_size=0.5, stratify=y, random_state=seed)
    X_va, X_te, y_va, y_te = train_test_split(X_rest, y_rest, train_size=0.5, stratify=y_rest, random_state=seed)
    return X_tr, y_tr, X_va, y_va, X_te, y_te


@pytest.fixture(scope="module")
def medium():
    """4 classes, overlapping: the validation curve has an interior peak."""
    X, y = make_classification(
        n_samples=400,
        n_features=20,
        n_informative=6,
        n_redundant=4,
        n_classes=4,
        n_clusters_per_class=1,
        class_sep=0.8,
        random_state=0,
    )
    return _split(X * np.linspace(0.1, 50.0, 20) + 7.0, y)  # unequal scales: the scaler matters


@pytest.fixture(scope="module")
def medium_probe(medium):
    X_tr, y_tr, X_va, y_va, _, _ = medium
    return LinearProbe().fit(X_tr, y_tr, X_va, y_va)


def _gaussian_means(seed=0, n_train=100, n_eval=300, dim=50, delta=0.15):
    """2 classes, weak signal spread over every dimension, n_train ~ dim: large C overfits."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(2, dim)) * delta

    def draw(n):
        y = np.arange(n) % 2
        return means[y] + rng.normal(size=(n, dim)), y

    return (*draw(n_train), *draw(n_eval), *draw(n_eval))


def _thin_direction(seed=0, n=600):
    """The label is the sign of a direction with 1% of the other features' spread: needs large C."""
    rng = np.random.default_rng(seed)

    def draw(n):
        z, e = rng.normal(size=(n, 4)), rng.normal(size=n) * 0.01
        return np.column_stack([z[:, 0], z[:, 0] + e, z[:, 1:]]), (e > 0).astype(int)

    return (*draw(n), *draw(n), *draw(n))


# -- LinearProbe vs scikit-learn -------------------------------------------------------------------------


def _reference(probe, X, y):
    """make_pipeline(StandardScaler(), LogisticRegression(C=probe.C_, same settings)), fitted directly."""
    pipe = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=probe.C_, max_iter=probe.max_iter, tol=probe.tol, random_state=probe.random_state),
    )
    with threadpool_limits(limits=probe.blas_threads, user_api="blas"):  # same BLAS summation order
        return pipe.fit(X, y)


def test_refit_equals_sklearn_pipeline_on_train_plus_val(medium, medium_probe):
    X_tr, y_tr, X_va, y_va, X_te, y_te = medium
    ref = _reference(medium_probe, np.concatenate([X_tr, X_va]), np.concatenate([y_tr, y_va]))
    np.testing.assert_array_equal(medium_probe.predict(X_te), ref.predict(X_te))
    np.testing.assert_array_equal(medium_probe.classifier_.coef_, ref[-1].coef_)
    np.testing.assert_array_equal(medium_probe.scaler_.mean_, ref[0].mean_)
    np.testing.assert_allclose(medium_probe.predict_proba(X_te), ref.predict_proba(X_te), rtol=0, atol=1e-12)
    assert medium_probe.score(X_te, y_te) == ref.score(X_te, y_te)

    result = probe_accuracy(X_tr, y_tr, X_va, y_va, X_te, y_te)
    assert result == {
        "test_accuracy": ref.score(X_te, y_te),
        "C": medium_probe.C_,
        "val_accuracy": medium_probe.val_accuracy_,
    }


def test_refit_false_equals_sklearn_pipeline_on_train(medium):
    X_tr, y_tr, X_va, y_va, X_te, _ = medium
    probe = LinearProbe(refit=False).fit(X_tr, y_tr, X_va, y_va)
    ref = _reference(probe, X_tr, y_tr)
    np.testing.assert_array_equal(probe.predict(X_te), ref.predict(X_te))
    np.testing.assert_array_equal(probe.scaler_.mean_, ref[0].mean_)
    # Without refit the final model is a (cold) train-only fit at C_: the path's model up to solver tol.
    assert probe.score(X_va, y_va) == pytest.approx(probe.val_accuracy_)


def test_chosen_C_is_the_best_on_the_path_ties_to_smaller_C(medium_probe):
    scores = dict(medium_probe.path_)
    best = max(scores.values())
    assert medium_probe.val_accuracy_ == best
    assert medium_probe.C_ == min(c for c, acc in scores.items() if acc == best)
    # The grid comes first, in increasing C, then at most two bisection points per step.
    grid_part = [c for c, _ in medium_probe.path_[: len(DEFAULT_CS)]]
    assert grid_part == sorted(DEFAULT_CS)
    assert len(medium_probe.path_) <= len(DEFAULT_CS) + 2 * medium_probe.n_refine
    assert len(medium_probe.path_n_iter_) == len(medium_probe.path_)
    assert min(DEFAULT_CS) <= medium_probe.C_ <= max(DEFAULT_CS)


def test_ties_prefer_smaller_C():
    # Perfectly separable, well apart: every C scores 1.0 on val, so the smallest grid C wins.
    X, y = make_classification(
        n_samples=200, n_features=5, n_informative=2, n_redundant=0, n_clusters_per_class=1,
        class_sep=10.0, flip_y=0.0, random_state=0,
    )  # fmt: skip
    X_tr, y_tr, X_va, y_va, _, _ = _split(X, y)
    probe = LinearProbe(n_refine=2).fit(X_tr, y_tr, X_va, y_va)
    assert [acc for _, acc in probe.path_] == [1.0] * len(probe.path_)
    assert probe.C_ == min(DEFAULT_CS)


def test_chosen_C_tracks_the_data():
    easy_X, easy_y = make_classification(
        n_samples=240, n_features=10, n_informative=4, n_redundant=0, n_classes=3,
        n_clusters_per_class=1, class_sep=3.0, random_state=0,
    )  # fmt: skip
    X_tr, y_tr, X_va, y_va, X_te, y_te = _split(easy_X, easy_y)
    easy = LinearProbe().fit(X_tr, y_tr, X_va, y_va)
    assert easy.val_accuracy_ >= 0.95 and easy.score(X_te, y_te) >= 0.95

    # Weak signal in every dimension, as many training samples as dimensions: shrink hard.
    X_tr, y_tr, X_va, y_va, _, _ = _gaussian_means()
    noisy = LinearProbe().fit(X_tr, y_tr, X_va, y_va)
    assert noisy.C_ < 1.0
    assert noisy.val_accuracy_ > dict(noisy.path_)[1e6]

    # The label lives along a low-variance direction: only weak regularisation finds it.
    X_tr, y_tr, X_va, y_va, X_te, y_te = _thin_direction()
    thin = LinearProbe().fit(X_tr, y_tr, X_va, y_va)
    assert thin.C_ >= 1e3
    assert thin.score(X_te, y_te) >= 0.95 and dict(thin.path_)[1e-6] < 0.6


def test_warm_and_cold_paths_choose_the_same_C(medium):
    X_tr, y_tr, X_va, y_va, _, _ = medium
    warm = LinearProbe(warm_start=True).fit(X_tr, y_tr, X_va, y_va)
    cold = LinearProbe(warm_start=False).fit(X_tr, y_tr, X_va, y_va)
    assert warm.C_ == cold.C_
    assert warm.val_accuracy_ == cold.val_accuracy_
    assert [c for c, _ in warm.path_] == [c for c, _ in cold.path_]
    assert sum(warm.path_n_iter_) < sum(cold.path_n_iter_)


def test_deterministic_and_grid_order_free(medium, medium_probe):
    X_tr, y_tr, X_va, y_va, _, _ = medium
    again = LinearProbe(Cs=list(reversed(DEFAULT_CS))).fit(X_tr, y_tr, X_va, y_va)
    assert again.path_ == medium_probe.path_
    np.testing.assert_array_equal(again.classifier_.coef_, medium_probe.classifier_.coef_)


def test_grid_only_and_single_C(medium):
    X_tr, y_tr, X_va, y_va, _, _ = medium
    grid_only = LinearProbe(Cs=[1e-2, 1.0, 1e2], n_refine=0).fit(X_tr, y_tr, X_va, y_va)
    assert [c for c, _ in grid_only.path_] == [1e-2, 1.0, 1e2]
    single = LinearProbe(Cs=[0.3], n_refine=3).fit(X_tr, y_tr, X_va, y_va)
    assert single.C_ == 0.3 and len(single.path_) == 1


def test_sklearn_conventions(medium):
    X_tr, y_tr, X_va, y_va, _, _ = medium
    probe = LinearProbe(n_refine=1, Cs=(0.1, 1.0))
    assert probe.fit(X_tr, y_tr, X_va, y_va) is probe
    assert clone(probe).get_params() == probe.get_params()
    assert not hasattr(clone(probe), "C_")
    np.testing.assert_array_equal(probe.classes_, np.unique(y_tr))
    assert probe.n_features_in_ == X_tr.shape[1]
    with pytest.raises(TypeError):
        LinearProbe(1e-3)  # keyword-only


def test_predict_before_fit_raises_not_fitted():
    with pytest.raises(NotFittedError):
        LinearProbe().predict(np.zeros((2, 3)))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"Cs": []}, r"'Cs' parameter of LinearProbe must be a non-empty 1-D sequence .* Got \[\]"),
        ({"Cs": [-1.0, 1.0]}, r"'Cs' .* range \(0, inf\)\. Got \[-1\.0, 1\.0\]"),
        ({"Cs": [0.0]}, r"'Cs' .* Got \[0\.0\]"),
        ({"Cs": [np.inf]}, r"'Cs' .* finite"),
        ({"Cs": "big"}, r"'Cs' .* Got 'big'"),
        ({"n_refine": -1}, r"'n_refine' parameter of LinearProbe must be an int in the range \[0, inf\)\. Got -1"),
        ({"max_iter": 0}, r"'max_iter' .* \[1, inf\)\. Got 0"),
        ({"tol": 0.0}, r"'tol' .* \(0, inf\)\. Got 0\.0"),
        ({"warm_start": "yes"}, r"'warm_start' .* a bool\. Got 'yes'"),
        ({"refit": 1}, r"'refit' .* a bool\. Got 1"),
        ({"random_state": 0.5}, r"'random_state' .* an int or None\. Got 0\.5"),
        ({"blas_threads": 0}, r"'blas_threads' .* \[1, inf\) or None\. Got 0"),
    ],
)
def test_bad_params_raise_mma_error(params, match):
    X, y = np.arange(12.0).reshape(6, 2), np.array([0, 1] * 3)
    with pytest.raises(MmaError, match=match):
        LinearProbe(**params).fit(X, y, X, y)


def test_bad_data_raises_mma_error():
    X, y = np.arange(12.0).reshape(6, 2), np.array([0, 1] * 3)
    with pytest.raises(MmaError, match=r"'y_train' must hold at least 2 classes; got 1"):
        LinearProbe().fit(X, np.zeros(6), X, y)
    with pytest.raises(MmaError, match=r"'X_val' has 3 features but 'X_train' has 2"):
        LinearProbe().fit(X, y, np.zeros((6, 3)), y)
    with pytest.raises(MmaError, match=r"'y_val' must be 1-D with one label per row of 'X_val' \(6\)"):
        LinearProbe().fit(X, y, X, y[:4])
    with pytest.raises(MmaError, match=r"'X_train' must be a non-empty array of shape"):
        LinearProbe().fit(X[0], y, X, y)
    with pytest.raises(MmaError, match=r"'X_train' contains NaN"):
        LinearProbe().fit(np.full((6, 2), np.nan), y, X, y)
    probe = LinearProbe(Cs=[1.0], n_refine=0).fit(X, y, X, y)
    with pytest.raises(MmaError, match=r"'X' has 3 features but the probe was fitted on 2"):
        probe.predict(np.zeros((1, 3)))


# -- kNN -----------------------------------------------------------------------------------------------


def test_knn_accuracy(medium):
    X_tr, y_tr, _, _, X_te, y_te = medium
    acc = knn_accuracy(X_tr, y_tr, X_te, y_te, k=5)
    assert 0.5 < acc <= 1.0
    # k larger than the training set is clipped: a majority vote over everything.
    assert knn_accuracy(X_tr[:10], y_tr[:10], X_te, y_te, k=1000) == pytest.approx(
        np.mean(y_te == np.bincount(y_tr[:10]).argmax())
    )
    with pytest.raises(MmaError, match=r"'k' parameter of knn_accuracy must be an int in the range \[1, inf\)"):
        knn_accuracy(X_tr, y_tr, X_te, y_te, k=0)
    with pytest.raises(MmaError, match=r"'X_test' has 3 features but 'X_train' has 20"):
        knn_accuracy(X_tr, y_tr, X_te[:, :3], y_te, k=3)


# -- linear CKA ----------------------------------------------------------------------------------------


def _cka_hsic(X, Y):
    """Kornblith et al. 2019, eq. for linear kernels: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))."""
    n = X.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n

    def hsic(K, L):
        return np.trace(K @ H @ L @ H) / (n - 1) ** 2

    K, L = X @ X.T, Y @ Y.T
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


@pytest.mark.parametrize(("n", "d1", "d2"), [(40, 5, 7), (12, 30, 50)])  # feature-space and Gram branches
def test_cka_matches_hsic_formula(n, d1, d2):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d1))
    Y = X[:, :1] @ rng.normal(size=(1, d2)) + rng.normal(size=(n, d2)) + 3.0
    assert linear_cka(X, Y) == pytest.approx(_cka_hsic(X, Y), rel=1e-10)
    assert linear_cka(X, Y) == pytest.approx(linear_cka(Y, X), rel=1e-12)


def test_cka_invariances():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(50, 8)), rng.normal(size=(50, 6))
    Y[:, :3] += X[:, :3]
    Q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert linear_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(X, 5.0 * X @ Q + 2.0) == pytest.approx(1.0, abs=1e-12)
    base = linear_cka(X, Y)
    assert 0.1 < base < 0.9
    assert linear_cka(X @ Q, Y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(0.01 * X, 300.0 * Y) == pytest.approx(base, rel=1e-10)
    # Not invariant to arbitrary invertible maps (that would make every full-rank pair 1 when n <= d).
    assert linear_cka(X * np.linspace(1, 100, 8), Y) != pytest.approx(base, rel=1e-3)


def test_cka_independent_is_small():
    rng = np.random.default_rng(2)
    assert linear_cka(rng.normal(size=(2000, 10)), rng.normal(size=(2000, 10))) < 0.02


def test_cka_degenerate_inputs():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(5, 3))
    assert np.isnan(linear_cka(np.full((5, 4), 0.1), X))  # zero variance: undefined
    assert np.isnan(linear_cka(X, np.tile(X[:1], (5, 1))))
    with pytest.raises(MmaError, match=r"same samples; got 5 and 4 rows"):
        linear_cka(X, X[:4])
    with pytest.raises(MmaError, match=r"at least 2 samples \(rows\); got 1"):
        linear_cka(X[:1], X[:1])
    with pytest.raises(MmaError, match=r"'Y' must be an array of shape \(n_samples, n_features\)"):
        linear_cka(X, X[:, 0])
