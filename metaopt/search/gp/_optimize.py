"""Maximise an acquisition over a mixed unit cube: Sobol and local candidates, L-BFGS-B, moves.

1. Score a scrambled Sobol set plus Gaussian perturbations of the best observed points, all
   snapped by ``space.round_unit``.
2. Run one batched L-BFGS-B from the best distinct candidates over the real and integer
   coordinates (categoricals held), the starts' objectives summed so one call serves them all.
3. Snap the results and hill-climb on single-coordinate discrete moves: each integer to its
   neighbouring values, each categorical to every other choice.
4. Return the best-scoring point not equal to a known one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import optimize
from scipy.stats import qmc

from metaopt.search._dedupe import is_known
from metaopt.search.gp._acquisition import Acquisition, LogEI, NegativeLCB
from metaopt.search.gp._model import GPModel
from metaopt.space import Space

__all__ = ["AcqConfig", "maximise", "maximise_log_ei", "minimise_lcb"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class AcqConfig:
    """Acquisition search effort."""

    candidates: int = 2048
    local_candidates: int = 512
    local_anchors: int = 5
    local_scale: float = 0.05
    starts: int = 8
    lbfgs_maxiter: int = 100
    discrete_passes: int = 4
    atol: float = 1e-9


def maximise_log_ei(
    model: GPModel,
    space: Space,
    best: float,
    anchors: FloatArray,
    known: FloatArray,
    rng: np.random.Generator,
    cfg: AcqConfig,
) -> FloatArray | None:
    """Best rounded point (d,) by log-EI not in ``known`` (k, d), or None if every one is known.

    anchors (a, d): observed points, best first, around which local candidates are drawn.
    """
    return maximise(LogEI(model, best), space, anchors, known, rng, cfg)


def minimise_lcb(
    model: GPModel,
    space: Space,
    beta: float,
    anchors: FloatArray,
    known: FloatArray,
    rng: np.random.Generator,
    cfg: AcqConfig,
) -> FloatArray | None:
    """Best rounded point (d,) by the bound mu - beta sigma not in ``known``, or None."""
    return maximise(NegativeLCB(model, beta), space, anchors, known, rng, cfg)


def maximise(
    acq: Acquisition,
    space: Space,
    anchors: FloatArray,
    known: FloatArray,
    rng: np.random.Generator,
    cfg: AcqConfig,
) -> FloatArray | None:
    """Best rounded point (d,) by ``acq`` not in ``known`` (k, d), or None if every one is known."""
    d = space.d
    m = 1 << max(1, math.ceil(math.log2(max(2, cfg.candidates))))
    cand = qmc.Sobol(d, scramble=True, seed=int(rng.integers(2**63 - 1))).random(m)
    local = _local_candidates(space, anchors[: cfg.local_anchors], rng, cfg)
    pool = space.round_unit(np.vstack([cand, local]))
    vals = acq(pool)
    order = np.argsort(-vals, kind="stable")
    starts = _distinct(pool[order], cfg.starts, cfg.atol)
    cont = [i for i, k in enumerate(space.kinds) if k != "cat"]
    if cont and starts.shape[0]:
        starts = np.vstack([starts, _lbfgs(acq, starts, cont, cfg)])
    refined = _discrete_climb(acq, space, space.round_unit(starts), cfg)
    allpts = np.vstack([refined, pool])
    allvals = np.concatenate([acq(refined), vals])
    order = np.argsort(-allvals, kind="stable")
    allpts = allpts[order]
    # Checked in order and in small chunks: the first free point is almost always near the top.
    for s in range(0, allpts.shape[0], 32):
        chunk = allpts[s : s + 32]
        free = ~is_known(chunk, known, cfg.atol) if known.shape[0] else np.ones(len(chunk), bool)
        if free.any():
            return np.asarray(chunk[int(np.argmax(free))], dtype=np.float64)
    return None


def _local_candidates(
    space: Space, anchors: FloatArray, rng: np.random.Generator, cfg: AcqConfig
) -> FloatArray:
    if anchors.shape[0] == 0 or cfg.local_candidates <= 0:
        return np.zeros((0, space.d))
    reps = math.ceil(cfg.local_candidates / anchors.shape[0])
    base = np.repeat(anchors, reps, axis=0)[: cfg.local_candidates]
    # Scales spread over a decade so that both fine and coarse steps are tried.
    scale = cfg.local_scale * np.exp(rng.uniform(-1.5, 1.5, size=(base.shape[0], 1)))
    out = np.clip(base + rng.normal(size=base.shape) * scale, 0.0, 1.0)
    for i, kind in enumerate(space.kinds):
        if kind == "cat":
            flip = np.asarray(rng.random(base.shape[0]) < 1.0 / max(2, space.d), dtype=bool)
            out[flip, i] = rng.random(int(flip.sum()))
            out[~flip, i] = base[~flip, i]
    return out


def _distinct(points: FloatArray, k: int, atol: float) -> FloatArray:
    chosen: list[FloatArray] = []
    for p in points:
        if len(chosen) >= k:
            break
        if not chosen or not is_known(p[None, :], np.array(chosen), atol)[0]:
            chosen.append(p)
    return np.array(chosen) if chosen else np.zeros((0, points.shape[1]))


def _lbfgs(acq: Acquisition, starts: FloatArray, cont: list[int], cfg: AcqConfig) -> FloatArray:
    """Locally optimised copies (b, d) of the starts over the coordinates in ``cont``."""
    b, c = starts.shape[0], len(cont)
    fixed = starts.copy()

    def fun(v: FloatArray) -> tuple[float, FloatArray]:
        X = fixed.copy()
        X[:, cont] = v.reshape(b, c)
        val, grad = acq.with_grad(X)
        return -float(val.sum()), -grad[:, cont].ravel()

    with np.errstate(all="ignore"):
        res = optimize.minimize(
            fun,
            starts[:, cont].ravel(),
            jac=True,
            method="L-BFGS-B",
            bounds=[(0.0, 1.0)] * (b * c),
            options={"maxiter": cfg.lbfgs_maxiter},
        )
    out = fixed.copy()
    out[:, cont] = np.clip(np.asarray(res.x).reshape(b, c), 0.0, 1.0)
    return out


# A categorical's other values tried from one point at most: every neighbour is scored
# through a one-hot embedding as wide as the choices, so all of them cost the square of the
# choices (choices(range(5000)) took 7-11 s a suggestion at 1,000 observations, and 20,000
# choices over 3 GB). Past this, an even spread of them, shifting as the climb moves.
_MAX_CAT_NEIGHBOURS = 64


def _other_cells(k: int, u: float) -> list[int]:
    """The cells of a categorical of k values to try from the one at coordinate u."""
    here = min(k - 1, max(0, int(u * k)))
    if k - 1 <= _MAX_CAT_NEIGHBOURS:
        return [j for j in range(k) if j != here]
    stride = (k - 1) / _MAX_CAT_NEIGHBOURS
    return [(here + 1 + int(t * stride)) % k for t in range(_MAX_CAT_NEIGHBOURS)]


def _neighbours(space: Space, u: FloatArray) -> FloatArray:
    """Points (m, d) differing from rounded u (d,) in one int (by +-1) or cat coordinate."""
    rows: list[FloatArray] = []
    for i, dim in enumerate(space.dimensions):
        if dim.kind == "cat" and dim.n_values is not None:
            k = dim.n_values
            for j in _other_cells(k, float(u[i])):
                w = u.copy()
                w[i] = (j + 0.5) / k
                rows.append(w)
        elif dim.kind == "int":
            x = float(dim.decode(u[i : i + 1])[0])
            for step in (-1.0, 1.0):
                w = u.copy()
                w[i] = float(dim.encode(np.array([x + step]))[0])
                if abs(w[i] - u[i]) > 1e-12 and 0.0 <= w[i] <= 1.0:
                    rows.append(w)
    if not rows:
        return np.zeros((0, space.d))
    return space.round_unit(np.array(rows))


def _discrete_climb(
    acq: Acquisition, space: Space, points: FloatArray, cfg: AcqConfig
) -> FloatArray:
    if not any(k in ("int", "cat") for k in space.kinds) or points.shape[0] == 0:
        return points
    out = points.copy()
    for b in range(out.shape[0]):
        cur = out[b]
        cur_val = float(acq(cur[None, :])[0])
        for _ in range(cfg.discrete_passes):
            nb = _neighbours(space, cur)
            if nb.shape[0] == 0:
                break
            vals = acq(nb)
            j = int(np.argmax(vals))
            if vals[j] <= cur_val:
                break
            cur, cur_val = nb[j], float(vals[j])
        out[b] = cur
    return out
