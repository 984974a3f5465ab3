"""The freeze-thaw learning-curve model: exact GP inference with the paper's block structure.

Every curve n is y_n(t) = f_n + g_n(t) + noise: g_n is a GP with the exponential-decay kernel
(so it fades towards zero) and the asymptotes f are tied across configurations by a Matérn-5/2
GP over the unit cube (Swersky, Snoek & Adams 2014, "Freeze-Thaw Bayesian Optimization").
Cov(y) = blockdiag(K_t,n + s²I) + O K_x Oᵀ, so by Woodbury only N×N and per-curve T_n×T_n
factorisations are needed: O(N³ + Σ T_n³). Curves whose steps are a prefix of one shared grid
reuse that grid's Cholesky factor (a leading block of a Cholesky factor is the factor of the
leading block), which makes the common "everyone reports every epoch" case O(N³ + T³ + N T²).
Hyperparameters maximise the marginal likelihood by L-BFGS-B with its exact gradient
(_neg_mll_and_grad), which keeps a cold fit of 200 curves within the 100 ms decision budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import scipy.linalg as sla
import scipy.optimize as sopt
from scipy.special import ndtr

from metaopt.freezethaw._kernel import exp_decay, matern52

__all__ = [
    "CurveView",
    "FittedModel",
    "FreezeThawConfig",
    "FreezeThawModel",
    "Hyper",
    "expected_improvement",
    "finite_prefix",
    "value_at",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
State = Literal["running", "frozen", "completed", "killed", "failed"]

_LOG2PI = math.log(2.0 * math.pi)
# Indices into the packed hyperparameter vector; lengthscales follow from _N_FIXED on.
_ALPHA, _BETA, _AMP_T, _NOISE, _AMP_X, _MEAN = range(6)
_N_FIXED = 6
_SQRT5 = math.sqrt(5.0)


@dataclass(frozen=True)
class CurveView:
    """One trial's learning curve as the replicated records show it (values to minimise).

    x: (d,) unit-cube point; steps: (T,) increasing ints; values: (T,) floats, may hold nan/inf.
    """

    trial_id: str
    x: FloatArray
    steps: IntArray
    values: FloatArray
    state: State
    max_step: int
    # The step its current run resumed after (from a checkpoint); None for a run from step 0.
    resumed_step: int | None = None
    # Killed by a rung rule: the rung it was judged at (it may have reported past it).
    stopped_rung: int | None = None


@dataclass(frozen=True)
class FreezeThawConfig:
    """Tunables of the curve model and of its hyperparameter fit."""

    time_scale: float | None = None  # steps are divided by this; None: the largest max_step
    fit_max_curves: int = 64  # hyperparameters are global, so a spread subset fits them well
    fit_max_points: int = 24  # per curve, on a thinned shared grid, when fitting only
    max_points: int = 256  # per shared grid when forecasting (plus each curve's last point)
    fit_maxfun_cold: int = 60  # marginal likelihood and gradient evaluations
    fit_maxfun_warm: int = 12
    clip_sd: float = 8.0  # standardised values above this are clipped: diverging runs
    jitter: float = 1e-8
    alpha_bounds: tuple[float, float] = (0.1, 20.0)
    beta_bounds: tuple[float, float] = (1e-3, 10.0)
    amp_t_bounds: tuple[float, float] = (1e-4, 100.0)
    noise_bounds: tuple[float, float] = (1e-8, 1.0)
    amp_x_bounds: tuple[float, float] = (1e-4, 20.0)
    mean_bounds: tuple[float, float] = (-10.0, 10.0)
    lengthscale_bounds: tuple[float, float] = (0.03, 10.0)


@dataclass(frozen=True)
class Hyper:
    """Kernel hyperparameters in standardised value units and scaled time."""

    alpha: float
    beta: float
    amp_t: float
    noise: float
    amp_x: float
    mean: float
    lengthscales: FloatArray = field(repr=False)

    def pack(self) -> FloatArray:
        head = [self.alpha, self.beta, self.amp_t, self.noise, self.amp_x]
        return np.concatenate([np.log(head), [self.mean], np.log(self.lengthscales)])

    @classmethod
    def unpack(cls, theta: FloatArray) -> Hyper:
        e = np.exp(theta)
        return cls(
            float(e[_ALPHA]),
            float(e[_BETA]),
            float(e[_AMP_T]),
            float(e[_NOISE]),
            float(e[_AMP_X]),
            float(theta[_MEAN]),
            e[_N_FIXED:].copy(),
        )


@dataclass(frozen=True)
class _Data:
    """Curves prepared for inference, sorted by trial id; values standardised, time scaled."""

    ids: tuple[str, ...]
    X: FloatArray  # (N, d)
    y: tuple[FloatArray, ...]  # per curve (T_n,), standardised and finite
    t: tuple[FloatArray, ...]  # per curve (T_n,) scaled steps
    t_final: FloatArray  # (N,) scaled max_step
    grids: tuple[FloatArray, ...]  # (G,) shared grids, each (T_g,)
    group: IntArray  # (N,) grid index of each curve, -1 when it has no points
    centre: float
    scale: float
    time_scale: float


def finite_prefix(c: CurveView) -> tuple[FloatArray, FloatArray, bool]:
    """Steps and values up to the first nan/inf, and whether a non-finite value was reported."""
    v = np.asarray(c.values, dtype=np.float64)
    s = np.asarray(c.steps, dtype=np.float64)
    ok = np.isfinite(v)
    if ok.all():
        return s, v, False
    cut = int(np.argmin(ok))
    return s[:cut], v[:cut], True


def value_at(c: CurveView, step: float) -> float | None:
    """The curve's value at its last report at or before step, if it reached step."""
    s, v, _ = finite_prefix(c)
    return value_in(s, v, step)


