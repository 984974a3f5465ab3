"""The peer's trial runner: its stopper's decisions for frozen trials, and report thinning."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from crdt import Record, StoreWriteFailed
from metaopt import _curves
from metaopt._errors import MetaoptError, SearchError
from metaopt._records import (
    CONTROL,
    EVENT,
    TRIAL,
    EventBody,
    ExperimentSpec,
    experiment_record,
    parse_experiment,
)
from metaopt._state import FROZEN_BY_HAND, ExperimentState
from metaopt._suggest import Suggester
from metaopt.freezethaw import Action, CurveView, Decision, FreezeThawStopper
from metaopt.peer._config import Timing
from metaopt.peer._runner import CLAIM_RACE, FOLDER_RETRY, Running, TrialRunner
from metaopt.peer._storage import StorageTrouble
from metaopt.space import Space
from tests.metaopt.stoppers import RuleStopper

ME = b"m" * 16


class _JudgeFrozen(RuleStopper):
    """A stopper that decides ``action`` (by default KILL, "hopeless") for every own frozen
    trial, and notes the free slots."""

    def __init__(
        self, action: Action = Action.KILL, why: str = "hopeless", rung: int | None = None
    ) -> None:
        def rule(
            curves: Sequence[CurveView], own: Collection[str], free_slots: int
        ) -> list[Decision]:
            frozen = [c.trial_id for c in curves if c.trial_id in own and c.state == "frozen"]
            return [Decision(t, action, why, rung) for t in sorted(frozen)]

        super().__init__(rule)

    @property
    def free(self) -> list[int]:
        return [free_slots for _, free_slots, _ in self.calls]


class _Node:
    """What the runner reads and writes of its node: the replica and event records."""

    def __init__(self, state: ExperimentState, space: Space) -> None:
        self.node_id = ME
        self.stopping = False
        self.exhausted: dict[bytes, str] = {}  # experiments whose finite space is used up
        self.storage = StorageTrouble()
        self.clock = lambda: 0.0
        gone = Path("/nonexistent/metaopt-test")  # no checkpoint is ever found there
        self.dirs = SimpleNamespace(trials=gone / "trials", root=gone)
        self.replica = SimpleNamespace(experiments={state.key: state})
        self.written: list[tuple[bytes, str, str | None]] = []
        self._space = space
        self._seq = 100

    def suggester(self, state: ExperimentState) -> Any:
        return SimpleNamespace(space=self._space, unit=lambda t: self._space.to_unit(t.params))

    def exhausted_now(self, experiment: bytes) -> str | None:
        return self.exhausted.get(experiment)

    def write_event(self, experiment: bytes, trial: bytes, kind: str, **kw: Any) -> None:
        self.written.append((trial, kind, kw.get("reason")))
        self._seq += 1
        supersedes = kw.get("supersedes", ())
        body = EventBody(
            trial,
            experiment,
            kind,
            ME,
            reason=kw.get("reason"),
            supersedes=supersedes,
            after=kw.get("after"),
            rung=kw.get("rung"),
        ).to_body()
        state = self.replica.experiments[experiment]
        state.apply(Record.create(EVENT, ME, self._seq, 5_000, body, [trial, experiment]))


def _one_trial(**spec: Any) -> tuple[ExperimentState, Record]:
    """An experiment (ExperimentSpec options given as spec) with one trial of this peer."""
    rec = experiment_record(
        ExperimentSpec(name="e", space={"x": "uniform(0, 1)"}, command=("t.py",), **spec)
    )
    parsed = parse_experiment(rec)
    assert parsed is not None
    state = ExperimentState(rec.key, parsed)
    trial = Record.create(TRIAL, ME, 1, 0, {"params": {"x": 0.5}, "node": ME, "counter": 1},
                          [rec.key])  # fmt: skip
    state.apply(trial)
    return state, trial


def _frozen_trial(
    step: int, reason: str | None = None, max_trials: int | None = None
) -> tuple[ExperimentState, bytes]:
    """An experiment with one trial of this peer, started, reported at step and frozen there."""
    spec = ExperimentSpec(
        name="e", space={"x": "uniform(0, 1)"}, command=("t.py",), max_step=10,
        max_trials=max_trials,
    )  # fmt: skip
    rec = experiment_record(spec)
    parsed = parse_experiment(rec)
    assert parsed is not None
    state = ExperimentState(rec.key, parsed)
    body = {"params": {"x": 0.5}, "node": ME, "counter": 1}
    trial = Record.create(TRIAL, ME, 1, 0, body, [rec.key])
    state.apply(trial)
    for seq, (kind, at) in enumerate((("started", None), ("progress", step), ("frozen", step)), 2):
        metrics = {"objective": 0.5} if kind == "progress" else {}
        why = reason if kind == "frozen" else None
        body = EventBody(trial.key, rec.key, kind, ME, at, metrics, reason=why).to_body()
        state.apply(Record.create(EVENT, ME, seq, 1_000 * seq, body, [trial.key, rec.key]))
    assert state.trial(trial.key).state == "frozen"  # type: ignore[union-attr]
    return state, trial.key


def test_a_free_slot_kills_a_hopeless_frozen_trial_for_good(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The stopper judges frozen trials only where a slot could take them: the runner's thaw
    # pass must record its kills, or a hopeless trial stays frozen until the budget ends.
    caplog.set_level(logging.INFO, logger="metaopt")
    state, trial = _frozen_trial(1)
    node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]
    stopper = _JudgeFrozen()
    runner.early_stopping._stoppers[state.key] = stopper
    asyncio.run(runner.early_stopping.thaw())
    assert stopper.free == [1]
    assert node.written == [(trial, "killed", "hopeless")]
    assert state.trial(trial).state == "killed"  # type: ignore[union-attr]
    # In the peer's log, as its freezes and thaws are (the kills were silent).
    assert f"killed frozen trial {trial.hex()[:12]}: hopeless" in caplog.text


def test_the_curves_a_decision_reads_are_built_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Built on the loop, the curves of 50,000 trials held it for 2-3 s at every decision.
    state, trial = _frozen_trial(1)
    node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]
    runner.early_stopping._stoppers[state.key] = stopper = _JudgeFrozen()
    built_on: list[int] = []
    real = _curves.curve_views

    def spy(*args: Any) -> list[CurveView]:
        built_on.append(threading.get_ident())
        return real(*args)

    monkeypatch.setattr(_curves, "curve_views", spy)
    assert asyncio.run(runner.early_stopping._decide(state, {trial.hex()}, 1)) == [
        Decision(trial.hex(), Action.KILL, "hopeless")
    ]
    assert built_on and threading.get_ident() not in built_on and stopper.free == [1]


def test_default_early_stopping_starts_once_a_trial_reports_a_step() -> None:
    # With no max_step and no fidelity prior, freeze-thaw applies once curves exist; the first
    # monitor pass, before any report, cached "no stopper" and early stopping never began.
    state, trial = _one_trial()
    runner = TrialRunner(
        _Node(state, Space.from_dict({"x": "uniform(0, 1)"})),  # type: ignore[arg-type]
        SimpleNamespace(gpus="none", slots=1),  # type: ignore[arg-type]
    )
    assert runner.early_stopping._stopper(state) is None
    for seq, kind in enumerate(("started", "progress"), 2):
        metrics = {"objective": 0.5} if kind == "progress" else {}
        body = EventBody(trial.key, state.key, kind, ME, 1 if metrics else None, metrics)
        state.apply(Record.create(EVENT, ME, seq, seq, body.to_body(), [trial.key, state.key]))
    assert isinstance(runner.early_stopping._stopper(state), FreezeThawStopper)


def _running_here(*, exited: bool) -> tuple[TrialRunner, bytes, list[str]]:
    """A runner with one trial in its slot, whose process has exited or not; and the reasons
    that process is asked to stop with."""
    state, trial = _frozen_trial(1)
    runner = TrialRunner(
        _Node(state, Space.from_dict({"x": "uniform(0, 1)"})),  # type: ignore[arg-type]
        SimpleNamespace(gpus="none", slots=1),  # type: ignore[arg-type]
    )
    asked: list[str] = []
    process = SimpleNamespace(request_stop=asked.append, exited=exited)
    runner.running[0] = Running(runner.slots[0], state.key, trial, process=process)  # type: ignore[arg-type]
    return runner, trial, asked


def test_a_trial_asked_to_stop_is_told_why() -> None:
    # The reason a crash on stopping is recorded with was always "stop requested", never
    # "frozen by the user" or the stopper's reason.
    runner, trial, asked = _running_here(exited=False)
    assert runner.stoppable() == 1
    assert asyncio.run(runner.end(trial, "frozen", "frozen by the user"))
    assert asked == ["frozen by the user"]
    assert runner.stopping_as(trial) == "frozen"


def test_a_stop_the_stopper_decided_is_kept_on_disk_until_its_end_is_recorded(
    tmp_path: Path,
) -> None:
    # Killed -9 in the kill's grace, a restarted peer took the trial for lost and resumed it
    # past the rung it had been killed at (a resumed run is not judged below its checkpoint).
    runner, trial, asked = _running_here(exited=False)
    runner.node.dirs = SimpleNamespace(trials=tmp_path / "trials", root=tmp_path)
    runner.trial_dir(trial).mkdir(parents=True)
    state = next(iter(runner.node.replica.experiments.values()))
    # (Its state says frozen, its slot here running: the stopper's kill goes to the run.)
    runner.early_stopping._stoppers[state.key] = _JudgeFrozen(
        Action.KILL, "not in the top 1/3 at rung 9", 9
    )
    asyncio.run(runner.monitor())
    assert asked == ["not in the top 1/3 at rung 9"]
    # (With its rung: a restarted peer records the kill as the stopper decided it.)
    assert runner.stop_requested(trial) == ("killed", "not in the top 1/3 at rung 9", 9)
    outcome = SimpleNamespace(status="interrupted", exit_code=-15, objectives={}, metrics={})
    runner._record_outcome(runner.running[0], outcome)
    assert runner.stop_requested(trial) is None


def test_a_stop_request_file_the_trial_wrote_over_is_no_request(tmp_path: Path) -> None:
    """The trial may write in its own folder, this file too: JSON nested 100,000 deep raised
    RecursionError in the scheduling pass that found the trial lost, at every pass."""
    runner, trial, _ = _running_here(exited=False)
    runner.node.dirs = SimpleNamespace(trials=tmp_path / "trials", root=tmp_path)
    runner.trial_dir(trial).mkdir(parents=True)
    (runner.trial_dir(trial) / "stop-request").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    assert runner.stop_requested(trial) is None


def test_a_monitor_told_not_to_judge_asks_no_stopper() -> None:
    # (Its peer has not caught up: see Node._monitor.)
    runner, _, asked = _running_here(exited=False)
    state = next(iter(runner.node.replica.experiments.values()))
    stopper = runner.early_stopping._stoppers[state.key] = _JudgeFrozen(
        Action.KILL, "not in the top"
    )
    asyncio.run(runner.monitor(judge=False))
    assert (stopper.free, asked) == ([], [])
    asyncio.run(runner.monitor())
    assert stopper.free == [0] and asked == ["not in the top"]


@pytest.mark.parametrize(
    ("action", "said"), [(Action.FREEZE, "freezing"), (Action.KILL, "killing")]
)
def test_a_stop_the_stopper_decides_is_logged_as_asked_not_as_done(
    caplog: pytest.LogCaptureFixture, action: Action, said: str
) -> None:
    """The run may reach its last step before it stops, and is then completed: "frozen trial
    X" followed by "trial X ended: completed" read as a contradiction (partition run)."""
    caplog.set_level(logging.INFO, logger="metaopt")
    runner, trial, _ = _running_here(exited=False)
    state = next(iter(runner.node.replica.experiments.values()))
    runner.early_stopping._stoppers[state.key] = _JudgeFrozen(
        action, "not in the top 1/3 at rung 9", 9
    )
    asyncio.run(runner.monitor())
    assert f"{said} trial {trial.hex()[:12]}: not in the top 1/3 at rung 9" in caplog.text


