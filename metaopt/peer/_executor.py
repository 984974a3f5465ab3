"""One trial as a child process: start it, read what it reports, stop it, say how it ended.

The child gets a process group of its own (signals reach the workers it forks too), stdin
from /dev/null, and stdout and stderr appended to one log file as they arrive and parsed by
:mod:`metaopt.peer._output`. ``PYTHONUNBUFFERED=1`` is set unless the spec overrides it, so
reports and regex matches arrive live. On Linux the child's parent is a subreaper of its own
(:mod:`metaopt.peer._subreaper`, in a session of its own), which kills what the child left,
in its group or not, once it exits, and exits as it did: ``pid``, the signals and the
watchdog are the child's (its group's), and the subreaper's exit is the child's end. Events
go to a callback as ``(kind, data)``:

=============  ===========================================================================
``started``    ``pid``
``progress``   ``step``, ``metrics`` (one report; ``step`` is the report's own, else the last
               explicit step, else ``step_offset`` + the number of reports)
``heartbeat``  ``step`` (sent when nothing was reported for ``heartbeat`` seconds)
``completed``  ``exit_code`` 0, ``objectives``, ``metrics`` (the last value of every metric)
``failed``     ``exit_code`` (None if it never started), ``reason``, ``stderr_tail``
``interrupted`` ``exit_code``, ``reason``, ``stage`` (stop-file, SIGTERM, SIGKILL, kill,
               cancelled)
=============  ===========================================================================

Every ``data`` also has ``time`` from the ``clock`` given. A process that exits 0 without
reporting every objective has failed. A stop request creates the stop file, sends SIGTERM to
the group ``grace`` seconds later if it still runs, and SIGKILL another ``grace`` later. When
the child exits, whatever is left of its group is killed, so no stray worker holds a GPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import logging
import math
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from metaopt.peer._output import OutputConfig, OutputParser
from metaopt.peer._scripts import SUBREAPER
from metaopt.peer._storage import storage_failure
from metaopt.peer._subreaper import command_file
from metaopt.worker import MetricValue

__all__ = [
    "END_METRICS",
    "ExecutorConfig",
    "TrialOutcome",
    "TrialProcess",
    "TrialSpec",
    "last_metrics",
    "run_trial",
    "stopped_by_signal",
]

_MAX_NOTES_TOLD = 32  # distinct problems with a trial's output said in its log
END_METRICS = 256  # the most metrics an end event carries (see last_metrics)

log = logging.getLogger("metaopt.peer")

_EXIT_POLL = 0.05  # seconds between looks at whether the child has exited
EventCallback = Callable[[str, dict[str, Any]], None]
Status = Literal["completed", "failed", "interrupted"]


_LOG_RETRY = 5.0  # seconds before a trial's log the disk refused is tried again
# Seconds after the exit when pipes still open are taken as held by an escaped process.
_ESCAPED_AFTER = 0.5
# In the subreaper's environment alone: the sweeps of a trial's processes leave it to end
# itself, which it does once its command has, after killing what the command left.
SUBREAPER_MARK = "METAOPT_SUBREAPER"
# Run from its source as the peer read it at its start (see _scripts), which the command's
# environment goes without, as without the mark (the variable starts as the mark does).
assert SUBREAPER.variable.startswith(SUBREAPER_MARK)


@dataclass(frozen=True)
class ExecutorConfig:
    """Timings (seconds) and limits of one trial process."""

    heartbeat: float = 10.0  # quiet this long → a heartbeat event
    grace: float = 10.0  # stop file → SIGTERM → SIGKILL, each after this long
    stderr_lines: int = 20  # last stderr lines kept for a failure
    read_bytes: int = 65536
    drain: float = 5.0  # after exit, how long to wait for the pipes to close
    # The log is kept to its latest output: past half of this, it moves to <log>.1 (replacing
    # the one before) and starts afresh, so a chatty trial cannot fill the replica's disk.
    max_log_bytes: int = 64 << 20
    # Start the command under _subreaper.py, which stops whatever the trial left running when
    # it ends, escaped from its group and environment or not (Linux: a child subreaper).
    subreaper: bool = sys.platform.startswith("linux")


# Environment variables of the peer that its trials never inherit: its cluster key, and what
# the peer sets for a trial only now and then (a resume step exported in the shell that
# started the peer, testing a resume by hand, told every fresh trial to resume).
_NOT_INHERITED = frozenset({"METAOPT_KEY", "METAOPT_KEY_FILE", "METAOPT_RESUME_STEP"})


@dataclass(frozen=True)
class TrialSpec:
    """What to run and where."""

    argv: Sequence[str]
    cwd: Path
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)  # added to this process's environment
    objectives: tuple[str, ...] = ("loss",)
    objective_regex: str | None = None  # its matches report objectives[0]
    stop_file: Path | None = None
    step_offset: int = 0  # the resume step of a thawed trial
    config: ExecutorConfig = field(default_factory=ExecutorConfig)
    # Lays out the working directory (a copy of the experiment's code), in a thread before
    # the process starts: on the event loop, a bundle of 11,000 files held it 0.7 s a launch.
    prepare: Callable[[], None] | None = None
    # Stops what the process left running outside its group once it has exited (see _drain).
    stop_escaped: Callable[[], None] | None = None


@dataclass(frozen=True)
class TrialOutcome:
    """How a trial process ended."""

    status: Status
    exit_code: int | None  # negative: killed by that signal; None: never started
    metrics: dict[str, MetricValue]
    objectives: dict[str, float]
    reason: str | None = None
    stderr_tail: tuple[str, ...] = ()
    stage: str | None = None  # how far a stop had to go, for an interrupted trial
    diverged: bool = False  # failed because its last report of an objective was nan or inf
    disk: str | None = None  # interrupted: what the disk said, refusing its working directory


class TrialProcess:
    """Runs one trial; :meth:`run` returns its outcome, the callback hears its events."""

    def __init__(
        self, spec: TrialSpec, on_event: EventCallback, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.spec = spec
        self.pid: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._on_event = on_event
        self._clock = clock
        self._stop_reason: str | None = None
        self._kill_reason: str | None = None
        self._stage: str | None = None
        self._exited = asyncio.Event()
        self._escalation: asyncio.Task[None] | None = None
        self._last_activity = 0.0
        self._last_step: int | None = None
        self._explicit_step = False
        self._reports = 0
        self._log: IO[bytes] | None = None
        # Output the disk refused (a full disk, a quota): how much, and when to try the log
        # again. Closed for good at the first refusal, a run of days lost the rest of its
        # output; and a log that could not be opened failed the trial.
        self._log_lost: int | None = None
        self._log_retry_at = 0.0
        self._log_said_at = -math.inf  # when a refusal was last said in the peer's log
        # The parser's notes already told in the log (each distinct one once, up to a bound).
        self._notes_read = 0
        self._notes_told: set[str] = set()
        self._untold: list[bytes] = []  # told once the log is at a line's start
        self._mid_line = False  # the log's last byte of output ended no line
        self._redrawn = False  # and that line is redrawn with \r (a progress bar)
        self._broken: str | None = None  # its output became unreadable (see OutputParser.broken)
        # Where an objective regex is matched: a thread of its own, not the event loop (see
        # _parse). One worker, so the two streams' chunks are read one at a time, in order.
        self._matcher: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self.pid is not None and not self.exited

    @property
    def exited(self) -> bool:
        """Its process has ended (its output may still be draining).

        As soon as its exit status is known, not when _run's poll next looks (up to _EXIT_POLL
        later): a stop asked in between turned a run that had exited 0 with its result into a
        freeze, a kill or a run to do again.
        """
        return self._exited.is_set() or (
            self._proc is not None and self._proc.returncode is not None
        )

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask the trial to stop at its next report, escalating to SIGTERM and SIGKILL."""
        if self._stop_reason is not None or self.exited:
            return
        self._stop_reason = reason
        if self.pid is not None:
            self._escalation = asyncio.get_running_loop().create_task(self._escalate())

    def kill(self, reason: str = "killed") -> None:
        """SIGKILL the trial's process group now."""
        if self.exited:
            return
        self._kill_reason = reason
        if self._escalation is not None:  # a stop under way would name its own stage
            self._escalation.cancel()
        self._stage = "kill"
        self._signal(signal.SIGKILL)

    async def run(self) -> TrialOutcome:
        """Start the process and return once it has ended and its output is read."""
        spec = self.spec
        cfg = spec.config
        try:
            parser = OutputParser(
                OutputConfig(
                    objective=spec.objectives[0] if spec.objectives else "loss",
                    objective_regex=spec.objective_regex,
                    stderr_lines=cfg.stderr_lines,
                    step_offset=spec.step_offset,
                )
            )
        except re.error as exc:
            return self._finish_early(f"objective regex {spec.objective_regex!r} is invalid: {exc}")
        if not spec.argv:
            return self._finish_early("empty command; nothing to run")
        if spec.prepare is not None:
            try:
                await asyncio.to_thread(spec.prepare)
            except OSError as exc:
                refused = storage_failure(exc)
                if refused is not None:  # (the disk's fault: set free to run again)
                    reason = f"this peer's disk refused its folder ({refused})"
                    return self._finish_early(reason, "interrupted", disk=refused)
                return self._finish_early(f"cannot lay out its code: {exc.strerror or exc}")
        stopped = self._kill_reason or self._stop_reason
        if stopped is not None:
            # Asked to stop before it started (while its code was laid out: a peer stop, a
            # freeze, a run giving way): it is not started (it was, to be stopped a grace
            # later, and a peer stop waited that grace out).
            stage = "kill" if self._kill_reason is not None else None
            return self._finish_early(stopped, "interrupted", stage=stage)
        if not Path(spec.cwd).is_dir():
            return self._finish_early(f"working directory {spec.cwd} does not exist")
        try:
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(spec.log_path, "ab")  # noqa: SIM115 - closed in the finally below
            if self._log.tell():  # an earlier attempt's output (thawed, or re-run after a loss)
                start = f"step {spec.step_offset}" if spec.step_offset else "the start"
                self._log.write(f"--- metaopt: another attempt, from {start} ---\n".encode())
        except OSError as exc:  # the disk refused the log: the trial runs, its output waits
            self._log_refused(exc)
        try:
            if spec.stop_file is not None:
                # A thawed trial reuses its stop file path; the old request must not stop it.
                with contextlib.suppress(FileNotFoundError):
                    spec.stop_file.unlink()
        except OSError as exc:
            self._close_log()  # (the finally below is not reached from here)
            return self._finish_early(f"cannot prepare the trial: {exc}")
        if spec.objective_regex:
            self._matcher = ThreadPoolExecutor(1, thread_name_prefix="metaopt-regex")
        try:
            return await self._run(parser)
        finally:
            if self._log is None:
                # A run that ended within the retry of a refusal left its log silent on what
                # it lost (its last lines, the result, lost though the disk took writes again).
                self._reopen_log(last=True)
            if self._log_lost:  # (the disk still full: said here, or said nowhere)
                log.warning(
                    "%s: %d bytes of the trial's output lost: the disk refused them",
                    spec.log_path,
                    self._log_lost,
                )
            self._close_log()
            if self._matcher is not None:
                # A chunk still being matched ends within the parser's regex_timeout.
                self._matcher.shutdown(wait=False, cancel_futures=True)

    async def _run(self, parser: OutputParser) -> TrialOutcome:
        spec = self.spec
        cfg = spec.config
        # The peer's cluster key is not the trial's business: tools that capture the
        # environment (trackers, crash reporters) would carry it off.
        inherited = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        env = {**inherited, "PYTHONUNBUFFERED": "1", **spec.env}
        argv, told, passed = list(spec.argv), None, []
        proc = None
        try:
            if cfg.subreaper:  # (it says through `told` whether the command started)
                told, tell = os.pipe()
                passed.append(tell)
                try:
                    # (the command in a file, not on its command line: see _subreaper.py)
                    passed.append(command_file(argv))
                except OSError as exc:  # (neither a memfd nor a temporary file: the machine's)
                    return self._finish_early(
                        f"cannot start the trial: no file could hold its command for its parent"
                        f" process ({exc.strerror or exc}); free file descriptors, or room in"
                        f" {tempfile.gettempdir()}"
                    )
                env[SUBREAPER_MARK] = "1"  # (its own: the command's environment goes without)
                env.update(SUBREAPER.env())
                argv = SUBREAPER.argv(*map(str, passed))
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=spec.cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                # Its own group (the command's, or the subreaper's, which gives the command
                # one of its own): the watchdog and stops reach all of it, and no more.
                start_new_session=True,
                pass_fds=passed,
            )
        except (OSError, ValueError) as exc:
            if isinstance(exc, OSError):
                what = exc.strerror or str(exc)
                if told is not None and exc.errno != errno.E2BIG:  # (E2BIG: its arguments)
                    # The program that did not start is this peer's Python (a venv rebuilt
                    # under a running peer), not the command.
                    return self._finish_early(
                        f"cannot start the trial: this peer's Python {argv[0]!r} did not run"
                        f" ({what}); if it was moved or reinstalled, restart the peer"
                    )
                return self._finish_early(_not_started(spec.argv[0], spec.cwd, what))
            # "embedded null byte": no command line or environment carries a NUL (a choice's
            # value, a name from another peer); one line, not a traceback at every trial.
            return self._finish_early(f"cannot start {spec.argv[0]!r}: {exc} in its arguments")
        finally:
            for fd in passed:
                os.close(fd)
            if proc is None and told is not None:
                # Nobody will write to it: the start failed, or the run was cancelled while
                # it started (which left the pipe open in the peer, one per cancelled start).
                os.close(told)
        group = proc.pid
        if told is not None:
            group, why = await self._started(proc, told)
            if why is not None:
                return self._finish_early(_not_started(spec.argv[0], spec.cwd, why))
        loop = asyncio.get_running_loop()
        self.pid, self._proc = group, proc
        self._last_activity = loop.time()
        self._emit("started", pid=self.pid)
        if self._kill_reason is not None:
            self._signal(signal.SIGKILL)
        elif self._stop_reason is not None:
            self._escalation = loop.create_task(self._escalate())
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            loop.create_task(self._pump(proc.stdout, parser, stdout=True)),
            loop.create_task(self._pump(proc.stderr, parser, stdout=False)),
        ]
        beat = loop.create_task(self._heartbeat())
        # Process.wait() also waits for the pipes to close, which a forked worker of the trial
        # can hold open for ever; the exit itself shows in returncode, so watch that instead.
        waiter = loop.create_task(proc.wait())
        try:
            while proc.returncode is None and not waiter.done():
                await asyncio.wait({waiter}, timeout=_EXIT_POLL)
        except asyncio.CancelledError:
            self._stage = "cancelled"
            self._signal(signal.SIGKILL)
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), cfg.drain)
            self._exited.set()
            self._cleanup([*pumps, waiter], beat)
            self._tell_notes(parser, ended=True)  # (what it said of the output so far)
            self._emit(
                "interrupted", exit_code=proc.returncode, reason="cancelled", stage="cancelled"
            )
            raise
        code = proc.returncode
        assert code is not None
        self._exited.set()
        self._signal(signal.SIGKILL)  # stray members of the group, if any
        late = await self._drain([*pumps, waiter])
        self._cleanup(list(late), beat)
        # Killed by a signal (this peer's freeze or kill, a shutdown's, the OOM killer's), it
        # left a frame half drawn: no value of its own. One that caught the signal and exited
        # on its own wrote its last line itself.
        cut = _died_of_a_signal(code)
        for report in await self._parse(functools.partial(parser.finish, cut=cut)):
            self._progress(report)
        self._tell_notes(parser, ended=True)
        self._check_broken(parser)
        return self._conclude(code, parser)

    async def _started(self, proc: asyncio.subprocess.Process, told: int) -> tuple[int, str | None]:
        """Wait until the subreaper has started the command: its pid (its group's id), or the
        subreaper's and why the command could not start.

        Until then the trial is not running (a stop or kill asked meanwhile is acted on once it
        is) and the watchdog does not know its group: a peer that dies meanwhile leaves the
        subreaper's pipe without a reader, and the subreaper kills the command.
        """
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(told, "rb", buffering=0)
        )
        reading = asyncio.ensure_future(reader.read())  # to its end: written once, then closed
        try:
            said = await asyncio.shield(reading)
        except asyncio.CancelledError:
            # The run is cancelled (its peer stops) as the command starts: killed once known,
            # as a started one is; the subreaper then reaps what it left and exits.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, ValueError, OSError):
                said = await asyncio.wait_for(reading, self.spec.config.drain)
                os.killpg(int(said), signal.SIGKILL)
            raise
        finally:
            transport.close()
        if said.startswith(b"!"):
            with contextlib.suppress(TimeoutError):  # it exits 127 at once
                await asyncio.wait_for(proc.wait(), self.spec.config.drain)
            return proc.pid, said[1:].decode(errors="replace") or "unknown error"
        try:
            return int(said), None
        except ValueError:  # nothing: it died first (its exit code tells how)
            return proc.pid, None

    async def _drain(self, readers: list[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
        """Read what the exited process left in its pipes, up to the drain time; the readers
        still at it then. Pipes still open a moment after the exit are held by a process that
        left the trial's group (setsid, a daemon), killed with the group at none of its
        signals: that one is stopped (spec.stop_escaped), so its trial's end is not held for
        the whole drain (5 s a trial, and a `peer stop` twice as long as it said)."""
        drain = self.spec.config.drain
        _done, late = await asyncio.wait(readers, timeout=min(_ESCAPED_AFTER, drain))
        if late and self.spec.stop_escaped is not None and drain > _ESCAPED_AFTER:
            self.spec.stop_escaped()
            _done, late = await asyncio.wait(late, timeout=drain - _ESCAPED_AFTER)
        return late

    def _conclude(self, code: int, parser: OutputParser) -> TrialOutcome:
        spec = self.spec
        tail = tuple(parser.stderr_tail())
        # A metric whose latest report was nan or inf is recorded as written, as text: not
        # dropped, and not the last finite value it reported before.
        metrics = last_metrics({**parser.latest, **parser.nonfinite}, spec.objectives)
        objectives = {n: v for n in spec.objectives if (v := parser.objective(n)) is not None}
        if parser.broken is not None:  # killed for it: its stderr is no part of the story
            return self._failed(code, parser.broken, tail, metrics, objectives, with_stderr=False)
        if self._kill_reason is not None or self._stop_reason is not None:
            reason = self._kill_reason or self._stop_reason
            stage = self._stage or "stop-file"
            if self._kill_reason is None and stage == "stop-file" and code != 0:
                # Asked to save a checkpoint and exit 0, it ended otherwise before any signal:
                # it crashed (while checkpointing, say), and its checkpoint is not to be trusted.
                # (Its peer may know better: see TrialRunner._stopped_with_peer.)
                why = f"crashed when asked to stop ({reason}): {_describe_exit(code)}"
                return self._failed(code, why, tail, metrics, objectives)
            outcome = TrialOutcome("interrupted", code, metrics, objectives, reason, tail, stage)
            self._emit("interrupted", exit_code=code, reason=reason, stage=stage, metrics=metrics)
            return outcome
        diverged = [
            f"{n} = {parser.nonfinite[n]}" for n in spec.objectives if n in parser.nonfinite
        ]
        if code == 0 and diverged:
            why = f"diverged: its last report was {', '.join(diverged)}"
            failed = self._failed(code, why, tail, metrics, objectives)
            return dataclasses.replace(failed, diverged=True)
        if code == 0 and parser.unread is not None:
            # Its latest report went unread: what was read before is not its result.
            return self._failed(code, parser.unread, tail, metrics, objectives)
        if code == 0 and len(objectives) == len(spec.objectives):
            self._emit("completed", exit_code=0, objectives=objectives, metrics=metrics)
            return TrialOutcome("completed", 0, metrics, objectives, None, tail)
        if code == 0:
            why = "no objective reported: " + parser.explain_missing(tuple(spec.objectives))
        else:
            why = _describe_exit(code)
        return self._failed(code, why, tail, metrics, objectives)

    def _failed(
        self,
        code: int,
        why: str,
        tail: tuple[str, ...],
        metrics: dict[str, MetricValue],
        objectives: dict[str, float],
        *,
        with_stderr: bool = True,
    ) -> TrialOutcome:
        stderr = with_stderr and code != 0 and tail
        reason = why + (f"; last stderr: {tail[-1].strip()[:200]}" if stderr else "")
        self._emit("failed", exit_code=code, reason=reason, stderr_tail=list(tail), metrics=metrics)
        return TrialOutcome("failed", code, metrics, objectives, reason, tail)

    def _finish_early(
        self,
        reason: str,
        status: Status = "failed",
        disk: str | None = None,
        stage: str | None = None,
    ) -> TrialOutcome:
        """The outcome of a trial that never started (exit code None)."""
        self._exited.set()
        self._emit(status, exit_code=None, reason=reason, stderr_tail=[], stage=stage)
        return TrialOutcome(status, None, {}, {}, reason, stage=stage, disk=disk)

    def _cleanup(self, tasks: list[asyncio.Task[Any]], beat: asyncio.Task[None]) -> None:
        for task in [*tasks, beat]:
            task.cancel()
        if self._escalation is not None:
            self._escalation.cancel()

    async def _pump(
        self, stream: asyncio.StreamReader, parser: OutputParser, *, stdout: bool
    ) -> None:
        size = self.spec.config.read_bytes
        while chunk := await stream.read(size):
            if self._untold and self._redrawn and chunk.startswith(b"\r"):
                # Between two frames of a progress bar (its line redrawn with \r, never ended):
                # held for the line's end, the note showed only at the exit.
                self._flush_notes()
            self._write_log(chunk)
            self._note_where(chunk)
            for report in await self._parse(functools.partial(parser.feed, chunk, stdout=stdout)):
                self._progress(report)
            self._tell_notes(parser)
            self._check_broken(parser)

    def _write_log(self, data: bytes) -> None:
        if self._log is None and not self._reopen_log():
            if self._log_lost is not None:
                self._log_lost += len(data)
            return
        assert self._log is not None
        size: int | None = None
        try:
            size = self._rotate_log(len(data))
            self._log.write(data)
            self._log.flush()
        except OSError as exc:  # a full disk must not stop the trial being read
            kept = self._kept_since(size, len(data))
            self._log_refused(exc)
            self._log_lost = (self._log_lost or 0) + len(data) - kept

    def _kept_since(self, size: int | None, wrote: int) -> int:
        """How much of a write the disk took before it refused the rest (a full disk takes
        what fits): counted lost, the part written made the total over by up to a chunk."""
        if size is None or self._log is None:
            return 0
        try:
            return min(max(os.fstat(self._log.fileno()).st_size - size, 0), wrote)
        except OSError:
            return 0

    def _close_log(self) -> None:
        """Close the log; a disk refusing what close flushes (the line saying what was lost,
        on a disk still full) must not replace the run's outcome: raised out of run, it threw
        the result away, and the trial was re-run as if its peer had restarted."""
        if self._log is not None:
            try:
                self._log.close()
            except (OSError, ValueError) as exc:
                log.warning("cannot write %s: %s", self.spec.log_path, exc)

    def _log_refused(self, exc: OSError) -> None:
        """The disk refused the log: closed, tried again a few seconds later; said once a
        minute (a disk that took a few bytes between refusals was said every retry)."""
        if self._log_lost is None:
            if time.monotonic() >= self._log_said_at + 60.0:
                self._log_said_at = time.monotonic()
                log.warning("cannot write %s: %s", self.spec.log_path, exc)
            self._log_lost = 0
        if self._log is not None:
            with contextlib.suppress(OSError, ValueError):  # (its flush fails again)
                self._log.close()
            self._log = None
        self._log_retry_at = time.monotonic() + _LOG_RETRY

    def _reopen_log(self, *, last: bool = False) -> bool:
        """Open the log again after the disk refused it, saying what was lost meanwhile; at
        the ``last`` (the run's output all read), whenever the last try was."""
        if self._log_lost is None or (not last and time.monotonic() < self._log_retry_at):
            return False
        try:
            self._log = open(self.spec.log_path, "ab")  # noqa: SIM115 - closed as the first
            if self._log_lost:
                # On a line of its own: a filling disk took part of a write, and the note
                # went on at the end of that half line.
                start = "\n" if _ends_mid_line(self.spec.log_path) else ""
                self._log.write(
                    f"{start}--- metaopt: {self._log_lost} bytes of output lost here: the disk"
                    " refused them ---\n".encode()
                )
            # Opening takes no space: unflushed, the line above counted as said on a disk
            # still full, and was lost with the count at the next write's refusal.
            self._log.flush()
        except OSError as exc:
            self._log_refused(exc)
            return False
        self._log_lost = None
        return True

    def _note_where(self, chunk: bytes) -> None:
        """Where the log now ends: inside a line, and whether that line is redrawn (\r)."""
        if b"\n" in chunk:
            tail = chunk.rsplit(b"\n", 1)[1]
            self._redrawn = b"\r" in tail
        else:
            tail = chunk
            self._redrawn = self._redrawn or b"\r" in chunk
        self._mid_line = bool(tail)

    def _tell_notes(self, parser: OutputParser, *, ended: bool = False) -> None:
        """Say in the trial's log, once each, what of its output was not read: a metric named
        "val acc" in a report that also gave the objective was dropped without a word (the
        notes were shown only as the reason of a run that lacked its objective)."""
        new = min(parser.note_count - self._notes_read, len(parser.notes))
        self._notes_read = parser.note_count
        for note in list(parser.notes)[len(parser.notes) - new :] if new > 0 else ():
            if note not in self._notes_told and len(self._notes_told) < _MAX_NOTES_TOLD:
                self._notes_told.add(note)
                self._untold.append(f"--- metaopt: {note} ---\n".encode(errors="replace"))
        # Not inside a line of the script's (a chunk may end mid-line: "epoch 1: loss " and
        # the note, then "0.5"), unless its output has ended; a progress bar's line is left
        # between two frames (_pump).
        if self._untold and (not self._mid_line or ended):
            self._flush_notes()

    def _flush_notes(self) -> None:
        self._write_log(b"\n" * self._mid_line + b"".join(self._untold))
        self._untold.clear()
        self._mid_line = self._redrawn = False

    async def _parse(
        self, read: Callable[[], list[dict[str, MetricValue]]]
    ) -> list[dict[str, MetricValue]]:
        """The reports of one read of the output, matched off the event loop if a regex is.

        A regex can take its whole time limit on every chunk (0.5 s), and the loop it held is the
        one replication, heartbeats and turns share: a budget of 2 once ran 4 while one did.
        The ``regex`` module releases the GIL while it matches, so a thread frees the loop.
        Without a regex a chunk is read in microseconds, where a thread's hop would cost more.
        """
        if self._matcher is None:
            return read()
        return await asyncio.get_running_loop().run_in_executor(self._matcher, read)

    def _check_broken(self, parser: OutputParser) -> None:
        if parser.broken is not None and self._broken is None:
            # Its output can no longer be read, so its objective never will be: end it now
            # rather than let it hold a slot (and, line after line, the event loop).
            self._broken = parser.broken
            log.warning("trial of %s: %s", self.spec.log_path, parser.broken)
            self._signal(signal.SIGKILL)

    def _rotate_log(self, incoming: int) -> int:
        """Move the log to <log>.1 first if this write would take it past half the cap; the
        log's size then (flushed after every write, so its position)."""
        assert self._log is not None
        size = self._log.tell()
        if size + incoming <= self.spec.config.max_log_bytes // 2:
            return size
        self._log.close()
        path = self.spec.log_path
        os.replace(path, path.with_name(path.name + ".1"))
        self._log = open(path, "ab")  # noqa: SIM115 - closed where the first one was
        return 0

    def _progress(self, report: dict[str, MetricValue]) -> None:
        self._reports += 1
        step = report.get("step")
        if isinstance(step, int):
            self._explicit_step = True
        elif self._explicit_step and self._last_step is not None:
            step = self._last_step
        else:
            step = self.spec.step_offset + self._reports
        self._last_step = step
        self._last_activity = asyncio.get_running_loop().time()
        self._emit("progress", step=step, metrics=dict(report))

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.spec.config.heartbeat
        while True:
            await asyncio.sleep(max(self._last_activity + period - loop.time(), period / 100))
            if loop.time() - self._last_activity >= period:
                self._last_activity = loop.time()
                self._emit("heartbeat", step=self._last_step)

    async def _escalate(self) -> None:
        grace = self.spec.config.grace
        if self.spec.stop_file is not None:
            self._stage = "stop-file"
            try:
                self.spec.stop_file.parent.mkdir(parents=True, exist_ok=True)
                self.spec.stop_file.touch()
            except OSError as exc:
                log.warning("cannot create stop file %s: %s", self.spec.stop_file, exc)
            if await self._exits_within(grace):
                return
        self._stage = "SIGTERM"
        self._signal(signal.SIGTERM)
        if await self._exits_within(grace):
            return
        self._stage = "SIGKILL"
        self._signal(signal.SIGKILL)

    async def _exits_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._exited.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def _signal(self, sig: signal.Signals) -> None:
        if self.pid is None:
            return
        # The group outlives its leader only while members remain, so this cannot reach a
        # stranger's group; ESRCH just means nobody is left.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def _emit(self, kind: str, **data: Any) -> None:
        data["time"] = self._clock()
        try:
            self._on_event(kind, data)
        except Exception:  # a broken listener must not orphan the child or lose its outcome
            log.exception("event listener failed on %s", kind)


async def run_trial(
    spec: TrialSpec, on_event: EventCallback, *, clock: Callable[[], float] = time.time
) -> TrialOutcome:
    """Run one trial to its end (see :class:`TrialProcess`)."""
    return await TrialProcess(spec, on_event, clock=clock).run()


def last_metrics(
    metrics: dict[str, MetricValue], objectives: Sequence[str]
) -> dict[str, MetricValue]:
    """What an end event carries of a run's metrics: its objectives, then the others, the
    latest named first, up to END_METRICS in all. Every name a run ever reported was carried,
    and 30,000 names made a 1.3 MB event, over the record limit: a run that exited 0 with its
    objective was recorded failed, "executor error" (a mutation audit)."""
    if len(metrics) <= END_METRICS:
        return metrics
    kept = {n: metrics[n] for n in objectives if n in metrics}
    for name in reversed(metrics):
        if len(kept) >= END_METRICS:
            break
        kept.setdefault(name, metrics[name])
    return kept


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def stopped_by_signal(code: int) -> bool:
    """Whether an exit code says the process ended on a signal asking it to (SIGTERM, SIGINT,
    SIGHUP: directly, or as a shell reports a child's, 128 + the signal), not that it
    crashed."""
    return any(code in (-sig, 128 + sig) for sig in _STOP_SIGNALS)


def _not_started(program: str, cwd: Path, why: str) -> str:
    """Why a trial's command did not start, in one line. A script whose #! interpreter is
    missing on this peer fails with "No such file or directory", the script being right there:
    its interpreter is named instead."""
    said = f"cannot start {program!r}: {why}; check the command"
    if why != os.strerror(errno.ENOENT) or "/" not in program:
        return said
    try:
        with (cwd / program).open("rb") as f:
            head = f.readline(4096)
    except OSError:
        return said  # (the file itself is missing: as said)
    if not head.startswith(b"#!"):
        return said
    if head.endswith(b"\r\n"):
        return (
            f"cannot start {program!r}: its #! line ends in \\r (Windows line endings);"
            " convert the file, e.g. dos2unix"
        )
    interpreter = head[2:].strip().split(maxsplit=1)[:1] or [b""]
    name = interpreter[0].decode(errors="replace")
    return (
        f"cannot start {program!r}: its #! interpreter {name!r} is not on this peer; install"
        " it or change the #! line"
    )


def _ends_mid_line(path: Path) -> bool:
    """Whether the file's last byte ends no line (False for an empty or unreadable one)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        size = os.fstat(fd).st_size
        return size > 0 and os.pread(fd, 1, size - 1) != b"\n"
    except OSError:
        return False
    finally:
        os.close(fd)


def _died_of_a_signal(code: int) -> bool:
    """Whether an exit status says the process was killed by a signal: any, or as a shell
    reports its command's (128 + a stop signal, or SIGKILL's)."""
    return code < 0 or stopped_by_signal(code) or code == 128 + signal.SIGKILL


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exited with code {code}"
