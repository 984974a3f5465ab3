"""The scheduler (peer/_scheduler.py): what a mutation audit found unpinned. Who is in line
for a free trial and in which place, which free trial a peer takes first, when a quiet trial
counts as lost and what its loss follows, the order of ends in a failure streak, and which
trials count as this peer's turns of an experiment or as running anywhere."""

from __future__ import annotations

import hashlib

from crdt import Record
from metaopt._records import EVENT, EventBody
from metaopt._state import ExperimentState
from metaopt.peer._scheduler import (
    BACKOFF_AFTER,
    Work,
    claim_rank,
    ended_here,
    failure_streak,
    find_lost,
    plan_work,
    rendezvous_rank,
)
from tests.metaopt.peer.test_scheduler import (
    GONE,
    ME,
    OTHER,
    THIRD,
    _event,
    _plan,
    _since,
    _state,
    _trial,
)


def _end(
    state: ExperimentState, trial: Record, node: bytes, seq: int, kind: str, time: int
) -> None:
    """``node`` ends its run of ``trial`` (completed with an objective, or failed) at ``time``."""
    metrics = {"objective": 0.5} if kind == "completed" else {}
    body = EventBody(trial.key, state.key, kind, node, None, metrics).to_body()
    state.apply(Record.create(EVENT, node, seq, time, body, [trial.key, state.key]))


def _rerun_here(state: ExperimentState, creator: bytes, seq: int, at: int) -> Record:
    """A trial ``creator`` recorded and ran long ago, lost (THIRD found it quiet) and re-run
    by this node from ``at``: its runner is ME, its creator is not."""
    t = _trial(state, creator, seq, 1_000)
    _event(state, t, creator, seq + 1, "started", 1_000)
    loss = _event(state, t, THIRD, seq, "lost", 2_000)
    _event(state, t, ME, seq, "started", at, supersedes=(loss.key,))
    view = state.trial(t.key)
    assert view is not None and (view.state, view.node, view.runner) == ("running", creator, ME)
    return t


def test_every_live_node_has_its_own_place_in_line_when_the_last_runner_is_first() -> None:
    """The last runner first, then the others one claim delay apart (places 1, 2, ...): with
    the runner counted among the others too, a trial whose runner also led by the hash left
    place 1 empty, and the next peer waited two claim delays, not one, to take it up."""
    live = [ME, OTHER, THIRD]
    led_by_hash = 0
    for seq in range(1, 60):
        state = _state()
        t = _trial(state, OTHER, seq)
        _event(state, t, OTHER, 100 + seq, "started", 1_000)
        _event(state, t, OTHER, 200 + seq, "interrupted", 2_000)
        view = state.trial(t.key)
        assert view is not None and view.runner == OTHER and view.state == "interrupted"
        assert sorted(claim_rank(n, live, view) for n in live) == [0, 1, 2]
        led_by_hash += rendezvous_rank(OTHER, live, t.key) == 0
    assert led_by_hash > 0  # (the case that matters was met)


def test_a_quiet_trial_is_lost_only_once_lost_after_has_passed_not_when_it_is_reached() -> None:
    """A dead node's trial counts as lost after more than ``lost_after`` of quiet, not at it."""
    state = _state()
    t = _trial(state, OTHER, 1)
    _event(state, t, OTHER, 2, "started", 1_000)
    dead = lambda n: False  # noqa: E731
    assert find_lost([state], ME, lambda _: 60_000, 60_000, dead, set()) == []
    assert [x.trial for x in find_lost([state], ME, lambda _: 60_001, 60_000, dead, set())] == [
        t.key
    ]


