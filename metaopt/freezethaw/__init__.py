"""Freeze-thaw early stopping: a learning-curve model and a peer's decisions on its trials."""

from __future__ import annotations

from metaopt.freezethaw._asha import AshaConfig, AshaStopper
from metaopt.freezethaw._kernel import exp_decay, matern52
from metaopt.freezethaw._median import MedianConfig, MedianStopper
from metaopt.freezethaw._model import (
    CurveView,
    FittedModel,
    FreezeThawConfig,
    FreezeThawModel,
    Hyper,
    expected_improvement,
)
from metaopt.freezethaw._policy import (
    Action,
    Decision,
    EarlyStopper,
    FreezeThawPolicyConfig,
    FreezeThawStopper,
    NoStopper,
    make_stopper,
)

__all__ = [
    "Action",
    "AshaConfig",
    "AshaStopper",
    "CurveView",
    "Decision",
    "EarlyStopper",
    "FittedModel",
    "FreezeThawConfig",
    "FreezeThawModel",
    "FreezeThawPolicyConfig",
    "FreezeThawStopper",
    "Hyper",
    "MedianConfig",
    "MedianStopper",
    "NoStopper",
    "exp_decay",
    "expected_improvement",
    "make_stopper",
    "matern52",
]