def value_in(s: FloatArray, v: FloatArray, step: float) -> float | None:
    """value_at of a curve's finite prefix (steps s, values v), taken once for many steps."""
    if s.shape[0] == 0 or s[-1] < step:
        return None
    i = int(np.searchsorted(s, step, side="right")) - 1
    return None if i < 0 else float(v[i])


def _prepare(curves: Sequence[CurveView], cfg: FreezeThawConfig) -> _Data:
    cs = sorted(curves, key=lambda c: c.trial_id)
    d = max((int(np.asarray(c.x).shape[0]) for c in cs), default=0)
    X = np.array([np.asarray(c.x, dtype=np.float64) for c in cs]).reshape(len(cs), d)
    steps: list[FloatArray] = []
    vals: list[FloatArray] = []
    for c in cs:
        # Points after a nan/inf belong to a broken run; a finite prefix keeps grids shared.
        s, v, _ = finite_prefix(c)
        steps.append(s)
        vals.append(v)
    pooled = np.concatenate(vals) if vals else np.zeros(0)
    # Values near the float maximum (1e308 as "diverged") would overflow the spread and the
    # differences below: they are taken in units of the largest value, folded back into scale.
    big = float(np.abs(pooled).max()) if pooled.size else 0.0
    unit = big if big > 1e150 else 1.0
    pooled = pooled / unit
    centre = float(np.median(pooled)) if pooled.size else 0.0
    if pooled.size > 1:
        # A diverged run's reports (1e6 among losses near 1) are left out of the scale: more
        # than 1% of the points (9 reports in 879), the 1st/99th-percentile trim no longer
        # held them, the scale went from 0.3 to 2e4 and every forecast with it (a hopeless
        # frozen run was thawed). Left out are points farther from the median than 100 times
        # a typical curve's own range (the median over curves of each one's max - min), wide
        # enough for real curves' long tails (a first loss of 2.3 over finals of 0.05). Not a
        # spread of the pooled points alone: where most points lie on a plateau (curves that
        # converge) their quartiles, and past 80% their 10th-90th percentiles, measure the
        # plateau's noise, and the scale came out hundreds of times too narrow, every descent
        # clipped at clip_sd.
        ranges = [float(np.ptp(v / unit)) for v in vals if v.size > 1]
        p10, p90 = np.percentile(pooled, [10.0, 90.0])
        # (Or the pooled 10th-90th percentile range, if wider: where most curves are flat, a
        # run that never learnt, their median range is 0 and would leave no run out.)
        fence = 100.0 * max(float(np.median(ranges)) if ranges else 0.0, float(p90 - p10))
        kept = pooled[np.abs(pooled - centre) <= fence] if fence > 0 else pooled
        lo, hi = np.percentile(kept, [1.0, 99.0])
        scale = float(np.std(np.clip(kept, lo, hi)))
    else:
        scale = 0.0
    if not scale > 1e-12 / unit:
        scale = 1.0
    tmax = max((c.max_step for c in cs), default=1)
    ts = float(cfg.time_scale) if cfg.time_scale is not None else float(max(tmax, 1))
    y = tuple(np.minimum((v / unit - centre) / scale, cfg.clip_sd) for v in vals)
    centre, scale = centre * unit, scale * unit
    t = tuple(s / ts for s in steps)
    grids, group = _group_by_prefix(steps)
    return _Data(
        ids=tuple(c.trial_id for c in cs),
        X=X,
        y=y,
        t=t,
        t_final=np.array([c.max_step / ts for c in cs], dtype=np.float64),
        grids=tuple(g / ts for g in grids),
        group=group,
        centre=centre,
        scale=scale,
        time_scale=ts,
    )


