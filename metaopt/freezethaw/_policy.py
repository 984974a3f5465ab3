"""What a peer does with its own trials: continue, freeze, kill or thaw, and the freeze-thaw rule.

The freeze-thaw policy (a practical stand-in for the paper's entropy search, which costs far
more than a 100 ms decision allows) spends steps where a better final value is most likely:

* A trial with no reports is never stopped; one that reported nan/inf, or whose recent values
  rise significantly after giving back more than div_frac of its improvement, is killed
  (diverged).
* Rungs (ASHA's equal-step ranking, as a freeze): a running trial whose latest rung (step
  rung_min * rung_base**k at or below its last step; the fidelity prior's ladder) is not among
  the best 1/rung_base of the values every trial reported there is frozen, from the first rung
  on and also during the warm-up: no forecast is needed, and a frozen trial can come back. A
  frozen trial outside that top is not thawed while a new trial may start. On the synthetic
  benchmark the model's forecasts of short curves rank the finals no better than the
  configuration alone, while the value at the first step ranks them well (Spearman 0.74-0.76);
  rungs took its steps to target from 880 to 616 (held-out seeds, 1 peer; ASHA 676). The slow
  learners that end best are the top configurations the rungs lose, and neither the model nor
  any other ranking measured singles them out early.
* Otherwise a trial with too few points (< min_points) or too few steps (< min_steps) is
  not stopped.
* The model freezes or kills no running trial before warmup_completed runs (any peer's) have
  completed. Until a curve shows where runs end, the model cannot tell a slow start from an
  early plateau, and froze the slow, best configurations at step 3, again and again.
* The bar a trial must beat is the best other trial's final value: a completed trial's smoothed
  last values, or an unfinished one's predicted final mean + ref_z sd (a value it will probably
  reach). Partial values are never the bar: they are not where the other trial will end.
* p = P(value at max_step < bar - eps) under the curve model, with its predictive variance
  multiplied by var_inflation (the exact GP is overconfident on curves it has seen few steps
  of). Its rate is p per remaining step; the fresh rate is the chance that a new configuration
  run to max_step beats the best bar, per max_step steps: the mean chance of the
  configurations tried so far (once fresh_min_trials have enough points; a completed one's is
  0 or 1), which came from the same search as the next one will; before that, the model's
  forecast averaged over uniform points. (Uniform points alone made the fresh rate several
  times what the tried configurations bore out, so promising slow curves were frozen.)
* A frozen trial with p < p_kill and at least kill_min_points points is killed (frozen for
  good), unless its recent values already beat the bar; so is a running one, and one whose
  rate is below freeze_ratio × the fresh rate is frozen (a new trial is a better use of the
  slot), once the model judges running trials (model_min_points, below). A kill cannot
  be undone, so it waits for 30 points: at 12, a late bloomer's plateau was killed as the
  best configuration in 7 of 20 held-out seeds; at 30 in 1 of 20.
* The model freezes or kills a running trial only once it has model_min_points points, and by
  default (None) never: the rungs decide for running trials, the model for frozen ones (thaw
  or kill). Its forecasts of young curves rank finals no better than the configuration does,
  and where its variance collapsed, its freezes stopped every run that passed rung 27.
* Late-bloomer guard: a trial whose last window improved by more than bloom_z noise standard
  deviations, at least bloom_ratio as steeply as the window before (not decelerating the way
  exponential and power-law curves do), and whose linear trend would beat the bar within
  bloom_horizon of its remaining steps, is left running whatever the model says.
* The model judges a frozen trial only when a slot is free to take it (free_slots > 0), and
  is fitted only then or when it judges a running trial: with every slot busy nothing it could
  say changes what runs.
* The model is fitted on at most max_model_curves curves: those it judges, a uniform sample
  of the others (the fresh rate's mean runs over it and the judged alone), and the best
  max_model_curves // 4 of the rest by their best value (where the bar and the leader are).
  Its exact posterior costs the cube of the curves and their square in memory (26 s and 3 GB
  at 8,000 curves, holding the GIL and so the peer's event loop).
* Thaw (only with free slots): the frozen trials in the top of their latest rung whose rate
  exceeds thaw_ratio × the fresh rate, best first. Once no new trial may start (the budget
  is spent) the fresh rate is 0: nothing is frozen, and every frozen trial with p >= p_kill
  is worth a free slot.
  thaw_ratio > freeze_ratio is the hysteresis that stops a trial from being frozen and thawed
  in turn while nothing new is learnt.

What was measured against this rule (other ladders, forecasts at the rungs, fewer thaws, a
fresh configuration priced by the steps the rungs let it take, why 4 peers take more steps
than 1) is in docs/tuning/freeze-thaw.md.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr

from metaopt._errors import MetaoptError
from metaopt.freezethaw._model import (
    CurveView,
    FittedModel,
    FreezeThawConfig,
    FreezeThawModel,
    finite_prefix,
    value_at,
)

if TYPE_CHECKING:
    from metaopt.freezethaw._asha import AshaConfig
    from metaopt.freezethaw._median import MedianConfig

__all__ = [
    "Action",
    "Decision",
    "EarlyStopper",
    "FreezeThawPolicyConfig",
    "FreezeThawStopper",
    "NoStopper",
    "make_stopper",
]

FloatArray = npt.NDArray[np.float64]
_MAX_RUNGS = 256  # a fidelity prior has at most 64 rungs; this bounds a hand-made config
_NO_BAR = "nothing to compare with"


class Action(enum.Enum):
    """What to do with one of this peer's trials."""

    CONTINUE = "continue"
    FREEZE = "freeze"
    KILL = "kill"
    THAW = "thaw"


