"""ASHA as a peer meets it: trials judged seconds after their rungs, and restarts."""

from __future__ import annotations

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
    # Once its kill is known, and to a stopper that did not kill it (another peer's).
    killed = _curve("fast", list(fast.values), "killed")
    for judge in (stopper, make_stopper("asha", AshaConfig(1, 3))):
        again = judge.decide([slow, killed], {"slow"}, 0, np.random.default_rng(0))
        assert _acts(again) == {"slow": Action.CONTINUE}


def test_a_killed_trial_still_counts_in_the_number_at_the_rungs_above() -> None:
    # Its value there outranks nobody, but the top 1/eta is of every value there, as it was:
    # of 3 at rung 2 with eta 1.5, two go on.
    stopper = make_stopper("asha", AshaConfig(min_resource=1, reduction_factor=1.5))
    curves = [_curve("a", [0.1, 0.1]), _curve("b", [0.2, 0.2]), _curve("c", [0.3, 0.3])]
    out = stopper.decide(curves, {"a", "b", "c"}, 0, np.random.default_rng(0))
    assert _acts(out) == {"a": Action.CONTINUE, "b": Action.CONTINUE, "c": Action.KILL}


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
