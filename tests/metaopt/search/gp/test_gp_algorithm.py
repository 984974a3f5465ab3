from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metaopt import Study
from metaopt._errors import SearchError
from metaopt.search import Observations, is_known, make_algorithm
from metaopt.search.gp import GPAlgorithm, GPConfig, _algorithm, chebyshev_scalarise
from metaopt.space import Space
from simulations._problems import get_problem

MIXED = Space.from_dict(
    {
        "lr": "loguniform(1e-4, 1)",
        "n": "randint(2, 9)",
        "act": "choices(['relu', 'tanh', 'gelu'])",
        "w": "uniform(-1, 1)",
    }
)


def mixed_f(p: dict[str, Any]) -> float:
    return float(
        (np.log10(p["lr"]) + 2) ** 2
        + 0.1 * (p["n"] - 5) ** 2
        + (p["act"] != "tanh")
        + (p["w"] - 0.3) ** 2
    )


def run(
    alg: Any, space: Space, f: Callable[[dict[str, Any]], float], budget: int, seed: int
) -> Observations:
    rng = np.random.default_rng(seed)
    obs = Observations.empty(space.d)
    for _ in range(budget):
        u = alg.suggest(space, obs, rng, 1)
        y = f(space.from_unit(u[0]))
        obs = Observations(np.vstack([obs.X, u]), np.vstack([obs.Y, [[y]]]))
    return obs


def history(space: Space, n: int, seed: int, f: Callable[[dict[str, Any]], float]) -> Observations:
    X = space.sample(np.random.default_rng(seed), n)
    Y = np.array([[f(space.from_unit(x))] for x in X])
    return Observations(X, Y)


def _valid(space: Space, U: np.ndarray) -> None:
    assert np.all((U >= 0) & (U <= 1))
    assert np.array_equal(space.round_unit(U), U)
    for u in U:
        np.testing.assert_allclose(space.to_unit(space.from_unit(u)), u, atol=1e-9)


def test_finds_the_optimum_of_a_smooth_function() -> None:
    space = Space.from_dict({"x": "uniform(-2, 2)", "y": "uniform(-2, 2)"})

    def f(p: dict[str, Any]) -> float:
        return float((p["x"] - 0.7) ** 2 + 2 * (p["y"] + 0.4) ** 2)

    obs = run(GPAlgorithm(), space, f, 25, seed=0)
    assert obs.Y.min() < 1e-3


@pytest.mark.slow
def test_finds_the_optimum_of_a_mixed_function() -> None:
    obs = run(GPAlgorithm(), MIXED, mixed_f, 30, seed=1)
    best = MIXED.from_unit(obs.X[int(np.argmin(obs.Y))])
    assert best["act"] == "tanh" and best["n"] == 5
    assert obs.Y.min() < 0.05