def test_a_stop_decided_for_a_run_that_has_just_exited_is_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its process exited while the stopper decided (its end not yet recorded): "killing
    trial X" followed "trial X ended: completed", and nothing was killed (a soak)."""
    caplog.set_level(logging.INFO, logger="metaopt")
    runner, trial, asked = _running_here(exited=True)
    state = next(iter(runner.node.replica.experiments.values()))
    runner.early_stopping._stoppers[state.key] = _JudgeFrozen(
        Action.KILL, "not in the top 1/3 at rung 9", 9
    )
    asyncio.run(runner.monitor())
    assert asked == [] and f"trial {trial.hex()[:12]}" not in caplog.text


def test_a_peer_stopping_says_it_stops_its_running_trials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A foreground peer was silent from Ctrl-C to its last line (7-14 s with a trial that
    ignores its stop; a review of signals)."""
    caplog.set_level(logging.INFO, logger="metaopt")
    runner, _, asked = _running_here(exited=False)
    runner.config.timing = SimpleNamespace(stop_grace=10.0)  # type: ignore[attr-defined]
    asyncio.run(runner.interrupt_all("its peer was stopped"))
    assert asked == ["its peer was stopped"]
    assert "stopping 1 trial(s) running here: asked to save a checkpoint" in caplog.text
    assert "then SIGKILL within 20 s" in caplog.text  # (as `metaopt peer stop` says it)


def test_a_kill_at_a_rung_is_recorded_with_its_rung() -> None:
    # Other peers' ASHA counted the values it reported past the rung (it stops some steps
    # later) against their own runs there.
    runner, trial, _ = _running_here(exited=False)
    assert asyncio.run(runner.end(trial, "killed", "not in the top 1/3 at rung 9", 9))
    outcome = SimpleNamespace(status="interrupted", exit_code=-15, objectives={}, metrics={})
    runner._record_outcome(runner.running[0], outcome)
    state = next(iter(runner.node.replica.experiments.values()))
    view = state.trial(trial)
    assert view is not None and (view.state, view.stopped_rung) == ("killed", 9)


def test_a_trial_whose_process_has_exited_is_not_asked_to_stop() -> None:
    # Asked while its output drained (an escaped child held its pipes), a trial that had
    # completed was recorded killed, frozen or interrupted, and a freeze or a peer stop ran it
    # a second time.
    runner, trial, asked = _running_here(exited=True)
    assert runner.stoppable() == 0  # (`peer stop` said it stopped 1 trial running here)
    assert not asyncio.run(runner.end(trial, "killed", "killed by the user"))
    asyncio.run(runner.interrupt_all("the peer is stopping"))
    assert asked == [] and runner.stopping_as(trial) is None


def test_a_trial_frozen_by_hand_is_left_to_the_user() -> None:
    # A stopper judged it like its own freezes: it could thaw it (undoing the pause) or kill
    # it, which it did once the budget was spent (asha and median even when it had a chance).
    state, trial = _frozen_trial(1, reason=FROZEN_BY_HAND, max_trials=1)
    node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]
    stopper = _JudgeFrozen()
    runner.early_stopping._stoppers[state.key] = stopper
    asyncio.run(runner.early_stopping.thaw())
    asyncio.run(runner.monitor())  # the budget is spent and every slot is idle
    assert node.written == [] and state.trial(trial).frozen_by_hand  # type: ignore[union-attr]
    assert stopper.free == []  # never asked about it


def _thinning_runner(clock: list[float], written: list[tuple[str, int | None]]) -> TrialRunner:
    """A runner recording 0.25 s apart at least, on ``clock`` (monotonic: thinning is not by
    the wall clock), its events' kinds and steps in ``written``."""
    node = SimpleNamespace(
        node_id=ME,
        clock=lambda: clock[0],
        write_event=lambda e, t, kind, **kw: written.append((kind, kw.get("step"))),
        dirs=SimpleNamespace(trials=Path("/nonexistent/metaopt-test/trials")),
        replica=SimpleNamespace(experiments={}),
    )
    config = SimpleNamespace(gpus="none", slots=1, timing=Timing(report_interval=0.25))
    runner = TrialRunner(node, config)  # type: ignore[arg-type]
    runner.monotonic = lambda: clock[0]
    return runner


def test_a_flood_of_reports_is_thinned_and_the_last_one_still_recorded() -> None:
    # Each progress record is replicated to and kept by every peer: a script reporting every
    # minibatch wrote ~3,000 records a second before.
    clock = [0.0]
    written: list[tuple[str, int | None]] = []
    runner = _thinning_runner(clock, written)
    runner.node.clock = lambda: -1.0  # (a wall clock stepped back once held every report)
    run = Running(runner.slots[0], b"e" * 32, b"t" * 32)
    for step in range(1, 1025):  # 1,024 reports in one second (binary fractions: exact)
        clock[0] = step / 1024
        runner._on_event(run, "progress", {"step": step, "metrics": {"loss": 1 / step}})
    assert [s for k, s in written] == [1, 257, 513, 769]
    assert run.last_step == 1024
    clock[0] = 10.0  # quiet since: the heartbeat carries the report held back
    runner._on_event(run, "heartbeat", {})
    assert written[-1] == ("progress", 1024) and not run.held
    clock[0] = 10.5
    runner._on_event(run, "progress", {"step": 1025, "metrics": {"loss": 0.001}})
    clock[0] = 10.625
    runner._on_event(run, "progress", {"step": 1026, "metrics": {"loss": 0.001}})
    assert written[-1] == ("progress", 1025)  # 1026 held: within report_interval of 1025
    outcome = SimpleNamespace(status="completed", metrics={"loss": 0.001}, exit_code=0)
    runner._record_outcome(run, outcome)
    assert written[-2:] == [("progress", 1026), ("completed", None)]


def test_a_report_held_back_is_written_at_the_next_monitor_pass_once_due() -> None:
    # A run's last report waited for the heartbeat (10 s): a peer killed -9 meanwhile lost it,
    # resumed the run from its checkpoint past it, and the run, with nothing left to report,
    # failed ("no objective reported"; a review: 3 of 3).
    clock = [0.0]
    written: list[tuple[str, int | None]] = []
    runner = _thinning_runner(clock, written)
    run = Running(runner.slots[0], b"e" * 32, b"t" * 32)
    runner.running[0] = run
    for step, at in ((1, 0.25), (2, 0.375)):
        clock[0] = at
        runner._on_event(run, "progress", {"step": step, "metrics": {"loss": 1 / step}})
    assert written == [("progress", 1)] and run.held  # step 2 held: within 0.25 s of step 1
    clock[0] = 0.375 + 0.0625
    asyncio.run(runner.monitor(judge=False))
    assert written == [("progress", 1)]  # (not yet due: the records stay 0.25 s apart)
    clock[0] = 0.5
    asyncio.run(runner.monitor(judge=False))
    assert written == [("progress", 1), ("progress", 2)] and not run.held
    asyncio.run(runner.monitor(judge=False))
    assert len(written) == 2