def _group_by_prefix(steps: Sequence[FloatArray]) -> tuple[list[FloatArray], IntArray]:
    """Assign each curve to a grid its steps are a prefix of; longest curves found grids."""
    order = sorted(range(len(steps)), key=lambda i: (-steps[i].shape[0], i))
    grids: list[FloatArray] = []
    group = np.full(len(steps), -1, dtype=np.int64)
    for i in order:
        s = steps[i]
        if s.shape[0] == 0:
            continue
        for g, grid in enumerate(grids):
            if np.array_equal(grid[: s.shape[0]], s):
                group[i] = g
                break
        else:
            group[i] = len(grids)
            grids.append(s)
    return grids, group


@dataclass(frozen=True)
class _GridCurves:
    """The curves of one shared grid as padded columns: fixed while hyperparameters change."""

    grid: int
    ks: IntArray  # (n_g,) positions in idx of the grid's curves
    lens: IntArray  # (n_g,) each curve's number of points
    mask: npt.NDArray[np.bool_]  # (T_g, n_g) True where a curve has a point
    Y: FloatArray  # (T_g, n_g) each curve's values in its column, zero beyond its length


def _layout(data: _Data, idx: IntArray) -> tuple[_GridCurves, ...]:
    """Group the curves idx by grid; one solve per grid then serves all of its curves."""
    groups = data.group[idx]
    out: list[_GridCurves] = []
    for g in np.unique(groups[groups >= 0]):
        T = data.grids[int(g)].shape[0]
        ks = np.flatnonzero(groups == g)
        lens = np.array([data.y[int(idx[k])].shape[0] for k in ks], dtype=np.int64)
        Y = np.zeros((T, ks.shape[0]))
        for col, k in enumerate(ks):
            Y[: lens[col], col] = data.y[int(idx[k])]
        mask = np.arange(T)[:, None] < lens[None, :]
        out.append(_GridCurves(int(g), ks, lens, mask, Y))
    return tuple(out)


@dataclass(frozen=True)
class _Blocks:
    """Per-curve sufficient statistics of the time-kernel blocks."""

    layout: tuple[_GridCurves, ...]
    K0: tuple[FloatArray, ...]  # per grid in layout (T_g, T_g) time kernel without noise
    chol: dict[int, FloatArray]  # by grid, (T_g, T_g) lower Cholesky of K_t + noise
    z_one: dict[int, FloatArray]  # by grid, (T_g,) L⁻¹ 1
    Z: dict[int, FloatArray]  # by grid, (T_g, n_g) L⁻¹ (y_n - m), zero-padded
    col: IntArray  # (N,) each curve's column in its grid's Z (-1: no points)
    lam: FloatArray  # (N,) 1ᵀ K⁻¹ 1
    gam: FloatArray  # (N,) 1ᵀ K⁻¹ (y - m)
    quad: float  # Σ (y - m)ᵀ K⁻¹ (y - m)
    logdet: float  # Σ log|K_n|
    n_obs: int


def _blocks(
    data: _Data,
    idx: IntArray,
    h: Hyper,
    jitter: float,
    layout: tuple[_GridCurves, ...] | None = None,
) -> _Blocks:
    if layout is None:
        layout = _layout(data, idx)
    n = idx.shape[0]
    lam = np.zeros(n)
    gam = np.zeros(n)
    col = np.full(n, -1, dtype=np.int64)
    K0s: list[FloatArray] = []
    Zs: dict[int, FloatArray] = {}
    chol: dict[int, FloatArray] = {}
    z_one: dict[int, FloatArray] = {}
    quad = 0.0
    logdet = 0.0
    n_obs = 0
    for gc in layout:
        grid = data.grids[gc.grid]
        T = grid.shape[0]
        K0 = exp_decay(grid, grid, h.alpha, h.beta, h.amp_t)
        K = K0.copy()
        K[np.diag_indices_from(K)] += h.noise + jitter
        L = np.asarray(np.linalg.cholesky(K), dtype=np.float64)
        zo = sla.solve_triangular(L, np.ones(T), lower=True, check_finite=False)
        # One solve for all the grid's curves: forward substitution never looks past a
        # prefix, so zero padding beyond each curve's length is harmless.
        R = np.where(gc.mask, gc.Y - h.mean, 0.0)
        Z = sla.solve_triangular(L, R, lower=True, check_finite=False) * gc.mask
        last = gc.lens - 1
        lam[gc.ks] = np.cumsum(zo * zo)[last]
        gam[gc.ks] = zo @ Z
        col[gc.ks] = np.arange(gc.ks.shape[0])
        quad += float((Z * Z).sum())
        logdet += 2.0 * float(np.cumsum(np.log(np.diag(L)))[last].sum())
        n_obs += int(gc.lens.sum())
        chol[gc.grid] = L
        z_one[gc.grid] = zo
        K0s.append(K0)
        Zs[gc.grid] = Z
    return _Blocks(layout, tuple(K0s), chol, z_one, Zs, col, lam, gam, quad, logdet, n_obs)


