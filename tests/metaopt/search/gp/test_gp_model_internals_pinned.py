"""GP model numerics a mutation audit of metaopt/search/gp/_model.py (fitting, priors, bounds,
warm starts, jitter, output warping) found unpinned by the other tests."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import linalg, optimize, stats

from metaopt.search.gp import FitConfig, GPModel, KernelSpec, fit_gp, warp_outputs
from metaopt.search.gp._kernel import pair_sqdist
from metaopt.search.gp._model import _cholesky, _neg_log_posterior, compress_outliers, prior_mode
from tests.metaopt.search.gp.test_gp_model import MIXED, _points

# The documented hyperparameter box: lengthscales 1e-3..1e3, signal variance 1e-3..1e2, noise
# above its floor 1e-9..10 (all as logs).
LO = np.array([math.log(1e-3)] * MIXED.d + [math.log(1e-3), math.log(1e-9)])
HI = np.array([math.log(1e3)] * MIXED.d + [math.log(1e2), math.log(10.0)])


def _data(seed: int, n: int = 18) -> tuple[np.ndarray, np.ndarray]:
    X = _points(seed, n)
    return X, warp_outputs(np.sin(3 * X.sum(axis=1)), False).y


def _record_minimize(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Wrap scipy's minimize as fit_gp calls it, recording each start, bound and result."""
    calls: list[dict[str, Any]] = []
    real = optimize.minimize

    def spy(fun: Any, x0: Any, *args: Any, **kwargs: Any) -> Any:
        res = real(fun, x0, *args, **kwargs)
        calls.append({"x0": np.array(x0), "bounds": kwargs["bounds"], "x": res.x, "fun": res.fun})
        return res

    monkeypatch.setattr(optimize, "minimize", spy)  # as _model calls it
    return calls


# ---- output warping -------------------------------------------------------------------------


def test_four_outputs_are_already_power_transformed() -> None:
    """Pins the power transform's threshold (4 outputs, not 5): a skewed first GP round of four
    trials is Yeo-Johnson'd, so one bad score does not flatten the other three."""
    y = np.array([0.0, 1.0, 2.0, 50.0])
    assert not np.allclose(warp_outputs(y, True).y, warp_outputs(y, False).y)
    y3 = np.array([0.0, 1.0, 50.0])
    np.testing.assert_array_equal(warp_outputs(y3, True).y, warp_outputs(y3, False).y)


def test_a_non_finite_yeo_johnson_result_is_discarded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins the finiteness check after Yeo-Johnson: if the transform overflows (a large fitted
    lambda), the plain standardised outputs are used instead of infinities that would poison
    the fit."""
    y = np.array([0.0, 1.0, 2.0, 3.0, 50.0])

    def overflowing(z: np.ndarray) -> tuple[np.ndarray, float]:
        t = np.asarray(z, dtype=np.float64).copy()
        t[-1] = np.inf
        return t, 40.0

    monkeypatch.setattr(stats, "yeojohnson", overflowing)  # as _model calls it
    w = warp_outputs(y, True)
    assert np.all(np.isfinite(w.y))
    np.testing.assert_array_equal(w.y, warp_outputs(y, False).y)


def test_outlier_compression_is_symmetric_for_low_and_high_outliers() -> None:
    """Pins that a score far below the quartiles is pulled in exactly as one far above (the
    same log scale, mirrored): maximising -f must see the mirror image of minimising f, and a
    huge negative score must stay the lowest by as much as a huge positive one stays highest."""
    base = np.random.default_rng(0).uniform(0.0, 10.0, 20)
    y = np.append(base, [1e308, -1e308, 1e20, -1e20])
    np.testing.assert_allclose(compress_outliers(-y), -compress_outliers(y), rtol=1e-12)
    out = compress_outliers(y)
    np.testing.assert_array_equal(out[:20], base)
    assert out[21] < out[23] < base.min() and out[20] > out[22] > base.max()


@pytest.mark.parametrize("huge", [1e308, -1e308])
def test_a_huge_score_beside_a_narrow_spread_stays_finite(huge: float) -> None:
    """Pins the cap on the outlier's distance in interquartile ranges: with the others within
    0.01 of each other, 1e308 / IQR overflows to inf, and log1p(inf) would put an infinity into
    the GP's outputs."""
    y = np.append(np.random.default_rng(0).uniform(0.0, 0.01, 20), huge)
    assert np.all(np.isfinite(compress_outliers(y)))
    w = warp_outputs(y, True)
    assert np.all(np.isfinite(w.y))
    assert np.array_equal(np.argsort(w.y, kind="stable"), np.argsort(y, kind="stable"))