@pytest.mark.parametrize("declared", ["max_step", "fidelity", None])
def test_a_report_at_the_declared_last_step_is_never_held_back(declared: str | None) -> None:
    # Held back, the last report waited up to a report gap (10 s for an old run) for its
    # record: a peer killed -9 meanwhile lost it, and the run, resumed past it with nothing
    # left to report, failed (a review: 7 of 7 with a kill 0.5-1 s after the last report).
    space = {"x": "uniform(0, 1)", "epochs": "fidelity(1, 10)"} if declared == "fidelity" else None
    spec = ExperimentSpec(
        name="e", space=space or {"x": "uniform(0, 1)"}, command=("t.py",),
        max_step=10 if declared == "max_step" else None,
    )  # fmt: skip
    state = ExperimentState(b"k" * 32, spec)
    node = _Node(state, Space.from_dict(spec.space))
    written: list[tuple[bytes, str, str | None]] = node.written
    node.write_event = lambda e, t, kind, **kw: written.append((t, kind, kw.get("step")))  # type: ignore[method-assign]
    config = SimpleNamespace(gpus="none", slots=1, timing=Timing(report_interval=0.25))
    runner = TrialRunner(node, config)  # type: ignore[arg-type]
    clock = [0.0]
    runner.monotonic = lambda: clock[0]
    # (As launch makes it.)
    last = runner._declared_last_step(state)
    run = Running(runner.slots[0], state.key, b"t" * 32, last_declared=last)
    for step in range(1, 11):  # 10 reports in 0.1 s: thinned to the first...
        clock[0] = step / 100
        runner._on_event(run, "progress", {"step": step, "metrics": {"loss": 1 / step}})
    steps = [s for _, kind, s in written if kind == "progress"]
    # ...and the last, when the submission declares it the last.
    assert steps == ([1] if declared is None else [1, 10])
    # Only its first report: one reporting each minibatch of its last epoch, or running past
    # the last step, wrote a record a report (412 for one trial).
    for i, step in enumerate([10] * 20 + list(range(11, 31))):
        clock[0] = 0.2 + i / 1000
        runner._on_event(run, "progress", {"step": step, "metrics": {"loss": 0.1}})
    assert [s for _, kind, s in written if kind == "progress"] == steps


def test_a_long_run_is_thinned_further_as_it_ages() -> None:
    # At five records a second a two-hour run wrote 36,000, each kept by every peer for good
    # (a replica's memory, its fold at start-up, and its views grew with them).
    clock = [0.0]
    written: list[float] = []
    node = SimpleNamespace(
        node_id=ME,
        clock=lambda: clock[0],
        write_event=lambda e, t, kind, **kw: written.append(clock[0]),
        dirs=SimpleNamespace(trials=Path("/nonexistent/metaopt-test/trials")),
    )
    config = SimpleNamespace(gpus="none", slots=1, timing=Timing())
    runner = TrialRunner(node, config)  # type: ignore[arg-type]
    runner.monotonic = lambda: clock[0]
    run = Running(runner.slots[0], b"e" * 32, b"t" * 32, began=0.0)
    for step in range(1, 2 * 3600 * 8 + 1):  # 8 reports a second for two hours
        clock[0] = step / 8
        runner._on_event(run, "progress", {"step": step, "metrics": {"loss": 1 / step}})
    when, gaps = np.array(written[1:]), np.diff(written)
    early, at_an_hour = gaps[when <= 100], gaps[np.abs(when - 3600) < 60]
    assert early.max() == 0.25  # (every other report: at most 5 a second)
    assert 7.0 <= at_an_hour.min() <= at_an_hour.max() <= 7.5  # 1/500 of its age
    assert gaps[-50:].max() == pytest.approx(10.0, abs=0.125)  # a heartbeat apart, no more
    assert 2_400 < len(written) < 3_000  # not 36,000
    # --timing report_interval=0 means no thinning, however old the run.
    runner.config = SimpleNamespace(gpus="none", slots=1, timing=Timing(report_interval=0))
    written.clear()
    for step in range(1, 3):
        clock[0] = 7200 + step / 8
        runner._on_event(run, "progress", {"step": step, "metrics": {"loss": 1 / step}})
    assert written == [7200.125, 7200.25]


def _runner_in(data_dir: Path) -> TrialRunner:
    """A runner whose node has a data directory and writes nothing (to build trial specs)."""
    node = SimpleNamespace(
        node_id=ME,
        clock=lambda: 0.0,
        dirs=SimpleNamespace(trials=data_dir / "trials", root=data_dir),
        write_event=lambda *a, **kw: None,
    )
    config = SimpleNamespace(gpus="none", slots=1, timing=Timing())
    return TrialRunner(node, config)  # type: ignore[arg-type]


def test_trials_get_only_the_metaopt_package_on_their_python_path(tmp_path: Path) -> None:
    # The package's parent is site-packages after a pip install: on PYTHONPATH it put
    # metaopt's numpy before the trial interpreter's own, which then failed to import.
    state, trial = _frozen_trial(1)
    view = state.trial(trial)
    assert view is not None
    runner = _runner_in(tmp_path)
    for _ in range(2):  # the second launch finds the link in place
        env = runner._spec(state, view, runner.slots[0], None).env
        first = Path(env["PYTHONPATH"].split(os.pathsep)[0])
        assert [p.name for p in first.iterdir()] == ["metaopt"]
    probe = "import metaopt.worker, importlib.util as u; print(u.find_spec('numpy') is None)"
    ran = subprocess.run(
        [sys.executable, "-S", "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.stdout.strip() == "True", ran.stderr  # metaopt imports, numpy is not lent


def test_a_trial_frozen_at_step_0_is_told_it_resumes(tmp_path: Path) -> None:
    # Scripts counting steps from 0 can be frozen at step 0; METAOPT_RESUME_STEP=0 is still a
    # resume (load the checkpoint), and an unset variable would have read as a fresh start.
    state, trial = _frozen_trial(0)
    view = state.trial(trial)
    assert view is not None and view.last_step == 0
    runner = _runner_in(tmp_path)
    _checkpoint_of(runner, trial)
    resume = runner._resume_step(view, thaw=True)
    assert runner._spec(state, view, runner.slots[0], resume).env["METAOPT_RESUME_STEP"] == "0"


def test_a_run_that_saved_no_checkpoint_starts_again_from_step_0(tmp_path: Path) -> None:
    # A thawed program read by a regex began again at epoch 1 while its matches were counted
    # on from the frozen step: step 37 held epoch 1's loss, and it ran 117 epochs of 81.
    state, trial = _frozen_trial(36)
    view = state.trial(trial)
    assert view is not None
    runner = _runner_in(tmp_path)
    for thaw in (True, False):
        fresh = runner._spec(state, view, runner.slots[0], runner._resume_step(view, thaw))
        assert "METAOPT_RESUME_STEP" not in fresh.env
    _checkpoint_of(runner, trial)
    assert runner._resume_step(view, thaw=True) == 36
    assert runner._resume_step(view, thaw=False) == 36  # a lost run's re-run here resumes too


def test_a_thaw_resumes_where_the_frozen_run_got_to_not_where_its_reports_did(
    tmp_path: Path,
) -> None:
    # A thaw resumed at the trial's last reported step (8, by a lost earlier run); its
    # checkpoint held the step its freeze recorded (7). Here a report landed after the
    # checkpoint the freeze recorded: the thaw must still name the checkpoint's step.
    state, trial = _frozen_trial(6)
    history = [("started", None), ("progress", 6), ("progress", 7), ("frozen", 6)]
    for seq, (kind, step) in enumerate(history, start=20):
        metrics = {"objective": 0.4} if kind == "progress" else {}
        body = EventBody(trial, state.key, kind, ME, step, metrics).to_body()
        state.apply(Record.create(EVENT, ME, seq, 10_000 + seq, body, [trial, state.key]))
    view = state.trial(trial)
    assert view is not None and view.state == "frozen"
    assert view.last_step == 7 and view.frozen_step == 6
    runner = _runner_in(tmp_path)
    _checkpoint_of(runner, trial)
    assert runner._resume_step(view, thaw=True) == 6
    assert runner._resume_step(view, thaw=False) == 7  # a restart resumes at its last report


def _checkpoint_of(runner: TrialRunner, trial: bytes) -> None:
    """What a script saving its state leaves in the trial's checkpoint directory."""
    folder = runner.trial_dir(trial) / "checkpoint"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "state.json").write_text("{}")


def test_a_stop_landing_after_the_last_step_records_the_trial_completed() -> None:
    # A freeze decided from a report at step 9 reaches a script that then reports step 10 (its
    # last) and exits 0: it finished, and "frozen" would hide its result from the search. One
    # that crashed when asked to stop failed: thawed, it would resume from a broken checkpoint.
    state, trial = _frozen_trial(1)
    node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]
    done = {"objective": 0.1}
    cases = (
        (10, SimpleNamespace(status="interrupted", exit_code=0, objectives=done), "completed"),
        (5, SimpleNamespace(status="interrupted", exit_code=0, objectives=done), "frozen"),
        (10, SimpleNamespace(status="interrupted", exit_code=0, objectives={}), "frozen"),
        (10, SimpleNamespace(status="interrupted", exit_code=-15, objectives=done), "frozen"),
        (5, SimpleNamespace(status="failed", exit_code=1, objectives={}), "failed"),
    )
    for last_step, outcome, recorded in cases:
        outcome.metrics, outcome.reason, outcome.stderr_tail = {}, "crashed", ()
        run = Running(runner.slots[0], state.key, trial, outcome="frozen", last_step=last_step)
        runner._record_outcome(run, outcome)
        assert node.written[-1][:2] == (trial, recorded), (last_step, outcome)


@pytest.mark.parametrize(
    ("asked", "code", "stopping", "recorded"),
    [(None, -15, True, "interrupted"), (None, 143, True, "interrupted"),
     (None, -1, True, "interrupted"), ("interrupted", -15, True, "interrupted"),
     ("interrupted", 130, True, "interrupted"), (None, -15, False, "failed"),
     (None, -11, True, "failed"), (None, 1, True, "failed"),
     ("interrupted", 1, True, "failed"), ("frozen", -15, True, "failed")],
)  # fmt: skip
def test_a_run_ended_by_a_stop_signal_as_its_peer_stops_is_interrupted(
    asked: str | None, code: int, stopping: bool, recorded: str
) -> None:
    """systemd stopping a peer, or a machine shutting down, sends SIGTERM to its trials at
    the same moment: a run that exited of it before the peer asked it to stop, or while
    asked, was recorded failed, never to run again (a review of signals). A crash is still
    a failure, as is a SIGTERM from elsewhere while the peer runs on, or during a freeze
    (its checkpoint half-written; see test_stop_signals)."""
    state, trial = _one_trial()
    node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    node.stopping = stopping
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]
    outcome = SimpleNamespace(status="failed", exit_code=code, objectives={}, metrics={},
                              reason=f"exit {code}", stderr_tail=())  # fmt: skip
    run = Running(runner.slots[0], state.key, trial.key, outcome=asked, reason="asked")
    runner._record_outcome(run, outcome)
    assert node.written[-1][:2] == (trial.key, recorded)


