"""Covariance functions of the freeze-thaw model: exponential decay over time, Matérn-5/2 over x."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["exp_decay", "matern52"]

FloatArray = npt.NDArray[np.float64]

_SQRT5 = float(np.sqrt(5.0))


def exp_decay(
    t1: FloatArray, t2: FloatArray, alpha: float, beta: float, amplitude: float = 1.0
) -> FloatArray:
    """amplitude * beta**alpha / (t + t' + beta)**alpha for t1 (n,), t2 (m,) -> (n, m).

    It is the covariance of an infinite mixture of decaying exponentials exp(-lambda t) with
    lambda ~ Gamma(alpha, beta), so samples decay towards zero as t grows (Swersky et al. 2014).
    """
    if alpha <= 0.0 or beta <= 0.0:
        raise ValueError("exp_decay needs alpha > 0 and beta > 0; pass positive kernel parameters")
    s = np.asarray(t1, dtype=np.float64)[:, None] + np.asarray(t2, dtype=np.float64)[None, :]
    # Written as exp(alpha * log(beta / (s + beta))) so large alpha cannot overflow beta**alpha.
    out: FloatArray = amplitude * np.exp(alpha * np.log(beta / (s + beta)))
    return out


def matern52(
    x1: FloatArray, x2: FloatArray, lengthscales: FloatArray, amplitude: float = 1.0
) -> FloatArray:
    """ARD Matérn-5/2 kernel; x1 (n, d), x2 (m, d), lengthscales (d,) -> (n, m)."""
    a = np.asarray(x1, dtype=np.float64) / lengthscales
    b = np.asarray(x2, dtype=np.float64) / lengthscales
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    r = np.sqrt(np.maximum(sq, 0.0))
    out: FloatArray = amplitude * (1.0 + _SQRT5 * r + (5.0 / 3.0) * r * r) * np.exp(-_SQRT5 * r)
    return out
