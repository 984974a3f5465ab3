"""Laws of the freeze-thaw kernel and curve model."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from metaopt.freezethaw import CurveView, FreezeThawModel, exp_decay, matern52
from metaopt.freezethaw._model import (
    FittedModel,
    FreezeThawConfig,
    Hyper,
    _neg_mll,
    _neg_mll_and_grad,
    _prepare,
)

FloatArray = npt.NDArray[np.float64]

times = arrays(np.float64, st.integers(1, 25), elements=st.floats(0.0, 50.0))


@given(times, st.floats(0.05, 10.0), st.floats(1e-3, 10.0))
def test_exp_decay_is_positive_semidefinite(t: FloatArray, alpha: float, beta: float) -> None:
    K = exp_decay(t, t, alpha, beta)
    assert np.allclose(K, K.T)
    assert np.linalg.eigvalsh(K).min() >= -1e-9 * max(1.0, float(np.abs(K).max()))


@given(times, times, st.floats(0.05, 10.0), st.floats(1e-3, 10.0), st.floats(0.1, 5.0))
def test_exp_decay_matches_closed_form(
    t1: FloatArray, t2: FloatArray, alpha: float, beta: float, amp: float
) -> None:
    K = exp_decay(t1, t2, alpha, beta, amp)
    for i, a in enumerate(t1):
        for j, b in enumerate(t2):
            assert np.isclose(K[i, j], amp * beta**alpha / (a + b + beta) ** alpha, rtol=1e-9)


def test_exp_decay_is_the_exponential_mixture() -> None:
    # k(t, t') = ∫ e^{-λt} e^{-λt'} Gamma(λ; α, β) dλ, checked by quadrature.
    from scipy import integrate, stats

    alpha, beta, t, u = 1.7, 0.6, 0.3, 1.1
    val, _ = integrate.quad(
        lambda lam: np.exp(-lam * (t + u)) * stats.gamma.pdf(lam, alpha, scale=1 / beta), 0, np.inf
    )
    assert np.isclose(exp_decay(np.array([t]), np.array([u]), alpha, beta)[0, 0], val, rtol=1e-6)


@given(arrays(np.float64, (12, 3), elements=st.floats(0.0, 1.0)))
@settings(max_examples=30)
def test_matern_is_positive_semidefinite(X: FloatArray) -> None:
    K = matern52(X, X, np.array([0.3, 1.0, 2.0]), 1.5)
    assert np.allclose(np.diag(K), 1.5)
    assert np.linalg.eigvalsh(K).min() >= -1e-9


def _curves(rng: np.random.Generator, n: int, T: int, noise: float) -> list[CurveView]:
    out = []
    for i in range(n):
        x = rng.random(2)
        Tn = int(rng.integers(2, T + 1))
        s = np.arange(1, Tn + 1)
        v = x.sum() + np.exp(-s / (3 + 10 * x[0])) + noise * rng.standard_normal(Tn)
        out.append(CurveView(f"t{i:02d}", x, s, v, "running", T))
    out.append(CurveView("odd", rng.random(2), np.array([2, 7, 9]), np.ones(3), "frozen", T))
    out.append(CurveView("new", rng.random(2), np.zeros(0, np.int64), np.zeros(0), "running", T))
    return out


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=15, deadline=None)
def test_the_marginal_likelihood_gradient_matches_central_differences(seed: int) -> None:
    # Curves on one shared grid and on a grid of their own ("odd"), a curve with no points.
    rng = np.random.default_rng(seed)
    data = _prepare(_curves(rng, 7, 10, 0.05), FreezeThawConfig())
    idx = np.flatnonzero(data.group >= 0)
    theta = Hyper(1.3, 0.4, 0.8, 0.03, 1.2, 0.1, np.array([0.4, 0.9])).pack()
    theta = theta + 0.5 * rng.standard_normal(theta.shape[0])
    value, grad = _neg_mll_and_grad(data, idx, Hyper.unpack(theta), 1e-8)
    assert np.isclose(value, _neg_mll(data, idx, Hyper.unpack(theta), 1e-8), rtol=1e-12)
    # A step of 1e-4: at 1e-5 the rounding error of two likelihoods near 100 (Cholesky of an
    # ill-conditioned draw) divided by the step exceeded the tolerance (1 draw in 300, seed
    # 151); at 1e-4 none of 300 does, and the truncation error is still ~1e-8.
    for k in range(theta.shape[0]):
        step = np.zeros_like(theta)
        step[k] = 1e-4
        up = _neg_mll(data, idx, Hyper.unpack(theta + step), 1e-8)
        down = _neg_mll(data, idx, Hyper.unpack(theta - step), 1e-8)
        assert np.isclose(grad[k], (up - down) / 2e-4, rtol=1e-4, atol=1e-5), k


def dense_joint(fm: FittedModel) -> tuple[Any, ...]:
    """The model's joint Gaussian over every observation, built densely: data, hyper, each
    row's curve and time, the curve-indicator matrix, the asymptote covariance, the full
    covariance and the centred observations."""
    data, h = fm.data, fm.hyper
    rows = [
        (i, t, y) for i in range(len(data.ids)) for t, y in zip(data.t[i], data.y[i], strict=True)
    ]
    cid = np.array([r[0] for r in rows])
    tt = np.array([r[1] for r in rows])
    y = np.array([r[2] for r in rows])
    Obs = (cid[:, None] == np.arange(len(data.ids))[None, :]).astype(float)
    Kx = matern52(data.X, data.X, h.lengthscales, h.amp_x) + 1e-8 * np.eye(len(data.ids))
    Kt = exp_decay(tt, tt, h.alpha, h.beta, h.amp_t) * (cid[:, None] == cid[None, :])
    S = Kt + (h.noise + 1e-8) * np.eye(len(rows)) + Obs @ Kx @ Obs.T
    return data, h, cid, tt, Obs, Kx, S, y - h.mean


def test_block_inference_equals_dense_inference() -> None:
    rng = np.random.default_rng(3)
    curves = _curves(rng, 9, 12, 0.02)
    fm = FreezeThawModel().fit(curves)
    data, h, cid, tt, Obs, Kx, S, r = dense_joint(fm)
    nll = 0.5 * (r @ np.linalg.solve(S, r) + np.linalg.slogdet(S)[1] + len(r) * np.log(2 * np.pi))
    assert np.isclose(nll, _neg_mll(data, np.arange(len(data.ids)), h, 1e-8), rtol=1e-8)
    for i, tid in enumerate(data.ids):
        ts = data.t_final[i]
        kt = exp_decay(tt, np.array([ts]), h.alpha, h.beta, h.amp_t)[:, 0] * (cid == i)
        ks = kt + Obs @ Kx[:, i]
        kss = exp_decay(np.array([ts]), np.array([ts]), h.alpha, h.beta, h.amp_t)[0, 0] + Kx[i, i]
        mean = data.centre + data.scale * (h.mean + ks @ np.linalg.solve(S, r))
        var = data.scale**2 * (kss - ks @ np.linalg.solve(S, ks))
        m, v = fm.predict(tid)
        assert np.isclose(m, mean, rtol=1e-6, atol=1e-9)
        assert np.isclose(v, var, rtol=1e-5, atol=1e-9)


def test_noiseless_exponential_curves_recover_their_asymptotes() -> None:
    rng = np.random.default_rng(0)
    curves = []
    asym = {}
    for i in range(8):
        x = rng.random(2)
        a, b, lam = 0.5 + x[0], 1.0 + x[1], 0.15 + 0.1 * x[0]
        s = np.arange(1, 41)
        curves.append(CurveView(f"e{i}", x, s, a + b * np.exp(-lam * s), "running", 100))
        asym[f"e{i}"] = a
    fm = FreezeThawModel().fit(curves)
    for tid, a in asym.items():
        m, _v = fm.asymptote(tid)
        assert abs(m - a) < 0.03, (tid, m, a)
        final, _ = fm.predict(tid)
        assert abs(final - a) < 0.03


def test_fit_ignores_input_order_and_is_deterministic() -> None:
    rng = np.random.default_rng(5)
    curves = _curves(rng, 10, 15, 0.05)
    a = FreezeThawModel().fit(curves)
    b = FreezeThawModel().fit(list(reversed(curves)))
    assert np.array_equal(a.hyper.pack(), b.hyper.pack())
    for tid in a.trial_ids:
        assert a.predict(tid) == b.predict(tid)


def test_prefix_grids_share_one_factorisation() -> None:
    rng = np.random.default_rng(2)
    curves = _curves(rng, 10, 15, 0.05)
    data = _prepare(curves, FreezeThawConfig())
    assert len(data.grids) == 2  # the 1..T prefixes and the one irregular curve


def test_prob_beats_is_monotone_in_best() -> None:
    rng = np.random.default_rng(4)
    fm = FreezeThawModel().fit(_curves(rng, 8, 20, 0.02))
    ps = [fm.prob_beats("t03", b) for b in np.linspace(-1.0, 4.0, 11)]
    assert all(p <= q for p, q in itertools.pairwise(ps))
    assert ps[0] < 0.01 < 0.99 < ps[-1]


def test_hyper_pack_round_trips() -> None:
    h = Hyper(1.5, 0.2, 0.7, 1e-3, 2.0, -0.4, np.array([0.1, 3.0]))
    h2 = Hyper.unpack(h.pack())
    assert np.allclose(h2.pack(), h.pack())


def test_long_curves_are_forecast_from_a_bounded_thinned_grid() -> None:
    # Runs reporting for hours give thousands of points; factorising those grids took seconds
    # per decision. The forecast conditions on at most max_points evenly spaced points per
    # grid plus each curve's latest point, and barely moves.
    rng = np.random.default_rng(3)
    curves = []
    for i in range(6):
        n = 1500 + 300 * i
        s = np.arange(1, n + 1)
        v = 0.3 + 0.1 * i + np.exp(-s / (200.0 + 50 * i)) + 0.005 * rng.standard_normal(n)
        curves.append(CurveView(f"l{i}", rng.random(2), s, v, "running", 4000))
    thinned_model = FreezeThawModel()
    thinned = thinned_model.fit(curves)
    full_model = FreezeThawModel(FreezeThawConfig(max_points=10**6))
    full_model.hyper = thinned_model.hyper
    full = full_model.fit(curves, optimise=False)
    cap = FreezeThawConfig().max_points + len(curves)
    assert all(g.shape[0] <= cap for g in thinned.data.grids)
    for c, t in zip(curves, thinned.data.t, strict=True):
        assert t[-1] * thinned.data.time_scale == c.steps[-1]  # where the curve is now
    for c in curves:
        m_thin, v_thin = thinned.predict(c.trial_id)
        m_full, v_full = full.predict(c.trial_id)
        assert abs(m_thin - m_full) < 0.02, (c.trial_id, m_thin, m_full)
        assert v_thin >= v_full * (1 - 1e-6)  # fewer points: never more confident
