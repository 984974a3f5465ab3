from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metaopt._errors import SearchError
from metaopt.search import Observations, RandomAlgorithm, SobolStart, is_known, make_algorithm
from metaopt.space import Space

SPACE = Space.from_dict(
    {
        "lr": "loguniform(1e-4, 1)",
        "n": "randint(2, 9)",
        "act": "choices(['relu', 'tanh', 'gelu'])",
        "w": "normal(0, 1)",
    }
)


def run(
    alg: Any, space: Space, f: Callable[[dict[str, Any]], float], budget: int, seed: int
) -> Observations:
    rng = np.random.default_rng(seed)
    obs = Observations.empty(space.d)
    for _ in range(budget):
        u = alg.suggest(space, obs, rng, 1)
        y = f(space.from_unit(u[0]))
        obs = Observations(
            np.vstack([obs.X, u]), np.vstack([obs.Y, [[y]]]), obs.pending, obs.failed
        )
    return obs


def _valid(space: Space, U: np.ndarray) -> None:
    assert np.array_equal(space.round_unit(U), U)
    for u in U:
        p = space.from_unit(u)
        np.testing.assert_allclose(space.to_unit(p), u, atol=1e-9)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6))
def test_suggestions_valid_and_reproducible(seed: int, n: int) -> None:
    for alg in (RandomAlgorithm(), SobolStart()):
        a = alg.suggest(SPACE, Observations.empty(SPACE.d), np.random.default_rng(seed), n)
        b = alg.suggest(SPACE, Observations.empty(SPACE.d), np.random.default_rng(seed), n)
        assert a.shape == (n, SPACE.d) and np.array_equal(a, b)
        _valid(SPACE, a)


def test_random_exhausts_a_finite_space_and_finds_its_optimum() -> None:
    space = Space.from_dict({"i": "randint(0, 20)", "c": "choices(['a', 'b', 'c'])"})
    target = {"i": 13, "c": "b"}

    def f(p: dict[str, Any]) -> float:
        return float(abs(p["i"] - target["i"]) + (p["c"] != target["c"]))

    obs = run(RandomAlgorithm(), space, f, 60, seed=1)
    assert obs.Y.min() == 0.0
    assert len({tuple(x) for x in obs.X}) == 60


def test_pending_and_failed_never_repeated() -> None:
    space = Space.from_dict({"i": "randint(0, 6)"})
    grid = space.grid()
    obs = Observations(grid[:2], np.zeros((2, 1)), grid[2:4], grid[4:5])
    for seed in range(20):
        out = RandomAlgorithm().suggest(space, obs, np.random.default_rng(seed), 1)
        np.testing.assert_allclose(out, grid[5:6])


def test_sobol_fills_space_and_avoids_pending() -> None:
    space = Space.from_dict({"x": "uniform(0, 1)", "y": "uniform(0, 1)"})
    rng = np.random.default_rng(0)
    U = SobolStart().suggest(space, Observations.empty(2), rng, 16)
    dist = np.sqrt(((U[:, None] - U[None]) ** 2).sum(-1)) + np.eye(16)
    rand = space.sample(np.random.default_rng(0), 16)
    rdist = np.sqrt(((rand[:, None] - rand[None]) ** 2).sum(-1)) + np.eye(16)
    assert dist.min() > 0.12 > rdist.min()
    pending = np.array([[0.5, 0.5]])
    obs = Observations(np.zeros((0, 2)), np.zeros((0, 1)), pending, np.zeros((0, 2)))
    v = SobolStart().suggest(space, obs, rng, 1)
    assert np.linalg.norm(v - pending) > 0.4
    assert not is_known(v, pending).any()


def test_make_algorithm_names() -> None:
    assert make_algorithm("random").name == "random"
    assert make_algorithm("sobol").name == "sobol"
    assert make_algorithm("evolution").name == "evolution"
    assert make_algorithm("auto").name == "auto"
    with pytest.raises(SearchError, match="unknown algorithm 'tpe'"):
        make_algorithm("tpe")


