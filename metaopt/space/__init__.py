"""Search spaces: Oríon-style priors and their map to the unit cube."""

from __future__ import annotations

from metaopt.space._prior import PRIOR_NAMES, Dimension, parse_prior
from metaopt.space._space import Space

__all__ = ["PRIOR_NAMES", "Dimension", "Space", "parse_prior"]
