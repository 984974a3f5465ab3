"""The peer's trial runner: launch, events, outcomes, stop requests and the stopper's
decisions, where the runner tests left behaviour unpinned."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from crdt import Record
from metaopt._errors import MetaoptError
from metaopt._records import (
    EVENT,
    TRIAL,
    EventBody,
    ExperimentSpec,
    experiment_record,
    parse_experiment,
)
from metaopt._state import ExperimentState
from metaopt.freezethaw import Action, Decision
from metaopt.peer._gpus import Slot
from metaopt.peer._runner import SUPERSEDED, THAW_CODE_WAIT, Running, TrialRunner
from metaopt.space import Space
from tests.metaopt.peer.test_runner_decisions import (
    ME,
    _frozen_trial,
    _JudgeFrozen,
    _Node,
    _one_trial,
    _runner_in,
)
from tests.metaopt.stoppers import Rule, RuleStopper

OTHER = b"o" * 16
SPACE = {"x": "uniform(0, 1)"}


def _runner(state: ExperimentState, slots: int = 1) -> tuple[_Node, TrialRunner]:
    node = _Node(state, Space.from_dict(SPACE))
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=slots))  # type: ignore[arg-type]
    return node, runner


def _kw_of(node: _Node) -> list[tuple[str, dict[str, Any]]]:
    """Capture each event's kind and keywords as the node writes it."""
    seen: list[tuple[str, dict[str, Any]]] = []
    write = node.write_event

    def spy(experiment: bytes, trial: bytes, kind: str, **kw: Any) -> None:
        seen.append((kind, kw))
        write(experiment, trial, kind, **kw)

    node.write_event = spy  # type: ignore[method-assign]
    return seen


def _event(state: ExperimentState, trial: bytes, kind: str, node: bytes, seq: int,
           step: int | None = None, metrics: dict[str, Any] | None = None) -> None:  # fmt: skip
    """Apply one event of ``node``'s (seq counted past the helpers' own, which use 1-20)."""
    body = EventBody(trial, state.key, kind, node, step, metrics or {}).to_body()
    state.apply(Record.create(EVENT, node, 900 + seq, 50_000 + seq, body, [trial, state.key]))


def _add_trial(state: ExperimentState, counter: int, x: float, node: bytes = ME) -> bytes:
    body = {"params": {"x": x}, "node": node, "counter": counter}
    trial = Record.create(TRIAL, node, 100 + counter, 0, body, [state.key])
    state.apply(trial)
    return trial.key


def _stopping_process(asked: list[str] | None = None) -> Any:
    return SimpleNamespace(request_stop=(asked if asked is not None else []).append, exited=False)


def _for_each(action: Action, why: str) -> Rule:
    return lambda curves, own, free: [Decision(t, action, why) for t in sorted(own)]


# ------------------------------------------------------------------------------ can_run


def test_an_experiment_without_a_command_cannot_run_and_a_shared_dir_one_can() -> None:
    """A Study's experiment (ask/tell, no command) is never launched by a peer; one whose code
    is a shared folder (no manifest to lay out) runs at once, in that folder."""
    study = ExperimentState(b"s" * 32, ExperimentSpec(name="s", space=SPACE))
    _, runner = _runner(study)
    assert runner.can_run(study) is False
    shared = ExperimentState(
        b"h" * 32,
        ExperimentSpec(name="h", space=SPACE, command=("t.py",), bundle={"shared_dir": "/srv/c"}),
    )
    assert runner.can_run(shared) is True
    assert runner.layouts._laying_out == {}


