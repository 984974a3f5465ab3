"""The freeze-thaw benchmark's simulator: steps, incumbents and regret are counted right."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulations._curves import synthetic_pool
from simulations.bench_freezethaw import RunResult, _paired, _policy, run_budget, simulate


def _small_pool(seed: int):  # type: ignore[no-untyped-def]
    return synthetic_pool(np.random.default_rng(seed), n=40, T=30)


def test_without_early_stopping_every_trial_runs_to_the_end_one_after_another() -> None:
    pool = _small_pool(0)
    order = np.random.default_rng(1).permutation(pool.n)
    T = pool.T
    best = float(np.min(pool.truth))
    # The target is met by the first configuration in the order within 0.05 of the best.
    target = 0.05
    first_hit = next(j for j, c in enumerate(order) if pool.truth[c] - best <= target)
    r = simulate(pool, order, _policy("none", pool, 0, 5), 1, 5 * T, pool.n * T, target)
    # One slot, no stopping: trial j ends at step (j + 1) T, and the incumbent is the
    # configuration with the lowest observed final value among those finished.
    assert r.best_fate == "kept"
    assert r.steps_to_target >= (first_hit + 1) * T
    assert r.steps_to_target % T == 0
    finals = [pool.curves[c, -1] for c in order[:5]]
    incumbent = order[int(np.nanargmin(finals))]
    assert r.regret_at == pool.truth[incumbent] - best


def test_the_simulation_is_a_function_of_its_inputs() -> None:
    pool = _small_pool(2)
    order = np.random.default_rng(3).permutation(pool.n)
    runs = [
        simulate(pool, order, _policy("freeze-thaw", pool, 7, 2), 2, 8 * pool.T, 40 * pool.T, 0.1)
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    assert runs[0].best_fate in ("kept", "killed", "frozen")
    assert math.isfinite(runs[0].regret_at)


def test_asha_stops_trials_early_so_it_starts_more_than_no_stopping() -> None:
    pool = _small_pool(4)
    order = np.random.default_rng(5).permutation(pool.n)
    budget = 6 * pool.T
    none = simulate(pool, order, _policy("none", pool, 0, 5), 1, budget, budget, 0.0)
    asha = simulate(pool, order, _policy("asha", pool, 0, 5), 1, budget, budget, 0.0)
    assert none.n_started == 6
    assert asha.n_started > none.n_started


def test_the_paired_ratio_is_seed_by_seed_and_caps_a_run_that_never_got_there() -> None:
    def runs(steps: list[float]) -> list[RunResult]:
        return [RunResult(0.0, s, "kept", 1) for s in steps]

    ref = runs([100.0, 400.0, 1000.0])
    assert _paired(ref, ref, 5000).startswith("×1.000 ±0.000")
    # Twice the steps on two seeds, half on one: geometric mean 2^(1/3), two seeds worse.
    out = _paired(runs([200.0, 800.0, 500.0]), ref, 5000)
    assert out.startswith(f"×{2 ** (1 / 3):.3f}")
    assert out.endswith(" 1+  2-")
    # A run that never reached the target counts as the cap (5000 = 5x the 1000 it is paired to).
    never = _paired(runs([100.0, 400.0, math.inf]), ref, 5000)
    assert never.startswith(f"×{5 ** (1 / 3):.3f}")


def test_a_budget_of_trials_runs_to_its_end_and_counts_every_step(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The budget mode: no target (-1), equal steps and the cap at the budget's full length,
    # so the run ends when every slot is idle: no stopping takes every step of every trial.
    pool = _small_pool(6)
    order = np.random.default_rng(7).permutation(pool.n)[:5]
    cap = 5 * pool.T
    none = simulate(pool, order, _policy("none", pool, 0, 1), 2, cap, cap, -1.0)
    assert (none.steps, none.n_started, none.best_fate) == (cap, 5, "kept")
    asha = simulate(pool, order, _policy("asha", pool, 0, 1), 2, cap, cap, -1.0)
    assert asha.n_started == 5 and asha.steps < cap
    run_budget(_small_pool, range(2), 2, 1, ("asha", "none"), 5)
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].startswith("synthetic: 2 peer(s), 2 seeds (0-1), a budget of 5 trials")
    method, _, steps, fewer, worse, *_ = rows[-1].split()
    assert (method, steps, fewer, worse) == ("none", str(cap), "1.00", "0/2")
    # A budget past the pool's size runs the whole pool, and says so (a review: it said 50).
    run_budget(_small_pool, range(1), 1, 1, ("none",), 50)
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].endswith(f"a budget of {pool.n} trials run to its end")
    assert rows[-1].split()[2] == str(pool.n * pool.T)
