"""The fold from records to trial views: order-free, idempotent, robust to garbage."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt import MemoryStore, Record
from metaopt._records import (
    CONTROL,
    EVENT,
    EXPERIMENT,
    MAX_REASON,
    MAX_STDERR,
    TRIAL,
    EventBody,
    ExperimentSpec,
    experiment_record,
    parse_event,
    parse_experiment,
)
from metaopt._state import (
    FROZEN_BY_HAND,
    KILLED_BY_HAND,
    TERMINAL_STATES,
    ExperimentState,
    TrialView,
    list_experiments,
    went_on,
)
from tests.strategies import record_values

NODE_A = b"a" * 16
NODE_B = b"b" * 16
NODE_C = b"c" * 16
NODE_D = b"d" * 16
NODE_E = b"e" * 16


def _spec(**kw: object) -> ExperimentSpec:
    base: dict[str, object] = {"name": "exp", "space": {"x": "uniform(0, 1)"}}
    base.update(kw)
    return ExperimentSpec(**base)  # type: ignore[arg-type]


class Log:
    """Writes records for one experiment with per-node sequence numbers."""

    def __init__(self, spec: ExperimentSpec | None = None) -> None:
        self.experiment = experiment_record(spec or _spec())
        self.records: list[Record] = [self.experiment]
        self.seq: dict[bytes, int] = {}

    def _next(self, node: bytes) -> int:
        self.seq[node] = self.seq.get(node, 0) + 1
        return self.seq[node]

    def trial(self, node: bytes, x: float, time: int = 1000) -> Record:
        body = {"params": {"x": x}, "node": node, "counter": self.seq.get(node, 0) + 1}
        rec = Record.create(TRIAL, node, self._next(node), time, body, [self.experiment.key])
        self.records.append(rec)
        return rec

    def event(self, trial: Record, node: bytes, kind: str, time: int, **kw: object) -> Record:
        body = EventBody(trial.key, self.experiment.key, kind, node, **kw).to_body()  # type: ignore[arg-type]
        rec = Record.create(
            EVENT, node, self._next(node), time, body, [trial.key, self.experiment.key]
        )
        self.records.append(rec)
        return rec

    def run(self, trial: Record, node: bytes, time: int, steps: int, value: float) -> None:
        """node starts trial at time and reports value at steps 1..steps, one ms apart."""
        self.event(trial, node, "started", time)
        for step in range(1, steps + 1):
            self.event(
                trial, node, "progress", time + step, step=step, metrics={"objective": value}
            )

    def state(self, records: list[Record] | None = None) -> ExperimentState:
        spec = parse_experiment(self.experiment)
        assert spec is not None
        state = ExperimentState(self.experiment.key, spec)
        state.apply_all(records if records is not None else self.records)
        return state


def _views(state: ExperimentState) -> list[tuple[object, ...]]:
    return [
        (t.key, t.state, t.values, t.curve, t.runner, t.attempts, t.latest, t.free_events,
         t.frozen_step, t.last_step)
        for t in state.trials()
    ]  # fmt: skip


def test_lifecycle_states() -> None:
    log = Log()
    t1 = log.trial(NODE_A, 0.1)
    t2 = log.trial(NODE_A, 0.2)
    t3 = log.trial(NODE_B, 0.3)
    t4 = log.trial(NODE_B, 0.4)
    log.event(t1, NODE_A, "started", 1100)
    log.event(t1, NODE_A, "progress", 1200, step=1, metrics={"objective": 0.5})
    log.event(t1, NODE_A, "completed", 1300, metrics={"objective": 0.25})
    log.event(t2, NODE_A, "started", 1100)
    log.event(t3, NODE_B, "started", 1100)
    log.event(t3, NODE_A, "lost", 5000, reason="quiet")
    log.event(t4, NODE_B, "started", 1100)
    log.event(t4, NODE_B, "failed", 1500, exit_code=1, reason="boom")
    state = log.state()
    by_key = {t.key: t for t in state.trials()}
    assert by_key[t1.key].state == "completed"
    assert by_key[t1.key].value == 0.25
    assert by_key[t1.key].curve == ((1, 0.5),)
    assert by_key[t2.key].state == "running"
    assert by_key[t3.key].state == "lost"
    assert by_key[t4.key].state == "failed"
    assert by_key[t4.key].exit_code == 1
    assert state.best()[0].key == t1.key


def test_completed_outranks_a_later_lost_and_a_partitioned_runner_comes_back() -> None:
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.event(t, NODE_A, "started", 1000)
    log.event(t, NODE_B, "lost", 9000, reason="quiet")
    assert log.state().trial(t.key).state == "lost"  # type: ignore[union-attr]
    log.event(t, NODE_A, "progress", 9500, step=3, metrics={"objective": 1.0})
    assert log.state().trial(t.key).state == "running"  # type: ignore[union-attr]
    log.event(t, NODE_A, "completed", 9600, metrics={"objective": 0.7})
    assert log.state().trial(t.key).state == "completed"  # type: ignore[union-attr]


def test_a_rerun_answers_the_lost_event_it_saw_whatever_the_clocks_say() -> None:
    # B marks A's trial lost at 70 s; C, whose clock is 10 s slow, re-runs it at "60 s". By
    # time alone the lost event is the latest and every peer would think the trial free, so
    # a third peer claimed it again while C ran it (found by a review).
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.event(t, NODE_A, "started", 1000)
    lost = log.event(t, NODE_B, "lost", 70_000, reason="quiet")
    view = log.state().trial(t.key)
    assert view is not None and view.state == "lost" and view.free_events == (lost.key,)
    before = list(log.records)
    log.event(t, NODE_C, "started", 60_000)
    log.event(t, NODE_C, "progress", 61_000, step=1, metrics={"objective": 0.5})
    assert log.state().trial(t.key).state == "lost"  # type: ignore[union-attr]
    log.records = before  # the same re-run, naming the loss it answers
    log.event(t, NODE_C, "started", 60_000, supersedes=(lost.key,))
    log.event(t, NODE_C, "progress", 61_000, step=1, metrics={"objective": 0.5})
    rerun = log.state().trial(t.key)
    assert rerun is not None and (rerun.state, rerun.runner) == ("running", NODE_C)
    assert rerun.free_events == ()
    log.event(t, NODE_B, "lost", 200_000, reason="quiet again")  # a later loss is not answered
    assert log.state().trial(t.key).state == "lost"  # type: ignore[union-attr]


def test_freeze_and_thaw_are_counted_and_a_thawed_trial_runs_again() -> None:
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.event(t, NODE_A, "started", 1000)
    log.event(t, NODE_A, "progress", 1100, step=3, metrics={"objective": 0.9})
    log.event(t, NODE_A, "frozen", 1200, reason="outside the top at rung 3")
    frozen = log.state().trial(t.key)
    assert frozen is not None
    assert (frozen.state, frozen.thaws, frozen.attempts) == ("frozen", 0, 1)
    assert frozen.reason == "outside the top at rung 3"
    log.event(t, NODE_A, "thawed", 1300, step=3)
    log.event(t, NODE_A, "frozen", 1400)
    log.event(t, NODE_A, "thawed", 1500, step=3)
    thawed = log.state().trial(t.key)
    assert thawed is not None
    # A thaw resumes the same attempt: it is not a new start.
    assert (thawed.state, thawed.thaws, thawed.attempts) == ("running", 2, 1)
    assert thawed.started_at == 1000
    # Where the current run resumed (a stopper does not judge it again below that step).
    assert (frozen.resumed_step, thawed.resumed_step) == (None, 3)
    assert thawed.stopped_rung is None
    log.event(t, NODE_A, "lost", 1600)
    log.event(t, NODE_B, "started", 1700)
    rerun = log.state().trial(t.key)
    assert rerun is not None and rerun.resumed_step is None


def test_completed_without_objective_is_a_failure_with_a_reason() -> None:
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.event(t, NODE_A, "completed", 1000, metrics={"accuracy": 0.9})
    view = log.state().trial(t.key)
    assert view is not None and view.state == "failed"
    assert view.reason is not None and "objective" in view.reason


@given(st.randoms(use_true_random=False), st.integers(min_value=0, max_value=3))
def test_fold_is_order_free_and_idempotent(rnd: random.Random, dup: int) -> None:
    log = Log()
    trials = [log.trial(NODE_A if i % 2 else NODE_B, i / 10, 1000 + i) for i in range(5)]
    for i, t in enumerate(trials):
        log.event(t, NODE_A, "started", 2000 + i)
        if i % 3 == 0:
            log.event(t, NODE_A, "completed", 3000 + i, metrics={"objective": float(i)})
        elif i % 3 == 1:
            log.event(t, NODE_B, "lost", 3000 + i)
    expected = _views(log.state())
    shuffled = list(log.records)
    rnd.shuffle(shuffled)
    shuffled += shuffled[:dup]
    assert _views(log.state(shuffled)) == expected


@given(st.randoms(use_true_random=False))
def test_trials_listed_as_they_arrive_stay_oldest_first(rnd: random.Random) -> None:
    # A new trial goes into its place in the kept order (it was sorted again at each one):
    # listed after each record, in any order, the list is the one a fresh fold makes.
    log = Log()
    for i in range(12):  # stamps out of arrival order, some equal (node and counter decide)
        t = log.trial(NODE_A if i % 3 else NODE_B, i / 20, 1000 + (i * 7) % 5)
        log.event(t, NODE_A, "started", 2000 + i)
    shuffled = list(log.records[1:])
    rnd.shuffle(shuffled)
    state = log.state([log.experiment])
    for record in shuffled:
        state.apply(record)
        assert [t.key for t in state.trials()] == [t.key for t in log.state(
            [log.experiment, *shuffled[: shuffled.index(record) + 1]]).trials()]  # fmt: skip
    assert _views(state) == _views(log.state())


FREE_KINDS = ("lost", "interrupted")


def _random_history(rnd: random.Random) -> Log:
    """Two trials' events from three nodes: every kind, clocks that step back, links (a loss
    naming what it follows, a re-run naming the losses it answers) and now and then one
    writer's two records under one seq."""
    log = Log()
    nodes = [NODE_A, NODE_B, NODE_C]
    trials = [log.trial(NODE_A, 0.25), log.trial(NODE_B, 0.75)]
    events: dict[bytes, list[Record]] = {t.key: [] for t in trials}
    kinds = ["started", "thawed", "progress", "progress", "progress", "heartbeat", "frozen",
             "lost", "interrupted", "completed", "failed", "killed", "restarted"]  # fmt: skip
    skew = {node: rnd.choice([0, 0, -40, 25]) for node in nodes}  # each node's clock
    clock = 2000
    for _ in range(rnd.randint(1, 40)):
        t = rnd.choice(trials)
        node, kind = rnd.choice(nodes), rnd.choice(kinds)
        clock += rnd.randint(0, 20)
        kw: dict[str, object] = {}
        earlier = events[t.key]
        if kind in ("progress", "frozen", "thawed", "started") and rnd.random() < 0.8:
            kw["step"] = rnd.randint(1, 12)
        if kind == "progress":
            kw["metrics"] = {"objective": rnd.random()}
        if kind == "completed":
            kw["metrics"] = {"objective": rnd.random()}
        if kind == "lost" and earlier and rnd.random() < 0.7:
            kw["after"] = rnd.choice(earlier).key
        if kind in ("started", "thawed") and earlier and rnd.random() < 0.7:
            free = [r for r in earlier if (e := parse_event(r)) and e.kind in FREE_KINDS]
            kw["supersedes"] = tuple(r.key for r in rnd.sample(free, min(len(free), 2)))
        if rnd.random() < 0.1 and log.seq.get(node):
            log.seq[node] -= 1  # an equivocation: this seq again, in another record
        events[t.key].append(log.event(t, node, kind, clock + skew[node], **kw))
    return log


