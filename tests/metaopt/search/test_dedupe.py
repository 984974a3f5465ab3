from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metaopt._errors import SearchError
from metaopt.search import DedupeConfig, Observations, dedupe, is_known, known_points
from metaopt.space import Space

MIXED = Space.from_dict({"x": "uniform(0, 1)", "n": "randint(0, 3)", "c": "choices(['a', 'b'])"})
LINE = Space.from_dict({"x": "uniform(0, 1)"})


def test_is_known_tolerates_round_off_only() -> None:
    known = np.array([[0.1, 0.2], [0.5, 0.5]])
    U = np.array([[0.1 + 1e-12, 0.2], [0.1 + 1e-6, 0.2], [0.5, 0.5]])
    assert is_known(U, known).tolist() == [True, False, True]
    assert is_known(U, np.zeros((0, 2))).tolist() == [False, False, False]
    # A space of no dimension has one point: known once anything is.
    assert is_known(np.zeros((2, 0)), np.zeros((1, 0))).tolist() == [True, True]
    assert is_known(np.zeros((2, 0)), np.zeros((0, 0))).tolist() == [False, False]


def test_known_points_stacks_all_three() -> None:
    obs = Observations(np.ones((2, 1)), np.ones((2, 1)), np.zeros((1, 1)), np.full((1, 1), 0.5))
    assert known_points(obs).shape == (4, 1)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 10))
def test_replaces_known_and_repeated_points(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    known = MIXED.sample(rng, 8)
    cand = np.vstack([known[: min(n, 8)], known[:1]])
    out = dedupe(MIXED, cand, known, rng)
    assert out.shape == cand.shape
    assert not is_known(out, known).any()
    assert len({tuple(r) for r in out}) == out.shape[0]
    assert np.array_equal(MIXED.round_unit(out), out)


def test_free_points_are_kept_unchanged() -> None:
    rng = np.random.default_rng(0)
    cand = MIXED.sample(rng, 5)
    assert np.array_equal(dedupe(MIXED, cand, np.zeros((0, 3)), rng), cand)


def test_finds_the_last_free_point_and_then_refuses() -> None:
    s = Space.from_dict({"n": "randint(0, 5)", "c": "choices(['a', 'b', 'c'])"})
    grid = s.grid()
    rng = np.random.default_rng(0)
    last = grid[7]
    known = np.delete(grid, 7, axis=0)
    out = dedupe(s, known[:1], known, rng)
    np.testing.assert_allclose(out[0], last)
    with pytest.raises(SearchError, match="already tried or pending"):
        dedupe(s, grid[:1], grid, rng)


def test_observations_as_known() -> None:
    rng = np.random.default_rng(3)
    s = Space.from_dict({"n": "randint(0, 4)"})
    obs = Observations(s.grid()[:1], np.zeros((1, 1)), s.grid()[1:2], s.grid()[2:3])
    out = dedupe(s, s.grid()[:1], obs, rng)
    np.testing.assert_allclose(out, s.grid()[3:4])
    with pytest.raises(SearchError):
        dedupe(s, s.grid()[:2], obs, rng)


def test_a_free_point_repeated_within_the_batch_is_kept_once() -> None:
    # Only repeats of known points were tested: a batch of one free point thrice would run
    # the same trial three times.
    out = dedupe(LINE, np.array([[0.3], [0.3], [0.3]]), np.zeros((0, 1)), np.random.default_rng(0))
    assert out[0, 0] == 0.3
    assert len({tuple(r) for r in out}) == 3


def test_with_no_nudges_a_duplicate_is_resampled_from_the_prior() -> None:
    # (else it came back unchanged: a known point run again)
    known = np.array([[0.5]])
    out = dedupe(LINE, known.copy(), known, np.random.default_rng(0), DedupeConfig(nudges=0))
    assert not is_known(out, known).any()


def test_known_points_are_compared_after_rounding() -> None:
    # 0.31 and 0.33 are the same cell of randint(0, 10) (both the value 3): compared unrounded,
    # the point of a trial already run would be suggested again.
    space = Space.from_dict({"n": "randint(0, 10)"})
    known = np.array([[0.31]])
    out = dedupe(space, np.array([[0.33]]), known, np.random.default_rng(0))
    assert not is_known(out, space.round_unit(known)).any()