def _thin(data: _Data, idx: IntArray, max_points: int, keep_ends: bool = False) -> _Data:
    """The curves idx on grids thinned to max_points evenly spaced shared points.

    keep_ends also keeps every curve's last point (so at most max_points + len(idx) per
    grid): a forecast must see where each curve is now, while a fit of the global
    hyperparameters does not need it.
    """
    keep_of = [
        np.unique(np.linspace(0, g.shape[0] - 1, max_points).round().astype(np.int64))
        if g.shape[0] > max_points
        else np.arange(g.shape[0])
        for g in data.grids
    ]
    if keep_ends:
        for g in range(len(data.grids)):
            if data.grids[g].shape[0] > max_points:
                ends = [data.y[i].shape[0] - 1 for i in idx if data.group[i] == g]
                keep_of[g] = np.union1d(keep_of[g], np.array(ends, dtype=np.int64))
    ys: list[FloatArray] = []
    ts: list[FloatArray] = []
    for i in idx:
        g = int(data.group[i])
        keep = keep_of[g][keep_of[g] < data.y[i].shape[0]] if g >= 0 else np.zeros(0, np.int64)
        ys.append(data.y[i][keep])
        ts.append(data.t[i][keep])
    return _Data(
        ids=tuple(data.ids[i] for i in idx),
        X=data.X[idx],
        y=tuple(ys),
        t=tuple(ts),
        t_final=data.t_final[idx],
        grids=tuple(g[k] for g, k in zip(data.grids, keep_of, strict=True)),
        group=data.group[idx],
        centre=data.centre,
        scale=data.scale,
        time_scale=data.time_scale,
    )


@dataclass(frozen=True)
class _Evidence:
    """The marginal likelihood's Woodbury pieces for the curves idx under h (see _neg_mll)."""

    blocks: _Blocks
    Kx: FloatArray  # (n, n) space kernel, jitter included
    s: FloatArray  # (n,) sqrt(1ᵀ K_n⁻¹ 1)
    LB: FloatArray  # (n, n) lower Cholesky of B = I + S Kx S
    w: FloatArray  # (n,) Kx γ
    v: FloatArray  # (n,) LB⁻¹ S w
    value: float  # the negative log marginal likelihood


def _evidence(
    data: _Data,
    idx: IntArray,
    h: Hyper,
    jitter: float,
    layout: tuple[_GridCurves, ...] | None = None,
) -> _Evidence:
    b = _blocks(data, idx, h, jitter, layout)
    Kx = matern52(data.X[idx], data.X[idx], h.lengthscales, h.amp_x)
    Kx[np.diag_indices_from(Kx)] += jitter
    s = np.sqrt(b.lam)
    B = np.eye(idx.shape[0]) + s[:, None] * Kx * s[None, :]
    LB = np.asarray(np.linalg.cholesky(B), dtype=np.float64)
    w = Kx @ b.gam
    v = sla.solve_triangular(LB, s * w, lower=True, check_finite=False)
    quad = b.quad - float(b.gam @ w) + float(v @ v)
    logdet = b.logdet + 2.0 * float(np.log(np.diag(LB)).sum())
    value = 0.5 * (quad + logdet + b.n_obs * _LOG2PI)
    return _Evidence(b, Kx, s, LB, w, v, value)


def _neg_mll(
    data: _Data,
    idx: IntArray,
    h: Hyper,
    jitter: float,
    layout: tuple[_GridCurves, ...] | None = None,
) -> float:
    """Negative log marginal likelihood of the curves idx under h, via the Woodbury identity."""
    return _evidence(data, idx, h, jitter, layout).value


