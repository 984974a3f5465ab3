"""Gaussian-process Bayesian optimisation (numpy and scipy only)."""

from __future__ import annotations

from metaopt.search.gp._acquisition import Acquisition, LogEI, NegativeLCB, log_ei, log_h
from metaopt.search.gp._algorithm import GPAlgorithm, GPConfig, chebyshev_scalarise
from metaopt.search.gp._kernel import KernelSpec
from metaopt.search.gp._model import FitConfig, GPModel, fit_gp, warp_outputs
from metaopt.search.gp._optimize import AcqConfig, maximise, maximise_log_ei, minimise_lcb

__all__ = [
    "AcqConfig",
    "Acquisition",
    "FitConfig",
    "GPAlgorithm",
    "GPConfig",
    "GPModel",
    "KernelSpec",
    "LogEI",
    "NegativeLCB",
    "chebyshev_scalarise",
    "fit_gp",
    "log_ei",
    "log_h",
    "maximise",
    "maximise_log_ei",
    "minimise_lcb",
    "warp_outputs",
]
