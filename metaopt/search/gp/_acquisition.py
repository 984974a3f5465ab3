"""Log expected improvement, numerically stable far below the incumbent (Ament et al. 2023).

``log_h(z) = log(phi(z) + z Phi(z))`` is evaluated directly for z > -1, through ``erfcx`` and
``log1mexp`` down to -1/sqrt(eps), and by its asymptote below, so the acquisition keeps a useful
gradient where plain EI underflows to zero.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import special

from metaopt.search.gp._model import GPModel

__all__ = ["log_ei", "log_ei_grad", "log_h"]

FloatArray = npt.NDArray[np.float64]

_C1 = 0.5 * math.log(2.0 * math.pi)
_C2 = 0.5 * math.log(math.pi / 2.0)
_Z_ASYMPTOTE = -1.0 / math.sqrt(np.finfo(np.float64).eps)


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
    out[c] = -0.5 * zc * zc - _C1 - 2.0 * np.log(np.abs(zc))
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