@pytest.mark.asyncio
async def test_a_bundle_that_can_never_be_laid_out_is_marked_unrunnable_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broken manifest never changes: the experiment is set aside (said once), not laid out
    again at every scheduling pass."""
    spec = ExperimentSpec(
        name="e", space=SPACE, command=("t.py",), bundle={"manifest": {"files": {}}, "root": "/r"}
    )
    state = ExperimentState(b"k" * 32, spec)
    _, runner = _runner(state)
    runner.node.dirs.bundles = Path("/nonexistent/metaopt-test/bundles")  # type: ignore[attr-defined]
    tries: list[int] = []

    def materialize(state: ExperimentState, chunk: Any) -> Path:
        tries.append(1)
        raise MetaoptError("the manifest names a file outside the bundle")

    runner.layouts._materialize = materialize  # type: ignore[method-assign]
    for _ in range(3):
        if not runner.can_run(state) and state.key in runner.layouts._laying_out:
            await runner.layouts._laying_out[state.key]
    assert runner.unrunnable == {state.key: "the manifest names a file outside the bundle"}
    assert tries == [1] and not runner.can_run(state)
    assert caplog.text.count("cannot run here") == 1


# ------------------------------------------------------------------------------ launch


def test_a_thaw_writes_thawed_a_fresh_launch_started_and_a_stale_stop_request_is_dropped(
    tmp_path: Path,
) -> None:
    """A thaw's first event is "thawed" (the state tells a resume from a start by it); and a
    freeze or kill its last life left on disk is forgotten once the trial runs again, or a
    restart would record that old request for the new run."""
    for thaw, kind in ((True, "thawed"), (False, "started")):
        state, trial = _frozen_trial(3)
        node, runner = _runner(state)
        node.dirs = SimpleNamespace(trials=tmp_path / kind / "trials", root=tmp_path / kind)
        runner.trial_dir(trial).mkdir(parents=True)
        runner.note_stop_request(trial, "killed", "not in the top 1/3 at rung 3", 3)
        assert runner.stop_requested(trial) is not None

        def cannot_start(*args: Any) -> Any:
            raise MetaoptError("no program here")

        runner._spec = cannot_start  # type: ignore[method-assign]
        view = state.trial(trial)
        assert view is not None
        asyncio.run(runner.launch(state, view, thaw=thaw))
        assert [k for _, k, _ in node.written] == [kind, "failed"]
        assert runner.stop_requested(trial) is None


def test_a_trials_spec_runs_py_with_this_python_in_its_folder_from_its_resume_step(
    tmp_path: Path,
) -> None:
    """`t.py` runs under the peer's Python; a shared-dir experiment runs in that folder; a
    regex's step count goes on from the resume step; the slot's GPU reaches the trial."""
    state, trial = _frozen_trial(5)
    view = state.trial(trial)
    assert view is not None
    runner = _runner_in(tmp_path)
    gpu = Slot(0, "1", {"CUDA_VISIBLE_DEVICES": "1"})
    spec = runner._spec(state, view, gpu, 5)
    assert spec.argv == [sys.executable, "t.py"]
    assert spec.step_offset == 5 and spec.env["METAOPT_RESUME_STEP"] == "5"
    assert spec.env["CUDA_VISIBLE_DEVICES"] == "1"
    assert spec.cwd == runner.trial_dir(trial)
    assert runner._spec(state, view, gpu, None).step_offset == 0
    shared = ExperimentSpec(name="e", space=SPACE, command=("./run.sh", "--x", "1"),
                            bundle={"shared_dir": str(tmp_path / "code")})  # fmt: skip
    other = ExperimentState(state.key, shared)
    spec = runner._spec(other, view, gpu, None)
    assert spec.cwd == tmp_path / "code" and spec.argv[0] == "./run.sh"


# ------------------------------------------------------------------------------ events


def _thinless_runner() -> tuple[TrialRunner, list[tuple[str, dict[str, Any]]]]:
    from metaopt.peer._config import Timing

    written: list[tuple[str, dict[str, Any]]] = []
    node = SimpleNamespace(
        node_id=ME,
        clock=lambda: 0.0,
        write_event=lambda e, t, kind, **kw: written.append((kind, kw)),
        dirs=SimpleNamespace(trials=Path("/nonexistent/metaopt-test/trials")),
    )
    config = SimpleNamespace(gpus="none", slots=1, timing=Timing(report_interval=0))
    return TrialRunner(node, config), written  # type: ignore[arg-type]


def test_a_report_without_a_step_keeps_the_last_step_and_step_is_no_metric() -> None:
    """The step is the event's, not a metric; a report without one (an eval metric) leaves
    the run's last step as it was, which a freeze is recorded at."""
    runner, written = _thinless_runner()
    run = Running(runner.slots[0], b"e" * 32, b"t" * 32)
    runner._on_event(run, "progress", {"step": 7, "metrics": {"loss": 0.5, "step": 7}})
    runner._on_event(run, "progress", {"metrics": {"val": 0.25}})
    assert written == [
        ("progress", {"step": 7, "metrics": {"loss": 0.5}}),
        ("progress", {"step": None, "metrics": {"val": 0.25}}),
    ]
    assert run.last_step == 7


@pytest.mark.parametrize("first", [1, 29, 30, 31])
def test_a_resumed_run_whose_first_step_is_below_its_resume_step_says_it_restarted(
    first: int,
) -> None:
    """Thawed after step 30, a script that keeps checkpoints but counts from 1 again ran a new
    curve beside the old one: status showed step 37 with the new run's loss of step 29. Its
    first step below the resume step is recorded as a restart (once), so the curve is the
    new run's; a step at or past the resume step goes on from the checkpoint."""
    runner, written = _thinless_runner()
    run = Running(runner.slots[0], b"e" * 32, b"t" * 32, resumed_after=30)
    # (As the executor gives them: the step the script reported is among its metrics too.)
    runner._on_event(run, "progress", {"step": first, "metrics": {"loss": 0.5, "step": first}})
    runner._on_event(run, "progress", {"step": 1, "metrics": {"loss": 0.4, "step": 1}})
    restart = ["restarted"] if first < 30 else []
    assert [kind for kind, _ in written] == [*restart, "progress", "progress"]
    if restart:  # (where it went on from: step 0, or the checkpoint of the step before)
        assert written[0][1]["step"] == (None if first == 1 else first - 1)
    fresh = Running(runner.slots[0], b"e" * 32, b"u" * 32)
    runner._on_event(fresh, "progress", {"step": 1, "metrics": {"loss": 0.5}})
    assert written[-1][0] == "progress"


