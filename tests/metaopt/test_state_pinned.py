"""Fold rules a mutation audit of metaopt/_state.py found unpinned by the other tests."""

from __future__ import annotations

import pytest

from crdt import Record
from metaopt._records import CONTROL, EVENT, EventBody
from tests.metaopt.test_state import (
    NODE_A,
    NODE_B,
    NODE_C,
    Log,
    _forged,
    _only,
    _spec,
    _views,
)


def _started_on_a() -> tuple[Log, Record, Record]:
    """A trial of NODE_A's, and its start there at 1000."""
    log = Log()
    t = log.trial(NODE_A, 0.5)
    return log, t, log.event(t, NODE_A, "started", 1000)


def _event_at_seq(
    log: Log, trial: Record, node: bytes, kind: str, time: int, seq: int, **kw: object
) -> Record:
    """An event with the seq its writer chose (a hostile writer's order, not the log's)."""
    body = EventBody(trial.key, log.experiment.key, kind, node, **kw).to_body()  # type: ignore[arg-type]
    rec = Record.create(EVENT, node, seq, time, body, [trial.key, log.experiment.key])
    log.records.append(rec)
    return rec


def test_verdicts_of_one_rank_in_one_millisecond_are_decided_by_the_smaller_key() -> None:
    # Pins the (time, key) tie-break among killed and failed: not the writers' order, which
    # would make the verdict depend on which node's id sorts first.
    for i in range(64):
        log, t, _ = _started_on_a()
        kill = log.event(t, NODE_A, "killed", 2000, reason=f"killed by the user {i}")
        failure = log.event(t, NODE_B, "failed", 2000, exit_code=1, reason="boom")
        if failure.key < kill.key:  # the key and the writers' order disagree
            break
    else:
        pytest.fail("no kill found whose key sorts after the failure's")
    for records in (log.records, list(reversed(log.records))):
        view = _only(log.state(records))
        assert (view.state, view.reason, view.exit_code) == ("failed", "boom", 1)


def test_a_writers_order_adds_no_time_to_its_events() -> None:
    # Pins the weight 0 of the seq-order links: B's start and report in one millisecond keep
    # that millisecond, so A's loss a millisecond later comes after the report whether or not
    # the loss names what it follows (a causal link: the slow path agrees with the fast one).
    for linked in (False, True):
        log = Log()
        t = log.trial(NODE_B, 0.5)
        started = log.event(t, NODE_B, "started", 1000)
        log.event(t, NODE_B, "progress", 1000, step=1, metrics={"objective": 0.5})
        log.event(t, NODE_A, "lost", 1001, after=started.key if linked else None)
        assert _only(log.state()).state == "lost", linked


@pytest.mark.parametrize(
    ("named", "answer", "expected"),
    [
        ("lost", "started", "running"),
        ("lost", "thawed", "running"),
        ("interrupted", "started", "running"),
        ("frozen", "started", "frozen"),  # only a free event is answered
    ],
)
def test_inside_a_cycle_of_links_a_restart_still_answers_the_free_event_it_names(
    named: str, answer: str, expected: str
) -> None:
    # Pins TrialFold's answered set, which outside a cycle the links already imply: C wrote
    # its free event at seq 2 and then a (re)start at seq 1 naming it, a cycle with its seq
    # order. Inside it the links are ignored and the stamps put the free event last; the
    # start still answers a loss or an interruption, and never a freeze.
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.event(t, NODE_A, "started", 500)
    freed = _event_at_seq(log, t, NODE_C, named, 2000, 2, step=1)
    _event_at_seq(log, t, NODE_C, answer, 1000, 1, step=1, supersedes=(freed.key,))
    for records in (log.records, list(reversed(log.records))):
        assert _only(log.state(records)).state == expected


def test_every_loss_in_effect_is_listed_as_a_free_event_latest_last() -> None:
    # Pins free_events accumulating: two peers each took the run for lost, and a re-run
    # answers both (naming only the last left the other to free the trial again).
    log, t, started = _started_on_a()
    first = log.event(t, NODE_B, "lost", 5000, after=started.key)
    second = log.event(t, NODE_C, "lost", 5100, after=started.key)
    view = _only(log.state())
    assert (view.state, view.free_events) == ("lost", (first.key, second.key))


def test_a_thaw_taken_over_by_another_node_carries_its_resume_step() -> None:
    # Pins that a thaw's step counts as reported: B thaws A's frozen trial from step 8 (A is
    # gone); B's run has no report yet, and its last step read 0, so the next freeze and thaw
    # resumed it from 0.
    log, t, _ = _started_on_a()
    log.event(t, NODE_A, "progress", 1100, step=8, metrics={"objective": 0.4})
    frozen = log.event(t, NODE_A, "frozen", 1200, step=8)
    log.event(t, NODE_B, "thawed", 2000, step=8, after=frozen.key)
    view = _only(log.state())
    assert (view.state, view.runner, view.resumed_step) == ("running", NODE_B, 8)
    assert (view.reported_step, view.last_step) == (8, 8)


