"""metaopt.Study: the in-process ask/tell API over one crdt replica.

A Study is a node: it has an id, writes records under it, and folds its replica into views.
Two Studies on one experiment (same definition, different node ids) explore it together by
``sync``-ing their replicas through the crdt reconciliation protocol, exactly as peers do over
HTTP; that is how the simulations run many peers in one process.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import numpy as np

from crdt import (
    MAX_RECORD_SIZE,
    MemoryStore,
    OversizedRecord,
    Record,
    RecordError,
    Store,
    StoreWriteFailed,
)
from metaopt._blas import one_blas_thread
from metaopt._curves import curve_views, max_step_of, stopper_for
from metaopt._errors import MetaoptError, WorkerError
from metaopt._records import (
    EVENT,
    MAX_REASON,
    TRIAL,
    EventBody,
    experiment_record,
    parse_experiment,
)
from metaopt._state import (
    FREE_STATES,
    TERMINAL_STATES,
    ExperimentState,
    TrialView,
    went_on,
)
from metaopt._study_args import (
    checked_clock,
    checked_metric,
    checked_spec,
    other_settings,
    settings_differ,
)
from metaopt._study_replica import checked_node_id, claimed_replica, node_id_for, open_store
from metaopt._suggest import Suggester, stream
from metaopt._writer import NodeWriter
from metaopt.freezethaw import Action, Decision, EarlyStopper
from metaopt.peer._identity import DataDir, lost_replica_refusal
from metaopt.peer._storage import disk_advice
from metaopt.search import Algorithm, make_algorithm
from metaopt.worker import MAX_METRICS, check_metric

__all__ = ["Study", "Trial", "sync_stores"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass(frozen=True)
class Trial:
    """A trial handed out by ``Study.ask``: evaluate ``params``, then ``tell`` the result."""

    key: bytes
    params: Mapping[str, Any]
    counter: int
    # The last step a resumed trial reached: go on from resume_step + 1. A number always (0
    # for a fresh trial), so `range(trial.resume_step + 1, n)` needs no case of its own; the
    # worker's metaopt.resume_step() is None for a fresh run, as its environment says nothing.
    resume_step: int = 0

    def __hash__(self) -> int:  # (its params, a dict, cannot be hashed: it is its key)
        return hash(self.key)

    @property
    def id(self) -> str:
        return self.key.hex()


def sync_stores(a: Store, b: Store) -> int:
    """Reconcile two stores in process through the crdt protocol; return round trips used."""
    from crdt import Initiator, respond

    session = Initiator(a)
    message: bytes | None = session.start()
    while message is not None:
        message = session.receive(respond(b, message))
    return int(session.stats.round_trips)


def _weakly(method: Callable[[list[Record]], None]) -> Callable[[list[Record]], None]:
    """A store subscriber calling method while its object lives (see Study.__init__)."""
    ref = weakref.WeakMethod(method)

    def call(records: list[Record]) -> None:
        bound = ref()
        if bound is not None:
            bound(records)

    return call


def _detached(view: TrialView) -> TrialView:
    """A view whose params and metrics the caller may change without touching the replica."""
    return dataclasses.replace(view, params=dict(view.params), metrics=dict(view.metrics))


def _serialised(
    method: Callable[Concatenate[Study, _P], _R],
) -> Callable[Concatenate[Study, _P], _R]:
    """One call at a time per Study, and none once it is closed.

    A Study reads its node's next record number and suggestion counter, then writes them: two
    threads asking at once wrote two trials under one (origin, seq) and drew the same point.
    """

    def call(study: Study, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        # (Before the lock: a fork()ed child inherits it held by a thread it does not have.)
        study._check_process(method.__name__)
        with study._lock:
            if study._closed:
                raise MetaoptError("this Study is closed; make a new Study(...) to go on")
            try:
                return method(study, *args, **kwargs)
            except StoreWriteFailed as exc:  # a full (or read-only) disk under path=
                raise MetaoptError(
                    f"{method.__name__}(): cannot write the Study's store ({exc.disk}); free"
                    " space on its disk and call it again"
                ) from None
            except RecordError as exc:  # a value no record can hold (a lone surrogate, say)
                raise MetaoptError(f"{method.__name__}(): {exc}; nothing was recorded") from None

    functools.update_wrapper(call, method)
    return call


class Study:
    """Ask/tell hyperparameter search over a grow-only replica (in memory or LevelDB).

    Args:
        space: parameter name → prior, e.g. {"lr": "loguniform(1e-5, 1)"}.
        algorithm: "auto" (default), "gp", "evolution", "random", "sobol" (quasi-random), or
            an Algorithm instance.
        seed: seeds this node's random streams (with the node id, experiment and counter).
            In memory the node id follows the seed, so the same seed gives the same
            suggestions; with path= the node id is the directory's own (drawn on first use),
            so pass node_id= as well to reproduce a run in another directory.
        minimize: direction of every objective, True by default (or pass ``directions``).
        objective: the name of the objective, or a list of names for several objectives.
        node_id: this node's 16-byte id (or its hex); distinct for Studies exploring together.
        path: a directory to keep the replica in (LevelDB) and reopen it from.
        name: the experiment's name; with the space and objectives it names the experiment.
        max_trials: the experiment's global budget, across every node.
        early_stopping: "freeze-thaw", "asha", "median", or None (or "none") for no early
            stopping; "auto" (the default) is freeze-thaw once the space has a fidelity, a
            max_step is given, or step reports exist.
        max_step: the step a trial runs to when not stopped (else the fidelity's high end).
        fidelity: the step dimension as a prior, e.g. "fidelity(1, 100, base=3)": the same as
            that prior in space, named "fidelity" (a trial's params give the step it runs to).
        clock: seconds since the epoch (record times); time.time by default.
    """

    def __init__(
        self,
        space: Mapping[str, str],
        *,
        algorithm: str | Algorithm = "auto",
        seed: int = 0,
        minimize: bool | None = None,
        objective: str | Sequence[str] = "objective",
        directions: str | Sequence[str] | None = None,
        node_id: bytes | str | None = None,
        path: str | os.PathLike[str] | None = None,
        name: str = "study",
        max_trials: int | None = None,
        early_stopping: str | None = "auto",
        max_step: int | None = None,
        fidelity: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(algorithm, str) and not hasattr(algorithm, "suggest"):
            raise MetaoptError(
                f"algorithm must be 'auto', 'gp', 'evolution', 'random', 'sobol' or an"
                f" Algorithm, got {algorithm!r}"
            )
        algo_name = algorithm if isinstance(algorithm, str) else getattr(algorithm, "name", None)
        if not isinstance(algo_name, str) or not algo_name:
            # (The name goes into the experiment's record: without one it was an AttributeError.)
            raise MetaoptError(f"an Algorithm needs a name (a non-empty str), got {algo_name!r}")
        if path is not None and not isinstance(path, str | os.PathLike):
            raise MetaoptError(f"path must be a directory's path (a str), got {path!r}")
        if path is not None and not os.fspath(path):  # ("" was the working directory)
            raise MetaoptError(
                "path is empty; pass a directory's path, or None to keep it in memory"
            )
        if not callable(clock):
            raise MetaoptError(f"clock must be a function returning seconds, got {clock!r}")
        spec = checked_spec(
            space,
            name=name,
            objective=objective,
            directions=directions,
            minimize=minimize,
            algorithm=algo_name,
            max_trials=max_trials,
            early_stopping=early_stopping,
            max_step=max_step,
            fidelity=fidelity,
        )
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise MetaoptError(f"seed must be an integer, got {seed!r}")
        seed = int(seed)
        if isinstance(algorithm, str):
            make_algorithm(algorithm)  # an unknown name is a one-line SearchError, here
        root = None if path is None else Path(path)
        self._root = root
        given = checked_node_id(node_id)
        self.node_id = node_id_for(seed, root, given)
        if root is not None:
            dirs = DataDir(root)
            dirs.note_if_lost(self.node_id)  # (see claimed_replica)
            if given is not None and dirs.lost_noted(self.node_id) and dirs.replica_gone():
                # (Refused before the open makes an empty replica, which a replica put back
                # as this advises would have had to go around.)
                raise MetaoptError(lost_replica_refusal(root, self.node_id))
        try:
            exp = experiment_record(spec)
        except OversizedRecord:
            # (crdt's own said "split it into smaller records", nothing a user can do.)
            raise MetaoptError(
                f"the space is too large to record (over {MAX_RECORD_SIZE >> 20} MiB in all);"
                " use fewer or shorter choices (an index into a list of your own, say)"
            ) from None
        except RecordError as exc:  # a name or value no record can hold (a lone surrogate)
            raise MetaoptError(
                f"the Study cannot be recorded: {exc}; check its space's names and values"
            ) from None
        if parse_experiment(exp) is None:  # pragma: no cover - checked_spec accepts only that
            # (Before it is written: a record no reader accepts stayed in the store.)
            raise MetaoptError("the experiment definition does not round-trip; report a bug")
        # Everything the user passed is checked before the store opens: a failed Study must not
        # leave a LevelDB lock held, nor an experiment record behind.
        self.store: Store = MemoryStore() if root is None else open_store(root / "replica")
        self._stopper: EarlyStopper | None = None
        self._decisions = 0
        self._lock = threading.RLock()
        self._closed = False
        self._pid = os.getpid()  # (see _check_process)
        # Free or frozen trials this Study handed out again: another node may have resumed
        # the same one meanwhile (and be its runner after a sync), yet this one's result is
        # a result all the same.
        self._asked: set[bytes] = set()
        self._told: set[bytes] = set()  # trials this Study told (see _taken_over)
        # The step each trial handed out resumed after, until its first report: a report
        # below it says the caller started again from step 0 (it had no checkpoint).
        self._resumed: dict[bytes, int] = {}
        try:
            if root is not None:
                self.node_id = claimed_replica(root, self.store, self.node_id, given)
            self._writer = NodeWriter(self.store, self.node_id, checked_clock(clock))
            differ = None if root is None else other_settings(self.store, exp.key, spec)
            if differ is not None:
                raise MetaoptError(
                    f"{root} holds a Study named {spec.name!r} with other settings ({differ});"
                    " reopen it with the same arguments, or pass another name= or path="
                )
            self.store.add([exp])
            self.experiment_key = exp.key
            state = ExperimentState.from_store(self.store, exp.key)
            assert state is not None  # (its record parsed, above)
            self._state = state
            # Weakly: the store holding the Study (a bound method) and the Study the store
            # made a cycle, and a path= Study dropped without close() kept its directory
            # locked until the cycle collector ran (3 of 5 reopens refused; a reading of
            # Study). Dropped, it lets go of its store, which closes. (Not a finalizer: at
            # exit it closed the store under a tell() in an exit handler or a thread.)
            self._unsubscribe = self.store.subscribe(_weakly(self._on_records))
            self._suggester = Suggester(
                state,
                self.node_id,
                seed=seed,
                algorithm=None if isinstance(algorithm, str) else algorithm,
            )
            if root is not None:
                self._free_orphans()
        except BaseException as exc:
            # (Its orphans' events too: on a full disk they were a raw StoreWriteFailed, and
            # the store stayed open, its lock held, until the process ended.)
            self.store.close()
            if isinstance(exc, StoreWriteFailed):
                raise MetaoptError(
                    f"Study(): cannot write the Study's store ({exc.disk}); free space on its"
                    " disk and open it again"
                ) from None
            raise

    def _free_orphans(self) -> None:
        """Hand out again the trials this node asked for but never told (its process ended).

        Only one Study holds a path at a time, so this node's pending or running trials found
        on opening belong to no live caller; as interrupted trials, ask() returns them first.
        """
        for view in self._state.trials():
            if (view.runner or view.node) == self.node_id and view.state in ("pending", "running"):
                reason = "asked but not told before its Study was closed"
                self._event(view.key, "interrupted", reason=reason)

    def _on_records(self, records: list[Record]) -> None:
        for record in records:
            if self.experiment_key in record.links:
                self._state.apply(record)

    @property
    def space(self) -> Any:
        return self._suggester.space

    @property
    def state(self) -> ExperimentState:
        return self._state

    @_serialised
    def ask(self) -> Trial:
        """A trial to evaluate: a frozen one worth resuming, a free one, else a new point.

        A resumed trial carries ``resume_step``: continue from there (from its checkpoint), or
        from an older checkpoint, or from 0 if it has none — a first report below resume_step
        says so, and the curve keeps only the steps before that report.
        """
        if self._state.stopped:  # (nor a frozen or free one: nothing starts again)
            raise MetaoptError("the experiment was stopped; no new trials are handed out")
        thawed = self._thaw()
        if thawed is not None:
            self._asked.add(thawed.key)
            return thawed
        for view in self._state.open_trials():  # (free trials have not ended)
            if view.state in FREE_STATES and self._state.budget_used_up:
                why = f"the budget of {self._state.spec.max_trials} trials was used up meanwhile"
                self._event(view.key, "killed", reason=why)  # (beyond it: not handed out)
            elif view.state in FREE_STATES and view.key in self._running_here():
                # A run of this Study still holds it (another thread's, told to stop at its
                # next should_stop()): handed out now, the two ran side by side, their reports
                # in one curve (a review of the session's fixes).
                continue
            elif view.state in FREE_STATES:
                # It resumes after its last step (from its checkpoint, if the caller has one):
                # this node's own run's, if it ran it, else the run it takes over.
                own = view.step_of(self.node_id)
                step = view.last_step if own is None else own
                self._event(view.key, "started", step=step, supersedes=view.free_events)
                self._asked.add(view.key)
                self._resumed[view.key] = step
                return Trial(view.key, dict(view.params), view.counter, step)
        if self._state.budget_spent:
            raise MetaoptError(
                f"the budget of {self._state.spec.max_trials} trials is spent (across every "
                "node); stop asking (a larger max_trials makes another experiment: give it"
                " another name=)"
            )
        params, counter = self._suggester.suggest()
        body = {"params": params, "node": self.node_id, "counter": counter}
        record = self._writer.write(TRIAL, body, [self.experiment_key])
        return Trial(record.key, params, counter)

    @_serialised
    def tell(
        self,
        trial: Trial | TrialView | str | bytes,
        value: float | Sequence[float] | Mapping[str, float] | None = None,
        *,
        failed: bool = False,
        reason: object = None,
    ) -> TrialView:
        """Record a result: a number, the objectives' values in their order, a dict of
        objectives (and other metrics), or a failure.

        Values follow the worker's rule (metaopt.report): finite numbers, or strings for metrics
        that are not objectives. A run that diverged is ``tell(trial, failed=True)``. Each trial
        is told once; a second tell() raises rather than being silently ignored. A trial that
        should_stop() stopped is not told: ask() hands a frozen one back if it is worth resuming.
        reason (failures only) is kept as text, e.g. the exception that ended the run.
        """
        key = self._key(trial)
        view = self._state.trial(key)
        shown = key.hex()[:12]
        if not isinstance(failed, bool | np.bool_):
            raise MetaoptError(f"tell(): failed must be True or False, got {failed!r}")
        if reason is not None and not failed:
            raise MetaoptError("tell(): reason= goes with failed=True (why the run failed)")
        self._check_own("tell()", key, view)
        if view is not None and view.state == "frozen":
            raise MetaoptError(
                f"trial {shown} was frozen by should_stop(); do not tell() it: ask() hands it"
                " back when it is worth resuming"
            )
        if view is not None and view.state == "killed":
            raise MetaoptError(f"trial {shown} was stopped early (killed); it needs no tell()")
        beside_a_failure = self._beside_a_failure(key, view)
        if view is not None and view.state in TERMINAL_STATES and not beside_a_failure:
            raise MetaoptError(f"trial {shown} is already {view.state}; tell() each trial once")
        if failed and value is not None:
            raise MetaoptError("tell(): pass a value or failed=True, not both")
        if value is None and not failed:
            raise MetaoptError(
                f"tell() got no value for trial {shown}; pass the objective's value (a dict for"
                " several objectives), or failed=True for a run that failed"
            )
        objectives = self._state.spec.objectives
        if failed:
            text = "reported as failed" if reason is None else str(reason)[:MAX_REASON]
            self._event(key, "failed", reason=text or "reported as failed")
            self._told.add(key)
        else:
            given: dict[str, Any]
            if isinstance(value, Mapping):
                given = dict(value)
            elif isinstance(value, np.ndarray | Sequence) and not isinstance(value, str | bytes):
                # In objective order; [0.3, 0.4] said "missing objective(s) b".
                value = list(np.ravel(value) if isinstance(value, np.ndarray) else value)
                if len(value) != len(objectives):
                    raise MetaoptError(
                        f"tell() got {len(value)} values for the objectives"
                        f" {', '.join(objectives)}; pass one each, in that order, or a dict"
                    )
                given = dict(zip(objectives, value, strict=True))
            else:
                given = {objectives[0]: value}
            if len(given) > MAX_METRICS:
                raise MetaoptError(f"tell() got {len(given)} metrics; at most {MAX_METRICS}")
            missing = [o for o in objectives if o not in given]
            if missing:
                others = ""
                if given and not any(k in objectives for k in given):  # a misnamed objective
                    names = ", ".join(map(repr, given))
                    others = f" ({names}: no objective of this Study, whose objective= names them)"
                raise MetaoptError(
                    f"tell() is missing objective(s) {', '.join(map(repr, missing))}{others};"
                    f" pass a dict with {', '.join(map(repr, objectives))}, or a list in that"
                    " order"
                )
            metrics = {k: checked_metric("tell()", k, v, k in objectives) for k, v in given.items()}
            self._event(key, "completed", metrics=metrics)
            self._told.add(key)
        view = self._state.trial(key)
        assert view is not None
        return _detached(view)

    @_serialised
    def report(self, trial: Trial | str | bytes, step: int, value: float) -> None:
        """Record an intermediate value of the first objective at a step (a learning curve).

        step is an integer >= 0 and value a finite number, as for metaopt.report.
        """
        key = self._key(trial)
        view = self._state.trial(key)
        self._check_own("report()", key, view)
        if self._taken_over(key, view) or self._beside_a_failure(key, view):
            return  # (not the trial's run: it counts for nothing; should_stop() says which)
        if view is not None and view.state in FREE_STATES:
            raise MetaoptError(
                f"trial {key.hex()[:12]} is {view.state} (its Study was closed before it was"
                " told); ask() hands it back to run again"
            )
        if view is not None and (view.state in TERMINAL_STATES or view.state == "frozen"):
            raise MetaoptError(
                f"trial {key.hex()[:12]} is {view.state}; report() is for a trial still running"
            )
        name = self._state.spec.objectives[0]
        try:
            step = int(check_metric("step", step))
        except WorkerError as exc:
            raise MetaoptError(f"report(): {exc}") from None
        metrics = {name: checked_metric("report()", name, value, True)}
        if step < self._resumed.pop(key, 0):
            # Handed back to resume after a step, it reports from the start: the caller has
            # no checkpoint and runs it again from step 0. Recorded, so the earlier run's
            # later steps leave its curve, and a freeze records where this run got to.
            self._event(key, "restarted", step=went_on(step))
        self._event(key, "progress", step=step, metrics=metrics)

    @_serialised
    def should_stop(self, trial: Trial | str | bytes) -> bool:
        """Ask the early stopper about a running trial; True means stop it now (recorded).

        Only this node's own trials are judged: another node's trial (seen after a sync) is
        that node's to stop, so the answer for it is False and nothing is recorded.
        """
        key = self._key(trial)
        view = self._state.trial(key)
        if self._taken_over(key, view):
            self._asked.discard(key)  # (its run here is over: ask() may hand it out again)
            return True  # (the trial's run stopped or ended: nothing recorded)
        mine = view is not None and (view.runner or view.node) == self.node_id
        if mine and view is not None and view.state in ("frozen", "killed"):
            # Stopped already (a second call in one step): stop, and record nothing. It said
            # False, "carry on", and the next report() refused the frozen trial.
            return True
        if key.hex() not in self._own():
            return False
        # The horizon known from the completed runs too (the stoppers' own): without a
        # max_step= or fidelity, the median rule killed a run at the step every completed
        # run ended at, and tell() then refused its result.
        final = max_step_of(self._state, self._suggester.space, self._state.trials())
        if view is not None and final is not None and view.last_step >= final:
            return False  # it has run its course: tell() its result (a kill here lost it)
        decision = self._decide({key.hex()}, free_slots=0).get(key.hex())
        if decision is None or decision.action not in (Action.FREEZE, Action.KILL):
            return False
        kind = "frozen" if decision.action is Action.FREEZE else "killed"
        view = self._state.trial(key)
        step = view.last_step if view is not None and view.curve else None
        rung = decision.rung if decision.action is Action.KILL else None
        self._event(key, kind, step=step, reason=decision.reason, rung=rung)
        return True

    def _beside_a_failure(self, key: bytes, view: TrialView | None) -> bool:
        """Whether a run of this Study goes on beside another Study's run of the trial that
        failed: its result still counts (a completion outranks a failure), as on a peer."""
        return (
            view is not None
            and view.state == "failed"
            and key in self._running_here()
            and (view.runner or view.node) != self.node_id
        )

    def _running_here(self) -> set[bytes]:
        """The trials a run of this Study still holds: asked for, not told, not stopped."""
        return self._asked - self._told

    def _taken_over(self, key: bytes, view: TrialView | None) -> bool:
        """Whether this Study's run of a trial it asked for (and has not told) is over: the
        trial is free (interrupted or lost, by another node: this Study's run was taken
        for gone), or another Study's run is the trial's (both took it up free before they
        synced, the other's start sorting later) and it has been frozen, killed or has
        completed. The run here said "carry on" (should_stop was False), then its every
        report() and its tell() were refused (a reading of Study), or it ran beside the
        run ask() handed the free trial to next (a review of the session's fixes). It
        stops, as a peer's run gives way, and ask() hands the trial out to be resumed. Not
        when the other run failed: a completion here still counts, as on a peer."""
        if view is None or key not in self._asked or key in self._told:
            return False
        if view.state in FREE_STATES:
            return True
        runner = view.runner or view.node
        return runner != self.node_id and view.state in ("frozen", "killed", "completed")

    def _check_own(self, call: str, key: bytes, view: TrialView | None) -> None:
        """Refuse to record for a trial another node runs and this Study never asked for:
        its result is that node's to tell. (Two Studies that both resumed one free trial
        may each tell it; the fold then keeps one of the two results.)"""
        runner = None if view is None else (view.runner or view.node)
        if runner is not None and runner != self.node_id and key not in self._asked:
            raise MetaoptError(
                f"{call}: trial {key.hex()[:12]} is node {runner.hex()[:8]}'s (seen through"
                " sync); only the Study that asked for it records its results"
            )

    def _own(self) -> set[str]:
        return {
            t.id
            for t in self._state.open_trials()  # (each ask read every trial: 2.8 ms at 6,000)
            if (t.runner or t.node) == self.node_id and t.state in ("running", "pending", "frozen")
        }

    def _decide(self, own: set[str], free_slots: int) -> dict[str, Decision]:
        space = self._suggester.space
        if self._stopper is None:
            self._stopper = stopper_for(self._state, space)
        if self._stopper is None:
            return {}
        self._decisions += 1
        # Counters from 2^31 up: decision streams never share one with a suggestion.
        rng = stream(
            self._suggester.seed, self.node_id, self.experiment_key, (1 << 31) + self._decisions
        )
        curves = curve_views(self._state, self._suggester)
        with one_blas_thread():
            decisions = self._stopper.decide(
                curves, own, free_slots, rng, fresh_available=not self._state.budget_spent
            )
        return {d.trial_id: d for d in decisions}

    def _thaw(self) -> Trial | None:
        own_frozen = {t.id for t in self._state.open_trials() if t.state == "frozen"} & self._own()
        if not own_frozen:
            return None
        # Once the budget is spent every frozen trial is judged at once (as the peer does):
        # those not worth resuming are killed, or they would stay frozen for ever and the
        # experiment would never finish.
        ending = self._state.budget_spent
        decisions = self._decide(own_frozen, free_slots=len(own_frozen) if ending else 1)
        thawed: Trial | None = None
        for trial_id, decision in decisions.items():  # the stopper's order: best thaw first
            key = bytes.fromhex(trial_id)
            view = self._state.trial(key)
            assert view is not None
            if decision.action is Action.KILL:
                # Frozen for good: recorded, so status shows it killed and it is not
                # judged again at every ask().
                self._event(
                    key,
                    "killed",
                    step=view.last_step or None,
                    reason=decision.reason,
                    rung=decision.rung,
                )
            elif decision.action is Action.THAW and thawed is None:
                # Its step even at 0: a thaw without one is a fresh start (the fold drops the
                # curve so far).
                self._event(key, "thawed", step=view.last_step, reason=decision.reason)
                self._resumed[key] = view.last_step
                thawed = Trial(key, dict(view.params), view.counter, view.last_step)
        if ending and self._stopper is not None:
            worth = {t for t, d in decisions.items() if d.action in (Action.THAW, Action.KILL)}
            for trial_id in sorted(own_frozen - worth):
                key = bytes.fromhex(trial_id)
                view = self._state.trial(key)
                step = view.last_step if view is not None else None
                reason = "frozen when the budget ran out and not worth resuming"
                self._event(key, "killed", step=step or None, reason=reason)
        return thawed

    def _key(self, trial: Trial | TrialView | str | bytes) -> bytes:
        key: object = trial.key if isinstance(trial, Trial | TrialView) else trial
        if isinstance(key, str):
            try:
                key = bytes.fromhex(key)
            except ValueError:
                key = None
        if not isinstance(key, bytes) or self._state.trial(key) is None:
            shown = key.hex()[:12] if isinstance(key, bytes) else repr(trial)[:40]
            raise MetaoptError(
                f"unknown trial {shown}; pass a trial from ask() of this Study (another"
                " Study's only once sync() brought it here)"
            )
        return key

    def _event(
        self,
        trial: bytes,
        kind: str,
        *,
        step: int | None = None,
        metrics: Mapping[str, Any] | None = None,
        reason: str | None = None,
        supersedes: tuple[bytes, ...] = (),
        rung: int | None = None,
    ) -> None:
        body = EventBody(
            trial,
            self.experiment_key,
            kind,
            self.node_id,
            step,
            dict(metrics or {}),
            None,
            reason,
            supersedes=supersedes,
            rung=rung,
        )
        self._writer.write(EVENT, body.to_body(), [trial, self.experiment_key])

    @property
    def trials(self) -> list[TrialView]:
        """Every trial (copies: changing one changes nothing recorded), oldest first."""
        self._check_process("trials")  # (before the lock: see _serialised)
        with self._lock:
            return [_detached(view) for view in self._state.trials()]

    @property
    def best(self) -> TrialView | list[TrialView] | None:
        """The best completed trial; with several objectives, the Pareto front (a list)."""
        self._check_process("best")
        with self._lock:
            best = [_detached(view) for view in self._state.best()]
        if len(self._state.spec.objectives) > 1:
            return best
        return best[0] if best else None

    def sync(self, other: Study) -> int:
        """Bring both replicas to their union; returns the round trips it took.

        Both Studies must define the same experiment, under distinct node ids (the default
        node id follows the seed: give each Study its own seed or node_id).
        """
        if not isinstance(other, Study):
            raise MetaoptError(f"sync() takes another Study, got {type(other).__name__}")
        if other is self:
            return 0
        if other.experiment_key != self.experiment_key:
            # The other's settings first ("there"), as a reopening names the stored ones: this
            # Study's first told "'x' only there" of its own parameter (a README walk).
            differ = settings_differ(other._state.spec, self._state.spec)
            raise MetaoptError(
                f"sync(): the other Study is another experiment ({differ or 'other settings'});"
                " sync Studies made with the same arguments"
            )
        if other.node_id == self.node_id:
            # Two path= Studies of one node id: one directory copied from the other, whose
            # node id neither seed= nor node_id= changes (a user walkthrough).
            advice = (
                "delete node_id in the directory copied from the other (it takes a new node id"
                " and keeps its trials)"
                if self._root is not None and other._root is not None
                else "give each its own seed= or node_id="
            )
            raise MetaoptError(
                f"sync(): both Studies have node id {self.node_id.hex()[:12]}, so their trials"
                f" would collide; {advice}"
            )
        self._check_process("sync")
        other._check_process("sync", "the other Study")
        first, second = sorted((self, other), key=id)
        with first._lock, second._lock:
            if self._closed or other._closed:
                raise MetaoptError("sync(): a Study is closed; make a new Study(...) to go on")
            try:
                return sync_stores(self.store, other.store)
            except StoreWriteFailed as exc:  # (as every other call says it: see _serialised)
                raise MetaoptError(
                    f"sync(): cannot write a Study's store ({exc.disk}); {disk_advice(exc.disk)}"
                    " and call it again"
                ) from None

    def _check_process(self, call: str, which: str = "this Study") -> None:
        """Refuse a call from a fork()ed child (multiprocessing's default on Linux): it wrote
        under this Study's node id and record numbers, unseen by the parent, whose next ask()
        drew the very same point (into the parent's own LevelDB, under path=)."""
        if os.getpid() != self._pid:
            raise MetaoptError(
                f"{call}(): {which} was made in process {self._pid}, not this forked one;"
                " make a Study in each process (each its own seed= or node_id=, and path=)"
                " and sync() them"
            )

    def close(self) -> None:
        """Close the replica (a path's LevelDB lock is released); later calls raise, but for
        `trials` and `best`, which answer from what the Study held when it closed (so a
        `with Study(...) as study:` block can be read after it ends).

        Nothing in a fork()ed child (a `with study:` ending there): the Study is its parent's.
        """
        if os.getpid() != self._pid:
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._unsubscribe()
            self.store.close()

    def __getstate__(self) -> object:
        # (Pickled for a spawned process, it was a raw "Can't pickle local object".)
        raise MetaoptError(
            "a Study cannot be sent to another process; make one there (its own seed= or"
            " node_id=, and path=) and sync() them"
        )

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