def _arriving(rnd: random.Random, disorder: int) -> tuple[Log, list[Record]]:
    """A random history and its records in the order they arrive: mostly as written, as
    reports do, with ``disorder`` swaps."""
    log = _random_history(rnd)
    arrival = list(log.records)
    for _ in range(disorder):
        i, j = rnd.randrange(len(arrival)), rnd.randrange(len(arrival))
        arrival[i], arrival[j] = arrival[j], arrival[i]
    return log, arrival


@given(st.randoms(use_true_random=False), st.integers(min_value=0, max_value=6))
def test_a_fold_kept_and_extended_event_by_event_matches_a_fold_of_all(
    rnd: random.Random, disorder: int
) -> None:
    # A trial's fold is kept between reads and extended by each event that sorts last (see
    # TrialFold): whatever the order events arrive in and whenever the views are read, every
    # view must be the one a fold of all the records so far gives.
    log, arrival = _arriving(rnd, disorder)
    kept = log.state([])
    for n, record in enumerate(arrival, start=1):
        kept.apply(record)
        if rnd.random() < 0.7:  # (a view read: its fold is kept, and extended from here)
            assert kept.trials() == log.state(arrival[:n]).trials()
    assert kept.trials() == log.state(arrival).trials()


@given(st.randoms(use_true_random=False), st.integers(min_value=0, max_value=6))
def test_open_trials_are_those_not_ended_after_every_record(
    rnd: random.Random, disorder: int
) -> None:
    # Kept between records like trials(): read after any record, it must be what a filter of
    # trials() gives then (a trial that ends leaves it; a late event may bring one back).
    log, arrival = _arriving(rnd, disorder)
    kept = log.state([])
    for record in arrival:
        kept.apply(record)
        if rnd.random() < 0.7:
            expected = [t for t in kept.trials() if t.state not in TERMINAL_STATES]
            assert kept.open_trials() == expected


def test_a_scheduling_pass_reads_no_trial_list_of_a_finished_experiment_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The scheduler looks for lost, frozen and free trials in every experiment twice a
    # second: walking every trial of the finished ones too kept an idle peer at 6.2% of a core
    # for 38,000 trials (0.2% now; a scale review).
    from metaopt.peer._scheduler import find_lost, work_left

    log = Log(_spec(max_trials=50))
    for i in range(50):
        t = log.trial(NODE_A, i / 50, 1000 + i)
        log.event(t, NODE_A, "completed", 2000 + i, metrics={"objective": float(i)})
    state = log.state()
    assert state.finished and not state.open_trials()
    walks = []
    real = ExperimentState.trials

    def counted(self: ExperimentState) -> list[TrialView]:
        walks.append(1)
        return real(self)

    monkeypatch.setattr(ExperimentState, "trials", counted)
    for _ in range(3):
        assert find_lost([state], NODE_B, lambda t: 10**9, 1, lambda n: False, set()) == []
        assert not work_left(state) and state.finished
    assert walks == []


@pytest.mark.parametrize("link", ["after", "supersedes"])
def test_an_event_arriving_after_one_that_names_it_is_folded_in_its_causal_place(
    link: str,
) -> None:
    # Stamped later than what names it (its writer's clock ran ahead) and heard later, an
    # event would extend a kept fold as its last: a report after the loss that follows it
    # read "running", a loss after the re-run that answers it read "lost".
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.event(t, NODE_A, "started", 1000)
    if link == "after":
        named = log.event(t, NODE_A, "progress", 1600, step=1, metrics={"objective": 0.5})
        log.event(t, NODE_C, "lost", 1500, after=named.key)
        expected = "lost"
    else:
        named = log.event(t, NODE_C, "lost", 2100)
        log.event(t, NODE_B, "started", 2000, supersedes=(named.key,))
        expected = "running"
    arrival = [r for r in log.records if r is not named]
    kept = log.state(arrival)
    assert kept.trials()  # (read: its fold is kept)
    kept.apply(named)
    [view] = kept.trials()
    assert view.state == expected
    assert kept.trials() == log.state().trials()