def test_a_quiet_run_with_nothing_held_writes_a_heartbeat() -> None:
    """With no report held back, a heartbeat is news that the trial still runs: without it,
    a quiet trial is taken for lost by the other peers."""
    runner, written = _thinless_runner()
    run = Running(runner.slots[0], b"e" * 32, b"t" * 32)
    runner._on_event(run, "heartbeat", {})
    assert written == [("heartbeat", {})]


def test_an_error_that_is_not_the_disks_is_raised_to_the_executor() -> None:
    """Only a disk refusing writes is noted and passed over; any other error in recording an
    event is raised (and logged by the executor), never silently dropped."""
    from metaopt.peer._storage import StorageTrouble

    runner, _ = _thinless_runner()
    runner.node.storage = StorageTrouble()

    def broken(*args: Any, **kw: Any) -> None:
        raise ValueError("a bug")

    runner.node.write_event = broken
    run = Running(runner.slots[0], b"e" * 32, b"t" * 32)
    with pytest.raises(ValueError, match="a bug"):
        runner._on_event(run, "heartbeat", {})


# ----------------------------------------------------------------------------- outcomes


def test_a_freeze_is_recorded_at_the_runs_last_step_and_a_failure_with_its_stderr() -> None:
    """The frozen event's step is where a thaw resumes (METAOPT_RESUME_STEP); a failure keeps
    the last stderr lines the user reads in `metaopt show`."""
    state, trial = _frozen_trial(1)
    node, runner = _runner(state)
    seen = _kw_of(node)
    run = Running(runner.slots[0], state.key, trial, outcome="frozen", reason="low", last_step=7)
    outcome = SimpleNamespace(status="interrupted", exit_code=-15, objectives={}, metrics={})
    runner._record_outcome(run, outcome)
    assert seen[-1] == ("frozen", {"step": 7, "reason": "low", "rung": None})
    crashed = SimpleNamespace(status="failed", exit_code=1, objectives={}, metrics={},
                              reason="exited with code 1", diverged=False,
                              stderr_tail=["Traceback", "KeyError: 'lr'"])  # fmt: skip
    runner._record_outcome(Running(runner.slots[0], state.key, trial), crashed)
    assert seen[-1][0] == "failed"
    assert seen[-1][1]["stderr"] == "Traceback\nKeyError: 'lr'"


def test_a_resumed_run_is_done_only_if_its_curve_had_every_objective() -> None:
    """With two objectives, a resumed run that exits 0 reporting nothing completed earlier
    only if its curve holds both: one alone is a failure, not a result with a hole."""
    spec = ExperimentSpec(
        name="e", space=SPACE, command=("t.py",), objectives=("loss", "time"),
        directions=("minimize", "minimize"), max_step=4,
    )  # fmt: skip
    rec = experiment_record(spec)
    parsed = parse_experiment(rec)
    assert parsed is not None
    for metrics, recorded in (({"loss": 0.5}, "failed"), ({"loss": 0.5, "time": 3.0}, "completed")):
        state = ExperimentState(rec.key, parsed)
        trial = _add_trial(state, 1, 0.5)
        _event(state, trial, "started", ME, 2)
        _event(state, trial, "progress", ME, 3, 4, metrics)
        node, runner = _runner(state)
        outcome = SimpleNamespace(
            status="failed", exit_code=0, objectives={}, metrics={},
            reason="no objective reported", stderr_tail=(), diverged=False,
        )  # fmt: skip
        run = Running(runner.slots[0], state.key, trial, resumed_after=4)
        runner._record_outcome(run, outcome)
        assert node.written[-1][1] == recorded, metrics


@pytest.mark.parametrize(
    ("max_step", "recorded"), [(100, "failed"), (None, "failed"), (25, "completed")]
)
def test_a_resumed_run_that_exits_0_at_once_is_done_only_if_it_had_reached_the_last_step(
    max_step: int | None, recorded: str
) -> None:
    """Thawed after step 25 of 100, a script whose checkpoint fails to load exits 0 without
    reporting: it was recorded completed with its step-25 loss, which could be the best (the
    README: a trial that ends without its objective is failed). Only a run that had reached
    the last step (it finished just as its freeze landed) is done; with no last step known,
    nothing says it had finished."""
    spec = ExperimentSpec(name="e", space=SPACE, command=("t.py",), max_step=max_step)
    rec = experiment_record(spec)
    parsed = parse_experiment(rec)
    assert parsed is not None
    state = ExperimentState(rec.key, parsed)
    trial = _add_trial(state, 1, 0.5)
    _event(state, trial, "started", ME, 2)
    _event(state, trial, "progress", ME, 3, 25, {"objective": 0.5})
    node, runner = _runner(state)
    outcome = SimpleNamespace(
        status="failed", exit_code=0, objectives={}, metrics={},
        reason="no objective reported", stderr_tail=(), diverged=False,
    )  # fmt: skip
    runner._record_outcome(Running(runner.slots[0], state.key, trial, resumed_after=25), outcome)
    assert node.written[-1][1] == recorded


