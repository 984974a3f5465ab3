"""Asynchronous successive halving (ASHA) as an early stopper over a geometric fidelity ladder.

The stopping form of ASHA (Li et al. 2020; Optuna's SuccessiveHalvingPruner): when a trial
first reaches rung k (step min_resource * eta**(k + s)), it goes on only if its value there is
among the best 1/eta of the values every trial recorded at that rung so far; otherwise it is
killed. With fewer than eta competitors it must be the best of them, as in Optuna, since a
stopped trial is never resumed. The rung ladder is the fidelity prior fidelity(low, high, base)
with min_resource=low and eta=base.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from metaopt._errors import MetaoptError
from metaopt.freezethaw._model import CurveView, finite_prefix, value_in
from metaopt.freezethaw._policy import Action, Decision, rung_ladder

__all__ = ["AshaConfig", "AshaStopper"]


@dataclass(frozen=True)
class AshaConfig:
    """ASHA's rungs: min_resource * reduction_factor**(k + min_early_stopping_rate), k >= 0."""

    min_resource: float = 1.0
    reduction_factor: float = 3.0
    min_early_stopping_rate: int = 0

    def __post_init__(self) -> None:
        if (
            not self.min_resource > 0.0
            or not self.reduction_factor > 1.0
            or self.min_early_stopping_rate < 0
        ):
            raise MetaoptError(
                "AshaConfig needs min_resource > 0, reduction_factor > 1 and "
                "min_early_stopping_rate >= 0; fix the fidelity prior or the config"
            )

    @classmethod
    def from_fidelity(cls, low: float, base: float) -> AshaConfig:
        """The ladder of a fidelity(low, high, base) prior."""
        return cls(min_resource=low, reduction_factor=base)

    def rungs(self, max_step: int) -> list[int]:
        """Rung steps strictly below max_step (the last rung is the budget itself)."""
        return rung_ladder(
            self.min_resource, self.reduction_factor, max_step, self.min_early_stopping_rate
        )


def _in_top(value: float, rivals: list[float], top: int) -> bool:
    """Whether fewer than top of the sorted rivals are strictly better (lower) than value."""
    return bisect.bisect_left(rivals, value) < top


class AshaStopper:
    """ASHA; remembers which rungs of which trials it already judged, so each is judged once,
    and the rung at which it killed each."""

    def __init__(self, config: AshaConfig | None = None) -> None:
        self.config = config or AshaConfig()
        self._judged: dict[str, int] = {}
        self._killed_at: dict[str, int] = {}

    def decide(
        self,
        curves: Sequence[CurveView],
        own: Collection[str],
        free_slots: int,
        rng: np.random.Generator,
        *,
        fresh_available: bool = True,
    ) -> list[Decision]:
        """KILL own running trials that fall outside the top 1/eta at a newly reached rung.

        A trial's value counts at a rung only if it went on past the rungs below, as in ASHA,
        where a trial stopped at rung 1 never reports at rung 9. A peer stops a trial some
        steps after the rung that stopped it (it judges every few seconds, and the trial
        exits at its next report), and steps a second apart made a killed trial's later
        values the competition at rung 9: the trial that had beaten it at rung 1 was killed
        there in turn, and an experiment ended with no trial completed. So the rungs are
        judged lowest first across this peer's trials, and a trial killed at a rung (by this
        stopper, or by another peer's: its kill records the rung, CurveView.stopped_rung)
        counts only up to that rung. One killed for another reason (diverged past every rung,
        or by hand) had passed the rungs it reached, and counts at them all. A trial
        resumed from a checkpoint is not judged again at the rungs it had passed (the stopper
        of a restarted peer remembers none).

        Args:
            curves: every known curve.
            own: this peer's trial ids.
            free_slots: unused (ASHA never thaws).
            rng: unused (ASHA is deterministic).
            fresh_available: unused (only thawing depends on it).

        Returns:
            One decision per own running trial.
        """
        eta = self.config.reduction_factor
        decisions: dict[str, Decision] = {}
        judged: dict[str, list[int]] = {}  # own running trial -> its rungs still to judge
        for c in sorted(curves, key=lambda c: c.trial_id):
            if c.trial_id not in own or c.state != "running":
                continue
            s, _, broken = finite_prefix(c)
            if c.trial_id in self._killed_at:  # (still stopping)
                at = self._killed_at[c.trial_id]
                why = f"not in the top 1/{eta:g} at rung {at}"
                decisions[c.trial_id] = Decision(c.trial_id, Action.KILL, why, at)
            elif broken:
                decisions[c.trial_id] = Decision(c.trial_id, Action.KILL, "diverged (nan/inf)")
            elif s.shape[0] == 0:
                decisions[c.trial_id] = Decision(c.trial_id, Action.CONTINUE, "no reports yet")
            else:
                decisions[c.trial_id] = Decision(c.trial_id, Action.CONTINUE, "below the next rung")
                judged[c.trial_id] = self._rungs_to_judge(c)
        waiting = [rungs[-1] for rungs in judged.values() if rungs]
        if not waiting:
            return list(decisions.values())
        # Up to which rung each trial killed at one counts (see above).
        counts_to: dict[str, float] = {}
        for c in curves:
            killed_at = self._killed_at.get(c.trial_id, c.stopped_rung)
            if killed_at is not None:
                counts_to[c.trial_id] = killed_at
        by_id = {c.trial_id: c for c in curves}
        prefixes = {c.trial_id: finite_prefix(c)[:2] for c in curves}  # (once, not per rung)
        highest = max(waiting)
        horizons = {c.max_step for c in curves}  # (one ladder each, not one per curve)
        ladder = sorted({r for m in horizons for r in self.config.rungs(m) if r <= highest})
        for r in ladder:
            values = {t: value_in(s, v, r) for t, (s, v) in prefixes.items()}
            # The top 1/eta of the values of the trials that went on to the rung, as in ASHA.
            rivals = sorted(
                v for t, v in values.items() if v is not None and counts_to.get(t, math.inf) >= r
            )
            top = max(int(len(rivals) // eta), 1)
            for t, rungs in judged.items():
                if not rungs or rungs[0] != r or decisions[t].action is Action.KILL:
                    continue
                mine = values[t]
                if mine is None and prefixes[t][0][-1] < r:
                    rungs.clear()  # not there yet: the rungs above wait too
                    continue
                rungs.pop(0)
                self._judged[t] = self.config.rungs(by_id[t].max_step).index(r)
                if mine is None:
                    # Past it with no report at or before it (a run reporting every 2 steps
                    # at rung 1): not judged there, on resources unlike the others'. Taken
                    # for "not there yet", it held every rung above back, and ASHA stopped
                    # no such run at all.
                    continue
                if _in_top(mine, rivals, top):
                    decisions[t] = Decision(t, Action.CONTINUE, f"promoted past rung {r}")
                else:
                    self._killed_at[t] = counts_to[t] = r
                    reason = f"not in the top 1/{eta:g} at rung {r}"
                    decisions[t] = Decision(t, Action.KILL, reason, r)
        return list(decisions.values())

    def _rungs_to_judge(self, c: CurveView) -> list[int]:
        """The rungs of an own running trial this stopper has yet to judge, lowest first: not
        those it judged, nor those a resumed run had passed before its checkpoint."""
        rungs = self.config.rungs(c.max_step)
        if c.trial_id not in self._judged and c.resumed_step is not None:
            passed = [k for k, r in enumerate(rungs) if r <= c.resumed_step]
            if passed:
                self._judged[c.trial_id] = passed[-1]
        return rungs[self._judged.get(c.trial_id, -1) + 1 :]
