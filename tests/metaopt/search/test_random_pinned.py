"""Start rules a mutation audit of metaopt/search/_random.py found unpinned by the other tests."""

from __future__ import annotations

import numpy as np
import pytest

from metaopt._errors import SearchError
from metaopt.search import Observations, SobolStart
from metaopt.space import Space


def test_the_start_works_in_a_space_without_search_dimensions() -> None:
    """Pins the d = 0 branch: a script whose every parameter is fixed (or only a fidelity)
    still gets its one point, not an error from an empty Sobol engine."""
    space = Space.from_dict({})
    out = SobolStart().suggest(space, Observations.empty(0), np.random.default_rng(0), 1)
    assert out.shape == (1, 0)


def test_a_space_without_search_dimensions_has_one_point_and_then_none() -> None:
    """Its one point tried, the start says every point is tried, as in any exhausted space
    (it raised numpy's "zero-size array to reduction operation maximum")."""
    space = Space.from_dict({})
    tried = Observations(np.zeros((1, 0)), np.zeros((1, 1)))
    with pytest.raises(SearchError, match="tried"):
        SobolStart().suggest(space, tried, np.random.default_rng(0), 1)


def test_each_generator_gives_its_own_start() -> None:
    """Pins that the Sobol scramble is seeded from the passed generator: peers (or studies)
    with different streams and nothing known must not all start at one shared point."""
    space = Space.from_dict({"x": "uniform(0, 1)", "y": "uniform(0, 1)"})
    firsts = {
        tuple(SobolStart().suggest(space, Observations.empty(2), np.random.default_rng(s), 1)[0])
        for s in range(8)
    }
    assert len(firsts) == 8


def test_a_batch_from_the_start_follows_a_weighted_choices_weights() -> None:
    """Pins that weighted categoricals stay out of the batch's own maximin distances too: in a
    batch of 8, a choice of weight 0.9 is taken about 9 times in 10, not every other time."""
    space = Space.from_dict({"act": "choices({'relu': 9, 'tanh': 1})", "x": "uniform(0, 1)"})
    picks = []
    for seed in range(20):
        batch = SobolStart().suggest(space, Observations.empty(2), np.random.default_rng(seed), 8)
        picks += [space.from_unit(u)["act"] for u in batch]
    assert 0.8 <= picks.count("relu") / len(picks) <= 0.97


def test_a_start_with_only_weighted_choices_never_repeats_a_known_point() -> None:
    """Pins the dedupe on the all-weighted branch: prior draws that land on a completed,
    pending or failed point are replaced (here the one free point is the only answer)."""
    space = Space.from_dict({"a": "choices({'p': 9, 'q': 1})", "b": "choices({'r': 1, 's': 3})"})
    grid = space.grid()
    obs = Observations(grid[:1], np.zeros((1, 1)), grid[1:2], grid[2:3])
    for seed in range(10):
        out = SobolStart().suggest(space, obs, np.random.default_rng(seed), 1)
        np.testing.assert_array_equal(out, grid[3:4])


def test_the_start_refuses_more_points_than_a_finite_space_has_left() -> None:
    """Pins the dedupe of the maximin branch: with one free point left and two asked, the start
    says the space is exhausted instead of handing back a known point twice."""
    space = Space.from_dict({"i": "randint(0, 2)", "c": "choices(['a', 'b'])"})
    grid = space.grid()
    obs = Observations(grid[:2], np.zeros((2, 1)), grid[2:3])
    out = SobolStart().suggest(space, obs, np.random.default_rng(0), 1)
    np.testing.assert_array_equal(out, grid[3:4])
    with pytest.raises(SearchError, match="already tried"):
        SobolStart().suggest(space, obs, np.random.default_rng(0), 2)


def test_a_known_points_weighted_choice_does_not_move_the_start_away_from_it() -> None:
    """Pins that known points' weighted categoricals are left out of the distances as the
    candidates' are: the next point fills the gap between the known ones along x, whatever
    choices those trials took (with three choices their cells lie at unequal torus distances)."""
    space = Space.from_dict({"c": "choices({'p': 1, 'q': 2, 'r': 3})", "x": "uniform(0, 1)"})
    known = np.array([[0.5, 0.2], [1 / 6, 0.7]])
    for seed in range(10):
        obs = Observations(known, np.zeros((2, 1)))
        v = SobolStart().suggest(space, obs, np.random.default_rng(seed), 1)[0]
        gap = np.abs(known[:, 1] - v[1])
        assert np.minimum(gap, 1 - gap).min() > 0.2
