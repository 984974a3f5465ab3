"""Laws of the early-stopping decisions: freeze-thaw, ASHA, median rule, none."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metaopt import MetaoptError
from metaopt.freezethaw import (
    Action,
    AshaConfig,
    CurveView,
    FreezeThawPolicyConfig,
    FreezeThawStopper,
    MedianConfig,
    make_stopper,
)

Name = Literal["freeze-thaw", "asha", "median", "none"]
NAMES: tuple[Name, ...] = ("freeze-thaw", "asha", "median", "none")
T = 30


def _pool(seed: int, n: int = 14) -> list[CurveView]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = rng.random(2)
        k = int(rng.integers(0, T + 1))
        s = np.arange(1, k + 1)
        v = 0.2 + x[0] + np.exp(-s / (2 + 8 * x[1])) + 0.01 * rng.standard_normal(k)
        state = "completed" if k == T else ("frozen" if i % 5 == 0 and k else "running")
        out.append(CurveView(f"t{i:02d}", x, s, v, state, T))  # type: ignore[arg-type]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
@given(seed=st.integers(0, 10_000))
@settings(max_examples=3, deadline=None)
def test_decisions_are_deterministic_and_only_for_own_trials(name: Name, seed: int) -> None:
    curves = _pool(seed)
    own = {c.trial_id for c in curves[::2]}
    a = make_stopper(name).decide(curves, own, 1, np.random.default_rng(1))
    b = make_stopper(name).decide(curves, own, 1, np.random.default_rng(1))
    assert a == b
    assert all(d.trial_id in own for d in a)
    running = {c.trial_id for c in curves if c.trial_id in own and c.state == "running"}
    decided = [d.trial_id for d in a if d.action is not Action.THAW]
    assert running <= set(decided)
    assert sum(d.action is Action.THAW for d in a) <= 1


@pytest.mark.parametrize("name", NAMES)
def test_a_trial_with_no_reports_is_never_stopped(name: Name) -> None:
    curves = [
        *_pool(3),
        CurveView("fresh", np.array([0.5, 0.5]), np.zeros(0, np.int64), np.zeros(0), "running", T),
    ]
    for _ in range(3):
        out = make_stopper(name).decide(curves, {"fresh"}, 0, np.random.default_rng(0))
        assert [(d.trial_id, d.action) for d in out] == [("fresh", Action.CONTINUE)]


@pytest.mark.parametrize("name", NAMES)
def test_no_thaw_without_free_slots(name: Name) -> None:
    curves = _pool(8, 20)
    own = {c.trial_id for c in curves}
    out = make_stopper(name).decide(curves, own, 0, np.random.default_rng(0))
    assert not any(d.action is Action.THAW for d in out)


def _flat(tid: str, level: float, k: int, x: float) -> CurveView:
    s = np.arange(1, k + 1)
    v = level + 0.5 * np.exp(-s / 3.0)
    return CurveView(tid, np.array([x, x]), s, v, "running", T)


def _steep(tid: str, level: float, k: int, x: float, state: str = "completed") -> CurveView:
    """Far above everything early, then down to level: beats no one at the early rungs."""
    s = np.arange(1, k + 1)
    v = level + 20.0 * np.exp(-s / 5.0)
    return CurveView(tid, np.array([x, x]), s, v, state, T)  # type: ignore[arg-type]


def test_freeze_thaw_model_never_acts_before_min_steps() -> None:
    # "bad" leads at its rung (3) but flattens far above where "best" ended.
    best = _steep("best", 0.0, T, 0.1)
    cfg = FreezeThawPolicyConfig(min_steps=4, min_points=4, warmup_completed=1, model_min_points=1)
    bad = _flat("bad", 5.0, 3, 0.9)
    out = make_stopper("freeze-thaw", cfg).decide([best, bad], {"bad"}, 0, np.random.default_rng(0))
    assert [(d.action, d.reason) for d in out] == [(Action.CONTINUE, "too little data")]
    bad = _flat("bad", 5.0, 4, 0.9)
    out = make_stopper("freeze-thaw", cfg).decide([best, bad], {"bad"}, 0, np.random.default_rng(0))
    assert out[0].action in (Action.FREEZE, Action.KILL)


def test_freeze_thaw_freezes_a_hopeless_run_and_kills_a_diverged_one() -> None:
    curves = [_flat(f"g{i}", 0.1 + 0.01 * i, T, 0.1 + 0.02 * i) for i in range(6)]
    curves = [CurveView(c.trial_id, c.x, c.steps, c.values, "completed", T) for c in curves]
    curves.append(_flat("hopeless", 3.0, 8, 0.9))
    nan = _flat("nan", 0.5, 8, 0.5)
    curves.append(CurveView("nan", nan.x, nan.steps, np.r_[nan.values[:-1], np.nan], "running", T))
    out = make_stopper("freeze-thaw").decide(
        curves, {"hopeless", "nan"}, 0, np.random.default_rng(0)
    )
    acts = {d.trial_id: d.action for d in out}
    assert acts["hopeless"] in (Action.FREEZE, Action.KILL)
    assert acts["nan"] is Action.KILL


def test_freeze_thaw_model_stops_nothing_until_enough_runs_have_completed() -> None:
    # "hopeless" leads at its rung, so only the model could stop it.
    done = [_steep(f"g{i}", 0.1 + 0.01 * i, T, 0.1 + 0.02 * i) for i in range(3)]
    hopeless = _flat("hopeless", 3.0, 8, 0.9)
    cfg = FreezeThawPolicyConfig(warmup_completed=3, model_min_points=1)
    early = make_stopper("freeze-thaw", cfg).decide(
        [*done[:2], hopeless], {"hopeless"}, 0, np.random.default_rng(0)
    )
    assert [(d.action, d.reason) for d in early] == [
        (Action.CONTINUE, "warm-up: 2 of 3 runs completed")
    ]
    later = make_stopper("freeze-thaw", cfg).decide(
        [*done, hopeless], {"hopeless"}, 0, np.random.default_rng(0)
    )
    assert later[0].action in (Action.FREEZE, Action.KILL)


def test_freeze_thaw_freezes_a_run_outside_the_top_at_its_rung() -> None:
    # Rungs at 1, 3, 9, 27 (T = 30). A forecast this vague and a freeze_ratio this small leave
    # the model nothing to freeze, so only the rungs can; and no run has completed (warm-up).
    cfg = FreezeThawPolicyConfig(freeze_ratio=1e-9, thaw_ratio=1e-9, var_inflation=1e6)
    five = [_flat(f"g{i}", 0.1 + 0.01 * i, 12, 0.1 + 0.02 * i) for i in range(5)]

    def decide(
        last: CurveView, fresh: bool = True, others: list[CurveView] = five
    ) -> tuple[Action, str]:
        out = make_stopper("freeze-thaw", cfg).decide(
            [*others, last], {"last"}, 0, np.random.default_rng(0), fresh_available=fresh
        )
        return out[0].action, out[0].reason

    # At step 8 the latest rung is 3, where all five others were better.
    assert decide(_flat("last", 0.16, 8, 0.2)) == (
        Action.FREEZE,
        "5 of 5 runs better at rung 3",
    )
    # The first to reach a rung is in its top; so is the 2nd of 6 (the top is 6 // 3 = 2).
    assert decide(_flat("last", 0.16, 2, 0.2))[0] is Action.FREEZE  # rung 1
    assert decide(_flat("last", 0.105, 10, 0.2))[0] is Action.CONTINUE  # 1 better at rung 9
    assert decide(_flat("last", 0.0, 13, 0.2))[0] is Action.CONTINUE  # the best at rung 9
    short = [_flat(f"s{i}", 0.01 * i, 2, 0.5) for i in range(5)]
    assert decide(_flat("last", 5.0, 4, 0.2), others=short)[0] is Action.CONTINUE  # 1st at 3
    # Once no new trial may start, a free slot has nothing better to run.
    assert decide(_flat("last", 0.16, 8, 0.2), fresh=False)[0] is Action.CONTINUE


def test_a_running_trial_in_the_top_of_a_rung_is_not_judged_there_again() -> None:
    # As in ASHA a run promoted at rung 3 goes on to rung 9, whatever reaches rung 3 after it
    # (another peer's runs, say); a new stopper, which never saw it pass, would freeze it.
    cfg = FreezeThawPolicyConfig(freeze_ratio=1e-9, thaw_ratio=1e-9, var_inflation=1e6)
    worse = [_flat(f"w{i}", 1.0 + 0.1 * i, 3, 0.5) for i in range(2)]
    better = [_flat(f"b{i}", 0.01 * i, 3, 0.5) for i in range(6)]
    stopper = make_stopper("freeze-thaw", cfg)
    rng = np.random.default_rng(0)
    first = stopper.decide([*worse, _flat("run", 0.5, 3, 0.2)], {"run"}, 0, rng)
    assert first[0].action is Action.CONTINUE
    later = [*worse, *better, _flat("run", 0.5, 5, 0.2)]
    assert stopper.decide(later, {"run"}, 0, rng)[0].action is Action.CONTINUE
    fresh = make_stopper("freeze-thaw", cfg).decide(later, {"run"}, 0, rng)
    assert (fresh[0].action, fresh[0].reason) == (Action.FREEZE, "6 of 8 runs better at rung 3")
    # Nor does a new stopper (a restarted peer's) judge a run resumed from a checkpoint past it.
    resumed = dataclasses.replace(later[-1], resumed_step=4)
    again = make_stopper("freeze-thaw", cfg).decide([*later[:-1], resumed], {"run"}, 0, rng)
    assert again[0].action is Action.CONTINUE


def test_the_model_is_fitted_only_when_a_frozen_trial_can_take_a_free_slot() -> None:
    # Running trials are left to the rungs (model_min_points=None) and a frozen one can only be
    # thawed or killed into a free slot: with every slot busy, the peer's monitor tick must not
    # pay for a curve-model fit whose result no decision uses.
    curves = [_done(f"d{i}", 0.1 * i, 0.1 * i) for i in range(3)]
    curves += [_flat("run", 0.0, 12, 0.5)]
    curves += [dataclasses.replace(_flat("cold", 0.05, 9, 0.7), state="frozen")]
    stopper = FreezeThawStopper()
    busy = stopper.decide(curves, {"run", "cold"}, 0, np.random.default_rng(0))
    assert [(d.trial_id, d.action) for d in busy] == [("run", Action.CONTINUE)]
    assert stopper.last_fit is None
    stopper.decide(curves, {"run", "cold"}, 1, np.random.default_rng(0))
    assert stopper.last_fit is not None


def hopeless_and_ahead_at_step_9() -> tuple[list[CurveView], list[CurveView]]:
    """Six completed runs that end hopeless, and six completed runs far ahead of any other at
    step 9 that then got worse (a frozen run at 0.5 there trails them at its rung)."""
    others = [_steep(f"h{i}", 2.0 + 0.05 * i, T, 0.2 + 0.06 * i) for i in range(6)]
    s = np.arange(1, T + 1)
    behind = [
        CurveView(
            f"b{i}", np.array([0.9, 0.1 * i]), s, np.where(s <= 9, 0.01 * i, 3.0), "completed", T
        )
        for i in range(6)
    ]
    return others, behind


def test_freeze_thaw_thaws_only_a_trial_in_the_top_of_its_rung() -> None:
    # The model rates the frozen trial's chance far above a fresh one's (all others ended
    # hopeless); once runs that were better at step 9 (and then got worse) exist, "low" trails
    # most runs at its rung, so it waits while a new trial may start.
    others, behind = hopeless_and_ahead_at_step_9()
    low = dataclasses.replace(_flat("low", 0.3, 9, 0.5), state="frozen")
    cfg = FreezeThawPolicyConfig(warmup_completed=1)

    def thaws(curves: list[CurveView], fresh: bool = True) -> list[str]:
        out = make_stopper("freeze-thaw", cfg).decide(
            curves, {"low"}, 1, np.random.default_rng(0), fresh_available=fresh
        )
        return [d.trial_id for d in out if d.action is Action.THAW]

    assert thaws([*others, low]) == ["low"]
    assert thaws([*others, *behind, low]) == []
    assert thaws([*others, *behind, low], fresh=False) == ["low"]


def test_the_model_freezes_nothing_before_model_min_points() -> None:
    # "slow" leads at its rung, but the model sees it end far above the others.
    done = [_steep(f"g{i}", 0.1 + 0.01 * i, T, 0.1 + 0.02 * i) for i in range(6)]
    slow = _flat("slow", 1.5, 10, 0.9)

    def action(min_points: int) -> Action:
        cfg = FreezeThawPolicyConfig(model_min_points=min_points)
        out = make_stopper("freeze-thaw", cfg).decide(
            [*done, slow], {"slow"}, 0, np.random.default_rng(0)
        )
        return out[0].action

    assert action(11) is Action.CONTINUE
    assert action(10) is Action.FREEZE
    default = make_stopper("freeze-thaw").decide(
        [*done, slow], {"slow"}, 0, np.random.default_rng(0)
    )
    assert default[0].action is Action.CONTINUE  # by default the model freezes no running trial


def test_freeze_thaw_rungs_follow_the_fidelity_prior() -> None:
    cfg = FreezeThawPolicyConfig.from_fidelity(2, 4)
    assert [cfg.latest_rung(s, 100) for s in (1, 2, 7, 8, 31, 32, 99)] == [None, 2, 2, 8, 8, 32, 32]
    assert cfg.latest_rung(40, 32) == 8  # the budget itself is no rung
    with pytest.raises(MetaoptError):
        FreezeThawPolicyConfig(rung_base=1)


def test_freeze_thaw_spares_a_late_bloomer() -> None:
    # The others start far above "bloom", so it leads at its rungs and only the model judges it.
    curves = [_steep(f"g{i}", 0.1 + 0.01 * i, T, 0.1 + 0.02 * i) for i in range(6)]
    s = np.arange(1, 16)
    # Flat at 1.0, then dropping faster and faster: nothing like a decaying exponential.
    bloom = 1.0 - 0.004 * np.maximum(s - 5, 0) ** 2.2
    curves.append(CurveView("bloom", np.array([0.9, 0.9]), s, bloom, "running", T))
    # A huge freeze_ratio would freeze anything, so only the guard can keep it running (no
    # warm-up: the other runs are unfinished, and the warm-up rule is tested on its own).
    cfg = FreezeThawPolicyConfig(
        freeze_ratio=1e9, thaw_ratio=1e9, warmup_completed=0, model_min_points=1
    )
    out = make_stopper("freeze-thaw", cfg).decide(curves, {"bloom"}, 0, np.random.default_rng(0))
    assert out[0].action is Action.CONTINUE
    assert "late bloomer" in out[0].reason
    decel = np.r_[bloom[:5], 1.0 - 0.3 * (1 - np.exp(-(s[5:] - 5) / 3.0))]
    curves[-1] = CurveView("bloom", np.array([0.9, 0.9]), s, decel, "running", T)
    out = make_stopper("freeze-thaw", cfg).decide(curves, {"bloom"}, 0, np.random.default_rng(0))
    assert out[0].action in (Action.FREEZE, Action.KILL)


def test_asha_kills_outside_the_top_third_at_a_rung() -> None:
    stopper = make_stopper("asha", AshaConfig(min_resource=3, reduction_factor=3))
    good = [_flat(f"g{i}", 0.1 * i, 4, 0.5) for i in range(6)]
    worse = _flat("w", 2.0, 3, 0.5)
    out = stopper.decide([*good, worse], {"w", "g0"}, 0, np.random.default_rng(0))
    acts = {d.trial_id: d.action for d in out}
    assert acts == {"w": Action.KILL, "g0": Action.CONTINUE}


def test_asha_rungs_follow_the_fidelity_prior() -> None:
    assert AshaConfig.from_fidelity(1, 3).rungs(81) == [1, 3, 9, 27]
    with pytest.raises(MetaoptError):
        AshaConfig(reduction_factor=1)


def test_a_fractional_fidelity_ladder_is_kept_not_rounded() -> None:
    # fidelity(2.5, 100, base=2.5) has its rungs at 2.5, 6.25, 15.6, 39.1, 97.7: reached at
    # steps 3, 7, 16, 40, 98. Rounding low and base first gave 2, 4, 8, 16, 32, 64.
    assert AshaConfig.from_fidelity(2.5, 2.5).rungs(100) == [3, 7, 16, 40, 98]
    cfg = FreezeThawPolicyConfig.from_fidelity(2.5, 2.5)
    assert [cfg.latest_rung(s, 100) for s in (2, 3, 6, 7, 99)] == [None, 3, 3, 7, 98]
    assert AshaConfig.from_fidelity(0.1, 10).rungs(1000) == [1, 10, 100]  # no 0.1*10 = 1.0000001
    assert AshaConfig.from_fidelity(1, 1.2).rungs(3) == [1, 2]  # 1.2 and 1.44 are both step 2
    # With eta = 1.5 a trial must be in the best 2/3: of 3 at the rung, the worst is killed.
    # (At rung 1 alone: at rung 2 only the two that went on count, and the worse goes too.)
    stopper = make_stopper("asha", AshaConfig(min_resource=1, reduction_factor=1.5))
    trio = [_flat(f"t{i}", 0.1 * i, 1, 0.5) for i in range(3)]
    out = stopper.decide(trio, {"t0", "t1", "t2"}, 0, np.random.default_rng(0))
    assert {d.trial_id: d.action for d in out} == {
        "t0": Action.CONTINUE,
        "t1": Action.CONTINUE,
        "t2": Action.KILL,
    }


def test_median_rule_kills_below_median_after_warmup() -> None:
    stopper = make_stopper("median", MedianConfig(n_warmup_steps=5, n_min_trials=3))
    others = [_flat(f"o{i}", 0.1 * i, 10, 0.5) for i in range(5)]
    out = stopper.decide([*others, _flat("w", 3.0, 6, 0.5)], {"w"}, 0, np.random.default_rng(0))
    assert out[0].action is Action.KILL
    early = stopper.decide([*others, _flat("e", 3.0, 4, 0.5)], {"e"}, 0, np.random.default_rng(0))
    assert early[0].action is Action.CONTINUE


def test_make_stopper_rejects_unknown_names_and_wrong_configs() -> None:
    with pytest.raises(MetaoptError):
        make_stopper("hyperband")  # type: ignore[arg-type]
    with pytest.raises(MetaoptError):
        make_stopper("asha", MedianConfig())


def _done(tid: str, level: float, x: float) -> CurveView:
    c = _flat(tid, level, T, x)
    return CurveView(tid, c.x, c.steps, c.values, "completed", T)


def test_the_bar_is_a_final_value_never_a_partial_one() -> None:
    stopper = FreezeThawStopper()
    done = _done("done", 0.5, 0.2)
    # An unfinished curve offers its forecast plus ref_z sd, a completed one its last values.
    early = _flat("early", 0.05, 4, 0.8)
    new = _flat("new", 0.6, 6, 0.5)
    curves = [done, early, new]
    fm = stopper.model.fit(curves)
    bars, leader = stopper._bars(curves, fm)
    mean, var = fm.predict("early")
    offer_early = mean + stopper.config.ref_z * math.sqrt(stopper.config.var_inflation * var)
    smoothed_done = float(done.values[-stopper.config.smooth_window :].mean())
    assert bars["new"] == pytest.approx(min(smoothed_done, offer_early))
    # The best offer's own bar is the runner-up's: a trial never has to beat itself.
    best = min((smoothed_done, "done"), (offer_early, "early"))[1]
    assert bars[best] == pytest.approx(max(smoothed_done, offer_early))
    assert leader == best


def test_freeze_thaw_does_not_thaw_what_it_just_froze() -> None:
    curves = [_done(f"g{i}", 0.1 + 0.01 * i, 0.1 + 0.02 * i) for i in range(6)]
    curves.append(_flat("slow", 1.5, 10, 0.9))
    stopper = make_stopper("freeze-thaw")
    first = stopper.decide(curves, {"slow"}, 0, np.random.default_rng(0))
    assert first[0].action is Action.FREEZE
    frozen = [*curves[:-1], dataclasses.replace(curves[-1], state="frozen")]
    again = stopper.decide(frozen, {"slow"}, 1, np.random.default_rng(0))
    assert not any(d.action is Action.THAW for d in again)


def test_freeze_thaw_thaws_a_frozen_trial_that_now_leads() -> None:
    # The others got worse news than the frozen trial: it is the best bet for a free slot.
    curves = [_done(f"g{i}", 1.0 + 0.05 * i, 0.1 + 0.02 * i) for i in range(6)]
    lead = _flat("lead", 0.2, 10, 0.5)
    curves.append(dataclasses.replace(lead, state="frozen"))
    out = make_stopper("freeze-thaw").decide(curves, {"lead"}, 1, np.random.default_rng(0))
    assert [(d.trial_id, d.action) for d in out] == [("lead", Action.THAW)]


def test_freeze_thaw_config_rejects_a_thaw_ratio_below_the_freeze_ratio() -> None:
    with pytest.raises(MetaoptError):
        FreezeThawPolicyConfig(freeze_ratio=1.0, thaw_ratio=0.5)
    with pytest.raises(MetaoptError):
        FreezeThawPolicyConfig(var_inflation=0.0)


def test_with_no_new_trial_possible_a_frozen_trial_with_a_chance_is_thawed() -> None:
    # Headed a little above the best (a small chance to beat it): worth less than a fresh
    # configuration while one may start; once the budget is spent a free slot has nothing better
    # to do than resume it.
    curves = [_done(f"g{i}", 0.3 + 0.01 * i, 0.1 + 0.02 * i) for i in range(6)]
    curves.append(dataclasses.replace(_flat("mid", 0.305, 6, 0.3), state="frozen"))

    def thaws(fresh: bool) -> list[str]:
        out = make_stopper("freeze-thaw").decide(
            curves, {"mid"}, 1, np.random.default_rng(0), fresh_available=fresh
        )
        return [d.trial_id for d in out if d.action is Action.THAW]

    assert thaws(True) == []
    assert thaws(False) == ["mid"]


@pytest.mark.parametrize("others", [0, 1])
def test_with_nothing_to_compare_with_a_frozen_trial_is_thawed_once_nothing_new_may_start(
    others: int,
) -> None:
    # With no other curve (or none with enough points to set a bar, so its own bar is the
    # absent second best) the policy said nothing about a frozen trial, and the peer killed
    # it when the budget ran out: a 1-trial experiment ended with no result.
    frozen = dataclasses.replace(_flat("only", 0.3, 9, 0.3), state="frozen")
    curves = [frozen] + [_flat(f"young{i}", 0.9, 2, 0.8) for i in range(others)]

    def actions(fresh: bool, free: int) -> list[tuple[str, Action]]:
        out = make_stopper("freeze-thaw").decide(
            curves, {"only"}, free, np.random.default_rng(0), fresh_available=fresh
        )
        return [(d.trial_id, d.action) for d in out]

    assert actions(False, 1) == [("only", Action.THAW)]
    assert actions(True, 1) == []  # a new configuration is as good a bet: it stays frozen
    assert actions(False, 0) == []  # no slot to take it


def test_with_no_new_trial_possible_nothing_is_frozen() -> None:
    curves = [_done(f"g{i}", 0.1 + 0.01 * i, 0.1 + 0.02 * i) for i in range(6)]
    curves.append(_flat("slow", 0.8, 10, 0.9))
    stopper = make_stopper("freeze-thaw")
    rng = np.random.default_rng(0)
    assert stopper.decide(curves, {"slow"}, 0, rng)[0].action is Action.FREEZE
    kept = stopper.decide(curves, {"slow"}, 0, rng, fresh_available=False)
    assert kept[0].action is Action.CONTINUE


def test_the_fresh_chance_comes_from_the_configurations_tried_so_far() -> None:
    # The same running trial, a little above the leader: while every other configuration tried
    # ended hopeless a new one is no better bet, so it continues; among young configurations
    # that may well beat the leader it is frozen for a fresh one.
    hopeless = [_done(f"h{i}", 1.0 + 0.05 * i, 0.2 + 0.06 * i) for i in range(10)]
    young = [_flat(f"y{i}", 0.21, 4, 0.2 + 0.06 * i) for i in range(10)]
    assert len(hopeless) >= FreezeThawPolicyConfig().fresh_min_trials

    def action(others: list[CurveView]) -> Action:
        curves = [_done("lead", 0.2, 0.1), *others, _flat("mid", 0.22, 10, 0.5)]
        # One completed run, the leader, is warm-up enough here: the rule under test comes after.
        cfg = FreezeThawPolicyConfig(warmup_completed=1, model_min_points=1)
        out = make_stopper("freeze-thaw", cfg).decide(curves, {"mid"}, 0, np.random.default_rng(0))
        return out[0].action

    assert action(hopeless) is Action.CONTINUE
    assert action(young) is Action.FREEZE


class _Misfit:
    """A fitted model that forecasts every unfinished curve to end at 5.0, with certainty."""

    def __init__(self, curves: list[CurveView]) -> None:
        self.trial_ids = tuple(sorted(c.trial_id for c in curves))
        self.value_scale = 1.0
        self.noise_sd = 0.01
        done = {c.trial_id: float(c.values[-1]) for c in curves if c.state == "completed"}
        self._means = np.array([done.get(t, 5.0) for t in self.trial_ids])

    def finals(self) -> tuple[np.ndarray, np.ndarray]:
        return self._means, np.full(self._means.shape, 1e-6)


class _MisfitModel:
    def fit(self, curves: list[CurveView], optimise: bool = True) -> _Misfit:
        return _Misfit(curves)


def test_freeze_thaw_never_kills_a_run_already_below_the_bar() -> None:
    # Eight completed runs end at 1.0 and above; "ahead" is at 0.5 and falling after 40 steps,
    # but the model forecasts 5.0 for it. A kill cannot be undone, so the forecast must not
    # kill a run that is already better than the bar; "behind" (at 3.0, frozen since it
    # trailed everyone at rung 27) is killed.
    long_t = 100
    curves = [
        CurveView(
            f"done{i}",
            np.array([0.1 * i, 0.5]),
            np.arange(1, long_t + 1),
            np.full(long_t, 1.0 + 0.1 * i),
            "completed",
            long_t,
        )
        for i in range(8)
    ]
    s = np.arange(1, 41)
    for tid, level, state in (("ahead", 0.5, "running"), ("behind", 3.0, "frozen")):
        curves.append(
            CurveView(tid, np.array([0.9, 0.9]), s, level + np.exp(-s / 10.0), state, long_t)
        )
    # The model may judge running trials here (by default it leaves them to the rungs).
    stopper = FreezeThawStopper(FreezeThawPolicyConfig(model_min_points=1))
    stopper.model = _MisfitModel()  # type: ignore[assignment]
    acts = {
        d.trial_id: d.action
        for d in stopper.decide(curves, {"ahead", "behind"}, 1, np.random.default_rng(0))
    }
    assert acts["behind"] is Action.KILL
    assert acts["ahead"] is not Action.KILL


def test_curves_near_the_float_maximum_are_decided_not_raised() -> None:
    # Values a Study accepts (finite); their spread and differences overflowed float64.
    steps = np.arange(1, 11)
    alt = np.where(steps % 2 == 0, 1e308, -1e308)
    states = ["completed", "completed", "frozen", "running"]
    curves = [
        CurveView(f"t{i}", np.array([i / 5]), steps, alt, state, 20)  # type: ignore[arg-type]
        for i, state in enumerate(states)
    ]
    decisions = make_stopper("freeze-thaw").decide(
        curves, {"t2", "t3"}, 1, np.random.default_rng(0)
    )
    assert {d.trial_id for d in decisions} <= {"t2", "t3"}
    assert any(d.trial_id == "t3" for d in decisions)


def test_the_model_is_fitted_on_a_bounded_subset_with_the_judged_and_the_best_curves() -> None:
    # Fitted on every curve, a decision at 8,000 curves took 26 s and 3 GB, holding the GIL.
    curves = [_done(f"g{i:03d}", 1.0 + 0.01 * i, (i % 17) / 17) for i in range(200)]
    curves.append(_done("best", 0.05, 0.3))
    lead = _flat("lead", 0.2, 10, 0.5)
    curves.append(dataclasses.replace(lead, state="frozen"))
    config = FreezeThawPolicyConfig(max_model_curves=40)
    out = FreezeThawStopper(config).decide(curves, {"lead"}, 1, np.random.default_rng(0))
    stopper = FreezeThawStopper(config)
    again = stopper.decide(curves, {"lead"}, 1, np.random.default_rng(0))
    assert out == again  # deterministic for fixed inputs and generator
    fitted = stopper.last_fit
    assert fitted is not None and len(fitted.trial_ids) == 40
    assert {"lead", "best", "g000"} <= set(fitted.trial_ids)
    # Under the cap, every curve.
    whole = FreezeThawStopper()
    whole.decide(curves, {"lead"}, 1, np.random.default_rng(0))
    assert whole.last_fit is not None and len(whole.last_fit.trial_ids) == len(curves)


def test_the_subset_stands_for_every_curve_in_the_fresh_rate_and_keeps_the_best_for_the_bar() -> (
    None
):
    # The best quarter, there for the bar, made the fresh rate's mean ten times too high.
    from metaopt.freezethaw._policy import _model_subset

    curves = [_done(f"g{i:04d}", 1.0 + 0.001 * i, (i % 17) / 17) for i in range(1000)]
    judged = [dataclasses.replace(_flat("lead", 0.2, 10, 0.5), state="frozen")]
    fitted, population = _model_subset([*curves, *judged], judged, 100, np.random.default_rng(0))
    ids = [c.trial_id for c in fitted]
    assert len(ids) == len(set(ids)) == 100 and "lead" in ids
    assert {f"g{i:04d}" for i in range(24)} <= set(ids)  # the best, for the bar
    assert len(population) == 1 + 75 and {c.trial_id for c in population} <= set(ids)
    assert sum(c.trial_id < "g0050" for c in population) <= 12  # ~4 expected of a uniform draw