def test_a_kill_during_a_freezes_grace_records_the_trial_killed() -> None:
    # `metaopt kill` right after `metaopt freeze` (a script ignoring SIGTERM takes up to twice
    # the grace to stop) was refused as "already stopping (as frozen)".
    state, trial = _frozen_trial(1)
    node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]
    run = Running(runner.slots[0], state.key, trial, outcome="frozen", last_step=5)
    runner.running[0] = run
    assert not runner.kill_instead(b"x" * 32, FROZEN_BY_HAND)  # (another trial)
    assert runner.kill_instead(trial, "killed by hand") and runner.stopping_as(trial) == "killed"
    assert not runner.kill_instead(trial, "killed by hand")  # (once killed, it stays so)
    outcome = SimpleNamespace(status="interrupted", exit_code=-15, objectives={}, metrics={})
    runner._record_outcome(run, outcome)
    assert node.written[-1] == (trial, "killed", "killed by hand")


def test_a_resumed_run_with_nothing_left_to_do_keeps_its_earlier_result() -> None:
    # Its last report landed as a freeze did; thawed, it exited 0 at once with nothing to
    # report and was recorded failed ("no objective reported"), its curve's result lost.
    # A resumed run whose only report was nan diverged: it was recorded completed at the
    # value from before its freeze.
    cases = ((10, 0, False, "completed"), (None, 0, False, "failed"), (10, 1, False, "failed"),
             (10, 0, True, "failed"))  # fmt: skip
    for resumed_after, code, diverged, recorded in cases:
        state, trial = _frozen_trial(10)  # it reported objective 0.5 at step 10
        node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
        runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]
        outcome = SimpleNamespace(
            status="failed", exit_code=code, objectives={}, metrics={},
            reason="no objective reported", stderr_tail=(), diverged=diverged,
        )  # fmt: skip
        run = Running(runner.slots[0], state.key, trial, resumed_after=resumed_after)
        runner._record_outcome(run, outcome)
        assert node.written[-1][:2] == (trial, recorded), (resumed_after, code, diverged)
    assert state.trial(trial).state == "failed"  # type: ignore[union-attr]
    state, trial = _frozen_trial(10)
    node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]
    outcome.exit_code, outcome.diverged = 0, False
    runner._record_outcome(Running(runner.slots[0], state.key, trial, resumed_after=10), outcome)
    done = state.trial(trial)
    assert done is not None and (done.state, done.value) == ("completed", 0.5)


def test_a_rerun_of_a_lost_trial_names_the_loss_it_answers() -> None:
    # Event times are each writer's clock: a re-run whose "started" sorts before the "lost" it
    # answers must still read as running everywhere, so its start names that lost event.
    state, trial = _frozen_trial(1)
    node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    node.write_event(state.key, trial, "lost", reason="its peer went quiet")
    view = state.trial(trial)
    assert view is not None and view.state == "lost" and len(view.free_events) == 1
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]

    def cannot_start(*args: Any) -> Any:
        raise MetaoptError("no program here")

    runner._spec = cannot_start  # type: ignore[method-assign]
    asyncio.run(runner.launch(state, view))
    assert [k for t, k, r in node.written] == ["lost", "started", "failed"]
    started = [e[-1] for e in state.events(trial) if e[-1].kind == "started"][-1]
    assert started.supersedes == view.free_events
    # ... and follows all it knew of the trial (a takeover of a trial frozen on a gone peer
    # whose clock ran ahead sorted before that freeze, and changed nothing).
    assert started.after == view.latest is not None


def test_a_launch_that_fails_in_any_way_fails_the_trial_and_frees_its_slot() -> None:
    # A peer's definition with a bundle path of the wrong type raised TypeError after the
    # "started" event: the slot stayed taken for good and no other trial ever ran there.
    state, trial = _frozen_trial(1)
    node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    node.write_event(state.key, trial, "lost", reason="its peer went quiet")
    view = state.trial(trial)
    assert view is not None
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]

    def broken(*args: Any) -> Any:
        raise TypeError("expected str, bytes or os.PathLike object, not int")

    runner._spec = broken  # type: ignore[method-assign]
    asyncio.run(runner.launch(state, view))
    assert node.written[-1][1:] == ("failed", "cannot start: expected str, bytes or os.PathLike "
                                    "object, not int")  # fmt: skip
    assert runner.free_slots() == 1


def test_an_experiment_this_peer_cannot_read_gets_no_decisions_and_no_error() -> None:
    # A space no peer can parse (written by another peer) made every monitor pass raise,
    # twice a second, and the experiments after it in the pass got no decisions at all.
    state, trial = _frozen_trial(1)
    node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))

    def unreadable(state: ExperimentState) -> Any:
        raise MetaoptError("x: cannot parse 'uniform(1, 0)'")

    node.suggester = unreadable  # type: ignore[method-assign]
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]
    assert asyncio.run(runner.early_stopping._decide(state, {trial.hex()}, 1)) == []
    asyncio.run(runner.monitor())
    asyncio.run(runner.early_stopping.thaw())


class _Undecided:
    """A stopper that neither thaws nor kills: too little data to call a trial hopeless."""

    def decide(self, *args: object, **kw: object) -> list[Decision]:
        return []


def test_a_spent_experiments_frozen_trials_are_settled_while_another_keeps_the_slots_busy() -> None:
    # Its frozen trials neither worth a thaw nor hopeless waited for every slot of the peer to
    # be idle: another experiment kept them busy, and this one active at 5/5, for as long as
    # it ran.
    state, trial = _frozen_trial(1, max_trials=1)
    other, busy = _one_trial(max_trials=50)
    node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    node.replica.experiments[other.key] = other
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]
    process = SimpleNamespace(request_stop=lambda why: None, exited=False)
    runner.running[0] = Running(runner.slots[0], other.key, busy.key, process=process)  # type: ignore[arg-type]

    runner.early_stopping._stoppers[state.key] = _Undecided()  # type: ignore[assignment]
    runner.early_stopping._stoppers[other.key] = _Undecided()  # type: ignore[assignment]
    asyncio.run(runner.monitor())
    assert node.written == [(trial, "killed", "frozen when the budget ran out and not worth"
                                              " resuming")]  # fmt: skip


def test_a_peer_asked_to_stop_while_its_stopper_decides_settles_nothing() -> None:
    # `peer stop` during a decision (made in a thread): the runs it interrupts were not among
    # those it saw running, so with the budget spent the frozen trials were judged as if
    # nothing ran here, and killed as not worth resuming, in the stop's last moments.
    state, _ = _frozen_trial(1, max_trials=1)
    node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]

    def stop_meanwhile(curves: Any, own: Any, free: int) -> list[Decision]:
        node.stopping = True
        return []

    runner.early_stopping._stoppers[state.key] = RuleStopper(stop_meanwhile)  # type: ignore[assignment]
    asyncio.run(runner.monitor())
    assert node.written == []


def test_a_restarted_peer_settles_no_frozen_trial_while_its_interrupted_one_waits() -> None:
    # Restarted after a kill -9, with the budget spent, its first pass found nothing running
    # here and killed its frozen trials as not worth resuming, before the trial the crash had
    # cut short ran again (its end moves the bar they are judged against).
    state, trial = _frozen_trial(1, max_trials=2)
    cut = Record.create(TRIAL, ME, 10, 0, {"params": {"x": 0.25}, "node": ME, "counter": 2},
                        [state.key])  # fmt: skip
    state.apply(cut)
    started = EventBody(cut.key, state.key, "started", ME).to_body()
    state.apply(Record.create(EVENT, ME, 11, 11_000, started, [cut.key, state.key]))
    assert state.budget_spent and state.trial(cut.key).state == "running"  # type: ignore[union-attr]
    node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]

    runner.early_stopping._stoppers[state.key] = _Undecided()  # type: ignore[assignment]
    assert runner.interrupted_here() == runner.interrupted_here(state) == 1
    asyncio.run(runner.monitor())
    assert node.written == []
    completed = EventBody(cut.key, state.key, "completed", ME, 10, {"objective": 0.2}).to_body()
    state.apply(Record.create(EVENT, ME, 12, 12_000, completed, [cut.key, state.key]))
    asyncio.run(runner.monitor())  # its end is known: now the frozen trial is settled
    assert node.written == [(trial, "killed", "frozen when the budget ran out and not worth"
                                              " resuming")]  # fmt: skip


def test_a_stopper_that_fails_for_one_experiment_is_logged_once_and_kills_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The thaws come first in every scheduling pass: a stopper raising for one experiment
    # ended each pass there, and no trial was found lost or started anywhere. Nor may its
    # silence pass for a verdict: with the budget spent, a frozen trial no decision thawed
    # was killed as "not worth resuming"; nor may it leave them frozen for good (the
    # experiment would never finish): they are resumed unjudged as slots allow.
    state, trial = _frozen_trial(1, max_trials=1)
    node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]
    launched: list[tuple[bytes, bool]] = []

    async def launch(state: ExperimentState, view: Any, *, thaw: bool = False) -> None:
        launched.append((view.key, thaw))

    runner.launch = launch  # type: ignore[method-assign]

    class _Broken:
        def decide(self, *args: object, **kw: object) -> list[Decision]:
            raise ZeroDivisionError("a bug in the stopper")

    runner.early_stopping._stoppers[state.key] = _Broken()  # type: ignore[assignment]
    for _ in range(3):
        asyncio.run(runner.monitor())
    assert node.written == []
    asyncio.run(runner.early_stopping.thaw())
    assert launched == [(trial, True)]
    assert caplog.text.count("its early stopper failed") == 1


