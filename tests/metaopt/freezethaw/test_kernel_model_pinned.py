"""metaopt.freezethaw._kernel and ._model: the kernels' closed forms and the posterior the
policy reads (pinned by a mutation audit: the suite compared block and dense inference only for
each curve's final value with one shared max_step, and never the forecast of an untried point,
a forecast at an intermediate step or an asymptote's variance).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import integrate
from scipy.special import ndtr

from metaopt.freezethaw import (
    CurveView,
    FreezeThawModel,
    exp_decay,
    expected_improvement,
    matern52,
)
from metaopt.freezethaw._model import FittedModel, FreezeThawConfig, _prepare, finite_prefix
from tests.metaopt.freezethaw.test_kernel_model import _curves, dense_joint

FloatArray = npt.NDArray[np.float64]


@pytest.mark.parametrize(("alpha", "beta"), [(0.0, 1.0), (-1.0, 1.0), (1.0, 0.0), (1.0, -0.5)])
def test_exp_decay_refuses_non_positive_parameters(alpha: float, beta: float) -> None:
    """alpha = 0 gives a constant kernel and beta = 0 a log of zero: both are refused with a
    ValueError rather than silently making a degenerate or nan covariance."""
    t = np.array([0.0, 1.0])
    with pytest.raises(ValueError):
        exp_decay(t, t, alpha, beta)


@given(
    arrays(np.float64, (4, 3), elements=st.floats(0.0, 1.0)),
    arrays(np.float64, (5, 3), elements=st.floats(0.0, 1.0)),
    arrays(np.float64, 3, elements=st.floats(0.05, 3.0)),
    st.floats(0.1, 5.0),
)
@settings(max_examples=30)
def test_matern_matches_its_closed_form(
    x1: FloatArray, x2: FloatArray, ls: FloatArray, amp: float
) -> None:
    """k(x, x') = amp (1 + sqrt5 r + 5/3 r^2) exp(-sqrt5 r), r the lengthscaled distance: the
    PSD test alone passes for many wrong kernels."""
    K = matern52(x1, x2, ls, amp)
    for i, a in enumerate(x1):
        for j, b in enumerate(x2):
            r = float(np.sqrt((((a - b) / ls) ** 2).sum()))
            want = amp * (1 + math.sqrt(5) * r + 5 / 3 * r * r) * math.exp(-math.sqrt(5) * r)
            assert K[i, j] == pytest.approx(want, rel=1e-7, abs=1e-12)


def _posterior(fm: FittedModel, k: FloatArray, kss: float) -> tuple[float, float]:
    data, h, _cid, _tt, _Obs, _Kx, S, r = dense_joint(fm)
    mean = data.centre + data.scale * (h.mean + k @ np.linalg.solve(S, r))
    var = data.scale**2 * (kss - k @ np.linalg.solve(S, k))
    return float(mean), float(var)


def _mixed() -> list[CurveView]:
    """Curves on a shared grid with different budgets, one irregular, one without points."""
    rng = np.random.default_rng(7)
    curves = _curves(rng, 8, 12, 0.02)
    return [
        CurveView(c.trial_id, c.x, c.steps, c.values, c.state, 12 if i % 2 else 30)
        for i, c in enumerate(curves)
    ]


def test_finals_match_dense_inference_when_budgets_differ_on_a_shared_grid() -> None:
    """Each curve's final forecast is at its own max_step, even when curves of one grid have
    different budgets (the block code shares one solve per (grid, max_step))."""
    fm = FreezeThawModel().fit(_mixed())
    data, h, cid, tt, Obs, Kx, _S, _r = dense_joint(fm)
    means, variances = fm.finals()
    for i in range(len(data.ids)):
        ts = np.array([data.t_final[i]])
        k = exp_decay(tt, ts, h.alpha, h.beta, h.amp_t)[:, 0] * (cid == i) + Obs @ Kx[:, i]
        kss = float(exp_decay(ts, ts, h.alpha, h.beta, h.amp_t)[0, 0] + Kx[i, i])
        m, v = _posterior(fm, k, kss)
        assert means[i] == pytest.approx(m, rel=1e-6, abs=1e-9)
        assert variances[i] == pytest.approx(v, rel=1e-5, abs=1e-9)


def test_predict_at_a_step_and_the_asymptote_match_dense_inference() -> None:
    """predict(trial, step) is the posterior of the noiseless curve at that step (observed or
    not, for curves with and without points), asymptote() that of its limit f_n."""
    fm = FreezeThawModel().fit(_mixed())
    data, h, cid, tt, Obs, Kx, _S, _r = dense_joint(fm)
    for i, tid in enumerate(data.ids):
        for step in (1.0, 4.0, 7.5, 20.0):
            ts = np.array([step / data.time_scale])
            k = exp_decay(tt, ts, h.alpha, h.beta, h.amp_t)[:, 0] * (cid == i) + Obs @ Kx[:, i]
            kss = float(exp_decay(ts, ts, h.alpha, h.beta, h.amp_t)[0, 0] + Kx[i, i])
            m, v = fm.predict(tid, step)
            want_m, want_v = _posterior(fm, k, kss)
            assert m == pytest.approx(want_m, rel=1e-6, abs=1e-9), (tid, step)
            assert v == pytest.approx(want_v, rel=1e-5, abs=1e-9), (tid, step)
        m, v = fm.asymptote(tid)
        want_m, want_v = _posterior(fm, Obs @ Kx[:, i], float(Kx[i, i]))
        assert m == pytest.approx(want_m, rel=1e-6, abs=1e-9)
        assert v == pytest.approx(want_v, rel=1e-5, abs=1e-9)


def test_an_untried_configurations_final_matches_dense_inference() -> None:
    """fresh_final is the forecast the fresh rate uses before enough configurations were
    tried: its asymptote from the space GP plus a whole curve's decay at max_step."""
    fm = FreezeThawModel().fit(_mixed())
    data, h, _cid, _tt, Obs, _Kx, _S, _r = dense_joint(fm)
    X = np.random.default_rng(1).random((5, data.X.shape[1]))
    means, variances = fm.fresh_final(X, 30)
    ts = np.array([30 / data.time_scale])
    for j in range(X.shape[0]):
        kx = matern52(data.X, X[j : j + 1], h.lengthscales, h.amp_x)[:, 0]
        kss = h.amp_x + float(exp_decay(ts, ts, h.alpha, h.beta, h.amp_t)[0, 0])
        m, v = _posterior(fm, Obs @ kx, kss)
        assert means[j] == pytest.approx(m, rel=1e-6, abs=1e-9)
        assert variances[j] == pytest.approx(v, rel=1e-5, abs=1e-9)


def test_prob_beats_and_expected_improvement_are_those_of_the_forecast_gaussian() -> None:
    """prob_beats is P(final < best) = Phi((best - m) / sd) with sd the square root of the
    variance, and expected_improvement E[max(best - y, 0)] for y ~ N(m, var)."""
    fm = FreezeThawModel().fit(_mixed())
    for tid in fm.trial_ids[:4]:
        m, v = fm.predict(tid)
        best = m + 0.7 * math.sqrt(v)
        assert fm.prob_beats(tid, best) == pytest.approx(float(ndtr(0.7)), rel=1e-9)
    for m, v, best in ((0.3, 0.04, 0.5), (0.3, 0.04, 0.1), (1.0, 2.0, 0.0)):
        sd = math.sqrt(v)
        want, _ = integrate.quad(
            lambda y, m=m, sd=sd, best=best: (
                (best - y) * math.exp(-0.5 * ((y - m) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
            ),
            -np.inf,
            best,
        )
        got = float(expected_improvement(np.array([m]), np.array([v]), best)[0])
        assert got == pytest.approx(want, rel=1e-6, abs=1e-12)


def test_fit_without_optimising_first_fits_and_a_new_dimension_starts_over() -> None:
    """optimise=False reuses hyperparameters only when there are some for this space: the
    first fit, or a fit after the space's dimension changed, fits them afresh."""
    curves = _mixed()
    model = FreezeThawModel()
    fm = model.fit(curves, optimise=False)
    assert np.isfinite(fm.finals()[0]).all()
    wider = [
        CurveView(c.trial_id, np.r_[c.x, 0.5], c.steps, c.values, c.state, c.max_step)
        for c in curves
    ]
    for optimise in (False, True):
        again = model.fit(wider, optimise=optimise)
        assert again.hyper.lengthscales.shape == (3,)
        assert np.isfinite(again.finals()[0]).all()
        model.hyper = fm.hyper  # back to the 2-d hyperparameters


def test_identical_flat_curves_are_forecast_without_dividing_by_zero() -> None:
    """Every run reporting the same constant (a metric stuck at 0, say) has no spread: the
    values are standardised with a scale of 1 instead, and the forecast is that constant."""
    s = np.arange(1, 11)
    curves = [
        CurveView(f"c{i}", np.array([0.2 * i, 0.5]), s, np.full(10, 0.25), "running", 20)
        for i in range(4)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fm = FreezeThawModel().fit(curves)
        means, variances = fm.finals()
    assert fm.value_scale == 1.0
    assert np.allclose(means, 0.25) and np.isfinite(variances).all()


def test_values_after_the_first_nan_are_dropped_even_if_finite() -> None:
    """A run that reported nan is broken from there on: the model sees only the prefix before
    it, whatever finite values came later."""
    c = CurveView(
        "b", np.zeros(1), np.arange(1, 6), np.array([1.0, 0.5, np.nan, 0.1, 0.05]), "completed", 5
    )
    s, v, broken = finite_prefix(c)
    assert broken and s.tolist() == [1.0, 2.0] and v.tolist() == [1.0, 0.5]


def test_a_diverging_curve_is_clipped_at_clip_sd_standard_deviations() -> None:
    """Standardised values above clip_sd (8) are clipped, so one report blowing up to 1e6 (under
    1% of the points: the winsorised spread ignores it) cannot stretch the model's view of
    every other curve."""
    s = np.arange(1, 21)
    curves = [
        CurveView(f"c{i}", np.array([0.2 * i]), s, 1.0 + 0.1 * i + np.exp(-s / 5.0), "running", 20)
        for i in range(5)
    ]
    curves.append(CurveView("blow", np.array([0.9]), s, np.r_[np.ones(19), 1e6], "running", 20))
    data = _prepare(curves, FreezeThawConfig())
    assert max(float(y.max()) for y in data.y) == FreezeThawConfig().clip_sd


@pytest.mark.parametrize("plateau", ["exact", "jittered", "smooth"])
@pytest.mark.parametrize("settle", [(1.0, 0.3), (0.5, 0.1)])
def test_curves_that_reach_a_value_and_stay_there_keep_their_spread_as_the_scale(
    plateau: str, settle: tuple[float, float]
) -> None:
    """Curves that all settle on one value (an error rate at 0, a loss converged): most points
    lie on the plateau, so its quartiles agree to within its noise. A fence of 20
    interquartile ranges made the scale 1 (quartiles equal: 20 times the curves' spread) or
    185 times too narrow (quartiles a hair apart: 169 points, the first 5 of every curve, clipped
    at clip_sd); one of 100 10th-90th percentile ranges, 222 times too narrow once the curves
    settle faster (over 80% of the points on the plateau)."""
    s = np.arange(1, 101)
    rng = np.random.default_rng(0)
    curves = []
    for i in range(12):
        decay = (0.3 + 0.02 * i) * np.exp(-s / (settle[0] + settle[1] * i))
        values = {
            "exact": np.round(decay * 200) / 200,
            "jittered": np.round(decay * 200) / 200 + 1e-9 * rng.standard_normal(100),
            "smooth": 0.01 + decay,
        }[plateau]
        curves.append(CurveView(f"c{i}", np.array([0.08 * i]), s, values, "running", 100))
    pooled = np.concatenate([c.values for c in curves])
    q1, q3 = np.percentile(pooled, [25.0, 75.0])
    assert q3 - q1 < 1e-3 * np.std(pooled)  # (the plateau: the quartiles agree)
    data = _prepare(curves, FreezeThawConfig())
    assert 0.5 * np.std(pooled) < data.scale < 2.0 * np.std(pooled)
    clipped = sum(int((y >= FreezeThawConfig().clip_sd).sum()) for y in data.y)
    assert clipped <= 24  # (the first step or two of a curve, 14-40 sds above the plateau)


def test_a_diverged_run_is_left_out_of_the_scale_where_most_curves_are_flat() -> None:
    """Runs that never learn report one value at every step: with most curves flat, the
    median curve's range is 0, a fence of it left every point in, and one run diverged to
    1e6 set the scale at 1.6e5 (the symptom the fence exists for: forecasts of 3.5e4)."""
    s = np.arange(1, 101)
    rng = np.random.default_rng(0)
    flat = np.full(100, 2.302585)  # (a loss of ln 10: a classifier that never learnt)
    curves = [
        CurveView(f"flat{i}", np.array([0.1 * i]), s, flat, "completed", 100) for i in range(7)
    ]
    curves += [
        CurveView(f"learn{i}", np.array([0.5 + 0.1 * i]), s,
                  0.3 + 2.0 * np.exp(-s / (5.0 + i)) + 0.01 * rng.standard_normal(100),
                  "completed", 100)
        for i in range(5)
    ]  # fmt: skip
    curves.append(CurveView("blow", np.array([0.99]), s[:50], np.r_[np.ones(10), np.full(40, 1e6)],
                            "killed", 100))  # fmt: skip
    data = _prepare(curves, FreezeThawConfig())
    assert 0.1 < data.scale < 2.0
