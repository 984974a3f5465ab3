"""Observations (metaopt/search/_base.py): what a mutation audit found unpinned by the other
tests; an algorithm written against the protocol relies on these shapes and on immutability."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from metaopt.search import Observations


@pytest.mark.parametrize(("d", "m"), [(3, 1), (2, 4), (0, 2)])
def test_empty_observations_carry_the_space_s_width_in_every_part(d: int, m: int) -> None:
    """Pins Observations.empty: X, pending and failed are (0, d), Y is (0, m). A custom
    algorithm stacking obs.failed (documented as (f, d)) onto its candidates would fail on a
    (0, 0) array, and n/m would misreport an empty experiment."""
    obs = Observations.empty(d, m)
    assert obs.X.shape == (0, d)
    assert obs.Y.shape == (0, m)
    assert obs.pending.shape == (0, d)
    assert obs.failed.shape == (0, d)
    assert (obs.n, obs.m) == (0, m)
    assert np.vstack([obs.X, obs.pending, obs.failed, np.zeros((1, d))]).shape == (1, d)


def test_observations_are_immutable() -> None:
    """Pins frozen=True: one Observations is handed to several algorithms (the portfolio's
    parts, each batch point); an algorithm rebinding obs.pending would change what the next
    one sees."""
    obs = Observations.empty(2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        obs.pending = np.ones((1, 2))  # type: ignore[misc]
