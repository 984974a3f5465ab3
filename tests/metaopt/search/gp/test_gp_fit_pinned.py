"""GP model contracts a mutation audit of metaopt/search/gp/_model.py found unpinned by the other
tests: outputs it accepts, shapes, restarts and warm starts, and its numerical safety nets."""

from __future__ import annotations

import numpy as np
import pytest

from metaopt.search.gp import FitConfig, GPModel, fit_gp, warp_outputs
from metaopt.search.gp._model import _cholesky, compress_outliers
from tests.metaopt.search.gp.test_gp_model import MIXED, _points

THETA = np.array([-1.0, 0.0, -1.0, -0.5, 0.0, -6.0])


@pytest.mark.parametrize("power", [False, True])
def test_equal_outputs_warp_to_zeros_not_nan(power: bool) -> None:
    """Pins the zero-spread guard of the standardisation: a plateau (every trial scoring the same)
    is common early on, and a NaN output would poison the fit."""
    w = warp_outputs(np.full(6, 3.25), power)
    np.testing.assert_array_equal(w.y, np.zeros(6))
    assert w.best == 0.0


@pytest.mark.parametrize("power", [False, True])
def test_huge_finite_outputs_warp_to_finite_values_in_the_same_order(power: bool) -> None:
    """Pins the overflow guard: 1e308 is a common 'infeasible' score and its square overflows, yet
    the warped outputs must stay finite, ordered, and keep the incumbent the minimum."""
    y = np.array([0.5, 1e308, -2.0, 3.0, 1e300, 0.0])
    w = warp_outputs(y, power)
    assert np.all(np.isfinite(w.y))
    order = np.argsort(y, kind="stable")
    assert np.all(np.diff(w.y[order]) >= 0.0)  # never reversed
    assert w.y[1] == w.y.max() and w.best == float(w.y.min()) == w.y[2]


@pytest.mark.parametrize("huge", [1e308, 1e200, 1e20, 1e17, -1e308])
def test_one_huge_infeasible_score_keeps_the_others_distinguishable(huge: float) -> None:
    """A single 1e308 'infeasible' score (or any outlier beyond about 1e16 times the others'
    spread) standardised every other output to one value (20 scores became 1, 1, 1 and 8
    distinct values for 1e308, 1e200, 1e20 and 1e17): the GP modelled a flat function. It is
    pulled in on a log scale, so the others stay distinct and the order is kept."""
    base = np.random.default_rng(0).uniform(0.0, 10.0, 20)
    y = np.append(base, huge)
    w = warp_outputs(y, True)
    assert len(np.unique(w.y[:20])) == 20
    assert np.array_equal(np.argsort(w.y, kind="stable"), np.argsort(y, kind="stable"))


def test_scores_within_the_fence_are_left_as_they_are() -> None:
    """Long tails of real objectives (Rosenbrock's 1e4 beside values near 0) are not touched:
    only scores a thousand interquartile ranges beyond the quartiles are."""
    y = np.append(np.random.default_rng(1).uniform(0.0, 10.0, 20), 4000.0)
    assert compress_outliers(y) is y


def test_scores_at_both_ends_of_the_floats_are_compressed_without_a_warning() -> None:
    """Quartiles of scores of +-1e308 (infeasible points, both ways) overflow to inf: numpy
    printed 'RuntimeWarning: overflow' on the peer's stderr at every suggestion (a review of
    hostile input); the spread, not finite, leaves the scores as they are (warnings are
    errors in this suite)."""
    y = np.array([1e308, -1e308, 1.7e308, -1.7e308, 1e308, -1e308, 0.0, 1.0])
    assert compress_outliers(y) is y


def test_predicted_variance_is_positive_even_at_noiseless_data() -> None:
    """Pins the variance floor of predict: at an observed point of a nearly noiseless model the
    subtraction rounds to zero or below, and log-EI / LCB take its square root."""
    X = _points(1, 25)
    theta = np.array([-0.5, 0.0, -0.5, -0.5, 0.0, -40.0])
    model = GPModel(X, np.sin(X.sum(axis=1)), theta, MIXED, 0.0)
    _, var = model.predict(X)
    assert np.all(var >= 1e-12 * model.signal)
    _, var_g, _, _ = model.predict_grad(X)
    np.testing.assert_array_equal(var_g, var)