def test_a_run_here_of_a_trial_completed_elsewhere_is_stopped_and_records_nothing() -> None:
    # After a partition healed, re-runs of trials the other side had completed ran on to
    # their end (90 s each here; hours with real trials) while status said "finished".
    state, trial = _frozen_trial(1)
    node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]
    asked: list[str] = []
    process = SimpleNamespace(request_stop=asked.append, exited=False)
    run = Running(runner.slots[0], state.key, trial, process=process)  # type: ignore[arg-type]
    runner.running[0] = run
    asyncio.run(runner.monitor())
    assert asked == []  # not completed: no reason to stop
    other = b"o" * 16  # the other side of a partition, which re-ran it to its end
    rerun = EventBody(trial, state.key, "started", other).to_body()
    state.apply(Record.create(EVENT, other, 1, 8_000, rerun, [trial, state.key]))
    done = EventBody(trial, state.key, "completed", other, 10, {"objective": 0.1}).to_body()
    state.apply(Record.create(EVENT, other, 2, 9_000, done, [trial, state.key]))
    asyncio.run(runner.monitor())
    assert asked == [f"completed on node {other.hex()[:8]}"]
    written = len(node.written)
    outcome = SimpleNamespace(status="interrupted", exit_code=0, metrics={}, objectives={})
    runner._record_outcome(run, outcome)
    assert len(node.written) == written  # the trial's result is the other peer's


@pytest.mark.parametrize("mine", ["earlier", "later", "long ago", "the one taken for lost"])
def test_of_two_runs_taken_up_at_once_the_one_not_the_trials_gives_way(mine: str) -> None:
    # Two peers whose slots freed at once both re-ran the one free trial and ran it side by
    # side to its end (4 of 4 staged on real peers). The replicas make the later start the
    # trial's run: the other peer's run gives way, writing nothing; an older run (across a
    # partition, maybe the further on) goes on, as its completion still counts, and so does
    # a run another peer took for lost (this peer was stopped a while): it answered no loss.
    state, trial = _one_trial()
    key = trial.key
    lost = EventBody(key, state.key, "lost", ME, reason="its peer was gone").to_body()
    freed = Record.create(EVENT, ME, 2, 1_000, lost, [key, state.key])
    state.apply(freed)
    other = b"o" * 16
    starts = {ME: 5_000 if mine != "later" else 5_002, other: 5_001}
    answered = () if mine == "the one taken for lost" else (freed.key,)
    for node, seq in ((ME, 3), (other, 1)):
        answers = answered if node == ME else (freed.key,)
        body = EventBody(key, state.key, "started", node, supersedes=answers).to_body()
        state.apply(Record.create(EVENT, node, seq, starts[node], body, [key, state.key]))
    node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]
    runner.monotonic = lambda: 1_000.0
    asked: list[str] = []
    process = SimpleNamespace(request_stop=asked.append, exited=False)
    began = 1_000.0 - (CLAIM_RACE + 1 if mine == "long ago" else 2)
    run = Running(runner.slots[0], state.key, key, process=process, began=began, answered=answered)  # type: ignore[arg-type]
    runner.running[0] = run
    asyncio.run(runner.monitor(judge=False))
    if mine == "earlier":
        assert asked == [f"taken up at the same time by node {other.hex()[:8]}, whose run it is"]
        written = len(node.written)
        # What it reports during its stop grace counts for nothing: not written either.
        runner._on_event(run, "progress", {"step": 1, "metrics": {"objective": 1.0, "step": 1}})
        runner._on_event(run, "heartbeat", {"step": 1})
        assert len(node.written) == written
        outcome = SimpleNamespace(status="interrupted", exit_code=0, metrics={}, objectives={})
        runner._record_outcome(run, outcome)
        assert len(node.written) == written
    else:
        assert asked == []


def test_a_run_over_its_trial_timeout_is_stopped_and_recorded_killed() -> None:
    # There was no way to bound a trial: a hung script held its slot until someone noticed.
    state, trial = _one_trial(options={"trial_timeout": 60})
    node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]
    asked: list[str] = []
    process = SimpleNamespace(request_stop=asked.append, exited=False)
    run = Running(runner.slots[0], state.key, trial.key, process=process, began=100.0)  # type: ignore[arg-type]
    runner.running[0] = run
    node.clock = lambda: 1e9  # the wall clock stepped forward: not how long it ran
    runner.monotonic = lambda: 160.0  # a minute: within the limit
    asyncio.run(runner.monitor())
    assert asked == []
    runner.monotonic = lambda: 160.5
    asyncio.run(runner.monitor())
    asyncio.run(runner.monitor())  # asked once
    assert asked == ["ran longer than its trial timeout (60 s)"]
    outcome = SimpleNamespace(status="interrupted", exit_code=-15, metrics={}, objectives={})
    runner._record_outcome(run, outcome)
    assert node.written[-1] == (trial.key, "killed", "ran longer than its trial timeout (60 s)")
    view = state.trial(trial.key)
    assert view is not None and view.state == "killed"


def _lost_while_frozen(max_trials: int | None) -> tuple[ExperimentState, bytes, _Node, TrialRunner]:
    state, trial = _frozen_trial(1, max_trials=max_trials)
    node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    node.write_event(state.key, trial, "lost", reason="frozen on node 6f0e2a11, which went away")
    node.write_event(state.key, trial, "lost", reason="a second peer saw it too")
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]
    return state, trial, node, runner


def test_a_trial_lost_while_frozen_is_judged_before_a_rerun_once_the_budget_is_spent() -> None:
    # Taken over as a lost trial, it ran in full from step 0 with nothing to stop it (no new
    # trial may start, so no rung freezes), while the live peers' frozen trials were killed
    # as not worth resuming: the stopper judges it as a frozen one first.
    state, trial, node, runner = _lost_while_frozen(max_trials=1)
    view = state.trial(trial)
    assert view is not None and view.state == "lost" and view.lost_frozen and state.budget_spent
    runner.early_stopping._stoppers[state.key] = _JudgeFrozen()
    assert asyncio.run(runner.early_stopping.worth_rerun(state, view)) is None
    ((_, kind, reason),) = node.written[2:]
    assert kind == "killed" and reason is not None and "not worth a re-run (hopeless)" in reason
    assert state.trial(trial).state == "killed"  # type: ignore[union-attr]

    state, trial, node, runner = _lost_while_frozen(max_trials=1)
    runner.early_stopping._stoppers[state.key] = _JudgeFrozen(Action.THAW, "a good bet")
    again = asyncio.run(runner.early_stopping.worth_rerun(state, state.trial(trial)))  # type: ignore[arg-type]
    assert again is not None and again.state == "lost" and len(node.written) == 2


def test_a_trial_lost_while_frozen_before_the_budget_is_spent_or_while_running_is_rerun() -> None:
    state, trial, node, runner = _lost_while_frozen(max_trials=None)
    stopper = runner.early_stopping._stoppers[state.key] = _JudgeFrozen()
    assert asyncio.run(runner.early_stopping.worth_rerun(state, state.trial(trial)))  # type: ignore[arg-type]
    assert stopper.free == [] and len(node.written) == 2  # its rungs judge the re-run

    node.write_event(state.key, trial, "started")
    node.write_event(state.key, trial, "lost", reason="its peer went quiet")
    view = state.trial(trial)
    assert view is not None and view.state == "lost" and not view.lost_frozen


@pytest.mark.parametrize("asked_to_stop", [False, True])
def test_an_outcome_the_disk_refuses_is_one_line_the_slot_frees_and_it_is_recorded_later(
    caplog: pytest.LogCaptureFixture, asked_to_stop: bool
) -> None:
    # A trial ending while the disk was full: "crashed the executor" with a traceback, and a
    # "failed" event that could not be written either. Then its outcome was dropped: the
    # trial was taken for lost ("its peer restarted while it ran") and resumed at its last
    # step, recorded completed with the value recorded before the disk filled.
    from metaopt.peer._storage import StorageTrouble

    state, trial = _one_trial()
    node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    node.storage = StorageTrouble()  # type: ignore[attr-defined]
    node.kick = lambda: None  # type: ignore[attr-defined]
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]
    full = [True]
    write = node.write_event

    def write_unless_full(*args: Any, **kw: Any) -> None:
        if full[0]:
            raise StoreWriteFailed("cannot write the store: No space left on device", "full")
        write(*args, **kw)

    node.write_event = write_unless_full  # type: ignore[method-assign]
    run = Running(runner.slots[0], state.key, trial.key)
    run.held[frozenset({"objective"})] = (2, {"objective": 0.2})  # a report thinned out
    runner.running[0] = run
    outcome = SimpleNamespace(
        status="completed", metrics={"objective": 0.16}, objectives={"objective": 0.16},
        exit_code=0, diverged=False,
    )  # fmt: skip
    ended = "completed"
    if asked_to_stop:
        # A resumed run asked to freeze that exits 0 without its objective crashed on the
        # stop: failed. Retried with the first try's changes to the run, it read as done
        # before its resume, from the objective an earlier attempt reported: completed.
        report = EventBody(trial.key, state.key, "progress", ME, 3, {"objective": 0.5})
        state.apply(Record.create(EVENT, ME, 2, 1, report.to_body(), [trial.key, state.key]))
        run.outcome, run.reason, run.resumed_after = "frozen", "not in the top", 3
        outcome = SimpleNamespace(
            status="failed", metrics={}, objectives={}, exit_code=0, diverged=False,
            reason="no objective reported", stderr_tail=[],
        )  # fmt: skip
        ended = "failed"
    process = SimpleNamespace(run=lambda: asyncio.sleep(0, outcome), pid=None)
    asyncio.run(runner._supervise(run, process))  # type: ignore[arg-type]
    assert runner.running == {} and node.written == []
    assert node.storage.problem() is not None  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.exc_info]
    assert runner.running_keys() == {trial.key}  # ended here: not lost, not free
    runner.record_unrecorded()  # (the disk still full: kept)
    assert runner.running_keys() == {trial.key} and node.written == []
    assert run.outcome == ("frozen" if asked_to_stop else None)  # as before the tries
    caplog.clear()
    runner.record_unrecorded(last=True)  # its peer stopping with the disk still full
    said = [r.getMessage() for r in caplog.records if "lost with this stop" in r.getMessage()]
    told = "exit code 0" if asked_to_stop else "exit code 0, objective=0.16"
    assert said == [
        f"trial {trial.key.hex()}'s run ended ({told}), but the disk refused its record: lost"
        " with this stop, and the trial runs again when found lost"
    ]
    full[0] = False
    runner.record_unrecorded()
    assert [kind for _, kind, _ in node.written] == ["progress", ended]  # (none lost)
    assert runner.running_keys() == set()


