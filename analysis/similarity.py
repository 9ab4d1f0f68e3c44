"""Representation similarity between two feature matrices of the same samples.

Linear CKA (Kornblith, Norouzi, Lee, Hinton, "Similarity of Neural Network Representations Revisited",
ICML 2019): with column-centred ``X`` [n, d1] and ``Y`` [n, d2],

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F * ||Y^T Y||_F)

which equals HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) for the linear kernels K = X X^T, L = Y Y^T.
It lies in [0, 1], is 1 for X = Y, and is invariant to orthogonal transforms and isotropic scaling of
either side (not to arbitrary invertible linear maps). The two matrices may differ in width, e.g. the
image and text towers at one layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mma.errors import MmaError

__all__ = ["linear_cka"]


def _features(name: str, X: Any) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] == 0:
        raise MmaError(f"'{name}' must be an array of shape (n_samples, n_features); got shape {X.shape}.")
    if not np.all(np.isfinite(X)):
        raise MmaError(f"'{name}' contains NaN or infinite values; features must be finite.")
    return X


def linear_cka(X: Any, Y: Any) -> float:
    """Linear CKA between two representations of the same n samples.

    Parameters
    ----------
    X : array-like of shape (n_samples, d1)
    Y : array-like of shape (n_samples, d2)
        Row i of X and row i of Y describe the same sample; d1 and d2 may differ.

    Returns
    -------
    float
        In [0, 1]. ``nan`` when X or Y has zero variance (every row identical, e.g. the CLS token at
        XEmbed, which is the same for every image): CKA is 0/0 there, and a layer's value is left
        undefined rather than failing the whole sweep.

    Raises
    ------
    MmaError
        Arrays not 2-D, not finite, with different numbers of rows, or fewer than 2 rows.
    """
    X, Y = _features("X", X), _features("Y", Y)
    if X.shape[0] != Y.shape[0]:
        raise MmaError(f"'X' and 'Y' must describe the same samples; got {X.shape[0]} and {Y.shape[0]} rows.")
    n = X.shape[0]
    if n < 2:
        raise MmaError(f"linear_cka needs at least 2 samples (rows); got {n}.")
    # Exact test: np.mean of identical values can differ from them in the last bit, so a centred
    # constant matrix is not always exactly zero.
    if np.all(X == X[0]) or np.all(Y == Y[0]):
        return float("nan")
    X = X - X.mean(axis=0)
    Y = Y - Y.mean(axis=0)
    d1, d2 = X.shape[1], Y.shape[1]
    if n * (d1 + d2) < d1 * d2 + d1 * d1 + d2 * d2:
        # Sample-space (Gram) form, cheaper when n is small relative to the widths.
        K, L = X @ X.T, Y @ Y.T
        cross, norm_x, norm_y = np.vdot(K, L), np.linalg.norm(K), np.linalg.norm(L)
    else:
        cross = np.linalg.norm(Y.T @ X) ** 2
        norm_x, norm_y = np.linalg.norm(X.T @ X), np.linalg.norm(Y.T @ Y)
    return float(np.clip(cross / (norm_x * norm_y), 0.0, 1.0))
