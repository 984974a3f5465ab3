"""Acquisitions: log expected improvement (Ament et al. 2023) and a lower confidence bound.

``log_h(z) = log(phi(z) + z Phi(z))`` is evaluated directly for z > -1, through ``erfcx`` and
``log1mexp`` down to -1/sqrt(eps), and by its asymptote below, so the acquisition keeps a useful
gradient where plain EI underflows to zero.

``LogEI`` and ``NegativeLCB`` are what the optimiser maximises: a value (q,) and its gradient
(q, d) at query points (q, d).
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import numpy.typing as npt
from scipy import special

from metaopt.search.gp._model import GPModel

__all__ = ["Acquisition", "LogEI", "NegativeLCB", "log_ei", "log_ei_grad", "log_h"]

FloatArray = npt.NDArray[np.float64]

_C1 = 0.5 * math.log(2.0 * math.pi)
_C2 = 0.5 * math.log(math.pi / 2.0)
# Below this the middle branch's log1mexp argument (about -1/z^2) is lost to round-off.
_Z_ASYMPTOTE = -1.0 / np.finfo(np.float64).eps ** (1.0 / 3.0)


def _log1mexp(x: FloatArray) -> FloatArray:
    """log(1 - exp(x)) for x < 0, accurate at both ends."""
    out = np.empty_like(x)
    near = x > -math.log(2.0)
    out[near] = np.log(-np.expm1(x[near]))
    out[~near] = np.log1p(-np.exp(x[~near]))
    return out


def log_h(z: FloatArray) -> FloatArray:
    """log(phi(z) + z Phi(z)) elementwise, finite for every finite z."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    a = z > -1.0
    za = z[a]
    out[a] = np.log(np.exp(-0.5 * za * za) / math.sqrt(2 * math.pi) + za * special.ndtr(za))
    b = (~a) & (z > _Z_ASYMPTOTE)
    zb = z[b]
    inner = np.log(special.erfcx(-zb / math.sqrt(2.0)) * np.abs(zb)) + _C2
    out[b] = -0.5 * zb * zb - _C1 + _log1mexp(inner)
    c = ~(a | b)
    zc = z[c]
    out[c] = -0.5 * zc * zc - _C1 - 2.0 * np.log(np.abs(zc)) + np.log1p(-3.0 / (zc * zc))
    return out


def log_ei(model: GPModel, Xq: FloatArray, best: float) -> FloatArray:
    """log EI (q,) of minimising below ``best`` at Xq (q, d)."""
    mu, var = model.predict(Xq)
    sd = np.sqrt(var)
    return log_h((best - mu) / sd) + np.log(sd)


def log_ei_grad(model: GPModel, Xq: FloatArray, best: float) -> tuple[FloatArray, FloatArray]:
    """log EI (q,) and its gradient (q, d) at Xq (q, d)."""
    mu, var, dmu, dvar = model.predict_grad(Xq)
    sd = np.sqrt(var)
    z = (best - mu) / sd
    lh = log_h(z)
    # d log_h / dz = Phi(z) / h(z), formed in log space so it survives z << 0.
    dlh = np.exp(special.log_ndtr(z) - lh)
    dsd = dvar / (2.0 * sd[:, None])
    dz = (-dmu - z[:, None] * dsd) / sd[:, None]
    grad = dlh[:, None] * dz + dsd / sd[:, None]
    return lh + np.log(sd), grad


class Acquisition(Protocol):
    """A function of the query points to maximise, with its gradient."""

    def __call__(self, Xq: FloatArray) -> FloatArray: ...

    def with_grad(self, Xq: FloatArray) -> tuple[FloatArray, FloatArray]: ...


class LogEI:
    """log EI of improving on ``best``."""

    def __init__(self, model: GPModel, best: float) -> None:
        self.model, self.best = model, best

    def __call__(self, Xq: FloatArray) -> FloatArray:
        return log_ei(self.model, Xq, self.best)

    def with_grad(self, Xq: FloatArray) -> tuple[FloatArray, FloatArray]:
        return log_ei_grad(self.model, Xq, self.best)


class NegativeLCB:
    """beta sigma - mu: the lower confidence bound mu - beta sigma, negated to be maximised."""

    def __init__(self, model: GPModel, beta: float) -> None:
        self.model, self.beta = model, beta

    def __call__(self, Xq: FloatArray) -> FloatArray:
        mu, var = self.model.predict(Xq)
        return np.asarray(self.beta * np.sqrt(var) - mu, dtype=np.float64)

    def with_grad(self, Xq: FloatArray) -> tuple[FloatArray, FloatArray]:
        mu, var, dmu, dvar = self.model.predict_grad(Xq)
        sd = np.sqrt(var)
        grad = self.beta * dvar / (2.0 * sd[:, None]) - dmu
        return np.asarray(self.beta * sd - mu, dtype=np.float64), grad