# ------------------------------------------------------------------------ stop requests


@pytest.mark.parametrize(
    ("kept", "read"),
    [
        ({"outcome": "killed", "reason": "r", "rung": 3}, ("killed", "r", 3)),
        ({"outcome": "frozen", "reason": 5, "rung": None}, ("frozen", "stopped by hand", None)),
        ({"outcome": "killed", "reason": "r", "rung": -1}, ("killed", "r", None)),
        ({"outcome": "killed", "reason": "r", "rung": 2**63}, ("killed", "r", None)),
        ({"outcome": "killed", "reason": "r", "rung": True}, ("killed", "r", None)),
        ({"outcome": "interrupted", "reason": "r", "rung": None}, None),
        ({"outcome": "completed", "reason": "r", "rung": None}, None),
        (["killed"], None),
    ],
)
def test_a_stop_request_on_disk_is_read_only_as_a_freeze_or_kill_with_a_valid_rung(
    tmp_path: Path, kept: Any, read: Any
) -> None:
    """The file is the peer's own, but may be damaged: only a freeze or a kill is replayed
    after a crash, and a rung a record could not carry is dropped (a killed event with it
    would be refused, and the trial not recorded at all)."""
    runner = _runner_in(tmp_path)
    trial = b"t" * 32
    runner.trial_dir(trial).mkdir(parents=True)
    (runner.trial_dir(trial) / "stop-request").write_text(json.dumps(kept))
    assert runner.stop_requested(trial) == read


def test_only_a_run_stopping_as_frozen_is_recorded_killed_instead() -> None:
    """`metaopt kill` during a peer's stop (interrupted) or of a run another peer completed
    (superseded) changes nothing: those ends are not a freeze to turn into a kill."""
    state, trial = _frozen_trial(1)
    _, runner = _runner(state)
    for outcome in ("interrupted", SUPERSEDED, None):
        run = Running(runner.slots[0], state.key, trial, outcome=outcome, reason="why")
        runner.running[0] = run
        assert not runner.kill_instead(trial, "killed by hand")
        assert (run.outcome, run.reason) == (outcome, "why")


def test_a_kill_for_the_trial_timeout_is_kept_on_disk(tmp_path: Path) -> None:
    """Killed -9 in the kill's grace, a restarted peer must still record the timeout's kill,
    not re-run a hung script from its checkpoint."""
    state, trial = _one_trial(options={"trial_timeout": 60})
    node, runner = _runner(state)
    node.dirs = SimpleNamespace(trials=tmp_path / "trials", root=tmp_path)
    runner.trial_dir(trial.key).mkdir(parents=True)
    run = Running(runner.slots[0], state.key, trial.key, process=_stopping_process(), began=0.0)
    runner.running[0] = run
    runner.monotonic = lambda: 61.0
    asyncio.run(runner.monitor(judge=False))
    why = "ran longer than its trial timeout (60 s)"
    assert runner.stop_requested(trial.key) == ("killed", why, None)


# ---------------------------------------------------------------------------- rerunning


def _lost_while_frozen() -> tuple[ExperimentState, bytes, _Node, TrialRunner]:
    state, trial = _frozen_trial(1, max_trials=1)
    node, runner = _runner(state)
    node.write_event(state.key, trial, "lost", reason="frozen on node 6f0e2a11, which went away")
    return state, trial, node, runner


def test_a_trial_lost_while_frozen_is_rerun_unjudged_when_there_is_no_stopper_or_it_fails() -> None:
    """No stopper, or one that fails, cannot call the trial hopeless: it is re-run, never
    killed as "not worth a re-run"."""

    class _Broken:
        def decide(self, *args: object, **kw: object) -> list[Decision]:
            raise ZeroDivisionError("a bug in the stopper")

    for stopper in (None, _Broken()):
        state, trial, node, runner = _lost_while_frozen()
        runner.early_stopping._stoppers[state.key] = stopper  # type: ignore[assignment]
        view = state.trial(trial)
        assert view is not None and view.lost_frozen and state.budget_spent
        again = asyncio.run(runner.early_stopping.worth_rerun(state, view))
        assert again is not None and again.state == "lost", stopper
        assert [k for _, k, _ in node.written] == ["lost"]


def test_a_trial_lost_while_frozen_that_moved_on_while_judged_is_not_rerun() -> None:
    """Taken by another peer while the stopper thought, it is no longer lost: a re-run here
    would run it twice."""
    state, trial, node, runner = _lost_while_frozen()

    def taken() -> None:
        _event(state, trial, "started", OTHER, 1)

    runner.early_stopping._stoppers[state.key] = RuleStopper(
        _for_each(Action.THAW, "good bet"), taken
    )  # type: ignore[assignment]
    view = state.trial(trial)
    assert view is not None
    assert asyncio.run(runner.early_stopping.worth_rerun(state, view)) is None
    assert [k for _, k, _ in node.written] == ["lost"]


