"""Slot planning and lost-trial detection, as pure functions of the replica."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from crdt import Record
from metaopt._records import (
    CONTROL,
    EVENT,
    TRIAL,
    EventBody,
    ExperimentSpec,
    experiment_record,
    parse_experiment,
)
from metaopt._state import FROZEN_BY_HAND, ExperimentState, TrialView
from metaopt.peer._scheduler import (
    BACKOFF_AFTER,
    Work,
    backing_off,
    ended_here,
    failure_streak,
    find_lost,
    plan_work,
    rendezvous_rank,
    settle_rank,
    settle_wait,
)

ME = b"m" * 16
OTHER = b"o" * 16
THIRD = b"t" * 16
GONE = b"g" * 16  # a node no longer live: its trials go by rendezvous alone


def _state(max_trials: int | None = None, name: str = "e") -> ExperimentState:
    rec = experiment_record(
        ExperimentSpec(
            name=name, space={"x": "uniform(0, 1)"}, command=("t.py",), max_trials=max_trials
        )
    )
    spec = parse_experiment(rec)
    assert spec is not None
    return ExperimentState(rec.key, spec)


def _trial(state: ExperimentState, node: bytes, seq: int, time: int = 0) -> Record:
    body = {"params": {"x": seq / 100}, "node": node, "counter": seq}
    rec = Record.create(TRIAL, node, seq, time, body, [state.key])
    state.apply(rec)
    return rec


def _event(
    state: ExperimentState,
    trial: Record,
    node: bytes,
    seq: int,
    kind: str,
    time: int,
    supersedes: tuple[bytes, ...] = (),
) -> Record:
    body = EventBody(trial.key, state.key, kind, node, supersedes=supersedes).to_body()
    rec = Record.create(EVENT, node, seq, time, body, [trial.key, state.key])
    state.apply(rec)
    return rec


def _since(now: int) -> Callable[[TrialView], int]:
    """Quiet times as if each record had arrived at its stamp, ``now`` being a pass's time
    (a peer counts from the arrivals alone, see Replica.quiet_ms)."""
    return lambda trial: now - trial.last_seen


def _plan(*args: Any, **kw: Any) -> list[Work]:
    """plan_work (its arguments but quiet_ms), each record having arrived at its stamp, the
    pass's ``now_ms`` being the sixth argument (see _since)."""
    return plan_work(*args, quiet_ms=_since(args[5]), **kw)


def test_a_quiet_trial_of_a_dead_node_is_lost_but_not_of_a_live_one() -> None:
    state = _state()
    t = _trial(state, OTHER, 1)
    _event(state, t, OTHER, 2, "started", 1_000)
    args = (ME, _since(100_000), 60_000)
    assert [x.trial for x in find_lost([state], *args, lambda n: False, set())] == [t.key]
    assert find_lost([state], *args, lambda n: True, set()) == []
    assert find_lost([state], ME, _since(30_000), 60_000, lambda n: False, set()) == []


def test_own_trials_not_running_here_are_orphans() -> None:
    state = _state()
    t = _trial(state, ME, 1)
    _event(state, t, ME, 2, "started", 1_000)
    assert [
        x.trial for x in find_lost([state], ME, _since(2_000), 60_000, lambda n: True, set())
    ] == [t.key]
    assert find_lost([state], ME, _since(2_000), 60_000, lambda n: True, {t.key}) == []


def test_an_own_trial_never_started_is_lost_as_such() -> None:
    """Recorded, then its slot taken by a thaw before it started: it was lost with "its peer
    restarted while it ran", of a peer that had neither restarted nor run it."""
    state = _state()
    pending, ran = _trial(state, ME, 1), _trial(state, ME, 2)
    _event(state, ran, ME, 3, "started", 1_000)
    lost = find_lost([state], ME, _since(2_000), 60_000, lambda n: True, set())
    assert {x.trial: x.reason for x in lost} == {
        pending.key: "recorded here but never started",
        ran.key: "its peer restarted while it ran",
    }


def test_rendezvous_gives_one_claimer_rank_zero() -> None:
    nodes = [ME, OTHER, THIRD]
    trial = b"x" * 32
    ranks = sorted(rendezvous_rank(n, nodes, trial) for n in nodes)
    assert ranks == [0, 1, 2]


def test_peers_with_one_history_take_distinct_turns_to_record_and_the_order_moves() -> None:
    nodes = [ME, OTHER, THIRD]
    experiment = b"e" * 32
    for known in range(20):
        assert sorted(settle_rank(n, nodes, experiment, known) for n in nodes) == [0, 1, 2]
    assert settle_rank(ME, [ME], experiment, 5) == 0  # alone: no wait
    # No peer always waits longest: over successive histories each one is last sometimes.
    last = {next(n for n in nodes if settle_rank(n, nodes, experiment, k) == 2) for k in range(20)}
    assert last == set(nodes)