def _inverse_from_cholesky(L: FloatArray) -> FloatArray:
    """A⁻¹ from A's lower Cholesky factor L (n, n), by LAPACK's potri: half a cho_solve's work."""
    inv, info = sla.lapack.dpotri(L, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"dpotri failed with info={info}")
    low = np.tril(inv)
    out: FloatArray = low + np.tril(low, -1).T
    return out


def _neg_mll_and_grad(
    data: _Data,
    idx: IntArray,
    h: Hyper,
    jitter: float,
    layout: tuple[_GridCurves, ...] | None = None,
) -> tuple[float, FloatArray]:
    """_neg_mll and its gradient with respect to the packed hyperparameters (Hyper.pack order).

    With C = blockdiag(K_n) + O Kx Oᵀ and a = C⁻¹ r, d(-log L) = ½ tr((C⁻¹ - a aᵀ) dC). Both
    halves of C keep their structure in that trace:

    * space part: Oᵀ C⁻¹ O = S B⁻¹ S and Oᵀ a = b (b_n = 1ᵀ a_n), so the term is
      ½ tr((S B⁻¹ S - b bᵀ) dKx), an N×N sum;
    * curve part: (C⁻¹)_nn = K_n⁻¹ - K_n⁻¹ 1 M_nn 1ᵀ K_n⁻¹ with M = (Kx⁻¹ + Λ)⁻¹, and
      a_n = K_n⁻¹ (r_n - c_n 1) with c = M γ. In whitened form G = L⁻¹ dK Lᵀ⁻¹ (L the grid's
      Cholesky factor), a curve on a prefix of the grid needs only G's leading block, as the
      inverse of a lower-triangular factor's leading block is the leading block of its inverse,
      so one G per grid and parameter serves every curve of the grid.

    With it L-BFGS-B needs a few dozen evaluations where finite differences cost one more
    evaluation per hyperparameter for every gradient (hundreds for a cold fit).
    """
    ev = _evidence(data, idx, h, jitter, layout)
    b, Kx, s, LB = ev.blocks, ev.Kx, ev.s, ev.LB
    n = idx.shape[0]
    back = sla.solve_triangular(LB.T, ev.v, lower=False, check_finite=False)
    c = ev.w - Kx @ (s * back)  # posterior mean of the asymptote offsets, M γ
    V = sla.solve_triangular(LB, s[:, None] * Kx, lower=True, check_finite=False)
    m_diag = np.diag(Kx) - (V * V).sum(0)
    grad = np.zeros(_N_FIXED + h.lengthscales.shape[0])
    bvec = np.zeros(n)
    for gc, K0 in zip(b.layout, b.K0, strict=True):
        grid = data.grids[gc.grid]
        Z = b.Z[gc.grid]
        T = grid.shape[0]
        L = b.chol[gc.grid]
        Z1 = b.z_one[gc.grid][:, None] * gc.mask
        Za = Z - Z1 * c[gc.ks][None, :]  # L⁻¹ (r_n - c_n 1), per curve
        bvec[gc.ks] = (Z1 * Za).sum(0)
        tsum = grid[:, None] + grid[None, :]
        dK = np.empty((4, T, T))
        dK[0] = h.alpha * np.log(h.beta / (tsum + h.beta)) * K0  # d/d log alpha
        dK[1] = h.alpha * tsum / (tsum + h.beta) * K0  # d/d log beta
        dK[2] = K0  # d/d log amp_t
        dK[3] = h.noise * np.eye(T)  # d/d log noise
        Linv = sla.solve_triangular(L, np.eye(T), lower=True, check_finite=False)
        G = Linv @ dK @ Linv.T  # (4, T, T) whitened derivatives
        trace = np.cumsum(np.diagonal(G, axis1=1, axis2=2), axis=1)[:, gc.lens - 1].sum(1)
        quad_one = ((Z1 * (G @ Z1)).sum(1) * m_diag[gc.ks]).sum(1)
        quad_a = (Za * (G @ Za)).sum((1, 2))
        grad[[_ALPHA, _BETA, _AMP_T, _NOISE]] += 0.5 * (trace - quad_one - quad_a)
    grad[_MEAN] = -float(bvec.sum())
    # Space kernel: ½ tr((S B⁻¹ S - b bᵀ) dKx) for the amplitude and each lengthscale.
    Binv = _inverse_from_cholesky(LB)
    R = s[:, None] * Binv * s[None, :] - np.outer(bvec, bvec)
    X = data.X[idx]
    Kx0 = Kx - jitter * np.eye(n)
    grad[_AMP_X] = 0.5 * float((R * Kx0).sum())
    diff = (X[:, None, :] - X[None, :, :]) / h.lengthscales  # (n, n, d)
    r = np.sqrt(np.maximum((diff * diff).sum(-1), 0.0))
    common = h.amp_x * (5.0 / 3.0) * (1.0 + _SQRT5 * r) * np.exp(-_SQRT5 * r)
    weighted = R * common
    grad[_N_FIXED:] = 0.5 * np.einsum("ij,ijd->d", weighted, diff * diff)
    return ev.value, grad