# ---------------------------------------------------------------------------- monitoring


def test_the_stopper_is_told_no_fresh_trial_is_left_once_the_budget_is_spent() -> None:
    """A stopper may freeze a run for a fresh configuration only while one can start."""
    for max_trials, fresh in ((1, False), (None, True)):
        state, trial = _frozen_trial(1, max_trials=max_trials)
        _, runner = _runner(state)
        stopper = RuleStopper(lambda curves, own, free: [])
        runner.early_stopping._stoppers[state.key] = stopper  # type: ignore[assignment]
        asyncio.run(runner.early_stopping._decide(state, {trial.hex()}, 1))
        assert stopper.calls == [({trial.hex()}, 1, fresh)]


def test_a_thaw_asked_with_no_slot_free_takes_the_next_slot_that_frees() -> None:
    """Told "no free slot; freeze a running trial first", a user who did saw the slot go to a
    new trial, again and again (0 of 120 tries): the thaw waits for the slot instead, and
    takes it first (the node asks thaw_asked before any other start)."""
    state, trial = _frozen_trial(1)
    _, runner = _runner(state)
    launched: list[tuple[bytes, bool]] = []

    async def launch(state: ExperimentState, view: Any, *, thaw: bool = False) -> None:
        launched.append((view.key, thaw))

    runner.launch = launch  # type: ignore[method-assign]
    runner.can_run = lambda state: True  # type: ignore[method-assign]
    runner.running[0] = Running(runner.slots[0], state.key, b"r" * 32)  # its one slot, busy
    runner.ask_thaw(state, state.trial(trial))  # type: ignore[arg-type]
    asyncio.run(runner.thaw_asked())
    assert launched == [] and list(runner.thaws_asked) == [trial]
    del runner.running[0]
    asyncio.run(runner.thaw_asked())
    assert launched == [(trial, True)] and runner.thaws_asked == {}
    # Killed (or thawed elsewhere) before a slot freed: passed over, not resumed.
    runner.ask_thaw(state, state.trial(trial))  # type: ignore[arg-type]
    _event(state, trial, "killed", ME, 5)
    asyncio.run(runner.thaw_asked())
    assert launched == [(trial, True)] and runner.thaws_asked == {}


def test_a_thaw_asked_waits_while_its_code_is_being_laid_out_here() -> None:
    """A slot freed while the experiment's code was being laid out again (its bundle deleted):
    the thaw asked was dropped ("not thawed, this peer cannot run it"), the trial left frozen
    and the slot idle for good (a review, 3 of 3). It waits for the layout; a bundle that
    cannot be laid out here at all drops it, saying so."""
    state, trial = _frozen_trial(1)
    _, runner = _runner(state)
    launched: list[bytes] = []

    async def launch(state: ExperimentState, view: Any, *, thaw: bool = False) -> None:
        launched.append(view.key)

    runner.launch = launch  # type: ignore[method-assign]
    now = [100.0]
    runner.monotonic = lambda: now[0]
    laid_out = [False]
    runner.can_run = lambda state: laid_out[0]  # type: ignore[method-assign]
    assert runner.free_slots() == 1
    runner.ask_thaw(state, state.trial(trial))  # type: ignore[arg-type]
    asyncio.run(runner.thaw_asked())
    assert launched == [] and list(runner.thaws_asked) == [trial]
    # Its slot is held meanwhile: a new trial of another experiment took it, and the thaw
    # waited that trial's whole run (a review of the fix).
    assert runner.free_slots() == 0
    now[0] += THAW_CODE_WAIT - 1
    laid_out[0] = True
    asyncio.run(runner.thaw_asked())
    assert launched == [trial] and runner.thaws_asked == {} and runner.free_slots() == 1
    # Its code never laid out (within THAW_CODE_WAIT), or not to be laid out at all: dropped,
    # saying so, and the slot freed.
    laid_out[0] = False
    runner.ask_thaw(state, state.trial(trial))  # type: ignore[arg-type]
    asyncio.run(runner.thaw_asked())
    now[0] += THAW_CODE_WAIT
    asyncio.run(runner.thaw_asked())
    assert launched == [trial] and runner.thaws_asked == {} and runner.free_slots() == 1
    runner.layouts.unrunnable[state.key] = "its manifest is malformed"
    runner.ask_thaw(state, state.trial(trial))  # type: ignore[arg-type]
    asyncio.run(runner.thaw_asked())
    assert launched == [trial] and runner.thaws_asked == {} and runner.free_slots() == 1


