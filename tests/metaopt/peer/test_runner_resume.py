"""Every way a trial runs again (a re-run here or elsewhere, a thaw, a Study taking one over):
where it resumes from, and the curve it keeps. From a review of the resume paths."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from crdt import Record
from metaopt._records import (
    EVENT,
    TRIAL,
    EventBody,
    ExperimentSpec,
    experiment_record,
    parse_experiment,
)
from metaopt._state import ExperimentState
from metaopt.peer._config import Timing
from metaopt.peer._runner import Running, TrialRunner
from metaopt.space import Space

A = b"a" * 16  # this peer
B = b"b" * 16
SPACE = {"x": "uniform(0, 1)"}
_SPACE = Space.from_dict(SPACE)


class _Log:
    def __init__(self, **spec: Any) -> None:
        rec = experiment_record(ExperimentSpec(name="e", space=SPACE, command=("t.py",), **spec))
        parsed = parse_experiment(rec)
        assert parsed is not None
        self.state = ExperimentState(rec.key, parsed)
        self.seq: dict[bytes, int] = {}
        self.time = 1_000
        body = {"params": {"x": 0.5}, "node": A, "counter": 1}
        self.trial = self._rec(TRIAL, A, body, [rec.key]).key

    def _rec(self, kind: str, node: bytes, body: Any, links: list[bytes]) -> Record:
        self.seq[node] = self.seq.get(node, 0) + 1
        self.time += 10
        rec = Record.create(kind, node, self.seq[node], self.time, body, links)
        self.state.apply(rec)
        return rec

    def event(self, node: bytes, kind: str, **kw: Any) -> Record:
        body = EventBody(self.trial, self.state.key, kind, node, **kw).to_body()
        return self._rec(EVENT, node, body, [self.trial, self.state.key])

    def run(
        self, node: bytes, first: int, last: int, *, start: str = "started", step: int | None = None
    ) -> None:
        view = self.state.trial(self.trial)
        assert view is not None
        self.event(node, start, step=step, supersedes=view.free_events, after=view.latest)
        for s in range(first, last + 1):
            self.event(node, "progress", step=s, metrics={"objective": 1.0 / s})

    def view(self) -> Any:
        view = self.state.trial(self.trial)
        assert view is not None
        return view


def _runner(log: _Log, data_dir: Path) -> TrialRunner:
    def write_event(experiment: bytes, trial: bytes, kind: str, **kw: Any) -> None:
        log.event(A, kind, **kw)

    node = SimpleNamespace(
        node_id=A,
        stopping=False,
        exhausted_now=lambda experiment: None,
        clock=lambda: 0.0,
        dirs=SimpleNamespace(trials=data_dir / "trials", root=data_dir),
        write_event=write_event,
        replica=SimpleNamespace(experiments={log.state.key: log.state}),
        suggester=lambda state: SimpleNamespace(
            space=_SPACE, unit=lambda t: _SPACE.to_unit(t.params)
        ),
    )
    config = SimpleNamespace(gpus="none", slots=1, timing=Timing(report_interval=0))
    return TrialRunner(node, config)  # type: ignore[arg-type]


def test_rerun_here_after_another_peer_ran_it_resumes_from_this_peers_checkpoint(
    tmp_path: Path,
) -> None:
    """A rolling restart of two peers: A runs T to step 10 (checkpoint at 10) and is stopped
    (interrupted); B takes T from step 0, reaches step 4 and is stopped; A, restarted, takes T
    back. Its checkpoint is of its own run, at step 10, but it is told METAOPT_RESUME_STEP=4
    (B's last step), and its curve keeps A's steps 1-4 then jumps to 11: steps 5-10 lost."""
    log = _Log(max_step=100)
    log.run(A, 1, 10)
    log.event(A, "interrupted", step=10, reason="its peer was stopped")
    log.run(B, 1, 4)  # B: no checkpoint of T, from step 0
    log.event(B, "interrupted", step=4, reason="its peer was stopped")
    assert log.view().state == "interrupted"
    runner = _runner(log, tmp_path)
    ckpt = runner.trial_dir(log.trial) / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "step").write_text("10")  # what A's run saved when it was stopped
    resume = runner._resume_step(log.view(), thaw=False)
    # As launch() does: the start, then the script goes on from its checkpoint's own step
    # (README: "resume from the checkpoint's own step").
    log.run(A, 1, 0, step=resume)
    run = Running(runner.slots[0], log.state.key, log.trial, resumed_after=resume)
    runner._record_event(run, "progress", {"step": 11, "metrics": {"objective": 1 / 11}})
    steps = [s for s, _ in log.view().curve]
    assert (resume, steps) == (10, list(range(1, 12)))


def test_a_thaw_taking_over_another_peers_frozen_trial_resumes_from_this_peers_checkpoint(
    tmp_path: Path,
) -> None:
    """`metaopt thaw` here of a trial frozen on B at step 6, after A ran it to step 10 (its
    checkpoint): A goes on from its own step 10, not from B's frozen step."""
    log = _Log(max_step=100)
    log.run(A, 1, 10)
    log.event(A, "interrupted", step=10, reason="its peer was stopped")
    log.run(B, 1, 6)
    log.event(B, "frozen", step=6, reason="below the rung")
    runner = _runner(log, tmp_path)
    assert runner._resume_step(log.view(), thaw=True) is None  # (no checkpoint here: from 0)
    ckpt = runner.trial_dir(log.trial) / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "step").write_text("10")
    assert runner._resume_step(log.view(), thaw=True) == 10
    assert log.view().step_of(A) == 10 and log.view().step_of(B) == 6