@dataclass(frozen=True)
class Decision:
    """One action for one trial, with a short human-readable reason."""

    trial_id: str
    action: Action
    reason: str
    rung: int | None = None  # a kill's rung, by a rung rule (recorded: see EventBody.rung)


class EarlyStopper(Protocol):
    """Decides for this peer's running and frozen trials from every replicated curve.

    Every own running trial gets exactly one decision; an own frozen trial gets one only when it
    is thawed or killed. THAW is returned only when free_slots > 0, at most free_slots times.
    fresh_available=False says no new configuration can start (the budget is spent): a free
    slot then has no better use than a frozen trial with a real chance.
    """

    def decide(
        self,
        curves: Sequence[CurveView],
        own: Collection[str],
        free_slots: int,
        rng: np.random.Generator,
        *,
        fresh_available: bool = True,
    ) -> list[Decision]: ...


@dataclass(frozen=True)
class FreezeThawPolicyConfig:
    """Tunables of the freeze-thaw decision rule (see the module docstring)."""

    model: FreezeThawConfig = field(default_factory=FreezeThawConfig)
    min_steps: int = 3
    min_points: int = 3
    kill_min_points: int = 30
    p_kill: float = 0.002
    freeze_ratio: float = 0.5  # freeze when p / remaining < freeze_ratio * fresh p / max_step
    thaw_ratio: float = 1.0  # thaw when p / remaining > thaw_ratio * fresh p / max_step
    var_inflation: float = 2.0  # predictive variances are multiplied by this (calibration)
    fresh_inflation: float = 2.0  # the same for a fresh configuration's prior forecast
    ref_z: float = 1.0  # another unfinished trial sets the bar at its mean + ref_z sd
    eps: float = 0.0  # required improvement over the bar, in units of the model's value scale
    refit_every: int = 10  # hyperparameters are refitted on every k-th model use, else reused
    bloom_window: int = 5
    bloom_z: float = 3.0
    bloom_ratio: float = 0.8
    bloom_horizon: float = 0.5
    div_window: int = 5
    div_frac: float = 0.5
    div_z: float = 3.0
    n_candidates: int = 128
    fresh_min_trials: int = 8  # tried configurations needed before the fresh chance is empirical
    smooth_window: int = 3
    rung_min: float = 1.0  # rungs at rung_min * rung_base**k: the fidelity prior's ladder
    rung_base: float = 3.0  # ... and a trial must be in the best 1/rung_base at its latest rung
    model_min_points: int | None = None  # the model freezes or kills no running trial with
    # fewer points (None: none at all; the rungs do); it always judges frozen ones
    warmup_completed: int = 2  # no model freeze or kill before this many runs completed
    max_model_curves: int = 600  # the model is fitted on at most this many (see the docstring)

    def __post_init__(self) -> None:
        if (
            not 0.0 < self.freeze_ratio <= self.thaw_ratio
            or not (self.var_inflation > 0.0 and self.fresh_inflation > 0.0)
            or not self.rung_min > 0.0
            or not self.rung_base > 1.0
        ):
            raise MetaoptError(
                "FreezeThawPolicyConfig needs 0 < freeze_ratio <= thaw_ratio, positive "
                "var_inflation and fresh_inflation, rung_min > 0 and rung_base > 1; "
                "fix the config"
            )

    @classmethod
    def from_fidelity(cls, low: float, base: float) -> FreezeThawPolicyConfig:
        """The defaults with the rungs of a fidelity(low, high, base) prior."""
        return cls(rung_min=low, rung_base=base)

    def latest_rung(self, step: float, max_step: int) -> int | None:
        """The highest rung at or below step and below max_step, or None before the first."""
        passed = [r for r in rung_ladder(self.rung_min, self.rung_base, max_step) if r <= step]
        return passed[-1] if passed else None


