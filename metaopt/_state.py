"""Pure folds from records to views: what an experiment and each of its trials look like now.

The fold is order-free: applying the same set of records in any order gives the same views,
because a trial's state is computed from all its events sorted by a causal time (each event's
stamp, moved after what its links name and after its writer's earlier events: see
_causal_times), never from the order they arrived in. That is what lets every peer, each with
its own arrival order and its own clock, agree.

State rules (see TrialView.state):
- completed, failed and killed are terminal; the first terminal event in (time, key) order wins,
  with completed beating the others (a result outranks a verdict reached without it).
- otherwise the latest lifecycle signal decides: started, thawed, progress and heartbeat mean
  running; frozen, lost and interrupted mean what they say; none means pending. A run's
  reports, heartbeats and stops count only while it is the current run (the latest start).
- the curve is one run's: the run that ended the trial, else the current one; a start keeps
  the reports of that node's earlier run up to its resume step (none without one, nor after
  the run says it restarted from step 0).
- lost and interrupted trials are free: any peer may run them again.
- a trial whose params are not a point of the experiment's space (a buggy or forged record:
  x = "abc" for a uniform, a parameter missing or unknown) is failed whatever its events say,
  so it is never the best, never run, and never in the search's history.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from crdt import Record, Store
from metaopt._records import (
    CONTROL,
    EVENT,
    EXPERIMENT,
    TRIAL,
    EventBody,
    ExperimentSpec,
    TrialBody,
    objective_values,
    parse_control,
    parse_event,
    parse_experiment,
    parse_trial,
)
from metaopt.space import Space

__all__ = [
    "ACTIVE_STATES",
    "FREE_STATES",
    "TERMINAL_STATES",
    "ExperimentState",
    "TrialView",
    "age",
    "list_experiments",
    "went_on",
]

TERMINAL_STATES = frozenset({"completed", "failed", "killed"})
FREE_STATES = frozenset({"lost", "interrupted"})
# Trials that hold their point: the search must not suggest it again and treats it as pending.
ACTIVE_STATES = frozenset({"pending", "running", "frozen"})
# The reason `metaopt freeze` records: a pause only the user ends (thaw, or stop the experiment).
FROZEN_BY_HAND = "frozen by the user"
KILLED_BY_HAND = "killed by the user"  # `metaopt kill`
_RUNNING_SIGNALS = frozenset({"started", "thawed", "restarted", "progress", "heartbeat"})
_LIFECYCLE = _RUNNING_SIGNALS | {"frozen", "lost", "interrupted"}
_TERMINAL_RANK = {"completed": 0, "failed": 1, "killed": 1}


def age(trial: TrialView) -> tuple[int, bytes, int, bytes]:
    """ExperimentState.trials()'s order, oldest first: created (ms), node, counter, key."""
    return trial.created, trial.node, trial.counter, trial.key


@dataclass(frozen=True, slots=True)
class TrialView:
    """One trial as the replica knows it now.

    (Slots: a replica keeps one per trial for good, and its __dict__ was about 1 KiB.)
    """

    key: bytes
    experiment: bytes
    params: Mapping[str, Any]
    node: bytes
    counter: int
    created: int
    state: str
    runner: bytes | None = None
    values: tuple[float, ...] | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    curve: tuple[tuple[int, float], ...] = ()
    last_seen: int = 0
    exit_code: int | None = None
    reason: str | None = None
    stderr: str | None = None
    attempts: int = 0
    thaws: int = 0  # times it was resumed after a freeze
    started_at: int | None = None  # ms: its first started or thawed event
    ended_at: int | None = None  # ms: the terminal event that decided its state
    suggest_ms: float | None = None
    reported_step: int = 0  # the highest step any event carried (progress, frozen, thawed)
    free_events: tuple[bytes, ...] = ()  # keys of the lost/interrupted events that freed it
    # The step its freeze recorded: where the run that was frozen had got to. A trial re-run
    # from 0 after a loss keeps its earlier attempt's higher steps in its curve, so this, not
    # last_step, is where a thaw resumes from its checkpoint.
    frozen_step: int | None = None
    # The key of its latest event in causal order that counts for its current run (not a
    # late report of a run a re-run replaced): what a loss written now follows
    # (EventBody.after), so that the loss counts.
    latest: bytes | None = None
    # Lost while frozen (its node is gone, and the checkpoint with it): a re-run starts from
    # step 0, and once the budget is spent only if the early stopper finds it worth that.
    lost_frozen: bool = False
    # The step its latest (re)start resumed after, from a checkpoint; None if it began at step
    # 0. A stopper does not judge a resumed run again at the rungs it had passed.
    resumed_step: int | None = None
    # Killed by a rung rule: the rung it was judged at (it may have reported past it).
    stopped_rung: int | None = None
    # Each node's latest run of it: the last step that run reached. A node that resumes it
    # from its own checkpoint goes on from its own run's step, not from the current run's
    # (another peer's, which may have started again from 0 since).
    run_steps: tuple[tuple[bytes, int], ...] = ()
    # The events that the free events in effect follow (EventBody.after): the ends of the
    # runs they freed it from. Two peers that each found a run lost write two losses of it.
    free_ends: tuple[bytes, ...] = ()
    # The free events (lost, interrupted) the start of its current run answered, and the
    # events they follow, kept through its thaws: two peers that took up one freed trial at
    # once answered the same ones, or the ends of the same run (see the peer's runner).
    answers: tuple[bytes, ...] = ()

    def step_of(self, node: bytes) -> int | None:
        """The last step node's latest run of this trial reached; None if it never ran it."""
        return next((step for n, step in self.run_steps if n == node), None)

    @property
    def id(self) -> str:
        return self.key.hex()

    @property
    def value(self) -> float | None:
        """The first objective, for single-objective use."""
        return None if self.values is None else self.values[0]

    @property
    def frozen_by_hand(self) -> bool:
        """Paused by `metaopt freeze`: no early stopper thaws or kills it."""
        return self.state == "frozen" and self.reason == FROZEN_BY_HAND

    @property
    def last_step(self) -> int:
        """The last step it reported, of any metric (its curve holds the first objective's)."""
        return max(self.curve[-1][0] if self.curve else 0, self.reported_step)


