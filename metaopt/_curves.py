"""Learning curves out of the replica, for early stopping (pure).

Every peer's progress events are replicated, so each peer judges its own trials against
everyone's curves. Values are turned into ones to minimise; lost and interrupted trials look
frozen (they may resume); the final step comes from the experiment (``max_step``), else from the
fidelity prior, else from the longest curve seen — and with none of those early stopping waits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from metaopt._state import ExperimentState, TrialView
from metaopt.freezethaw import (
    AshaConfig,
    CurveView,
    EarlyStopper,
    FreezeThawPolicyConfig,
    make_stopper,
)
from metaopt.space import Space

if TYPE_CHECKING:
    from metaopt._suggest import Suggester

__all__ = ["curve_views", "max_step_of", "stopper_for"]

_STATE = {
    "pending": "running",
    "running": "running",
    "frozen": "frozen",
    "lost": "frozen",
    "interrupted": "frozen",
    "completed": "completed",
    "killed": "killed",
    "failed": "failed",
}
STOPPERS = ("freeze-thaw", "asha", "median", "none")


def max_step_of(state: ExperimentState, space: Space, trials: Sequence[TrialView]) -> int | None:
    """The step a trial runs to when nobody stops it, if it can be known."""
    if state.spec.max_step is not None:
        return state.spec.max_step
    if space.fidelity_steps is not None:
        # (Not a fidelity of a share of the data: its high end, 1, made every run past step 1
        # "at its budget", never stopped, and a kill or freeze of it recorded completed.)
        return space.fidelity_steps
    done = [t.last_step for t in trials if t.state == "completed" and t.curve]
    return max(done) if done else None


def curve_views(
    state: ExperimentState, suggester: Suggester, trials: Sequence[TrialView] | None = None
) -> list[CurveView]:
    """Every trial with at least one step report, and every running or pending one (the
    stoppers owe each own running trial a decision, reports or none), as the early stoppers
    see it, each at the point of the unit cube its suggester keeps for it (``Suggester.unit``).

    Given ``trials`` (``state.trials()``, taken on the event loop) it reads nothing else that
    changes, so it may run in a worker thread: at 50,000 trials it takes seconds.
    """
    if trials is None:
        trials = state.trials()
    final = max_step_of(state, suggester.space, trials)
    if final is None:
        return []
    sign = -1.0 if state.spec.directions[0] == "maximize" else 1.0
    out = []
    for trial in trials:
        if not trial.curve and trial.state not in ("running", "pending"):
            continue
        x = suggester.unit(trial)
        if x is None:  # a peer's malformed params must not stop the monitor
            continue
        steps = np.array([s for s, _ in trial.curve], dtype=np.int64)
        values = sign * np.array([v for _, v in trial.curve], dtype=np.float64)
        out.append(
            CurveView(
                trial_id=trial.id,
                x=x,
                steps=steps,
                values=values,
                state=_STATE[trial.state],  # type: ignore[arg-type]
                max_step=max(final, int(steps[-1]) if len(steps) else 0),
                resumed_step=trial.resumed_step,
                stopped_rung=trial.stopped_rung,
            )
        )
    return out


def stopper_for(state: ExperimentState, space: Space) -> EarlyStopper | None:
    """The experiment's early stopper: its choice, else freeze-thaw once curves can exist."""
    choice = state.spec.early_stopping
    if choice == "none":
        return None
    if choice is None:
        no_horizon = space.fidelity_steps is None and state.spec.max_step is None
        if no_horizon and not any(t.curve for t in state.trials()):
            return None
        choice = "freeze-thaw"
    if choice in ("asha", "freeze-thaw") and space.fidelity_steps is not None:
        # The ladder the user wrote: fidelity(low, high, base) has its rungs at low * base**k.
        assert space.fidelity is not None
        low, base = float(space.fidelity.args[0]), space.fidelity.base
        if choice == "asha":
            return make_stopper("asha", AshaConfig.from_fidelity(low, base))
        return make_stopper("freeze-thaw", FreezeThawPolicyConfig.from_fidelity(low, base))
    return make_stopper(choice)  # type: ignore[arg-type]