def test_start_keeps_away_from_every_peers_trials() -> None:
    # One result and seven other peers' pending trials: the start's next point is in a gap
    # (torus distance; a uniform draw lands ~0.16 from the nearest one, often far less).
    space = Space.from_dict({"x": "uniform(0, 1)", "y": "uniform(0, 1)"})
    for seed in range(20):
        rng = np.random.default_rng(seed)
        done, pending = rng.random((1, 2)), rng.random((7, 2))
        obs = Observations(done, np.zeros((1, 1)), pending, np.zeros((0, 2)))
        v = SobolStart().suggest(space, obs, rng, 1)
        gap = np.abs(np.vstack([done, pending]) - v)
        assert np.sqrt((np.minimum(gap, 1 - gap) ** 2).sum(axis=1)).min() > 0.25


def test_the_start_takes_weighted_choices_about_as_often_as_their_weights() -> None:
    # choices({'relu': 0.9, 'tanh': 0.1}) started about half relu, half tanh: maximin gave each
    # choice its turn, and the weights shaped random search alone.
    space = Space.from_dict({"act": "choices({'relu': 9, 'tanh': 1})", "x": "uniform(0, 1)"})
    picks = []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        obs = Observations.empty(space.d)
        for _ in range(5):  # one at a time, each earlier point pending, as peers ask
            v = SobolStart().suggest(space, obs, rng, 1)
            obs = Observations(obs.X, obs.Y, np.vstack([obs.pending, v]), obs.failed)
            picks.append(space.from_unit(v[0])["act"])
    assert 0.8 <= picks.count("relu") / len(picks) <= 0.97
    # Unweighted, the choices alternate as before: maximin spreads them.
    space = Space.from_dict({"act": "choices(['relu', 'tanh'])", "x": "uniform(0, 1)"})
    first_two = [
        space.from_unit(p)["act"] for p in SobolStart().suggest(space, Observations.empty(2),
                                                                np.random.default_rng(0), 2)
    ]  # fmt: skip
    assert sorted(first_two) == ["relu", "tanh"]
    # Only weighted choices: a batch was one candidate n times, then nudged apart at random.
    space = Space.from_dict({"a": "choices({'p': 9, 'q': 1})", "b": "choices({'r': 1, 's': 3})"})
    rare = 0
    for seed in range(200):
        batch = SobolStart().suggest(space, Observations.empty(2), np.random.default_rng(seed), 2)
        rare += sum(space.from_unit(u) == {"a": "q", "b": "r"} for u in batch)
    assert rare / 400 < 0.06  # the prior gives (q, r) 0.025


def test_points_in_the_priors_cdf_space_land_in_cells_as_wide_as_the_weights() -> None:
    space = Space.from_dict({"a": "choices({'p': 3, 'q': 1})", "x": "uniform(0, 1)"})
    C = np.array([[0.0, 0.2], [0.74, 0.5], [0.76, 0.5], [1.0, 0.9]])
    assert [space.from_unit(u)["a"] for u in space.from_prior_cdf(C)] == ["p", "p", "q", "q"]
    assert space.from_prior_cdf(C)[:, 1].tolist() == [0.2, 0.5, 0.5, 0.9]
    unweighted = Space.from_dict({"a": "choices({'p': 1, 'q': 1})"})
    assert unweighted.from_prior_cdf(np.array([[0.3]])).tolist() == [[0.25]]


def test_the_start_far_from_many_known_points_keeps_its_memory_small_and_its_choice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The distances from every candidate to every known point were one (candidates, known,
    # d) array: 3,000 known points in 100 dimensions took 1.9 GB. A slice at a time now,
    # choosing the same points.
    import tracemalloc

    import metaopt.search._random as random_start

    space = Space.from_dict({f"x{i}": "uniform(0, 1)" for i in range(50)})
    rng = np.random.default_rng(0)
    X = space.sample(rng, 1_000)
    obs = Observations(X, rng.normal(size=(1_000, 1)))
    tracemalloc.start()
    try:
        sliced = SobolStart().suggest(space, obs, np.random.default_rng(1), 3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 << 20  # (all at once: 256 x 1,000 x 50 floats, 100 MiB, three times)
    monkeypatch.setattr(random_start, "_CHUNK", 1 << 40)  # one slice: all at once
    assert np.array_equal(SobolStart().suggest(space, obs, np.random.default_rng(1), 3), sliced)