def test_another_peers_frozen_trial_is_not_judged_here() -> None:
    """Only this peer's frozen trials are its stopper's to thaw or kill; another's are judged
    by their own peer (both killing or thawing it would clash)."""
    state, trial = _frozen_trial(1, max_trials=1)
    _event(state, trial, "thawed", OTHER, 1)
    _event(state, trial, "frozen", OTHER, 2, 1)
    assert state.trial(trial).state == "frozen"  # type: ignore[union-attr]
    assert state.trial(trial).runner == OTHER  # type: ignore[union-attr]
    node, runner = _runner(state)
    stopper = _JudgeFrozen()
    runner.early_stopping._stoppers[state.key] = stopper
    asyncio.run(runner.early_stopping.thaw())
    asyncio.run(runner.monitor())
    assert node.written == [] and stopper.free == []


@pytest.mark.parametrize("kind", ["failed", "killed"])
def test_a_run_here_is_not_stopped_by_a_failure_or_kill_elsewhere(kind: str) -> None:
    """Only a completion elsewhere makes a run here pointless: this run's completion still
    counts after a failure or kill on the other side of a partition."""
    state, trial = _frozen_trial(1)
    _, runner = _runner(state)
    asked: list[str] = []
    runner.running[0] = Running(runner.slots[0], state.key, trial, process=_stopping_process(asked))
    _event(state, trial, "started", OTHER, 1)
    _event(state, trial, kind, OTHER, 2)
    assert state.trial(trial).state == kind  # type: ignore[union-attr]
    asyncio.run(runner.monitor(judge=False))
    assert asked == []


def test_a_run_already_stopping_is_not_judged_again() -> None:
    """A run asked to freeze is no longer the stopper's: judged again it is counted as a
    running trial (its slot taken twice over in the stopper's plan)."""
    state, busy = _one_trial(max_trials=50)
    _, runner = _runner(state)
    run = Running(runner.slots[0], state.key, busy.key, process=_stopping_process())
    runner.running[0] = run
    stopper = RuleStopper(lambda curves, own, free: [])
    runner.early_stopping._stoppers[state.key] = stopper  # type: ignore[assignment]
    asyncio.run(runner.monitor())
    assert stopper.calls == [({busy.key.hex()}, 0, True)]
    assert asyncio.run(runner.end(busy.key, "frozen", "low"))
    asyncio.run(runner.monitor())
    assert len(stopper.calls) == 1  # nothing of it left to judge


def test_frozen_trials_are_not_settled_while_a_trial_of_theirs_runs_here() -> None:
    """Once the budget is spent the frozen trials are settled only when none of the
    experiment's trials runs here: its end moves the bar they are judged against."""
    state, _ = _frozen_trial(1, max_trials=2)
    running = _add_trial(state, 2, 0.25)
    _event(state, running, "started", ME, 1)
    assert state.budget_spent
    node, runner = _runner(state)
    runner.running[0] = Running(runner.slots[0], state.key, running, process=_stopping_process())
    stopper = RuleStopper(lambda curves, own, free: [])
    runner.early_stopping._stoppers[state.key] = stopper  # type: ignore[assignment]
    asyncio.run(runner.monitor())
    assert node.written == [] and stopper.calls[0][1] == 0


@pytest.mark.parametrize("action", [Action.KILL, Action.CONTINUE])
def test_a_frozen_trial_thawed_while_judged_is_not_killed(action: Action) -> None:
    """The stopper decides on a snapshot: a trial thawed meanwhile (by hand, say) is running
    again and must not be recorded killed, by a KILL or as not worth resuming."""
    state, trial = _frozen_trial(1, max_trials=1)
    node, runner = _runner(state)

    def thawed() -> None:
        _event(state, trial, "thawed", ME, 1)

    stopper = RuleStopper(_for_each(action, "hopeless"), thawed)
    runner.early_stopping._stoppers[state.key] = stopper  # type: ignore[assignment]
    asyncio.run(runner.monitor())
    assert node.written == []
    assert state.trial(trial).state == "running"  # type: ignore[union-attr]


# ------------------------------------------------------------------------------- thawing


def test_interrupted_here_counts_this_peers_lost_and_running_trials_not_running_here() -> None:
    """Its last life's trials (running or lost, not running now) wait to be run again here;
    one running here now, another peer's, or a stopped experiment's does not."""
    state, _ = _frozen_trial(1)
    mine_lost = _add_trial(state, 2, 0.2)
    _event(state, mine_lost, "started", ME, 1)
    _event(state, mine_lost, "lost", OTHER, 1)
    mine_now = _add_trial(state, 3, 0.3)
    _event(state, mine_now, "started", ME, 2)
    theirs = _add_trial(state, 4, 0.4)
    _event(state, theirs, "started", OTHER, 2)
    _, runner = _runner(state, slots=2)
    assert state.trial(mine_lost).state == "lost"  # type: ignore[union-attr]
    assert runner.interrupted_here(state) == 2
    runner.running[0] = Running(runner.slots[0], state.key, mine_now, process=_stopping_process())
    assert runner.interrupted_here(state) == runner.interrupted_here() == 1
    state.stopped = True
    assert runner.interrupted_here() == 0


