"""Acquisition rules a mutation audit of metaopt/search/gp/_acquisition.py found unpinned by
the other tests."""

from __future__ import annotations

import math

import numpy as np

from metaopt.search.gp import GPModel, NegativeLCB, log_ei, log_h
from metaopt.search.gp._acquisition import LogEI, log_ei_grad
from tests.metaopt.search.gp.test_gp_model import MIXED, _points


def _model(seed: int) -> GPModel:
    X = _points(seed, 20)
    y = np.random.default_rng(seed).normal(size=20)
    return GPModel(X, y, np.array([-1.0, 0.0, -1.0, -0.5, 0.0, -6.0]), MIXED, 1e-6)


def test_the_acquisitions_value_with_its_gradient_equals_its_plain_value() -> None:
    """Pins that with_grad and __call__ agree: L-BFGS climbs with_grad's value and the candidates
    are ranked by __call__'s, so a disagreement ranks the refined points wrongly."""
    for seed in range(3):
        model = _model(seed)
        Q = _points(seed + 1, 6)
        best = float(model.y.min()) - 0.5
        ei = LogEI(model, best)
        np.testing.assert_allclose(ei.with_grad(Q)[0], ei(Q), rtol=1e-12)
        np.testing.assert_allclose(ei(Q), log_ei(model, Q, best), rtol=1e-12)
        np.testing.assert_allclose(log_ei_grad(model, Q, best)[0], ei(Q), rtol=1e-12)
        for beta in (0.5, 2.0):
            lcb = NegativeLCB(model, beta)
            np.testing.assert_allclose(lcb.with_grad(Q)[0], lcb(Q), rtol=1e-12)
            mu, var = model.predict(Q)
            np.testing.assert_allclose(lcb(Q), beta * np.sqrt(var) - mu, rtol=1e-12)


def test_log_h_follows_its_asymptote_far_below_the_incumbent() -> None:
    """Pins the last branch (z below -1/sqrt(eps)): h(z) ~ phi(z) / z^2 there, so log h keeps the
    -2 log|z| term and joins the middle branch without a jump."""
    for z in (-1e8, -1e10):
        expected = -0.5 * z * z - 0.5 * math.log(2 * math.pi) - 2.0 * math.log(-z)
        assert abs(float(log_h(np.array([z]))[0]) - expected) <= 1e-15 * abs(expected) + 4.0


def test_log_h_is_finite_next_to_its_asymptote_switch() -> None:
    """Pins log_h's documented 'finite for every finite z' just above -1/sqrt(eps), where the
    middle branch's log1mexp gets an argument rounded to 0 or above and returns NaN."""
    z = -np.geomspace(4e7, 6.7e7, 20001)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = log_h(z)
    assert np.isfinite(v).all()
