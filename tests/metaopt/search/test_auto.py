from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from metaopt.search import AutoAlgorithm, AutoConfig, Observations, RandomAlgorithm, is_known
from metaopt.space import Space

REAL = Space.from_dict({k: "uniform(-1, 1)" for k in ("a", "b", "c")})
HAS_GP = importlib.util.find_spec("metaopt.search.gp") is not None


class RecordingGP:
    """Stands in for the GP: records what it was asked and answers with prior samples."""

    name = "fake-gp"

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []

    def suggest(
        self, space: Space, obs: Observations, rng: np.random.Generator, n: int = 1
    ) -> np.ndarray:
        self.calls.append((obs.n, obs.m, n))
        return RandomAlgorithm().suggest(space, obs, rng, n)


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


def test_start_then_gp() -> None:
    gp = RecordingGP()
    alg = AutoAlgorithm(gp=gp)
    assert alg.n_start(REAL) == 6
    run(alg, REAL, sphere, 12, seed=0)
    assert [c[0] for c in gp.calls] == list(range(6, 12))
    assert alg.evolution_share(REAL, Observations.empty(3)) == 0.0


def test_rule_shares() -> None:
    alg = AutoAlgorithm(gp=RecordingGP())
    rng = np.random.default_rng(0)
    big = Space.from_dict({f"x{i:02d}": "uniform(0, 1)" for i in range(20)})
    cats = Space.from_dict(
        {f"c{i}": "choices(['a', 'b'])" for i in range(3)} | {"x": "uniform(0, 1)"}
    )

    def obs(space: Space, n: int, m: int = 1) -> Observations:
        return Observations(space.sample(rng, n), rng.normal(size=(n, m)))

    assert alg.evolution_share(REAL, obs(REAL, 50)) == 0.0
    assert alg.evolution_share(REAL, obs(REAL, 301)) == 0.5
    assert alg.evolution_share(REAL, obs(REAL, 1001)) == 1.0
    assert alg.evolution_share(big, obs(big, 50)) == 0.25
    assert alg.evolution_share(cats, obs(cats, 50)) == 0.25
    assert alg.evolution_share(REAL, obs(REAL, 50, m=2)) == 0.5
    assert (
        AutoAlgorithm(AutoConfig(mix_multi=0.0), gp=RecordingGP()).evolution_share(
            REAL, obs(REAL, 50, m=2)
        )
        == 0.0
    )


def test_several_objectives_give_gp_a_scalarised_problem() -> None:
    gp = RecordingGP()
    alg = AutoAlgorithm(AutoConfig(mix_multi=0.0), gp=gp)

    def two(p: dict[str, Any]) -> list[float]:
        return [p["a"] ** 2, (p["a"] - 1) ** 2 + p["b"] ** 2]

    run(alg, REAL, two, 10, seed=0)
    assert gp.calls and all(m == 1 for _, m, _ in gp.calls)


def test_batches_are_distinct_valid_and_reproducible() -> None:
    rng = np.random.default_rng(5)
    X = REAL.sample(rng, 40)
    obs = Observations(X, rng.normal(size=(40, 1)), REAL.sample(rng, 5))
    cfg = AutoConfig(large_history=10)  # half the batch from evolution, half from the GP
    out = AutoAlgorithm(cfg, gp=RecordingGP()).suggest(REAL, obs, np.random.default_rng(1), 8)
    again = AutoAlgorithm(cfg, gp=RecordingGP()).suggest(REAL, obs, np.random.default_rng(1), 8)
    assert np.array_equal(out, again) and out.shape == (8, 3)
    assert len({tuple(u) for u in out}) == 8
    assert not is_known(out, np.vstack([obs.X, obs.pending])).any()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_GP, reason="metaopt.search.gp not written yet")
def test_finds_optimum_with_real_gp() -> None:
    space = Space.from_dict({"a": "uniform(-1, 1)", "b": "uniform(-1, 1)"})

    def bowl(p: dict[str, Any]) -> list[float]:
        return [(p["a"] - 0.3) ** 2 + (p["b"] + 0.2) ** 2]

    best = run(AutoAlgorithm(), space, bowl, 15, seed=0).Y.min()
    assert best < 1e-2


def test_evolution_path_finds_optimum_of_sphere() -> None:
    # gp_max_history=0 sends every point after the start to evolution, the large-history path.
    alg = AutoAlgorithm(AutoConfig(gp_max_history=0))
    assert alg.evolution_share(REAL, Observations(np.zeros((1, 3)), np.zeros((1, 1)))) == 1.0
    best = run(alg, REAL, sphere, 200, seed=1).Y.min()
    assert best < 5e-3