@pytest.mark.parametrize("power", [False, True])
def test_scores_all_near_1e200_standardise_without_overflow(power: bool) -> None:
    """Pins the overflow guard's threshold (1e150): scores of order 1e200 (an objective in the
    wrong units) are evenly spread, so nothing is compressed, and squaring them overflowed."""
    y = np.array([1e200, 2e200, 3e200, 4e200, 5e200])
    w = warp_outputs(y, power)
    assert np.all(np.isfinite(w.y))
    assert np.all(np.diff(w.y) > 0)
    np.testing.assert_allclose(w.y.mean(), 0.0, atol=1e-12)
    np.testing.assert_allclose(w.y.std(), 1.0, rtol=1e-12)


@pytest.mark.parametrize("scale", [1e-170, 1e-200, 1e-300])
@pytest.mark.parametrize("power", [False, True])
def test_tiny_scores_standardise_as_any_others(scale: float, power: bool) -> None:
    """Below about 1e-160 the sum of squares underflowed to 0: every output standardised to
    about 0, and the GP, seeing a flat function, suggested a corner of the cube."""
    y = np.array([0.5, 3.0, 1.0, 2.5, 0.25, 4.0])
    np.testing.assert_allclose(warp_outputs(scale * y, power).y, warp_outputs(y, power).y)


# ---- the model ------------------------------------------------------------------------------


def test_the_models_noise_is_its_floor_plus_the_fitted_excess() -> None:
    """Pins GPModel's noise as min_noise + exp(theta[-1]), the same as the fit's objective uses:
    a model without the floor would be sure of itself at every observed point, though the fit
    chose a noisy explanation of the data."""
    X = _points(1, 12)
    y = np.sin(X.sum(axis=1))
    theta = np.array([-1.0, 0.0, -1.0, -0.5, 0.0, -30.0])
    m = GPModel(X, y, theta, MIXED, 1e-2)
    assert m.noise == pytest.approx(1e-2 + math.exp(-30.0), rel=1e-12)
    K = m.kernel(X, X) + m.noise * np.eye(len(X))
    ref = m.signal - np.einsum("ij,ji->i", m.kernel(X, X), np.linalg.solve(K, m.kernel(X, X)))
    _, var = m.predict(X)
    np.testing.assert_allclose(var, ref, rtol=1e-6)
    assert var.min() > 5e-3  # about the noise, not the 1e-12 floor


@pytest.mark.parametrize("scale", [1e6, 1e-3])
def test_cholesky_jitter_is_relative_to_the_matrix_scale(scale: float) -> None:
    """Pins the jitter's scale (the mean of K's diagonal) and its start (1e-9 of it): a covariance
    short of positive definite by 1e-10 of its scale, whatever the signal variance, is factorised
    with a correction of that order, and one of a large scale does not exhaust the retries."""
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    for deficit, tol in ((1e-10, 1e-7), (1e-5, 1e-3)):
        ev = np.array([-deficit, 0.1, 0.5, 1.0, 2.0, 2.4])
        K = scale * ((Q * ev) @ Q.T)
        K = 0.5 * (K + K.T)
        L = _cholesky(K)
        assert np.allclose(L, np.tril(L))
        assert np.abs(L @ L.T - K).max() < tol * scale


def test_cholesky_last_resort_factorises_a_clearly_indefinite_matrix() -> None:
    """Pins the last resort (a tenth of the scale on the diagonal): a covariance short of
    positive definite by more than the growing jitter reaches (here 1e-2 of its scale) is still
    factorised, instead of raising in the middle of a suggestion."""
    rng = np.random.default_rng(4)
    Q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    K = (Q * np.array([-0.02, 0.5, 1.0, 1.5, 2.0])) @ Q.T
    K = 0.5 * (K + K.T)
    L = _cholesky(K)
    np.testing.assert_allclose(L @ L.T, K + 0.1 * np.mean(np.diag(K)) * np.eye(5), atol=1e-10)