def test_a_report_that_sorts_last_extends_the_kept_fold_and_others_fold_all_again() -> None:
    # A fold of all a trial's events after each report cost a peer 29 ms a read at 10,000
    # reports (python -m simulations.bench_fold); the fold is kept and extended instead.
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.event(t, NODE_A, "started", 1000)
    log.event(t, NODE_A, "progress", 1100, step=1, metrics={"objective": 0.9})
    state = log.state()
    assert state.trial(t.key) is not None
    fold = state._folds[t.key]
    state.apply(log.event(t, NODE_A, "progress", 1200, step=2, metrics={"objective": 0.8}))
    view = state.trial(t.key)
    assert state._folds[t.key] is fold  # extended
    assert view is not None and view.curve == ((1, 0.9), (2, 0.8))
    # Stamped before the last report (another node's clock behind): folded all again.
    state.apply(log.event(t, NODE_B, "heartbeat", 1150))
    assert state.trial(t.key) == log.state().trial(t.key)
    assert state._folds[t.key] is not fold
    # An ended trial's fold is not kept: no report comes after its end.
    state.apply(log.event(t, NODE_A, "completed", 1300, metrics={"objective": 0.8}))
    assert state.trial(t.key) == log.state().trial(t.key)
    assert t.key not in state._folds


def test_a_fold_decides_by_each_events_stamp_and_orders_by_its_causal_time() -> None:
    # A killed written after a report by a node whose clock is behind sorts after the report
    # (its causal time), but it is still the first verdict by its stamp: a fold that took
    # causal times for stamps read "failed" (a later verdict) where peers of the release
    # before read "killed", and moved its ended_at and last_seen.
    log = Log()
    t = log.trial(NODE_A, 0.5, time=900)
    log.event(t, NODE_A, "started", 1000)
    report = log.event(t, NODE_A, "progress", 1500, step=1, metrics={"objective": 0.3})
    log.event(t, NODE_B, "killed", 1200, after=report.key, reason=KILLED_BY_HAND)
    log.event(t, NODE_C, "failed", 1300, reason="executor error")
    view = log.state().trial(t.key)
    assert view is not None
    assert (view.state, view.reason, view.ended_at) == ("killed", KILLED_BY_HAND, 1200)
    assert (view.started_at, view.last_seen) == (1000, 1500)


def test_a_rerun_by_a_node_whose_clock_is_behind_extends_the_kept_fold() -> None:
    # Its start sorts after the loss it answers (a causal link), and each of its reports after
    # its start: compared by stamp alone, each report sorted before the start and folded all
    # the events again (182 ms a report at 20,000 reports).
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.event(t, NODE_A, "started", 1000)
    lost = log.event(t, NODE_C, "lost", 5000)
    log.event(t, NODE_B, "started", 3000, supersedes=(lost.key,))  # (B's clock: 2 s behind)
    state = log.state()
    assert state.trial(t.key) is not None
    fold = state._folds[t.key]
    state.apply(log.event(t, NODE_B, "progress", 3100, step=1, metrics={"objective": 0.5}))
    view = state.trial(t.key)
    assert state._folds[t.key] is fold and view == log.state().trial(t.key)
    assert view is not None and (view.state, view.runner, view.curve) == (
        "running",
        NODE_B,
        ((1, 0.5),),
    )


def test_malformed_bodies_are_skipped_not_fatal() -> None:
    log = Log()
    t = log.trial(NODE_A, 0.5)
    junk = [
        Record.create(TRIAL, NODE_B, 1, 1, {"params": "nope"}, [log.experiment.key]),
        Record.create(EVENT, NODE_B, 2, 1, {"kind": "exploded"}, [t.key, log.experiment.key]),
        Record.create(EVENT, NODE_B, 3, 1, [1, 2, 3], [t.key, log.experiment.key]),
        Record.create(CONTROL, NODE_B, 4, 1, {"action": "explode"}, [log.experiment.key]),
    ]
    state = log.state(log.records + junk)
    assert [v.key for v in state.trials()] == [t.key]
    assert state.skipped >= 3
    assert not state.stopped


def test_records_a_hostile_peer_could_write_are_refused_by_every_reader() -> None:
    # Found by fuzzing a live peer with the cluster key: a trial claiming another node's id
    # with counter 2**64 - 1 made that node's next trial number overflow (its search was set
    # aside for good), and megabyte reasons made a status reply exceed the frame limit.
    log = Log()
    t = log.trial(NODE_A, 0.5)
    links = [t.key, log.experiment.key]
    forged = [
        # A trial or event whose body names another node than the one that wrote it.
        Record.create(TRIAL, NODE_B, 1, 1, {"params": {"x": 0.2}, "node": NODE_A, "counter": 7},
                      [log.experiment.key]),
        Record.create(EVENT, NODE_B, 2, 1, EventBody(t.key, log.experiment.key, "lost", NODE_A)
                      .to_body(), links),
        Record.create(TRIAL, NODE_B, 3, 1, {"params": {"x": 0.3}, "node": NODE_B,
                      "counter": 2**64 - 1}, [log.experiment.key]),
        Record.create(TRIAL, NODE_B, 4, 1, {"params": {"x": 0.4}, "node": NODE_B, "counter": 0},
                      [log.experiment.key]),
        Record.create(EVENT, NODE_B, 5, 1, {"kind": "progress", "node": NODE_B, "step": -1},
                      links),
        Record.create(EVENT, NODE_B, 6, 1, {"kind": "failed", "node": NODE_B,
                      "reason": "x" * (MAX_REASON + 1)}, links),
        Record.create(EVENT, NODE_B, 7, 1, {"kind": "failed", "node": NODE_B,
                      "stderr": "x" * (MAX_STDERR + 1)}, links),
        Record.create(EVENT, NODE_B, 8, 1, {"kind": "progress", "node": NODE_B, "step": 1,
                      "metrics": {"objective": "x" * 1001}}, links),
    ]  # fmt: skip
    state = log.state(log.records + forged)
    assert [(v.key, v.counter, v.state) for v in state.trials()] == [(t.key, 1, "pending")]
    assert state.skipped == len(forged)
    fair = Record.create(TRIAL, NODE_B, 9, 1, {"params": {"x": 0.6}, "node": NODE_B,
                         "counter": 2**53 - 1}, [log.experiment.key])  # fmt: skip
    assert fair.key in {v.key for v in log.state([*log.records, fair]).trials()}


def test_experiment_definitions_that_could_not_run_or_be_shown_are_refused() -> None:
    good = _spec(command=("python", "train.py"), bundle={"shared_dir": "/tmp/x"}).to_body()
    assert parse_experiment(Record.create(EXPERIMENT, NODE_B, 1, 1, good, [])) is not None
    # Names earlier versions wrote (any string) still read: refused, their experiments
    # vanished from every replica.
    for name in ("two\nlines", "-x", "x" * 65):
        body = {**good, "name": name}
        assert parse_experiment(Record.create(EXPERIMENT, NODE_B, 1, 1, body, [])) is not None
    bad: list[dict[str, object]] = [
        {"space": {}},  # nothing to search: the search raised on every pass
        {"command": ["python", "a\x00b"]},  # no child process can be given a NUL byte
        {"space": {"x\x00": "uniform(0, 1)"}},
        {"objectives": ["lo\x00ss"]},
        {"bundle": {"shared_dir": 5}},  # wedged a slot: the launch raised TypeError
        {"bundle": {"manifest": "nope"}},
        {"bundle": {}},
    ]
    for change in bad:
        body = {**good, **change}
        assert parse_experiment(Record.create(EXPERIMENT, NODE_B, 1, 1, body, [])) is None, change


_FIELDS = (
    "kind", "node", "step", "metrics", "exit_code", "reason", "stderr", "action",
    "params", "counter", "suggest_ms", "name", "space", "objectives", "directions",
    "algorithm", "max_trials", "max_step", "command", "bundle", "nonce", "options", "supersedes",
)  # fmt: skip
_BODIES = record_values | st.dictionaries(st.sampled_from(_FIELDS), record_values, max_size=8)


@given(bodies=st.lists(st.tuples(st.sampled_from([TRIAL, EVENT, CONTROL]), _BODIES), max_size=6))
def test_any_wire_body_folds_without_raising(bodies: list[tuple[str, object]]) -> None:
    # A peer stores a record before folding it and folds every stored record again on start,
    # so a body that made the fold raise would stop that peer from starting ever again.
    log = Log()
    t = log.trial(NODE_A, 0.5)
    links = {EVENT: [t.key, log.experiment.key], TRIAL: [log.experiment.key]}
    junk = [
        Record.create(kind, NODE_B, i + 1, 1, body, links.get(kind, [log.experiment.key]))
        for i, (kind, body) in enumerate(bodies)
    ]
    state = log.state(log.records + junk)
    assert t.key in {v.key for v in state.trials()}
    state.best()
    state.counts()


