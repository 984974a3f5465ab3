"""The default portfolio: space-filling start, then GP, mixing in evolution where GP is weak.

The rule, applied on every call (h = completed + pending + failed trials, n = completed ones,
d = dimensions, c = categorical coordinates, m = objectives):

1. h < n_start = clamp(2 d, 5, 10): ``SobolStart`` (maximin over a scrambled Sobol set).
2. Otherwise each requested point goes to evolution with probability p, else to the GP, where
   p = 0, plus ``mix_large`` when n > ``large_history`` (default 300, GP cost grows as n^3 and
   evolution has enough material), plus ``mix_high_dim`` when d > ``high_dim`` (16), plus
   ``mix_categorical`` when c > d / 2; p = 1 when n > ``gp_max_history`` (1,000) or when the
   GP package is missing. The draw uses the passed generator, so it is reproducible.
3. Several objectives: the GP part is ParEGO (a random augmented Chebyshev scalarisation of the
   normalised objectives per call) and p is at least ``mix_multi`` (0.5), the rest NSGA-II.

A batch is split between the two and the second part sees the first as pending, so the batch is
duplicate-free; every part passes through ``dedupe``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from metaopt.search._base import Algorithm, Observations
from metaopt.search._dedupe import dedupe
from metaopt.search._evolution import EvolutionAlgorithm
from metaopt.search._pareto import chebyshev_scalarise
from metaopt.search._random import SobolStart
from metaopt.space import Space

__all__ = ["AutoAlgorithm", "AutoConfig", "parego_scalarise"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class AutoConfig:
    """Thresholds of the portfolio rule documented in the module docstring."""

    min_start: int = 5
    max_start: int = 10
    large_history: int = 300
    gp_max_history: int = 1000
    high_dim: int = 16
    mix_large: float = 0.5
    mix_high_dim: float = 0.25
    mix_categorical: float = 0.25
    mix_multi: float = 0.5
    parego_rho: float = 0.05


parego_scalarise = chebyshev_scalarise


class AutoAlgorithm:
    """Sobol start, then GP (ParEGO for several objectives) mixed with DEAP evolution."""

    name = "auto"

    def __init__(self, config: AutoConfig | None = None, gp: Algorithm | None = None) -> None:
        self.config = config or AutoConfig()
        self._start = SobolStart()
        self._evolution = EvolutionAlgorithm()
        self._gp: Algorithm | None = gp
        self._gp_missing = False

    def n_start(self, space: Space) -> int:
        """How many known trials the space-filling start provides."""
        return int(np.clip(2 * space.d, self.config.min_start, self.config.max_start))

    def evolution_share(self, space: Space, obs: Observations) -> float:
        """Probability p that a point after the start comes from evolution (the rule above)."""
        cfg = self.config
        if obs.n > cfg.gp_max_history or self._gp_algorithm() is None:
            return 1.0
        p = 0.0
        if obs.n > cfg.large_history:
            p += cfg.mix_large
        if space.d > cfg.high_dim:
            p += cfg.mix_high_dim
        if sum(k == "cat" for k in space.kinds) > space.d / 2:
            p += cfg.mix_categorical
        if obs.m > 1:
            p = max(p, cfg.mix_multi)
        return min(1.0, p)

    def suggest(
        self, space: Space, obs: Observations, rng: np.random.Generator, n: int = 1
    ) -> FloatArray:
        """Return (n, d) rounded points chosen by the rule in the module docstring."""
        known = obs.n + obs.pending.shape[0] + obs.failed.shape[0]
        if known < self.n_start(space) or np.isfinite(obs.Y).all(axis=1).sum() < 2:
            return self._start.suggest(space, obs, rng, n)
        n_evo = int(rng.binomial(n, self.evolution_share(space, obs)))
        parts: list[FloatArray] = []
        if n - n_evo > 0:
            gp = self._gp_algorithm()
            assert gp is not None  # evolution_share is 1 without a GP
            parts.append(self._gp_suggest(gp, space, obs, rng, n - n_evo))
        if n_evo > 0:
            seen = _with_pending(obs, parts)
            parts.append(self._evolution.suggest(space, seen, rng, n_evo))
        return dedupe(space, np.vstack(parts), obs, rng)

    def _gp_suggest(
        self, gp: Algorithm, space: Space, obs: Observations, rng: np.random.Generator, n: int
    ) -> FloatArray:
        if obs.m == 1:
            return gp.suggest(space, obs, rng, n)
        ok = np.isfinite(obs.Y).all(axis=1)
        weights = rng.dirichlet(np.ones(obs.m))
        y = np.full(obs.n, np.nan)
        y[ok] = parego_scalarise(obs.Y[ok], weights, self.config.parego_rho)
        # Non-finite rows stay, as NaN: the GP imputes them at the worst value, as it does with
        # one objective, and steers away from them.
        scalar = Observations(obs.X, y[:, None], obs.pending, obs.failed)
        return gp.suggest(space, scalar, rng, n)

    def _gp_algorithm(self) -> Algorithm | None:
        if self._gp is None and not self._gp_missing:
            try:
                module: Any = importlib.import_module("metaopt.search.gp")
            except ImportError:
                self._gp_missing = True
                return None
            self._gp = module.GPAlgorithm()
        return self._gp


def _with_pending(obs: Observations, parts: list[FloatArray]) -> Observations:
    if not parts:
        return obs
    d = obs.X.shape[1]
    old = obs.pending if obs.pending.shape[0] else np.zeros((0, d))
    pending = np.vstack([old, *parts])
    return Observations(obs.X, obs.Y, pending, obs.failed)
