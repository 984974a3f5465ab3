"""Evolution rules a mutation audit of metaopt/search/_evolution.py found unpinned by the other
tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from metaopt.search import EvolutionAlgorithm, EvolutionConfig, Observations
from metaopt.space import Space
from tests.metaopt.search.test_evolution import MIXED

REAL = Space.from_dict({k: "uniform(-1, 1)" for k in ("a", "b", "c")})


class _StartSpy:
    """Stands in for the space-filling start: counts its calls, answers with prior samples."""

    name = "spy"

    def __init__(self) -> None:
        self.calls = 0

    def suggest(self, space: Space, obs: Observations, rng: np.random.Generator, n: int = 1) -> Any:
        self.calls += 1
        return space.sample(rng, n)


def _spied(cfg: EvolutionConfig | None = None) -> tuple[EvolutionAlgorithm, _StartSpy]:
    alg = EvolutionAlgorithm(cfg)
    spy = _StartSpy()
    alg._start = spy  # type: ignore[assignment]
    return alg, spy


def test_evolution_takes_over_at_exactly_min_history_finite_results() -> None:
    """Pins the switch point: min_history (8) finite completed trials breed offspring, one fewer
    (or a ninth trial whose value is NaN) still gets the space-filling start."""
    rng = np.random.default_rng(0)
    X = REAL.sample(rng, 9)
    Y = rng.normal(size=(9, 1))
    alg, spy = _spied()
    alg.suggest(REAL, Observations(X[:8], Y[:8]), np.random.default_rng(1), 2)
    assert spy.calls == 0
    Y[8, 0] = np.nan
    alg.suggest(REAL, Observations(np.vstack([X[:7], X[8:]]), np.vstack([Y[:7], Y[8:]])), rng, 2)
    assert spy.calls == 1


def test_a_result_with_one_non_finite_objective_is_not_a_completed_one() -> None:
    """Pins 'finite in every objective': with several objectives a NaN in one of them keeps the
    trial out of the history count and out of the parents."""
    rng = np.random.default_rng(1)
    X = REAL.sample(rng, 12)
    Y = rng.random((12, 2))
    Y[7:, 1] = np.nan  # 7 fully finite results, 5 with one NaN
    alg, spy = _spied()
    alg.suggest(REAL, Observations(X, Y), np.random.default_rng(2), 1)
    assert spy.calls == 1


def test_non_finite_results_never_become_parents() -> None:
    """Pins the filter in front of the selection: NaN-valued trials are not bred from."""
    rng = np.random.default_rng(2)
    X = REAL.sample(rng, 15)
    Y = rng.normal(size=(15, 1))
    Y[10:] = np.nan
    alg = EvolutionAlgorithm()
    seen: list[np.ndarray] = []
    real_parents = alg.parents

    def parents(X: np.ndarray, Y: np.ndarray) -> Any:
        seen.append(Y)
        return real_parents(X, Y)

    alg.parents = parents  # type: ignore[method-assign]
    alg.suggest(REAL, Observations(X, Y), np.random.default_rng(3), 2)
    assert len(seen) == 1 and seen[0].shape == (10, 1) and np.isfinite(seen[0]).all()


def test_two_finite_results_are_needed_whatever_min_history_says() -> None:
    """Pins the floor max(2, min_history): a single result cannot be bred from."""
    rng = np.random.default_rng(3)
    obs = Observations(REAL.sample(rng, 1), np.zeros((1, 1)))
    for min_history in (0, 1):
        alg, spy = _spied(EvolutionConfig(min_history=min_history))
        alg.suggest(REAL, obs, np.random.default_rng(4), 1)
        assert spy.calls == 1


def test_different_generators_breed_different_offspring() -> None:
    """Pins that DEAP's global stream is seeded from the passed generator: peers asking from
    one history with their own streams must not all propose the same children."""
    rng = np.random.default_rng(4)
    obs = Observations(MIXED.sample(rng, 30), rng.normal(size=(30, 1)))
    outs = {
        tuple(EvolutionAlgorithm().suggest(MIXED, obs, np.random.default_rng(s), 1)[0])
        for s in range(6)
    }
    assert len(outs) >= 5


def test_parents_are_ranked_by_front_then_by_isolation() -> None:
    """Pins the NSGA-II parent keys (rank, -crowding): the first front before the second, and
    within a cut front the most isolated points (its extremes first) are the ones kept."""
    Y = np.array(
        [
            [0.0, 4.0],  # front 0, extreme
            [1.0, 3.0],  # front 0, crowded (beside the next)
            [1.1, 2.9],  # front 0, crowded
            [4.0, 0.0],  # front 0, extreme
            [2.0, 2.0],  # front 0, isolated
            [5.0, 5.0],  # front 1
        ]
    )
    X = np.arange(12.0).reshape(6, 2) / 12
    P, keys = EvolutionAlgorithm(EvolutionConfig(population=4)).parents(X, Y)
    rows = [round(float(p[0]) * 6) for p in P]
    # Crowding in front 0: rows 0 and 3 inf, row 4 1.45, row 1 0.55, row 2 0.5.
    assert rows == [0, 3, 4, 1]
    assert keys[:, 0].tolist() == [0.0] * 4
    assert np.isneginf(keys[:2, 1]).all()
    np.testing.assert_allclose(keys[2:, 1], [-1.45, -0.55])
    P, keys = EvolutionAlgorithm(EvolutionConfig(population=6)).parents(X, Y)
    assert keys[:, 0].tolist() == [0.0] * 5 + [1.0]
    assert round(float(P[-1][0]) * 6) == 5


def test_categoricals_are_resampled_so_offspring_reach_an_unvisited_choice() -> None:
    """Pins the 1/d resampling of categorical coordinates: parents that all share one choice
    still produce offspring with the others (SBX and mutation rarely leave a cell)."""
    space = Space.from_dict({"c": "choices(['a', 'b', 'c', 'd'])", "x": "uniform(0, 1)"})
    rng = np.random.default_rng(5)
    X = np.column_stack([np.full(20, 0.125), rng.random(20)])
    obs = Observations(X, rng.normal(size=(20, 1)))
    choices = set()
    for seed in range(10):
        out = EvolutionAlgorithm().suggest(space, obs, np.random.default_rng(seed), 4)
        choices |= {space.from_unit(u)["c"] for u in out}
    assert choices >= {"c", "d"}