def test_a_study_taking_back_a_trial_goes_on_from_its_own_run(tmp_path: Path) -> None:
    """S1 ran a trial to step 5, S2 took it over to step 8; S1, taking it back, is told its
    own step 5 (its checkpoint's), as a peer is, and its curve is its own run's."""
    from metaopt import Study

    def study(n: int) -> Study:  # the n-th Study, reopened from its directory
        return Study({"x": "uniform(0, 1)"}, path=tmp_path / f"s{n}", node_id=b"%d" % n * 16,
                     max_step=20)  # fmt: skip

    with study(1) as s1:
        trial = s1.ask()
        for step in range(1, 6):
            s1.report(trial, step, 1.0 / step)
    with study(1) as s1, study(2) as s2:
        s2.sync(s1)
        again = s2.ask()
        assert (again.key, again.resume_step) == (trial.key, 5)
        for step in range(6, 9):
            s2.report(again, step, 0.5)
    with study(1) as s1, study(2) as s2:
        s1.sync(s2)
        back = s1.ask()
        assert (back.key, back.resume_step) == (trial.key, 5)
        s1.report(back, 6, 1.0 / 6)
        curve = next(t for t in s1.trials if t.key == trial.key).curve
        assert curve == tuple((step, 1.0 / step) for step in range(1, 7))


def test_a_study_resuming_another_nodes_free_trial_keeps_its_curve(tmp_path: Path) -> None:
    """Two synced Studies (the README's pattern). S1 asks a trial, reports steps 1-5 and its
    process ends (closed before tell: reopened, the trial is interrupted). S2's ask() hands it
    back with resume_step=5 ("continue from the step after it"); S2 loads the checkpoint (one
    machine) and reports step 6. Its curve is [6]: steps 1-5 are gone from status/export and
    the stoppers, though the run went on from them."""
    from metaopt import Study

    space = {"x": "uniform(0, 1)"}
    s1 = Study(space, path=tmp_path / "s1", node_id=b"1" * 16, max_step=20)
    trial = s1.ask()
    for step in range(1, 6):
        s1.report(trial, step, 1.0 / step)
    s1.close()
    s1 = Study(space, path=tmp_path / "s1", node_id=b"1" * 16, max_step=20)  # orphan freed
    s2 = Study(space, path=tmp_path / "s2", node_id=b"2" * 16, max_step=20)
    s2.sync(s1)
    again = s2.ask()
    assert (again.key, again.resume_step) == (trial.key, 5)
    s2.report(again, again.resume_step + 1, 1.0 / 6)
    curve = next(t for t in s2.trials if t.key == trial.key).curve
    s1.close()
    s2.close()
    assert [s for s, _ in curve] == [1, 2, 3, 4, 5, 6]


