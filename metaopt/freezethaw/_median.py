"""The median stopping rule (Golovin et al. 2017, Google Vizier) as an early stopper.

A trial at step t is killed when its best value so far is worse than the median, over the
other trials that reached step t, of their running averages up to t. Nothing is stopped before
n_warmup_steps or with fewer than n_min_trials such other trials.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from metaopt.freezethaw._model import CurveView, finite_prefix
from metaopt.freezethaw._policy import Action, Decision

__all__ = ["MedianConfig", "MedianStopper"]


@dataclass(frozen=True)
class MedianConfig:
    """When the median rule starts to act."""

    n_warmup_steps: int = 5
    n_min_trials: int = 5


def _running_mean_at(c: CurveView, step: float) -> float | None:
    """The mean of a curve's reports up to step, if it reached step and reported by then
    (one whose first report came later had a mean of nothing, nan: the median of the rivals
    was then nan, and the rule stopped no run while that rival was among them)."""
    s, v, _ = finite_prefix(c)
    if s.shape[0] == 0 or s[-1] < step or s[0] > step:
        return None
    return float(v[s <= step].mean())


class MedianStopper:
    """The median rule; stateless, so any peer recomputes the same decisions."""

    def __init__(self, config: MedianConfig | None = None) -> None:
        self.config = config or MedianConfig()

    def decide(
        self,
        curves: Sequence[CurveView],
        own: Collection[str],
        free_slots: int,
        rng: np.random.Generator,
        *,
        fresh_available: bool = True,
    ) -> list[Decision]:
        """KILL own running trials whose best so far is worse than the others' median.

        Args:
            curves: every known curve.
            own: this peer's trial ids.
            free_slots: unused (the median rule never thaws).
            rng: unused.
            fresh_available: unused (only thawing depends on it).

        Returns:
            One decision per own running trial.
        """
        cfg = self.config
        out: list[Decision] = []
        for c in sorted(curves, key=lambda c: c.trial_id):
            if c.trial_id not in own or c.state != "running":
                continue
            s, v, broken = finite_prefix(c)
            if broken:
                out.append(Decision(c.trial_id, Action.KILL, "diverged (nan/inf)"))
                continue
            if s.shape[0] == 0 or s[-1] < cfg.n_warmup_steps:
                out.append(Decision(c.trial_id, Action.CONTINUE, "warming up"))
                continue
            step = float(s[-1])
            others = [
                m
                for o in curves
                if o.trial_id != c.trial_id and (m := _running_mean_at(o, step)) is not None
            ]
            if len(others) < cfg.n_min_trials:
                out.append(Decision(c.trial_id, Action.CONTINUE, "too few trials to compare"))
                continue
            median = float(np.median(others))
            best = float(v.min())
            if best > median:
                out.append(
                    Decision(c.trial_id, Action.KILL, f"best {best:.4g} > median {median:.4g}")
                )
            else:
                out.append(Decision(c.trial_id, Action.CONTINUE, f"best {best:.4g} <= median"))
        return out
