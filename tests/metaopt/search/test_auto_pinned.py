"""Portfolio rules a mutation audit of metaopt/search/_auto.py found unpinned by the other tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from metaopt.search import AutoAlgorithm, AutoConfig, Observations, is_known
from metaopt.space import Space
from tests.metaopt.search.test_auto import REAL, RecordingGP

BIG16 = Space.from_dict({f"x{i:02d}": "uniform(0, 1)" for i in range(16)})
BIG17 = Space.from_dict({f"x{i:02d}": "uniform(0, 1)" for i in range(17)})
# Two categorical coordinates of four: exactly half, not more than half.
HALF_CAT = Space.from_dict(
    {
        "c0": "choices(['a', 'b'])",
        "c1": "choices(['a', 'b'])",
        "x": "uniform(0, 1)",
        "y": "uniform(0, 1)",
    }
)
MOST_CAT = Space.from_dict(
    {
        "c0": "choices(['a', 'b'])",
        "c1": "choices(['a', 'b'])",
        "c2": "choices(['a', 'b'])",
        "x": "uniform(0, 1)",
    }
)


def _obs(space: Space, n: int, m: int = 1, seed: int = 0) -> Observations:
    rng = np.random.default_rng(seed)
    return Observations(space.sample(rng, n), rng.normal(size=(n, m)))


def test_each_share_switches_on_strictly_above_its_threshold() -> None:
    """Pins the strict '>' of every switch point the docstring states (n > 300, n > 1,000,
    d > 16, c > d / 2): at the threshold itself the GP keeps its full share."""
    alg = AutoAlgorithm(gp=RecordingGP())
    assert alg.evolution_share(REAL, _obs(REAL, 300)) == 0.0
    assert alg.evolution_share(REAL, _obs(REAL, 301)) == 0.5
    assert alg.evolution_share(REAL, _obs(REAL, 1000)) == 0.5
    assert alg.evolution_share(REAL, _obs(REAL, 1001)) == 1.0
    assert alg.evolution_share(BIG16, _obs(BIG16, 20)) == 0.0
    assert alg.evolution_share(BIG17, _obs(BIG17, 20)) == 0.25
    assert alg.evolution_share(HALF_CAT, _obs(HALF_CAT, 20)) == 0.0
    assert alg.evolution_share(MOST_CAT, _obs(MOST_CAT, 20)) == 0.25


def test_shares_add_up_and_are_capped_at_one() -> None:
    """Pins that the mixes add (large + high-dim + categorical), that several objectives raise p
    only to mix_multi (a floor, not a further addend), and that p never exceeds 1 (a custom
    config whose mixes sum past 1 must not make the binomial draw raise)."""
    alg = AutoAlgorithm(gp=RecordingGP())
    assert alg.evolution_share(BIG17, _obs(BIG17, 301)) == 0.75
    assert alg.evolution_share(REAL, _obs(REAL, 301, m=2)) == 0.5
    assert alg.evolution_share(BIG17, _obs(BIG17, 20, m=2)) == 0.5
    greedy = AutoAlgorithm(AutoConfig(mix_large=0.9, mix_high_dim=0.9), gp=RecordingGP())
    obs = _obs(BIG17, 301)
    assert greedy.evolution_share(BIG17, obs) == 1.0
    out = greedy.suggest(BIG17, obs, np.random.default_rng(0), 3)
    assert out.shape == (3, 17) and not is_known(out, obs.X).any()


def test_the_start_lasts_twice_the_dimensions_clamped_to_5_and_10() -> None:
    """Pins n_start = clamp(2 d, 5, 10) at both clamps and between them."""
    alg = AutoAlgorithm(gp=RecordingGP())
    sizes = {
        d: Space.from_dict({f"x{i:02d}": "uniform(0, 1)" for i in range(d)}) for d in (1, 3, 5, 8)
    }
    assert {d: alg.n_start(s) for d, s in sizes.items()} == {1: 5, 3: 6, 5: 10, 8: 10}


def test_each_mix_adds_its_own_configured_share() -> None:
    """Pins that the categorical rule adds mix_categorical and the dimension rule mix_high_dim
    (the defaults are both 0.25, so only a custom config tells them apart)."""
    cfg = AutoConfig(mix_categorical=0.4, mix_high_dim=0.1)
    alg = AutoAlgorithm(cfg, gp=RecordingGP())
    assert alg.evolution_share(MOST_CAT, _obs(MOST_CAT, 20)) == 0.4
    assert alg.evolution_share(BIG17, _obs(BIG17, 20)) == 0.1


def test_without_the_gp_package_every_point_comes_from_evolution() -> None:
    """Pins the fallback when metaopt.search.gp cannot be imported: p = 1, and suggest works
    (no GP is asked, no assertion fires) for a user without the GP's dependencies."""
    alg = AutoAlgorithm()
    alg._gp_missing = True  # as after an ImportError of metaopt.search.gp
    obs = _obs(REAL, 20)
    assert alg.evolution_share(REAL, obs) == 1.0
    out = alg.suggest(REAL, obs, np.random.default_rng(0), 4)
    assert out.shape == (4, 3) and not is_known(out, obs.X).any()
    assert len({tuple(u) for u in out}) == 4