@settings(max_examples=4, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_suggestions_valid_new_and_reproducible(seed: int, n: int) -> None:
    obs = history(MIXED, 12, seed, mixed_f)
    pending = MIXED.sample(np.random.default_rng(seed + 1), 3)
    obs = Observations(obs.X, obs.Y, pending, MIXED.sample(np.random.default_rng(seed + 2), 2))
    a = GPAlgorithm().suggest(MIXED, obs, np.random.default_rng(seed), n)
    b = GPAlgorithm().suggest(MIXED, obs, np.random.default_rng(seed), n)
    assert a.shape == (n, MIXED.d) and np.array_equal(a, b)
    _valid(MIXED, a)
    assert not is_known(a, np.vstack([obs.X, obs.pending, obs.failed])).any()
    assert len({tuple(u) for u in a}) == n


def test_same_call_history_gives_same_suggestions() -> None:
    seqs = [run(GPAlgorithm(), MIXED, mixed_f, 12, seed=5).X for _ in range(2)]
    assert np.array_equal(seqs[0], seqs[1])


def test_pending_points_spread_a_parallel_batch() -> None:
    space = Space.from_dict({"x": "uniform(0, 1)", "y": "uniform(0, 1)"})

    def f(p: dict[str, Any]) -> float:
        return float((p["x"] - 0.3) ** 2 + (p["y"] - 0.6) ** 2)

    obs = history(space, 12, 3, f)
    alg = GPAlgorithm()
    batch = alg.suggest(space, obs, np.random.default_rng(0), 6)
    dist = np.sqrt(((batch[:, None] - batch[None]) ** 2).sum(-1))
    assert dist[np.triu_indices(6, 1)].min() > 1e-3
    # Another peer's pending point is not proposed again, nor one right next to it.
    first = alg.suggest(space, obs, np.random.default_rng(1), 1)
    seen = Observations(obs.X, obs.Y, first)
    second = alg.suggest(space, seen, np.random.default_rng(1), 1)
    assert np.sqrt(((second - first) ** 2).sum()) > 1e-3


def test_exhausts_a_small_finite_space_without_repeats() -> None:
    space = Space.from_dict({"i": "randint(0, 4)", "c": "choices(['a', 'b'])"})

    def f(p: dict[str, Any]) -> float:
        return float(abs(p["i"] - 2) + (p["c"] == "a"))

    obs = run(GPAlgorithm(GPConfig(n_init=2)), space, f, 8, seed=0)
    assert len({tuple(u) for u in obs.X}) == 8


def test_failed_and_non_finite_trials_are_not_suggested_again() -> None:
    obs = history(MIXED, 15, 7, mixed_f)
    Y = obs.Y.copy()
    Y[:3] = np.nan
    failed = MIXED.sample(np.random.default_rng(8), 4)
    obs = Observations(obs.X, Y, np.zeros((0, MIXED.d)), failed)
    u = GPAlgorithm().suggest(MIXED, obs, np.random.default_rng(0), 3)
    _valid(MIXED, u)
    assert not is_known(u, np.vstack([obs.X, failed])).any()


def test_several_objectives_are_scalarised() -> None:
    obs = history(MIXED, 14, 9, mixed_f)
    Y = np.hstack([obs.Y, -obs.Y + np.random.default_rng(0).normal(size=obs.Y.shape)])
    u = GPAlgorithm().suggest(MIXED, Observations(obs.X, Y), np.random.default_rng(0), 2)
    _valid(MIXED, u)
    s = chebyshev_scalarise(np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]), np.array([0.5, 0.5]), 0)
    np.testing.assert_allclose(s, [0.5, 0.5, 0.0])
    # Objectives spanning -1e308..1e308 (a float-max penalty): hi - lo overflowed to inf.
    huge = np.array([[-1e308, 1.0], [1e308, 0.0], [0.0, 0.5]])
    np.testing.assert_allclose(chebyshev_scalarise(huge, np.array([0.5, 0.5]), 0), [0.5, 0.5, 0.25])


def test_large_history_uses_a_bounded_subset() -> None:
    space = Space.from_dict({f"x{i}": "uniform(0, 1)" for i in range(3)})

    def f(p: dict[str, Any]) -> float:
        return float(sum((v - 0.5) ** 2 for v in p.values()))

    obs = history(space, 500, 0, f)
    alg = GPAlgorithm(GPConfig(max_points=100))
    X, y = alg._subset(obs.X, obs.Y[:, 0], np.random.default_rng(0))
    assert X.shape == (100, 3)
    assert y.min() == obs.Y.min()
    u = alg.suggest(space, obs, np.random.default_rng(0), 1)
    _valid(space, u)


@pytest.mark.parametrize(
    ("bad", "said"),
    [
        ({"n_init": -1}, "n_init=-1: give a whole number >= 0 or None"),
        ({"n_init": True}, "n_init=True: give a whole number >= 0 or None"),
        ({"max_points": 0}, "max_points=0: give a whole number >= 1"),
        ({"max_points": 10.5}, "max_points=10.5: give a whole number >= 1"),
        ({"max_points": None}, "max_points=None: give a whole number >= 1"),
        ({"local_fraction": 1.5}, "local_fraction=1.5: give a number in [0, 1]"),
        ({"local_fraction": -0.1}, "local_fraction=-0.1: give a number in [0, 1]"),
        ({"local_fraction": float("nan")}, "local_fraction=nan: give a number in [0, 1]"),
        ({"max_fantasies": -1}, "max_fantasies=-1: give a whole number >= 0"),
        ({"max_fantasies": 2.5}, "max_fantasies=2.5: give a whole number >= 0"),
        ({"stall_radius": -1e-4}, "stall_radius=-0.0001: give a number >= 0"),
        ({"stall_radius": False}, "stall_radius=False: give a number >= 0"),
        ({"pending_beta": float("inf")}, "pending_beta=inf: give a number >= 0 or None"),
        ({"pending_beta": -1.0}, "pending_beta=-1.0: give a number >= 0 or None"),
        ({"pending_stall_radius": float("nan")}, "pending_stall_radius=nan: give a number >= 0"),
        (
            {"pending_prior_quantile": 1.5},
            "pending_prior_quantile=1.5: give a number in [0, 1] or None",
        ),
        ({"chebyshev_rho": -0.05}, "chebyshev_rho=-0.05: give a number >= 0"),
        ({"power_transform": "x"}, "power_transform='x': give True or False"),
        ({"impute_failed": 1}, "impute_failed=1: give True or False"),
    ],
)
def test_a_bad_gp_config_is_refused_where_it_is_made(bad: dict[str, Any], said: str) -> None:
    """A bad tunable is one error naming it at the line that set it, not a numpy error once a
    history grows past max_points (local_fraction 1.5, max_points 10.5 failed there)."""
    with pytest.raises(SearchError) as refused:
        GPConfig(**bad)
    assert str(refused.value) == "GPConfig " + said