def test_after_a_graceful_stop_no_frozen_trial_is_settled_while_an_interrupted_one_waits(
    tmp_path: Path,
) -> None:
    """As after a kill -9 (test_a_restarted_peer_settles_no_frozen_trial_while_its_interrupted_
    one_waits), but the peer was stopped with `metaopt peer stop`: its cut-short trial is
    "interrupted", not "running". Budget spent, its first monitor pass killed its frozen
    trial as "not worth resuming" before the interrupted trial (checkpoint here) ran again,
    and thaw() reserved no slot for it either."""
    import asyncio

    from metaopt.freezethaw import Decision

    log = _Log(max_step=10, max_trials=2)
    log.run(A, 1, 1)
    log.event(A, "frozen", step=1, reason="below the rung")
    frozen = log.trial
    body = {"params": {"x": 0.25}, "node": A, "counter": 2}
    log.trial = log._rec(TRIAL, A, body, [log.state.key]).key
    log.run(A, 1, 3)
    log.event(A, "interrupted", step=3, reason="its peer was stopped")
    cut = log.trial
    assert log.state.budget_spent
    assert log.state.trial(cut).state == "interrupted"  # type: ignore[union-attr]
    runner = _runner(log, tmp_path)
    written: list[tuple[bytes, str]] = []
    runner.node.write_event = lambda e, t, kind, **kw: written.append((t, kind))

    class _Undecided:
        def decide(self, *args: object, **kw: object) -> list[Decision]:
            return []

    runner.early_stopping._stoppers[log.state.key] = _Undecided()  # type: ignore[assignment]
    asyncio.run(runner.monitor())
    killed = list(written)

    class _Thaw:  # judged worth resuming: thaw() gives it the only slot, ahead of the cut trial
        def decide(self, curves: Any, own: Any, free: int, *a: object, **kw: object) -> Any:
            from metaopt.freezethaw import Action

            return [Decision(frozen.hex(), Action.THAW, "worth it")] if free > 0 else []

    launched: list[bytes] = []

    async def launch(state: Any, view: Any, *, thaw: bool = False) -> None:
        launched.append(view.key)

    written.clear()
    runner.early_stopping._stoppers[log.state.key] = _Thaw()  # type: ignore[assignment]
    runner.launch = launch  # type: ignore[method-assign]
    asyncio.run(runner.early_stopping.thaw())
    named = {frozen: "frozen trial", cut: "interrupted trial"}
    outcome = {
        "interrupted_here": runner.interrupted_here(),
        "monitor wrote": [(named[t], kind) for t, kind in killed],
        "thaw launched": [named[t] for t in launched],
    }
    assert outcome == {"interrupted_here": 1, "monitor wrote": [], "thaw launched": []}