def test_turns_to_record_are_times_from_the_latest_trial_so_peers_asking_late_keep_apart() -> None:
    # With turns as delays from whenever a peer asked, a peer that recorded at once and asked
    # again for its second slot (a new rank at the new count) woke 1 ms from a peer still
    # waiting its turn at the old count: both recorded the same point. As times from when
    # the count was reached, two peers never record within half a turn of each other,
    # whenever each asks.
    nodes = [ME, OTHER, THIRD]
    experiment, since, turn = b"e" * 32, 1_000_000, 50
    for known in range(12):
        rank = {n: settle_rank(n, nodes, experiment, known) for n in nodes}
        for n in nodes:
            assert settle_wait(n, nodes, experiment, known, since, since, turn, 8) == rank[n] * turn
        records: dict[bytes, set[int]] = {n: set() for n in nodes}
        for now in range(since, since + 400, 7):  # asking at any moment, late ones too
            for n in nodes:
                wait = settle_wait(n, nodes, experiment, known, since, now, turn, 8)
                assert 0 <= wait < 3 * turn
                records[n].add(now + wait)
        for a in nodes:
            for b in nodes:
                if a != b:
                    assert min(abs(x - y) for x in records[a] for y in records[b]) >= turn // 2
    assert settle_wait(ME, [ME], experiment, 3, since, since + 9, turn, 8) == 0  # alone
    first = next(n for n in nodes if settle_rank(n, nodes, experiment, 0) == 0)
    assert settle_wait(first, nodes, experiment, 0, since, since + turn // 2, turn, 8) == 0
    late = settle_wait(first, nodes, experiment, 0, since, since + turn // 2 + 1, turn, 8)
    assert late == 3 * turn - turn // 2 - 1  # a wake too late waits for the next round
    # Past the cap, peers share turns: a round is never longer than 8 turns.
    many = [bytes([i]) * 16 for i in range(20)]
    waits = [settle_wait(n, many, experiment, 0, since, since + 1, turn, 8) for n in many]
    assert max(waits) < 8 * turn and len(set(waits)) == 8
    # A clock stepped back an hour: the peer slept that hour, holding the schedule lock.
    for n in nodes:
        assert settle_wait(n, nodes, experiment, 2, since, since - 3_600_000, turn, 8) <= 3 * turn


def test_an_experiment_that_may_not_suggest_still_gets_its_free_trials() -> None:
    state = _state()
    t = _trial(state, OTHER, 1)
    _event(state, t, OTHER, 2, "started", 1_000)
    _event(state, t, THIRD, 1, "lost", 2_000)

    def plan(may: bool) -> list[Work]:
        return _plan(
            [state], ME, 2, set(), [ME], 2_000, 1_000, lambda s: True, may_suggest=lambda s: may
        )

    assert [w.trial for w in plan(True)] == [t.key, None]
    assert [w.trial for w in plan(False)] == [t.key]


def test_a_freed_trial_waits_claim_delays_from_the_arrival_of_its_freeing_event() -> None:
    # Counted from the stamps, a trial freed by a peer whose clock ran behind was freed "long
    # ago" for every peer in line, and they all claimed it at once. The stamps do not count.
    state = _state()
    t = _trial(state, GONE, 1)
    _event(state, t, GONE, 2, "started", 1_000)
    _event(state, t, GONE, 3, "lost", 5_000)
    second = next(n for n in (OTHER, THIRD, b"x" * 16) if rendezvous_rank(n, [ME, n], t.key))

    def claims(me: bytes, now: int, quiet: int) -> list[bytes | None]:
        live = [ME, second]
        work = plan_work(
            [state], me, 1, set(), live, now, 1_000, lambda s: True, quiet_ms=lambda trial: quiet
        )
        return [w.trial for w in work]

    for now in (2_000, 5_000 + 3_600_000):  # stamped ahead of this clock, or an hour behind
        assert claims(ME, now, 0) == [t.key]  # the first in line at once
        assert claims(second, now, 999) == [None]  # the second waits its turn
        assert claims(second, now, 1_000) == [t.key]


def test_plan_respects_budget_and_claims_free_trials_first() -> None:
    state = _state(max_trials=3)
    t = _trial(state, OTHER, 1)
    _event(state, t, OTHER, 2, "started", 1_000)
    _event(state, t, THIRD, 1, "lost", 2_000)
    live = [ME]
    work = _plan([state], ME, 4, set(), live, 2_000, 1_000, lambda s: True)
    assert work[0].trial == t.key
    # one existing trial + two new points = the budget of 3
    assert [w.trial for w in work[1:]] == [None, None]
    assert _plan([state], ME, 4, set(), live, 2_000, 1_000, lambda s: False) == []


def test_a_higher_ranked_node_waits_its_turn() -> None:
    state = _state()
    t = _trial(state, OTHER, 1)
    _event(state, t, THIRD, 1, "lost", 10_000)
    live = [ME, OTHER, THIRD]
    rank = rendezvous_rank(ME, live, t.key)
    soon = _plan([state], ME, 1, set(), live, 10_000, 5_000, lambda s: True)
    later = _plan([state], ME, 1, set(), live, 10_000 + rank * 5_000, 5_000, lambda s: True)
    assert later[0].trial == t.key
    assert (soon[0].trial == t.key) == (rank == 0)


def test_a_trial_frozen_on_a_node_that_is_gone_is_lost() -> None:
    # Only its own node may thaw it: it used to stay frozen for ever and hold the experiment.
    state = _state()
    theirs, mine = _trial(state, OTHER, 1), _trial(state, ME, 2)
    for seq, (t, node) in enumerate(((theirs, OTHER), (mine, ME)), start=10):
        _event(state, t, node, seq, "started", 1_000)
        _event(state, t, node, seq + 10, "frozen", 2_000)
    gone = find_lost([state], ME, _since(100_000), 60_000, lambda n: False, set())
    assert [(x.trial, x.reason.split(",")[0]) for x in gone] == [
        (theirs.key, f"frozen on node {OTHER.hex()[:8]}")
    ]
    assert find_lost([state], ME, _since(100_000), 60_000, lambda n: True, set()) == []  # only slow
    assert find_lost([state], ME, _since(30_000), 60_000, lambda n: False, set()) == []  # not yet


def test_a_replica_not_caught_up_claims_no_free_trial_and_starts_no_new_one() -> None:
    state = _state()
    t = _trial(state, OTHER, 1)
    _event(state, t, OTHER, 2, "started", 1_000)
    _event(state, t, THIRD, 1, "lost", 2_000)
    laid_out: list[bytes] = []

    def runnable(s: ExperimentState) -> bool:
        laid_out.append(s.key)
        return True

    claim = _plan([state], ME, 2, set(), [ME], 9_000, 1_000, runnable)
    assert [w.trial for w in claim] == [t.key, None]
    # Its history may lack the stop of an experiment (a peer that joined started trials of
    # one stopped 16 minutes before), a budget's count (a restarted peer took a finished 8/8
    # to 9/8), or another peer's re-run of the free trial.
    budgeted = _state(max_trials=8)
    for states in ([state], [budgeted]):
        laid_out.clear()
        assert _plan(states, ME, 2, set(), [ME], 9_000, 1_000, runnable, claim_free=False) == []
        assert laid_out == [states[0].key]  # (its code is laid out meanwhile)


def test_three_experiments_on_two_peers_of_two_slots_each_all_run() -> None:
    # Seen on real peers: the slot a trial freed went back to its own experiment (0 running
    # here, tied with the starved one) by key order on every peer, and the experiment with the
    # highest key ran nothing while the two others ran two trials each.
    low, mid, high = sorted((_state(name=n) for n in "XYZ"), key=lambda s: s.key)
    here: set[bytes] = set()
    seq = {ME: 0, OTHER: 0}
    trials = {}
    for node, state in ((ME, low), (ME, mid), (OTHER, low), (OTHER, mid)):
        seq[node] += 1
        t = _trial(state, node, seq[node])
        _event(state, t, node, 100 + seq[node], "started", 1_000)
        if node == ME:
            here.add(t.key)
            trials[state.key] = t
    # ME's trial of `low` completes: its slot must go to `high`, not back to `low`.
    _event(low, trials[low.key], ME, 200, "completed", 2_000)
    here.discard(trials[low.key].key)
    for me in (ME, OTHER):  # on whichever peer the slot frees
        work = _plan([low, mid, high], me, 1, here if me == ME else set(), [ME, OTHER],
                         2_000, 1_000, lambda s: True)  # fmt: skip
        assert [w.experiment for w in work] == [high.key]


def test_a_stopped_experiment_gets_no_trial_and_its_code_is_not_laid_out() -> None:
    # `metaopt stop` before the budget is spent: no peer starts new trials for it, nor lays
    # out its code for them.
    state = _state(max_trials=8)
    _trial(state, OTHER, 1)
    state.apply(Record.create(CONTROL, OTHER, 2, 0, {"action": "stop"}, [state.key]))
    assert state.stopped and not state.budget_spent
    asked: list[bytes] = []
    for slots in (0, 2):
        work = _plan(
            [state], ME, slots, set(), [ME], 9_000, 1_000, lambda s: bool(asked.append(s.key))
        )
        assert (work, asked) == ([], [])


def _planned(state: ExperimentState, now: int) -> list[bytes]:
    """The experiments of the work planned for one free slot at ``now``."""
    work = _plan([state], ME, 1, set(), [ME], now, 1_000, lambda s: True)
    return [w.experiment for w in work]


def test_an_experiment_whose_runs_keep_failing_waits_longer_each_time() -> None:
    state = _state(name="broken")
    other = _state(name="fine")
    ended = 10_000
    for n in range(1, 7):
        t = _trial(state, ME, 2 * n - 1)
        _event(state, t, ME, 2 * n, "failed", ended)
        streak = failure_streak(state)
        assert streak == (n, ended)
        if n < BACKOFF_AFTER:
            assert _planned(state, ended) == [state.key]  # a failure or two: no wait
        else:
            wait = 1000 << (n - BACKOFF_AFTER)
            assert _planned(state, ended + wait - 1) == []
            assert _planned(state, ended + wait) == [state.key]
        ended += 100
    # A completion ends the streak; another experiment was never held back.
    t = _trial(state, ME, 100)
    body = EventBody(t.key, state.key, "completed", ME, None, {"objective": 0.5}).to_body()
    state.apply(Record.create(EVENT, ME, 101, ended, body, [t.key, state.key]))
    assert failure_streak(state) == (0, 0) and _planned(state, ended) == [state.key]
    assert _plan([other], ME, 1, set(), [ME], 0, 1_000, lambda s: True) != []


def test_failures_stamped_by_a_clock_ahead_hold_no_peer_back_longer() -> None:
    # Measured by stamps alone, failures stamped 100 s ahead held every other peer back
    # 100 s more than the wait: only the peer whose clock ran ahead started trials.
    state = _state(name="broken")
    ahead = 100_000
    for n in range(1, BACKOFF_AFTER + 1):
        t = _trial(state, OTHER, 2 * n - 1)
        _event(state, t, OTHER, 2 * n, "failed", 10_000 + ahead)
    now = 10_000  # the wall clock here, as the last failure arrives
    for arrived_ago, expected in ((0, []), (999, []), (1_000, [state.key])):
        work = plan_work([state], ME, 1, set(), [ME], now + arrived_ago, 1_000,
                         lambda s: True, quiet_ms=lambda trial, ago=arrived_ago: ago)  # fmt: skip
        assert [w.experiment for w in work] == expected


def test_an_experiment_with_no_work_left_is_not_asked_whether_it_can_run() -> None:
    # Asking materialises its code: a peer that joined late wrote the bundles of 25 finished
    # experiments (1.4 GB), and one whose bundle disk was read-only warned twice a second.
    done = _state(max_trials=1, name="done")
    t = _trial(done, OTHER, 1)
    _event(done, t, OTHER, 2, "completed", 1_000)
    lost = _state(max_trials=1, name="lost")
    t = _trial(lost, OTHER, 1)
    _event(lost, t, OTHER, 2, "lost", 1_000)
    asked: list[str] = []

    def runnable(state: ExperimentState) -> bool:
        asked.append(state.spec.name)
        return True

    _plan([done, lost, _state(name="open")], ME, 2, set(), [ME], 2_000, 1_000, runnable)
    assert sorted(asked) == ["lost", "open"]
    # Asked with every slot busy too, so the code of a new experiment is laid out before a
    # slot frees: asked only then, every peer gave its first free slot to an older one.
    asked.clear()
    assert _plan([done, lost, _state(name="new")], ME, 0, set(), [ME], 2_000, 1_000, runnable) == []
    assert asked == ["new"]  # (not a spent one: the trials of each are not scanned then)


def test_a_trial_frozen_by_hand_on_a_node_that_is_gone_waits_for_the_user() -> None:
    # README: "a pause only you end"; it was re-run elsewhere from step 0 a minute after its
    # peer stopped, and the reason said "gone 437 s" of a peer gone 30 s (quiet since the freeze).
    state = _state()
    by_hand, auto = _trial(state, OTHER, 1), _trial(state, OTHER, 2)
    for seq, t in enumerate((by_hand, auto), start=10):
        _event(state, t, OTHER, seq, "started", 1_000)
    for seq, (t, why) in enumerate(((by_hand, FROZEN_BY_HAND), (auto, None)), start=20):
        body = EventBody(t.key, state.key, "frozen", OTHER, 3, reason=why).to_body()
        state.apply(Record.create(EVENT, OTHER, seq, 2_000, body, [t.key, state.key]))
    gone = find_lost([state], ME, _since(500_000), 60_000, lambda n: False, set())
    assert [(x.trial, x.reason) for x in gone] == [
        (auto.key, f"frozen on node {OTHER.hex()[:8]}, which went away")
    ]


def test_a_dead_runner_whose_clock_ran_ahead_is_lost_on_this_nodes_clock() -> None:
    # Its heartbeats were stamped an hour ahead: its trial read "running" (node silent 0 s)
    # for that hour after it died, and a loss noticed meanwhile sorted before them.
    state = _state()
    t = _trial(state, OTHER, 1, time=3_600_000)
    _event(state, t, OTHER, 2, "started", 3_601_000)
    _event(state, t, OTHER, 3, "heartbeat", 3_610_000)
    view = state.trial(t.key)
    assert view is not None and view.last_seen == 3_610_000
    heard = {t.key: 10_000}  # when this node received its last record, by its own clock

    def since_heard(now: int) -> Callable[[TrialView], int]:
        return lambda trial: now - heard[trial.key]

    assert find_lost([state], ME, since_heard(50_000), 60_000, lambda n: False, set()) == []
    [lost] = find_lost([state], ME, since_heard(71_000), 60_000, lambda n: False, set())
    assert lost.reason == f"no news from node {OTHER.hex()[:8]} for 61 s"
    assert lost.after is not None and lost.after == view.latest  # its last heartbeat
    body = EventBody(t.key, state.key, "lost", ME, reason=lost.reason, after=lost.after)
    loss = Record.create(EVENT, ME, 1, 71_000, body.to_body(), [t.key, state.key])
    state.apply(loss)
    view = state.trial(t.key)
    assert view is not None and view.state == "lost"  # after all it had seen, not at 71 s
    # Its re-run here answers the loss: it runs, and here, though stamped before the dead
    # runner's start.
    rerun = EventBody(t.key, state.key, "started", ME, supersedes=(loss.key,)).to_body()
    state.apply(Record.create(EVENT, ME, 2, 72_000, rerun, [t.key, state.key]))
    view = state.trial(t.key)
    assert view is not None and (view.state, view.runner) == ("running", ME)


def _freed_last_by_hash(
    runner: bytes, live: list[bytes], kind: str
) -> tuple[ExperimentState, Record]:
    """A one-trial experiment (budget spent: no new point to plan) whose trial ``runner`` ran
    and that is now free (``kind``: lost or interrupted), picked so that the rendezvous hash
    alone ranks ``runner`` last among ``live``."""
    for seq in range(1, 1000):
        state = _state(max_trials=1)
        t = _trial(state, runner, seq)
        if rendezvous_rank(runner, live, t.key) == len(live) - 1:
            _event(state, t, runner, 1_000 + seq, "started", 1_000)
            _event(state, t, runner, 2_000 + seq, kind, 10_000)
            return state, t
    raise AssertionError("no trial ranks its runner last")


def _claims(state: ExperimentState, me: bytes, now: int, live: list[bytes]) -> list[bytes | None]:
    work = _plan([state], me, 1, set(), live, now, 1_000, lambda s: True)
    return [w.trial for w in work]


def test_the_last_runner_of_a_free_trial_claims_it_first_and_the_others_a_turn_later() -> None:
    # A peer killed -9 and restarted at once marked its own trial lost, and another peer,
    # first by the hash, re-ran it from step 0 while the restarted peer, holding its
    # checkpoint, sat idle. Only the runner can see its checkpoint; all can see who ran it.
    live = [ME, OTHER, THIRD]
    for kind in ("lost", "interrupted"):
        state, t = _freed_last_by_hash(ME, live, kind)
        assert _claims(state, ME, 10_000, live) == [t.key]
        assert _claims(state, ME, 10_000, [ME]) == [t.key]  # restarted, it may know no peer yet
        first, second = sorted((OTHER, THIRD), key=lambda n: rendezvous_rank(n, live, t.key))
        # The others wait a turn for it, then take it in their order (it may have no free
        # slot, or be gone without a word).
        assert _claims(state, first, 10_000, live) == _claims(state, second, 10_000, live) == []
        assert _claims(state, first, 11_000, live) == [t.key]
        assert _claims(state, second, 11_000, live) == []
        assert _claims(state, second, 12_000, live) == [t.key]
        # Once it is gone the hash alone decides: the first of the others claims at once.
        assert _claims(state, first, 10_000, [OTHER, THIRD]) == [t.key]


def _fail(state: ExperimentState, n: int, ended: int) -> None:
    """``n`` trials of this node, each failed at ``ended``."""
    for i in range(1, n + 1):
        _event(state, _trial(state, ME, 2 * i - 1), ME, 2 * i, "failed", ended)


def test_readme_three_failures_wait_a_second_and_the_wait_stops_at_a_minute() -> None:
    # README: "When an experiment's last three trials have all failed, its next trial waits
    # 1 s after the latest failure, and each further failure doubles the wait up to a minute".
    # Uncapped, 20 failures in a row would hold the experiment back 18 hours.
    two = _state(name="two")
    _fail(two, 2, 10_000)
    assert _planned(two, 10_000) == [two.key]
    three = _state(name="three")
    _fail(three, 3, 10_000)
    assert _planned(three, 10_999) == [] and _planned(three, 11_000) == [three.key]
    many = _state(name="many")
    _fail(many, 20, 10_000)
    assert _planned(many, 10_000 + 59_999) == []
    assert _planned(many, 10_000 + 60_000) == [many.key]


def test_a_kill_between_failures_neither_breaks_nor_extends_the_streak() -> None:
    # Counted as a failure, an early stopper's kills alone would hold a healthy experiment
    # back; counted as a success, they would hide a script that keeps failing.
    state = _state()
    seq = 0
    for kind, ended in (("failed", 1_000), ("failed", 2_000), ("killed", 3_000), ("failed", 4_000)):
        seq += 2
        _event(state, _trial(state, ME, seq - 1), ME, seq, kind, ended)
    assert failure_streak(state) == (3, 4_000)


def _rerun(state: ExperimentState, creator: bytes, runner: bytes) -> Record:
    """A trial ``creator`` recorded and ran, lost, and now re-run by ``runner``."""
    t = _trial(state, creator, 1)
    _event(state, t, creator, 2, "started", 1_000)
    loss = _event(state, t, THIRD, 1, "lost", 2_000)
    _event(state, t, runner, 3, "started", 3_000, supersedes=(loss.key,))
    view = state.trial(t.key)
    assert view is not None and (view.state, view.runner) == ("running", runner)
    return t


def test_a_rerun_is_owned_by_its_runner_not_by_the_node_that_recorded_it() -> None:
    # Re-run here after its creator lost it, and this peer restarted: it no longer runs it,
    # so it is lost at once. Owned by its creator, it would read "running" for as long as the
    # creator lives, and never run again.
    state = _state()
    t = _rerun(state, OTHER, ME)
    lost = find_lost([state], ME, _since(3_500), 60_000, lambda n: True, set())
    assert [x.trial for x in lost] == [t.key]
    # Created here but re-run by a live peer: not this peer's orphan, though it does not run
    # it here (taken for one, it would be marked lost beside its live re-run).
    state = _state()
    _rerun(state, ME, OTHER)
    assert find_lost([state], ME, _since(3_500), 60_000, lambda n: True, set()) == []


def test_a_free_trial_still_running_here_is_not_claimed_again() -> None:
    # Marked lost by a peer that could not reach this one while this one still runs it:
    # claimed again, a second copy would run on this node beside the first.
    state = _state(max_trials=1)  # (budget spent: no new point either)
    t = _trial(state, ME, 1)
    _event(state, t, ME, 2, "started", 1_000)
    _event(state, t, OTHER, 1, "lost", 2_000)
    view = state.trial(t.key)
    assert view is not None and view.state == "lost"
    assert _plan([state], ME, 1, {t.key}, [ME, OTHER], 9_000, 1_000, lambda s: True) == []


def test_slots_go_first_to_the_experiment_with_fewest_trials_running_here() -> None:
    # `busy` runs one trial here; `crowded` none here, but two on another peer and two
    # finished: the fewest running *here* comes first (else this peer's slots would all go
    # to one experiment while another ran nothing here), then the fewest running anywhere.
    busy, crowded = _state(name="busy"), _state(name="crowded")
    mine = _trial(busy, ME, 1)
    _event(busy, mine, ME, 2, "started", 1_000)
    for seq in range(1, 5):
        t = _trial(crowded, OTHER, seq)
        _event(crowded, t, OTHER, 10 + seq, "started" if seq <= 2 else "completed", 1_000)
    work = _plan([busy, crowded], ME, 1, {mine.key}, [ME, OTHER], 2_000, 1_000, lambda s: True)
    assert [w.experiment for w in work] == [crowded.key]


def test_the_slots_of_one_pass_are_shared_between_experiments() -> None:
    # Both run nothing here; `quiet` runs nothing anywhere, `loud` 3 trials on another peer.
    # `quiet` takes the first slot and then runs one here: the second goes to `loud` (not
    # counted, every slot of the pass went to `quiet`).
    quiet, loud = _state(name="quiet"), _state(name="loud")
    for seq in range(1, 4):
        _event(loud, _trial(loud, OTHER, seq), OTHER, 10 + seq, "started", 1_000)
    work = _plan([quiet, loud], ME, 2, set(), [ME, OTHER], 2_000, 1_000, lambda s: True)
    assert [w.experiment for w in work] == [quiet.key, loud.key]


def test_one_slot_goes_to_each_experiment_in_turn() -> None:
    """Each time the slot frees both experiments run nothing: the same one (by the node's own
    order) took every trial, and one submitted beside it ran none (0 in 40 s, against 110,
    on a real peer of one slot). It now goes to the one this node ran longest ago."""
    a, b = _state(name="a"), _state(name="b")
    seq, picks = 0, {a.key: 0, b.key: 0}
    for _ in range(20):
        now = 1_000_000 + seq * 1_000
        [work] = _plan([a, b], ME, 1, set(), [ME], now, 1_000, lambda s: True)
        state = a if work.experiment == a.key else b
        picks[state.key] += 1
        trial = _trial(state, ME, seq := seq + 1, now)  # it runs and completes
        _event(state, trial, ME, seq := seq + 1, "started", now + 1)
        done = EventBody(trial.key, state.key, "completed", ME, metrics={"objective": 0.5})
        state.apply(Record.create(EVENT, ME, seq := seq + 1, now + 2, done.to_body(),
                                  [trial.key, state.key]))  # fmt: skip
    assert picks == {a.key: 10, b.key: 10}


def test_re_runs_of_old_trials_take_turns_with_a_new_experiment() -> None:
    """A re-run (of a trial interrupted an hour ago, or a thaw) kept the trial's first start
    as this node's last turn of it: its experiment looked served long ago after each re-run
    and took every turn but one of 8."""
    a, b = _state(name="a"), _state(name="b")
    seq, interrupted = 0, {}
    for _ in range(6):  # a ran 6 trials here an hour ago; the peer stopped under them
        t = _trial(a, ME, seq := seq + 1, 1_000)
        _event(a, t, ME, seq := seq + 1, "started", 1_000)
        _event(a, t, ME, seq := seq + 1, "interrupted", 2_000)
        interrupted[t.key] = t
    picks = []
    for turn in range(8):
        now = 3_600_000 + turn * 1_000
        [work] = _plan([a, b], ME, 1, set(), [ME], now, 1_000, lambda s: True)
        state = a if work.experiment == a.key else b
        picks.append(state.spec.name)
        trial = interrupted[work.trial] if work.trial else _trial(state, ME, seq := seq + 1, now)
        _event(state, trial, ME, seq := seq + 1, "started", now + 1)
        done = EventBody(trial.key, state.key, "completed", ME, metrics={"objective": 0.5})
        state.apply(Record.create(EVENT, ME, seq := seq + 1, now + 2, done.to_body(),
                                  [trial.key, state.key]))  # fmt: skip
    assert picks.count("a") == picks.count("b") == 4, "".join(picks)


def test_a_slot_planned_in_this_pass_counts_as_running_anywhere_too() -> None:
    # `x` runs nothing here and one trial elsewhere; `y` one trial here. `x` takes the first
    # slot; then both run one here, and `x` more anywhere (2 against 1): the second slot goes
    # to `y`, on every node, whatever the node's own order of the two (not counted, some
    # nodes gave both slots to `x`).
    x, y = _state(name="x"), _state(name="y")
    _event(x, _trial(x, OTHER, 1), OTHER, 10, "started", 1_000)
    mine = _trial(y, THIRD, 1)
    _event(y, mine, THIRD, 10, "started", 1_000)
    for me in (b"a" * 16, b"b" * 16, b"c" * 16, b"d" * 16, b"e" * 16):
        work = _plan([x, y], me, 2, {mine.key}, [me, OTHER], 2_000, 1_000, lambda s: True)
        assert [w.experiment for w in work] == [x.key, y.key]


def test_a_node_alone_never_waits_for_a_turn() -> None:
    # Alone (or knowing no peer yet), a peer waited up to a turn before each new point, for
    # nobody to hear of it.
    experiment, since, turn = b"e" * 32, 1_000_000, 50
    for now in range(since, since + 3 * turn, 7):
        assert settle_wait(ME, [ME], experiment, 3, since, now, turn, 8) == 0
        assert settle_wait(ME, [], experiment, 3, since, now, turn, 8) == 0


def test_no_turns_when_the_turn_is_zero() -> None:
    # --timing settle=0 means no settling: not a division by a zero round.
    experiment, since = b"e" * 32, 1_000_000
    for now in (since - 5, since, since + 7):
        assert settle_wait(ME, [ME, OTHER, THIRD], experiment, 3, since, now, 0, 8) == 0


def test_peers_freed_at_once_after_every_claim_delay_re_run_different_free_trials() -> None:
    # Every slot busy while the claim delays passed, two peers freed one each at once: both
    # took the first free trial in the replica's order and ran it side by side (a soak of 3
    # real peers, 1 of 25 re-claims). Each takes the one it is earliest in line for.
    live = [ME, OTHER, THIRD]
    for seq in range(1, 50):
        state = _state(max_trials=2)  # (the budget spent: only free trials to plan)
        a, b = _trial(state, GONE, seq), _trial(state, GONE, seq + 50)
        if rendezvous_rank(OTHER, live, a.key) == 0 and rendezvous_rank(THIRD, live, b.key) == 0:
            break
    for t, n in ((a, 1), (b, 2)):
        _event(state, t, GONE, 1_000 + n, "started", 1_000)
        _event(state, t, GONE, 2_000 + n, "lost", 10_000)
    assert {t.state for t in state.trials()} == {"lost"}
    for node, first_in_line in ((OTHER, a), (THIRD, b)):
        work = _plan([state], node, 1, set(), live, 20_000, 1_000, lambda s: True)
        assert [w.trial for w in work] == [first_in_line.key]


def test_peers_freed_at_once_re_run_different_free_trials_of_two_experiments() -> None:
    # As above, the two free trials of two experiments (a peer that ran both is gone), each
    # peer first in line for one: each put the same experiment first by its own order, and
    # both re-ran its trial while the other waited (a review of the day's fixes).
    live = [ME, OTHER, THIRD]
    for i in range(200):
        e1, e2 = _state(max_trials=1, name=f"a{i}"), _state(max_trials=1, name=f"b{i}")
        a, b = _trial(e1, GONE, 1), _trial(e2, GONE, 2)
        first = {
            n: min((e1, e2), key=lambda s: hashlib.blake2b(n + s.key, digest_size=8).digest())
            for n in (OTHER, THIRD)
        }
        if (
            rendezvous_rank(OTHER, live, a.key) == 0
            and rendezvous_rank(THIRD, live, b.key) == 0
            and first[OTHER] is first[THIRD] is e1
        ):
            break
    for state, t, n in ((e1, a, 1), (e2, b, 2)):
        _event(state, t, GONE, 1_000 + n, "started", 1_000)
        _event(state, t, GONE, 2_000 + n, "lost", 10_000)
    assert {t.state for s in (e1, e2) for t in s.trials()} == {"lost"}
    for node, first_in_line in ((OTHER, a), (THIRD, b)):
        work = _plan([e1, e2], node, 1, set(), live, 20_000, 1_000, lambda s: True)
        assert [w.trial for w in work] == [first_in_line.key]


def test_a_restarted_peers_lost_trials_take_its_slots_before_another_experiments_new_points() -> (
    None
):
    """A peer restarted after a crash re-runs its own cut-short trials itself, from their
    checkpoints (README), also while another experiment is active: its slots go to them first,
    not to new points of the other experiment (their rank-1 claimer, another peer, would re-run
    them from step 0 once a claim delay had passed; 3 of 3 real runs)."""
    resumable, other = _state(name="b"), _state(name="a")
    cut = []
    for seq in (1, 2):  # both slots ran trials of `b` when the peer was killed -9
        t = _trial(resumable, ME, seq, 1_000)
        _event(resumable, t, ME, 10 + seq, "started", 1_000)
        _event(resumable, t, ME, 20 + seq, "lost", 5_000)  # "its peer restarted while it ran"
        cut.append(t.key)
    assert {t.state for t in resumable.trials()} == {"lost"}
    # `a`, submitted meanwhile, has one trial running on the other peer.
    _event(other, _trial(other, OTHER, 1, 2_000), OTHER, 30, "started", 2_000)
    work = _plan([resumable, other], ME, 2, set(), [ME, OTHER], 5_001, 2_000, lambda s: True)
    assert sorted(w.trial or b"new" for w in work) == sorted(cut), [
        ("b" if w.experiment == resumable.key else "a", w.trial and w.trial.hex()[:8]) for w in work
    ]


AHEAD = 90_000  # OTHER's clock runs 90 s ahead (peers accept up to 120 s)


@pytest.mark.parametrize("seen_from", ["ME", "OTHER"])
def test_a_completion_after_another_peers_failures_ends_the_wait_whatever_its_clock(
    seen_from: str,
) -> None:
    # README: "When an experiment's last three trials have all failed, its next trial waits
    # ... a trial that completes ends the wait". OTHER (clock 90 s ahead; its script fails
    # there, say a missing driver) fails six trials at real times 1..6 s; then ME completes
    # one at real 7 s. By real time the latest trial completed, so no peer should wait: not
    # ME, nor OTHER, which by its own stamps (a review of the session's fixes) held itself
    # back, counting ME's completion at its stamp. Each peer knows the other's clock offset
    # from the other's requests (RequestLags.offset).
    state = _state(name="e")
    arrived: dict[bytes, int] = {}  # real ms of arrival (at either peer: at once)
    for n in range(1, 7):
        t = _trial(state, OTHER, 2 * n - 1, n * 1000 + AHEAD)
        _event(state, t, OTHER, 2 * n, "failed", n * 1000 + AHEAD)
        arrived[t.key] = n * 1000
    t = _trial(state, ME, 1, 6_500)
    body = EventBody(t.key, state.key, "completed", ME, None, {"objective": 0.5}).to_body()
    state.apply(Record.create(EVENT, ME, 2, 7_000, body, [t.key, state.key]))
    arrived[t.key] = 7_000
    real_now = 7_000
    node, now = (ME, real_now) if seen_from == "ME" else (OTHER, real_now + AHEAD)
    offsets = {ME: 0, OTHER: -AHEAD} if seen_from == "ME" else {ME: AHEAD, OTHER: 0}

    def quiet_ms(trial: TrialView) -> int:
        return real_now - arrived[trial.key]

    work = plan_work([state], node, 1, set(), [ME, OTHER], now, 1_000, lambda s: True,
                     quiet_ms=quiet_ms, offset_ms=offsets.__getitem__)  # fmt: skip
    # (As the peer counts it for its warning.)
    streak = failure_streak(state, ended_here(now, quiet_ms, offsets.__getitem__))
    assert [w.experiment for w in work] == [state.key], f"held back: failure streak {streak}"
    assert streak[0] == 0


def test_failures_delivered_at_a_heal_do_not_follow_a_later_completion() -> None:
    # Clocks in sync. Cut off from ME, OTHER fails nine trials at 10..18 s (its script crashes
    # there); ME completes one at 20 s. The partition heals at 25 s and OTHER's failures arrive
    # here then. By every clock the latest end is ME's completion: no wait (README: a trial
    # that completes ends the wait). Ordered by arrival (a review of the session's fixes),
    # they held ME back.
    state = _state(name="e")
    arrived: dict[bytes, int] = {}
    for n in range(9):
        t = _trial(state, OTHER, 2 * n + 1, 9_000 + n * 1000)
        _event(state, t, OTHER, 2 * n + 2, "failed", 10_000 + n * 1000)
        arrived[t.key] = 25_000  # delivered at the heal
    t = _trial(state, ME, 1, 19_000)
    body = EventBody(t.key, state.key, "completed", ME, None, {"objective": 0.5}).to_body()
    state.apply(Record.create(EVENT, ME, 2, 20_000, body, [t.key, state.key]))
    arrived[t.key] = 20_000
    now = 26_000

    def quiet_ms(trial: TrialView) -> int:
        return now - arrived[trial.key]

    work = plan_work([state], ME, 1, set(), [ME, OTHER], now, 1_000, lambda s: True,
                     quiet_ms=quiet_ms)  # fmt: skip
    streak = failure_streak(state, ended_here(now, quiet_ms))
    assert [w.experiment for w in work] == [state.key], f"held back: failure streak {streak}"


def test_an_ntp_step_back_does_not_make_this_nodes_earlier_failures_its_latest() -> None:
    # NTP steps ME's clock back 100 s (within what peers accept). For the next 100 s the
    # writer holds every stamp at the last one (NodeWriter.now_ms), so ME's records tie. ME
    # then fails six trials and afterwards completes three: by what happened (ME's seq
    # order) the latest trials completed, so the streak is 0.
    from crdt import MemoryStore
    from metaopt._writer import NodeWriter

    state = _state(name="e")
    now = [1_000_100.0]
    writer = NodeWriter(MemoryStore(), ME, lambda: now[0])
    writer.write(TRIAL, {"params": {"x": 0.99}, "node": ME, "counter": 0}, [state.key])
    now[0] -= 100.0  # the step back
    for i, kind in enumerate(["failed"] * 6 + ["completed"] * 3, start=1):
        now[0] += 1.0
        t = writer.write(TRIAL, {"params": {"x": i / 100}, "node": ME, "counter": i}, [state.key])
        state.apply(t)
        metrics = {"objective": 0.5} if kind == "completed" else {}
        body = EventBody(t.key, state.key, kind, ME, None, metrics).to_body()
        state.apply(writer.write(EVENT, body, [t.key, state.key]))
    # (Minor: the wait itself is then bounded by the oldest tied failure's quiet time.)
    assert failure_streak(state)[0] == 0, f"streak {failure_streak(state)}"


def test_after_a_clock_step_back_one_slot_still_takes_each_experiment_in_turn() -> None:
    """A peer of one slot runs experiments x and y in turn; NTP steps its clock back 2 h. Its
    writer then stamps from clock + 1 h, below y's last trial's stamps, and by stamps x's new
    trials never made x served later than y: x took every slot, for 2 h (README: one slot
    takes each experiment in turn; a review of the session's fixes)."""
    from crdt import MemoryStore
    from metaopt._writer import NodeWriter

    x, y = _state(name="x"), _state(name="y")
    clock = [1_000_000.0]
    mono = [0]  # this node's monotonic clock (ms), which no step moves
    arrived: dict[bytes, int] = {}
    writer = NodeWriter(MemoryStore(), ME, lambda: clock[0])
    states = {x.key: x, y.key: y}
    taken: list[str] = []
    for i in range(8):
        if i == 2:
            clock[0] -= 7200.0  # the step back
        work = plan_work([x, y], ME, 1, set(), [ME], int(clock[0] * 1000), 1_000,
                         lambda s: True, quiet_ms=lambda t: mono[0] - arrived[t.key])  # fmt: skip
        assert len(work) == 1
        state = states[work[0].experiment]
        taken.append(state.spec.name)
        t = writer.write(TRIAL, {"params": {"x": (i + 1) / 100}, "node": ME, "counter": i + 1},
                         [state.key])  # fmt: skip
        state.apply(t)
        for kind in ("started", "completed"):
            clock[0] += 1.0
            mono[0] += 1000
            metrics = {"objective": 0.5} if kind == "completed" else {}
            body = EventBody(t.key, state.key, kind, ME, None, metrics).to_body()
            state.apply(writer.write(EVENT, body, [t.key, state.key]))
            arrived[t.key] = mono[0]
    assert sorted(taken[2:]) == ["x"] * 3 + ["y"] * 3, taken


def test_after_the_wait_of_a_failure_streak_one_trial_tries_again_at_a_time() -> None:
    # The wait over, every free slot of every peer started a trial at once (2 of 2 slots; 3
    # peers alike): README says the next trial waits, and each further failure doubles it.
    state = _state(name="broken")
    for n in range(1, BACKOFF_AFTER + 1):
        t = _trial(state, ME, 2 * n - 1, time=10_000)
        _event(state, t, ME, 2 * n, "failed", 10_000)
    after_wait = 10_000 + 1_000
    assert _planned(state, after_wait - 1) == []
    plan = _plan([state], ME, 2, set(), [ME], after_wait, 1_000, lambda s: True)
    assert [w.experiment for w in plan] == [state.key]  # one of the two free slots
    # Its trial made (here or by another peer) and running: the next waits for its end, or
    # as long as the wait, whichever first (a good retry running an hour held the slots idle).
    trying = _trial(state, OTHER, 50, time=after_wait)
    _event(state, trying, OTHER, 51, "started", after_wait)
    assert backing_off(state, after_wait + 500, _since(after_wait + 500))
    assert _planned(state, after_wait + 500) == []
    assert _planned(state, after_wait + 1_000) == [state.key]
    # It fails too: the wait doubles, then one tries again.
    _event(state, trying, OTHER, 52, "failed", after_wait + 600)
    assert _planned(state, after_wait + 600 + 1_999) == []
    assert _planned(state, after_wait + 600 + 2_000) == [state.key]
    # A run made before the latest failure still running holds nothing back, even one made
    # during the streak (a good configuration running for an hour kept the slots idle).
    for seq, made in ((70, 5_000), (72, after_wait + 550)):
        early = _trial(state, ME, seq, time=made)
        _event(state, early, ME, seq + 1, "started", made)
    assert _planned(state, after_wait + 600 + 2_000) == [state.key]


def test_a_run_made_just_after_the_last_failure_is_not_the_retry() -> None:
    # Made 0.1 s after the streak's last failure (by a peer that had not heard of it yet, or
    # within a clock offset's error), it is no retry made after the wait: it does not hold
    # the next one back once the wait is over.
    state = _state(name="broken")
    for n in range(1, BACKOFF_AFTER + 1):
        t = _trial(state, ME, 2 * n - 1, time=10_000)
        _event(state, t, ME, 2 * n, "failed", 10_000)
    early = _trial(state, OTHER, 50, time=10_100)
    _event(state, early, OTHER, 51, "started", 10_100)
    assert _planned(state, 10_999) == []
    assert _planned(state, 11_000) == [state.key]  # the 1 s wait is over


def test_a_retry_made_by_a_clock_ahead_holds_the_others_one_wait_by_this_clock() -> None:
    # By the stamps of a peer 90 s ahead, its retry held the other peers' free slots 69 s
    # instead of the 1 s wait (a review); by this node's clock, one wait.
    state = _state(name="broken")
    for n in range(1, BACKOFF_AFTER + 1):
        t = _trial(state, ME, 2 * n - 1, time=10_000)
        _event(state, t, ME, 2 * n, "failed", 10_000)
    ahead = 90_000
    retry = _trial(state, OTHER, 50, time=11_000 + ahead)  # made by a clock 90 s ahead
    _event(state, retry, OTHER, 51, "started", 11_000 + ahead)

    def planned(now: int, offsets: dict[bytes, int]) -> list[bytes]:
        plan = _plan(
            [state], ME, 1, set(), [ME, OTHER], now, 1_000, lambda s: True,
            offset_ms=lambda node: offsets.get(node, 0),
        )  # fmt: skip
        return [w.experiment for w in plan]

    told = {OTHER: -ahead}  # what to add to its stamps (see RequestLags.offset)
    assert planned(11_500, told) == []  # held: the retry is young by this clock
    assert planned(12_000, told) == [state.key]  # one wait on
