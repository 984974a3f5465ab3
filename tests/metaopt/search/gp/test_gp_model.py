from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import linalg, special

from metaopt.search.gp import (
    FitConfig,
    GPModel,
    KernelSpec,
    NegativeLCB,
    fit_gp,
    log_ei,
    log_h,
    warp_outputs,
)
from metaopt.search.gp._acquisition import log_ei_grad
from metaopt.search.gp._kernel import matern52, pair_sqdist, sqdist
from metaopt.search.gp._model import _neg_log_posterior

MIXED = KernelSpec.from_kinds(("real", "cat", "int", "real"), (None, 3, 10, None))


def _points(seed: int, n: int, spec: KernelSpec = MIXED) -> np.ndarray:
    X = np.random.default_rng(seed).random((n, spec.d))
    for col, k in zip(spec.cat, spec.cat_k, strict=True):
        X[:, col] = (np.floor(X[:, col] * k) + 0.5) / k
    return X


def test_log_h_matches_the_direct_formula_where_that_is_accurate() -> None:
    z = np.linspace(-5.0, 5.0, 201)
    direct = np.log(np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) + z * special.ndtr(z))
    np.testing.assert_allclose(log_h(z), direct, rtol=1e-9, atol=1e-12)


def test_log_h_stays_finite_and_increasing_far_below_the_incumbent() -> None:
    z = -np.logspace(0, 12, 400)[::-1]
    v = log_h(z)
    assert np.all(np.isfinite(v))
    assert np.all(np.diff(v) > 0)


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_mixed_kernel_is_positive_semidefinite(seed: int) -> None:
    X = _points(seed, 25)
    inv_ls = np.exp(np.random.default_rng(seed).normal(0, 1, MIXED.d))
    K = matern52(sqdist(X, X, inv_ls, MIXED), 1.0)
    np.testing.assert_allclose(K, K.T, atol=1e-12)
    assert np.linalg.eigvalsh(K).min() > -1e-8


def test_hamming_distance_counts_differing_categories_only() -> None:
    spec = KernelSpec.from_kinds(("cat",), (4,))
    X = np.array([[0.125], [0.2], [0.875]])
    s = sqdist(X, X, np.array([1.0]), spec)
    np.testing.assert_allclose(s, [[0, 0, 1], [0, 0, 1], [1, 1, 0]], atol=1e-12)


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_marginal_likelihood_gradient_matches_finite_differences(seed: int) -> None:
    rng = np.random.default_rng(seed)
    X = _points(seed, 15)
    y = rng.normal(size=15)
    theta = np.concatenate([rng.normal(-0.5, 0.5, MIXED.d), [0.1, -3.0]])
    D = pair_sqdist(X, MIXED)
    cfg = FitConfig()
    _, grad = _neg_log_posterior(theta, D, y, MIXED, cfg)
    num = np.empty_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = 1e-6
        hi, _ = _neg_log_posterior(theta + e, D, y, MIXED, cfg)
        lo, _ = _neg_log_posterior(theta - e, D, y, MIXED, cfg)
        num[i] = (hi - lo) / 2e-6
    np.testing.assert_allclose(grad, num, rtol=1e-4, atol=1e-4)


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_log_ei_gradient_matches_finite_differences(seed: int) -> None:
    rng = np.random.default_rng(seed)
    X = _points(seed, 20)
    y = rng.normal(size=20)
    model = GPModel(X, y, np.array([-1.0, 0.0, -1.0, -0.5, 0.0, -6.0]), MIXED, 1e-6)
    Q = _points(seed + 1, 5)
    best = float(y.min()) - rng.uniform(0, 3)
    _, grad = log_ei_grad(model, Q, best)
    for col in MIXED.cont:
        e = np.zeros_like(Q)
        e[:, col] = 1e-6
        num = (log_ei(model, Q + e, best) - log_ei(model, Q - e, best)) / 2e-6
        np.testing.assert_allclose(grad[:, col], num, rtol=1e-4, atol=1e-5)
    assert np.all(grad[:, list(MIXED.cat)] == 0.0)


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.0, 3.0))
def test_lcb_gradient_matches_finite_differences(seed: int, beta: float) -> None:
    X = _points(seed, 20)
    y = np.random.default_rng(seed).normal(size=20)
    model = GPModel(X, y, np.array([-1.0, 0.0, -1.0, -0.5, 0.0, -6.0]), MIXED, 1e-6)
    # With believed points, as the GP uses it: their variance is collapsed, their mean kept.
    model = model.with_fantasies(_points(seed + 2, 3))
    acq = NegativeLCB(model, beta)
    Q = _points(seed + 1, 5)
    val, grad = acq.with_grad(Q)
    mu, var = model.predict(Q)
    np.testing.assert_allclose(val, beta * np.sqrt(var) - mu, rtol=1e-12)
    for col in MIXED.cont:
        e = np.zeros_like(Q)
        e[:, col] = 1e-6
        num = (acq(Q + e) - acq(Q - e)) / 2e-6
        np.testing.assert_allclose(grad[:, col], num, rtol=1e-4, atol=1e-5)
    assert np.all(grad[:, list(MIXED.cat)] == 0.0)


