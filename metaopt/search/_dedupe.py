"""Never suggest a known point: duplicates of completed, pending or failed trials are replaced.

Every algorithm (the GP included) passes its rounded candidates through ``dedupe``. A duplicate is
first nudged (a Gaussian step in the unit cube, rounded), then resampled from the prior, and in a
small finite space the unused points are enumerated, so a free point is found whenever one exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from metaopt._errors import SearchError
from metaopt.search._base import Observations
from metaopt.space import Space

__all__ = ["DedupeConfig", "dedupe", "is_known", "known_points"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class DedupeConfig:
    """How hard ``dedupe`` looks for a free point before enumerating or giving up.

    atol: unit-cube distance (per coordinate) under which two rounded points are equal; it absorbs
    the float round-off of params -> unit -> params. step: scale of the first nudges.
    """

    atol: float = 1e-9
    step: float = 0.05
    nudges: int = 16
    resamples: int = 64
    enumerate_limit: int = 200_000


def known_points(obs: Observations) -> FloatArray:
    """Completed, pending and failed points stacked (k, d)."""
    d = obs.X.shape[1]
    # Observations' default pending/failed are (0, 0); only non-empty parts carry a width.
    parts = [a for a in (obs.X, obs.pending, obs.failed) if a.shape[0]]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, d))


def is_known(U: FloatArray, known: FloatArray, atol: float = 1e-9) -> BoolArray:
    """Which rows of U (n, d) equal a row of known (k, d) within atol per coordinate; (n,)."""
    U = np.atleast_2d(U)
    if known.shape[0] == 0 or U.shape[0] == 0:
        return np.zeros(U.shape[0], dtype=bool)
    if U.shape[1] == 0:  # a space of no dimension has one point: known once anything is
        return np.ones(U.shape[0], dtype=bool)
    out = np.zeros(U.shape[0], dtype=bool)
    # Chunked so that 1,000 x 100,000 comparisons stay within a few MB.
    chunk = max(1, 2_000_000 // max(1, known.shape[0] * max(1, U.shape[1])))
    for s in range(0, U.shape[0], chunk):
        diff = np.abs(U[s : s + chunk, None, :] - known[None, :, :]).max(axis=2)
        out[s : s + chunk] = (diff <= atol).any(axis=1)
    return out


def dedupe(
    space: Space,
    U: FloatArray,
    known: Observations | FloatArray,
    rng: np.random.Generator,
    config: DedupeConfig | None = None,
) -> FloatArray:
    """Round U (n, d) and replace rows equal to a known point or to an earlier row.

    Args:
        space: the search space (for rounding, sampling and enumerating).
        U: candidate unit-cube points (n, d).
        known: Observations or a (k, d) array of points that must not be suggested.
        rng: source of the nudges and resamples.
        config: search effort; defaults to DedupeConfig().

    Returns:
        (n, d) rounded points, pairwise distinct and distinct from the known ones.

    Raises:
        SearchError: the space is finite and has fewer than n unknown points left.
    """
    cfg = config or DedupeConfig()
    taken = known_points(known) if isinstance(known, Observations) else np.asarray(known, float)
    taken = space.round_known(taken)
    out = space.round_unit(U) if U.shape[0] else np.zeros((0, space.d))
    for i in range(out.shape[0]):
        if _free(out[i], taken, cfg.atol):
            taken = np.vstack([taken, out[i]])
            continue
        out[i] = _replacement(space, out[i], taken, rng, cfg)
        taken = np.vstack([taken, out[i]])
    return out


def _free(u: FloatArray, taken: FloatArray, atol: float) -> bool:
    return not bool(is_known(u[None, :], taken, atol)[0])


def _replacement(
    space: Space, u: FloatArray, taken: FloatArray, rng: np.random.Generator, cfg: DedupeConfig
) -> FloatArray:
    step = cfg.step
    for _ in range(cfg.nudges):
        v = space.round_unit(np.clip(u + rng.normal(0.0, step, size=u.shape), 0.0, 1.0))[0]
        if _free(v, taken, cfg.atol):
            return np.asarray(v, dtype=np.float64)
        step = min(0.5, step * 1.5)
    cand = space.sample(rng, cfg.resamples)
    mask = ~is_known(cand, taken, cfg.atol)
    if mask.any():
        return np.asarray(cand[int(np.argmax(mask))], dtype=np.float64)
    card = space.cardinality
    if card is not None and card <= cfg.enumerate_limit:
        grid = space.grid(cfg.enumerate_limit)
        free = grid[~is_known(grid, taken, cfg.atol)]
        if free.shape[0] == 0:
            raise SearchError(
                f"all {card} points of the space are already tried or pending; "
                "the search is done (or widen the space)"
            )
        return np.asarray(free[int(rng.integers(free.shape[0]))], dtype=np.float64)
    raise SearchError(
        "found no untried point; the space is nearly used up: the search is done (or widen"
        " the space)"
    )