@given(body=_BODIES)
def test_any_wire_body_parses_or_is_rejected_as_an_experiment(body: object) -> None:
    record = Record.create(EXPERIMENT, NODE_B, 1, 1, body, [])
    spec = parse_experiment(record)
    assert spec is None or isinstance(spec.name, str)


def test_budget_stop_and_pareto_front() -> None:
    spec = _spec(objectives=("loss", "latency"), directions=("minimize", "minimize"), max_trials=3)
    log = Log(spec)
    points = [(0.1, 3.0), (0.2, 2.0), (0.3, 3.5)]
    for i, (loss, lat) in enumerate(points):
        t = log.trial(NODE_A, i / 10)
        log.event(t, NODE_A, "completed", 2000 + i, metrics={"loss": loss, "latency": lat})
    state = log.state()
    assert state.budget_spent and not state.active and state.finished
    front = {t.values for t in state.best()}
    assert front == {(0.1, 3.0), (0.2, 2.0)}
    stop = Record.create(CONTROL, NODE_B, 99, 1, {"action": "stop"}, [log.experiment.key])
    assert log.state([*log.records, stop]).stopped


def _brute_front(values: dict[bytes, tuple[float, ...]]) -> set[bytes]:
    """The front by its definition: what no other point is no worse than everywhere, unequal."""
    return {
        key
        for key, s in values.items()
        if not any(
            all(a <= b for a, b in zip(o, s, strict=True)) and o != s for o in values.values()
        )
    }


_GRID = st.sampled_from([0.0, 1.0, 2.0, 3.0, float("inf")])


@given(
    points=st.lists(st.lists(_GRID, min_size=3, max_size=3), min_size=1, max_size=25),
    m=st.sampled_from([2, 3]),
)
def test_the_front_is_every_trial_no_other_dominates(points: list[list[float]], m: int) -> None:
    # The front was found by comparing every pair: 60,000 trials held a peer's loop for
    # minutes. Checked against that definition, with ties, inf and a maximised objective.
    names = ("a", "b", "c")[:m]
    directions = ("minimize", "maximize", "minimize")[:m]
    log = Log(_spec(objectives=names, directions=directions))
    for i, values in enumerate(points):
        t = log.trial(NODE_A, i / 100)
        metrics = dict(zip(names, values[:m], strict=True))
        log.event(t, NODE_A, "completed", 2000 + i, metrics=metrics)
    state = log.state()
    done = [t for t in state.trials() if t.state == "completed" and t.values]  # (inf: failed)
    signed = {t.key: state.signed(t.values or ()) for t in done}
    assert {t.key for t in state.best()} == _brute_front(signed)


def test_a_front_of_many_trials_is_every_trial_no_other_dominates() -> None:
    # Past a few hundred points the front is found block by block, against the front so far.
    rng = random.Random(3)
    names = ("a", "b", "c")
    log = Log(_spec(objectives=names, directions=("minimize",) * 3))
    points = [(rng.randrange(8), 7 - i % 8 + rng.randrange(2), rng.randrange(8))
              for i in range(700)]  # fmt: skip
    for i, values in enumerate(points):
        t = log.trial(NODE_A, i / 1000)
        log.event(t, NODE_A, "completed", 2000 + i, metrics=dict(zip(names, values, strict=True)))
    state = log.state()
    front = _brute_front({t.key: t.values or () for t in state.trials()})
    assert {t.key for t in state.best()} == front and 1 < len(front) < 700


def test_the_best_follows_what_is_folded_in() -> None:
    log = Log()
    first = log.trial(NODE_A, 0.1)
    log.event(first, NODE_A, "completed", 2000, metrics={"objective": 0.5})
    state = log.state()
    assert [t.key for t in state.best()] == [first.key]
    better = log.trial(NODE_A, 0.2)
    state.apply(better)
    state.apply(log.event(better, NODE_A, "completed", 2001, metrics={"objective": 0.25}))
    assert [t.key for t in state.best()] == [better.key]


def test_experiment_records_are_content_derived() -> None:
    a = experiment_record(_spec())
    b = experiment_record(_spec())
    c = experiment_record(_spec(nonce="other"))
    assert a.key == b.key and a.key != c.key
    store = MemoryStore()
    store.add([a, c])
    assert sorted(k for k, _ in list_experiments(store)) == sorted([a.key, c.key])


def test_the_last_step_counts_steps_of_any_metric_and_of_a_freeze() -> None:
    # A thaw resumes from last_step: a run reporting its steps with another metric than the
    # objective used to be resumed from 0, as if it had no checkpoint.
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.event(t, NODE_A, "started", 1100)
    for step in (1, 2, 3):
        log.event(t, NODE_A, "progress", 1100 + step, step=step, metrics={"acc": 0.5})
    view = log.state().trial(t.key)
    assert view is not None and view.curve == () and view.last_step == 3
    log.event(t, NODE_A, "frozen", 1200, step=4)
    frozen = log.state().trial(t.key)
    assert frozen is not None and frozen.state == "frozen" and frozen.last_step == 4


def test_a_frozen_trial_knows_the_step_its_frozen_run_reached() -> None:
    # Re-run from 0 elsewhere after a loss, a trial whose first attempt had reached step 8 was
    # frozen at step 7 and thawed with METAOPT_RESUME_STEP=8: its checkpoint held step 7.
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.run(t, NODE_A, 1100, 8, 9.0)
    log.event(t, NODE_B, "lost", 2000, reason="no news from node")
    log.run(t, NODE_B, 2001, 7, 1.0)
    log.event(t, NODE_B, "frozen", 2100, step=7)
    view = log.state().trial(t.key)
    assert view is not None and view.state == "frozen"
    # The lost attempt's step 8 is no longer in its curve: the re-run started afresh.
    assert view.frozen_step == 7 and view.last_step == 7
    assert view.curve == tuple((step, 1.0) for step in range(1, 8))
    log.event(t, NODE_B, "thawed", 2200, step=7)
    thawed = log.state().trial(t.key)
    assert thawed is not None and thawed.frozen_step is None


def test_the_runner_of_an_ended_trial_is_the_run_that_ended_it() -> None:
    # Across a partition B took A's trial for lost and re-ran it; A (cut off, not dead)
    # completed it. The trial named B, the latest to start, as its runner, and `metaopt logs`
    # sent the user to B's redundant run.
    log = Log()
    t = log.trial(NODE_A, 0.5)
    started = log.event(t, NODE_A, "started", 1_000)
    loss = log.event(t, NODE_B, "lost", 62_000, reason="no news", after=started.key)
    log.event(t, NODE_B, "started", 62_500, supersedes=(loss.key,))
    log.event(t, NODE_A, "completed", 90_000, metrics={"objective": 0.25})
    view = log.state().trial(t.key)
    assert view is not None and (view.state, view.runner, view.value) == ("completed", NODE_A, 0.25)


def test_a_trial_killed_by_a_node_that_never_ran_it_keeps_its_runs_curve_and_runner() -> None:
    # `metaopt kill` on B of a trial frozen on A, gone: its loss and step vanished, B showed
    # as its runner, and `metaopt logs` on B said it ended before it wrote any output.
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.event(t, NODE_A, "started", 1_000)
    log.event(t, NODE_A, "progress", 2_000, step=7, metrics={"objective": 0.9})
    log.event(t, NODE_A, "frozen", 3_000, step=7, reason="frozen by the user")
    log.event(t, NODE_B, "killed", 90_000, reason="killed by the user")
    view = log.state().trial(t.key)
    assert view is not None and (view.state, view.reason) == ("killed", "killed by the user")
    assert (view.runner, view.metrics, view.last_step) == (NODE_A, {"objective": 0.9}, 7)


