"""ASHA as a peer meets it: trials judged seconds after their rungs, and restarts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from metaopt import MetaoptError, Study
from metaopt.freezethaw import (
    Action,
    AshaConfig,
    CurveView,
    Decision,
    EarlyStopper,
    make_stopper,
)

T = 60


def _curve(
    tid: str,
    values: list[float],
    state: str = "running",
    resumed: int | None = None,
    rung: int | None = None,
) -> CurveView:
    """A trial's curve, reported at steps 1, 2, ...; ``rung``: the rung it was killed at."""
    steps = np.arange(1, len(values) + 1)
    return CurveView(
        tid,
        np.array([0.5]),
        steps,
        np.array(values),
        state,  # type: ignore[arg-type]
        T,
        resumed,
        rung,
    )


def _crossing() -> tuple[CurveView, CurveView]:
    """Two runs at step 12, judged for the first time: the fast learner is worse at rung 1
    (step 1) and better at rung 9."""
    slow = [1.0 - 0.02 * s for s in range(1, 13)]  # 0.98 at step 1, 0.82 at 9
    fast = [1.5 if s < 3 else 0.5 for s in range(1, 13)]  # 1.5 at step 1, 0.5 at 9
    return _curve("slow", slow), _curve("fast", fast)


def _acts(out: list) -> dict[str, Action]:  # type: ignore[type-arg]
    return {d.trial_id: d.action for d in out}


def test_a_trial_killed_at_a_lower_rung_does_not_outrank_the_one_that_beat_it_there() -> None:
    # Steps faster than the peer's judging: both reached rung 9 before rung 1 was judged. The
    # fast learner, out at rung 1, outranked the slow one at rung 9, which was killed too:
    # experiments ended with no trial completed.
    stopper = make_stopper("asha", AshaConfig(min_resource=1, reduction_factor=3))
    slow, fast = _crossing()
    out = stopper.decide([slow, fast], {"slow", "fast"}, 0, np.random.default_rng(0))
    assert _acts(out) == {"fast": Action.KILL, "slow": Action.CONTINUE}
    assert {d.trial_id: d.reason for d in out}["slow"] == "promoted past rung 9"
    assert {d.trial_id: d.rung for d in out} == {"fast": 1, "slow": None}  # (recorded)
    # Once its kill is recorded too: the stopper remembers the rung, another peer's reads it.
    killed = dataclasses.replace(fast, state="killed", stopped_rung=1)
    for judge in (stopper, make_stopper("asha", AshaConfig(1, 3))):
        again = judge.decide([slow, killed], {"slow"}, 0, np.random.default_rng(0))
        assert _acts(again) == {"slow": Action.CONTINUE}
    # Killed for another reason (by hand, or diverged past every rung), it had passed them.
    by_hand = dataclasses.replace(killed, stopped_rung=None)
    other = make_stopper("asha", AshaConfig(1, 3))
    assert _acts(other.decide([slow, by_hand], {"slow"}, 0, np.random.default_rng(0))) == {
        "slow": Action.KILL
    }


def test_a_trial_killed_at_a_rung_is_not_counted_at_the_rungs_above() -> None:
    # In ASHA a trial stopped at rung 1 has no value at rung 2: of the two that went on, the
    # better one alone is in the top 1/eta there. Counting the killed trial too promoted 9 of
    # 27 runs judged late past rung 9, where ASHA keeps 1.
    stopper = make_stopper("asha", AshaConfig(min_resource=1, reduction_factor=1.5))
    curves = [_curve("a", [0.1, 0.1]), _curve("b", [0.2, 0.2]), _curve("c", [0.3, 0.3])]
    out = stopper.decide(curves, {"a", "b", "c"}, 0, np.random.default_rng(0))
    assert _acts(out) == {"a": Action.CONTINUE, "b": Action.KILL, "c": Action.KILL}
    reasons = {d.trial_id: d.reason for d in out}
    assert (reasons["b"], reasons["c"]) == (
        "not in the top 1/1.5 at rung 2",
        "not in the top 1/1.5 at rung 1",
    )
    late = [_curve(f"t{i:02d}", [float(i)] * 10) for i in range(27)]  # all past rungs 1, 3, 9
    eta3 = make_stopper("asha", AshaConfig(min_resource=1, reduction_factor=3))
    out = eta3.decide(late, {c.trial_id for c in late}, 0, np.random.default_rng(0))
    assert [d.trial_id for d in out if d.action is Action.CONTINUE] == ["t00"]