def test_pending_and_failed_trials_count_towards_the_start() -> None:
    """Pins h = completed + pending + failed: peers' running and crashed trials end the
    space-filling start, so 8 peers do not all keep drawing start points."""
    gp = RecordingGP()
    alg = AutoAlgorithm(gp=gp)
    rng = np.random.default_rng(0)
    assert alg.n_start(REAL) == 6
    obs = Observations(
        REAL.sample(rng, 2), rng.normal(size=(2, 1)), REAL.sample(rng, 3), REAL.sample(rng, 1)
    )
    alg.suggest(REAL, obs, np.random.default_rng(1), 1)
    assert gp.calls == [(2, 1, 1)]
    # One fewer known trial: still the start.
    gp.calls.clear()
    obs = Observations(obs.X, obs.Y, obs.pending[:2], obs.failed)
    alg.suggest(REAL, obs, np.random.default_rng(1), 1)
    assert gp.calls == []


def test_fewer_than_two_finite_results_keep_the_start() -> None:
    """Pins the second start condition: however many trials are pending, a model (GP or
    evolution) needs two finite completed results; one result and a NaN give the start."""
    gp = RecordingGP()
    alg = AutoAlgorithm(gp=gp)
    rng = np.random.default_rng(0)
    obs = Observations(REAL.sample(rng, 2), np.array([[1.0], [np.nan]]), REAL.sample(rng, 10))
    out = alg.suggest(REAL, obs, np.random.default_rng(1), 2)
    assert gp.calls == [] and out.shape == (2, 3)
    assert not is_known(out, np.vstack([obs.X, obs.pending])).any()


class _Recorder:
    """Stands in for an algorithm: records the observations it was given."""

    name = "recorder"

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seen: list[Observations] = []

    def suggest(self, space: Space, obs: Observations, rng: np.random.Generator, n: int = 1) -> Any:
        self.seen.append(obs)
        return self.inner.suggest(space, obs, rng, n)


def test_the_evolution_part_of_a_batch_sees_the_gp_part_as_pending() -> None:
    """Pins the split of one batch: the second part is told the first part's points as pending
    (so its offspring avoid them in the first place), not only deduplicated afterwards."""
    rng = np.random.default_rng(5)
    obs = Observations(REAL.sample(rng, 40), rng.normal(size=(40, 1)), REAL.sample(rng, 5))
    alg = AutoAlgorithm(AutoConfig(large_history=10), gp=RecordingGP())
    evo = _Recorder(alg._evolution)
    alg._evolution = evo  # type: ignore[assignment]
    alg.suggest(REAL, obs, np.random.default_rng(1), 8)
    assert len(evo.seen) == 1 and alg._gp is not None
    n_gp = sum(c[2] for c in alg._gp.calls)  # type: ignore[attr-defined]
    assert 0 < n_gp < 8
    assert evo.seen[0].pending.shape == (5 + n_gp, 3)


def _parego_with_a_nan() -> tuple[Any, AutoAlgorithm, Any, Any, np.random.Generator]:
    """auto with no evolution over a recording GP, and 12 points of two objectives, the
    second of point 4 NaN (a crash in one objective)."""
    gp = _Recorder(RecordingGP())
    alg = AutoAlgorithm(AutoConfig(mix_multi=0.0), gp=gp)
    rng = np.random.default_rng(3)
    X = REAL.sample(rng, 12)
    Y = rng.random((12, 2))
    Y[4, 1] = np.nan
    return gp, alg, X, Y, rng


def test_parego_passes_pending_and_failed_on_and_draws_its_weights_per_call() -> None:
    """Pins what the GP part sees with several objectives: one scalarised objective over the
    finite rows, the pending and failed points kept (fantasies, imputed crashes), and a new
    random weight vector per call (ParEGO: a fixed one would search one spot of the front)."""
    gp, alg, X, Y, rng = _parego_with_a_nan()
    obs = Observations(X, Y, REAL.sample(rng, 2), REAL.sample(rng, 1))
    for seed in range(4):
        alg.suggest(REAL, obs, np.random.default_rng(seed), 1)
    assert len(gp.seen) == 4
    for o in gp.seen:
        assert o.m == 1 and int(np.isfinite(o.Y).sum()) == 11  # the 11 finite rows' values
        assert np.array_equal(o.pending, obs.pending) and np.array_equal(o.failed, obs.failed)
    ys = {tuple(np.round(o.Y[np.isfinite(o.Y[:, 0]), 0], 12)) for o in gp.seen}
    assert len(ys) == 4


def test_parego_leaves_non_finite_results_for_the_gp_to_impute() -> None:
    """Pins that, as with one objective, a trial with a non-finite objective reaches the GP (as a
    NaN it imputes at the worst value and steers away from), instead of vanishing from its view."""
    gp, alg, X, Y, _ = _parego_with_a_nan()
    alg.suggest(REAL, Observations(X, Y), np.random.default_rng(0), 1)
    (o,) = gp.seen
    assert o.n == 12 and np.array_equal(o.X, X)
    assert np.isnan(o.Y[4, 0]) and np.isfinite(np.delete(o.Y, 4, axis=0)).all()


def test_parego_suggestions_go_where_both_objectives_are_low() -> None:
    space = Space.from_dict({"x": "uniform(0, 1)", "y": "uniform(0, 1)"})
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, size=(16, 2))
    # Both objectives are lowest near the origin; the front is there.
    Y = np.column_stack([(X**2).sum(axis=1), np.abs(X).sum(axis=1)])
    obs = Observations(X, Y, np.zeros((0, 2)), np.zeros((0, 2)))
    algo = AutoAlgorithm(AutoConfig(mix_multi=0.0))  # every point from the GP (ParEGO)
    pts = np.vstack([algo.suggest(space, obs, np.random.default_rng(s), 1) for s in range(6)])
    assert pts.sum(axis=1).mean() < 0.6, pts