def test_reports_heard_before_their_start_show_their_curve() -> None:
    # Pins the curve of the latest reporting node when no start is known yet (a start lost
    # or delayed on its way): the trial runs, with that node's reports as its curve.
    log = Log()
    t = log.trial(NODE_A, 0.5)
    log.event(t, NODE_A, "progress", 1100, step=1, metrics={"objective": 0.5})
    log.event(t, NODE_A, "progress", 1200, step=2, metrics={"objective": 0.4})
    view = _only(log.state())
    assert (view.state, view.runner) == ("running", None)
    assert view.curve == ((1, 0.5), (2, 0.4))
    assert view.metrics == {"objective": 0.4}


def test_lost_frozen_holds_only_while_the_trial_is_lost() -> None:
    # Pins lost_frozen to the lost state: a trial lost while frozen and then killed is not
    # "lost while frozen" any more.
    log, t, _ = _started_on_a()
    frozen = log.event(t, NODE_A, "frozen", 1100, step=4)
    log.event(t, NODE_B, "lost", 1200, after=frozen.key)
    lost = _only(log.state())
    assert (lost.state, lost.lost_frozen) == ("lost", True)
    log.event(t, NODE_B, "killed", 1300, reason="not worth a re-run from 0")
    killed = _only(log.state())
    assert (killed.state, killed.lost_frozen) == ("killed", False)


def test_an_interruption_written_by_a_replaced_runner_does_not_free_the_rerun() -> None:
    # Pins "interrupted" as a run's own event: A, cut off but alive, stops its replaced run
    # after C re-ran the trial; read as the trial's, it freed a trial C was running.
    log, t, started = _started_on_a()
    lost = log.event(t, NODE_B, "lost", 2000, after=started.key)
    log.event(t, NODE_C, "started", 3000, supersedes=(lost.key,))
    log.event(t, NODE_A, "interrupted", 4000, reason="stopped")
    view = _only(log.state())
    assert (view.state, view.runner, view.free_events) == ("running", NODE_C, ())


def test_a_step_reported_twice_keeps_one_point_the_latest_reports() -> None:
    # Pins the curve's one value a step: a step reported again, last or earlier in the curve,
    # replaced its value rather than adding a second point at that step.
    log, t, _ = _started_on_a()
    log.event(t, NODE_A, "progress", 1100, step=1, metrics={"objective": 0.5})
    log.event(t, NODE_A, "progress", 1200, step=2, metrics={"objective": 0.4})
    log.event(t, NODE_A, "progress", 1300, step=2, metrics={"objective": 0.3})
    assert _only(log.state()).curve == ((1, 0.5), (2, 0.3))
    log.event(t, NODE_A, "progress", 1400, step=1, metrics={"objective": 0.6})
    assert _only(log.state()).curve == ((1, 0.6), (2, 0.3))


def test_the_reported_step_never_goes_back() -> None:
    # Pins reported_step as the highest step any event carried, not the latest event's: a
    # report of another metric at an earlier step, heard after a later one.
    log, t, _ = _started_on_a()
    log.event(t, NODE_A, "progress", 1100, step=5, metrics={"accuracy": 0.9})
    log.event(t, NODE_A, "progress", 1200, step=3, metrics={"accuracy": 0.8})
    view = _only(log.state())
    assert (view.reported_step, view.last_step) == (5, 5)


def test_a_stopped_experiment_with_a_frozen_trial_is_finished() -> None:
    # Pins that a frozen trial does not hold a stopped experiment open (no peer thaws it
    # on its own any more); a running one does.
    log, t, _ = _started_on_a()
    log.event(t, NODE_A, "frozen", 1100, step=2)
    stop = Record.create(CONTROL, NODE_B, 99, 6000, {"action": "stop"}, [log.experiment.key])
    log.records.append(stop)
    state = log.state()
    assert state.counts() == {"frozen": 1} and state.finished


def test_a_trial_outside_the_space_killed_at_a_rung_names_no_rung() -> None:
    # Pins stopped_rung to the killed state: a forged trial is failed whatever its events
    # say, and the rung of a kill that did not decide its state is not its.
    log = Log(_spec(space={"x": "uniform(0, 1)"}))
    forged = _forged(log, NODE_B, {"x": "abc"}, 1)
    log.event(forged, NODE_B, "started", 1100)
    log.event(forged, NODE_B, "killed", 1200, step=4, rung=1, reason="not in the top 1/3")
    view = _only(log.state())
    assert (view.state, view.stopped_rung) == ("failed", None)
    assert _views(log.state(list(reversed(log.records)))) == _views(log.state())
