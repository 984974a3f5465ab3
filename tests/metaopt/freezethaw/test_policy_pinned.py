"""metaopt.freezethaw._policy: what the freeze-thaw rule decides at its edges (pinned by a
mutation audit: the suite left these guards, bounds and orderings free to change).

Most scenarios replace the curve model with a scripted one (_Scripted) so the decision rule is
tested on its own: a forecast of each curve's final value and variance, chosen by the test.
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest

from metaopt import MetaoptError
from metaopt.freezethaw import (
    Action,
    CurveView,
    Decision,
    FreezeThawPolicyConfig,
    FreezeThawStopper,
    make_stopper,
)
from metaopt.freezethaw._model import value_at
from metaopt.freezethaw._policy import _model_subset, _without_a_bar, diverged
from tests.metaopt.freezethaw.test_policy import (
    T,
    _done,
    _flat,
    _steep,
    hopeless_and_ahead_at_step_9,
)

LONG = 100  # rungs 1, 3, 9, 27, 81


class _Scripted:
    """A fitted model whose forecasts of final values the test sets: {trial_id: (mean, var)};
    a completed curve not listed ends at its last value, anything else unlisted at 5.0 for sure.
    An untried configuration is forecast to end at fresh_mean (variance fresh_var)."""

    def __init__(
        self,
        curves: list[CurveView],
        finals: dict[str, tuple[float, float]],
        noise_sd: float,
        fresh_mean: float,
        fresh_var: float,
    ) -> None:
        self.trial_ids = tuple(sorted(c.trial_id for c in curves))
        self.value_scale = 1.0
        self.noise_sd = noise_sd
        done = {c.trial_id: float(c.values[-1]) for c in curves if c.state == "completed"}
        pairs = [finals.get(t, (done.get(t, 5.0), 1e-6)) for t in self.trial_ids]
        self._means = np.array([p[0] for p in pairs])
        self._vars = np.array([p[1] for p in pairs])
        self.data = SimpleNamespace(X=np.zeros((len(curves), 2)))
        self._fresh = (fresh_mean, fresh_var)

    def finals(self) -> tuple[np.ndarray, np.ndarray]:
        return self._means, self._vars

    def fresh_final(self, X: np.ndarray, max_step: int) -> tuple[np.ndarray, np.ndarray]:
        n = X.shape[0]
        return np.full(n, self._fresh[0]), np.full(n, self._fresh[1])


class _ScriptedModel:
    def __init__(
        self,
        finals: dict[str, tuple[float, float]] | None = None,
        noise_sd: float = 0.01,
        fresh_mean: float = -1e6,
        fresh_var: float = 1.0,
    ) -> None:
        self.args = (finals or {}, noise_sd, fresh_mean, fresh_var)

    def fit(self, curves: list[CurveView], optimise: bool = True) -> _Scripted:
        return _Scripted(list(curves), *self.args)


def _scripted(config: FreezeThawPolicyConfig, model: _ScriptedModel) -> FreezeThawStopper:
    stopper = FreezeThawStopper(config)
    stopper.model = model  # type: ignore[assignment]
    return stopper


def _curve(
    tid: str, values: np.ndarray, state: str = "running", steps: np.ndarray | None = None
) -> CurveView:
    s = np.arange(1, len(values) + 1) if steps is None else steps
    return CurveView(tid, np.array([0.5, 0.5]), s, np.asarray(values, float), state, LONG)  # type: ignore[arg-type]


def _completed_steep(n: int) -> list[CurveView]:
    """Completed runs far above everything early (so a judged run leads at its rungs), ending
    near 0.1 (so they set the bar)."""
    s = np.arange(1, LONG + 1)
    return [
        CurveView(
            f"done{i}",
            np.array([0.1 * i, 0.2]),
            s,
            0.1 + 0.01 * i + 20 * np.exp(-s / 5.0),
            "completed",
            LONG,
        )
        for i in range(n)
    ]


def _acts(out: list[Decision]) -> dict[str, Action]:
    return {d.trial_id: d.action for d in out}


# --- what is accepted and refused before any model -------------------------------------------


def test_a_running_trial_whose_first_report_is_nan_is_killed_as_diverged() -> None:
    """A run that reports nan at once has no finite point, but it is broken, not unreported:
    it must be killed (diverged), not left running as "no reports yet" for its whole budget."""
    broken = CurveView("nan", np.array([0.5, 0.5]), np.array([1]), np.array([np.nan]), "running", T)
    for name in ("freeze-thaw",):
        out = make_stopper(name).decide(
            [*[_done(f"g{i}", 0.1 * i, 0.1 * i) for i in range(3)], broken],
            {"nan"},
            0,
            np.random.default_rng(0),
        )
        assert [(d.trial_id, d.action, d.reason) for d in out] == [("nan", Action.KILL, "diverged")]


def test_a_running_trial_at_its_budget_is_never_frozen_by_a_rung() -> None:
    """A run that reached max_step is finishing: freezing it there (it trails others at its
    latest rung, 27) would throw away a complete run one report before it ends."""
    five = [_flat(f"g{i}", 0.01 * i, T, 0.1 + 0.02 * i) for i in range(5)]
    last = _flat("last", 3.0, T, 0.2)
    out = make_stopper("freeze-thaw").decide([*five, last], {"last"}, 0, np.random.default_rng(0))
    assert [(d.action, d.reason) for d in out] == [(Action.CONTINUE, "at its budget")]
    # One step before the budget the rung rule does judge it.
    before = _flat("last", 3.0, T - 1, 0.2)
    out = make_stopper("freeze-thaw").decide([*five, before], {"last"}, 0, np.random.default_rng(0))
    assert out[0].action is Action.FREEZE


def test_min_points_and_min_steps_each_hold_back_the_model_on_their_own() -> None:
    """A run reporting rarely (3 points by step 15) or often (4 points by step 3) has too
    little data if either count is short: min_points and min_steps are separate guards."""
    best = _steep("best", 0.0, T, 0.1)
    cfg = FreezeThawPolicyConfig(min_steps=4, min_points=4, warmup_completed=1, model_min_points=1)

    def decide(steps: list[int]) -> tuple[Action, str]:
        s = np.array(steps)
        bad = CurveView("bad", np.array([0.9, 0.9]), s, 2.0 + 0.5 * np.exp(-s / 3.0), "running", T)
        out = make_stopper("freeze-thaw", cfg).decide(
            [best, bad], {"bad"}, 0, np.random.default_rng(0)
        )
        return out[0].action, out[0].reason

    assert decide([5, 10, 15]) == (Action.CONTINUE, "too little data")  # few points, many steps
    assert decide([1, 2, 3, 3]) == (Action.CONTINUE, "too little data")  # many points, few steps
    assert decide([5, 10, 15, 20])[0] is Action.FREEZE  # enough of both: the model judges it


# --- the rung rule ------------------------------------------------------------------------------


def test_the_top_of_a_rung_is_exactly_the_best_n_over_rung_base() -> None:
    """Of 6 runs at rung 9 the top is the best 6 // 3 = 2: the 2nd stays, the 3rd is frozen
    (ASHA's cut; a run tied with the cut is outside it)."""
    cfg = FreezeThawPolicyConfig(freeze_ratio=1e-9, thaw_ratio=1e-9, var_inflation=1e6)
    five = [_flat(f"g{i}", 0.1 + 0.01 * i, 12, 0.1 + 0.02 * i) for i in range(5)]

    def decide(level: float) -> tuple[Action, str]:
        out = make_stopper("freeze-thaw", cfg).decide(
            [*five, _flat("last", level, 10, 0.2)], {"last"}, 0, np.random.default_rng(0)
        )
        return out[0].action, out[0].reason

    assert decide(0.105)[0] is Action.CONTINUE  # 1 better: in the top 2
    assert decide(0.115) == (Action.FREEZE, "2 of 5 runs better at rung 9")


def test_a_frozen_trial_resumed_past_a_rung_is_still_judged_there_before_a_thaw() -> None:
    """resumed_step spares a running trial (a restarted peer forgot it passed), but a frozen
    one is thawed only from the top of its latest rung as it stands, checkpoint or not."""
    others, behind = hopeless_and_ahead_at_step_9()
    low = dataclasses.replace(_flat("low", 0.3, 9, 0.5), state="frozen", resumed_step=9)
    out = make_stopper("freeze-thaw", FreezeThawPolicyConfig(warmup_completed=1)).decide(
        [*others, *behind, low], {"low"}, 1, np.random.default_rng(0)
    )
    assert not any(d.action is Action.THAW for d in out)


def test_a_rung_counts_a_curve_only_if_it_reported_at_or_before_that_step() -> None:
    """A run that first reported at step 10 (reports every 10 steps) has no value at rung 3;
    taking its later value there would rank runs on unequal resources."""
    c = CurveView("sparse", np.array([0.5]), np.array([10, 20]), np.array([0.4, 0.2]), "running", T)
    assert value_at(c, 3) is None
    assert value_at(c, 10) == 0.4
    assert value_at(c, 15) == 0.4
    assert value_at(c, 21) is None


# --- the model's verdicts: kills, thaws and their order ----------------------------------------


def _frozen_at(tid: str, level: float, points: int) -> CurveView:
    s = np.arange(1, points + 1)
    return _curve(tid, level + np.exp(-s / 10.0), "frozen")


def _eight_done() -> list[CurveView]:
    s = np.arange(1, LONG + 1)
    return [
        CurveView(
            f"done{i}", np.array([0.1 * i, 0.5]), s, np.full(LONG, 1.0 + 0.1 * i), "completed", LONG
        )
        for i in range(8)
    ]


@pytest.mark.parametrize(("points", "killed"), [(29, False), (30, True)])
def test_a_hopeless_frozen_trial_is_killed_from_exactly_kill_min_points(
    points: int, killed: bool
) -> None:
    """kill_min_points (30) is the first count at which a kill, which cannot be undone, is
    allowed: at 29 points the same hopeless forecast leaves the trial frozen."""
    curves = [*_eight_done(), _frozen_at("behind", 3.0, points)]
    stopper = _scripted(FreezeThawPolicyConfig(), _ScriptedModel())
    out = stopper.decide(curves, {"behind"}, 1, np.random.default_rng(0))
    assert (_acts(out).get("behind") is Action.KILL) is killed


def test_a_last_value_that_dips_below_the_bar_does_not_spare_a_hopeless_trial() -> None:
    """The "already below the bar" exemption reads the smoothed recent values (the last
    smooth_window), so one noisy report under the bar does not save a run the forecast says is
    hopeless; a run whose smoothed values are below it is spared."""
    base = np.full(40, 1.5)
    dip = _curve("dip", np.r_[base[:-1], 0.9], "frozen")  # last three average 1.3; bar 1.0
    below = _curve("below", np.r_[base[:-3], 0.9, 0.9, 0.9], "frozen")
    out = _scripted(FreezeThawPolicyConfig(), _ScriptedModel()).decide(
        [*_eight_done(), dip, below], {"dip", "below"}, 1, np.random.default_rng(0)
    )
    acts = _acts(out)
    assert acts.get("dip") is Action.KILL
    assert acts.get("below") is not Action.KILL


def test_the_kill_threshold_uses_the_inflated_variance() -> None:
    """p is computed with variances times var_inflation (the GP is overconfident); the same
    forecast read without it (p ~ 2e-4 < p_kill) would kill a trial whose inflated p is 6e-3."""
    curves = [*_eight_done(), _frozen_at("doubt", 3.0, 40)]
    # bar 1.0, mean 5.0: z = -4 / sqrt(2 * 1.28) = -2.5 inflated, -3.54 without.
    model = _ScriptedModel({"doubt": (5.0, 1.28)})
    out = _scripted(FreezeThawPolicyConfig(), model).decide(
        curves, {"doubt"}, 1, np.random.default_rng(0)
    )
    assert _acts(out).get("doubt") is not Action.KILL


def test_once_nothing_new_may_start_a_frozen_trial_below_p_kill_is_not_thawed() -> None:
    """With the budget spent every frozen trial with p >= p_kill is worth a slot, but not one
    with p < p_kill that is too short to kill: it would spend the slot on a near-certain loss."""
    curves = [*_eight_done(), _frozen_at("slim", 3.0, 10), _frozen_at("fair", 3.0, 10)]
    # bar 1.0; inflated z: slim (5 - 1) / sqrt(2 * 0.584) -> p ~ 1e-4; fair p ~ 0.24.
    model = _ScriptedModel({"slim": (5.0, 0.584), "fair": (1.5, 0.5)})
    out = _scripted(FreezeThawPolicyConfig(), model).decide(
        curves, {"slim", "fair"}, 2, np.random.default_rng(0), fresh_available=False
    )
    assert [(d.trial_id, d.action) for d in out] == [("fair", Action.THAW)]


def test_thaws_go_to_the_best_rates_first_and_never_exceed_the_free_slots() -> None:
    """With one slot and two frozen trials worth thawing, the one with the higher chance per
    remaining step gets it: nearer its budget for the same chance (a run that can finish) and
    more likely for the same progress."""
    cfg = FreezeThawPolicyConfig()
    # Same forecast, different progress: "a_far" has 90 steps left, "z_near" 70.
    curves = [*_eight_done(), _frozen_at("a_far", 0.5, 10), _frozen_at("z_near", 0.5, 30)]
    model = _ScriptedModel({"a_far": (0.8, 0.05), "z_near": (0.8, 0.05)})
    out = _scripted(cfg, model).decide(curves, {"a_far", "z_near"}, 1, np.random.default_rng(0))
    assert [(d.trial_id, d.action) for d in out] == [("z_near", Action.THAW)]
    # Same progress, different chance: the more likely one first; two slots take both.
    curves = [*_eight_done(), _frozen_at("a_less", 0.5, 10), _frozen_at("z_more", 0.5, 10)]
    model = _ScriptedModel({"a_less": (0.95, 0.05), "z_more": (0.8, 0.05)})
    out = _scripted(cfg, model).decide(curves, {"a_less", "z_more"}, 1, np.random.default_rng(0))
    assert [(d.trial_id, d.action) for d in out] == [("z_more", Action.THAW)]
    out = _scripted(cfg, model).decide(curves, {"a_less", "z_more"}, 2, np.random.default_rng(0))
    assert [(d.trial_id, d.action) for d in out] == [
        ("z_more", Action.THAW),
        ("a_less", Action.THAW),
    ]


def test_a_frozen_trial_is_thawed_only_above_thaw_ratio_times_the_fresh_rate() -> None:
    """thaw_ratio > freeze_ratio is the hysteresis against freezing and thawing in turn: a
    frozen trial whose rate is between 0.5 and 1 times the fresh rate stays frozen."""
    s = np.arange(1, LONG + 1)
    done = [
        CurveView(
            f"done{i}", np.array([0.1 * i, 0.5]), s, np.full(LONG, 1.0 + 0.1 * i), "completed", LONG
        )
        for i in range(3)
    ]
    frozen = _frozen_at("mid", 0.5, 10)  # 90 steps left; bar 1.0

    def thawed(mean: float) -> bool:
        # A new configuration ends at the bar with variance 0.5: chance 1/2 in 100 steps.
        model = _ScriptedModel({"mid": (mean, 0.5)}, fresh_mean=1.0, fresh_var=0.5)
        out = _scripted(FreezeThawPolicyConfig(), model).decide(
            [*done, frozen], {"mid"}, 1, np.random.default_rng(0)
        )
        return any(d.action is Action.THAW for d in out)

    assert not thawed(1.419)  # p = 0.338: rate 0.0038, between 0.0025 and 0.005
    assert thawed(1.0)  # p = 0.5: rate 0.0056 > 0.005


def test_with_nothing_to_compare_with_thaws_are_bounded_by_the_free_slots() -> None:
    """Without a bar and with the budget spent, frozen trials are resumed one per free slot:
    all of them when there are slots for all, never more than the slots, none with none."""
    a = dataclasses.replace(_flat("a", 0.3, 9, 0.3), state="frozen")
    b = dataclasses.replace(_flat("b", 0.4, 9, 0.4), state="frozen")
    run = _flat("r", 0.4, 9, 0.4)

    def thawed(free: int) -> list[str]:
        return [d.trial_id for d in _without_a_bar([a, run, b], free, False)
                if d.action is Action.THAW]  # fmt: skip

    assert thawed(2) == ["a", "b"]
    assert thawed(3) == ["a", "b"]
    assert thawed(1) == ["a"]
    assert thawed(0) == []


# --- the bar and the fresh rate -----------------------------------------------------------------


def test_neither_a_killed_nor_a_broken_curve_sets_the_bar() -> None:
    """A killed run will not reach its forecast and a run that reported nan has no final
    value: neither may become the bar that freezes everyone else."""
    curves = [
        _done("done", 0.5, 0.2),
        dataclasses.replace(_flat("killed", 0.01, 10, 0.3), state="killed"),
        CurveView(
            "broken",
            np.array([0.4, 0.4]),
            np.arange(1, T + 1),
            np.r_[np.full(T - 1, 0.01), np.nan],
            "completed",
            T,
        ),
        _flat("new", 0.6, 2, 0.5),
    ]
    stopper = FreezeThawStopper()
    fm = _Scripted(curves, {"killed": (0.01, 1e-6)}, 0.01, 0.0, 1.0)
    bars, leader = stopper._bars(curves, fm)  # type: ignore[arg-type]
    smoothed = float(curves[0].values[-3:].mean())
    assert leader == "done"
    assert bars["new"] == pytest.approx(smoothed)
    assert bars["done"] == math.inf


def test_the_fresh_rate_is_the_mean_chance_of_the_tried_configurations_per_budget_step() -> None:
    """Once fresh_min_trials (8) configurations were tried, a new one's chance is their mean:
    a completed run counts 1 if its smoothed end beats the bar (not a dip on the way), a broken
    one 0, and the leader, who set the bar, is left out. Divided by the budget: a rate."""
    cfg = FreezeThawPolicyConfig()
    stopper = FreezeThawStopper(cfg)
    s = np.arange(1, LONG + 1)

    def done(tid: str, values: np.ndarray) -> CurveView:
        return CurveView(tid, np.array([0.5, 0.5]), s, values, "completed", LONG)

    curves = [
        _curve("leader", np.full(10, 0.1)),  # forecast far below the bar: its chance would be 1
        done("win0", np.full(LONG, 0.2)),
        done("win1", np.full(LONG, 0.3)),
        done("dip", np.r_[np.full(LONG - 3, 0.9), np.zeros(1), np.full(2, 0.9)]),
        *[done(f"lose{i}", np.full(LONG, 0.9 + 0.01 * i)) for i in range(4)],
        done("broken", np.r_[np.full(LONG - 1, 0.1), np.nan]),
    ]
    assert len(curves) - 1 == cfg.fresh_min_trials
    fm = _Scripted(curves, {"leader": (-5.0, 1e-6)}, 0.01, 0.0, 1.0)
    rate = stopper._fresh_rate(curves, fm, "leader", 0.5, 50, np.random.default_rng(0))  # type: ignore[arg-type]
    assert rate == pytest.approx(2 / 8 / 50)


def test_before_enough_tries_the_fresh_rate_is_the_inflated_forecast_per_budget_step() -> None:
    """With fewer than fresh_min_trials tried, the fresh chance is the model's forecast for
    untried points, its variance times fresh_inflation, divided by the budget."""
    cfg = FreezeThawPolicyConfig()
    stopper = FreezeThawStopper(cfg)
    curves = [_curve("a", np.full(10, 0.9)), _curve("b", np.full(10, 0.8))]
    fm = _Scripted(curves, {}, 0.01, 1.0, 0.5)  # untried points end at 1.0, variance 0.5
    rate = stopper._fresh_rate(curves, fm, "", 0.0, 40, np.random.default_rng(0))  # type: ignore[arg-type]
    from scipy.special import ndtr

    assert rate == pytest.approx(float(ndtr(-1.0 / math.sqrt(2.0 * 0.5))) / 40)


def test_at_exactly_the_cap_every_curve_is_fitted_and_stands_for_the_population() -> None:
    """max_model_curves is a cap, not a trigger: with exactly that many curves nothing is
    sampled, and the fresh rate's population is every curve (not the sample without the best)."""
    curves = [_done(f"g{i:02d}", 1.0 + 0.01 * i, (i % 7) / 7) for i in range(40)]
    judged = curves[-1:]
    fitted, population = _model_subset(curves, judged, 40, np.random.default_rng(0))
    assert list(fitted) == curves and list(population) == curves


# --- the late-bloomer guard --------------------------------------------------------------------


def _bloom_decision(values: np.ndarray, noise_sd: float = 0.01) -> tuple[Action, str]:
    """The model says "bloom" ends at 5.0 (the bar is ~0.1) and a new configuration surely
    beats it, so only the late-bloomer guard can keep it running."""
    curves = [*_completed_steep(3), _curve("bloom", values)]
    cfg = FreezeThawPolicyConfig(model_min_points=1)
    out = _scripted(cfg, _ScriptedModel(noise_sd=noise_sd)).decide(
        curves, {"bloom"}, 0, np.random.default_rng(0)
    )
    return out[0].action, out[0].reason


def _accelerating(a: float, n: int = 20, flat: int = 10) -> np.ndarray:
    s = np.arange(1, n + 1)
    return 1.0 - a * np.maximum(s - flat, 0) ** 2


def test_the_late_bloomer_guard_needs_the_trend_to_beat_the_bar_within_half_the_rest() -> None:
    """Accelerating runs are spared only if their linear trend beats the bar within
    bloom_horizon (half) of their remaining steps; one that would need all of them is not."""
    action, reason = _bloom_decision(_accelerating(0.002))
    assert action is Action.CONTINUE and reason.startswith("late bloomer")
    # Trend reaches ~0.1 only after ~70 of the 80 remaining steps: not a late bloomer.
    assert _bloom_decision(_accelerating(0.0009))[0] is Action.FREEZE


def test_the_late_bloomer_guard_ignores_a_drop_within_the_noise() -> None:
    """An accelerating drop of less than bloom_z noise standard deviations over the last
    window is noise, not a bloom: with the model's noise sd at 0.1 a drop of ~0.19 spares
    nothing (with noise sd 0.01 the same curve is spared)."""
    values = _accelerating(0.003)
    assert _bloom_decision(values, noise_sd=0.1)[0] is Action.FREEZE
    assert _bloom_decision(values, noise_sd=0.01)[0] is Action.CONTINUE


def test_the_late_bloomer_guard_needs_two_full_windows() -> None:
    """Acceleration is judged against the window before the last: a run with fewer than
    2 * bloom_window points cannot show it, and the model's verdict stands."""
    values = _accelerating(0.02, n=8, flat=3)
    assert _bloom_decision(values)[0] is Action.FREEZE
    longer = _accelerating(0.02, n=10, flat=5)
    assert _bloom_decision(longer)[0] is Action.CONTINUE


# --- divergence ---------------------------------------------------------------------------------


def _div(values: list[float], window: int = 5) -> bool:
    v = np.asarray(values, float)
    c = CurveView("x", np.zeros(1), np.arange(1, len(v) + 1), v, "running", LONG)
    return diverged(c, window, 0.5, 3.0)


def test_divergence_needs_a_clear_rise_past_half_the_gain() -> None:
    """A kill for divergence cannot be undone: the rise must give back more than div_frac of
    the gain, stand well above the noise, and trend up significantly over the last window."""
    assert _div([1.0] + [0.2] * 15 + [0.3, 0.45, 0.6, 0.75, 0.9])  # the clear case
    # Gave back 0.18 of a 0.8 gain: still a good run, not diverging.
    assert not _div([1.0] + [0.2] * 15 + [0.22, 0.26, 0.3, 0.34, 0.38])
    # Rises of 0.9 in a run that jumps by 1.0 every step: noise, not divergence.
    assert not _div([1.0, 0.0] * 4 + [0.2, 0.4, 0.6, 0.8, 0.9])
    # Up a lot, but the last window has no significant upward trend.
    assert not _div([1.0] + [0.2] * 15 + [0.9, 0.7, 0.95, 0.75, 0.96])


def test_divergence_is_not_judged_on_fewer_points_than_the_window() -> None:
    """Fewer finite points than div_window (at least 3) never count as divergence."""
    rising = [1.0] + [0.2] * 8 + [0.56, 0.92, 1.28, 1.64, 2.0]  # 14 points
    assert _div(rising, window=14)  # diverging over a 14-point window
    assert not _div(rising, window=15)  # the same curve is one point short of a 15-point window
    assert not _div([1.0, 0.2, 0.9], window=2)
    # A two-point window has no trend to test (no residual degrees of freedom).
    assert not _div([1.0] + [0.2] * 6 + [0.9], window=2)


# --- config and the no-op stopper ---------------------------------------------------------------


def test_the_config_refuses_a_non_positive_rung_min_or_fresh_inflation() -> None:
    """rung_min <= 0 has no ladder and fresh_inflation <= 0 no fresh variance: both are
    refused at construction with a MetaoptError, like the other broken tunables."""
    with pytest.raises(MetaoptError):
        FreezeThawPolicyConfig(rung_min=0.0)
    with pytest.raises(MetaoptError):
        FreezeThawPolicyConfig(fresh_inflation=0.0)
    FreezeThawPolicyConfig(freeze_ratio=0.7, thaw_ratio=0.7)  # equal ratios are allowed


def test_no_stopper_continues_running_trials_and_says_nothing_of_frozen_ones() -> None:
    """'none' decides only for running trials: a frozen trial given CONTINUE would look, to
    the peer, like one to run."""
    curves = [
        _flat("run", 0.3, 5, 0.3),
        dataclasses.replace(_flat("cold", 0.3, 5, 0.3), state="frozen"),
        _done("done", 0.2, 0.2),
    ]
    out = make_stopper("none").decide(curves, {"run", "cold", "done"}, 1, np.random.default_rng(0))
    assert [(d.trial_id, d.action) for d in out] == [("run", Action.CONTINUE)]


@pytest.mark.parametrize("huge", [0, 9, 40])
def test_a_diverged_run_s_reports_do_not_set_the_model_s_scale(huge: int) -> None:
    """A run that blew up to 1e6 and was killed keeps its reports in the fit. Once they were
    over 1% of all points (9 of 879) the 1st/99th-percentile trim no longer held them: the
    value scale went from 0.3 to 2e4, the forecast of a frozen run heading to 1.5 (every
    completed run ended below 0.5) became 122 +- 1910, and with the budget spent that
    hopeless run was thawed beside the good one instead of killed."""
    T = 100
    s = np.arange(1, T + 1)
    rng = np.random.default_rng(0)
    done = [
        CurveView(f"g{i}", np.array([(0.13 * i) % 1, 0.3]), s,
                  0.1 + 0.05 * i + np.exp(-s / 5) + 0.005 * rng.standard_normal(T), "completed", T)
        for i in range(8)
    ]  # fmt: skip
    bad = CurveView("bad", np.array([0.7, 0.5]), s[:30], 1.5 + np.exp(-s[:30] / 5), "frozen", T)
    good = CurveView("good", np.array([0.2, 0.5]), s[:30], 0.05 + np.exp(-s[:30] / 5), "frozen", T)
    blow = CurveView("blow", np.array([0.9, 0.9]), s[: 10 + huge],
                     np.r_[np.ones(10), np.full(huge, 1e6)], "killed", T)  # fmt: skip
    stopper = FreezeThawStopper()
    out = stopper.decide([*done, bad, good, blow], {"bad", "good"}, 2, np.random.default_rng(0),
                         fresh_available=False)  # fmt: skip
    assert {d.trial_id: d.action for d in out} == {"bad": Action.KILL, "good": Action.THAW}
    assert stopper.last_fit is not None and stopper.last_fit.value_scale < 2.0  # (not 2e4)
