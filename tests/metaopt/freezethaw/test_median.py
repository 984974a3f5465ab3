"""The median rule: a running trial whose best so far is worse than the median of the others'
running averages at its latest step is killed, after a warm-up."""

from __future__ import annotations

import numpy as np

from metaopt.freezethaw import Action, CurveView, MedianConfig, make_stopper

T = 60


def _curve(tid: str, values: list[float], state: str = "running") -> CurveView:
    """A trial's curve, reported at steps 1, 2, ..."""
    steps = np.arange(1, len(values) + 1)
    return CurveView(tid, np.array([0.5]), steps, np.array(values, dtype=float), state, T)  # type: ignore[arg-type]


def _flat(tid: str, level: float, n: int = 6) -> CurveView:
    return _curve(tid, [level] * n)


def _act(others: list[CurveView], mine: CurveView, warmup: int = 5, min_trials: int = 3) -> Action:
    """What the rule decides for ``mine``, the others being every other trial's curve."""
    stopper = make_stopper("median", MedianConfig(warmup, min_trials))
    out = stopper.decide([*others, mine], {mine.trial_id}, 0, np.random.default_rng(0))
    assert [d.trial_id for d in out] == [mine.trial_id]
    return out[0].action


def test_defaults_wait_five_steps_and_five_trials() -> None:
    # (with no warm-up, a trial would be killed on its first, noisiest report)
    assert MedianConfig() == MedianConfig(n_warmup_steps=5, n_min_trials=5)


def test_others_that_reached_exactly_this_step_count() -> None:
    # Left out, three rivals at step 6 would be too few, and a bad trial would run on.
    others = [_flat(f"o{i}", 1.0) for i in range(3)]
    assert _act(others, _flat("w", 2.0)) is Action.KILL


def test_the_others_running_average_includes_their_value_at_this_step() -> None:
    # Their mean up to step 6 is (5 * 10 - 100) / 6 < 0; up to step 5 it would be 10, and a
    # trial at 5 would be spared a bar it does not meet.
    others = [_curve(f"o{i}", [10.0] * 5 + [-100.0]) for i in range(3)]
    assert _act(others, _flat("w", 5.0)) is Action.KILL


def test_the_others_are_their_running_averages_not_their_bests() -> None:
    # By their bests (one lucky report), the bar would be far harder than the rule's.
    others = [_curve(f"o{i}", [10.0, 0.0, 10.0, 10.0, 10.0, 10.0]) for i in range(3)]
    assert _act(others, _flat("w", 5.0)) is Action.CONTINUE


def test_the_bar_is_the_median_not_the_mean() -> None:
    # By the mean, one far-off rival would spare every trial worse than the others.
    others = [_flat("a", 0.0), _flat("b", 0.0), _flat("c", 100.0)]
    assert _act(others, _flat("w", 10.0)) is Action.KILL


def test_a_trial_is_judged_by_its_best_value_so_far_not_its_last() -> None:
    # By its last value, one noisy report would kill a trial that did better than the rest.
    others = [_flat(f"o{i}", 1.0) for i in range(3)]
    assert _act(others, _curve("w", [0.1, 5.0, 5.0, 5.0, 5.0, 5.0])) is Action.CONTINUE


def test_a_best_equal_to_the_median_goes_on() -> None:
    # Killed at a tie, a trial as good as the typical one would be stopped.
    others = [_flat(f"o{i}", 1.0) for i in range(3)]
    assert _act(others, _flat("w", 1.0)) is Action.CONTINUE


def test_a_trial_is_not_its_own_rival_and_n_min_trials_others_suffice() -> None:
    # Counted among its rivals, a trial would be judged with one rival too few.
    two = [_flat("a", 1.0), _flat("b", 2.0)]
    assert _act(two, _flat("w", 3.0)) is Action.CONTINUE
    assert _act([*two, _flat("c", 2.0)], _flat("w", 3.0)) is Action.KILL


def test_warmup_ends_at_step_n_warmup_steps() -> None:
    # A trial at its 5th step of a 5-step warm-up is judged; at its 4th, not yet.
    others = [_flat(f"o{i}", 1.0, 10) for i in range(3)]
    assert _act(others, _flat("w", 3.0, 5)) is Action.KILL
    assert _act(others, _flat("w", 3.0, 4)) is Action.CONTINUE


def test_others_are_compared_at_this_trials_latest_step() -> None:
    # The others stopped reporting at step 3: none reached step 6. Compared at its first step,
    # a trial would be judged by where its rivals stood at a step it has long passed.
    others = [_flat(f"o{i}", 1.0, 3) for i in range(3)]
    assert _act(others, _flat("w", 3.0, 6), warmup=1) is Action.CONTINUE


def test_only_own_running_trials_get_a_decision_and_diverged_ones_are_killed() -> None:
    # A decision for a finished or frozen trial would stop what is done; a diverged one left
    # running would hold its slot to the budget.
    stopper = make_stopper("median", MedianConfig(n_warmup_steps=1, n_min_trials=1))
    curves = [_curve("done", [1.0] * 6, "completed"), _curve("frozen", [9.0] * 6, "frozen"),
              _curve("nan", [1.0, float("nan")]), _flat("run", 0.5)]  # fmt: skip
    out = stopper.decide(curves, {"done", "frozen", "nan", "run"}, 0, np.random.default_rng(0))
    assert [(d.trial_id, d.action) for d in out] == [("nan", Action.KILL), ("run", Action.CONTINUE)]


def test_a_rival_that_began_reporting_later_is_left_out_not_a_nan_median() -> None:
    # Its mean up to step 8 was the mean of nothing (nan): the median of the rivals was
    # nan, "best > nan" never held, and a run far worse than every rival went on ("best 5
    # <= median"), with a RuntimeWarning at each decision (an error in this suite).
    d = np.arange(1, 101)
    good = [CurveView(f"g{i}", np.array([0.5]), d, np.full(100, 0.1 + 0.01 * i), "completed", 100)
            for i in range(6)]  # fmt: skip
    late = CurveView("late", np.array([0.5]), np.arange(10, 101, 10), np.full(10, 0.1),
                     "completed", 100)  # fmt: skip
    bad = CurveView("bad", np.array([0.5]), np.arange(1, 9), np.full(8, 5.0), "running", 100)
    [decided] = make_stopper("median").decide(
        [*good, late, bad], {"bad"}, 0, np.random.default_rng(0)
    )
    assert decided.action is Action.KILL


def test_the_others_means_are_taken_up_to_this_runs_step_not_beyond() -> None:
    # Five rivals at 1.0 for steps 1-6, then 0.0: their mean at step 6 is 1.0 (0.5 over all
    # they reported). Best 0.6 at step 6, this run is better than their median there.
    rivals = [_curve(f"r{i}", [1.0] * 6 + [0.0] * 6) for i in range(5)]
    assert _act(rivals, _curve("mine", [0.9, 0.8, 0.7, 0.6, 0.6, 0.6])) is Action.CONTINUE