def test_the_gp_config_edges_are_accepted() -> None:
    """The ends of each range are settings a user may mean: no local subset, no fantasies,
    no stall check, log-EI for pending trials, the best or worst output as the prior mean."""
    GPConfig(n_init=1, max_points=1, local_fraction=0.0, max_fantasies=0, stall_radius=0.0)
    GPConfig(local_fraction=1.0, pending_beta=None, pending_prior_quantile=0.0)
    GPConfig(pending_beta=0.0, pending_stall_radius=0.0, pending_prior_quantile=1.0)
    GPConfig(n_init=None, pending_prior_quantile=None, chebyshev_rho=0.0)
    GPConfig(max_points=np.int64(50), local_fraction=np.float32(0.5), stall_radius=0)
    GPConfig(n_init=0, power_transform=np.True_, impute_failed=np.False_)  # (as before checks)


def test_make_algorithm_builds_the_gp() -> None:
    assert make_algorithm("gp").name == "gp"


@pytest.mark.slow
def test_auto_portfolio_with_the_gp_solves_branin() -> None:
    space = Space.from_dict({"x0": "uniform(-5, 10)", "x1": "uniform(0, 15)"})

    def branin(p: dict[str, Any]) -> float:
        x1, x2 = p["x0"], p["x1"]
        b, c, t = 5.1 / (4 * np.pi**2), 5 / np.pi, 1 / (8 * np.pi)
        return float((x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * np.cos(x1) + 10)

    obs = run(make_algorithm("auto"), space, branin, 30, seed=2)
    assert obs.Y.min() - 0.397887 < 1e-2


def test_a_log_ei_optimum_next_to_a_known_point_is_replaced_by_a_new_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    space = Space.from_dict({"a": "uniform(0, 1)", "b": "uniform(0, 1)"})
    rng = np.random.default_rng(0)
    X = rng.random((12, 2))
    obs = Observations(X, ((X - 0.3) ** 2).sum(axis=1, keepdims=True))
    # An overconfident model's optimum: a hair away from a point already measured.
    stalled = X[3] + 1e-6
    monkeypatch.setattr(_algorithm, "maximise_log_ei", lambda *args, **kwargs: stalled.copy())
    log_ei = GPConfig(pending_beta=None)  # (log-EI, not the default bound)
    far = GPAlgorithm(log_ei).suggest(space, obs, np.random.default_rng(1), 1)[0]
    assert np.sqrt(((X - far) ** 2).sum(axis=1)).min() > 0.05
    unstalled = GPConfig(pending_beta=None, stall_radius=0.0)
    kept = GPAlgorithm(unstalled).suggest(space, obs, np.random.default_rng(1), 1)
    assert np.allclose(kept[0], stalled, atol=1e-9)


def test_no_gp_suggestion_lands_next_to_a_known_point_on_a_history_that_stalled() -> None:
    # The one-peer Study of the parallel benchmark's seed 8 on Branin, where the GP once spent
    # 100 evaluations creeping along a boundary 1.5 above the optimum.
    problem = get_problem("branin")
    study = Study(
        dict(problem.priors),
        algorithm="auto",
        seed=8,
        node_id=hashlib.blake2b(b"bench-8-0", digest_size=16).digest(),
        name="parallel-branin",
        clock=lambda: 0.0,  # the experiment's key, and so every random stream, hashes its time
    )
    for _ in range(30):
        trial = study.ask()
        study.tell(trial, problem.objective(trial.params))
    U = np.array([study.space.to_unit(t.params) for t in study.trials])
    d = np.sqrt(((U[:, None, :] - U[None, :, :]) ** 2).sum(-1))[np.triu_indices(len(U), 1)]
    assert d.min() >= 1e-4  # the default stall radius


def _pending_history() -> tuple[Space, Observations]:
    space = Space.from_dict({"a": "uniform(0, 1)", "b": "uniform(0, 1)"})
    rng = np.random.default_rng(0)
    X, P = rng.random((12, 2)), rng.random((3, 2))
    return space, Observations(X, ((X - 0.3) ** 2).sum(axis=1, keepdims=True), P)


def test_the_gp_minimises_the_confidence_bound_with_trials_pending_or_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    space, obs = _pending_history()
    calls: list[str] = []
    real_lcb, real_ei = _algorithm.minimise_lcb, _algorithm.maximise_log_ei

    def lcb(*args: Any, **kwargs: Any) -> Any:
        calls.append("lcb")
        return real_lcb(*args, **kwargs)

    def ei(*args: Any, **kwargs: Any) -> Any:
        calls.append("ei")
        return real_ei(*args, **kwargs)

    monkeypatch.setattr(_algorithm, "minimise_lcb", lcb)
    monkeypatch.setattr(_algorithm, "maximise_log_ei", ei)
    rng = np.random.default_rng(1)
    GPAlgorithm().suggest(space, obs, rng, 1)
    assert calls == ["lcb"]
    calls.clear()
    # Nothing pending (a single peer): the bound too, no longer log-EI.
    GPAlgorithm().suggest(space, Observations(obs.X, obs.Y), rng, 3)
    assert calls == ["lcb", "lcb", "lcb"]
    calls.clear()
    GPAlgorithm(GPConfig(pending_beta=None)).suggest(space, obs, rng, 2)
    assert calls == ["ei", "ei"]


@pytest.mark.parametrize("quantile", [0.75, None])
def test_the_bound_assumes_the_unexplored_as_bad_as_the_prior_quantile(
    monkeypatch: pytest.MonkeyPatch, quantile: float | None
) -> None:
    space, obs = _pending_history()
    seen: list[Any] = []
    real_lcb = _algorithm.minimise_lcb

    def lcb(model: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(model)
        return real_lcb(model, *args, **kwargs)

    monkeypatch.setattr(_algorithm, "minimise_lcb", lcb)
    cfg = GPConfig(pending_prior_quantile=quantile)
    GPAlgorithm(cfg).suggest(space, obs, np.random.default_rng(1), 2)
    assert len(seen) == 2
    n = obs.X.shape[0]
    # The bound's outputs are the warped observations less the prior mean; then the fantasies
    # (the pending trials, then the batch's first point).
    assert seen[0].X.shape[0] == n + 3 and seen[1].X.shape[0] == n + 4
    y = seen[0].y[:n]
    centre = float(np.quantile(y, 0.75)) if quantile is not None else float(y.mean())
    assert abs(centre) < 1e-9
    np.testing.assert_allclose(seen[1].y[: n + 3], seen[0].y)


def test_a_bound_optimum_next_to_a_known_point_is_replaced_by_a_new_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    space, obs = _pending_history()
    # Inside the bound's stall radius (1e-3), outside log-EI's (1e-4): the bound, unlike EI,
    # does not vanish at a measured point and would come back to it.
    stalled = obs.X[3] + 4e-4
    monkeypatch.setattr(_algorithm, "minimise_lcb", lambda *args, **kwargs: stalled.copy())
    far = GPAlgorithm().suggest(space, obs, np.random.default_rng(1), 1)[0]
    assert np.sqrt(((obs.X - far) ** 2).sum(axis=1)).min() > 0.05
    cfg = GPConfig(pending_stall_radius=0.0)
    kept = GPAlgorithm(cfg).suggest(space, obs, np.random.default_rng(1), 1)
    assert np.allclose(kept[0], stalled, atol=1e-9)


@settings(max_examples=4, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_a_batch_beside_pending_trials_keeps_apart_from_every_known_point(seed: int) -> None:
    space = Space.from_dict({"x": "uniform(-2, 2)", "y": "uniform(-2, 2)", "z": "uniform(0, 1)"})

    def f(p: dict[str, Any]) -> float:
        return float((p["x"] - 0.7) ** 2 + 2 * (p["y"] + 0.4) ** 2 + p["z"])

    done = history(space, 10, seed, f)
    pending = space.sample(np.random.default_rng(seed + 1), 5)
    obs = Observations(done.X, done.Y, pending)
    U = GPAlgorithm().suggest(space, obs, np.random.default_rng(seed), 4)
    _valid(space, U)
    known = np.vstack([done.X, pending, U])
    d = np.sqrt(((known[:, None, :] - known[None, :, :]) ** 2).sum(-1))
    assert d[np.triu_indices(len(known), 1)].min() >= 1e-3
