"""Search spaces: Oríon-style priors and their map to the unit cube."""

from __future__ import annotations

from metaopt.space._prior import Dimension, parse_prior
from metaopt.space._space import Space

__all__ = ["Dimension", "Space", "parse_prior"]