@pytest.mark.parametrize("killer", [NODE_D, NODE_A], ids=["never-ran-it", "ran-a-replaced-run"])
def test_a_verdict_on_a_free_trial_shows_its_latest_run_whoever_wrote_it(killer: bytes) -> None:
    # A ran it to step 4 and was lost; B re-ran it, froze it at step 2 and went away; a live
    # peer then killed it (not worth a re-run, after the latest it knew). Written by A, the
    # kill showed A's replaced run: runner A, its curve at 0.9, last step 4, A's metrics.
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.event(t, NODE_A, "started", 1000)
    for step in range(1, 5):
        last = log.event(t, NODE_A, "progress", 1000 + step, step=step, metrics={"objective": 0.9})
    lost = log.event(t, NODE_C, "lost", 2000, after=last.key)
    log.event(t, NODE_B, "started", 2100, supersedes=(lost.key,))
    log.event(t, NODE_B, "progress", 2101, step=1, metrics={"objective": 0.3})
    log.event(t, NODE_B, "progress", 2102, step=2, metrics={"objective": 0.2})
    frozen = log.event(t, NODE_B, "frozen", 2103, step=2)
    gone = log.event(t, NODE_C, "lost", 3000, after=frozen.key)
    log.event(t, killer, "killed", 3100, after=gone.key, reason="not worth a re-run")
    records = list(log.records)
    for order in (records, records[::-1]):
        view = log.state(order).trial(t.key)
        assert view is not None
        assert (view.state, view.runner, view.curve, view.last_step) == (
            "killed",
            NODE_B,
            ((1, 0.3), (2, 0.2)),
            2,
        )


def test_a_rerun_from_0_shows_its_own_curve_whatever_the_clocks() -> None:
    # A re-run from 0 after a loss showed the lost run's step 8 beside its own step-4 loss.
    # B's clock is 10 s behind A's: its start, its reports and its freeze are all stamped
    # before A's last report, yet they follow the loss that saw that report.
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.event(t, NODE_A, "started", 20_000)
    for step in range(1, 9):
        last = log.event(
            t, NODE_A, "progress", 20_000 + step, step=step, metrics={"objective": 9.0}
        )
    loss = log.event(t, NODE_C, "lost", 15_000, reason="no news from node", after=last.key)
    log.event(t, NODE_B, "started", 10_000, supersedes=(loss.key,))
    for step in range(1, 5):
        log.event(t, NODE_B, "progress", 10_000 + step, step=step, metrics={"objective": 1.0})
    records = list(log.records)
    for order in (records, records[::-1]):
        view = log.state(order).trial(t.key)
        assert view is not None and (view.state, view.runner) == ("running", NODE_B)
        assert view.curve == tuple((step, 1.0) for step in range(1, 5)) and view.last_step == 4
    # A resume keeps what the resumed run had reached, and drops what a later attempt did.
    log.event(t, NODE_B, "frozen", 10_010, step=4)
    log.event(t, NODE_B, "thawed", 10_020, step=2)
    view = log.state().trial(t.key)
    assert view is not None and view.curve == ((1, 1.0), (2, 1.0)) and view.last_step == 2


def test_a_restart_of_the_current_run_drops_the_curve_it_was_resumed_with() -> None:
    # A Study caller with no checkpoint runs a thawed trial again from step 0 and says so
    # (restarted): the steps the resumed run kept are not the new run's. A restart written by
    # a node that is not the trial's runner (a run a re-run replaced) changes nothing.
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.run(t, NODE_A, 1_000, 5, 9.0)
    log.event(t, NODE_A, "frozen", 1_100, step=5)
    log.event(t, NODE_A, "thawed", 1_200, step=5)
    log.event(t, NODE_B, "restarted", 1_250)
    view = log.state().trial(t.key)
    assert view is not None and view.last_step == 5 and view.resumed_step == 5
    log.event(t, NODE_A, "restarted", 1_300)
    log.event(t, NODE_A, "progress", 1_301, step=1, metrics={"objective": 1.0})
    view = log.state().trial(t.key)
    assert view is not None and view.state == "running" and view.resumed_step is None
    assert view.curve == ((1, 1.0),) and view.last_step == 1 and view.thaws == 1


def test_a_run_resumed_from_an_older_checkpoint_keeps_its_curve_up_to_that_checkpoint() -> None:
    # Frozen at step 14 with checkpoints every 10 steps, the thawed script went on from step
    # 11: the restart dropped the whole curve, and the trial ended with 20 steps of 30.
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.run(t, NODE_A, 1_000, 14, 9.0)
    log.event(t, NODE_A, "frozen", 1_100, step=14)
    log.event(t, NODE_A, "thawed", 1_200, step=14)
    log.event(t, NODE_A, "restarted", 1_300, step=10)
    log.event(t, NODE_A, "progress", 1_301, step=11, metrics={"objective": 1.0})
    for order in (list(log.records), list(log.records)[::-1]):
        view = log.state(order).trial(t.key)
        assert view is not None and view.state == "running" and view.resumed_step == 10
        assert [step for step, _ in view.curve] == list(range(1, 12)) and view.last_step == 11
        assert view.curve[-1] == (11, 1.0)


HOUR = 3_600_000


def _lost_to_a_fast_clock(last_stamp: int) -> tuple[Log, Record]:
    """A's trial, its last event stamped last_stamp (an hour ahead, or by a hostile peer),
    taken for lost by B and re-run by C."""
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.event(t, NODE_A, "started", 1_000)
    last = log.event(t, NODE_A, "heartbeat", last_stamp)
    loss = log.event(t, NODE_B, "lost", 100_000, reason="no news", after=last.key)
    log.event(t, NODE_C, "started", 101_000, supersedes=(loss.key,))
    return log, t


def test_a_rerun_after_a_loss_to_a_fast_clock_can_freeze_stop_and_be_lost_again() -> None:
    # Found by review: the re-run's own later events kept their raw times, before its start
    # (moved after the loss), so its freeze or interruption never took effect and every pass
    # of the lost-trial check wrote another loss; with a stamp of 2**63 - 1, for ever.
    for stamp in (1_000 + HOUR, 2**63 - 1):
        log, t = _lost_to_a_fast_clock(stamp)
        log.event(t, NODE_C, "progress", 102_000, step=1, metrics={"objective": 0.5})
        log.event(t, NODE_C, "frozen", 103_000, step=1)
        view = log.state().trial(t.key)
        assert view is not None and (view.state, view.frozen_step) == ("frozen", 1), stamp
        log.event(t, NODE_C, "thawed", 104_000, step=1)
        stop = log.event(t, NODE_C, "interrupted", 105_000, reason="peer shut down")
        view = log.state().trial(t.key)
        assert view is not None and view.state == "interrupted" and view.latest == stop.key
        # Taken up again and lost again (its runner died): the second loss follows the rerun.
        again = log.event(t, NODE_B, "started", 106_000, supersedes=(stop.key,))
        log.event(t, NODE_D, "lost", 200_000, reason="no news", after=again.key)
        view = log.state().trial(t.key)
        assert view is not None and view.state == "lost", stamp
        records = list(log.records)
        random.Random(stamp).shuffle(records)
        assert _views(log.state(records)) == _views(log.state())


def test_a_cycle_of_links_cannot_keep_a_trial_from_being_lost() -> None:
    # Found by review: D's first event names its own second one (stamped 2**62) in `after`,
    # a cycle with its seq order; the links were followed a bounded number of times, the
    # cycle's times rose with each, and every loss written after it sorted first: the trial
    # stayed running and each lost-trial pass wrote another loss.
    log = Log()
    t = log.trial(NODE_A, 0.5)
    body = EventBody(t.key, log.experiment.key, "heartbeat", NODE_D).to_body()
    beat = Record.create(EVENT, NODE_D, 2, 2**62, body, [t.key, log.experiment.key])
    body = EventBody(t.key, log.experiment.key, "started", NODE_D, after=beat.key).to_body()
    start = Record.create(EVENT, NODE_D, 1, 2**62, body, [t.key, log.experiment.key])
    log.records += [beat, start]
    view = log.state().trial(t.key)
    assert view is not None and view.state == "running" and view.latest is not None
    log.event(t, NODE_B, "lost", 1_000_000, reason="no news", after=view.latest)
    view = log.state().trial(t.key)
    assert view is not None and view.state == "lost"


