"""This peer's early-stopping decisions for its own trials: freeze, kill or thaw.

Each experiment's early stopper (freeze-thaw, ASHA, median) judges the curves of the trials
this peer runs or has frozen, in a worker thread on a snapshot, one decision at a time; what
it decides is carried out through the runner: a run frozen or killed, a frozen trial killed
for good, or thawed into a free slot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from metaopt._blas import one_blas_thread
from metaopt._errors import MetaoptError
from metaopt._state import ExperimentState, TrialView

if TYPE_CHECKING:
    import numpy as np

    from metaopt._suggest import Suggester
    from metaopt.freezethaw import CurveView, Decision, EarlyStopper
    from metaopt.peer._runner import TrialRunner

__all__ = ["EarlyStopping"]

log = logging.getLogger("metaopt.peer")


class EarlyStopping:
    """The early stoppers of one peer's runner, and what they decide for its trials."""

    def __init__(self, runner: TrialRunner) -> None:
        self.runner = runner
        self.node = runner.node
        self._undecidable: set[bytes] = set()  # experiments whose stopper failed (logged once)
        self._stoppers: dict[bytes, EarlyStopper | None] = {}
        self._decisions = 0
        # A stopper keeps fitted hyperparameters between calls: one decision at a time.
        self._deciding = asyncio.Lock()

    def stopper_keys(self) -> set[bytes]:
        """The experiments whose early stopper this peer holds."""
        return set(self._stoppers)

    def forget_stopper(self, experiment: bytes) -> None:
        """Drop an experiment's early stopper (made again when next asked for)."""
        self._stoppers.pop(experiment, None)

    def _stopper(self, state: ExperimentState) -> EarlyStopper | None:
        # The curve model (scipy) loads on first use, not at peer start.
        from metaopt._curves import stopper_for

        if state.key in self._stoppers:
            return self._stoppers[state.key]
        try:
            stopper = stopper_for(state, self.node.suggester(state).space)
        except MetaoptError:
            # A space, algorithm or early stopping this peer cannot read (from another peer's
            # definition): without a stopper the trials it runs of it just run on.
            return None
        # By default an experiment with no horizon gets freeze-thaw once a trial reports a
        # step: "none yet" is not kept, or the first monitor pass (before any report) would
        # have switched early stopping off on this peer for good.
        if stopper is not None or state.spec.early_stopping is not None:
            self._stoppers[state.key] = stopper
        return stopper

    async def worth_rerun(self, state: ExperimentState, view: TrialView) -> TrialView | None:
        """The trial to run again (as it is now), from step 0, if a trial lost while frozen
        on a peer now gone is worth that once its experiment's budget is spent; None if it is
        not (it is recorded killed) or it moved on meanwhile. Any other trial is run as it is.

        Such a trial's own peer would have judged it among its frozen ones, thawing it only
        if worth a slot, killing it otherwise; taken over as a lost one it was run in full,
        its rungs unchecked (nothing new may start), after the live peers' frozen trials had
        been killed as not worth resuming. The stopper judges it as one frozen here.
        """
        from metaopt.freezethaw import Action

        if not (view.lost_frozen and state.budget_spent) or self._stopper(state) is None:
            return view
        decisions = await self._decide(state, {view.id}, 1, frozen={view.id})
        now = state.trial(view.key)  # (it may have moved on while the stopper thought)
        if now is None or now.state != "lost":
            return None
        if decisions is None:  # its stopper failed: run unjudged, as with none
            return now
        if any(d.trial_id == view.id and d.action is Action.THAW for d in decisions):
            return now
        why = next((d.reason for d in decisions if d.trial_id == view.id), "no thaw")
        reason = f"lost while frozen, when the budget was spent; not worth a re-run ({why})"
        log.info("trial %s: %s", view.key.hex()[:12], reason)
        self.node.write_event(state.key, view.key, "killed", reason=reason, after=now.latest)
        return None

    async def _decide(
        self,
        state: ExperimentState,
        own: set[str],
        free_slots: int,
        *,
        frozen: Collection[str] = (),
    ) -> list[Decision] | None:
        """The stopper's decisions, computed in a worker thread on a snapshot of the curves;
        the trials in ``frozen`` are shown to it as frozen ones (see worth_rerun). None if
        the stopper failed: nothing may be concluded (an empty list says "no thaw").

        A decision takes tens of milliseconds, the first fit of an experiment's curve model a
        few hundred: on the event loop that would hold up replication, heartbeats and the API.
        The caller re-checks what it acts on, since trials may have moved on meanwhile.
        """
        import numpy as np

        stopper = self._stopper(state) if own else None
        if stopper is None:
            return []
        async with self._deciding:
            self._decisions += 1
            rng = np.random.default_rng([self._decisions, *self.node.node_id[:8]])
            try:
                snapshot = _Snapshot(
                    state, self.node.suggester(state), state.trials(), frozenset(frozen)
                )
                # (Nor for a stopped experiment, whose runs its stopper froze at a rung in
                # favour of fresh points; no thaw resumes them, so they stayed frozen.)
                fresh = not (state.stopped or self._nothing_new(state))
                return await asyncio.to_thread(
                    _decide_in_thread, stopper, snapshot, set(own), free_slots, rng, fresh
                )
            except Exception:
                # A bug in one experiment's stopper must not end every scheduling pass (the
                # thaws come first in each): its trials run on unjudged, the others as usual.
                if state.key not in self._undecidable:
                    self._undecidable.add(state.key)
                    log.exception(
                        "experiment %s: its early stopper failed; its trials run on unjudged",
                        state.spec.name,
                    )
                return None

    def _still_frozen(self, state: ExperimentState, trial: bytes) -> bool:
        view = state.trial(trial)
        return view is not None and view.state == "frozen"

    def own_frozen(self, state: ExperimentState) -> set[str]:
        """This peer's frozen trials its stopper may thaw or kill: not those frozen by hand,
        a pause the user ends (a stopper resumed such a trial, or killed it once the budget
        was spent)."""
        me = self.node.node_id
        return {
            t.id
            for t in state.open_trials()
            if t.state == "frozen" and t.runner == me and not t.frozen_by_hand
        }

    def _nothing_new(self, state: ExperimentState) -> bool:
        """Whether no new configuration of the experiment can start: its budget is spent, or
        every point of its finite space is already a trial. (Told otherwise, the stoppers
        kept a used-up space's frozen trials frozen for good beside idle slots, in favour of
        fresh points that could never run.)"""
        return state.budget_spent or self.node.exhausted_now(state.key) is not None

    async def monitor(self) -> None:
        """Freeze or kill this peer's running trials whose curves will not win (freeze-thaw),
        and thaw or kill its frozen ones."""
        from metaopt.freezethaw import Action

        for state in list(self.node.replica.experiments.values()):
            if state.spec.command is None:
                continue
            running = {
                r.trial.hex(): r
                for r in self.runner.running.values()
                if r.experiment == state.key and r.outcome is None
            }
            frozen = self.own_frozen(state)
            # Nothing new will start: the frozen trials still worth a slot are thawed (by
            # thaw(), in their experiment's turn), the rest are stopped for good, so the
            # experiment can finish, once none of its trials runs here (their ends move the
            # bar). Not once every slot here is idle: another experiment kept them busy, and
            # this one open with its frozen trials, for as long as it ran.
            ending = (
                self._nothing_new(state)
                and not running
                and bool(frozen)
                and not self.runner.interrupted_here(state)
            )
            worth: set[str] = set()
            decisions = await self._decide(
                state, set(running) | frozen, len(frozen) if ending else 0
            )
            if self.node.stopping:
                # Asked to stop while the stopper decided (in a thread): its runs are ending as
                # interrupted, so they were not among those it saw running, and with the budget
                # spent it judged the frozen trials as if nothing ran here, and killed them.
                return
            if decisions is None:  # its stopper failed: no trial is judged, none killed
                continue
            for decision in decisions:
                key = bytes.fromhex(decision.trial_id)
                if decision.action in (Action.FREEZE, Action.KILL) and decision.trial_id in running:
                    outcome = "frozen" if decision.action is Action.FREEZE else "killed"
                    # "freezing", not "frozen": a run that reaches its last step before it
                    # stops is completed (its "ended: completed" line follows).
                    doing = "freezing" if decision.action is Action.FREEZE else "killing"
                    # (Not if it has ended while the stopper decided: "killing" followed its
                    # "ended: completed" line, and nothing was killed.)
                    if await self.runner.end(key, outcome, decision.reason, decision.rung):
                        log.info("%s trial %s: %s", doing, key.hex()[:12], decision.reason)
                        self.runner.note_stop_request(key, outcome, decision.reason, decision.rung)
                elif decision.action is Action.KILL and self._still_frozen(state, key):
                    self._kill_frozen(state, key, decision.reason)
                elif decision.action is Action.THAW:
                    worth.add(decision.trial_id)
            if ending and self._stopper(state) is not None:
                ran_out = (
                    "the budget ran out" if state.budget_spent else "no new point was left to try"
                )
                for trial_id in sorted(frozen - worth):
                    if not self._still_frozen(state, bytes.fromhex(trial_id)):
                        continue  # thawed while the decision was being made
                    why = f"frozen when {ran_out} and not worth resuming"
                    self._kill_frozen(state, bytes.fromhex(trial_id), why)

    def _kill_frozen(self, state: ExperimentState, key: bytes, reason: str) -> None:
        """End one of this peer's frozen trials for good, in its log as its freezes are."""
        log.info("killed frozen trial %s: %s", key.hex()[:12], reason)
        self.node.write_event(state.key, key, "killed", reason=reason)

    async def thaw(self, turns: Callable[[], tuple[dict[bytes, int], int]] | None = None) -> None:
        """Resume this peer's frozen trials that are a better bet than a new configuration,
        in the slots its own interrupted trials do not need (see interrupted_here).

        With ``turns`` (asked once, when a frozen trial and a free slot are both here), an
        experiment's thaws take only the slots its turn gives it: (slots planned for each
        experiment's new points, slots no turn takes).
        """
        from metaopt.freezethaw import Action, Decision

        reserved = None
        planned: tuple[dict[bytes, int], int] | None = None
        for state in list(self.node.replica.experiments.values()):
            if self.runner.free_slots() <= 0 or state.spec.command is None or state.stopped:
                continue
            frozen = self.own_frozen(state)
            if not frozen:
                continue
            reserved = self.runner.interrupted_here() if reserved is None else reserved
            if self.runner.free_slots() <= reserved:
                return
            slots = self.runner.free_slots() - reserved
            if turns is not None:
                planned = turns() if planned is None else planned
                slots = min(slots, planned[0].get(state.key, 0) + planned[1])
                if slots <= 0:
                    continue
            thawed = 0
            decisions = await self._decide(state, frozen, slots)
            if decisions is None:
                # Its stopper failed: resumed unjudged as slots allow (as a trial lost while
                # frozen is re-run), or they would stay frozen and the experiment open for good.
                why = "its early stopper failed; resumed unjudged"
                decisions = [Decision(t, Action.THAW, why) for t in sorted(frozen)]
            for decision in decisions:
                key = bytes.fromhex(decision.trial_id)
                if decision.action is Action.KILL and self._still_frozen(state, key):
                    # Judged hopeless where a slot could have taken it: frozen for good.
                    self._kill_frozen(state, key, decision.reason)
                elif (
                    decision.action is Action.THAW
                    and self.runner.free_slots() > reserved
                    and thawed < slots
                ):
                    view = state.trial(key)
                    # (The stopper decided in a thread: a `peer stop` meanwhile interrupted
                    # the thawed run at once, and freed it for another peer to run from 0.)
                    if view is not None and view.state == "frozen" and not self.node.stopping:
                        log.info("thawing trial %s: %s", view.key.hex()[:12], decision.reason)
                        await self.runner.launch(state, view, thaw=True)
                        thawed += 1
            if planned is not None:
                # Its own turns first, then the slots no turn took.
                own = planned[0].get(state.key, 0)
                planned[0][state.key] = max(0, own - thawed)
                planned = (planned[0], planned[1] - max(0, thawed - own))


@dataclass(frozen=True)
class _Snapshot:
    """An experiment's trials taken on the event loop, for a decision in a worker thread (the
    curves out of 50,000 trials take seconds to build); frozen: those shown to it as frozen."""

    state: ExperimentState
    suggester: Suggester  # (its space, and each trial's point in the unit cube, kept)
    trials: list[TrialView]
    frozen: frozenset[str]

    def curves(self) -> list[CurveView]:
        from metaopt._curves import curve_views

        views = curve_views(self.state, self.suggester, self.trials)
        return [replace(c, state="frozen") if c.trial_id in self.frozen else c for c in views]


def _decide_in_thread(
    stopper: EarlyStopper,
    snapshot: _Snapshot,
    own: set[str],
    free_slots: int,
    rng: np.random.Generator,
    fresh_available: bool,
) -> list[Decision]:
    curves = snapshot.curves()
    with one_blas_thread():
        return stopper.decide(curves, own, free_slots, rng, fresh_available=fresh_available)