def test_a_thaw_leaves_the_slots_interrupted_trials_need() -> None:
    """With every free slot reserved for this peer's interrupted trials the stopper is not
    asked (its kills would settle frozen trials with no slot to offer); with one slot over,
    one frozen trial is thawed, not two."""
    state, first = _frozen_trial(1)
    second = _add_trial(state, 2, 0.2)
    for seq, kind in enumerate(("started", "frozen"), 1):
        _event(state, second, kind, ME, seq, 1 if kind == "frozen" else None)
    cut = _add_trial(state, 3, 0.3)
    _event(state, cut, "started", ME, 3)
    node, runner = _runner(state, slots=1)
    stopper = RuleStopper(_for_each(Action.KILL, "hopeless"))
    runner.early_stopping._stoppers[state.key] = stopper  # type: ignore[assignment]
    asyncio.run(runner.early_stopping.thaw())
    assert stopper.calls == [] and node.written == []

    node, runner = _runner(state, slots=2)
    runner.early_stopping._stoppers[state.key] = RuleStopper(_for_each(Action.THAW, "good bet"))  # type: ignore[assignment]
    launched: list[bytes] = []

    async def launch(state: ExperimentState, view: Any, *, thaw: bool = False) -> None:
        launched.append(view.key)
        slot = next(s for s in runner.slots if s.index not in runner.running)
        runner.running[slot.index] = Running(slot, state.key, view.key)

    runner.launch = launch  # type: ignore[method-assign]
    asyncio.run(runner.early_stopping.thaw())
    assert len(launched) == 1 and launched[0] in (first, second)


def test_a_stopped_experiments_frozen_trials_are_not_thawed() -> None:
    """`metaopt stop` ends an experiment: its frozen trials stay frozen."""
    state, _ = _frozen_trial(1)
    state.stopped = True
    node, runner = _runner(state)
    stopper = RuleStopper(_for_each(Action.THAW, "good bet"))
    runner.early_stopping._stoppers[state.key] = stopper  # type: ignore[assignment]
    asyncio.run(runner.early_stopping.thaw())
    assert stopper.calls == [] and node.written == []


@pytest.mark.parametrize("action", [Action.THAW, Action.KILL])
def test_a_thaw_acts_only_on_trials_still_frozen_after_the_decision(action: Action) -> None:
    """Killed by hand while the stopper thought, a trial is neither launched again nor
    recorded killed a second time over its new state."""
    state, trial = _frozen_trial(1)
    node, runner = _runner(state)

    def killed() -> None:
        _event(state, trial, "killed", ME, 1)

    runner.early_stopping._stoppers[state.key] = RuleStopper(_for_each(action, "why"), killed)  # type: ignore[assignment]
    launched: list[bytes] = []

    async def launch(state: ExperimentState, view: Any, *, thaw: bool = False) -> None:
        launched.append(view.key)

    runner.launch = launch  # type: ignore[method-assign]
    asyncio.run(runner.early_stopping.thaw())
    assert launched == [] and node.written == []


OTHER = b"o" * 16


def _thaw_all(curves: Any, own: Any, free: Any) -> list[Decision]:
    return [Decision(t, Action.THAW, "good bet") for t in sorted(own)]


def _frozen_of(state: ExperimentState, node: bytes, first: int, x: float, value: float) -> bytes:
    """Another trial of node's, started, at step 1 with value, then frozen there (its records
    numbered from first on)."""
    body = {"params": {"x": x}, "node": node, "counter": first}
    trial = Record.create(TRIAL, node, first, 0, body, [state.key])
    state.apply(trial)
    steps = (("started", None), ("progress", 1), ("frozen", 1))
    for seq, (kind, at) in enumerate(steps, first + 1):
        metrics = {"objective": value} if kind == "progress" else {}
        ev = EventBody(trial.key, state.key, kind, node, at, metrics).to_body()
        state.apply(Record.create(EVENT, node, seq, 1_000 * seq, ev, [trial.key, state.key]))
    view = state.trial(trial.key)
    assert view is not None and view.state == "frozen" and view.runner == node
    return trial.key


def _launches(runner: Any) -> list[bytes]:
    launched: list[bytes] = []

    async def launch(state: ExperimentState, view: Any, *, thaw: bool = False) -> None:
        launched.append(view.key)
        slot = next(s for s in runner.slots if s.index not in runner.running)
        runner.running[slot.index] = Running(slot, state.key, view.key)

    runner.launch = launch
    return launched


def test_thaws_take_no_more_slots_than_the_experiments_turn_gives() -> None:
    """thaw(turns): two free slots, two frozen trials worth thawing, but the experiment's turn
    gives it one slot (the other is planned for a new point): one thaw, not two."""
    state, _first = _frozen_trial(1)
    _frozen_of(state, ME, 50, 0.25, 0.4)
    _node, runner = _runner(state, slots=2)
    runner.early_stopping._stoppers[state.key] = RuleStopper(_thaw_all)  # type: ignore[assignment]
    launched = _launches(runner)
    asyncio.run(runner.early_stopping.thaw(turns=lambda: ({state.key: 1}, 0)))
    assert len(launched) == 1