def test_a_late_report_of_a_replaced_run_does_not_undo_the_current_runs_freeze() -> None:
    # A's clock runs an hour fast; B took it for lost after its step 8, and A's step 9 came
    # late. C's re-run from 0 froze at step 3, yet the trial read running again, with A's
    # step 9 in C's curve, and C then took its own trial for an orphan.
    log, t = _lost_to_a_fast_clock(1_000 + HOUR)
    log.event(t, NODE_A, "progress", 2_000 + HOUR, step=9, metrics={"objective": 9.0})
    for step in range(1, 4):
        log.event(t, NODE_C, "progress", 101_000 + step, step=step, metrics={"objective": 1.0})
    log.event(t, NODE_C, "frozen", 102_000, step=3)
    view = log.state().trial(t.key)
    assert view is not None and (view.state, view.runner) == ("frozen", NODE_C)
    assert view.curve == ((1, 1.0), (2, 1.0), (3, 1.0)) and view.last_step == 3


def test_a_trial_run_on_both_sides_of_a_partition_shows_the_curve_of_the_run_that_ended_it() -> (
    None
):
    # A, cut off, ran on to step 20 and completed it; C had re-run it to step 15. The
    # completed trial's curve was C's steps 1-15 with A's 16-20.
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.event(t, NODE_A, "started", 1_000)
    for step in range(1, 21):
        log.event(t, NODE_A, "progress", 1_000 + step * 100, step=step, metrics={"objective": 9.0})
    first = log.state().trial(t.key)
    assert first is not None
    loss = log.event(t, NODE_B, "lost", 1_500, reason="no news", after=first.latest)
    log.event(t, NODE_C, "started", 1_501, supersedes=(loss.key,))
    for step in range(1, 16):
        log.event(t, NODE_C, "progress", 1_501 + step, step=step, metrics={"objective": 1.0})
    running = log.state().trial(t.key)
    assert running is not None and running.runner == NODE_C and running.last_step == 15
    log.event(t, NODE_A, "completed", 3_100, metrics={"objective": 9.0})
    done = log.state().trial(t.key)
    assert done is not None and (done.state, done.runner, done.value) == ("completed", NODE_A, 9.0)
    assert done.curve == tuple((step, 9.0) for step in range(1, 21))


def test_a_takeover_of_a_trial_frozen_on_a_fast_clock_runs() -> None:
    # `metaopt thaw` on B of a trial frozen by hand on A, gone, whose clock ran ahead: B's
    # thaw sorted before A's freeze, and the trial still read "frozen by the user".
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.event(t, NODE_A, "started", 1_000 + HOUR)
    log.event(t, NODE_A, "frozen", 2_000 + HOUR, step=4, reason=FROZEN_BY_HAND)
    frozen = log.state().trial(t.key)
    assert frozen is not None and frozen.frozen_by_hand
    log.event(t, NODE_B, "thawed", 5_000, after=frozen.latest)
    log.event(t, NODE_B, "progress", 5_100, step=1, metrics={"objective": 0.3})
    view = log.state().trial(t.key)
    assert view is not None and (view.state, view.runner, view.curve) == (
        "running",
        NODE_B,
        ((1, 0.3),),
    )


def test_a_loss_of_a_run_already_replaced_does_not_free_the_trial() -> None:
    # D had not heard of C's re-run when it, too, took A's run for lost: by its stamp its
    # loss came after C's start and freed a trial C was running, for a third peer to run.
    log, t = _lost_to_a_fast_clock(2_000)  # clocks in step this time
    [a_last] = [r for r in log.records if r.kind == EVENT and r.origin == NODE_A][-1:]
    log.event(t, NODE_C, "progress", 102_000, step=1, metrics={"objective": 0.5})
    log.event(t, NODE_D, "lost", 103_000, reason="no news", after=a_last.key)
    view = log.state().trial(t.key)
    assert view is not None and (view.state, view.runner) == ("running", NODE_C)
    # A loss of C's own run still counts.
    log.event(t, NODE_D, "lost", 600_000, reason="no news", after=view.latest)
    view = log.state().trial(t.key)
    assert view is not None and view.state == "lost"


def _replaced_by_b() -> tuple[Log, Record]:
    """A trial A ran and C took for lost at 100, re-run by B from 110."""
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.event(t, NODE_A, "started", 10)
    h1 = log.event(t, NODE_A, "heartbeat", 20)
    l1 = log.event(t, NODE_C, "lost", 100, reason="quiet", after=h1.key)
    log.event(t, NODE_B, "started", 110, supersedes=(l1.key,))
    return log, t


def _late_loss_of_a() -> tuple[Log, Record, Record]:
    """_replaced_by_b, then A (cut off but alive) heartbeats at 120, B at 130, and E, who
    never heard of B, writes A's run lost after A's late heartbeat (returned last)."""
    log, t = _replaced_by_b()
    late = log.event(t, NODE_A, "heartbeat", 120)
    log.event(t, NODE_B, "heartbeat", 130)
    log.event(t, NODE_E, "lost", 300, reason="quiet", after=late.key)
    return log, t, late


@pytest.mark.parametrize("order", range(6))
def test_a_late_loss_of_a_replaced_runs_late_report_does_not_free_the_rerun(order: int) -> None:
    # A ran the trial; C took it for lost and B re-ran it; A, cut off but alive, heartbeat on
    # after B's start (by the clocks); then E, who never heard of B, wrote A's run lost after
    # that heartbeat. Compared by time, that loss followed B's start: the trial read free, for
    # a third run while B ran it.
    log, t, _ = _late_loss_of_a()
    records = list(log.records)
    random.Random(order).shuffle(records)
    view = log.state(records).trial(t.key)
    assert view is not None and (view.state, view.runner) == ("running", NODE_B)
    assert view.free_events == ()
    # What a loss of B's run names is B's latest, not A's late heartbeat: that one counts.
    log.event(t, NODE_D, "lost", 400, reason="quiet", after=view.latest)
    view = log.state().trial(t.key)
    assert view is not None and (view.state, view.runner) == ("lost", NODE_B)


@pytest.mark.parametrize("order", range(4))
def test_a_loss_naming_an_event_not_here_yet_frees_nothing_until_it_comes(order: int) -> None:
    # The case above on a replica that holds E's loss but not yet A's late heartbeat it
    # names: counted as a loss naming nothing, it freed the trial B runs (for a third run)
    # until the heartbeat arrived. (A mutation audit found the window.)
    log, t, late = _late_loss_of_a()
    records = [r for r in log.records if r.key != late.key]
    random.Random(order).shuffle(records)
    view = log.state(records).trial(t.key)
    assert view is not None and (view.state, view.runner, view.free_events) == (
        "running", NODE_B, ()
    )  # fmt: skip
    # A loss naming what is not here yet waits for it, then counts.
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.event(t, NODE_A, "started", 10)
    beat = log.event(t, NODE_A, "heartbeat", 20)
    log.event(t, NODE_C, "lost", 100, reason="quiet", after=beat.key)
    waiting = log.state([r for r in log.records if r.key != beat.key]).trial(t.key)
    assert waiting is not None and waiting.state == "running"
    view = log.state().trial(t.key)
    assert view is not None and view.state == "lost"


@pytest.mark.parametrize("order", range(4))
def test_a_loss_naming_a_replaced_runs_event_that_ties_with_the_new_start_does_not_count(
    order: int,
) -> None:
    # A's run was replaced by B's; A, cut off with a fast clock, froze at "5000"; B's run was
    # lost; A re-ran the trial after its clock stepped back ("2000", lifted to 5000 by its seq
    # order, sorting after the freeze); E, who never heard of B, wrote A's run lost after
    # that freeze. By time, the freeze was not before A's new start: the loss freed it.
    log, t = _replaced_by_b()
    freeze = log.event(t, NODE_A, "frozen", 5000, step=2)
    hb = log.event(t, NODE_B, "heartbeat", 130)
    l2 = log.event(t, NODE_D, "lost", 200, reason="quiet", after=hb.key)
    log.event(t, NODE_A, "started", 2000, supersedes=(l2.key,))
    log.event(t, NODE_E, "lost", 300, reason="quiet", after=freeze.key)
    records = list(log.records)
    random.Random(order).shuffle(records)
    view = log.state(records).trial(t.key)
    assert view is not None and (view.state, view.runner) == ("running", NODE_A)


def test_only_a_restart_answers_and_only_a_free_event() -> None:
    # A heartbeat of another node naming the freeze in its supersedes erased it (the trial
    # read running), and a start naming a start answered that.
    log = Log()
    t = log.trial(NODE_A, 0.5)
    started = log.event(t, NODE_A, "started", 10)
    frozen = log.event(t, NODE_A, "frozen", 20, step=3)
    log.event(t, NODE_C, "heartbeat", 30, supersedes=(frozen.key,))
    log.event(t, NODE_C, "progress", 31, step=1, supersedes=(started.key,))
    view = log.state().trial(t.key)
    assert view is not None and (view.state, view.frozen_step) == ("frozen", 3)