def test_a_loss_of_this_nodes_own_orphan_follows_its_latest_event() -> None:
    """A restarted peer's loss of its own trial names the latest event it had seen of it
    (EventBody.after): a loss naming nothing counts whatever happened since, so if another
    peer had already lost and re-run that trial, the late loss freed the running re-run and
    the trial ran twice. Naming the replaced run's last event, it is ignored."""
    state = _state()
    t = _trial(state, ME, 1)
    _event(state, t, ME, 2, "started", 1_000)
    beat = _event(state, t, ME, 3, "heartbeat", 2_000)
    [lost] = find_lost([state], ME, _since(3_000), 60_000, lambda n: True, set())
    assert lost.trial == t.key and lost.after == beat.key
    # Meanwhile THIRD took ME for gone and re-runs the trial; ME's loss arrives after that.
    taken = _event(state, t, THIRD, 1, "lost", 70_000)
    _event(state, t, THIRD, 2, "started", 70_001, supersedes=(taken.key,))
    body = EventBody(t.key, state.key, "lost", ME, reason=lost.reason, after=lost.after)
    state.apply(Record.create(EVENT, ME, 4, 80_000, body.to_body(), [t.key, state.key]))
    view = state.trial(t.key)
    assert view is not None and (view.state, view.runner) == ("running", THIRD)


def test_ends_of_one_arrival_and_stamp_count_in_the_order_the_trials_were_made() -> None:
    """Ends that arrived together (held at opening) under one stamp are ordered by when their
    trials were made, not by their counters (each node's own, unrelated across nodes): the
    completion of the trial made first does not end the streak of the failures made after
    it, and the experiment backs off."""
    state = _state(name="e")
    done = _trial(state, OTHER, 50, 500)  # made first, OTHER's counter far ahead
    _end(state, done, OTHER, 51, "completed", 9_000)
    for n in range(1, BACKOFF_AFTER + 1):  # made after it, by ME (counters 1, 2, 3)
        _end(state, _trial(state, ME, n, 1_000 * n), ME, 10 + n, "failed", 9_000)
    assert failure_streak(state) == (BACKOFF_AFTER, 9_000)
    assert failure_streak(state, ended_here(20_000, lambda trial: 11_000)) == (BACKOFF_AFTER, 9_000)
    work = plan_work([state], ME, 1, set(), [ME], 9_500, 1_000, lambda s: True,
                     quiet_ms=lambda trial: 500)  # fmt: skip
    assert work == []  # (backing off: a second from the last failure)


def test_a_trial_recorded_but_not_yet_started_elsewhere_counts_as_running_anywhere() -> None:
    """A pending trial (its point recorded, its process not yet started) holds a slot of the
    cluster as a running one does: the slot here goes to the experiment with nothing at all,
    whichever order of the two this node has of its own."""
    x, y = _state(name="x"), _state(name="y")
    pending = _trial(x, OTHER, 1, 1_000)  # recorded on OTHER, not started
    view = x.trial(pending.key)
    assert view is not None and view.state == "pending"
    own_first = set()
    for me in [bytes([c]) * 16 for c in b"abcdefgh"]:
        first = min((x, y), key=lambda s: hashlib.blake2b(me + s.key, digest_size=8).digest())
        own_first.add(first.spec.name)
        work = _plan([x, y], me, 1, set(), [me, OTHER], 2_000, 1_000, lambda s: True)
        assert [w.experiment for w in work] == [y.key]
    assert own_first == {"x", "y"}  # (both own orders were tried)


def test_a_trial_re_run_here_counts_as_this_nodes_turn_of_its_experiment() -> None:
    """Which experiment this node ran longest ago counts the trials it last ran, not only those
    it recorded: a re-run here of another node's lost trial is this node's turn of that
    experiment, so the next slot goes to the one it ran longest ago."""
    a, b = _state(name="a"), _state(name="b")
    t = _rerun_here(a, OTHER, 1, 3_000_000)
    _end(a, t, ME, 20, "completed", 3_000_100)
    mine = _trial(b, ME, 30, 2_000_000)
    _event(b, mine, ME, 31, "started", 2_000_000)
    _end(b, mine, ME, 32, "completed", 2_000_100)
    work = _plan([a, b], ME, 1, set(), [ME], 3_001_000, 1_000, lambda s: True)
    assert [w.experiment for w in work] == [b.key]