def rung_ladder(low: float, base: float, max_step: int, first: int = 0) -> list[int]:
    """Rung steps low * base**k for k >= first, strictly below max_step (the budget is none).

    The one ladder of the fidelity prior fidelity(low, high, base), shared by ASHA and the
    freeze-thaw rungs. Steps are whole: a rung between two steps is the next step up (2.5 is
    reached at step 3), and rungs that round to the same step count once.
    """
    out: list[int] = []
    for k in range(first, first + _MAX_RUNGS):
        # The tolerance keeps 0.1 * 10**k, say, from rounding up a step past 10**(k-1).
        r = max(math.ceil(low * base**k * (1.0 - 1e-12)), 1)
        if r >= max_step:
            break
        if not out or r > out[-1]:
            out.append(r)
    return out


def _slope(s: FloatArray, v: FloatArray) -> tuple[float, float]:
    """Least-squares slope of v over s and its standard error (inf when undetermined)."""
    n = s.shape[0]
    sc = s - s.mean()
    sxx = float(sc @ sc)
    if n < 3 or sxx <= 0.0:
        return 0.0, math.inf
    b = float(sc @ (v - v.mean())) / sxx
    resid = v - v.mean() - b * sc
    return b, math.sqrt(float(resid @ resid) / (n - 2) / sxx)


def diverged(c: CurveView, window: int, frac: float, z: float) -> bool:
    """True when the curve reported nan/inf, or rises clearly after giving back > frac of its gain.

    "Clearly" means a rising trend over the last window with t-statistic above z and a rise of
    more than 10 z noise standard deviations (estimated from consecutive differences), so a
    noisy plateau is never taken for divergence.
    """
    s, v, broken = finite_prefix(c)
    if broken:
        return True
    if v.shape[0] < max(window, 3):
        return False
    low = float(v.min())
    gained = float(v[0]) - low
    rise = float(v[-1]) - low
    if rise <= frac * max(gained, 0.0):
        return False
    with np.errstate(over="ignore"):  # steps of ~1e308 overflow to inf: a rise, not an error
        noise = 1.4826 * float(np.median(np.abs(np.diff(v)))) / math.sqrt(2.0)
    if rise <= 10.0 * z * noise:
        return False
    b, se = _slope(s[-window:], v[-window:])
    return b > 0.0 and b > z * se


def smoothed_best(c: CurveView, window: int) -> float:
    """Best moving average of window consecutive finite values (inf if none): denoised best."""
    _, v, _ = finite_prefix(c)
    if v.shape[0] == 0:
        return math.inf
    w = min(window, v.shape[0])
    ma = np.convolve(v, np.ones(w) / w, mode="valid")
    return float(ma.min())


class RungTable:
    """Every curve's value at a step, computed once per step for one decision.

    The comparison ASHA makes at its rungs: equal resources and no model, so no forecast can
    mislead it. Built per decide() call, so a decision for 50 own trials among 200 curves
    reads each curve once per rung rather than once per own trial.
    """

    def __init__(self, curves: Sequence[CurveView]) -> None:
        self._curves = curves
        self._at: dict[float, tuple[dict[str, float], FloatArray]] = {}

    def _values(self, step: float) -> tuple[dict[str, float], FloatArray]:
        if step not in self._at:
            mine = {c.trial_id: x for c in self._curves if (x := value_at(c, step)) is not None}
            self._at[step] = (mine, np.sort(np.fromiter(mine.values(), np.float64, len(mine))))
        return self._at[step]

    def rank(self, trial_id: str, step: float) -> tuple[int, int]:
        """How many other curves beat trial_id's value at step, and how many reached it.

        (0, 0) when trial_id did not reach step.
        """
        by_id, ordered = self._values(step)
        mine = by_id.get(trial_id)
        if mine is None:
            return 0, 0
        return int(np.searchsorted(ordered, mine, side="left")), ordered.shape[0] - 1


