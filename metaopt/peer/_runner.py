"""This peer's slots: launching trials as child processes and recording what happens to them.

A slot is a GPU (or a CPU slot when there is none). A launch writes the trial's ``started``
event before the process starts, gives it its own working directory (the experiment's code,
materialised from the replicated blobs once per experiment and hard-linked per trial), and
turns what the executor reports into events: progress (per report), heartbeat (when quiet),
completed, failed (exit code and the last stderr lines), frozen, killed or interrupted.
It stops runs of trials another peer has completed meanwhile and runs over their trial
timeout, and resumes thaws asked by hand in the next free slot; what its early stoppers
decide (freeze, kill, thaw) is EarlyStopping's (_monitor.py), which it owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from metaopt._errors import MetaoptError
from metaopt._records import MAX_INT, trial_timeout
from metaopt._state import ExperimentState, TrialView, went_on
from metaopt.peer._config import PeerConfig
from metaopt.peer._executor import ExecutorConfig, TrialProcess, TrialSpec, stopped_by_signal
from metaopt.peer._gpus import Slot, detect_slots
from metaopt.peer._identity import trial_dir, trial_log_path
from metaopt.peer._layout import CodeLayouts
from metaopt.peer._monitor import EarlyStopping
from metaopt.peer._orphans import kill_orphans
from metaopt.peer._storage import storage_failure
from metaopt.peer._template import parse_template
from metaopt.peer._watchdog import Watchdog

if TYPE_CHECKING:
    from metaopt.peer._node import Node

__all__ = ["TrialRunner"]

log = logging.getLogger("metaopt.peer")
_METAOPT_PACKAGE = Path(__file__).resolve().parents[1]


# Running.outcome of a run stopped because another peer completed its trial: it records nothing.
SUPERSEDED = "superseded"
# Seconds within which this peer's run of a trial another peer took up at the same time gives
# way to that one (see _stop_completed_elsewhere).
CLAIM_RACE = 60.0
# Seconds this peer starts no trial after the disk refused a trial's folder (no inode left, a
# quota). Its replica may still take writes (LevelDB appends to a file it has), so the peer
# goes on as a replica; but each try wrote a start and an interruption, every 2 s.
FOLDER_RETRY = 10.0
# How long a thaw asked by hand waits, holding a free slot, for its code to be laid out here.
THAW_CODE_WAIT = 60.0


# In a trial's folder while a freeze or kill this peer decided (by hand, by its early stopper,
# or for its trial timeout) is under way: {"outcome": ..., "reason": ...}. A peer killed -9
# during the stop's grace took the trial for lost when it restarted and ran it again: the
# user's freeze or kill forgotten, and a run its stopper had killed at a rung resumed past it.
STOP_REQUEST = "stop-request"
_KEPT_OUTCOMES = ("frozen", "killed")
_MAX_HELD = 8  # kinds of reports (sets of metric names) held back at once (see _hold)
_STOP_REQUEST_BYTES = 1 << 16  # a stop request's note is a line of JSON


def _request_end(run: Running, outcome: str, reason: str, rung: int | None = None) -> bool:
    """Ask a run's process to stop, to be recorded as ``outcome``; False if it has no process
    yet, was already asked (the first decision stands) or has exited: what it exited with is
    recorded (a stop right after a trial's exit, while its output drained, recorded a
    completed trial killed, frozen or interrupted, and a freeze or a peer stop ran it twice)."""
    if run.process is None or run.outcome is not None or run.process.exited:
        return False
    run.outcome, run.reason, run.rung = outcome, reason, rung
    run.process.request_stop(reason)
    return True


class StopRequest(NamedTuple):
    """A freeze or kill kept on disk until its trial's end is recorded (see STOP_REQUEST)."""

    outcome: str
    reason: str
    rung: int | None = None  # a kill's rung, by a rung rule (EventBody.rung)


@dataclass
class Running:
    slot: Slot
    experiment: bytes
    trial: bytes
    process: TrialProcess | None = None
    task: asyncio.Task[None] | None = None
    last_event: float = 0.0
    outcome: str | None = None  # set when this peer decided how it ends (frozen, killed, ...)
    reason: str | None = None
    rung: int | None = None  # of a kill by a rung rule (EventBody.rung)
    last_step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    last_progress: float = -math.inf  # when its last progress record was written
    # Reports thinned out, kept for the next record or the end: the latest of each set of
    # metric names (see _hold).
    held: dict[frozenset[str], tuple[int | None, dict[str, Any]]] = field(default_factory=dict)
    resumed_after: int | None = None  # the step it was resumed after (thawed or re-run), if any
    # The free events its start answered and the events they follow (TrialView.answers).
    answered: tuple[bytes, ...] = ()
    stepped: bool = False  # it has reported a step of its own
    last_declared: int | None = None  # its experiment's declared last step (_record_event)
    at_last: bool = False  # it has reported the declared last step
    # When it was launched, on the monotonic clock: the trial timeout counts from it (a wall
    # clock stepped forward by NTP would have killed every run at once).
    began: float = field(default_factory=time.monotonic)