def _forged(log: Log, node: bytes, params: dict[str, object], counter: int) -> Record:
    body = {"params": params, "node": node, "counter": counter}
    rec = Record.create(TRIAL, node, log._next(node), 1000, body, [log.experiment.key])
    log.records.append(rec)
    return rec


def test_a_trial_outside_the_space_is_failed_never_the_best_nor_in_the_search() -> None:
    # A buggy or forged peer's trials with x = "abc", inf or -1e308 for a uniform(0, 1), or a
    # parameter missing or unknown, were counted completed, and one became the best.
    spec = _spec(space={"x": "uniform(0, 1)", "f": "fidelity(1, 8)"}, objectives=("loss",))
    log = Log(spec)
    honest = log.trial(NODE_A, 0.5)
    log.event(honest, NODE_A, "completed", 2000, metrics={"loss": 1.0})
    forged = [
        _forged(log, NODE_B, params, counter)
        for counter, params in enumerate(
            [
                {"x": "abc"},
                {"x": float("inf")},
                {"x": -1e308},
                {},
                {"x": 0.25, "y": 1},
                {"x": 0.25, "f": float("-inf")},
            ],
            1,
        )
    ]
    for trial in forged:
        log.event(trial, NODE_B, "completed", 2000, metrics={"loss": -1.0})
    fine = _forged(log, NODE_C, {"x": 0.75, "f": 8}, 1)  # a fidelity value is a parameter
    log.event(fine, NODE_C, "completed", 2000, metrics={"loss": 2.0})
    state = log.state()
    assert [t.key for t in state.best()] == [honest.key]
    views = {t.key: t for t in state.trials()}
    assert state.counts() == {"completed": 2, "failed": len(forged)}
    for trial in forged:
        view = views[trial.key]
        assert view.state == "failed" and view.values is None
        assert view.reason is not None and view.reason.startswith(
            "its params are not a point of the experiment's space: "
        )
    assert "'abc'" in (views[forged[0].key].reason or "")
    assert "'y' is not a parameter" in (views[forged[4].key].reason or "")
    from metaopt._suggest import Suggester

    obs = Suggester(state, NODE_D).observations()
    assert sorted(obs.X[:, 0]) == [0.5, 0.75]  # the honest two alone
    # The only one the search reads is a point of its space (x = 0.25; its fidelity aside),
    # as a failure.
    assert obs.failed.tolist() == [[0.25]] and obs.pending.shape == (0, 1)
    assert _views(log.state(list(reversed(log.records)))) == _views(state)  # still order-free


def test_the_trial_list_kept_between_folds_follows_every_new_record() -> None:
    # trials() is kept while nothing is folded in (the scheduler reads it twice a second);
    # whatever arrives next, in any order, shows in the next listing.
    log = Log()
    late = log.trial(NODE_A, 0.1, time=2000)
    state = log.state()
    listed = state.trials()
    listed.clear()  # a caller's copy: the kept one stays whole
    assert [t.key for t in state.trials()] == [late.key]
    early = log.trial(NODE_B, 0.2, time=1000)
    state.apply(early)
    assert [t.key for t in state.trials()] == [early.key, late.key]
    state.apply(log.event(late, NODE_A, "started", 2100))
    assert [t.state for t in state.trials()] == ["pending", "running"]
    state.apply(log.event(late, NODE_A, "completed", 2200, metrics={"objective": 0.5}))
    assert [t.state for t in state.trials()] == ["pending", "completed"]
    assert _views(state) == _views(log.state())


def test_the_events_of_a_trial_share_its_ids_rather_than_each_keep_a_copy() -> None:
    # A fold keeps every event it reads: each event's own copies of its trial, experiment and
    # node ids were a quarter of a replica's memory (228 of 925 bytes a progress event).
    log = Log()
    trial = log.trial(NODE_A, 0.5)
    for step in range(3):
        log.event(trial, NODE_A, "progress", 1000 + step, step=step, metrics={"objective": 1.0})
    decoded = [Record.decode(r.data) for r in log.records]  # (each with its own bytes, as read)
    assert decoded[2].links[0] is not decoded[3].links[0]
    state = log.state(decoded)
    held = state.events(trial.key)
    assert len(held) == 3
    first = held[0][-1]
    for _, origin, _, _, event in held:
        assert event.trial is first.trial and event.experiment is first.experiment
        assert event.node is first.node and origin is first.node
    assert first.experiment is state.key and first.trial == trial.key


def test_an_ended_trial_keeps_its_events_as_bytes_and_a_late_one_folds_them_again() -> None:
    # Decoded, an ended trial's events held most of a replica's memory for good (a review:
    # 144 of 194 MiB at 251,352 records), though they are read again only on a late event.
    log = Log()
    trial = log.trial(NODE_A, 0.5)
    log.run(trial, NODE_A, 1000, 3, 0.25)
    log.event(trial, NODE_B, "killed", 1100)
    state = log.state()
    assert _only(state).state == "killed" and trial.key not in state._events  # (as bytes)
    assert [e[-1].kind for e in state.events(trial.key)] == ["started", *["progress"] * 3, "killed"]
    late = log.event(trial, NODE_A, "completed", 1004, metrics={"objective": 0.2})
    state.apply(late)  # a result outranks a verdict: the trial is folded again, all of it
    view = _only(state)
    assert view.state == "completed" and view.values == (0.2,) and len(view.curve) == 3
    assert view == _only(log.state())


def _only(state: ExperimentState) -> TrialView:
    (view,) = state.trials()
    return view


@pytest.mark.parametrize("killed_at", [20, 5], ids=["killed-later", "killed-earlier"])
def test_a_completion_outranks_a_kill_whenever_each_was_written(killed_at: int) -> None:
    # A result outranks a verdict reached without it: a `metaopt kill` that raced a trial's
    # completion threw its values away when the kill, stamped later, won by time.
    log = Log()
    t = log.trial(NODE_A, 0.5, time=1)
    log.event(t, NODE_A, "completed", 10, metrics={"objective": 0.3})
    log.event(t, NODE_B, "killed", killed_at, reason="killed by the user")
    for records in (log.records, list(reversed(log.records))):
        view = _only(log.state(records))
        assert (view.state, view.values, view.ended_at) == ("completed", (0.3,), 10)


@pytest.mark.parametrize(
    ("first", "then"),
    [("killed", "failed"), ("failed", "killed")],
    ids=["kill-first", "fail-first"],
)
def test_between_a_kill_and_a_failure_the_earlier_decides(first: str, then: str) -> None:
    # Killed and failed rank alike: the first in time wins (a kill ranked below a failure
    # turned a trial killed by hand into one failed a moment later by its dying run).
    log = Log()
    t = log.trial(NODE_A, 0.5, time=1)
    log.event(t, NODE_A, first, 10, reason="first")
    log.event(t, NODE_B, then, 20, reason="then")
    for records in (log.records, list(reversed(log.records))):
        view = _only(log.state(records))
        assert (view.state, view.reason, view.ended_at) == (first, "first", 10)


def test_one_writers_events_keep_its_order_when_its_clock_steps_back() -> None:
    # Written in this order by one node: started, interrupted, started again. Its clock
    # stepped back between the last two, and by stamps alone the restart sorted before the
    # interruption: the trial read "interrupted" (free for anyone) while it ran.
    log = Log()
    t = log.trial(NODE_A, 0.5, time=10)
    log.event(t, NODE_A, "started", 50)
    log.event(t, NODE_A, "interrupted", 100, reason="signal")
    log.event(t, NODE_A, "started", 90)
    for records in (log.records, list(reversed(log.records))):
        view = _only(log.state(records))
        assert (view.state, view.attempts, view.free_events) == ("running", 2, ())


