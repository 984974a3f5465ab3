"""Matérn-5/2 ARD kernel over mixed coordinates: scaled Euclidean on real/int, Hamming on cat.

A categorical coordinate of k choices contributes ``[c != c'] / l**2`` to the squared distance,
which is the squared distance of a one-hot embedding scaled by ``1 / (sqrt(2) l)``; the kernel is
therefore a Matérn kernel on an embedding and stays positive definite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "KernelSpec",
    "cat_index",
    "matern52",
    "matern52_and_grad",
    "matern52_grad_s",
    "pair_sqdist",
    "sqdist",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_SQRT5 = math.sqrt(5.0)


@dataclass(frozen=True)
class KernelSpec:
    """Which unit-cube coordinates are continuous (real, int) and which categorical (with k)."""

    d: int
    cont: tuple[int, ...]
    cat: tuple[int, ...]
    cat_k: tuple[int, ...]

    @classmethod
    def from_kinds(cls, kinds: Sequence[str], n_values: Sequence[int | None]) -> KernelSpec:
        """Split coordinates by kind; a categorical without a count is treated as continuous."""
        cont, cat, cat_k = [], [], []
        for i, (kind, k) in enumerate(zip(kinds, n_values, strict=True)):
            if kind == "cat" and k is not None and k > 1:
                cat.append(i)
                cat_k.append(int(k))
            else:
                cont.append(i)
        return cls(len(kinds), tuple(cont), tuple(cat), tuple(cat_k))


def cat_index(X: FloatArray, spec: KernelSpec) -> IntArray:
    """Category index (n, c) of each categorical coordinate of X (n, d)."""
    if not spec.cat:
        return np.zeros((X.shape[0], 0), dtype=np.int64)
    k = np.asarray(spec.cat_k, dtype=np.float64)
    idx = np.floor(X[:, spec.cat] * k)
    return np.clip(idx, 0, k - 1).astype(np.int64)


# Up to this many choices a categorical enters the distance as a one-hot block of the
# embedding (one matrix product for every coordinate); beyond, as a comparison of indices. A
# 5,000-choice one-hot made two dense (n, 5,000) blocks per kernel call: 1.45 s a suggestion at
# 1,000 observations, against the 1 s budget.
_ONE_HOT_MAX = 16


def _embed(X: FloatArray, inv_ls: FloatArray, spec: KernelSpec) -> FloatArray:
    """Coordinates (n, e) whose squared Euclidean distances are the kernel's scaled r**2 over
    the continuous coordinates and the categoricals of at most _ONE_HOT_MAX choices."""
    parts = [X[:, spec.cont] * inv_ls[list(spec.cont)]] if spec.cont else []
    if spec.cat:
        idx = cat_index(X, spec)
        for j, (col, k) in enumerate(zip(spec.cat, spec.cat_k, strict=True)):
            if k > _ONE_HOT_MAX:
                continue
            onehot = np.zeros((X.shape[0], k))
            onehot[np.arange(X.shape[0]), idx[:, j]] = inv_ls[col] / math.sqrt(2.0)
            parts.append(onehot)
    if not parts:
        return np.zeros((X.shape[0], 1))
    return np.concatenate(parts, axis=1)


def sqdist(X1: FloatArray, X2: FloatArray, inv_ls: FloatArray, spec: KernelSpec) -> FloatArray:
    """Scaled squared distances r**2 (n1, n2) with inverse lengthscales inv_ls (d,)."""
    A, B = _embed(X1, inv_ls, spec), _embed(X2, inv_ls, spec)
    s = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T
    s = np.maximum(s, 0.0)
    wide = [j for j, k in enumerate(spec.cat_k) if k > _ONE_HOT_MAX]
    if wide:
        idx1, idx2 = cat_index(X1, spec), cat_index(X2, spec)
        for j in wide:
            s += (idx1[:, j, None] != idx2[None, :, j]) * inv_ls[spec.cat[j]] ** 2
    return np.asarray(s, dtype=np.float64)


def pair_sqdist(X: FloatArray, spec: KernelSpec) -> FloatArray:
    """Unscaled per-coordinate squared distances (n, n, d) within X; Hamming on categoricals."""
    D = (X[:, None, :] - X[None, :, :]) ** 2
    if spec.cat:
        idx = cat_index(X, spec)
        D[:, :, list(spec.cat)] = (idx[:, None, :] != idx[None, :, :]).astype(np.float64)
    return D


def matern52(s: FloatArray, signal: float) -> FloatArray:
    """Matérn-5/2 covariances for squared scaled distances s."""
    r = np.sqrt(s)
    return np.asarray(signal * (1.0 + _SQRT5 * r + 5.0 / 3.0 * s) * np.exp(-_SQRT5 * r))


def matern52_grad_s(s: FloatArray, signal: float) -> FloatArray:
    """Derivative of ``matern52`` with respect to s (finite at s = 0)."""
    r = np.sqrt(s)
    return np.asarray(-5.0 / 6.0 * signal * (1.0 + _SQRT5 * r) * np.exp(-_SQRT5 * r))


def matern52_and_grad(s: FloatArray, signal: float) -> tuple[FloatArray, FloatArray]:
    """``matern52`` and ``matern52_grad_s`` sharing one square root and exponential."""
    r5 = np.sqrt(5.0 * s)
    e = signal * np.exp(-r5)
    return np.asarray((1.0 + r5 + 5.0 / 3.0 * s) * e), np.asarray(-5.0 / 6.0 * (1.0 + r5) * e)