async def can_run_once_laid_out(runner: TrialRunner, state: ExperimentState) -> bool:
    """can_run, after the bundle layout its first call may start (in a thread) has ended."""
    return await runner.can_run_within(state, 60.0)


def _bundled(tmp_path: Path) -> tuple[ExperimentState, TrialRunner]:
    """An experiment whose code is a bundle, and a runner of one slot whose bundles go under
    tmp_path (laid out by whatever the test puts in the layouts' _materialize)."""
    spec = ExperimentSpec(
        name="e", space={"x": "uniform(0, 1)"}, command=("t.py",),
        bundle={"manifest": {"files": {}}, "root": "/r"},
    )  # fmt: skip
    state = ExperimentState(b"k" * 32, spec)
    node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    node.dirs.bundles = tmp_path / "bundles"
    return state, TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_a_bundle_the_disk_refuses_is_said_once_a_minute_and_a_deleted_one_is_written_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Tried at every pass, a read-only bundle cache logged a warning twice a second; and a
    # bundle deleted to free space was still taken for held: its trials failed with an
    # empty code folder until the peer restarted.
    from metaopt.peer._bundle import BundleWriteError

    caplog.set_level(logging.INFO, logger="metaopt")
    state, runner = _bundled(tmp_path)
    now = [0.0]
    runner.monotonic = lambda: now[0]
    written = tmp_path / "bundle"
    refuse = [True]

    def materialize(state: ExperimentState, chunk: Any) -> Path:
        if refuse[0]:
            raise BundleWriteError("cannot create the bundle: Read-only file system")
        written.mkdir(exist_ok=True)
        return written

    runner.layouts._materialize = materialize  # type: ignore[method-assign]
    for second in (0.0, 0.5, 30.0, 61.0):
        now[0] = second
        assert not await can_run_once_laid_out(runner, state)
    assert caplog.text.count("cannot run here yet") == 2  # at 0 s and 61 s
    refuse[0] = False
    assert await can_run_once_laid_out(runner, state) and written.is_dir()
    written.rmdir()  # a user freeing space
    assert not runner.can_run(state)  # not taken for held: written again
    assert await can_run_once_laid_out(runner, state) and written.is_dir()


@pytest.mark.asyncio
async def test_can_run_within_waits_for_the_code_being_laid_out_here(tmp_path: Path) -> None:
    # A thaw by hand of a trial whose bundle was deleted was refused at once, and worked
    # when asked again seconds later (a review, 3 of 3): it waits for the layout now.
    state, runner = _bundled(tmp_path)
    written = tmp_path / "bundle"
    takes = [0.3]

    def materialize(state: ExperimentState, chunk: Any) -> Path:
        time.sleep(takes[0])  # (in the layout's thread)
        written.mkdir(exist_ok=True)
        return written

    runner.layouts._materialize = materialize  # type: ignore[method-assign]
    assert await runner.can_run_within(state, 10.0) and written.is_dir()
    written.rmdir()
    takes[0] = 1.0
    assert not await runner.can_run_within(state, 0.05)  # not yet: the layout goes on
    assert await runner.can_run_within(state, 10.0)


_GRID = {"x": "choices([0.25, 0.5])"}


def _used_up_grid() -> tuple[ExperimentState, list[bytes], TrialRunner, _Node]:
    """A finite space without max_trials (no budget is spent) whose both points are trials,
    one completed and one frozen here, and this peer's runner of it, the space used up."""
    spec = ExperimentSpec(name="grid", space=_GRID, command=("t.py",), max_step=10)
    rec = experiment_record(spec)
    parsed = parse_experiment(rec)
    assert parsed is not None
    state = ExperimentState(rec.key, parsed)
    seq = 0
    keys = []
    for i, x in enumerate((0.25, 0.5)):
        seq += 1
        trial = Record.create(TRIAL, ME, seq, i, {"params": {"x": x}, "node": ME, "counter": i + 1},
                              [rec.key])  # fmt: skip
        state.apply(trial)
        keys.append(trial.key)
        last = "completed" if i == 0 else "frozen"
        for kind, at in (("started", None), ("progress", 3), (last, 3)):
            seq += 1
            metrics = {"objective": 0.5} if kind != "frozen" else {}
            body = EventBody(trial.key, rec.key, kind, ME, at, metrics).to_body()
            state.apply(Record.create(EVENT, ME, seq, 1_000 * seq, body, [trial.key, rec.key]))
    assert state.trial(keys[1]).state == "frozen"  # type: ignore[union-attr]
    # Every point of the space is a trial: no new configuration can start (the peer marks the
    # experiment exhausted on this error and searches it no more).
    suggester = Suggester(state, ME, seed=0)
    with pytest.raises(SearchError):
        suggester.compute(suggester.prepare(0, trials=state.trials()))

    node = _Node(state, Space.from_dict(_GRID))
    node.exhausted[state.key] = "all 2 points of the space are already tried or pending"
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]
    return state, keys, runner, node


def test_frozen_trials_of_a_used_up_space_are_judged_as_with_no_fresh_point_left() -> None:
    state, keys, runner, _ = _used_up_grid()
    launched: list[bytes] = []

    async def launch(state: object, view: object, *, thaw: bool = False) -> None:
        launched.append(view.key)  # type: ignore[attr-defined]

    runner.launch = launch  # type: ignore[method-assign]
    # FreezeThawStopper's documented rule (_policy.py): a frozen trial is thawed when its rate
    # beats the fresh rate; with no fresh configuration possible the fresh rate is 0 and
    # every frozen trial with a real chance is worth the free slot.
    stopper = RuleStopper(
        lambda curves, own, free: (
            []
            if stopper.calls[-1][2]
            else [Decision(t, Action.THAW, "no fresh point") for t in sorted(own)]
        )
    )
    runner.early_stopping._stoppers[state.key] = stopper  # type: ignore[assignment]
    asyncio.run(runner.early_stopping.thaw())
    asyncio.run(runner.monitor())
    told = [fresh for _, _, fresh in stopper.calls]
    # Told a fresh point may start, the slot stayed idle and the trial frozen for good.
    assert launched == [keys[1]], (launched, "fresh_available told:", told)
    assert told and not any(told)


def test_a_stopped_experiments_running_trial_is_judged_as_with_no_fresh_point_left() -> None:
    """No new configuration of a stopped experiment will start: its stopper, told one might,
    froze its running trials at a rung in favour of fresh points (and no thaw resumes a
    stopped experiment's trials: frozen for good, its folder kept from `clean`)."""
    state, keys, runner, node = _used_up_grid()
    node.exhausted.clear()  # its space has points left; the stop is what ends it
    state.apply(Record.create(CONTROL, ME, 99, 99_000, {"action": "stop"}, [state.key]))
    assert state.stopped
    running = Running(runner.slots[0], state.key, keys[0], began=0.0)
    runner.running[0] = running
    stopper = RuleStopper(lambda curves, own, free: [])
    runner.early_stopping._stoppers[state.key] = stopper  # type: ignore[assignment]
    asyncio.run(runner.monitor())
    told = [fresh for _, _, fresh in stopper.calls]
    assert told == [False]


def test_frozen_trials_of_a_used_up_space_not_worth_resuming_are_ended_so_it_can_finish() -> None:
    # With nothing new to start and no trial running, the frozen ones not worth a slot are
    # killed, so that the experiment finishes (as once its budget is spent).
    state, keys, runner, node = _used_up_grid()
    runner.early_stopping._stoppers[state.key] = RuleStopper(lambda curves, own, free: [])  # type: ignore[assignment]
    asyncio.run(runner.monitor())
    assert node.written == [
        (keys[1], "killed", "frozen when no new point was left to try and not worth resuming")
    ]


def test_a_trial_folder_the_full_disk_refuses_does_not_fail_the_trial_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A trial's folder the disk refused (no inode left, a quota) was recorded "failed"
    # ("cannot start: [Errno 28] ...") for good: on a real tmpfs with its inodes used up an
    # experiment of --max-trials 4 was 4/4 failed within 15 s, and stayed finished once space
    # returned (a review of every write on a full disk).
    import errno
    import pathlib

    from metaopt.peer._storage import StorageTrouble

    state, trial = _frozen_trial(1)
    node: Any = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    node.dirs = SimpleNamespace(trials=tmp_path / "trials", root=tmp_path)
    node.storage = StorageTrouble()
    node.write_event(state.key, trial, "lost", reason="its peer went quiet")
    view = state.trial(trial)
    assert view is not None
    config = SimpleNamespace(gpus="none", slots=1, timing=Timing())
    runner = TrialRunner(node, config)  # type: ignore[arg-type]
    real = pathlib.Path.mkdir

    def full(self: Path, *args: Any, **kwargs: Any) -> None:
        if str(self).startswith(str(tmp_path / "trials")):
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", full)
    with contextlib.suppress(Exception):  # (any refusal is fine; a failure for good is not)
        asyncio.run(runner.launch(state, view))
    kinds = [k for _, k, _ in node.written]
    assert "failed" not in kinds, node.written[-1]
    # Set free to run again once the disk takes writes; no trial starts here meanwhile (each
    # try wrote a start and an interruption, every 2 s), but the replica is not held back:
    # its writes may well succeed (LevelDB appends to a file it has).
    assert kinds[-2:] == ["started", "interrupted"] and not runner.running
    assert runner.free_slots() == 0 and "refused a trial's folder" in (runner.starts_held() or "")
    assert node.storage.problem() is None
    runner.monotonic = lambda: time.monotonic() + FOLDER_RETRY
    assert runner.free_slots() == 1 and runner.starts_held() is None


