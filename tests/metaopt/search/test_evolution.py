from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metaopt._errors import SearchError
from metaopt.search import (
    EvolutionAlgorithm,
    EvolutionConfig,
    Observations,
    hypervolume_2d,
    is_known,
    make_algorithm,
    pareto_front,
)
from metaopt.search._evolution import _not_dominated_by_k
from metaopt.space import Space

MIXED = Space.from_dict(
    {"x": "uniform(-2, 2)", "n": "randint(0, 10)", "c": "choices(['a', 'b', 'c', 'd'])"}
)


def run(
    alg: Any,
    space: Space,
    f: Callable[[dict[str, Any]], list[float]],
    budget: int,
    seed: int,
    batch: int = 1,
) -> Observations:
    rng = np.random.default_rng(seed)
    m = len(f(space.from_unit(np.full(space.d, 0.5))))
    obs = Observations.empty(space.d, m)
    while obs.n < budget:
        U = alg.suggest(space, obs, rng, batch)
        Y = np.array([f(space.from_unit(u)) for u in U])
        obs = Observations(np.vstack([obs.X, U]), np.vstack([obs.Y, Y]), obs.pending, obs.failed)
    return obs


def sphere(p: dict[str, Any]) -> list[float]:
    return [sum((p[k] - 0.3) ** 2 for k in ("a", "b", "c"))]


def mixed(p: dict[str, Any]) -> list[float]:
    return [(p["x"] - 1) ** 2 + abs(p["n"] - 7) + (p["c"] != "c")]


def test_finds_optimum_of_sphere() -> None:
    space = Space.from_dict({k: "uniform(-1, 1)" for k in ("a", "b", "c")})
    best = [run(EvolutionAlgorithm(), space, sphere, 200, seed).Y.min() for seed in range(3)]
    assert max(best) < 5e-3


def test_finds_optimum_of_mixed_function() -> None:
    obs = run(EvolutionAlgorithm(), MIXED, mixed, 150, seed=0)
    p = MIXED.from_unit(obs.X[int(np.argmin(obs.Y[:, 0]))])
    assert p["n"] == 7 and p["c"] == "c" and abs(p["x"] - 1) < 0.1


def test_global_random_state_untouched_and_not_used() -> None:
    obs = run(EvolutionAlgorithm(), MIXED, mixed, 20, seed=4)
    results = []
    for g in (1, 2):
        random.seed(g)
        before = random.getstate()
        out = EvolutionAlgorithm().suggest(MIXED, obs, np.random.default_rng(9), 5)
        assert random.getstate() == before
        results.append(out)
    assert np.array_equal(results[0], results[1])


def test_calls_overlapping_in_two_threads_leave_random_alone_and_draw_as_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each call restored the global state it saw on entry: overlapping, the one leaving last
    # put back the other's seeded state, and each drew from a stream the other reseeded.
    obs = run(EvolutionAlgorithm(), MIXED, mixed, 20, seed=4)
    real = EvolutionAlgorithm._offspring
    inside = threading.Barrier(2, timeout=0.5)

    def offspring(self: EvolutionAlgorithm, *args: Any) -> Any:
        first = real(self, *args[:-1], 1)  # a draw, then wait for the other call to come in
        with contextlib.suppress(threading.BrokenBarrierError):
            inside.wait()  # (serialised calls never meet: the barrier times out)
        if threading.current_thread().name == "second":
            time.sleep(0.2)  # the call that came in second leaves last
        return np.vstack([first, real(self, *args[:-1], args[-1] - 1)])

    monkeypatch.setattr(EvolutionAlgorithm, "_offspring", offspring)
    random.seed(12345)
    before = random.getstate()
    out: list[Any] = [None, None]

    def call(i: int) -> None:
        out[i] = EvolutionAlgorithm().suggest(MIXED, obs, np.random.default_rng(9), 3)

    threads = [
        threading.Thread(target=call, args=(i,), name=n) for i, n in enumerate(("first", "second"))
    ]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(10)
    assert random.getstate() == before
    assert np.array_equal(out[0], out[1])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 3), st.sampled_from(["normal", "ties", "front"]))