def test_believed_values_keep_the_mean_and_shrink_the_variance() -> None:
    # Why a confidence bound on the fantasy model is GP-BUCB: conditioning on the posterior mean
    # changes no prediction of the mean, only the variances.
    X = _points(5, 15)
    model = GPModel(
        X, np.sin(X.sum(axis=1)), np.array([-1.0, 0.0, -1.0, -0.5, 0.0, -6.0]), MIXED, 1e-6
    )
    ext = model.with_fantasies(_points(6, 4))
    Q = _points(7, 50)
    (mu0, var0), (mu1, var1) = model.predict(Q), ext.predict(Q)
    np.testing.assert_allclose(mu1, mu0, atol=1e-6)
    assert np.all(var1 <= var0 + 1e-12)


def test_fantasy_extension_equals_dense_conditioning_on_believed_values() -> None:
    X = _points(3, 20)
    y = np.random.default_rng(3).normal(size=20)
    theta = np.array([-1.0, 0.0, -1.0, -0.5, 0.0, -4.0])
    model = GPModel(X, y, theta, MIXED, 1e-6)
    P = _points(4, 3)
    ext = model.with_fantasies(P)
    mu, _ = model.predict(P)
    # Dense reference: the believed values are conditioned on nearly noiselessly (they are not
    # measurements), the real observations with the fitted noise.
    Xa = np.vstack([X, P])
    fantasy_noise = min(model.noise, 1e-6 * model.signal)
    noise = np.concatenate([np.full(len(X), model.noise), np.full(len(P), fantasy_noise)])
    K = model.kernel(Xa, Xa) + np.diag(noise)
    Q = _points(5, 10)
    kQ = model.kernel(Xa, Q)
    ref_mu = kQ.T @ np.linalg.solve(K, np.concatenate([y, mu]))
    ref_var = model.signal - np.einsum("nq,nq->q", kQ, np.linalg.solve(K, kQ))
    got_mu, got_var = ext.predict(Q)
    np.testing.assert_allclose(got_mu, ref_mu, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(
        got_var, np.maximum(ref_var, 1e-12 * model.signal), rtol=1e-5, atol=1e-8
    )
    # The believer leaves the mean alone and collapses the variance at the pending points.
    np.testing.assert_allclose(ext.predict(P)[0], mu, atol=1e-6)
    assert np.all(ext.predict(P)[1] <= 1.01 * fantasy_noise + 1e-12)
    assert np.all(model.predict(P)[1] > 10 * model.noise)


def test_a_prior_mean_moves_predictions_towards_it_far_from_the_data() -> None:
    X = _points(8, 12)
    y = np.random.default_rng(8).normal(size=12)
    theta = np.array([-2.0, 0.0, -2.0, -1.5, 0.0, -8.0])
    model = GPModel(X, y, theta, MIXED, 1e-6)
    c = 1.5
    shifted = model.with_prior_mean(c)
    # Dense reference: the posterior under prior mean c is c + k K^-1 (y - c).
    K = model.kernel(X, X) + model.noise * np.eye(len(X))
    Q = _points(9, 20)
    ref = c + model.kernel(Q, X) @ np.linalg.solve(K, y - c)
    mu, var = shifted.predict(Q)
    np.testing.assert_allclose(mu + c, ref, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(var, model.predict(Q)[1])
    # At the data nothing moves beyond the noise; far from it the prediction is the prior mean
    # (less c: 0).
    np.testing.assert_allclose(shifted.predict(X)[0] + c, model.predict(X)[0], atol=5e-3)
    far = GPModel(X, y, np.array([-6.0, 0.0, -6.0, -6.0, 0.0, -8.0]), MIXED, 1e-6)
    assert np.abs(far.with_prior_mean(c).predict(_points(10, 5))[0]).max() < 1e-3


def test_map_fit_recovers_a_short_and_a_long_lengthscale() -> None:
    spec = KernelSpec.from_kinds(("real", "real"), (None, None))
    rng = np.random.default_rng(0)
    X = rng.random((60, 2))
    y = np.sin(12 * X[:, 0]) + 0.05 * X[:, 1]
    model = fit_gp(X, warp_outputs(y, False).y, spec, FitConfig(), rng)
    ls = np.exp(model.theta[:2])
    assert 10 * ls[0] < ls[1]
    assert model.noise < 1e-4


def test_power_warp_keeps_the_order_and_tames_a_heavy_tail() -> None:
    y = np.exp(np.random.default_rng(1).normal(0, 2, 50))
    w = warp_outputs(y, True)
    assert np.array_equal(np.argsort(w.y), np.argsort(y))
    plain = warp_outputs(y, False)
    assert abs(float(np.mean(w.y**3))) < abs(float(np.mean(plain.y**3)))
    assert w.best == float(w.y.min())


def test_cholesky_survives_duplicate_points() -> None:
    spec = KernelSpec.from_kinds(("real",), (None,))
    X = np.array([[0.5], [0.5], [0.5], [0.2]])
    model = GPModel(X, np.array([1.0, 1.0, 1.0, 0.0]), np.array([0.0, 0.0, -30.0]), spec, 0.0)
    assert np.all(np.isfinite(model.L))
    np.testing.assert_allclose(model.L @ model.L.T, model.L @ model.L.T, atol=0)
    assert linalg.norm(model.L @ model.L.T - model.kernel(X, X)) < 1e-3