def test_a_run_resumed_from_its_checkpoint_is_not_judged_again_at_the_rungs_it_passed() -> None:
    # A restarted peer's stopper remembers nothing: it judged the resumed run at rung 1
    # against the many runs that had reached it since, and killed it at step 35 of 39.
    better = [_curve(f"b{i}", [0.1 * i] * 5, "killed") for i in range(9)]
    resumed = _curve("r", [1.0] * 36, resumed=35)
    stopper = make_stopper("asha", AshaConfig(min_resource=1, reduction_factor=3))
    out = stopper.decide([*better, resumed], {"r"}, 0, np.random.default_rng(0))
    assert _acts(out) == {"r": Action.CONTINUE}
    from_zero = _curve("r", [1.0] * 36)  # a run from step 0 is judged afresh
    fresh = make_stopper("asha", AshaConfig(min_resource=1, reduction_factor=3))
    assert _acts(fresh.decide([*better, from_zero], {"r"}, 0, np.random.default_rng(0))) == {
        "r": Action.KILL
    }


def _decide(stopper: EarlyStopper, curves: list[CurveView], own: set[str]) -> list[Decision]:
    return stopper.decide(curves, own, 0, np.random.default_rng(0))


def test_readme_default_rungs_are_steps_1_3_9() -> None:
    # README: "with its rungs at the fidelity prior's low, low·base, …, else at steps 1, 3, 9, …"
    assert AshaConfig().rungs(100) == [1, 3, 9, 27, 81]


@pytest.mark.parametrize(
    "kw", [{"min_resource": 0.0}, {"min_early_stopping_rate": -1}], ids=["resource", "rate"]
)
def test_a_config_with_no_ladder_is_refused(kw: dict[str, float]) -> None:
    # (taken, a ladder of rungs at step 0, or below the fidelity's low end, would be judged)
    with pytest.raises(MetaoptError):
        AshaConfig(**kw)  # type: ignore[arg-type]


def test_only_own_running_trials_get_a_decision() -> None:
    # A decision for a finished or frozen trial would kill what is done, or another's run.
    stopper = make_stopper("asha", AshaConfig(1, 3))
    curves = [_curve("run", [0.1] * 5), _curve("done", [0.9] * 5, "completed"),
              _curve("frozen", [0.9] * 5, "frozen")]  # fmt: skip
    out = _decide(stopper, curves, {"run", "done", "frozen"})
    assert [d.trial_id for d in out] == ["run"]


def test_a_diverged_trial_is_killed() -> None:
    # Its nan would otherwise run on to the budget, a slot wasted.
    stopper = make_stopper("asha", AshaConfig(1, 3))
    out = _decide(stopper, [_curve("nan", [0.5, float("nan")])], {"nan"})
    assert _acts(out) == {"nan": Action.KILL} and out[0].reason == "diverged (nan/inf)"


def test_a_trial_killed_at_a_rung_stays_killed_while_it_stops() -> None:
    # It exits at its next report: meanwhile its later (better) values must not revoke the
    # kill, which would let it run on past the rung it lost at.
    stopper = make_stopper("asha", AshaConfig(1, 2))
    good, bad = _curve("good", [0.1]), _curve("bad", [0.5])
    assert _acts(_decide(stopper, [good, bad], {"good", "bad"}))["bad"] is Action.KILL
    later = [_curve("good", [0.1, 0.2, 0.2, 0.2]), _curve("bad", [0.5, 0.01, 0.01, 0.01])]
    out = _decide(stopper, later, {"good", "bad"})
    assert _acts(out)["bad"] is Action.KILL and {d.trial_id: d.rung for d in out}["bad"] == 1


def test_a_kill_this_stopper_made_counts_only_to_its_rung_before_it_is_recorded() -> None:
    # Counted at the rungs above with the values it reported while stopping, it would push a
    # trial that did go on out of the top there.
    stopper = make_stopper("asha", AshaConfig(1, 2))
    out = _decide(stopper, [_curve("a", [0.5]), _curve("b", [0.1])], {"a", "b"})
    assert _acts(out) == {"a": Action.KILL, "b": Action.CONTINUE}
    # `a` still runs (its kill not yet recorded: no stopped_rung) and did well at step 2: it
    # did not go on past rung 1, so `b` alone is at rung 2, and is in its top half.
    out = _decide(stopper, [_curve("a", [0.5, 0.05]), _curve("b", [0.1, 0.2])], {"b"})
    assert _acts(out) == {"b": Action.CONTINUE}


def test_a_trial_killed_at_a_rung_counts_at_that_rung() -> None:
    # Killed there by another peer, it reached the rung: its value is among the rivals there
    # (left out, the top 1/eta of a rung would be of fewer runs, and more would go on).
    stopper = make_stopper("asha", AshaConfig(1, 2))
    killed = [_curve(f"k{i}", [v], "killed", rung=1) for i, v in enumerate((0.5, 0.6, 0.7))]
    promoted = _curve("p", [0.1, 0.1, 0.1], "completed")
    out = _decide(stopper, [*killed, promoted, _curve("t", [0.3])], {"t"})
    assert _acts(out) == {"t": Action.CONTINUE}  # 2nd of 5: in the top half (2)