def test_among_news_that_arrived_together_the_latest_stamp_not_the_first_start_counts() -> None:
    """After a restart every trial's news arrived at once (its quiet time is the same): the
    experiment whose trial this node re-ran lately (made long ago) was served later than one
    whose trial it made and ended before, by the stamp of its latest news, not of its making."""
    a, b = _state(name="a"), _state(name="b")
    old = _trial(a, ME, 1, 1_000)  # made long ago, interrupted, and re-run here lately
    _event(a, old, ME, 2, "started", 1_000)
    stop = _event(a, old, ME, 3, "interrupted", 2_000)
    _event(a, old, ME, 4, "started", 3_000_000, supersedes=(stop.key,))
    _end(a, old, ME, 5, "completed", 3_000_100)
    mine = _trial(b, ME, 6, 2_000_000)
    _event(b, mine, ME, 7, "started", 2_000_000)
    _end(b, mine, ME, 8, "completed", 2_000_100)
    work = plan_work([a, b], ME, 1, set(), [ME], 3_001_000, 1_000, lambda s: True,
                     quiet_ms=lambda trial: 5_000)  # fmt: skip
    assert [w.experiment for w in work] == [b.key]


def test_trials_this_node_re_ran_before_a_crash_take_its_slots_before_new_points() -> None:
    """As test_a_restarted_peers_lost_trials_take_its_slots_before_another_experiments_new_points,
    for trials another node recorded and this one re-ran: their checkpoints are here (the
    runner's), whoever recorded them, so they go before another experiment's new point."""
    resumable, other = _state(name="b"), _state(name="a")
    cut = []
    for seq in (1, 10):
        t = _rerun_here(resumable, GONE, seq, 3_000)
        _event(resumable, t, ME, 100 + seq, "lost", 5_000)  # this peer restarted under it
        cut.append(t.key)
    assert {(t.state, t.runner) for t in resumable.trials()} == {("lost", ME)}
    _event(other, _trial(other, OTHER, 1, 2_000), OTHER, 30, "started", 2_000)
    work = _plan([resumable, other], ME, 2, set(), [ME, OTHER], 5_001, 2_000, lambda s: True)
    assert sorted(w.trial or b"new" for w in work) == sorted(cut)


def test_of_two_free_trials_first_in_line_the_one_whose_checkpoint_is_here_goes_first() -> None:
    """One free slot, two free trials this node is first in line for: one it ran itself (its
    checkpoint is here; the others wait a claim delay for it), one of a node that is gone (no
    checkpoint anywhere). The first is taken now: left for later, another peer takes it up a
    claim delay on and re-runs it from step 0."""
    live = [ME, OTHER]
    for seq in range(1, 200):
        state = _state(max_trials=2)  # (budget spent: only free trials to plan)
        theirs = _trial(state, GONE, seq)  # first in the replica's order
        if rendezvous_rank(ME, live, theirs.key) == 0:
            break
    _event(state, theirs, GONE, 1_000, "started", 1_000)
    _event(state, theirs, GONE, 1_001, "lost", 2_000)
    mine = _trial(state, ME, 1, 1_500)
    _event(state, mine, ME, 2, "started", 1_500)
    _event(state, mine, ME, 3, "lost", 5_000)
    assert next(t.key for t in state.trials()) == theirs.key
    work = _plan([state], ME, 1, set(), live, 5_001, 2_000, lambda s: True)
    assert [w.trial for w in work] == [mine.key]


def test_a_spent_experiment_with_trials_to_thaw_here_still_takes_its_turn() -> None:
    """An experiment in ``thawable`` (frozen trials of it here to thaw) takes a slot in its
    turn as a new point would, its budget spent or not: the slot stands for the thaw
    (Work(key, None)). Dropped, its frozen trials waited for a slot no turn gave them (a
    pure check of what test_node_schedule's thaw turns see through a real node)."""
    state = _state(max_trials=1)
    t = _trial(state, ME, 1)
    _event(state, t, ME, 2, "started", 1_000)
    _event(state, t, ME, 3, "frozen", 2_000)
    assert state.budget_spent

    def plan(thawable: frozenset[bytes]) -> list[Work]:
        return _plan([state], ME, 1, set(), [ME], 3_000, 1_000, lambda s: True, thawable=thawable)

    assert plan(frozenset()) == []
    assert [(w.experiment, w.trial) for w in plan(frozenset({state.key}))] == [(state.key, None)]
