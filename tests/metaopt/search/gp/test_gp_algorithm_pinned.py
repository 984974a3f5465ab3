"""Acquisition-search rules a mutation audit of metaopt/search/gp/_optimize.py found unpinned by
the other tests: the returned point is rounded, new and the best one found; the discrete moves."""

from __future__ import annotations

import numpy as np
import pytest

from metaopt.search import Observations, is_known
from metaopt.search.gp import GPAlgorithm, GPConfig
from metaopt.search.gp._optimize import AcqConfig, _discrete_climb, _neighbours, maximise
from metaopt.space import Space

SPACE = Space.from_dict(
    {"c": "choices(['a', 'b', 'c', 'd'])", "n": "randint(0, 10)", "x": "uniform(0, 1)"}
)
CAT_ONLY = Space.from_dict({"a": "choices(['p', 'q', 'r'])", "b": "choices(['s', 't'])"})
CFG = AcqConfig(candidates=256, local_candidates=64)


class Bowl:
    """A known acquisition: -(squared distance to a centre), its optimum off the cell centres of
    the integer coordinate so that an unrounded point would score better than any rounded one."""

    def __init__(self, centre: list[float]) -> None:
        self.centre = np.array(centre)

    def __call__(self, Xq: np.ndarray) -> np.ndarray:
        return np.asarray(-(((Xq - self.centre) ** 2).sum(axis=1)), dtype=np.float64)

    def with_grad(self, Xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self(Xq), -2.0 * (Xq - self.centre)


def _best_rounded(space: Space, acq: Bowl) -> np.ndarray:
    return np.asarray(space.round_unit(acq.centre[None, :])[0], dtype=np.float64)


def test_the_acquisition_optimum_is_returned_rounded() -> None:
    """Pins that the searched point is snapped (ints and choices at cell centres) before it is
    scored and returned: the optimiser must never hand out a value between two integers."""
    acq = Bowl([0.62, 0.42, 0.37])
    for seed in range(3):
        u = maximise(
            acq, SPACE, np.zeros((0, 3)), np.zeros((0, 3)), np.random.default_rng(seed), CFG
        )
        assert u is not None and np.array_equal(SPACE.round_unit(u), u[None, :])
        p = SPACE.from_unit(u)
        assert p["c"] == "c" and p["n"] == 4 and abs(p["x"] - 0.37) < 1e-4


def test_the_best_free_point_is_returned_and_a_known_one_never() -> None:
    """Pins the final choice: the highest-scoring candidate not in ``known`` (here the rounded
    optimum is known, so the answer is a point beside it, never the optimum itself)."""
    acq = Bowl([0.62, 0.42, 0.37])
    best = _best_rounded(SPACE, acq)
    best[2] = 0.37
    known = best[None, :]
    u = maximise(acq, SPACE, known, known, np.random.default_rng(0), CFG)
    assert u is not None and not is_known(u[None, :], known).any()
    p = SPACE.from_unit(u)
    assert p["c"] == "c" and p["n"] == 4 and abs(p["x"] - 0.37) < 1e-2


def test_maximise_says_none_when_every_point_is_known() -> None:
    """Pins the None answer of an exhausted space (the caller then falls back to dedupe), rather
    than a known point."""
    space = Space.from_dict({"i": "randint(0, 3)"})
    known = space.grid()
    assert maximise(Bowl([0.5]), space, known, known, np.random.default_rng(0), CFG) is None


def test_an_all_categorical_space_is_searched_without_a_gradient_step() -> None:
    """Pins the skip of L-BFGS-B when no coordinate is continuous: the best choice is returned."""
    acq = Bowl([0.5, 0.75])
    u = maximise(acq, CAT_ONLY, np.zeros((0, 2)), np.zeros((0, 2)), np.random.default_rng(0), CFG)
    assert u is not None and CAT_ONLY.from_unit(u) == {"a": "q", "b": "t"}
    rng = np.random.default_rng(0)
    X = CAT_ONLY.grid()[:3]
    Y = rng.normal(size=(3, 1))
    alg = GPAlgorithm(GPConfig(n_init=2))
    out = alg.suggest(CAT_ONLY, Observations(X, Y), np.random.default_rng(1), 2)
    assert out.shape == (2, 2) and not is_known(out, X).any()


def test_neighbours_step_each_integer_both_ways_and_each_choice_to_every_other() -> None:
    """Pins the discrete moves: an integer to its two neighbours (one at a bound), a categorical
    to each of its other choices, and never the point itself."""
    u = SPACE.round_unit(SPACE.to_unit({"c": "b", "n": 4, "x": 0.3})[None, :])[0]
    got = sorted((p["c"], p["n"]) for p in (SPACE.from_unit(v) for v in _neighbours(SPACE, u)))
    assert got == [("a", 4), ("b", 3), ("b", 5), ("c", 4), ("d", 4)]
    top = SPACE.round_unit(SPACE.to_unit({"c": "d", "n": 9, "x": 0.3})[None, :])[0]
    nb = _neighbours(SPACE, top)
    assert not is_known(nb, top[None, :]).any()
    got = sorted((p["c"], p["n"]) for p in (SPACE.from_unit(v) for v in nb))
    assert got == [("a", 9), ("b", 9), ("c", 9), ("d", 8)]


@pytest.mark.parametrize("k", [65, 66, 5000])
def test_a_choice_of_many_values_tries_an_even_spread_of_them_not_all(k: int) -> None:
    """Every neighbour is scored through a one-hot embedding as wide as the choices: all k - 1
    of them cost k squared (5,000 choices: 7-11 s a suggestion at 1,000 observations, and
    20,000 over 3 GB). At most 64, spread over the choices and moving with the point."""
    space = Space.from_dict({"c": f"choices({list(range(k))!r})"})
    for at in (0, 1, k // 2, k - 1):
        u = space.round_unit(space.to_unit({"c": at})[None, :])[0]
        tried = [space.from_unit(v)["c"] for v in _neighbours(space, u)]
        expected = k - 1 if k - 1 <= 64 else 64
        assert len(tried) == len(set(tried)) == expected and at not in tried
        gaps = np.diff(sorted((c - at) % k for c in tried))
        assert gaps.max() <= -(-(k - 1) // 64) + 1  # (an even spread: no long stretch left out)


def test_the_discrete_climb_walks_an_integer_down_to_its_optimum() -> None:
    """Pins the hill-climb: from (a, 7) the best single move a pass, the choice first, then n down
    one value a pass to the optimum (c, 4) within the 4 passes; at the optimum it stays."""
    acq = Bowl([0.625, 0.45, 0.3])
    start = SPACE.round_unit(SPACE.to_unit({"c": "a", "n": 7, "x": 0.3})[None, :])
    out = _discrete_climb(acq, SPACE, start, AcqConfig())
    assert SPACE.from_unit(out[0]) == {"c": "c", "n": 4, "x": 0.3}
    at_top = SPACE.round_unit(SPACE.to_unit({"c": "c", "n": 4, "x": 0.3})[None, :])
    np.testing.assert_array_equal(_discrete_climb(acq, SPACE, at_top, AcqConfig()), at_top)


def test_the_discrete_moves_finish_a_combination_of_choices_the_candidates_missed() -> None:
    """Pins that maximise climbs from its best starts: in 12 binary choices (4,096 points) the
    256 candidates rarely hold the optimum, one-choice moves from the best of them reach it."""
    space = Space.from_dict({f"c{i:02d}": "choices(['a', 'b'])" for i in range(12)})
    target = np.array([0.25 if i % 3 else 0.75 for i in range(12)])
    acq = Bowl(list(target))
    for seed in range(3):
        u = maximise(
            acq, space, np.zeros((0, 12)), np.zeros((0, 12)), np.random.default_rng(seed), CFG
        )
        np.testing.assert_array_equal(u, target)