def test_a_stopped_experiment_is_finished_once_nothing_runs() -> None:
    # Stopped, trials waiting to start (or to run again) never will: waiting for them kept a
    # stopped experiment unfinished for good.
    log = Log()
    waiting = log.trial(NODE_A, 0.1)
    lost = log.trial(NODE_A, 0.2)
    log.event(lost, NODE_A, "started", 1100)
    log.event(lost, NODE_B, "lost", 5000, reason="quiet")
    running = log.trial(NODE_A, 0.3)
    log.event(running, NODE_A, "started", 1100)
    stop = Record.create(CONTROL, NODE_B, 99, 6000, {"action": "stop"}, [log.experiment.key])
    log.records.append(stop)
    state = log.state()
    assert state.stopped and not state.active
    assert state.counts() == {"pending": 1, "lost": 1, "running": 1}
    assert not state.finished  # one still runs
    log.event(running, NODE_A, "completed", 7000, metrics={"objective": 0.5})
    state = log.state()
    assert state.counts() == {"pending": 1, "lost": 1, "completed": 1}
    assert state.finished and state.trial(waiting.key).state == "pending"  # type: ignore[union-attr]


def test_a_trial_that_ended_after_a_loss_lists_no_free_events() -> None:
    # free_events names the events that freed a trial; a trial completed since is not free,
    # and a re-run answering them would say it supersedes a loss that no longer counts.
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.event(t, NODE_A, "started", 1100)
    log.event(t, NODE_B, "lost", 5000, reason="quiet")
    log.event(t, NODE_A, "completed", 6000, metrics={"objective": 0.5})
    view = _only(log.state())
    assert (view.state, view.free_events) == ("completed", ())


def test_last_seen_is_the_latest_stamp_whatever_the_order_written() -> None:
    # One writer stamped 100 and then, its clock stepped back, 90: the trial was last seen at
    # 100, not 90, or it read as quiet for longer than it was.
    log = Log()
    t = log.trial(NODE_A, 0.5, time=10)
    log.event(t, NODE_A, "started", 100)
    log.event(t, NODE_A, "heartbeat", 90)
    for records in (log.records, list(reversed(log.records))):
        assert _only(log.state(records)).last_seen == 100


def test_the_best_of_equal_values_is_the_earliest_created_then_the_smallest_key() -> None:
    # Every peer must name the same best trial: among equal values the earliest created, and
    # among those created in the same millisecond the smallest key.
    log = Log()
    early = log.trial(NODE_A, 0.1, time=1000)
    late = log.trial(NODE_B, 0.7, time=2000)
    assert late.key < early.key  # so the key alone would pick the later one
    for t in (early, late):
        log.event(t, NODE_A, "completed", 3000, metrics={"objective": 0.5})
    assert [t.key for t in log.state().best()] == [early.key]
    log = Log()
    twins = [log.trial(NODE_A, 0.1, time=1000), log.trial(NODE_B, 0.7, time=1000)]
    for t in twins:
        log.event(t, NODE_A, "completed", 3000, metrics={"objective": 0.5})
    assert [t.key for t in log.state().best()] == [min(t.key for t in twins)]


def test_a_kill_at_a_rung_records_the_rung_and_a_malformed_one_is_refused() -> None:
    # ASHA's kill at rung 1 of a run that reported on to step 12: other peers must know the
    # rung, or its later values outrank their runs at rungs it never passed in ASHA's eyes.
    log = Log()
    at_rung, by_hand = log.trial(NODE_A, 0.25), log.trial(NODE_A, 0.75)
    for t in (at_rung, by_hand):
        log.event(t, NODE_A, "started", 1000)
        log.event(t, NODE_A, "progress", 1100, step=12, metrics={"objective": 0.9})
    log.event(at_rung, NODE_A, "killed", 1200, step=12, rung=1, reason="not in the top 1/3")
    log.event(by_hand, NODE_A, "killed", 1200, step=12, reason="killed by the user")
    state = log.state()
    assert state.trial(at_rung.key).stopped_rung == 1  # type: ignore[union-attr]
    assert state.trial(by_hand.key).stopped_rung is None  # type: ignore[union-attr]
    for rung in (-1, "1", 1.0, 2**63):
        body = EventBody(at_rung.key, log.experiment.key, "killed", NODE_A).to_body()
        rec = Record.create(EVENT, NODE_A, 99, 1300, {**body, "rung": rung},
                            [at_rung.key, log.experiment.key])  # fmt: skip
        assert parse_event(rec) is None


def test_a_verdict_following_a_replaced_runs_events_is_shown_on_that_run() -> None:
    # A, cut off and alive, kills its own run after C re-ran the trial A was counted lost
    # on: the view shows the kill on A's run (its runner and curve), not on C's re-run.
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.event(t, NODE_A, "started", 1000)
    last_a = log.event(t, NODE_A, "progress", 1100, step=1, metrics={"objective": 0.9})
    loss = log.event(t, NODE_B, "lost", 1200, after=last_a.key)
    log.event(t, NODE_C, "started", 1300, supersedes=(loss.key,))
    log.event(t, NODE_C, "progress", 1400, step=1, metrics={"objective": 0.1})
    log.event(t, NODE_A, "killed", 1500, reason="not in the top 1/3 at rung 1", after=last_a.key)
    for records in (log.records, list(reversed(log.records))):
        view = _only(log.state(records))
        assert (view.state, view.runner, view.curve) == ("killed", NODE_A, ((1, 0.9),))


def test_a_frozen_trial_lost_by_two_peers_is_lost_while_frozen() -> None:
    # A froze it and went away; B and C each wrote its loss: its checkpoint is gone either way.
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.event(t, NODE_A, "started", 1000)
    frozen = log.event(t, NODE_A, "frozen", 1100, step=4)
    log.event(t, NODE_B, "lost", 1200, after=frozen.key)
    log.event(t, NODE_C, "lost", 1300, after=frozen.key)
    for records in (log.records, list(reversed(log.records))):
        view = _only(log.state(records))
        assert (view.state, view.lost_frozen) == ("lost", True)


def test_the_curve_of_a_trial_of_two_objectives_is_the_first_objectives() -> None:
    # What status and the early stoppers read.
    log = Log(_spec(objectives=("loss", "latency"), directions=("minimize", "minimize")))
    t = log.trial(NODE_A, 0.5)
    log.event(t, NODE_A, "started", 1000)
    log.event(t, NODE_A, "progress", 1001, step=1, metrics={"loss": 0.9, "latency": 30.0})
    log.event(t, NODE_A, "progress", 1002, step=2, metrics={"loss": 0.5, "latency": 40.0})
    assert _only(log.state()).curve == ((1, 0.9), (2, 0.5))


def test_a_waiting_or_lost_trial_ends_for_good_only_once_the_experiment_is_stopped() -> None:
    log = Log()
    waiting, lost, frozen = log.trial(NODE_A, 0.1), log.trial(NODE_A, 0.2), log.trial(NODE_A, 0.3)
    log.event(lost, NODE_A, "started", 1100)
    log.event(lost, NODE_B, "lost", 5000, reason="quiet")
    log.event(frozen, NODE_A, "started", 1100)
    log.event(frozen, NODE_A, "frozen", 1200, step=3)
    state = log.state()
    views = [state.trial(t.key) for t in (waiting, lost, frozen)]
    assert [state.ended_for_good(v) for v in views] == [False, False, False]  # type: ignore[arg-type]
    stop = Record.create(CONTROL, NODE_B, 99, 6000, {"action": "stop"}, [log.experiment.key])
    state = log.state([*log.records, stop])
    views = [state.trial(t.key) for t in (waiting, lost, frozen)]
    # (A frozen trial may still be thawed by hand.)
    assert [state.ended_for_good(v) for v in views] == [True, True, False]  # type: ignore[arg-type]


def test_the_budget_is_used_up_once_as_many_trials_have_ended() -> None:
    log = Log(_spec(max_trials=2))
    first, second = log.trial(NODE_A, 0.1), log.trial(NODE_B, 0.2)
    log.event(first, NODE_A, "completed", 2000, metrics={"objective": 0.5})
    log.event(second, NODE_B, "started", 2000)
    assert log.state().budget_spent and not log.state().budget_used_up
    log.event(second, NODE_B, "failed", 3000, reason="exit 1")
    assert log.state().budget_used_up


def test_a_run_resumed_reports_the_step_after_its_checkpoints() -> None:
    assert went_on(1) is None  # its first report at step 1: it went on from the start
    assert went_on(5) == 4
