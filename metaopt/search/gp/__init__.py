"""Gaussian-process Bayesian optimisation (numpy and scipy only)."""

from __future__ import annotations

from metaopt.search.gp._acquisition import log_ei, log_h
from metaopt.search.gp._algorithm import GPAlgorithm, GPConfig, chebyshev_scalarise
from metaopt.search.gp._kernel import KernelSpec
from metaopt.search.gp._model import FitConfig, GPModel, fit_gp, warp_outputs
from metaopt.search.gp._optimize import AcqConfig, maximise_log_ei

__all__ = [
    "AcqConfig",
    "FitConfig",
    "GPAlgorithm",
    "GPConfig",
    "GPModel",
    "KernelSpec",
    "chebyshev_scalarise",
    "fit_gp",
    "log_ei",
    "log_h",
    "maximise_log_ei",
    "warp_outputs",
]