@pytest.mark.asyncio
async def test_a_frozen_trial_is_not_thawed_by_a_scheduling_pass_under_way_when_the_peer_stops(
    tmp_path: Path,
) -> None:
    """`metaopt peer stop` while a scheduling pass is deciding its thaws (the stopper runs in
    a thread): the pass goes on and launches the thaw after the stop was asked (launch() of a
    free trial checks _stopping; runner.early_stopping.thaw() does not), then stop()
    interrupts that run. The frozen trial, whose checkpoint is here, comes out "interrupted":
    free, so another peer re-runs it at once from step 0, instead of staying frozen here."""
    import sys
    import threading
    import time as _time

    from metaopt.freezethaw import Action, Decision
    from metaopt.peer._config import PeerConfig
    from metaopt.peer._node import Node

    spec = ExperimentSpec(
        "good", {"x": "uniform(0, 1)"}, algorithm="random", max_trials=1, max_step=10,
        command=(sys.executable, "-c", "import time; time.sleep(20)"),
    )  # fmt: skip
    exp = experiment_record(spec)
    node = Node(PeerConfig(data_dir=tmp_path / "peer", port=0, mdns=False, slots=1,
                           timing=Timing(stop_grace=0.5)))  # fmt: skip
    me, now_ms = node.node_id, int(_time.time() * 1000)
    body = {"params": {"x": 0.75}, "node": me, "counter": 1}
    frozen = Record.create(TRIAL, me, 1, now_ms - 5_000, body, [exp.key])
    stopped = [
        EventBody(frozen.key, exp.key, "started", me),
        EventBody(frozen.key, exp.key, "progress", me, 2, {"objective": 0.1}),
        EventBody(frozen.key, exp.key, "frozen", me, 2, reason="not in the top at rung 1"),
    ]
    links = [frozen.key, exp.key]
    events = [
        Record.create(EVENT, me, seq, now_ms - 3_000 + seq, e.to_body(), links)
        for seq, e in enumerate(stopped, start=2)
    ]
    go = threading.Event()

    class _ThawWhenLetGo:
        def decide(self, curves: Any, own: Any, free: int, *a: object, **kw: object) -> Any:
            go.wait(10)  # (deciding, in its thread, as the stop comes)
            return [Decision(frozen.key.hex(), Action.THAW, "worth a slot")] if free else []

    node.store.add([exp, frozen, *events])
    node.replicator.sessions = 1  # caught up
    state = node.replica.experiments[exp.key]
    assert state.trial(frozen.key).state == "frozen"  # type: ignore[union-attr]
    node.runner.early_stopping._stoppers[exp.key] = _ThawWhenLetGo()  # type: ignore[assignment]
    import asyncio

    passing = asyncio.ensure_future(node._schedule())
    await asyncio.sleep(0.2)
    stopping = asyncio.ensure_future(node.stop())  # `metaopt peer stop`
    await asyncio.sleep(0.1)
    go.set()
    await asyncio.wait_for(asyncio.gather(passing, stopping), 30)
    view = state.trial(frozen.key)
    assert view is not None
    assert (view.state, view.thaws) == ("frozen", 0)


def test_a_resumed_run_that_restarts_after_a_stepless_report_says_it_restarted(
    tmp_path: Path,
) -> None:
    """Thawed after step 30, a script that ignores its checkpoint prints one metric without a
    step at start-up (METAOPT {"n_params": 5}), then its curve from step 1. The executor
    numbers the stepless report 31 (resume step + 1), so the runner takes it for the run's
    first step, never sees step 1 < 30, writes no "restarted": the new run's steps 1-3 sit
    beside the old run's 4-30 in one curve (and last_step reads 31)."""
    import asyncio
    import sys

    from metaopt.peer._executor import TrialProcess, TrialSpec

    log = _Log(max_step=100)
    log.run(A, 1, 30)
    log.event(A, "frozen", step=30, reason="below the rung")
    runner = _runner(log, tmp_path)
    log.event(A, "thawed", step=30)
    run = Running(runner.slots[0], log.state.key, log.trial, resumed_after=30)
    code = (
        "print('METAOPT {\"n_params\": 5}', flush=True)\n"
        "for s in (1, 2, 3):\n"
        '    print(\'METAOPT {"objective": %s, "step": %d}\' % (10.0 + s, s), flush=True)\n'
    )
    spec = TrialSpec(
        argv=[sys.executable, "-c", code],
        cwd=tmp_path,
        log_path=tmp_path / "log",
        objectives=("objective",),
        step_offset=30,
    )  # as launch() gives a thaw
    asyncio.run(TrialProcess(spec, lambda k, d: runner._record_event(run, k, d)).run())
    view = log.view()
    assert [s for s, _ in view.curve] == [1, 2, 3], (view.curve[:5], view.last_step)


import pytest  # noqa: E402