_Event = tuple[int, bytes, int, bytes, EventBody]  # time, origin, seq, key, body


def _causal_times(events: Sequence[_Event]) -> dict[bytes, int]:
    """Each event's time for ordering: its own, moved later where a causal link says so.

    A lost event comes after the latest event its writer had seen (EventBody.after; a start
    taking over a trial too), a (re)start after the free events it answers
    (EventBody.supersedes), and each writer's events stay in the order it wrote them (its
    seq). A runner whose clock ran an hour ahead stamped its last heartbeat after the loss
    another peer noticed, so by time alone its trial read "running" for that hour; and a
    re-run's reports, stamped by a clock behind, sorted before its start.

    The longest path over those links, in one pass in topological order. Honest links form
    no cycle (a key is the hash of a record, so a record can only name an older one); a
    hostile writer can make one with its seq order, and the links inside a cycle are ignored
    (its events keep their stamps), while links into and out of it still hold.
    """
    when = {key: time for time, _, _, key, _ in events}
    writer_order = sorted(events, key=lambda e: (e[1], e[2], e[3]))
    if not any(e[4].supersedes or e[4].after is not None for e in events):
        # Most trials (never lost or taken over): each writer's order alone, the fold's hot
        # path (a trial's view is rebuilt on each of its reports).
        for before, after in itertools.pairwise(writer_order):
            if before[1] == after[1] and when[after[3]] < when[before[3]]:
                when[after[3]] = when[before[3]]
        return when
    preds: dict[bytes, list[tuple[bytes, int]]] = {key: [] for key in when}
    for before, after in itertools.pairwise(writer_order):
        if before[1] == after[1]:
            preds[after[3]].append((before[3], 0))
    for _, _, _, key, event in events:
        links = (*event.supersedes, *(() if event.after is None else (event.after,)))
        preds[key].extend((k, 1) for k in links if k in when and k != key)
    cycle = _cycle_members(preds)
    kept = {
        key: [(k, w) for k, w in ps if cycle.get(k) is None or cycle.get(k) != cycle.get(key)]
        for key, ps in preds.items()
    }
    waiting = {key: len(ps) for key, ps in kept.items()}
    succ: dict[bytes, list[bytes]] = {key: [] for key in when}
    for key, ps in kept.items():
        for k, _ in ps:
            succ[k].append(key)
    ready = [key for key, n in waiting.items() if n == 0]
    while ready:
        key = ready.pop()
        when[key] = max([when[key], *(when[k] + w for k, w in kept[key])])
        for nxt in succ[key]:
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                ready.append(nxt)
    return when


def _cycle_members(preds: Mapping[bytes, list[tuple[bytes, int]]]) -> dict[bytes, bytes]:
    """The events on a cycle of links, each mapped to one member of its cycle (Tarjan's
    strongly connected components, iterative; which member names a cycle does not matter)."""
    index: dict[bytes, int] = {}
    low: dict[bytes, int] = {}
    stack: list[bytes] = []
    on_stack: set[bytes] = set()
    out: dict[bytes, bytes] = {}
    for root in preds:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(preds[root]))]
        while work:
            node, todo = work[-1]
            for nxt, _ in todo:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(preds[nxt])))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    members = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        members.append(member)
                        if member == node:
                            break
                    if len(members) > 1:
                        out.update(dict.fromkeys(members, node))
    return out


# Events a run writes about itself: they count for the trial only while it is the current run.
_RUN_OWN = frozenset({"progress", "heartbeat", "frozen", "interrupted", "restarted"})


