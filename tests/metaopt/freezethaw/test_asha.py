"""ASHA as a peer meets it: trials judged seconds after their rungs, and restarts."""

from __future__ import annotations

import dataclasses

import numpy as np

from metaopt.freezethaw import Action, AshaConfig, CurveView, make_stopper

T = 60


def _curve(
    tid: str, values: list[float], state: str = "running", resumed: int | None = None
) -> CurveView:
    steps = np.arange(1, len(values) + 1)
    return CurveView(
        tid,
        np.array([0.5]),
        steps,
        np.array(values),
        state,
        T,
        resumed,  # type: ignore[arg-type]
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
