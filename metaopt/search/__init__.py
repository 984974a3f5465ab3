"""Search algorithms: suggest unit-cube points from (space, observations, rng)."""

from __future__ import annotations

import importlib
from typing import Any

from metaopt._errors import SearchError
from metaopt.search._auto import AutoAlgorithm, AutoConfig, parego_scalarise
from metaopt.search._base import Algorithm, Observations
from metaopt.search._dedupe import DedupeConfig, dedupe, is_known, known_points
from metaopt.search._evolution import EvolutionAlgorithm, EvolutionConfig
from metaopt.search._pareto import (
    crowding_distance,
    hypervolume_2d,
    non_dominated_sort,
    pareto_front,
)
from metaopt.search._random import RandomAlgorithm, SobolStart, SobolStartConfig

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "AutoAlgorithm",
    "AutoConfig",
    "DedupeConfig",
    "EvolutionAlgorithm",
    "EvolutionConfig",
    "Observations",
    "RandomAlgorithm",
    "SobolStart",
    "SobolStartConfig",
    "crowding_distance",
    "dedupe",
    "hypervolume_2d",
    "is_known",
    "known_points",
    "make_algorithm",
    "non_dominated_sort",
    "parego_scalarise",
    "pareto_front",
]

ALGORITHMS = ("auto", "evolution", "gp", "random", "sobol")


def make_algorithm(name: str, **kw: Any) -> Algorithm:
    """Build an algorithm by name.

    Args:
        name: one of ``auto`` (default portfolio), ``gp``, ``evolution``, ``random``, ``sobol``.
        **kw: passed to the constructor, e.g. ``config=EvolutionConfig(population=20)``.

    Returns:
        A fresh Algorithm.

    Raises:
        SearchError: unknown name, or ``gp`` requested but metaopt.search.gp is unavailable.
    """
    if name == "auto":
        return AutoAlgorithm(**kw)
    if name == "evolution":
        return EvolutionAlgorithm(**kw)
    if name == "random":
        return RandomAlgorithm(**kw)
    if name == "sobol":
        return SobolStart(**kw)
    if name == "gp":
        try:
            module: Any = importlib.import_module("metaopt.search.gp")
        except ImportError as exc:
            raise SearchError(
                f"the gp algorithm is unavailable ({exc}); use 'auto' or 'evolution'"
            ) from None
        alg: Algorithm = module.GPAlgorithm(**kw)
        return alg
    raise SearchError(f"unknown algorithm {name!r}; expected one of {', '.join(ALGORITHMS)}")
