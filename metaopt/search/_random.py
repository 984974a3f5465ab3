"""Random search and a space-filling start that needs no coordination between peers.

``SobolStart`` draws a scrambled Sobol set from the passed generator and picks, greedily, the
candidates farthest (on the torus) from every known point (completed, pending, failed) and from
each other. Peers
thus fill the gaps left by each other's replicated trials instead of walking one shared sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.stats import qmc

from metaopt.search._base import Observations
from metaopt.search._dedupe import dedupe, known_points
from metaopt.space import Space

__all__ = ["RandomAlgorithm", "SobolStart", "SobolStartConfig"]

FloatArray = npt.NDArray[np.float64]

_CHUNK = 1 << 20  # floats in one slice of candidate-to-known differences (8 MiB, a few copies)


class RandomAlgorithm:
    """Independent draws from the priors, duplicates of known points replaced."""

    name = "random"

    def suggest(
        self, space: Space, obs: Observations, rng: np.random.Generator, n: int = 1
    ) -> FloatArray:
        """Return (n, d) rounded prior samples not equal to any known point."""
        return dedupe(space, space.sample(rng, n), obs, rng)


@dataclass(frozen=True)
class SobolStartConfig:
    """min_candidates: size floor of the Sobol candidate set (a power of two is used)."""

    min_candidates: int = 256


class SobolStart:
    """Greedy maximin selection from a scrambled Sobol candidate set."""

    name = "sobol"

    def __init__(self, config: SobolStartConfig | None = None) -> None:
        self.config = config or SobolStartConfig()

    def suggest(
        self, space: Space, obs: Observations, rng: np.random.Generator, n: int = 1
    ) -> FloatArray:
        """Return (n, d) rounded points far from known points and from each other."""
        if space.d == 0:
            return dedupe(space, np.zeros((n, 0)), obs, rng)
        m = max(self.config.min_candidates, 8 * n)
        m = 1 << math.ceil(math.log2(m))
        seed = int(rng.integers(2**63 - 1))
        # A weighted categorical takes its choice from the candidate's coordinate in the
        # prior's CDF (cells as wide as the weights) and stays out of the distances: in them
        # maximin gives each choice its turn (a choice of weight 0.9 was taken about as often
        # as one of 0.1, the weights shaping random search alone).
        raw = qmc.Sobol(space.d, scramble=True, seed=seed).random(m)
        cand = space.from_prior_cdf(raw)
        weighted = [i for i, dim in enumerate(space.dimensions) if dim.weight_edges is not None]
        where = cand.copy()
        where[:, weighted] = 0.0
        taken = known_points(obs)
        taken = space.round_known(taken)
        taken[:, weighted] = 0.0
        dmin = np.full(m, np.inf)
        # A slice of the known points at a time: all at once, the (m, known, d) array of 3,000
        # known points in 100 dimensions took 1.9 GB (the GP falls back to this start).
        step = max(1, _CHUNK // (m * space.d))
        for lo in range(0, taken.shape[0], step):
            near = _torus_distance(where[:, None, :], taken[None, lo : lo + step, :]).min(axis=1)
            dmin = np.minimum(dmin, near)
        if len(weighted) == space.d:
            # Nothing left to spread: the candidates are prior draws as they come.
            return dedupe(space, cand[:n], obs, rng)
        chosen = np.empty((n, space.d))
        for i in range(n):
            # With nothing known all tie; the first scrambled point is as random as any.
            j = int(np.argmax(dmin))
            chosen[i] = cand[j]
            dmin = np.minimum(dmin, _torus_distance(where, where[j]))
        return dedupe(space, chosen, obs, rng)


def _torus_distance(A: FloatArray, B: FloatArray) -> FloatArray:
    """Euclidean distance with wrap-around, broadcasting over leading axes.

    Plain maximin pushes points onto the cube's faces and corners (they are farthest from
    everything); on the torus no place is special, so the start covers the interior as well.
    """
    diff = np.abs(A - B)
    return np.asarray(np.sqrt((np.minimum(diff, 1.0 - diff) ** 2).sum(axis=-1)), dtype=np.float64)