def test_thaws_may_take_the_slots_no_turn_takes() -> None:
    """thaw(turns): a slot that no experiment's turn takes may go to a thaw."""
    state, first = _frozen_trial(1)
    _node, runner = _runner(state, slots=1)
    runner.early_stopping._stoppers[state.key] = RuleStopper(_thaw_all)  # type: ignore[assignment]
    launched = _launches(runner)
    asyncio.run(runner.early_stopping.thaw(turns=lambda: ({}, 1)))
    assert launched == [first]


def _frozen_by_other() -> tuple[ExperimentState, bytes]:
    state, _ = _frozen_trial(1)
    return state, _frozen_of(state, OTHER, 1, 0.75, 0.5)


def test_a_thaw_by_hand_is_not_run_here_once_the_trials_own_peer_is_back() -> None:
    """`metaopt thaw` of another peer's frozen trial waiting for a slot here: if that peer is
    live again when the slot frees, it is passed over (its peer holds the checkpoint and
    thaws it itself; both would run it)."""
    state, trial = _frozen_by_other()
    node, runner = _runner(state, slots=1)
    node.is_alive = lambda n: True  # type: ignore[attr-defined]
    runner.can_run = lambda state: True  # type: ignore[method-assign]
    launched = _launches(runner)
    runner.ask_thaw(state, state.trial(trial))  # type: ignore[arg-type]
    asyncio.run(runner.thaw_asked())
    assert launched == [] and runner.thaws_asked == {}
    # Its peer gone: thawed here.
    node.is_alive = lambda n: False  # type: ignore[attr-defined]
    runner.ask_thaw(state, state.trial(trial))  # type: ignore[arg-type]
    asyncio.run(runner.thaw_asked())
    assert launched == [trial]


# -- From a mutation audit of the trial lifecycle: each test below failed with one small bug
# -- planted in the runner (named in its docstring) that no test of the runner caught.


def test_a_peer_stop_waits_for_its_runs_to_be_recorded() -> None:
    """interrupt_all waits (up to 3 graces + 5 s) for its runs to end: without the wait, a
    peer stop closed the store under trials still saving their checkpoint, their end never
    recorded (only a cluster test caught it)."""
    from tests.metaopt.peer.test_runner_decisions import _running_here

    runner, _, asked = _running_here(exited=False)
    runner.config.timing = SimpleNamespace(stop_grace=1.0)  # type: ignore[attr-defined]
    ended: list[str] = []

    async def main() -> None:
        async def saving_its_checkpoint() -> None:
            await asyncio.sleep(0.2)  # (the trial saves its checkpoint and exits)
            ended.append("recorded")

        runner.running[0].task = asyncio.ensure_future(saving_its_checkpoint())
        await runner.interrupt_all("its peer was stopped")
        assert asked == ["its peer was stopped"] and ended == ["recorded"]

    asyncio.run(main())


def test_an_ended_runs_group_is_released_from_the_watchdog(tmp_path: Path) -> None:
    """A run's process group leaves the watchdog when the run ends: kept, the watchdog would
    SIGTERM and SIGKILL every ended trial's group id when the peer died, by then perhaps
    another process's group."""
    from metaopt.peer._executor import ExecutorConfig, TrialProcess, TrialSpec
    from tests.metaopt.peer.test_runner_decisions import _running_here

    class Watchdog:
        def __init__(self) -> None:
            self.groups: set[int] = set()

        def watch(self, pgid: int) -> None:
            self.groups.add(pgid)

        def release(self, pgid: int) -> None:
            self.groups.discard(pgid)

    runner, _, _ = _running_here(exited=False)
    runner.node.dirs = SimpleNamespace(trials=tmp_path / "trials", root=tmp_path)
    runner.watchdog = Watchdog()  # type: ignore[assignment]
    runner.node.kick = lambda: None  # type: ignore[attr-defined]
    runner.config.timing = SimpleNamespace(  # type: ignore[attr-defined]
        stop_grace=1.0, heartbeat=30.0, report_interval=1.0, report_age_fraction=0.01
    )
    script = tmp_path / "train.py"
    script.write_text("print('METAOPT {\"loss\": 0.5}')\n")
    spec = TrialSpec(
        argv=[sys.executable, str(script)],
        cwd=tmp_path,
        log_path=tmp_path / "output.log",
        config=ExecutorConfig(heartbeat=30.0, grace=0.3, drain=5.0),
    )
    run = runner.running[0]
    started: list[int] = []

    def on_event(kind: str, data: dict[str, Any]) -> None:
        if kind == "started":
            started.append(data["pid"])
        runner._on_event(run, kind, data)

    process = TrialProcess(spec, on_event)
    run.process = process
    asyncio.run(runner._supervise(run, process))
    assert started and runner.running == {}
    assert runner.watchdog.groups == set(), "an ended trial's group is still watched"