def test_where_the_variance_is_floored_its_gradient_is_zero() -> None:
    """Pins predict_grad's flat gradient where the variance sits on its floor: the value returned
    there is the constant floor, so a non-zero slope would disagree with it and mislead L-BFGS."""
    X = _points(1, 25)
    theta = np.array([-0.5, 0.0, -0.5, -0.5, 0.0, -40.0])
    model = GPModel(X, np.sin(X.sum(axis=1)), theta, MIXED, 0.0)
    Q = X + np.array([1e-9, 0.0, 1e-9, 0.0])  # next to the data, where the variance is ~0
    _, var, _, dvar = model.predict_grad(Q)
    floored = var <= 1e-12 * model.signal
    assert floored.sum() >= 20
    np.testing.assert_array_equal(dvar[floored], 0.0)


def test_no_fantasies_leave_the_model_as_it_was() -> None:
    """Pins with_fantasies on an empty batch (the GP's first suggestion without pending trials)."""
    X = _points(2, 15)
    model = GPModel(X, np.random.default_rng(2).normal(size=15), THETA, MIXED, 1e-6)
    ext = model.with_fantasies(np.zeros((0, MIXED.d)))
    assert ext.X.shape == X.shape and ext.y.shape == (15,)
    Q = _points(3, 8)
    for a, b in zip(ext.predict(Q), model.predict(Q), strict=True):
        np.testing.assert_array_equal(a, b)


def _data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    X = _points(seed, 18)
    return X, warp_outputs(np.sin(3 * X.sum(axis=1)), False).y


def test_zero_restarts_still_fits_once() -> None:
    """Pins 'max(1, restarts)': FitConfig(restarts=0) runs one L-BFGS-B fit from the prior's mode,
    the same as restarts=1, instead of returning the unfitted start."""
    X, y = _data(4)
    one = fit_gp(X, y, MIXED, FitConfig(restarts=1), np.random.default_rng(0))
    zero = fit_gp(X, y, MIXED, FitConfig(restarts=0), np.random.default_rng(0))
    np.testing.assert_array_equal(zero.theta, one.theta)
    assert zero.theta.shape == (MIXED.d + 2,)


def test_a_warm_start_of_another_shape_is_ignored() -> None:
    """Pins the shape check on the warm start: hyperparameters remembered for a different number
    of coordinates are not used (nor crash the fit); the fit equals one without a warm start."""
    X, y = _data(5)
    cold = fit_gp(X, y, MIXED, FitConfig(), np.random.default_rng(1))
    for warm in (np.zeros(MIXED.d + 1), np.zeros(MIXED.d + 3), np.zeros((1, MIXED.d + 2))):
        got = fit_gp(X, y, MIXED, FitConfig(), np.random.default_rng(1), warm)
        np.testing.assert_array_equal(got.theta, cold.theta)


def test_a_warm_start_outside_the_bounds_is_clipped_into_them() -> None:
    """Pins that a remembered theta beyond the hyperparameter bounds cannot leave the fit there."""
    X, y = _data(6)
    warm = np.full(MIXED.d + 2, 50.0)
    m = fit_gp(X, y, MIXED, FitConfig(restarts=1), np.random.default_rng(2), warm)
    lo = [np.log(1e-3)] * MIXED.d + [np.log(1e-3), np.log(1e-9)]
    hi = [np.log(1e3)] * MIXED.d + [np.log(1e2), np.log(10.0)]
    assert np.all(m.theta >= lo) and np.all(m.theta <= hi)


def test_cholesky_grows_its_jitter_only_as_far_as_needed() -> None:
    """Pins the growing jitter: a covariance short of positive definite by 1e-5 of its scale is
    factorised with a correction of that order, not the last resort's tenth of the scale."""
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    ev = np.array([-1e-5, 0.1, 0.5, 1.0, 2.0, 2.4])
    K = (Q * ev) @ Q.T
    L = _cholesky(K)
    assert np.allclose(L, np.tril(L))
    assert np.abs(L @ L.T - K).max() < 1e-3


def test_fit_and_posterior_shapes_follow_the_data() -> None:
    """Pins the shapes a caller relies on: theta (d + 2,), mean and variance (q,), gradients (q, d)
    zero on categorical coordinates, fantasies appended to X and y."""
    X, y = _data(7)
    m = fit_gp(X, y, MIXED, FitConfig(restarts=1, maxiter=20), np.random.default_rng(3))
    assert m.theta.shape == (MIXED.d + 2,) and m.L.shape == (18, 18)
    Q = _points(8, 5)
    mu, var, dmu, dvar = m.predict_grad(Q)
    assert mu.shape == var.shape == (5,) and dmu.shape == dvar.shape == (5, MIXED.d)
    assert np.all(dmu[:, list(MIXED.cat)] == 0.0) and np.all(dvar[:, list(MIXED.cat)] == 0.0)
    ext = m.with_fantasies(Q[:2])
    assert ext.X.shape == (20, MIXED.d) and ext.y.shape == (20,) and ext.L.shape == (20, 20)