def test_the_highest_rung_below_the_budget_is_judged() -> None:
    # Rungs(60) = 1, 3, 9, 27: equal up to step 26, apart from 27 on. Its last rung unjudged,
    # a run worse there would run to the budget.
    stopper = make_stopper("asha", AshaConfig(1, 3))
    a = _curve("a", [0.5] * 26 + [0.1] * 4)
    b = _curve("b", [0.5] * 26 + [0.9] * 4)
    out = _decide(stopper, [a, b], {"a", "b"})
    assert _acts(out) == {"a": Action.CONTINUE, "b": Action.KILL}
    assert {d.trial_id: d.rung for d in out}["b"] == 27


def test_a_rung_passed_is_not_judged_again_when_more_rivals_arrive() -> None:
    # Judged again, a run promoted at rung 1 would be killed there later by runs that
    # reached it after it had gone on.
    stopper = make_stopper("asha", AshaConfig(1, 3))
    assert _acts(_decide(stopper, [_curve("r", [0.9, 0.9])], {"r"})) == {"r": Action.CONTINUE}
    better = [_curve(f"b{i}", [0.1 * i] * 2, "completed") for i in range(6)]
    out = _decide(stopper, [*better, _curve("r", [0.9, 0.9])], {"r"})
    assert _acts(out) == {"r": Action.CONTINUE}  # (rung 3 not reached yet)


def test_a_run_resumed_exactly_at_a_rung_had_passed_it() -> None:
    # Resumed from its checkpoint at step 9, it was judged at rung 9 before: judged again by
    # a restarted peer, it would be killed where it had been promoted.
    better = [_curve(f"b{i}", [0.1 * i] * 12, "killed") for i in range(9)]
    resumed = _curve("r", [1.0] * 12, resumed=9)
    stopper = make_stopper("asha", AshaConfig(1, 3))
    assert _acts(_decide(stopper, [*better, resumed], {"r"})) == {"r": Action.CONTINUE}


def test_a_run_thawed_from_an_older_checkpoint_is_not_judged_again_here() -> None:
    # This stopper judged it up to rung 9; it resumed from a checkpoint at step 2. Its
    # checkpoint is not what this stopper remembers: judged again from rung 3, it would be
    # killed at rungs it had passed.
    stopper = make_stopper("asha", AshaConfig(1, 3))
    assert _acts(_decide(stopper, [_curve("r", [0.9] * 12)], {"r"})) == {"r": Action.CONTINUE}
    better = [_curve(f"b{i}", [0.1 * i] * 12, "completed") for i in range(9)]
    again = _curve("r", [0.9] * 13, resumed=2)
    assert _acts(_decide(stopper, [*better, again], {"r"})) == {"r": Action.CONTINUE}


def _sparse(tid: str, steps: np.ndarray, level: float, state: str) -> CurveView:
    values = np.full(steps.shape, level, dtype=np.float64)
    return CurveView(tid, np.array([0.5]), steps, values, state, 100)  # type: ignore[arg-type]


@pytest.mark.parametrize("every", [2, 10])
def test_runs_that_report_every_few_steps_are_judged_at_the_rungs_they_reached(every: int) -> None:
    # A script that evaluates every 2 epochs reports steps 2, 4, 6, ...: no run had a value
    # at rung 1, which was taken for "not there yet", every higher rung waited behind it,
    # and ASHA stopped no run at all, however bad (0 of 8 on a real peer; 4 of 8 reporting
    # every step).
    s = np.arange(every, 101, every)
    done = [_sparse(f"good{i}", s, 0.1 + 0.01 * i, "completed") for i in range(5)]
    bad = _sparse("bad", s[: len(s) // 2], 5.0, "running")
    [decided] = make_stopper("asha").decide([*done, bad], {"bad"}, 0, np.random.default_rng(0))
    rung = 3 if every == 2 else 27  # (the lowest rung with a report at or before it)
    assert (decided.action, decided.reason) == (Action.KILL, f"not in the top 1/3 at rung {rung}")


def test_a_study_with_asha_stops_runs_that_report_every_second_step() -> None:
    study = Study({"x": "uniform(0, 1)"}, seed=0, early_stopping="asha", max_step=60)
    stops = 0
    for _ in range(12):
        trial = study.ask()
        for step in range(2, 61, 2):
            study.report(trial, step, trial.params["x"] + 1.0 / step)
            if study.should_stop(trial):
                stops += 1
                break
        else:
            study.tell(trial, trial.params["x"])
    assert stops >= 4


def test_a_trial_with_no_report_yet_runs_on_beside_one_at_a_rung() -> None:
    stopper = make_stopper("asha", AshaConfig(min_resource=1, reduction_factor=3))
    curves = [_curve("fresh", []), _curve("b", [0.3, 0.2]), _curve("c", [0.9, 0.8])]
    assert _acts(_decide(stopper, curves, {"fresh", "b", "c"}))["fresh"] is Action.CONTINUE
