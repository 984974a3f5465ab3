"""The search benchmark's problems: six test functions with known optima and one real CV model.

Every problem maps a params dict (as a trial receives it) to a loss to minimise. The scikit-learn
problem has no known optimum; its regret is measured against the best loss any method found in
the same benchmark run (``optimum`` is None). Nothing is cached: every call fits the models.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["PROBLEMS", "Problem", "get_problem"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Problem:
    """A named objective over an Oríon-style space; ``optimum`` is the known minimum or None."""

    name: str
    priors: Mapping[str, str]
    objective: Callable[[Mapping[str, Any]], float]
    optimum: float | None


def _vec(params: Mapping[str, Any], n: int) -> FloatArray:
    return np.array([params[f"x{i}"] for i in range(n)], dtype=np.float64)


def branin(p: Mapping[str, Any]) -> float:
    x1, x2 = p["x0"], p["x1"]
    b, c = 5.1 / (4 * math.pi**2), 5 / math.pi
    t = 1 / (8 * math.pi)
    return float((x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10)


_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)


def hartmann6(p: Mapping[str, Any]) -> float:
    x = _vec(p, 6)
    return float(-(_H_ALPHA * np.exp(-(_H_A * (x - _H_P) ** 2).sum(axis=1))).sum())


def ackley(p: Mapping[str, Any]) -> float:
    x = _vec(p, 5)
    d = x.size
    a = -20 * math.exp(-0.2 * math.sqrt(float((x**2).sum()) / d))
    return float(a - math.exp(float(np.cos(2 * math.pi * x).sum()) / d) + 20 + math.e)


def rosenbrock(p: Mapping[str, Any]) -> float:
    x = _vec(p, 4)
    return float((100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum())


def levy(p: Mapping[str, Any]) -> float:
    x = _vec(p, 8)
    w = 1 + (x - 1) / 4
    head = math.sin(math.pi * w[0]) ** 2
    mid = ((w[:-1] - 1) ** 2 * (1 + 10 * np.sin(math.pi * w[:-1] + 1) ** 2)).sum()
    tail = (w[-1] - 1) ** 2 * (1 + math.sin(2 * math.pi * w[-1]) ** 2)
    return float(head + mid + tail)


_ACT_PENALTY = {"relu": 0.0, "tanh": 0.4, "gelu": 0.15, "sigmoid": 1.0}


def mixed(p: Mapping[str, Any]) -> float:
    """Log-scale lr, integer width and a categorical with an lr/dropout interaction; min 0."""
    a = math.log10(p["lr"]) + 2.5  # best lr 10**-2.5
    b = (p["layers"] - 6) / 3  # best 6 layers
    c = (p["dropout"] - 0.2) * 4  # best dropout 0.2
    quad = a**2 + b**2 + c**2 + 0.5 * a * c  # positive definite, so the minimum is at 0
    return float(quad + _ACT_PENALTY[p["act"]])


class SVRDiabetes:
    """3-fold cross-validated mean squared error of an RBF SVR on scikit-learn's diabetes set.

    A continuous loss on standardised targets: an accuracy on a small classification set (the
    first choice, an SVC on digits) saturated, and every method tied at the same handful of
    errors, which compares nothing.
    """

    def __init__(self) -> None:
        from sklearn.datasets import load_diabetes

        X, y = load_diabetes(return_X_y=True)
        self.X = (X - X.mean(axis=0)) / X.std(axis=0)
        self.y = (y - y.mean()) / y.std()

    def __call__(self, p: Mapping[str, Any]) -> float:
        from sklearn.model_selection import KFold, cross_val_score
        from sklearn.svm import SVR

        cv = KFold(3, shuffle=True, random_state=0)
        model = SVR(C=p["C"], gamma=p["gamma"], epsilon=p["epsilon"])
        scores = cross_val_score(model, self.X, self.y, cv=cv, scoring="neg_mean_squared_error")
        return float(-scores.mean())


def _box(n: int, low: float, high: float) -> dict[str, str]:
    return {f"x{i}": f"uniform({low}, {high})" for i in range(n)}


def _make(name: str) -> Problem:
    if name == "branin":
        return Problem(
            name, {"x0": "uniform(-5, 10)", "x1": "uniform(0, 15)"}, branin, 0.397887357729738
        )
    if name == "hartmann6":
        return Problem(name, _box(6, 0, 1), hartmann6, -3.32236801141551)
    if name == "ackley5":
        return Problem(name, _box(5, -32.768, 32.768), ackley, 0.0)
    if name == "rosenbrock4":
        return Problem(name, _box(4, -5, 10), rosenbrock, 0.0)
    if name == "levy8":
        return Problem(name, _box(8, -10, 10), levy, 0.0)
    if name == "mixed":
        priors = {
            "lr": "loguniform(1e-5, 1)",
            "layers": "randint(1, 17)",
            "dropout": "uniform(0, 0.8)",
            "act": "choices(['relu', 'tanh', 'gelu', 'sigmoid'])",
        }
        return Problem(name, priors, mixed, 0.0)
    if name == "svr_diabetes":
        priors = {
            "C": "loguniform(1e-2, 1e3)",
            "gamma": "loguniform(1e-5, 1e1)",
            "epsilon": "loguniform(1e-3, 1)",
        }
        return Problem(name, priors, SVRDiabetes(), None)
    raise KeyError(name)


PROBLEMS = ("branin", "hartmann6", "ackley5", "rosenbrock4", "levy8", "mixed", "svr_diabetes")


def get_problem(name: str) -> Problem:
    """A fresh instance of the named problem (one of PROBLEMS)."""
    return _make(name)