class TrialRunner:
    """Owns the slots of one peer."""

    def __init__(self, node: Node, config: PeerConfig) -> None:
        self.node = node
        self.config = config
        self.slots = detect_slots(config.gpus, config.slots)
        self.running: dict[int, Running] = {}
        # Runs that ended while the disk refused writes, with their outcome (see _supervise).
        self._unrecorded: dict[bytes, tuple[Running, Any]] = {}
        self.monotonic = time.monotonic  # how long runs have run (a parameter for the tests)
        # The experiments' code laid out here, on this runner's clock looked up at each call
        # (the tests set self.monotonic after construction).
        self.layouts = CodeLayouts(node, lambda: self.monotonic())
        self.watchdog = Watchdog(lambda: self.config.timing.stop_grace, lambda: self.node.dirs.root)
        # Its early stoppers, and what they decide for its trials (see _monitor).
        self.early_stopping = EarlyStopping(self)
        self._folder_refused: tuple[float, str] | None = None  # when, why (see FOLDER_RETRY)
        self._folder_said_at = -math.inf
        # Trials thawed by hand while no slot was free (trial -> experiment, in the order
        # asked): resumed in the next slots that free (see thaw_asked). Told "freeze a running
        # trial first", a user who did saw the freed slot go to a new trial, again and again.
        self.thaws_asked: dict[bytes, bytes] = {}
        # Those of them whose code is being laid out here, and since when (monotonic): each
        # holds a free slot, up to THAW_CODE_WAIT (a new trial took it, and the thaw waited
        # that trial's whole run).
        self._thaws_waiting: dict[bytes, float] = {}

    # --------------------------------------------------------------------------- queries

    def free_slots(self) -> int:
        """Slots a trial may start in now: none while starts are held (see starts_held), and
        not those held for thaws asked by hand that wait for their code (see thaw_asked)."""
        return max(0, self._unheld_slots() - len(self._thaws_waiting))

    def _unheld_slots(self) -> int:
        if self.starts_held() is not None:
            return 0
        return len(self.slots) - len(self.running)

    def starts_held(self) -> str | None:
        """Why this peer starts no trial now (the disk refused a trial's folder within
        FOLDER_RETRY seconds), or None."""
        if self._folder_refused is None:
            return None
        at, why = self._folder_refused
        if self.monotonic() - at >= FOLDER_RETRY:
            return None
        return f"its disk refused a trial's folder ({why}); it tries again every {FOLDER_RETRY:g} s"

    def _hold_starts(self, why: str) -> None:
        """The disk refused a trial's folder: start nothing for FOLDER_RETRY seconds, said
        once a minute."""
        now = self.monotonic()
        self._folder_refused = (now, why)
        if now - self._folder_said_at >= 60.0:
            self._folder_said_at = now
            log.error(
                "cannot lay out a trial's folder (%s): this peer starts no trial, trying"
                " again every %g s; free space or inodes on its disk",
                why,
                FOLDER_RETRY,
            )

    def running_keys(self) -> set[bytes]:
        """The trials running here, and those that ended here with their end not recorded
        yet (neither lost nor free)."""
        return {r.trial for r in self.running.values()} | set(self._unrecorded)

    def record_unrecorded(self, *, last: bool = False) -> None:
        """Record the ends of runs that the disk refused (see _supervise), now it takes writes;
        ``last``: the peer is stopping, and what the disk still refuses is lost with it."""
        for trial, (run, outcome) in list(self._unrecorded.items()):
            try:
                if not self._try_record(run, outcome):
                    break  # (still refused: kept for the next pass)
            except Exception:
                log.exception("trial %s: its outcome could not be recorded", trial.hex()[:12])
            del self._unrecorded[trial]
        if last:
            # Said, with the outcome: a peer stopped on a full disk lost it without a word, and
            # its resumed run, past its last step, failed with nothing left to report.
            for trial, (_, outcome) in self._unrecorded.items():
                said = [f"exit code {outcome.exit_code}"]
                said += [f"{k}={v:g}" for k, v in outcome.objectives.items()]
                log.error(
                    "trial %s's run ended (%s), but the disk refused its record: lost with"
                    " this stop, and the trial runs again when found lost",
                    trial.hex(),
                    ", ".join(said),
                )

    def _try_record(self, run: Running, outcome: Any) -> bool:
        """Record how a run ended; False if the disk refused, the run left as it was, so that
        a later try decides as this one did (a run that crashed when asked to stop, recorded
        failed, came out completed on the retry)."""
        decided = (run.outcome, run.reason, run.rung)
        try:
            self._record_outcome(run, outcome)
        except Exception as exc:
            if not self.node.storage.note(exc, "a trial's outcome"):
                raise
            run.outcome, run.reason, run.rung = decided
            return False
        return True

    def stoppable(self) -> int:
        """Runs here whose process has not exited (one that has is only draining its output)."""
        return sum(r.process is None or not r.process.exited for r in self.running.values())

    def stopping_as(self, trial: bytes) -> str | None:
        """What a trial running here was asked to stop as (frozen, killed, ...), if it was."""
        return next((r.outcome for r in self.running.values() if r.trial == trial), None)

    def trial_dir(self, trial: bytes) -> Path:
        return trial_dir(self.node.dirs, trial)

    def log_path(self, trial: bytes) -> Path:
        return trial_log_path(self.node.dirs, trial)

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for slot in self.slots:
            running = self.running.get(slot.index)
            state = self.node.replica.experiments.get(running.experiment) if running else None
            out.append(
                {
                    "index": slot.index,
                    "gpu": slot.gpu,
                    "trial": running.trial.hex()[:12] if running else None,
                    "experiment": state.spec.name if state else None,
                }
            )
        return out

    def can_run(self, state: ExperimentState) -> bool:
        """Whether this peer holds everything needed to run the experiment's trials.

        A bundle not laid out here yet is written in a thread, from then on: False until it
        is (a bundle of 1 GiB held the event loop for 13 s, past the request timeout).
        """
        if state.spec.command is None:
            return False
        bundle = state.spec.bundle or {}
        if "manifest" not in bundle:
            return True
        return self.layouts.laid_out(state)

    async def can_run_within(self, state: ExperimentState, timeout: float) -> bool:
        """can_run, waiting up to ``timeout`` seconds for its code to be laid out here."""
        if state.spec.command is None:
            return False
        if "manifest" not in (state.spec.bundle or {}):
            return True
        return await self.layouts.laid_out_within(state, timeout)

    @property
    def unrunnable(self) -> dict[bytes, str]:
        """Experiments whose bundle is broken for good, and why (see CodeLayouts)."""
        return self.layouts.unrunnable

    async def settle_layouts(self) -> None:
        """End the bundle layouts under way and wait for them (see CodeLayouts.settle)."""
        await self.layouts.settle()

    # ---------------------------------------------------------------------------- launch

    async def launch(self, state: ExperimentState, view: TrialView, *, thaw: bool = False) -> None:
        free = [s for s in self.slots if s.index not in self.running]
        if not free or not self.can_run(state):
            return  # (its code not laid out here: the callers check can_run first)
        slot = free[0]
        resume = self._resume_step(view, thaw)
        run = Running(
            slot,
            state.key,
            view.key,
            last_event=self.monotonic(),
            resumed_after=resume,
            began=self.monotonic(),
            answered=view.free_events + view.free_ends,
            last_declared=self._declared_last_step(state),
        )
        self.running[slot.index] = run
        try:
            self.node.write_event(
                state.key,
                view.key,
                "thawed" if thaw else "started",
                step=resume,
                supersedes=view.free_events,
                # After the latest event of its current run this peer knew of, whatever the
                # clocks: a trial frozen by hand on a gone peer whose clock ran ahead stayed
                # "frozen" after a takeover.
                after=view.latest,
            )
        except BaseException:
            # Not started (the disk refused the event): a slot kept for it would be held
            # until a restart, and the trial pending here with it.
            self.running.pop(slot.index, None)
            raise
        self.forget_stop_request(view.key)  # (one its last run's end did not live to clear)
        try:
            spec = self._spec(state, view, slot, resume)
        except Exception as exc:  # whatever a peer's definition holds: the started event is
            # written and the slot taken, so the trial fails and the slot is freed, never wedged
            self.running.pop(slot.index, None)
            refused = storage_failure(exc)
            if refused is not None:
                # The disk's fault, not the trial's (no inode left, a quota): recorded failed,
                # every trial of an experiment failed for good within seconds. Set free, to
                # run again once the disk takes writes; this peer starts none meanwhile.
                self._hold_starts(refused)
                why = "this peer's disk refused its folder"
                self.node.write_event(state.key, view.key, "interrupted", reason=why)
                return
            self.node.write_event(state.key, view.key, "failed", reason=f"cannot start: {exc}")
            return
        process = TrialProcess(spec, lambda kind, data: self._on_event(run, kind, data))
        run.process = process
        run.task = asyncio.ensure_future(self._supervise(run, process))
        log.info(
            "slot %d runs trial %s of %s: %s",
            slot.index,
            view.key.hex()[:12],
            state.spec.name,
            json.dumps(dict(view.params)),
        )

    def _worker_path(self) -> str:
        """A directory holding only the metaopt package, for the trials' PYTHONPATH.

        So `import metaopt` works in a trial run by any Python. The package's own parent is
        site-packages after a pip install: put on PYTHONPATH, it set metaopt's numpy, scipy
        and aiohttp before those of the trial's interpreter (a user venv's numpy then failed
        to import).
        """
        root = self.node.dirs.root / "pythonpath"
        link = root / "metaopt"
        try:
            if not (link.is_symlink() and link.resolve() == _METAOPT_PACKAGE):
                root.mkdir(parents=True, exist_ok=True)
                fresh = root / f".metaopt.{os.getpid()}"
                fresh.unlink(missing_ok=True)
                fresh.symlink_to(_METAOPT_PACKAGE, target_is_directory=True)
                os.replace(fresh, link)  # a link to another install is swapped atomically
        except OSError as exc:
            log.warning(
                "cannot link the metaopt package into %s (%s); trials get its parent", root, exc
            )
            return str(_METAOPT_PACKAGE.parent)
        return str(root)

    def _resume_step(self, view: TrialView, thaw: bool) -> int | None:
        """The step a (re-)launched trial resumes after, or None for a fresh start.

        Only a run that left something in its checkpoint directory resumes: a thawed program
        read by a regex started again at epoch 1 while its matches were counted on from the
        frozen step (step 37 recorded the loss of epoch 1, and it ran 117 of 81 epochs). A
        resume at step 0 (frozen before reporting a step past 0) is still a resume: the
        script must be told to load its checkpoint.
        """
        if not self._has_checkpoint(view.key):
            return None
        me = self.node.node_id
        if thaw and view.frozen_step is not None and view.runner == me:
            return view.frozen_step  # where the frozen run got to, whatever earlier runs did
        # Where this peer's own run got to, which left the checkpoint: the current run may be
        # another peer's since, started again from 0 (told that run's step 4, a peer holding
        # its own checkpoint of step 10 went on at 11, and steps 5-10 left the curve for good).
        return view.step_of(me)

    def _has_checkpoint(self, trial: bytes) -> bool:
        """Whether a trial run here before left a checkpoint (it was interrupted or lost).

        Such a re-run resumes like a thaw: METAOPT_RESUME_STEP set, the same checkpoint dir.
        On another peer, or with no checkpoint, it starts from step 0.
        """
        checkpoint = self.trial_dir(trial) / "checkpoint"
        try:
            return any(checkpoint.iterdir())
        except OSError:
            return False

    def _spec(
        self, state: ExperimentState, view: TrialView, slot: Slot, resume: int | None
    ) -> TrialSpec:
        spec = state.spec
        assert spec.command is not None
        trial_dir = self.trial_dir(view.key)
        trial_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = trial_dir / "checkpoint"
        checkpoint.mkdir(exist_ok=True)
        bundle = spec.bundle or {}
        prepare = None
        if "manifest" in bundle:
            cwd = trial_dir / "code"
            prepare = self.layouts.trial_copy(state.key, cwd)
        elif "shared_dir" in bundle:
            cwd = Path(bundle["shared_dir"])
        else:
            cwd = trial_dir
        argv = parse_template(list(spec.command)).render(dict(view.params))
        if argv and argv[0].endswith(".py"):
            argv = [sys.executable, *argv]
        env = dict(slot.env)
        env.update(
            {
                "METAOPT_TRIAL_ID": view.key.hex(),
                "METAOPT_EXPERIMENT": spec.name,
                "METAOPT_PARAMS": json.dumps(dict(view.params)),
                "METAOPT_TRIAL_DIR": str(trial_dir),
                "METAOPT_DATA_DIR": str(self.node.dirs.root),
                "METAOPT_CHECKPOINT_DIR": str(checkpoint),
                "METAOPT_STOP_FILE": str(trial_dir / "stop"),
                "METAOPT_OBJECTIVE": spec.objectives[0],
                "PYTHONPATH": os.pathsep.join(
                    p for p in (self._worker_path(), os.environ.get("PYTHONPATH", "")) if p
                ),
            }
        )
        if resume is not None:
            env["METAOPT_RESUME_STEP"] = str(resume)
        timing = self.config.timing
        return TrialSpec(
            argv=argv,
            cwd=cwd,
            env=env,
            log_path=self.log_path(view.key),
            objectives=tuple(spec.objectives),
            objective_regex=spec.objective_regex,
            stop_file=trial_dir / "stop",
            step_offset=resume or 0,
            config=ExecutorConfig(heartbeat=timing.heartbeat, grace=timing.stop_grace),
            prepare=prepare,
            stop_escaped=functools.partial(self._stop_escaped, view.key),
        )

    # ----------------------------------------------------------------------------- events

    def _report_gap(self, run: Running) -> float:
        """How far apart a run's progress records are at least: report_interval, and as it
        ages report_age_fraction of its age, up to a heartbeat (news that it runs). A curve
        keeps its detail where the stoppers' rungs are dense, early on, and a run of hours
        some thousands of points, not tens of thousands in every peer's memory."""
        timing = self.config.timing
        if timing.report_interval <= 0:
            return 0.0  # (--timing report_interval=0: every report recorded)
        aged = (run.last_event - run.began) * timing.report_age_fraction
        return max(timing.report_interval, min(aged, timing.heartbeat))

    def _on_event(self, run: Running, kind: str, data: dict[str, Any]) -> None:
        self._noting_storage(f"a trial's {kind} event", lambda: self._record_event(run, kind, data))

    def _noting_storage(self, what: str, write: Callable[[], None]) -> None:
        """Run ``write``; a disk refusing it is noted and passed over (see _storage), any other
        error raised (the executor, or the node's pass, logs it)."""
        try:
            write()
        except Exception as exc:
            if not self.node.storage.note(exc, what):
                raise

    def _record_event(self, run: Running, kind: str, data: dict[str, Any]) -> None:
        node = self.node
        run.last_event = self.monotonic()  # (thinning: a wall clock stepped back held reports)
        if run.outcome == SUPERSEDED:
            # Giving way to another peer's run of the trial: what it reports during its stop
            # grace counts for nothing, and would only be records kept by every peer for good.
            return
        if kind == "progress":
            step = data.get("step")
            metrics = {k: v for k, v in data.get("metrics", {}).items() if k != "step"}
            # A report without a step is numbered on from the resume step by the executor:
            # only the first step the script gave tells whether it went on from its checkpoint
            # (a stepless METAOPT {"n_params": 5} at start-up, numbered 31, hid a restart).
            given = isinstance(data.get("metrics", {}).get("step"), int)
            if isinstance(step, int):
                after = None if run.stepped or not given else run.resumed_after
                if after is not None and step < after:
                    # Resumed, its first step is below the resume step: the script went on
                    # from an older checkpoint (saved every few steps), or from step 0 (it
                    # keeps none). Said, with where it went on from, so that its curve is the
                    # earlier run's up to there and this run's after, not both side by side;
                    # after what it reported before (held back: written after, step 32 read
                    # as the step of a run gone back to 1).
                    self._write_held(run)
                    node.write_event(run.experiment, run.trial, "restarted", step=went_on(step))
                run.last_step, run.stepped = step, run.stepped or given
            # Every record is replicated to, and kept by, every peer for good: a script that
            # reports each minibatch is thinned (see _report_gap; the latest report held back
            # is written when the trial ends), not thousands a second.
            due = run.last_event - run.last_progress >= self._report_gap(run)
            last = run.last_declared
            if isinstance(step, int) and last is not None and step >= last and not run.at_last:
                # The first report of the last step is never held back: a peer killed before
                # its record (up to a report gap, 10 s for an old run, later) lost the run's
                # result, and the run resumed past it had nothing left to report and failed.
                # (Only the first: one reporting each minibatch of its last epoch, or running
                # past the last step, wrote a record a report, 412 for one trial.)
                run.at_last = due = True
            _hold(run, step, metrics, make_room=not due)  # (written below if due, with the rest)
            if not due:
                return
            run.last_progress = run.last_event
            # Each let go once written: refused by a full disk, it is written with the end.
            self._write_held(run)
        elif kind == "heartbeat" and run.held:
            # Quiet since a report was held back: write it now, so that the curve the
            # stoppers read is at most one heartbeat old (it is news of the trial as well).
            run.last_progress = run.last_event
            self._write_held(run)
        elif kind == "heartbeat":
            node.write_event(run.experiment, run.trial, "heartbeat")
        elif kind == "started" and isinstance(data.get("pid"), int):
            self.watchdog.watch(data["pid"])  # its own group: it leads a new session
            # Lets a supervisor (or a test) find the trial's process group after a crash;
            # written once the watchdog has been told, so it says the watchdog knows.
            with contextlib.suppress(OSError):
                (self.trial_dir(run.trial) / "pid").write_text(f"{data['pid']}\n")

    async def _supervise(self, run: Running, process: TrialProcess) -> None:
        try:
            outcome = await process.run()
            if not self._try_record(run, outcome):
                # Recorded once the disk takes writes again (record_unrecorded). Dropped, the
                # trial was taken for lost ("its peer restarted while it ran") and resumed
                # from its last checkpoint, at its last step: the run reported nothing more
                # and was recorded completed with the value recorded before the disk filled,
                # not its result (2 of 2 runs).
                self._unrecorded[run.trial] = (run, outcome)
                log.warning(
                    "trial %s ended; its outcome is recorded once this peer can write again",
                    run.trial.hex(),
                )
        except Exception as exc:  # the executor must never leave a slot taken forever
            if self.node.storage.note(exc, "a trial's outcome"):
                log.warning("trial %s ended; its outcome could not be recorded", run.trial.hex())
            else:
                log.exception("trial %s crashed the executor", run.trial.hex()[:12])
                self.node.write_event(
                    run.experiment, run.trial, "failed", reason=f"executor error: {exc}"
                )
        finally:
            if process.pid is not None:
                self.watchdog.release(process.pid)
                self._stop_escaped(run.trial)  # (if the executor's drain did not)
            # The result is recorded before the slot frees, so the next suggestion sees it.
            self.running.pop(run.slot.index, None)
            self.node.kick()

    def _declared_last_step(self, state: ExperimentState) -> int | None:
        """The experiment's last step as its submission declares it (max_step, or a fidelity
        prior's high end); None if it declares none (max_step_of also learns one from the
        trials completed, at a cost too high for every report)."""
        if state.spec.max_step is not None:
            return state.spec.max_step
        try:
            return self.node.suggester(state).space.fidelity_steps
        except MetaoptError:  # a space this peer cannot search: no horizon to judge by
            return None

    def _write_due_held(self) -> None:
        """Record the reports held back past their run's report gap with no report since: a
        run's last report waited for the heartbeat, 10 s, and a peer killed meanwhile lost it
        (resumed from its checkpoint past it, the run had nothing left to report, and failed:
        "no objective reported"). A kill within a monitor pass of it still loses it. The
        stoppers judge the curves just written, too."""
        now = self.monotonic()
        for run in list(self.running.values()):
            if (
                run.held
                and run.outcome != SUPERSEDED
                and now - run.last_progress >= self._report_gap(run)
            ):
                run.last_progress = now
                self._noting_storage(
                    "a trial's progress event", functools.partial(self._write_held, run)
                )

    def _write_held(self, run: Running) -> None:
        """Record the reports held back (see _hold), oldest first; each is let go once written
        (a write the disk refuses leaves the rest for the retry of the trial's end)."""
        for kind in list(run.held):
            step, metrics = run.held[kind]
            self.node.write_event(run.experiment, run.trial, "progress", step=step, metrics=metrics)
            del run.held[kind]

    def _stop_escaped(self, trial: bytes) -> None:
        """Stop the processes a trial that has ended left running outside its group.

        Its group was killed as it ended; children that left the group (setsid, a daemon)
        outlived the trial and the peer's own stop, holding its GPU and its output pipes,
        until the next start of the peer found them.
        """
        escaped = kill_orphans(self.node.dirs.root, trial=trial.hex())
        if escaped:
            log.warning(
                "trial %s: stopped %d process(es) it left running outside its group: %s",
                trial.hex()[:12],
                len(escaped),
                ", ".join(map(str, escaped)),
            )

    def _record_outcome(self, run: Running, outcome: Any) -> None:
        write = self.node.write_event
        if run.outcome == SUPERSEDED:  # its result is another peer's: nothing to add
            log.info("trial %s ended here: %s", run.trial.hex()[:12], run.reason)
            return
        self._write_held(run)  # the curve ends where the trial did
        status = outcome.status
        if run.outcome is None and status == "failed" and self._done_before_resume(run, outcome):
            status = "completed"
        if run.outcome in (None, "interrupted") and self._stopped_with_peer(outcome):
            # Ended by the stop signal sent to every process at once, before or while this
            # peer asked it to stop: interrupted, as asked (see _stopped_with_peer).
            status = "interrupted"
            run.outcome, run.reason = (
                status,
                run.reason or "stopped by a signal as its peer stopped",
            )
        if run.outcome is not None and status == "failed":
            run.outcome = None  # it crashed when asked to stop: a failure, not a freeze
        elif run.outcome is not None and self._finished_anyway(run, outcome):
            status, run.outcome = "completed", None  # the stop came too late to matter
        if run.outcome is not None:
            write(
                run.experiment,
                run.trial,
                run.outcome,
                step=run.last_step or None,
                reason=run.reason,
                rung=run.rung if run.outcome == "killed" else None,
            )
        elif status == "completed":
            write(
                run.experiment,
                run.trial,
                "completed",
                metrics=outcome.metrics,
                exit_code=outcome.exit_code,
            )
        elif status == "interrupted":  # never started: its code's folder refused, or stopped
            if outcome.disk is not None:  # (as for a trial's folder refused: see launch)
                self._hold_starts(outcome.disk)
            write(run.experiment, run.trial, "interrupted", reason=outcome.reason)
        else:
            write(
                run.experiment,
                run.trial,
                "failed",
                exit_code=outcome.exit_code,
                metrics=outcome.metrics,
                reason=outcome.reason,
                stderr="\n".join(outcome.stderr_tail) or None,
            )
        self.forget_stop_request(run.trial)  # (recorded, as asked or otherwise)
        log.info("trial %s ended: %s", run.trial.hex()[:12], run.outcome or status)

    def _stopped_with_peer(self, outcome: Any) -> bool:
        """Whether a run failed by a signal asking it to end (see stopped_by_signal) while
        this peer stops: systemd stopping a peer (KillMode=control-group) and a machine
        shutting down send SIGTERM to the trials too, at the same moment, and each was
        recorded failed ("crashed when asked to stop", or "killed by SIGTERM" when it exited
        before the peer asked), never to run again (5 of 5). Not for a freeze or a kill: a run
        that dies so while it saves a checkpoint for a thaw has left it half-written."""
        code = outcome.exit_code
        return (
            outcome.status == "failed"
            and self.node.stopping
            and isinstance(code, int)
            and stopped_by_signal(code)
        )

    def _done_before_resume(self, run: Running, outcome: Any) -> bool:
        """Whether a resumed run that exited 0 reporting nothing had its objectives from an
        earlier attempt: it had finished when it was frozen (its last report landed just as
        the freeze did) and on resuming found nothing left to do. The completed event then
        takes them from the curve's reports; recorded failed, its result was lost.

        Only if that attempt reached the experiment's last step: a resumed script that exits
        0 at once (its checkpoint failed to load) was recorded completed with the value of
        step 25 of 100, and could be the best.
        """
        state = self.node.replica.experiments.get(run.experiment)
        if state is None or run.resumed_after is None or outcome.exit_code != 0:
            return False
        if outcome.objectives or outcome.diverged:
            return False  # it reported some, and not all, or nan: a real failure
        view = state.trial(run.trial)
        if view is None or not self._reached_final(state, view.last_step):
            return False
        return all(isinstance(view.metrics.get(n), int | float) for n in state.spec.objectives)

    def _finished_anyway(self, run: Running, outcome: Any) -> bool:
        """Whether a run asked to stop had reported the experiment's last step and its
        objectives and exited 0: it ended on its own, and its result must not be lost."""
        state = self.node.replica.experiments.get(run.experiment)
        if state is None or outcome.exit_code != 0:
            return False
        if len(outcome.objectives) < len(state.spec.objectives):
            return False
        return self._reached_final(state, run.last_step)

    def _reached_final(self, state: ExperimentState, step: int) -> bool:
        """Whether step is the experiment's last (or past it); False when that is unknown."""
        from metaopt._curves import max_step_of

        try:
            space = self.node.suggester(state).space
        except MetaoptError:  # a space this peer cannot search: no horizon to judge by
            return False
        final = max_step_of(state, space, state.trials())
        return final is not None and step >= final

    async def end(self, trial: bytes, outcome: str, reason: str, rung: int | None = None) -> bool:
        """Stop a running trial of this peer, recording ``outcome`` (frozen, killed, ...);
        False if it is not running here, is already stopping or has just exited."""
        asked = False
        for run in list(self.running.values()):
            if run.trial == trial:
                asked = _request_end(run, outcome, reason, rung) or asked
        return asked

    def note_stop_request(
        self, trial: bytes, outcome: str, reason: str, rung: int | None = None
    ) -> None:
        """Keep a freeze or kill (and a kill's rung) on disk until the trial's end is recorded
        (see STOP_REQUEST); best effort: without it, a crash in the grace forgets the request."""
        with contextlib.suppress(OSError):
            text = json.dumps({"outcome": outcome, "reason": reason, "rung": rung})
            (self.trial_dir(trial) / STOP_REQUEST).write_text(text)

    def stop_requested(self, trial: bytes) -> StopRequest | None:
        """The freeze or kill that this peer's last life did not live to record, if any."""
        # The trial may write in its folder, this file too: no more than a note's worth is
        # read, and JSON nested too deep to parse (RecursionError) is no request.
        try:
            with open(self.trial_dir(trial) / STOP_REQUEST, "rb") as file:
                asked = json.loads(file.read(_STOP_REQUEST_BYTES))
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(asked, dict) or asked.get("outcome") not in _KEPT_OUTCOMES:
            return None
        reason, rung = asked.get("reason"), asked.get("rung")
        return StopRequest(
            asked["outcome"],
            reason if isinstance(reason, str) else "stopped by hand",
            rung if type(rung) is int and 0 <= rung < MAX_INT else None,
        )

    def forget_stop_request(self, trial: bytes) -> None:
        with contextlib.suppress(OSError):
            (self.trial_dir(trial) / STOP_REQUEST).unlink(missing_ok=True)

    def kill_instead(self, trial: bytes, reason: str) -> bool:
        """Record a run of this peer that is stopping as frozen as killed once it exits: a
        kill asked for during a freeze's grace (up to twice stop_grace for a script ignoring
        SIGTERM) was refused, and the frozen trial then had to be killed in turn. False if
        no run of it here is stopping as frozen."""
        changed = False
        for run in self.running.values():
            if run.trial == trial and run.outcome == "frozen":
                run.outcome, run.reason, run.rung = "killed", reason, None
                changed = True
        return changed

    async def interrupt_all(self, reason: str) -> None:
        runs = list(self.running.values())
        if self.stoppable():
            # (Said: a foreground peer was silent from Ctrl-C to its last line, 7-14 s with a
            # trial that ignores its stop, and a user pressing Ctrl-C again reached for kill -9.)
            log.info(
                "stopping %d trial(s) running here: asked to save a checkpoint and exit, then"
                " SIGTERM, then SIGKILL within %g s",
                self.stoppable(),
                2 * self.config.timing.stop_grace,  # (as `metaopt peer stop` says it)
            )
        for run in runs:
            _request_end(run, "interrupted", reason)
        tasks = [r.task for r in runs if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=3 * self.config.timing.stop_grace + 5)

    def _stop_completed_elsewhere(self) -> None:
        """Stop this peer's runs of trials another peer has completed meanwhile, and its
        young runs of trials another peer took up at the same time.

        Across a partition both sides may run a trial (one took the other's for lost); after
        the heal the run here went on to its end, hours of a slot for a result already
        recorded. A failure or kill elsewhere does not stop it: a completion here still counts.

        Two peers whose slots freed at once may both re-run the one free trial (nothing but
        timing tells them apart: 4 of 4 staged on real peers). Every peer's replica makes the
        later start the trial's run, so the peer whose run is not stops it, writing nothing:
        its reports already count for nothing. Only a run that answered the same loss or
        interruption as that start, or one of the same run (two peers that each found a run
        lost write two losses of it), not a run taken for lost (a peer stopped or cut off for
        a while) that went on meanwhile; only younger than CLAIM_RACE: an older one (across a
        partition) may be the further on, and its completion still counts; and not once that
        start's run has failed (a completion here outranks the failure).
        """
        me, now = self.node.node_id, self.monotonic()
        for run in list(self.running.values()):
            state = self.node.replica.experiments.get(run.experiment)
            view = state.trial(run.trial) if state is not None else None
            if view is None:
                continue
            by = f"node {view.runner.hex()[:8]}" if view.runner else "another peer"
            if view.state == "completed":
                why = f"completed on {by}"
            elif view.runner not in (None, me) and view.state != "failed":
                # Frozen or killed by its stopper before this pass, too: the run here went on
                # to its end (and beside that run once it was thawed); and interrupted or lost:
                # the trial is free in every replica, the run here is not its run, and a third
                # peer took it up beside it. A failure there leaves the run here: a completion
                # outranks it.
                if now - run.began >= CLAIM_RACE or not set(run.answered) & set(view.answers):
                    continue
                why = f"taken up at the same time by {by}, whose run it is"
            else:
                continue
            if _request_end(run, SUPERSEDED, why):
                log.info("trial %s: %s; stopping the run here", run.trial.hex()[:12], why)

    def _stop_overtime(self) -> None:
        """Kill this peer's runs that have run longer than their experiment's trial timeout
        (a hung script otherwise held its slot until someone noticed)."""
        now = self.monotonic()
        for run in list(self.running.values()):
            state = self.node.replica.experiments.get(run.experiment)
            limit = trial_timeout(state.spec) if state is not None else None
            why = f"ran longer than its trial timeout ({limit} s)"
            if limit is not None and now - run.began > limit and _request_end(run, "killed", why):
                self.note_stop_request(run.trial, "killed", why)
                log.info("trial %s: %s", run.trial.hex()[:12], why)

    async def monitor(self, judge: bool = True) -> None:
        """Stop this peer's runs completed elsewhere or over their timeout; with ``judge``,
        then let its early stoppers freeze, kill or thaw its trials (EarlyStopping.monitor)."""
        self._write_due_held()
        self._stop_completed_elsewhere()
        self._stop_overtime()
        if not judge:
            return
        await self.early_stopping.monitor()

    def interrupted_here(self, state: ExperimentState | None = None) -> int:
        """How many of this peer's trials (of ``state``, else of every experiment) were cut
        short here and wait to be run again: its last life's (running, lost, or interrupted
        by a graceful stop; not running now). Their checkpoints are here, so they come before
        thaws (after a crash both slots went to frozen trials, and another peer re-ran the
        crashed one from step 0), and while they wait an experiment is not ending (its frozen
        trials were killed as not worth resuming in the restarted peer's first second)."""
        me, here = self.node.node_id, self.running_keys()
        states = self.node.replica.experiments.values() if state is None else (state,)
        return sum(
            1
            for s in states
            if s.spec.command is not None and not s.stopped
            for t in s.trials()
            if t.state in ("running", "lost", "interrupted")
            and t.runner == me
            and t.key not in here
        )

    def ask_thaw(self, state: ExperimentState, view: TrialView) -> None:
        """Resume ``view`` (frozen, this peer's to thaw) in the next slot that frees here."""
        self.thaws_asked[view.key] = state.key

    async def thaw_asked(self) -> None:
        """Resume the trials thawed by hand while no slot was free, in the order asked, ahead
        of any new trial or early stopper's thaw; one frozen no longer (killed, or thawed
        by another peer meanwhile), or whose peer is back, is passed over.

        The node asks only once caught up: a peer back from a pause thawed its trial on a
        replica that did not yet hold another peer's thaw of it, and both ran it.
        """
        for trial, experiment in list(self.thaws_asked.items()):
            if self._unheld_slots() <= 0 or self.node.stopping:
                return
            state = self.node.replica.experiments.get(experiment)
            view = state.trial(trial) if state is not None else None
            if state is None or view is None or view.state != "frozen":
                self._drop_thaw(trial)
                continue
            if view.runner != self.node.node_id and (
                view.runner is None or self.node.is_alive(view.runner)
            ):
                log.info("trial %s: not thawed here, its peer is back", trial.hex()[:12])
                self._drop_thaw(trial)
                continue
            if not self.can_run(state):
                since = self._thaws_waiting.setdefault(trial, self.monotonic())
                waited = self.monotonic() - since
                if state.key not in self.unrunnable and waited < THAW_CODE_WAIT:
                    # Its code is being laid out here (deleted meanwhile, say): it waits, in
                    # a slot held for it (dropped, it stayed frozen and the slot idle).
                    continue
                log.warning(
                    "trial %s: not thawed, this peer cannot run it%s; thaw it again later",
                    trial.hex()[:12],
                    ""
                    if waited < THAW_CODE_WAIT
                    else f" (its code not laid out in {waited:.0f} s)",
                )
                self._drop_thaw(trial)
                continue
            self._drop_thaw(trial)
            log.info("thawing trial %s, as asked, in a slot that came free", trial.hex()[:12])
            await self.launch(state, view, thaw=True)

    def _drop_thaw(self, trial: bytes) -> None:
        self.thaws_asked.pop(trial, None)
        self._thaws_waiting.pop(trial, None)


def _hold(run: Running, step: int | None, metrics: dict[str, Any], *, make_room: bool) -> None:
    """Hold back a report thinned out: it replaces the held one of the same metric names.

    One held report, replaced by the next, lost what only it carried: a script reporting its
    loss and its training loss in two calls an epoch had every loss replaced by the next
    epoch's training loss, and its curve kept 1 point of 10 (a review of the results users
    read). The kinds held are few; a script that names new metrics at every report loses
    its oldest held ones past _MAX_HELD, as thinning would.
    """
    kind = frozenset(metrics)
    run.held.pop(kind, None)  # (re-inserted last: the held stay oldest first)
    # Not when all are written at once; but twice as many at most, should those writes fail
    # (a full disk: they grew by one a report, each a new set of names).
    while len(run.held) >= (_MAX_HELD if make_room else 2 * _MAX_HELD):
        del run.held[next(iter(run.held))]
    run.held[kind] = (step, metrics)
