"""bench_parallel: k Studies syncing through the crdt protocol never duplicate, reproducibly."""

from __future__ import annotations

import math

import pytest

from simulations.bench_parallel import TARGETS, RunResult, run, speedup_interval


def _run(
    k: int, seed: int, push: float | None, algorithm: str = "auto", max_time: float = 4.0
) -> RunResult:
    return run(
        "branin",
        k,
        seed,
        target=TARGETS["branin"],
        sync_every=0.5,
        max_time=max_time,
        algorithm=algorithm,
        push=push,
    )


@pytest.mark.slow
@pytest.mark.parametrize("push", [0.02, None])
def test_concurrent_studies_never_duplicate_and_repeat_their_run(push: float | None) -> None:
    first = _run(8, 3, push)
    again = _run(8, 3, push)
    assert first.evaluations > 8  # past the blind round: trials chosen with others pending
    assert first.exact_duplicates == 0
    assert (first.time_to_target, first.evaluations, first.near_duplicates) == (
        again.time_to_target,
        again.evaluations,
        again.near_duplicates,
    )


def test_the_clairvoyant_is_auto_when_nothing_is_pending() -> None:
    # One peer asks only after its last result is in: told nothing, it changes nothing at k = 1.
    # (auto-ei does: log-EI, where auto asks the bound with or without trials pending.)
    auto = _run(1, 0, None, max_time=12.0)
    other = _run(1, 0, None, algorithm="clairvoyant", max_time=12.0)
    assert (auto.time_to_target, auto.evaluations) == (other.time_to_target, other.evaluations)


def test_speedup_interval_brackets_the_ratio_of_medians() -> None:
    base = [18.0, 20.0, 22.0, 19.0, 21.0]
    times = [4.0, 5.0, 4.5, 5.5, 4.2]
    lo, hi = speedup_interval(base, times)
    assert lo <= 20.0 / 4.5 <= hi
    assert speedup_interval([math.inf] * 3, [math.inf] * 3) == (0.0, 0.0)