def test_a_prior_mean_is_subtracted_from_the_outputs() -> None:
    """Pins with_prior_mean's direction: the outputs become y - c (the bound model then predicts
    in units less c), not y + c, so the pessimistic prior is above the data, not below it."""
    X = _points(2, 10)
    y = np.random.default_rng(2).normal(size=10)
    m = GPModel(X, y, np.array([-1.0, 0.0, -1.0, -0.5, 0.0, -6.0]), MIXED, 1e-6)
    np.testing.assert_array_equal(m.with_prior_mean(0.7).y, y - 0.7)


def test_the_variance_floor_scales_with_the_signal_variance() -> None:
    """Pins the floor of the predicted variance at 1e-12 of the signal variance (not an absolute
    1e-12): at a measured point of a nearly noiseless model with a large signal variance the
    floor is what stands between log-EI and a zero sigma, and it must be in the signal's units."""
    spec = KernelSpec.from_kinds(("real",), (None,))
    X = np.array([[0.1], [0.5], [0.9]])
    theta = np.array([np.log(0.05), np.log(50.0), -40.0])
    m = GPModel(X, np.array([0.3, -1.0, 0.8]), theta, spec, 0.0)
    _, var = m.predict(X)
    np.testing.assert_array_equal(var, np.full(3, 1e-12 * m.signal))
    _, var_g, _, _ = m.predict_grad(X)
    np.testing.assert_array_equal(var_g, var)


# ---- priors and the MAP fit -----------------------------------------------------------------


