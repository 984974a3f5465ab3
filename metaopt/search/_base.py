"""The one small interface every search algorithm implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from metaopt.space import Space

__all__ = ["Algorithm", "Observations"]

FloatArray = npt.NDArray[np.float64]


def _empty(d: int) -> FloatArray:
    return np.zeros((0, d), dtype=np.float64)


@dataclass(frozen=True)
class Observations:
    """What a peer knows of one experiment, in the space's unit cube.

    X: (n, d) points of completed trials; Y: (n, m) their objective values, every objective
    already turned into one to minimise (the caller negates maximised ones). pending: (p, d)
    points of trials running or frozen on any peer (the GP treats them as fantasies, evolution
    as occupied). failed: (f, d) points that crashed; never suggested again.
    """

    X: FloatArray
    Y: FloatArray
    pending: FloatArray = field(default_factory=lambda: _empty(0))
    failed: FloatArray = field(default_factory=lambda: _empty(0))

    @classmethod
    def empty(cls, d: int, m: int = 1) -> Observations:
        """No trials yet in a d-dimensional space with m objectives."""
        return cls(_empty(d), np.zeros((0, m)), _empty(d), _empty(d))

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def m(self) -> int:
        return int(self.Y.shape[1])


class Algorithm(Protocol):
    """Suggests new points from the replicated history; pure apart from warm-start caches."""

    name: str

    def suggest(
        self, space: Space, obs: Observations, rng: np.random.Generator, n: int = 1
    ) -> FloatArray:
        """Return (n, d) unit-cube points, snapped to representable values by space.round_unit.

        Deterministic for equal (space, obs, rng state, call history). Never returns a point
        equal (after rounding) to one in obs.X, obs.pending or obs.failed when any other exists.
        """
        ...