def went_on(first_step: int) -> int | None:
    """The step a resumed run went on from, told by the first step it reported below the
    one it was resumed after: its checkpoint's (None: from the start)."""
    return first_step - 1 if first_step > 1 else None


@dataclass
class _Run:
    """What one node's latest run of a trial reported."""

    # Its curve, (step, value) by step: kept in order as reports come (nearly always each
    # past the last), since a view of a long run is taken after each report (see TrialFold).
    curve: list[tuple[int, float]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    reported: int = 0  # the highest step any of its events carried

    @property
    def last_step(self) -> int:
        return max(self.curve[-1][0] if self.curve else 0, self.reported)

    def resumed_at(self, step: int | None) -> _Run:
        """This run restarted at step: afresh (None), or keeping what it had up to step."""
        if step is None:
            return _Run()
        kept = self.curve[: bisect.bisect_right(self.curve, step, key=_step)]
        return _Run(kept, dict(self.metrics), min(self.reported, step))

    def report(self, event: EventBody, objective: str) -> None:
        if event.step is not None:
            self.reported = max(self.reported, event.step)
        if event.kind == "progress":
            self.metrics.update(event.metrics)
            value = event.metrics.get(objective)
            if event.step is not None and isinstance(value, int | float):
                self._set(event.step, float(value))

    def _set(self, step: int, value: float) -> None:
        """Its value at step, the latest report's for a step reported twice."""
        curve = self.curve
        if not curve or step > curve[-1][0]:
            curve.append((step, value))
            return
        i = bisect.bisect_left(curve, step, key=_step)
        if curve[i][0] == step:
            curve[i] = (step, value)
        else:
            curve.insert(i, (step, value))


def _step(point: tuple[int, float]) -> int:
    return point[0]


def _of_run(event: EventBody, runner: bytes | None) -> bool:
    """Whether an event counts for the current run of runner: reports, heartbeats and stops
    count only from the runner itself (see TrialFold._add); anything else from anyone."""
    return runner is None or event.node == runner or event.kind not in _RUN_OWN


class TrialFold:
    """One trial's events folded in causal order, kept so that an event that sorts after all
    of them extends it (``extend``) instead of a fold of them all again.

    A trial's view is rebuilt whenever it is read after a report (the scheduler reads every
    trial twice a second), and a full fold sorts all its events: 30-36 ms at 10,000 reports
    and 110-200 ms at 40,000 (a two-hour run reporting five times a second has 36,000), so a
    few long runs kept each peer's loop busy. Reports arrive in their writer's order, after
    everything else, nearly always: those extend the fold, 0.03-0.1 ms a report and read
    (python -m simulations.bench_fold).
    """

    def __init__(
        self,
        key: bytes,
        trial: TrialBody,
        created: int,
        spec: ExperimentSpec,
        misfit: str | None,
        answered: set[bytes],
    ) -> None:
        self.key, self.trial, self.created = key, trial, created
        self.spec, self.misfit = spec, misfit
        self._first = spec.objectives[0]
        # A free event answered by a later (re)start (see EventBody.supersedes) no longer
        # counts for the lifecycle, whatever the writers' clocks say about their order.
        self._answered = answered
        # Keys some event links to: an event arriving after what names it moves that one's
        # causal time (and maybe answers a start), so it cannot just extend the fold.
        self._named: set[bytes] = set()
        self._last: tuple[int, bytes, int, bytes] | None = None  # the sort key folded last
        # Each writer's highest seq folded, and that event's causal time.
        self._writers: dict[bytes, tuple[int, int]] = {}
        self._terminal: tuple[int, int, bytes, EventBody] | None = None
        self._lifecycle: EventBody | None = None
        self._runner: bytes | None = None
        self._runs: dict[bytes, _Run] = {}  # each node's latest run of it: curve and metrics
        self._last_seen = created
        self._attempts = 0
        self._thaws = 0
        self._started_at: int | None = None
        self._free: tuple[bytes, ...] = ()  # the free events in effect, latest last
        self._latest_report: bytes | None = None
        self._counted: set[bytes] = set()  # the events that counted since the current run's start
        self._lost_frozen = False
        self._latest: bytes | None = None  # the latest event that counts for the current run
        self._resumed_step: int | None = None
        self._answers: tuple[bytes, ...] = ()
        self._ends: dict[bytes, bytes] = {}  # each free event's key -> the event it follows

    @classmethod
    def of(
        cls,
        key: bytes,
        trial: TrialBody,
        created: int,
        events: Sequence[_Event],
        spec: ExperimentSpec,
        misfit: str | None = None,
    ) -> TrialFold:
        """The fold of all of a trial's events."""
        # Only a (re)start answers, and only a free event: a heartbeat naming a freeze erased it.
        by_key = {ekey: event for *_, ekey, event in events}
        answered = {
            k
            for *_, event in events
            if event.kind in ("started", "thawed")
            for k in event.supersedes
            if k in by_key and by_key[k].kind in FREE_STATES
        }
        fold = cls(key, trial, created, spec, misfit, answered)
        # By time, and within one millisecond one writer's events in the order it wrote them
        # (its seq): a trial frozen right after a report must not sort the freeze first by
        # key. Causal links order what the clocks may not (see _causal_times).
        when = _causal_times(events)
        for stamp, origin, seq, ekey, event in sorted(events, key=lambda e: (when[e[3]], *e[1:4])):
            fold._add(stamp, when[ekey], origin, seq, ekey, event, event.after in when)
        return fold

    def extend(self, stamp: int, origin: bytes, seq: int, ekey: bytes, event: EventBody) -> bool:
        """Fold in one more event if the fold of all would put it last; False (and nothing
        changed) if not: it names an event, is named by one, or sorts before one folded."""
        if event.supersedes or event.after is not None or ekey in self._named:
            return False
        seq_before, when_before = self._writers.get(origin, (-1, stamp))
        if seq <= seq_before:
            return False  # (its writer's later events went first: their causal times move)
        # Linked to nothing, it comes after its writer's earlier events (_causal_times): a
        # re-run's reports, its start moved past the loss it answers, sort after the start.
        when = max(stamp, when_before)
        if self._last is not None and (when, origin, seq, ekey) <= self._last:
            return False  # (stamped before a folded event: a clock behind, a late delivery)
        self._add(stamp, when, origin, seq, ekey, event, False)
        return True

    def _add(
        self,
        time: int,
        when: int,
        origin: bytes,
        seq: int,
        ekey: bytes,
        event: EventBody,
        after_known: bool,
    ) -> None:
        """One step of the fold, in causal order: the event's own stamp ``time``, and
        ``when``, its causal time (see _causal_times), which orders it and nothing else."""
        self._last = (when, origin, seq, ekey)
        if seq >= self._writers.get(origin, (-1, when))[0]:  # (equal seqs: in key order)
            self._writers[origin] = (seq, when)
        self._named.update(event.supersedes)
        if event.after is not None:
            self._named.add(event.after)
        self._last_seen = max(self._last_seen, time)
        if event.kind in ("started", "thawed"):
            self._attempts += event.kind == "started"
            self._thaws += event.kind == "thawed"
            self._started_at = time if self._started_at is None else self._started_at
            previous = self._runner or self._latest_report  # the run shown until now
            self._runner = event.node
            if event.kind == "started":  # (a thaw goes on with the run its start began)
                self._answers = event.supersedes + self._ends_of(event.supersedes)
            self._resumed_step = event.step
            self._counted = set()
            # A run goes on from its resume step, or starts afresh (step None): what earlier
            # runs reported past that point is not its curve. A re-run from 0 after a loss
            # showed the lost run's step 8 beside its own loss at step 4, and the stoppers
            # judged the mixed curve. It goes on from its node's own earlier run (a peer's
            # checkpoint is its own); a node resuming a run it never ran (a Study taking over
            # another's free trial, their checkpoints shared) goes on from the current run's.
            run = self._runs.get(event.node)
            if run is None and event.step is not None and previous is not None:
                run = self._runs.get(previous)
            self._runs[event.node] = (run or _Run()).resumed_at(event.step)
        # Reports, heartbeats and stops of a run that is no longer the trial's (the runner a
        # re-run replaced, cut off but alive, or heard late) are its own business: a late
        # report from a dead runner whose clock ran fast read as the trial running again.
        current = _of_run(event, self._runner)
        if event.kind == "lost" and event.after is not None:
            # A loss of a run that another has replaced since (its writer had not heard of
            # the re-run yet) would free a trial that runs: it would be run twice. It counts
            # only if what it follows counted for the current run: not by time, since the
            # replaced run's own late events (its runner cut off but alive, or a clock
            # stepped back) sort after the re-run's start, and a loss naming one freed it.
            # Nor before what it follows is here: counted meanwhile as a loss naming
            # nothing, it freed the re-run until that event came (its writer held it, so it
            # comes; and should it not, a peer that finds the runner quiet writes its own).
            current = after_known and event.after in self._counted
        if current:
            self._latest = ekey
            self._counted.add(ekey)
            if event.kind == "restarted":
                # Resumed, it went on from an older checkpoint (its step) or began again from
                # step 0 (none): the curve it was resumed with is its own only up to there.
                # Kept whole, the earlier run's later steps sat beside the new run's, and a
                # freeze recorded the old run's last step; dropped whole, a run resumed from
                # the checkpoint of step 10 of 14 lost its first ten steps for good.
                run = self._runs.get(event.node, _Run())
                self._runs[event.node] = run.resumed_at(event.step)
                self._resumed_step = event.step
        if event.kind in FREE_STATES and event.after is not None:
            self._ends[ekey] = event.after
        if event.kind in _TERMINAL_RANK:
            rank = (_TERMINAL_RANK[event.kind], time, ekey, event)
            if self._terminal is None or rank[:3] < self._terminal[:3]:
                self._terminal = rank
        elif event.kind in _LIFECYCLE and ekey not in self._answered and current:
            # (Two peers may each write the loss: the second still follows a freeze.)
            was = self._lifecycle.kind if self._lifecycle is not None else None
            self._lost_frozen = event.kind == "lost" and (
                was == "frozen" or (was == "lost" and self._lost_frozen)
            )
            self._lifecycle = event
            self._free = (*self._free, ekey) if event.kind in FREE_STATES else ()
        if event.kind in ("progress", "frozen", "thawed"):
            self._runs.setdefault(event.node, _Run()).report(event, self._first)
            self._latest_report = event.node

    def _ends_of(self, free: tuple[bytes, ...]) -> tuple[bytes, ...]:
        """The events the free events ``free`` follow (see TrialView.free_ends)."""
        return tuple(self._ends[k] for k in free if k in self._ends)

    def view(self) -> TrialView:
        """The trial as the events folded so far say."""
        spec, terminal, lifecycle = self.spec, self._terminal, self._lifecycle
        # The curve of the run that ended it, else of the current run: across a partition
        # both sides ran it, and their reports interleaved in one curve. A node that ended it
        # without running it (`metaopt kill` of a trial frozen on a peer that is gone)
        # decides its state only: its view showed no values and that node as the runner,
        # with no log to show.
        decider = terminal[3].node if terminal is not None else None
        if terminal is not None and terminal[3].after in self._counted:
            # A verdict that follows the current run's events is on that run, whoever wrote
            # it: written by the node of an earlier run the current one replaced, the view
            # showed that old run (its runner, curve and metrics), and by any other node not.
            decider = self._runner
        decider = decider if decider in self._runs else None
        runner = self._runner
        shown = self._runs.get(decider or runner or self._latest_report or b"")
        shown = shown if shown is not None else _Run()
        metrics: dict[str, Any] = dict(shown.metrics)
        curve = tuple(shown.curve)
        exit_code: int | None = None
        reason: str | None = None
        stderr: str | None = None
        values: tuple[float, ...] | None = None
        if terminal is not None:
            event = terminal[3]
            state = event.kind
            # The run that decided it, not the latest to start: across a partition both sides
            # ran it, and `metaopt logs` sent the user to the other side's redundant re-run.
            runner = decider or runner
            metrics.update(event.metrics)
            exit_code, reason, stderr = event.exit_code, event.reason, event.stderr
            if state == "completed":
                values = objective_values(metrics, spec.objectives)
                if values is None:
                    state, reason = (
                        "failed",
                        f"completed without a numeric {', '.join(spec.objectives)}",
                    )
        elif lifecycle is None:
            state = "pending"
        elif lifecycle.kind in _RUNNING_SIGNALS:
            state = "running"
        else:
            state = lifecycle.kind
            reason = lifecycle.reason
        if self.misfit is not None:
            state, values = "failed", None
            reason = f"its params are not a point of the experiment's space: {self.misfit}"
        trial = self.trial
        return TrialView(
            key=self.key,
            experiment=trial.experiment,
            params=trial.params,
            node=trial.node,
            counter=trial.counter,
            created=self.created,
            state=state,
            runner=runner,
            values=values,
            metrics=metrics,
            curve=curve,
            last_seen=self._last_seen,
            exit_code=exit_code,
            reason=reason,
            stderr=stderr,
            attempts=self._attempts,
            thaws=self._thaws,
            started_at=self._started_at,
            ended_at=None if terminal is None else terminal[1],
            suggest_ms=trial.suggest_ms,
            reported_step=shown.reported,
            free_events=self._free if state in FREE_STATES else (),
            free_ends=self._ends_of(self._free) if state in FREE_STATES else (),
            frozen_step=lifecycle.step if state == "frozen" and lifecycle is not None else None,
            latest=self._latest,
            lost_frozen=self._lost_frozen and state == "lost",
            resumed_step=self._resumed_step,
            stopped_rung=terminal[3].rung if terminal is not None and state == "killed" else None,
            run_steps=tuple((node, run.last_step) for node, run in self._runs.items()),
            answers=self._answers,
        )


class ExperimentState:
    """An experiment's trials, kept up to date record by record (idempotent, order-free)."""

    def __init__(self, key: bytes, spec: ExperimentSpec) -> None:
        self.key = key
        self.spec = spec
        self.stopped = False
        self._trials: dict[bytes, tuple[TrialBody, int]] = {}
        # trial -> event key -> (time, origin, seq, key, event)
        self._events: dict[bytes, dict[bytes, tuple[int, bytes, int, bytes, EventBody]]] = (
            defaultdict(dict)
        )
        # trial -> event key -> the event's bytes, as stored: what an ended trial keeps of its
        # events (see _seal); decoded again only if its view must be folded again.
        self._raw: dict[bytes, dict[bytes, bytes]] = defaultdict(dict)
        self._sealed: set[bytes] = set()  # trials whose events are held as bytes only
        self._ending: set[bytes] = set()  # trials a terminal event reached, to seal (settle)
        # Each trial, experiment and node id, kept once for all the events that name it
        # (parse_event).
        self._names: dict[bytes, bytes] = {key: key}
        self._views: dict[bytes, TrialView] = {}
        # The folds of trials that have not ended, which a report extends (see TrialFold).
        self._folds: dict[bytes, TrialFold] = {}
        # trials(), kept while nothing new is folded in: the scheduler reads every experiment's
        # trials twice a second, and sorting and listing 50,000 finished ones each time kept
        # an idle peer at half a core.
        self._order: list[bytes] | None = None  # trial keys, oldest first
        self._listed: list[TrialView] | None = None
        # Those of trials() not yet ended, kept as it is: the scheduler looks for lost, frozen
        # and free trials in every experiment twice a second, and walking every trial of the
        # finished ones kept an idle peer busy in proportion to its history (6.7% of a core at
        # 38,000 trials, 20% at 150,000; a scale review).
        self._open: list[TrialView] | None = None
        self._best: list[TrialView] | None = None  # best(), kept as trials() is
        self.skipped = 0
        # Why a trial's params are not a point of the space, by trial: checked once, when its
        # record arrives (see _misfit), not on each fold of its view.
        self._misfits: dict[bytes, str] = {}
        self._space: Space | None = None
        self._space_read = False

    @classmethod
    def from_store(cls, store: Store, key: bytes) -> ExperimentState | None:
        """Fold one experiment out of a store through its link index, or None if unknown."""
        record = store.get(key)
        spec = None if record is None else parse_experiment(record)
        if spec is None:
            return None
        state = cls(key, spec)
        state.apply_all(store.linked(key))
        return state

    def apply_all(self, records: Iterable[Record]) -> None:
        for record in records:
            self.apply(record)

    def apply(self, record: Record) -> bool:
        """Fold in one record; True if it concerned this experiment and was well-formed."""
        if record.kind == TRIAL:
            trial = parse_trial(record)
            if trial is None or trial.experiment != self.key:
                self.skipped += trial is None
                return False
            new = record.key not in self._trials
            if new:
                misfit = self._misfit(trial.params)
                if misfit is not None:
                    self._misfits[record.key] = misfit
            key = self._names.setdefault(record.key, record.key)  # (its events' too)
            self._trials[key] = (trial, record.time)
            if new and self._order is not None:
                # Into its place: sorted again at each new trial, a Study's ask at 6,000
                # trials spent a fifth of its time there.
                bisect.insort(self._order, key, key=self._age_of)
            self._views.pop(record.key, None)
            self._folds.pop(record.key, None)
            self._listed = self._best = self._open = None
            return True
        if record.kind == EVENT:
            # (Ids shared only among this experiment's events: another's are not kept here.)
            mine = record.links[1:] == (self.key,)
            event = parse_event(record, self._names if mine else None)
            if event is None or event.experiment != self.key:
                self.skipped += event is None
                return False
            raw = self._raw[event.trial]
            if record.key in raw:
                return True  # (delivered again)
            raw[record.key] = record.data
            # A sealed trial (no fold kept) takes the event as bytes alone: decoded with the
            # rest when its view is next read (_unseal).
            if event.trial not in self._sealed:
                events = self._events[event.trial]
                events[record.key] = (
                    record.time,
                    event.node,  # (its origin, and the object the other events of it hold)
                    record.seq,
                    record.key,
                    event,
                )
                fold = self._folds.get(event.trial)
                if fold is not None and not fold.extend(
                    record.time, event.node, record.seq, record.key, event
                ):
                    del self._folds[event.trial]  # (folded again from all its events when read)
                if event.kind in TERMINAL_STATES and event.trial not in self._folds:
                    self._ending.add(event.trial)  # ended, most likely: sealed by settle()
            self._views.pop(event.trial, None)
            self._listed = self._best = self._open = None
            return True
        if record.kind == CONTROL:
            control = parse_control(record)
            if control is None or control.experiment != self.key:
                return False
            self.stopped = self.stopped or control.action == "stop"
            return True
        return False

    def trial(self, key: bytes) -> TrialView | None:
        view = self._views.get(key)
        if view is None and key in self._trials:
            fold = self._folds.get(key)
            if fold is None:
                trial, created = self._trials[key]
                if key in self._sealed:
                    self._unseal(key)
                events = list(self._events.get(key, {}).values())
                misfit = self._misfits.get(key)
                fold = TrialFold.of(key, trial, created, events, self.spec, misfit)
            view = self._views[key] = fold.view()
            if view.state in TERMINAL_STATES:
                # Reports end with it: its fold is not kept (a late event folds all again).
                self._folds.pop(key, None)
                self._seal(key)
                self._ending.discard(key)
            else:
                self._folds[key] = fold
        return view

    def settle(self, limit: int | None = None) -> bool:
        """Seal the trials that ended since the last call (up to ``limit`` of them): each
        one's view is folded from its events while they are still decoded, which are kept as
        bytes from then on (_seal). Returns whether any are left.

        Called once a batch of records is in (a catch-up's, an experiment's history folded
        from the store); reading a view seals its trial too. Sealed as each ending arrived, a
        trial whose other events came after its ending was decoded twice (a restart's load
        took 19% longer); left until its view is read, a catch-up held every ended trial's
        events decoded at once.
        """
        while self._ending and (limit is None or limit > 0):
            self.trial(self._ending.pop())
            limit = None if limit is None else limit - 1
        return bool(self._ending)

    def _seal(self, key: bytes) -> None:
        """Keep an ended trial's events as their bytes alone (see _unseal); only a trial
        whose fold is not kept (reports extend a kept fold, and need its events decoded).

        Decoded, an event held about 580 bytes of Python objects for good (its tuple, stamp,
        seq, EventBody, metrics and their values) beside its ~250 bytes of record; a replica
        is mostly ended trials, which are folded again only when a late event arrives.
        """
        if self._events.pop(key, None) is not None:
            self._sealed.add(key)

    def events(self, key: bytes) -> list[_Event]:
        """A trial's events as the fold reads them, (time, origin, seq, key, body) each."""
        if key in self._sealed:
            self._unseal(key)
        return list(self._events.get(key, {}).values())

    def _unseal(self, key: bytes) -> None:
        """Decode a sealed trial's events again, as apply() held them."""
        self._sealed.discard(key)
        events = self._events[key]
        for ekey, data in self._raw[key].items():
            record = Record.load(ekey, data)
            event = parse_event(record, self._names)
            if event is not None:  # (it was well-formed when applied)
                events[ekey] = (record.time, event.node, record.seq, ekey, event)

    def _misfit(self, params: Mapping[str, Any]) -> str | None:
        """Why params are not a point of the space (None if they are): each search parameter
        a value of its prior, as Space.to_unit (the search's reading) checks them, a fidelity
        value if one is given, and no other name. Per value, not through to_unit's arrays: a
        replica catching up folds many thousand trials on the event loop."""
        if not self._space_read:
            self._space_read = True
            try:
                self._space = Space.from_dict(self.spec.space)
            except Exception:  # an experiment no peer can run: its trials are left as they are
                self._space = None
        space = self._space
        if space is None:
            return None
        fidelity = space.fidelity
        dims = (*space.dimensions, *(() if fidelity is None else (fidelity,)))
        known = {dim.name for dim in dims}
        extra = next((name for name in params if name not in known), None)
        if extra is not None:
            return f"{extra!r} is not a parameter of the space"
        try:
            for dim in dims:
                if dim.name in params:
                    dim.from_python(params[dim.name])
                elif dim is not fidelity:  # (a fidelity is optional, as in to_unit)
                    return f"{dim.name!r} has no value"
        except Exception as exc:  # a peer's malformed params must not stop the fold
            return str(exc)
        return None

    def trial_keys(self) -> list[bytes]:
        """Every known trial's key, without folding its view."""
        return list(self._trials)

    def trials(self) -> list[TrialView]:
        """Every known trial, oldest first: by creation time (ms), then by node and its trial
        counter (the order a node asked them in, within a millisecond), then key."""
        if self._listed is None:
            if self._order is None:
                self._order = sorted(self._trials, key=self._age_of)
            self._listed = [view for key in self._order if (view := self.trial(key)) is not None]
        return list(self._listed)

    def _age_of(self, key: bytes) -> tuple[int, bytes, int, bytes]:
        """A trial's place in trials(): created (ms), node, counter, key."""
        trial, created = self._trials[key]
        return created, trial.node, trial.counter, key

    def open_trials(self) -> list[TrialView]:
        """The trials that have not ended (neither completed, failed nor killed), oldest first
        as in trials(); read again only once something new is folded in."""
        if self._open is None:
            self._open = [t for t in self.trials() if t.state not in TERMINAL_STATES]
        return list(self._open)

    def trial_stamps(self) -> list[int]:
        """Each trial record's stamp (ms, its writer's clock)."""
        return [stamp for _, stamp in self._trials.values()]

    def __len__(self) -> int:
        return len(self._trials)

    @property
    def budget_spent(self) -> bool:
        return self.spec.max_trials is not None and len(self._trials) >= self.spec.max_trials

    @property
    def budget_used_up(self) -> bool:
        """Whether as many trials have ended as the budget allows: a trial still free then is
        beyond it (recorded where nobody heard of it until the others had spent it)."""
        budget = self.spec.max_trials
        return (
            budget is not None and sum(t.state in TERMINAL_STATES for t in self.trials()) >= budget
        )

    @property
    def active(self) -> bool:
        """Whether peers should still start trials for it."""
        return not self.stopped and not self.budget_spent

    @property
    def finished(self) -> bool:
        """Nothing more will happen: stopped with nothing running, or budget spent and done."""
        if self.active:
            return False
        states = [t.state for t in self.open_trials()]
        if self.stopped:
            # Running trials finish; pending, frozen and free ones never start again.
            return all(state != "running" for state in states)
        return not states

    def signed(self, values: Sequence[float]) -> tuple[float, ...]:
        """Objective values turned into ones to minimise."""
        return tuple(
            v if d == "minimize" else -v for v, d in zip(values, self.spec.directions, strict=True)
        )

    def best(self) -> list[TrialView]:
        """The best completed trial (single objective) or the Pareto front (several)."""
        if self._best is None:
            done = [t for t in self.trials() if t.state == "completed" and t.values is not None]
            if not done:
                self._best = []
            elif len(self.spec.objectives) == 1:
                # (Not through signed(): at 60,000 trials of an active experiment, recomputed
                # after each report, it took 83 ms of each status call; this, 15 ms.)
                sign = -1.0 if self.spec.directions[0] == "maximize" else 1.0
                self._best = [min(done, key=lambda t: (sign * (t.values or (0.0,))[0], *age(t)))]
            else:
                scored = [(self.signed(t.values or ()), t) for t in done]
                front = _pareto_front(scored)
                self._best = sorted(front, key=lambda t: self.signed(t.values or ()))
        return list(self._best)

    def ended_for_good(self, trial: TrialView) -> bool:
        """Completed, failed or killed; or, once the experiment is stopped, waiting to start
        or to run again (pending, lost, interrupted), which no peer does any more. (A frozen
        trial may still be thawed by hand.)"""
        if trial.state in TERMINAL_STATES:
            return True
        return self.stopped and trial.state in ("pending", *FREE_STATES)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for trial in self.trials():
            out[trial.state] += 1
        return dict(out)


def _pareto_front(scored: list[tuple[tuple[float, ...], TrialView]]) -> list[TrialView]:
    """The trials no other dominates (no worse in every signed value, not equal).

    In lexicographic order, whatever dominates a point comes before it, and if that is
    dominated in turn, what dominates it is on the front and dominates the point too: so each
    point is judged against the front of the points before it. With two objectives that is
    one sweep (n log n); with more, blocks of points against the front so far, in numpy.
    Comparing every pair in Python, on the peer's event loop at each status call, took 3.9 s
    for 60,000 random points and 16 s for 6,000 along a trade-off (a front of 1,000); now
    0.12 s and 0.005 s, and with three objectives 0.6 s and 2.3 s for 60,000 (fronts of 59
    and 6,000).
    (A completed trial's values are finite: objective_values refuses the others.)
    """
    front: list[TrialView] = []
    ordered = sorted(scored, key=lambda st: st[0])
    if not ordered:
        return front
    if len(ordered[0][0]) == 2:
        # An earlier point (no worse first value) dominates a later one with no worse second,
        # unless the two are equal: runs of equal points are judged against the points before.
        lowest = math.inf
        for _, run in itertools.groupby(ordered, key=lambda st: st[0]):
            same = list(run)
            if same[0][0][1] < lowest:
                front += [t for _, t in same]
                lowest = same[0][0][1]
        return front
    points = np.array([s for s, _ in ordered], dtype=np.float64)
    kept = np.zeros(0, dtype=np.intp)
    for start in range(0, len(points), _FRONT_BLOCK):
        block = np.arange(start, min(start + _FRONT_BLOCK, len(points)))
        block = block[~_dominated(points[block], points[block])]  # by a point of the block
        for first in range(0, len(kept), _FRONT_CHUNK):  # by the front of the blocks before
            block = block[~_dominated(points[kept[first : first + _FRONT_CHUNK]], points[block])]
        kept = np.concatenate([kept, block])
    return front + [ordered[i][1] for i in kept]


# Points judged at once, first against one another (the block's front is mostly small), then
# against the front so far in chunks: at most 4096 x 128 x objectives booleans at a time.
_FRONT_BLOCK = 128
_FRONT_CHUNK = 4096


def _dominated(by: npt.NDArray[np.float64], points: npt.NDArray[np.float64]) -> Any:
    """Which of points some row of by dominates."""
    pairs_le = (by[:, None, :] <= points[None, :, :]).all(axis=2)
    pairs_ne = (by[:, None, :] != points[None, :, :]).any(axis=2)
    return (pairs_le & pairs_ne).any(axis=0)


def list_experiments(store: Store) -> list[tuple[bytes, ExperimentSpec]]:
    """Every well-formed experiment in the store, by name then key."""
    found = []
    for record in store.of_kind(EXPERIMENT):
        spec = parse_experiment(record)
        if spec is not None:
            found.append((record.key, spec))
    return sorted(found, key=lambda ks: (ks[1].name, ks[0]))