def _reference_neg_log_posterior(theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    """-log N(y | 0, K + noise I) - log of the documented LogNormal priors, in their own scale:
    lengthscales LogNormal(sqrt(2) + log(d) / 2, sqrt(3)), signal variance LogNormal(0, 1),
    noise variance (floor 1e-6 plus the fitted excess) LogNormal(-6, 1)."""
    d = MIXED.d
    ls, signal = np.exp(theta[:d]), math.exp(theta[d])
    noise = 1e-6 + math.exp(theta[d + 1])
    m = GPModel(X, y, theta, MIXED, 1e-6)
    K = m.kernel(X, X) + noise * np.eye(len(X))
    nll = -float(stats.multivariate_normal(np.zeros(len(X)), K).logpdf(y))
    loc = math.sqrt(2.0) + 0.5 * math.log(d)
    lp = stats.lognorm(s=math.sqrt(3.0), scale=math.exp(loc)).logpdf(ls).sum()
    lp += stats.lognorm(s=1.0, scale=1.0).logpdf(signal)
    lp += stats.lognorm(s=1.0, scale=math.exp(-6.0)).logpdf(noise)
    return nll - float(lp)


def test_the_fit_objective_is_the_documented_likelihood_and_priors() -> None:
    """Pins the MAP objective against a dense reference: the Gaussian likelihood plus the
    module's documented LogNormal priors on lengthscales, signal and noise variance (up to one
    constant). A wrong prior centre, width or density term passes the gradient check (value and
    gradient move together) but fits different hyperparameters."""
    X = _points(11, 14)
    y = np.random.default_rng(11).normal(size=14)
    D = pair_sqdist(X, MIXED)
    rng = np.random.default_rng(12)
    thetas = [np.concatenate([rng.normal(0.0, 1.5, MIXED.d), rng.normal(0, 1, 1), [-7.0]])]
    thetas += [
        np.concatenate(
            [rng.normal(0.0, 1.5, MIXED.d), rng.normal(0, 1, 1), rng.uniform(-14, -2, 1)]
        )
        for _ in range(5)
    ]
    got = [_neg_log_posterior(t, D, y, MIXED, FitConfig())[0] for t in thetas]
    ref = [_reference_neg_log_posterior(t, X, y) for t in thetas]
    np.testing.assert_allclose(np.diff(got), np.diff(ref), rtol=1e-7, atol=1e-7)


def test_the_prior_modes_lengthscales_maximise_their_prior() -> None:
    """Pins prior_mode's lengthscales at the LogNormal prior's mode, exp(mu - sigma**2), and its
    noise excess at the prior's centre less the floor: the first L-BFGS-B start of every fit."""
    cfg = FitConfig()
    for d in (1, 3, 8):
        spec = KernelSpec.from_kinds(("real",) * d, (None,) * d)
        t = prior_mode(spec, cfg)
        mu = math.sqrt(2.0) + 0.5 * math.log(d)
        grid = np.linspace(mu - 6.0, mu + 2.0, 8001)
        dens = stats.lognorm(s=math.sqrt(3.0), scale=math.exp(mu)).logpdf(np.exp(grid))
        assert t[:d] == pytest.approx(np.full(d, grid[int(np.argmax(dens))]), abs=2e-3)
        assert math.exp(t[d + 1]) + cfg.min_noise == pytest.approx(math.exp(-6.0), rel=1e-12)
    tiny = FitConfig(noise_prior_loc=math.log(5e-7))  # below the floor: the excess is the floor
    assert prior_mode(KernelSpec.from_kinds(("real",), (None,)), tiny)[2] == pytest.approx(
        math.log(1e-6)
    )


def test_the_fit_searches_the_documented_box(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins the L-BFGS-B bounds, in theta's order (lengthscales, signal, noise excess): a swapped
    or narrowed box fits hyperparameters the model was never meant to take."""
    calls = _record_minimize(monkeypatch)
    X, y = _data(4)
    m = fit_gp(X, y, MIXED, FitConfig(restarts=1, maxiter=5), np.random.default_rng(0))
    assert len(calls) == 1
    np.testing.assert_allclose(np.array(calls[0]["bounds"]), np.stack([LO, HI], axis=1))
    assert np.all(m.theta >= LO) and np.all(m.theta <= HI)


def test_the_fit_starts_warm_then_at_the_prior_mode_then_jittered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pins the restarts: the warm start (clipped into the box) first, then the prior's mode,
    then the mode with N(0, 1) jitter on the lengthscales only, ``restarts`` starts in all."""
    calls = _record_minimize(monkeypatch)
    X, y = _data(5)
    warm = np.full(MIXED.d + 2, -50.0)
    fit_gp(X, y, MIXED, FitConfig(restarts=4, maxiter=5), np.random.default_rng(1), warm)
    starts = [c["x0"] for c in calls]
    assert len(starts) == 4
    np.testing.assert_array_equal(starts[0], LO)
    mode = prior_mode(MIXED, FitConfig())
    np.testing.assert_array_equal(starts[1], mode)
    for s in starts[2:]:
        np.testing.assert_array_equal(s[MIXED.d :], mode[MIXED.d :])
        assert np.all(s[: MIXED.d] != mode[: MIXED.d])
    assert not np.array_equal(starts[2], starts[3])
    calls.clear()
    fit_gp(X, y, MIXED, FitConfig(restarts=1, maxiter=5), np.random.default_rng(1), warm)
    assert len(calls) == 1 and np.array_equal(calls[0]["x0"], LO)  # the warm start goes first


def test_the_fit_keeps_the_best_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins the choice among restarts: the hyperparameters of the lowest negative log posterior,
    not the first or the last found."""
    calls = _record_minimize(monkeypatch)
    X, y = _data(6, 25)
    m = fit_gp(X, y, MIXED, FitConfig(restarts=5, maxiter=3), np.random.default_rng(2))
    funs = [c["fun"] for c in calls]
    assert len(set(funs)) == len(funs) == 5
    np.testing.assert_array_equal(m.theta, calls[int(np.argmin(funs))]["x"])


def test_a_failed_factorisation_in_the_fit_is_a_large_finite_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pins the objective's answer when the covariance cannot be factorised: a large finite value
    (1e10) with a zero gradient, which L-BFGS-B's line search can compare and back away from,
    rather than an exception out of the middle of a suggestion or a non-finite value."""
    X, y = _data(7, 10)
    D = pair_sqdist(X, MIXED)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise linalg.LinAlgError("not positive definite")

    monkeypatch.setattr(linalg, "cholesky", broken)  # as _model calls it
    val, grad = _neg_log_posterior(prior_mode(MIXED, FitConfig()), D, y, MIXED, FitConfig())
    assert val == 1e10
    np.testing.assert_array_equal(grad, np.zeros(MIXED.d + 2))
