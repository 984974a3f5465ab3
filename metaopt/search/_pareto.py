"""Pareto dominance for several objectives to minimise: fronts, crowding and 2-D hypervolume."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "chebyshev_scalarise",
    "crowding_distance",
    "hypervolume_2d",
    "non_dominated_sort",
    "pareto_front",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


def _dominates(Y: FloatArray) -> npt.NDArray[np.bool_]:
    """D[i, j] is True when row i dominates row j: no worse everywhere, better somewhere."""
    le = (Y[:, None, :] <= Y[None, :, :]).all(axis=2)
    lt = (Y[:, None, :] < Y[None, :, :]).any(axis=2)
    return np.asarray(le & lt, dtype=np.bool_)


def non_dominated_sort(Y: FloatArray) -> list[IntArray]:
    """Fronts of Y (n, m) as index arrays, best first; NaN rows come last, in one front."""
    Y = np.atleast_2d(np.asarray(Y, dtype=np.float64))
    finite = np.isfinite(Y).all(axis=1)
    idx = np.flatnonzero(finite)
    fronts: list[IntArray] = []
    if idx.size:
        dom = _dominates(Y[idx])
        count = dom.sum(axis=0)
        current = np.flatnonzero(count == 0)
        while current.size:
            fronts.append(idx[current])
            count = count - dom[current].sum(axis=0)
            count[current] = -1
            current = np.flatnonzero(count == 0)
    rest = np.flatnonzero(~finite)
    if rest.size:
        fronts.append(rest)
    return fronts


def pareto_front(Y: FloatArray) -> IntArray:
    """Indices of the non-dominated rows of Y (n, m), ascending."""
    fronts = non_dominated_sort(Y)
    Y = np.atleast_2d(Y)
    if not fronts or not np.isfinite(Y[fronts[0]]).all():
        return np.zeros(0, dtype=np.intp)
    return np.sort(fronts[0])


def crowding_distance(Y: FloatArray) -> FloatArray:
    """NSGA-II crowding distance (n,) of the rows of one front Y (n, m); extremes are inf."""
    Y = np.atleast_2d(np.asarray(Y, dtype=np.float64))
    n, m = Y.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(Y[:, j], kind="stable")
        span = Y[order[-1], j] - Y[order[0], j]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (Y[order[2:], j] - Y[order[:-2], j]) / span
    return dist


def hypervolume_2d(Y: FloatArray, ref: tuple[float, float]) -> float:
    """Area dominated by the points Y (n, 2) and bounded by the reference point ``ref``."""
    Y = np.atleast_2d(np.asarray(Y, dtype=np.float64))
    Y = Y[np.isfinite(Y).all(axis=1) & (Y[:, 0] < ref[0]) & (Y[:, 1] < ref[1])]
    if Y.shape[0] == 0:
        return 0.0
    Y = Y[pareto_front(Y)]
    Y = Y[np.argsort(Y[:, 0])]
    area, prev_y = 0.0, ref[1]
    for x, y in Y:
        area += (ref[0] - x) * (prev_y - y)
        prev_y = y
    return float(area)


def chebyshev_scalarise(Y: FloatArray, weights: FloatArray, rho: float = 0.05) -> FloatArray:
    """Augmented Chebyshev scalarisation (n,) of Y (n, m) normalised to [0, 1] per objective.

    ParEGO's: a random weight vector per call turns several objectives into one whose minima
    are Pareto-optimal, rho > 0 breaking ties towards points good in every objective.
    """
    big = np.abs(Y).max(axis=0) if Y.size else np.zeros(Y.shape[1])
    Y = Y / np.where(big > 1e150, big, 1.0)  # hi - lo would overflow; the scale cancels
    lo, hi = Y.min(axis=0), Y.max(axis=0)
    Z = (Y - lo) / np.where(hi > lo, hi - lo, 1.0)
    return np.asarray((Z * weights).max(axis=1) + rho * (Z * weights).sum(axis=1), np.float64)