_RACER = b"o" * 16  # the other peer that took the trial up at the same moment


def _race_event(state: ExperimentState, trial: bytes, node: bytes, seq: int, at: int, kind: str,
                step: int | None = None, **kw: Any) -> Record:  # fmt: skip
    body = EventBody(trial, state.key, kind, node, step, **kw).to_body()
    record = Record.create(EVENT, node, seq, at, body, [trial, state.key])
    state.apply(record)
    return record


def _taken_up_at_once() -> tuple[ExperimentState, bytes, Record, Record]:
    """A trial freed by a loss, then taken up by this peer and _RACER answering that loss:
    the state, the trial's key, the loss and the other's start (the later: the trial's run)."""
    state, trial = _one_trial(max_step=10)
    key = trial.key
    freed = _race_event(state, key, ME, 2, 1_000, "lost", reason="its peer was gone")
    _race_event(state, key, ME, 3, 5_000, "started", supersedes=(freed.key,))
    theirs = _race_event(state, key, _RACER, 1, 5_001, "started", supersedes=(freed.key,))
    return state, key, freed, theirs


def _stops_asked_of_a_young_run(
    state: ExperimentState, trial: bytes, answered: tuple[bytes, ...]
) -> list[str]:
    """What this peer's monitor asks of its run of trial, begun 2 s ago having answered
    ``answered`` (Running.answered)."""
    node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]
    runner.monotonic = lambda: 1_000.0
    asked: list[str] = []
    process = SimpleNamespace(request_stop=asked.append, exited=False)
    runner.running[0] = Running(
        runner.slots[0], state.key, trial, process=process,  # type: ignore[arg-type]
        began=998.0, answered=answered,
    )  # fmt: skip
    asyncio.run(runner.monitor(judge=False))
    return asked


@pytest.mark.parametrize(
    "then", ["still running (control)", "frozen", "frozen then thawed", "killed"]
)
def test_the_run_not_the_trials_gives_way_though_the_trials_run_has_already_stopped(
    then: str,
) -> None:
    state, key, freed, _ = _taken_up_at_once()
    # Before this peer's next monitor pass, the other peer's stopper ends its run at the
    # re-run's first rung (the trial had been frozen there before it was lost).
    if then != "still running (control)":
        _race_event(state, key, _RACER, 2, 6_000, "killed" if then == "killed" else "frozen", 1,
               reason="at rung 1")  # fmt: skip
    if then == "frozen then thawed":
        _race_event(state, key, _RACER, 3, 7_000, "thawed", 1)
    view = state.trial(key)
    assert view is not None and view.runner == _RACER  # in every replica: the other's run
    asked = _stops_asked_of_a_young_run(state, key, answered=(freed.key,))
    # Not the trial's run (its reports count for nothing): it went on to its end beside a
    # frozen trial, and beside the other peer's run once that was thawed (a soak of 3 real
    # peers: 2 claim races in 52 re-claims, the trial's run frozen 0.0-0.7 s after the other
    # gave way; the order can go either way).
    assert asked, f"run here not stopped; the trial is {view.state} on node {_RACER.hex()[:8]}"


def test_two_runs_taken_up_at_once_after_two_losses_of_one_run_are_told_apart() -> None:
    # Every peer that finds a run lost writes its loss: two that each took the trial up having
    # heard only their own answered different losses, and both ran it to its end (a review of
    # the day's fixes).
    state, trial = _one_trial(max_step=10)
    key, dead = trial.key, b"d" * 16
    _race_event(state, key, dead, 1, 500, "started")
    last = _race_event(state, key, dead, 2, 600, "progress", 1, metrics={"objective": 0.5})
    mine = _race_event(state, key, ME, 2, 70_000, "lost", reason="no news", after=last.key)
    seen = state.trial(key)  # as this peer launched its run (see TrialRunner.launch)
    assert seen is not None and seen.free_ends == (last.key,)
    theirs = _race_event(state, key, _RACER, 1, 70_001, "lost", reason="no news", after=last.key)
    _race_event(state, key, ME, 3, 70_010, "started", supersedes=(mine.key,), after=last.key)
    _race_event(state, key, _RACER, 2, 70_011, "started", supersedes=(theirs.key,),
                after=last.key)  # fmt: skip
    view = state.trial(key)
    assert view is not None and view.state == "running" and view.runner == _RACER
    assert _stops_asked_of_a_young_run(state, key, seen.free_events + seen.free_ends)
    # A run here taken for lost since (its loss follows this run's own report) goes on.
    state, trial = _one_trial(max_step=10)
    key = trial.key
    freed = _race_event(state, key, dead, 1, 500, "lost", reason="its peer was gone")
    seen = state.trial(key)
    assert seen is not None
    _race_event(state, key, ME, 2, 1_000, "started", supersedes=(freed.key,))
    mine = _race_event(state, key, ME, 3, 1_500, "progress", 1, metrics={"objective": 0.5})
    lost = _race_event(state, key, _RACER, 1, 9_000, "lost", reason="no news", after=mine.key)
    _race_event(state, key, _RACER, 2, 9_001, "started", supersedes=(lost.key,), after=mine.key)
    assert _stops_asked_of_a_young_run(state, key, seen.free_events + seen.free_ends) == []


@pytest.mark.parametrize("then", ["interrupted", "lost", "failed"])
def test_the_run_not_the_trials_gives_way_unless_the_trials_run_failed(then: str) -> None:
    # Gave way whatever had become of the trial's run: failed there, a completion here,
    # which would have counted, was given up (a review of the day's fixes). Interrupted or
    # lost, the trial is free in every replica and the run here is not its run: a third
    # peer took it up beside it, and both ran it to the end (a review of the session's fixes).
    state, key, freed, theirs = _taken_up_at_once()
    _race_event(state, key, _RACER if then != "lost" else ME, 4, 5_500, then,
                reason="its peer was stopped", after=theirs.key)  # fmt: skip
    view = state.trial(key)
    assert view is not None and view.state == then and view.runner == _RACER
    asked = _stops_asked_of_a_young_run(state, key, (freed.key,))
    assert bool(asked) == (then != "failed"), asked


def _launched_with_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link_tree: Callable[[Path, Path], None]
) -> tuple[TrialRunner, Any]:
    """A runner that launched a trial of an experiment with a bundle of code, laid out by
    link_tree in place of _layout._link_tree, and saw its run to the end; and its node."""
    from metaopt.peer import _layout

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "t.py").write_text("print('METAOPT {\"objective\": 0.5}')\n")
    state, trial = _one_trial(bundle={"manifest": {"files": []}, "root": "/r"})
    view = state.trial(trial.key)
    assert view is not None
    node: Any = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    node.dirs = SimpleNamespace(trials=tmp_path / "trials", root=tmp_path)
    node.kick = lambda: None  # (a slot freed: the node schedules again)
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1, timing=Timing()))  # type: ignore[arg-type]
    runner.layouts._bundles[state.key] = bundle
    monkeypatch.setattr(_layout, "_link_tree", link_tree)

    async def launched() -> None:
        await runner.launch(state, view)
        await asyncio.gather(*(r.task for r in runner.running.values() if r.task is not None))

    try:
        asyncio.run(launched())
    finally:
        runner.watchdog.close()
    return runner, node


@pytest.mark.parametrize("disk", ["takes it", "full"])
def test_a_launch_lays_out_the_trials_code_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, disk: str
) -> None:
    # Each launch hard-linked the experiment's whole bundle into the trial's folder on the
    # event loop: a bundle of 11,000 files (well under the 50 MiB cap) held a real peer's loop
    # 0.7 s a launch (an asyncio and child process review). A disk that refuses the copy sets
    # the trial free, as one that refuses its folder does.
    from metaopt.peer import _layout

    on_loop: list[bool] = []
    real = _layout._link_tree

    def spy(src: Path, dest: Path) -> None:
        on_loop.append(threading.current_thread() is threading.main_thread())
        if disk == "full":
            raise OSError(errno.ENOSPC, "No space left on device", str(dest))
        real(src, dest)

    _, node = _launched_with_code(tmp_path, monkeypatch, spy)
    assert on_loop == [False], "the trial's code was laid out on the event loop's thread"
    kinds = [kind for _, kind, _ in node.written]
    assert kinds[-1] == ("completed" if disk == "takes it" else "interrupted"), node.written