def test_parents_of_several_objectives_are_those_of_the_whole_history_sorted(
    seed: int, m: int, shape: str
) -> None:
    # Sorting the whole history into fronts cost its square (10,000 trials of 2 objectives:
    # 5 s a suggestion); the rows dominated k times are left out first, changing nothing.
    rng = np.random.default_rng(seed)
    n = int(rng.integers(61, 400))
    Y = rng.normal(size=(n, m))
    if shape == "ties":
        Y = np.round(Y, 1)
    elif shape == "front":  # (most rows on one front: little to leave out)
        Y[:, 1] = -Y[:, 0] + rng.normal(scale=0.01, size=n)
    X = rng.random((n, 3))
    alg = EvolutionAlgorithm()
    got = alg.parents(X, Y)
    k = len(got[0])
    everything = _parents_sorting_everything(alg, X, Y)
    assert np.array_equal(got[0], everything[0]) and np.array_equal(got[1], everything[1])
    assert k == 15  # (5 d)


def test_a_row_that_k_minus_1_others_dominate_may_still_be_a_parent() -> None:
    # 14 rows dominate p, all on the first front: p is the 15th parent (5 d for d = 3). Left
    # out with them at k - 1 dominators (or counted as its own dominator), it was not.
    front = [(float(i), 13.0 - i) for i in range(14)]
    filler = [(100.0 + j, 100.0 + j) for j in range(200)]  # (dominated by all: left out)
    Y = np.array([*front, (20.0, 20.0), *filler])
    X = np.random.default_rng(0).random((len(Y), 3))
    parents, keys = EvolutionAlgorithm().parents(X, Y)
    assert len(parents) == 15 and np.array_equal(parents[-1], X[14]) and keys[-1][0] == 1.0
    assert _not_dominated_by_k(Y, 15).sum() == 15


def test_parents_of_a_long_history_sort_few_of_its_rows() -> None:
    Y = np.random.default_rng(0).normal(size=(20_000, 2))
    assert _not_dominated_by_k(Y, 50).sum() < 1_000


def _parents_sorting_everything(alg: EvolutionAlgorithm, X: Any, Y: Any) -> Any:
    import metaopt.search._evolution as evolution

    real = evolution._not_dominated_by_k
    evolution._not_dominated_by_k = lambda Y, k: np.ones(len(Y), dtype=bool)
    try:
        return alg.parents(X, Y)
    finally:
        evolution._not_dominated_by_k = real


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 8))
def test_suggestions_valid_distinct_and_avoid_pending(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    X = MIXED.sample(rng, 30)
    Y = rng.normal(size=(30, 1))
    obs = Observations(X, Y, MIXED.sample(rng, 10), MIXED.sample(rng, 3))
    out = EvolutionAlgorithm().suggest(MIXED, obs, np.random.default_rng(seed), n)
    assert out.shape == (n, 3) and np.array_equal(MIXED.round_unit(out), out)
    assert not is_known(out, np.vstack([obs.X, obs.pending, obs.failed])).any()
    assert len({tuple(u) for u in out}) == n
    again = EvolutionAlgorithm().suggest(MIXED, obs, np.random.default_rng(seed), n)
    assert np.array_equal(out, again)


def test_small_history_uses_space_filling_start() -> None:
    obs = Observations(MIXED.sample(np.random.default_rng(0), 3), np.zeros((3, 1)))
    alg = EvolutionAlgorithm(EvolutionConfig(min_history=8))
    out = alg.suggest(MIXED, obs, np.random.default_rng(0), 4)
    assert out.shape == (4, 3) and not is_known(out, obs.X).any()


def test_exhausted_space_raises() -> None:
    space = Space.from_dict({"i": "randint(0, 3)"})
    grid = space.grid()
    obs = Observations(np.vstack([grid] * 3), np.arange(9.0)[:, None])
    with pytest.raises(SearchError, match="already tried"):
        EvolutionAlgorithm(EvolutionConfig(min_history=2)).suggest(
            space, obs, np.random.default_rng(0)
        )


def zdt1(p: dict[str, Any]) -> list[float]:
    f1 = p["x1"]
    g = 1 + 9 * (p["x2"] + p["x3"]) / 2
    return [f1, g * (1 - np.sqrt(f1 / g))]


@pytest.mark.slow
def test_nsga2_front_approaches_known_front() -> None:
    space = Space.from_dict({k: "uniform(0, 1)" for k in ("x1", "x2", "x3")})
    f1 = np.linspace(0, 1, 2001)
    true_hv = hypervolume_2d(np.column_stack([f1, 1 - np.sqrt(f1)]), (1.1, 1.1))
    for seed in range(3):
        obs = run(make_algorithm("evolution"), space, zdt1, 400, seed=seed, batch=8)
        front = obs.Y[pareto_front(obs.Y)]
        assert hypervolume_2d(front, (1.1, 1.1)) > 0.93 * true_hv
        # Points on the front are close to the true front f2 = 1 - sqrt(f1).
        gap = front[:, 1] - (1 - np.sqrt(front[:, 0]))
        assert np.median(gap) < 0.05