class FreezeThawModel:
    """Fits the curve model; keeps the last hyperparameters to warm-start the next fit."""

    def __init__(self, config: FreezeThawConfig | None = None) -> None:
        self.config = config or FreezeThawConfig()
        self.hyper: Hyper | None = None

    def fit(self, curves: Sequence[CurveView], optimise: bool = True) -> FittedModel:
        """Condition the model on curves, refitting hyperparameters by marginal likelihood.

        Args:
            curves: every known curve (any state); order does not matter.
            optimise: False reuses the previous hyperparameters (falls back to fitting if none).

        Returns:
            The posterior, able to predict any curve at any step.
        """
        data = _prepare(curves, self.config)
        with_data = np.flatnonzero(data.group >= 0).astype(np.int64)
        d = data.X.shape[1]
        if self.hyper is not None and self.hyper.lengthscales.shape[0] != d:
            self.hyper = None
        if optimise or self.hyper is None:
            self.hyper = self._optimise(data, with_data)
        if any(g.shape[0] > self.config.max_points for g in data.grids):
            # Factorising a grid costs T³: a run reporting for hours (thousands of points)
            # took seconds per decision; evenly spaced points say as much about its shape.
            everyone = np.arange(len(data.ids), dtype=np.int64)
            data = _thin(data, everyone, self.config.max_points, keep_ends=True)
        return FittedModel(data, self.hyper, self.config.jitter)

    def _default(self, data: _Data, idx: IntArray) -> Hyper:
        lasts = [float(data.y[i][-1]) for i in idx]
        m = float(np.median(lasts)) if lasts else 0.0
        d = data.X.shape[1]
        return Hyper(1.0, 0.5, 1.0, 1e-2, 1.0, m, np.full(d, 0.5))

    def _optimise(self, data: _Data, with_data: IntArray) -> Hyper:
        cfg = self.config
        if with_data.shape[0] == 0:
            return self._default(data, with_data)
        idx = with_data
        if idx.shape[0] > cfg.fit_max_curves:
            # The longest curves: early stopping leaves many short ones, and only long ones
            # show how slowly a curve can still fall and where the asymptotes lie.
            lens = np.array([data.y[i].shape[0] for i in idx])
            keep = np.argsort(-lens, kind="stable")[: cfg.fit_max_curves]
            idx = np.sort(idx[keep])
        fit_data = _thin(data, idx, cfg.fit_max_points)
        fit_idx = np.arange(idx.shape[0], dtype=np.int64)
        layout = _layout(fit_data, fit_idx)
        d = data.X.shape[1]
        bounds = [
            np.log(cfg.alpha_bounds),
            np.log(cfg.beta_bounds),
            np.log(cfg.amp_t_bounds),
            np.log(cfg.noise_bounds),
            np.log(cfg.amp_x_bounds),
            np.array(cfg.mean_bounds),
        ] + [np.log(cfg.lengthscale_bounds)] * d
        lo = np.array([b[0] for b in bounds])
        hi = np.array([b[1] for b in bounds])
        warm = self.hyper is not None
        if self.hyper is not None:
            starts = [self.hyper.pack()]
        else:
            base = self._default(data, idx)
            starts = [
                Hyper(a, b, base.amp_t, n, base.amp_x, base.mean, base.lengthscales).pack()
                for a, b in ((1.0, 0.5), (1.0, 0.05), (2.0, 0.02), (0.5, 0.2))
                for n in (1e-2, 1e-4)
            ]
        starts = [np.clip(x, lo, hi) for x in starts]

        def objective(theta: FloatArray) -> float:
            try:
                val = _neg_mll(fit_data, fit_idx, Hyper.unpack(theta), cfg.jitter, layout)
            except np.linalg.LinAlgError:
                return 1e25
            return val if math.isfinite(val) else 1e25

        def with_grad(theta: FloatArray) -> tuple[float, FloatArray]:
            try:
                val, grad = _neg_mll_and_grad(
                    fit_data, fit_idx, Hyper.unpack(theta), cfg.jitter, layout
                )
            except np.linalg.LinAlgError:
                return 1e25, np.zeros_like(theta)
            if not (math.isfinite(val) and np.isfinite(grad).all()):
                return 1e25, np.zeros_like(theta)
            return val, grad

        start = min(starts, key=objective)
        res = sopt.minimize(
            with_grad,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=list(zip(lo, hi, strict=True)),
            options={"maxfun": cfg.fit_maxfun_warm if warm else cfg.fit_maxfun_cold, "maxls": 8},
        )
        best = res.x if objective(res.x) <= objective(start) else start
        return Hyper.unpack(np.asarray(best, dtype=np.float64))