class FreezeThawStopper:
    """The freeze-thaw policy; holds a model whose hyperparameters warm-start across calls."""

    def __init__(self, config: FreezeThawPolicyConfig | None = None) -> None:
        self.config = config or FreezeThawPolicyConfig()
        self.model = FreezeThawModel(self.config.model)
        self._uses = 0
        # The highest rung at which each trial was judged in the top: as in ASHA, a run goes
        # on to its next rung whatever reaches this one after it (re-judging it at every
        # report froze runs half-way to the next rung, which wasted their steps since).
        self._passed: dict[str, int] = {}
        self.last_fit: FittedModel | None = None

    def _bloomer(self, c: CurveView, best: float, noise_sd: float) -> bool:
        cfg = self.config
        s, v, _ = finite_prefix(c)
        w = cfg.bloom_window
        if v.shape[0] < 2 * w:
            return False
        b_now, _ = _slope(s[-w:], v[-w:])
        b_before, _ = _slope(s[-2 * w : -w], v[-2 * w : -w])
        drop = -b_now * float(s[-1] - s[-w])
        if drop <= cfg.bloom_z * noise_sd or b_now >= 0.0:
            return False
        if b_before < 0.0 and b_now > cfg.bloom_ratio * b_before:
            return False  # decelerating: the exponential-decay kernel models this well
        fitted_last = float(v[-w:].mean()) + b_now * float(s[-1] - s[-w:].mean())
        horizon = cfg.bloom_horizon * max(c.max_step - float(s[-1]), 0.0)
        return fitted_last + b_now * horizon < best

    def _model_judges(self, points: int) -> bool:
        """Whether the model may freeze or kill a running trial with this many points."""
        least = self.config.model_min_points
        return least is not None and points >= least

    def _already_below(self, v: FloatArray, target: float) -> bool:
        """Whether a curve's recent finite values v (smoothed) are below target already.

        Such a run is never killed, whatever the forecast: a kill cannot be undone, and a
        forecast that the run will end above where it already is says the model misfits this
        curve (seen on the synthetic benchmark under an experimental rule: a final forecast of
        0.52 for a run at 0.27 and falling, with a bar of 0.31), not that the run is hopeless.
        """
        return v.shape[0] > 0 and float(v[-self.config.smooth_window :].mean()) < target

    def _below_rung_top(self, c: CurveView, table: RungTable) -> str | None:
        """Why c is outside the best 1/rung_base at its latest rung, or None if it is not.

        As in ASHA, the top of n values at a rung is the best max(n // rung_base, 1) of them,
        so the first trial to reach a rung is in it. A trial is judged at the latest rung its
        reports passed, however rarely decisions are made; a running trial once in the top
        there is not judged at that rung again, nor one resumed from a checkpoint past it (a
        restarted peer's stopper has no memory of what passed), but a frozen one always is:
        it is thawed only from the top as it stands.
        """
        cfg = self.config
        s, _, _ = finite_prefix(c)
        if s.shape[0] == 0:
            return None
        rung = cfg.latest_rung(float(s[-1]), c.max_step)
        running = c.state == "running"
        passed = max(self._passed.get(c.trial_id, 0), c.resumed_step or 0)
        if rung is None or (running and passed >= rung):
            return None
        better, reached = table.rank(c.trial_id, rung)
        if better < max((reached + 1) // cfg.rung_base, 1):
            if running:
                self._passed[c.trial_id] = rung
            return None
        return f"{better} of {reached} runs better at rung {rung}"

    def decide(
        self,
        curves: Sequence[CurveView],
        own: Collection[str],
        free_slots: int,
        rng: np.random.Generator,
        *,
        fresh_available: bool = True,
    ) -> list[Decision]:
        """Decisions for own running and frozen trials (see the module docstring for the rule).

        Args:
            curves: every known curve, any peer, any state.
            own: ids of this peer's trials; no decision is made for any other.
            free_slots: idle slots on this peer; bounds the number of thaws.
            rng: the only source of randomness (fresh candidate points).
            fresh_available: False once no new trial may start; the fresh rate is then 0, so
                nothing is frozen and any frozen trial not bad enough to kill may be thawed.

        Returns:
            One decision per own running trial, plus thaws and kills of own frozen trials.
        """
        cfg = self.config
        mine = sorted(
            (c for c in curves if c.trial_id in own and c.state in ("running", "frozen")),
            key=lambda c: c.trial_id,
        )
        out: list[Decision] = []
        modelled: list[CurveView] = []
        completed = sum(c.state == "completed" for c in curves)
        rungs = RungTable(curves)
        for c in mine:
            s, v, broken = finite_prefix(c)
            if c.state == "running" and v.shape[0] == 0 and not broken:
                out.append(Decision(c.trial_id, Action.CONTINUE, "no reports yet"))
            elif diverged(c, cfg.div_window, cfg.div_frac, cfg.div_z):
                out.append(Decision(c.trial_id, Action.KILL, "diverged"))
            elif c.state == "running" and float(s[-1]) >= c.max_step:
                out.append(Decision(c.trial_id, Action.CONTINUE, "at its budget"))
            elif (
                c.state == "running"
                and fresh_available
                and (low := self._below_rung_top(c, rungs)) is not None
            ):
                out.append(Decision(c.trial_id, Action.FREEZE, low))
            elif c.state == "running" and (
                v.shape[0] < cfg.min_points or float(s[-1]) < cfg.min_steps
            ):
                out.append(Decision(c.trial_id, Action.CONTINUE, "too little data"))
            elif c.state == "running" and completed < cfg.warmup_completed:
                why = f"warm-up: {completed} of {cfg.warmup_completed} runs completed"
                out.append(Decision(c.trial_id, Action.CONTINUE, why))
            elif c.state == "running" and not self._model_judges(v.shape[0]):
                rung = self._passed.get(c.trial_id)
                why = f"in the top at rung {rung}" if rung else "left to the rungs"
                out.append(Decision(c.trial_id, Action.CONTINUE, why))
            elif v.shape[0] > 0 and (c.state == "running" or free_slots > 0):
                # A frozen trial is judged (thawed or killed) when a slot is free to take it:
                # no fit is spent on it while every slot is busy.
                modelled.append(c)
        if not modelled:
            return out
        if len(curves) < 2:
            return out + _without_a_bar(modelled, free_slots, fresh_available)
        curves, population = _model_subset(curves, modelled, cfg.max_model_curves, rng)
        fm = self.model.fit(curves, optimise=self._uses % cfg.refit_every == 0)
        self._uses += 1
        self.last_fit = fm
        bars, leader = self._bars(curves, fm)
        margin = cfg.eps * fm.value_scale
        finite_bars = [b for b in bars.values() if math.isfinite(b)]
        if not finite_bars:
            return out + _without_a_bar(modelled, free_slots, fresh_available)
        budget = max(c.max_step for c in modelled)
        fresh = (
            self._fresh_rate(population, fm, leader, min(finite_bars) - margin, budget, rng)
            if fresh_available
            else 0.0
        )
        means, variances = fm.finals()
        index = {tid: i for i, tid in enumerate(fm.trial_ids)}
        noise = max(fm.noise_sd, 1e-3 * fm.value_scale)
        thaw_candidates: list[tuple[float, str]] = []
        for c in modelled:
            tid = c.trial_id
            target = bars[tid] - margin
            if math.isinf(target):  # it sets the bar itself, or nothing does
                if c.state == "running":
                    out.append(Decision(tid, Action.CONTINUE, _NO_BAR))
                elif free_slots > 0 and not fresh_available:
                    thaw_candidates.append((math.inf, tid))
                continue
            i = index[tid]
            sd = math.sqrt(max(cfg.var_inflation * float(variances[i]), 1e-300))
            p = float(ndtr((target - float(means[i])) / sd))
            s, v, _ = finite_prefix(c)
            rate = p / max(c.max_step - float(s[-1]), 1.0)
            why = f"p={p:.3g}, rate {rate:.3g} vs fresh {fresh:.3g}"
            hopeless = (
                p < cfg.p_kill
                and v.shape[0] >= cfg.kill_min_points
                and not self._already_below(v, target)
            )
            if c.state == "running":
                if self._bloomer(c, target, noise):
                    out.append(Decision(tid, Action.CONTINUE, f"late bloomer ({why})"))
                elif hopeless:
                    out.append(Decision(tid, Action.KILL, f"p={p:.3g} < p_kill"))
                elif fresh_available and rate < cfg.freeze_ratio * fresh:
                    out.append(Decision(tid, Action.FREEZE, why))
                else:
                    out.append(Decision(tid, Action.CONTINUE, why))
            elif hopeless:
                out.append(Decision(tid, Action.KILL, f"frozen and p={p:.3g} < p_kill"))
            elif (
                free_slots > 0
                and rate > cfg.thaw_ratio * fresh
                and p >= cfg.p_kill
                and not (fresh_available and self._below_rung_top(c, rungs))
            ):
                thaw_candidates.append((rate, tid))
        thaw_candidates.sort(key=lambda e: (-e[0], e[1]))
        out.extend(
            Decision(tid, Action.THAW, f"rate {r:.3g} > fresh {fresh:.3g}")
            for r, tid in thaw_candidates[:free_slots]
        )
        return out

    def _bars(self, curves: Sequence[CurveView], fm: FittedModel) -> tuple[dict[str, float], str]:
        """For every trial, the value it must beat: the best other completed or likely one.

        A completed trial offers its smoothed last values; an unfinished one with enough points
        its predicted final mean plus ref_z inflated standard deviations, a value it will
        probably reach, so one optimistic forecast cannot freeze everyone else. Also returns the
        id of the trial that made the best offer ("" if none).
        """
        cfg = self.config
        means, variances = fm.finals()
        index = {tid: i for i, tid in enumerate(fm.trial_ids)}
        offers: list[tuple[float, str]] = []
        for c in curves:
            _, v, broken = finite_prefix(c)
            if broken or v.shape[0] == 0 or c.trial_id not in index:
                continue
            if c.state == "completed":
                offers.append((float(v[-cfg.smooth_window :].mean()), c.trial_id))
            elif c.state in ("running", "frozen") and v.shape[0] >= cfg.min_points:
                i = index[c.trial_id]
                sd = math.sqrt(cfg.var_inflation * float(variances[i]))
                offers.append((float(means[i]) + cfg.ref_z * sd, c.trial_id))
        offers.sort()
        first = offers[0] if offers else (math.inf, "")
        second = offers[1][0] if len(offers) > 1 else math.inf
        bars = {c.trial_id: second if c.trial_id == first[1] else first[0] for c in curves}
        return bars, first[1]

    def _fresh_rate(
        self,
        curves: Sequence[CurveView],
        fm: FittedModel,
        leader: str,
        bar: float,
        budget: int,
        rng: np.random.Generator,
    ) -> float:
        """Chance per step that a fresh configuration run to budget ends below bar.

        The configurations tried so far are the best sample there is of what the next one will
        be (they came from the same search): once fresh_min_trials of them have min_points
        points, the chance is the mean of their own chances of ending below bar (a completed
        curve's is 0 or 1, a broken one's 0, the others' from the model), leaving out the
        trial that set the bar. Before that, it is the model's forecast for uniform points.
        """
        cfg = self.config
        means, variances = fm.finals()
        index = {tid: i for i, tid in enumerate(fm.trial_ids)}
        chances: list[float] = []
        for c in curves:
            _, v, broken = finite_prefix(c)
            if c.trial_id == leader or c.trial_id not in index:
                continue
            if broken:
                chances.append(0.0)
            elif c.state == "completed" and v.shape[0] > 0:
                chances.append(float(v[-cfg.smooth_window :].mean() < bar))
            elif v.shape[0] >= cfg.min_points:
                i = index[c.trial_id]
                sd = math.sqrt(max(cfg.var_inflation * float(variances[i]), 1e-300))
                chances.append(float(ndtr((bar - float(means[i])) / sd)))
        if len(chances) >= cfg.fresh_min_trials:
            return float(np.mean(chances)) / max(budget, 1)
        X = rng.random((cfg.n_candidates, fm.data.X.shape[1]))
        m, var = fm.fresh_final(X, budget)
        sd_f = np.sqrt(np.maximum(cfg.fresh_inflation * var, 1e-300))
        return float(ndtr((bar - m) / sd_f).mean()) / max(budget, 1)


def _model_subset(
    curves: Sequence[CurveView],
    judged: Sequence[CurveView],
    cap: int,
    rng: np.random.Generator,
) -> tuple[Sequence[CurveView], Sequence[CurveView]]:
    """At most ``cap`` curves for the model: the judged ones, a uniform sample of the others,
    and the best others not sampled (where the bar and the leader are); and the judged plus
    the sample alone, which stand for every configuration tried (the fresh rate's mean: with
    the best ones in it, it was ten times too high)."""
    if len(curves) <= cap:
        return curves, curves
    judged_ids = {c.trial_id for c in judged}
    others = [c for c in curves if c.trial_id not in judged_ids]
    room = max(cap - len(judged), 0)
    n_top = room // 4
    picked = rng.choice(len(others), size=min(room - n_top, len(others)), replace=False)
    chosen = set(picked.tolist())
    sample = [others[i] for i in sorted(chosen)]

    def best(c: CurveView) -> float:
        _, v, _ = finite_prefix(c)
        return float(v.min()) if v.shape[0] else math.inf

    rest = sorted((i for i in range(len(others)) if i not in chosen),
                  key=lambda i: (best(others[i]), others[i].trial_id))  # fmt: skip
    top = [others[i] for i in rest[:n_top]]
    return [*judged, *top, *sample], [*judged, *sample]


def _without_a_bar(
    curves: Sequence[CurveView], free_slots: int, fresh_available: bool
) -> list[Decision]:
    """Decisions with nothing to compare with: running trials go on, and once no new trial
    may start, frozen ones are resumed while slots are free (no evidence says they are
    hopeless, and nothing else can use the slot). The peer kills an own frozen trial left
    without a thaw when the budget is spent, so no decision here killed a trial that led
    everything (its bar, the second best, absent), or the only one, without a look.
    """
    out = [Decision(c.trial_id, Action.CONTINUE, _NO_BAR) for c in curves if c.state == "running"]
    if not fresh_available:
        frozen = [c.trial_id for c in curves if c.state == "frozen"]
        why = f"{_NO_BAR}, and no new trial may start"
        out.extend(Decision(t, Action.THAW, why) for t in frozen[: max(free_slots, 0)])
    return out


class NoStopper:
    """No early stopping: every own running trial continues, frozen ones stay frozen."""

    def decide(
        self,
        curves: Sequence[CurveView],
        own: Collection[str],
        free_slots: int,
        rng: np.random.Generator,
        *,
        fresh_available: bool = True,
    ) -> list[Decision]:
        """CONTINUE for every own running trial."""
        return [
            Decision(c.trial_id, Action.CONTINUE, "no early stopping")
            for c in sorted(curves, key=lambda c: c.trial_id)
            if c.trial_id in own and c.state == "running"
        ]


def make_stopper(
    name: Literal["freeze-thaw", "asha", "median", "none"],
    config: FreezeThawPolicyConfig | AshaConfig | MedianConfig | None = None,
) -> EarlyStopper:
    """Build an early stopper by name.

    Args:
        name: "freeze-thaw", "asha", "median" or "none".
        config: that stopper's config dataclass, or None for its defaults.

    Returns:
        A fresh stopper (stateful only through caches; same inputs give the same decisions).
    """
    # Imported here because those modules import this one for the shared types.
    from metaopt.freezethaw._asha import AshaConfig, AshaStopper
    from metaopt.freezethaw._median import MedianConfig, MedianStopper

    def _check(kind: type[Any]) -> Any:
        if config is not None and not isinstance(config, kind):
            raise MetaoptError(
                f"make_stopper({name!r}) needs a {kind.__name__}, got "
                f"{type(config).__name__}; pass the matching config or None"
            )
        return config

    if name == "freeze-thaw":
        return FreezeThawStopper(_check(FreezeThawPolicyConfig))
    if name == "asha":
        return AshaStopper(_check(AshaConfig))
    if name == "median":
        return MedianStopper(_check(MedianConfig))
    if name == "none":
        if config is not None:  # (as a wrong config is for the others: a mistake, not a no-op)
            raise MetaoptError(
                f"make_stopper('none') takes no config, got {type(config).__name__}; pass None"
            )
        return NoStopper()
    raise MetaoptError(
        f"unknown early stopper {name!r}; use 'freeze-thaw', 'asha', 'median' or 'none'"
    )