def test_a_report_held_back_is_kept_when_a_report_of_other_metrics_follows() -> None:
    # A script reporting its training loss and its loss in two calls an epoch, 0.5 s apart:
    # the second of each epoch was held (within report_interval of the first), then replaced
    # unwritten by the next epoch's first. On a real peer the trial showed no loss while it
    # ran, its curve kept 1 point of 10, and the stoppers had no curve to judge (a review of
    # the results users read).
    clock = [0.0]
    written: list[tuple[str, int | None, dict[str, Any]]] = []
    node = SimpleNamespace(
        node_id=ME,
        clock=lambda: clock[0],
        write_event=lambda e, t, kind, **kw: written.append(
            (kind, kw.get("step"), dict(kw.get("metrics") or {}))
        ),
        dirs=SimpleNamespace(trials=Path("/nonexistent/metaopt-test/trials")),
    )
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1, timing=Timing()))  # type: ignore[arg-type]
    runner.monotonic = lambda: clock[0]
    run = Running(runner.slots[0], b"e" * 32, b"t" * 32, began=0.0)
    for step in range(1, 11):  # an epoch every 0.5 s, two reports each
        clock[0] = step / 2
        runner._on_event(run, "progress", {"step": step, "metrics": {"train_loss": 2 / step}})
        clock[0] = step / 2 + 0.001
        runner._on_event(run, "progress", {"step": step, "metrics": {"loss": 1 / step}})
    recorded = [s for kind, s, m in written if kind == "progress" and "loss" in m]
    # Reports 0.5 s apart are under the 5 a second thinning allows: every epoch's loss is
    # recorded, at the latest with the next record (step 10's is still held).
    assert recorded == list(range(1, 10)), written
    assert list(run.held.values()) == [(10, {"loss": 0.1})]


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO])
def test_a_disk_refusing_a_trials_code_sets_it_free_and_holds_back_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: int
) -> None:
    # Laid out by the executor since the layout left the event loop, a refused copy wrote
    # the trial's interruption but held nothing back: the slot freed and the next trial
    # started at once, again and again (the storm a refused folder had, fixed by its hold);
    # and a failing disk (EIO) failed the trial for good (a review of the session's fixes).
    def refused(src: Path, dest: Path) -> None:
        raise OSError(error, os.strerror(error), str(dest))

    runner, node = _launched_with_code(tmp_path, monkeypatch, refused)
    assert [kind for _, kind, _ in node.written][-1] == "interrupted", node.written
    assert runner.starts_held() is not None and runner.free_slots() == 0


class _FoldingNode:
    """A node whose events (step and metrics too) fold into a real ExperimentState, in the
    order written; its disk refuses writes while ``full``."""

    def __init__(self) -> None:
        rec = experiment_record(
            ExperimentSpec(name="e", space={"x": "uniform(0, 1)"}, command=("t.py",))
        )
        spec = parse_experiment(rec)
        assert spec is not None
        self.state = ExperimentState(rec.key, spec)
        body = {"params": {"x": 0.5}, "node": ME, "counter": 1}
        self.trial = Record.create(TRIAL, ME, 1, 0, body, [rec.key])
        self.state.apply(self.trial)
        self.node_id = ME
        self.stopping = False
        self.storage = StorageTrouble()
        self.clock = lambda: 0.0
        gone = Path("/nonexistent/metaopt-test")
        self.dirs = SimpleNamespace(trials=gone / "trials", root=gone)
        self.replica = SimpleNamespace(experiments={rec.key: self.state})
        self.full = False
        self.written: list[tuple[str, int | None]] = []
        self._seq = 1
        self.kick = lambda: None

    def write_event(self, experiment: bytes, trial: bytes, kind: str, **kw: Any) -> None:
        if self.full:
            raise StoreWriteFailed("cannot write the store: No space left on device", "full")
        self._seq += 1
        self.written.append((kind, kw.get("step")))
        body = EventBody(
            trial, experiment, kind, ME, kw.get("step"), dict(kw.get("metrics") or {}),
            reason=kw.get("reason"), exit_code=kw.get("exit_code"),
        ).to_body()  # fmt: skip
        self.state.apply(
            Record.create(EVENT, ME, self._seq, 1_000 * self._seq, body, [trial, experiment])
        )


def _runner(node: _FoldingNode, clock: list[float]) -> TrialRunner:
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1, timing=Timing()))  # type: ignore[arg-type]
    runner.monotonic = lambda: clock[0]
    return runner


def _progress(step: int, **metrics: float) -> dict[str, Any]:
    return {"step": step, "metrics": {"step": step, **metrics}}


@pytest.mark.parametrize("last_report", ["held (within the gap)", "written (past the gap)"])
def test_the_last_report_survives_a_full_disk_whether_held_or_not(last_report: str) -> None:
    # A trial ending on a full disk keeps its curve's end once its end is recorded after the
    # disk recovered: a last report past the report gap was not held, its write was refused
    # and it was dropped, with the held report of the same metrics let go before it (a
    # review of the session's fixes).
    node = _FoldingNode()
    clock = [0.0]
    runner = _runner(node, clock)
    run = Running(runner.slots[0], node.state.key, node.trial.key, began=0.0)
    runner.running[0] = run
    runner._on_event(run, "progress", _progress(1, objective=0.5))  # written
    clock[0] = 0.05
    runner._on_event(run, "progress", _progress(2, objective=0.4))  # held
    node.full = True  # the disk fills
    clock[0] = 0.1 if last_report.startswith("held") else 1.0
    runner._on_event(run, "progress", _progress(3, objective=0.3))  # its last report
    outcome = SimpleNamespace(
        status="completed", metrics={"objective": 0.3}, objectives={"objective": 0.3},
        exit_code=0, diverged=False,
    )  # fmt: skip
    process = SimpleNamespace(run=lambda: asyncio.sleep(0, outcome), pid=None)
    asyncio.run(runner._supervise(run, process))  # type: ignore[arg-type]
    assert node.written == [("progress", 1)]  # (nothing more while the disk is full)
    node.full = False
    runner.record_unrecorded()
    view = node.state.trial(node.trial.key)
    assert view is not None and view.state == "completed"
    assert view.curve[-1] == (3, 0.3), (last_report, view.curve, node.written)


def test_a_report_held_before_a_resumed_run_restarted_is_not_written_after_it() -> None:
    # A resumed run (after step 30) whose script says two stepless things at start-up
    # (numbered 31, 32 by the executor) then reports its first step, 1: "restarted" is
    # written (it began again from 0), then the held report numbered 32 is written after
    # it, as news of the new run: the trial reads as at step 32 while it is at step 1.
    # (Held reports were replaced by the next one, never written, until each set of metric
    # names kept its own; a review of the session's fixes.)
    node = _FoldingNode()
    clock = [0.0]
    runner = _runner(node, clock)
    run = Running(runner.slots[0], node.state.key, node.trial.key, began=0.0, resumed_after=30)
    runner._on_event(run, "progress", {"step": 31, "metrics": {"n_params": 5}})  # written
    clock[0] = 0.05
    runner._on_event(run, "progress", {"step": 32, "metrics": {"lr": 0.1}})  # held
    clock[0] = 0.1
    runner._on_event(run, "progress", _progress(1, objective=0.9))  # "restarted", held
    clock[0] = 20.0
    runner._on_event(run, "heartbeat", {})  # the held ones are written
    assert ("restarted", None) in node.written
    after_restart = node.written[node.written.index(("restarted", None)) :]
    view = node.state.trial(node.trial.key)
    assert view is not None
    assert view.last_step == 1, (view.last_step, after_restart)


def test_the_latest_held_report_of_each_set_of_metrics_is_written_oldest_first() -> None:
    node = _FoldingNode()
    clock = [0.0]
    runner = _runner(node, clock)
    run = Running(runner.slots[0], node.state.key, node.trial.key, began=0.0)
    runner._on_event(run, "progress", _progress(1, objective=0.9))  # written
    for step, at in ((2, 0.01), (3, 0.02), (4, 0.03)):
        clock[0] = at
        runner._on_event(run, "progress", _progress(step, objective=1 / step))
        runner._on_event(run, "progress", {"step": step, "metrics": {"lr": 0.1 * step}})
    clock[0] = 0.5  # past the gap: both sets' latest, then this one
    runner._on_event(run, "progress", _progress(5, objective=0.2))
    assert node.written == [("progress", 1), ("progress", 4), ("progress", 5)]
    view = node.state.trial(node.trial.key)
    assert view is not None and view.metrics["lr"] == pytest.approx(0.4)


def test_every_set_of_metric_names_of_an_epoch_is_written_with_the_next_epoch() -> None:
    # A script reporting, at each epoch's end, its metrics in _MAX_HELD + 1 calls of one set
    # of names each: the report due past the gap was held first, which let go of the oldest
    # held one though every held one was about to be written; one set never had a point
    # while the trial ran (a review of the session's fixes).
    from metaopt.peer._runner import _MAX_HELD

    node = _FoldingNode()
    clock = [0.0]
    runner = _runner(node, clock)
    run = Running(runner.slots[0], node.state.key, node.trial.key, began=0.0)
    names = ["epoch_time", "objective", *(f"m{i}" for i in range(_MAX_HELD - 1))]
    for epoch in range(1, 11):
        clock[0] = float(epoch)
        for name in names:
            runner._on_event(run, "progress", {"step": epoch, "metrics": {name: 1.0 / epoch}})
    view = node.state.trial(node.trial.key)
    assert view is not None
    # Each epoch's reports (all but the last epoch's, held for the end) are written.
    assert [step for step, _ in view.curve] == list(range(1, 10)), view.curve


def test_held_reports_stay_bounded_while_the_disk_refuses_writes() -> None:
    from metaopt.peer._runner import _MAX_HELD

    # A script reporting once a minute (every report past the gap, so due), each report with
    # a set of metric names of its own (the _hold docstring: "a script that names new metrics
    # at every report"), while the disk is full: a due report holds without making room, the
    # write is refused, nothing was let go, and the held reports grew with every report (a
    # review of the session's fixes).
    node = _FoldingNode()
    clock = [0.0]
    runner = _runner(node, clock)
    run = Running(runner.slots[0], node.state.key, node.trial.key, began=0.0)
    node.full = True
    for epoch in range(1, 201):
        clock[0] = 60.0 * epoch
        runner._on_event(run, "progress", {"step": epoch, "metrics": {f"loss_{epoch}": 0.5}})
    assert len(run.held) <= 2 * _MAX_HELD, f"{len(run.held)} reports held"