class FittedModel:
    """The posterior over every curve and over asymptotes at new points (original value units)."""

    def __init__(self, data: _Data, hyper: Hyper, jitter: float) -> None:
        self.data = data
        self.hyper = hyper
        self._index = {tid: i for i, tid in enumerate(data.ids)}
        n = len(data.ids)
        idx = np.arange(n, dtype=np.int64)
        self._b = _blocks(data, idx, hyper, jitter)
        Kx = matern52(data.X, data.X, hyper.lengthscales, hyper.amp_x)
        Kx[np.diag_indices_from(Kx)] += jitter
        s = np.sqrt(self._b.lam)
        LB = np.linalg.cholesky(np.eye(n) + s[:, None] * Kx * s[None, :])
        w = Kx @ self._b.gam
        v = sla.solve_triangular(LB, s * w, lower=True, check_finite=False)
        back = sla.solve_triangular(LB.T, v, lower=False)
        self._s = s
        self._LB = LB
        # a = K⁻¹(μ - m) written without K⁻¹, so K may be near singular.
        self._a = self._b.gam - s * back
        self._mu = hyper.mean + w - Kx @ (s * back)
        V = sla.solve_triangular(LB, s[:, None] * Kx, lower=True)
        self._cdiag = np.maximum(np.diag(Kx) - (V * V).sum(0), 0.0)
        self._final_cache: tuple[FloatArray, FloatArray] | None = None

    @property
    def trial_ids(self) -> tuple[str, ...]:
        return self.data.ids

    @property
    def noise_sd(self) -> float:
        """Observation noise standard deviation in original value units."""
        return math.sqrt(self.hyper.noise) * self.data.scale

    @property
    def value_scale(self) -> float:
        """The robust spread used to standardise values (original units)."""
        return self.data.scale

    def asymptote(self, trial_id: str) -> tuple[float, float]:
        """Posterior mean and variance of a curve's asymptote f_n (its value as t → ∞)."""
        i = self._index[trial_id]
        sc = self.data.scale
        return self.data.centre + sc * float(self._mu[i]), sc * sc * float(self._cdiag[i])

    def _finals(self) -> tuple[FloatArray, FloatArray]:
        """Standardised means and variances (N,) of every curve at its max_step.

        Curves of one grid with one max_step share k(grid, t*), so one triangular solve and
        prefix sums serve all of them.
        """
        if self._final_cache is not None:
            return self._final_cache
        h, data = self.hyper, self.data
        n = len(data.ids)
        mean = self._mu.copy()
        tf = data.t_final
        var = exp_decay(tf, tf, h.alpha, h.beta, h.amp_t).diagonal() + self._cdiag
        keys = sorted({(int(data.group[i]), float(tf[i])) for i in range(n) if data.group[i] >= 0})
        for g, t in keys:
            grid = data.grids[g]
            u = sla.solve_triangular(
                self._b.chol[g],
                exp_decay(grid, np.array([t]), h.alpha, h.beta, h.amp_t)[:, 0],
                lower=True,
                check_finite=False,
            )
            cu = np.cumsum(u * u)
            co = np.cumsum(u * self._b.z_one[g])
            kss = float(exp_decay(np.array([t]), np.array([t]), h.alpha, h.beta, h.amp_t)[0, 0])
            ii = np.flatnonzero((data.group == g) & (tf == t))
            last = np.array([data.y[i].shape[0] - 1 for i in ii], dtype=np.int64)
            omega = 1.0 - co[last]
            # Z is zero beyond each curve's length, so u @ Z equals u[:T_n] @ z_n.
            fitted = u @ self._b.Z[g][:, self._b.col[ii]]
            mean[ii] = h.mean + fitted + omega * (self._mu[ii] - h.mean)
            var[ii] = kss - cu[last] + omega * omega * self._cdiag[ii]
        self._final_cache = (mean, np.maximum(var, 1e-12))
        return self._final_cache

    def finals(self) -> tuple[FloatArray, FloatArray]:
        """Posterior means and variances (N,) of every curve at its max_step, in trial_ids order.

        Returns:
            (means, variances) in the original value units, aligned with trial_ids.
        """
        fm, fv = self._finals()
        sc = self.data.scale
        return self.data.centre + sc * fm, sc * sc * fv

    def predict(self, trial_id: str, step: float | None = None) -> tuple[float, float]:
        """Posterior mean and variance of the noiseless curve value at step (default: max_step).

        Args:
            trial_id: a trial among the fitted curves.
            step: the step to predict at; None means the trial's max_step.

        Returns:
            (mean, variance) in the original value units.
        """
        i = self._index[trial_id]
        sc = self.data.scale
        if step is None:
            fm, fv = self._finals()
            return self.data.centre + sc * float(fm[i]), sc * sc * float(fv[i])
        m, v = self._predict_std(i, np.array([float(step) / self.data.time_scale]))
        return self.data.centre + sc * float(m[0]), sc * sc * float(v[0])

    def _predict_std(self, i: int, ts: FloatArray) -> tuple[FloatArray, FloatArray]:
        h = self.hyper
        prior_var = exp_decay(ts, ts, h.alpha, h.beta, h.amp_t).diagonal().copy()
        mu, cnn = float(self._mu[i]), float(self._cdiag[i])
        g = int(self.data.group[i])
        if g < 0:
            return np.full(ts.shape, mu), prior_var + cnn
        Tn = self.data.y[i].shape[0]
        grid = self.data.grids[g][:Tn]
        L = self._b.chol[g][:Tn, :Tn]
        U = sla.solve_triangular(L, exp_decay(grid, ts, h.alpha, h.beta, h.amp_t), lower=True)
        omega = 1.0 - self._b.z_one[g][:Tn] @ U
        z = self._b.Z[g][:Tn, self._b.col[i]]
        mean = h.mean + U.T @ z + omega * (mu - h.mean)
        var = prior_var - (U * U).sum(0) + omega * omega * cnn
        return mean, np.maximum(var, 1e-12)

    def predict_many(
        self, trial_ids: Sequence[str], steps: Sequence[float | None]
    ) -> tuple[FloatArray, FloatArray]:
        """predict for several trials; returns means (n,) and variances (n,) in original units."""
        out = [self.predict(t, s) for t, s in zip(trial_ids, steps, strict=True)]
        return np.array([o[0] for o in out]), np.array([o[1] for o in out])

    def prob_beats(self, trial_id: str, best: float, step: float | None = None) -> float:
        """Probability that the trial's value at step (default max_step) is below best."""
        m, v = self.predict(trial_id, step)
        return float(ndtr((best - m) / math.sqrt(max(v, 1e-300))))

    def expected_improvement(self, trial_id: str, best: float) -> float:
        """E[max(best - y_final, 0)] for the trial's value at its max_step."""
        m, v = self.predict(trial_id)
        return float(_ei(np.array([m]), np.array([v]), best)[0])

    def fresh_final(self, X: FloatArray, max_step: int) -> tuple[FloatArray, FloatArray]:
        """Predicted final value of untried points X (n, d) run to max_step; means, vars (n,)."""
        h = self.hyper
        Ks = matern52(np.asarray(X, dtype=np.float64), self.data.X, h.lengthscales, h.amp_x)
        mean = h.mean + Ks @ self._a
        W = sla.solve_triangular(self._LB, (self._s[:, None] * Ks.T), lower=True)
        var = np.maximum(h.amp_x - (W * W).sum(0), 0.0)
        tf = np.array([max_step / self.data.time_scale])
        var = var + float(exp_decay(tf, tf, h.alpha, h.beta, h.amp_t)[0, 0])
        sc = self.data.scale
        return self.data.centre + sc * mean, sc * sc * var


def _ei(mean: FloatArray, var: FloatArray, best: float) -> FloatArray:
    sd = np.sqrt(np.maximum(var, 1e-300))
    z = (best - mean) / sd
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    out: FloatArray = (best - mean) * ndtr(z) + sd * pdf
    return np.maximum(out, 0.0)


def expected_improvement(mean: FloatArray, var: FloatArray, best: float) -> FloatArray:
    """Expected improvement below best of Gaussians (n,) given means and variances (n,)."""
    return _ei(np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64), best)
