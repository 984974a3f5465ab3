"""Asynchronous successive halving (ASHA) as an early stopper over a geometric fidelity ladder.

The stopping form of ASHA (Li et al. 2020; Optuna's SuccessiveHalvingPruner): when a trial
first reaches rung k (step min_resource * eta**(k + s)), it goes on only if its value there is
among the best 1/eta of the values every trial recorded at that rung so far; otherwise it is
killed. With fewer than eta competitors it must be the best of them, as in Optuna, since a
stopped trial is never resumed. The rung ladder is the fidelity prior fidelity(low, high, base)
with min_resource=low and eta=base.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from metaopt._errors import MetaoptError
from metaopt.freezethaw._model import CurveView, finite_prefix, value_at
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


class AshaStopper:
    """ASHA; remembers which rungs of which trials it already judged, so each is judged once."""

    def __init__(self, config: AshaConfig | None = None) -> None:
        self.config = config or AshaConfig()
        self._judged: dict[str, int] = {}

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
        out: list[Decision] = []
        for c in sorted(curves, key=lambda c: c.trial_id):
            if c.trial_id not in own or c.state != "running":
                continue
            s, _, broken = finite_prefix(c)
            if broken:
                out.append(Decision(c.trial_id, Action.KILL, "diverged (nan/inf)"))
                continue
            if s.shape[0] == 0:
                out.append(Decision(c.trial_id, Action.CONTINUE, "no reports yet"))
                continue
            decision = Decision(c.trial_id, Action.CONTINUE, "below the next rung")
            rungs = self.config.rungs(c.max_step)
            for k, r in enumerate(rungs):
                if k <= self._judged.get(c.trial_id, -1):
                    continue
                mine = value_at(c, r)
                if mine is None:
                    break
                self._judged[c.trial_id] = k
                others = [value_at(o, r) for o in curves]
                competing = sorted(x for x in others if x is not None)
                cut = competing[max(int(len(competing) // eta) - 1, 0)]
                if mine > cut:
                    decision = Decision(
                        c.trial_id, Action.KILL, f"not in the top 1/{eta:g} at rung {r}"
                    )
                    break
                decision = Decision(c.trial_id, Action.CONTINUE, f"promoted past rung {r}")
            out.append(decision)
        return out
