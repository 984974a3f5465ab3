"""Real child processes through the executor, where the executor tests left behaviour
unpinned: stop and kill requests made before the start or after the exit, how a run that
ends otherwise than planned is described, steps, the log, and the end event's metrics."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from metaopt.peer._executor import (
    END_METRICS,
    ExecutorConfig,
    TrialProcess,
    TrialSpec,
    last_metrics,
    stopped_by_signal,
)
from metaopt.peer._identity import pid_gone
from metaopt.peer._output import OutputParser
from tests.metaopt.peer.test_executor import _FAST, EPOCHS, LOOP, _kinds, _run, _script, _spec

SHORT_LOOP = LOOP.replace("range(1, 600)", "range(1, 60)")  # ~3 s if nothing stops it
SUBREAPED = dataclasses.replace(_FAST, subreaper=True)


@pytest.mark.asyncio
async def test_a_kill_before_the_start_kills_the_process_as_soon_as_it_starts(
    tmp_path: Path,
) -> None:
    """Pins that kill() called before run() is carried out at the start (stage "kill"): a
    peer shutting down while a trial is being launched must not let it run. It is not
    started at all (it was started, then killed: a review of the session's fixes)."""
    script = _script(tmp_path, "import time\ntime.sleep(3)\nprint('METAOPT {\"loss\": 1}')\n")
    events: list[tuple[str, dict[str, Any]]] = []
    process = TrialProcess(_spec(tmp_path, script), lambda k, d: events.append((k, d)))
    process.kill("peer shutting down")
    outcome = await asyncio.wait_for(process.run(), 60)
    assert (outcome.status, outcome.stage, outcome.exit_code) == ("interrupted", "kill", None)
    assert outcome.reason == "peer shutting down" and outcome.objectives == {}
    assert _kinds(events) == ["interrupted"]


@pytest.mark.asyncio
async def test_a_stop_requested_before_the_start_is_carried_out_once_it_starts(
    tmp_path: Path,
) -> None:
    """Pins that request_stop() before run() is carried out: a trial frozen as it is
    launched must not run to its end. It is not started at all (it was started, then
    stopped a grace later: a review of the session's fixes)."""
    events: list[tuple[str, dict[str, Any]]] = []
    spec = _spec(tmp_path, _script(tmp_path, SHORT_LOOP), "honour",
                 env={"METAOPT_CHECKPOINT_DIR": str(tmp_path / "ckpt")})  # fmt: skip
    process = TrialProcess(spec, lambda k, d: events.append((k, d)))
    process.request_stop("frozen")
    outcome = await asyncio.wait_for(process.run(), 60)
    assert (outcome.status, outcome.stage, outcome.reason) == ("interrupted", None, "frozen")
    assert outcome.exit_code is None and _kinds(events) == ["interrupted"]
    assert not (tmp_path / "ckpt" / "ckpt").exists()  # it never ran


@pytest.mark.asyncio
async def test_the_first_stop_request_is_the_one_that_counts(tmp_path: Path) -> None:
    """Pins that a second request_stop() neither replaces the reason nor starts a second
    escalation: the reason recorded (frozen, say) decides whether the trial is thawed."""

    def react(process: TrialProcess, kind: str, data: dict[str, Any]) -> None:
        if kind == "progress" and data["step"] == 1:
            process.request_stop("frozen")
            process.request_stop("superseded")

    spec = _spec(tmp_path, _script(tmp_path, SHORT_LOOP), "honour",
                 env={"METAOPT_CHECKPOINT_DIR": str(tmp_path / "ckpt")})  # fmt: skip
    outcome, events = await _run(spec, react)
    assert (outcome.status, outcome.reason) == ("interrupted", "frozen")
    assert events[-1][1]["reason"] == "frozen"


@pytest.mark.asyncio
async def test_a_kill_after_a_stop_request_names_the_kill(tmp_path: Path) -> None:
    """Pins that when a stop is overtaken by a kill, the outcome's reason and stage are the
    kill's: the runner records why the trial really ended (a peer shutting down, not a
    freeze). The pending escalation said stage "stop-file" for a SIGKILL."""

    def react(process: TrialProcess, kind: str, data: dict[str, Any]) -> None:
        if kind == "progress" and data["step"] == 1:
            process.request_stop("frozen")
            process.kill("peer shutting down")

    outcome, _ = await _run(_spec(tmp_path, _script(tmp_path, SHORT_LOOP), "ignore-stop"), react)
    assert (outcome.status, outcome.exit_code) == ("interrupted", -9)
    assert (outcome.reason, outcome.stage) == ("peer shutting down", "kill")


@pytest.mark.asyncio
async def test_a_stop_or_kill_after_the_exit_changes_nothing(tmp_path: Path) -> None:
    """Pins that requests made once the process has exited are ignored: a run that exited 0
    with its objective (read at the end, from a last line without a newline) stays
    completed, and no stop file is created for a thawed run to trip over."""

    def react(process: TrialProcess, kind: str, data: dict[str, Any]) -> None:
        if kind == "progress" and process.exited:
            process.kill("too late")
            process.request_stop("too late")

    script = _script(tmp_path, "print('METAOPT {\"loss\": 0.5}', end='')\n")
    outcome, events = await _run(_spec(tmp_path, script), react)
    assert any(k == "progress" for k, _ in events)  # (the react above had its chance)
    assert (outcome.status, outcome.objectives, outcome.stage) == ("completed", {"loss": 0.5}, None)
    for _ in range(3):
        await asyncio.sleep(0)
    assert not (tmp_path / "stop").exists()


@pytest.mark.asyncio
async def test_without_a_stop_file_a_stop_goes_straight_to_sigterm(tmp_path: Path) -> None:
    """Pins the escalation of a trial launched without a stop file (stop_file=None): SIGTERM
    at once, not a crash of the escalation that left the trial running to its end."""
    spec = dataclasses.replace(
        _spec(tmp_path, _script(tmp_path, SHORT_LOOP), "ignore-stop"), stop_file=None
    )

    def react(process: TrialProcess, kind: str, data: dict[str, Any]) -> None:
        if kind == "progress" and data["step"] == 1:
            process.request_stop("frozen")

    outcome, _ = await _run(spec, react)
    assert (outcome.status, outcome.stage, outcome.exit_code) == ("interrupted", "SIGTERM", -15)


KILLS_ITSELF_ON_STOP = """
    import os, signal, time
    import metaopt.worker as w
    for step in range(1, 60):
        w.report(loss=1.0 / step, step=step)
        if w.should_stop():
            os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
"""


@pytest.mark.asyncio
async def test_a_run_killed_by_a_signal_of_its_own_while_stopping_failed(tmp_path: Path) -> None:
    """Pins that a trial asked to stop that dies of a signal before any was sent (a segfault
    while checkpointing, say) is failed, not interrupted: its checkpoint is not to be trusted,
    and the reason names the signal."""

    def react(process: TrialProcess, kind: str, data: dict[str, Any]) -> None:
        if kind == "progress" and data["step"] == 1:
            process.request_stop("frozen")

    config = dataclasses.replace(_FAST, grace=30.0)  # no signal of ours comes first
    spec = _spec(tmp_path, _script(tmp_path, KILLS_ITSELF_ON_STOP), config=config)
    outcome, events = await _run(spec, react)
    assert (outcome.status, outcome.exit_code) == ("failed", -10)
    assert outcome.reason == "crashed when asked to stop (frozen): killed by SIGUSR1"
    assert events[-1][0] == "failed"


@pytest.mark.asyncio
async def test_a_nan_then_a_crash_is_a_crash_not_a_divergence(tmp_path: Path) -> None:
    """Pins that "diverged" is said only of a run that exited 0: one that reported nan and
    then crashed failed for its crash (the exit code and stderr are what the user needs),
    and is not flagged diverged."""
    script = _script(
        tmp_path,
        "import sys\nprint('METAOPT {\"loss\": NaN}')\nprint('boom', file=sys.stderr)\n"
        "sys.exit(3)\n",
    )
    outcome, _ = await _run(_spec(tmp_path, script))
    assert (outcome.status, outcome.exit_code, outcome.diverged) == ("failed", 3, False)
    assert outcome.reason == "exited with code 3; last stderr: boom"


@pytest.mark.asyncio
async def test_a_run_that_ends_on_nan_is_flagged_diverged(tmp_path: Path) -> None:
    """Pins the ``diverged`` flag of the outcome (the runner records a diverged run with its
    nan, not as a plain failure): a run that exited 0 on a nan objective."""
    script = _script(
        tmp_path, "print('METAOPT {\"loss\": 0.5}')\nprint('METAOPT {\"loss\": NaN}')\n"
    )
    outcome, _ = await _run(_spec(tmp_path, script))
    assert (outcome.status, outcome.diverged) == ("failed", True)
    assert outcome.reason == "diverged: its last report was loss = nan"


@pytest.mark.asyncio
async def test_an_unread_last_report_then_a_crash_is_described_by_the_crash(
    tmp_path: Path,
) -> None:
    """Pins that a crash is described as a crash even when its last report went unread (over
    the line limit): the exit code is what went wrong."""
    body = (
        "import sys\nprint('x' * 70000 + 'METAOPT {\"loss\": 0.75}')\n"
        "print('oom', file=sys.stderr)\nsys.exit(137)\n"
    )
    outcome, _ = await _run(_spec(tmp_path, _script(tmp_path, body)))
    assert (outcome.status, outcome.exit_code) == ("failed", 137)
    assert outcome.reason == "exited with code 137; last stderr: oom"


@pytest.mark.asyncio
async def test_a_run_missing_one_of_several_objectives_fails(tmp_path: Path) -> None:
    """Pins that with several objectives, every one must be reported to complete: a run that
    reported the loss but not the latency would otherwise enter the Pareto front with a
    value it does not have."""
    script = _script(tmp_path, "print('METAOPT {\"loss\": 0.5}')\n")
    outcome, events = await _run(_spec(tmp_path, script, objectives=("loss", "latency")))
    assert (outcome.status, outcome.exit_code) == ("failed", 0)
    assert outcome.objectives == {"loss": 0.5}
    assert outcome.reason is not None and outcome.reason.startswith("no objective reported:")
    assert "latency" in outcome.reason
    assert _kinds(events)[-1] == "failed"


@pytest.mark.asyncio
async def test_a_run_that_exits_0_without_its_objective_is_not_blamed_on_its_stderr(
    tmp_path: Path,
) -> None:
    """Pins that the stderr line is appended to a failure's reason only for a non-zero exit:
    an exit 0 without an objective is explained by what it reported, not by a warning it
    printed (which would send the user after the wrong problem)."""
    script = _script(tmp_path, "import sys\nprint('a harmless warning', file=sys.stderr)\n")
    outcome, _ = await _run(_spec(tmp_path, script))
    assert outcome.status == "failed"
    assert outcome.reason == "no objective reported: no numeric 'loss' in 0 reports; 0 stdout lines"
    assert outcome.stderr_tail == ("a harmless warning",)


@pytest.mark.asyncio
async def test_an_empty_command_fails_before_starting_and_frees_its_slot(tmp_path: Path) -> None:
    """Pins the one-line failure of an empty argv, and that a trial that never started counts
    as exited (the runner counts busy slots by ``exited``: else the slot is held for ever)."""
    events: list[tuple[str, dict[str, Any]]] = []
    spec = TrialSpec(argv=[], cwd=tmp_path, log_path=tmp_path / "log")
    process = TrialProcess(spec, lambda k, d: events.append((k, d)))
    outcome = await asyncio.wait_for(process.run(), 60)
    assert (outcome.status, outcome.exit_code) == ("failed", None)
    assert outcome.reason == "empty command; nothing to run"
    assert _kinds(events) == ["failed"]
    assert process.exited and not process.running
    gone = TrialProcess(
        TrialSpec(argv=[sys.executable], cwd=tmp_path / "gone", log_path=tmp_path / "log"),
        lambda k, d: None,
    )
    await gone.run()
    assert gone.exited


@pytest.mark.asyncio
async def test_a_rerun_from_the_start_is_marked_off_as_such_in_its_log(tmp_path: Path) -> None:
    """Pins the marker of a second attempt with no resume step ("from the start", not "from
    step 0"): a user reading `metaopt logs` must see the run started over."""
    script = _script(tmp_path, EPOCHS)
    await _run(_spec(tmp_path, script))
    await _run(_spec(tmp_path, script))
    log = (tmp_path / "logs" / "output.log").read_text()
    assert log.count("--- metaopt: another attempt, from the start ---\n") == 1


@pytest.mark.asyncio
async def test_a_report_without_a_step_after_explicit_steps_keeps_the_last_step(
    tmp_path: Path,
) -> None:
    """Pins the step of a report without one once the run has given steps: the last explicit
    step (not a count of reports), so a curve never jumps back (step 40, then 3)."""
    lines = ['{"loss": 0.5, "step": 40}', '{"acc": 0.9}', '{"loss": 0.4, "step": 41}']
    script = _script(tmp_path, "".join(f"print('METAOPT {line}')\n" for line in lines))
    _, events = await _run(_spec(tmp_path, script))
    assert [d["step"] for k, d in events if k == "progress"] == [40, 40, 41]


@pytest.mark.asyncio
async def test_a_log_that_cannot_be_written_does_not_stop_the_trial_being_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Pins that a full disk under the log (ENOSPC on write) only loses the log: the trial's
    reports are still read and it completes, with one warning. The log file is closed then,
    not left to the garbage collector (whose flush of it failed again, unseen: pytest shows
    it as an unraisable ResourceWarning)."""

    def full(self: TrialProcess, incoming: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(TrialProcess, "_rotate_log", full)
    with caplog.at_level(logging.WARNING, logger="metaopt.peer"):
        outcome, _ = await _run(_spec(tmp_path, _script(tmp_path, EPOCHS)))
    assert outcome.status == "completed" and outcome.objectives == {"loss": pytest.approx(1 / 3)}
    assert len([r for r in caplog.records if "No space left" in r.getMessage()]) == 1


@pytest.mark.asyncio
async def test_each_log_file_stays_within_half_the_cap(tmp_path: Path) -> None:
    """Pins the rotation point, half of max_log_bytes per file (so the log and its older half
    together stay within the cap): at the full cap each, a chatty trial used twice its
    allowance of the replica's disk."""
    body = "for i in range(4000):\n    print(f'line {i:05d} ' + 'x' * 60)\n" \
        "print('METAOPT {\"loss\": 0.5}')\n"  # fmt: skip
    config = ExecutorConfig(heartbeat=30.0, grace=0.3, read_bytes=4096, max_log_bytes=64 << 10)
    outcome, _ = await _run(_spec(tmp_path, _script(tmp_path, body), config=config))
    assert outcome.status == "completed"
    for name in ("output.log", "output.log.1"):
        assert (tmp_path / "logs" / name).stat().st_size <= 32 << 10


def test_the_end_metrics_keep_the_objectives_however_early_they_were_named() -> None:
    """Pins that the objectives survive the END_METRICS cut even when named first of
    thousands: an end event without its objective makes a run that exited 0 with its loss a
    failure."""
    metrics: dict[str, Any] = {"loss": 0.25, "acc": 0.5}
    metrics.update({f"m{i}": float(i) for i in range(1000)})
    kept = last_metrics(metrics, ("loss", "acc"))
    assert len(kept) == END_METRICS
    assert kept["loss"] == 0.25 and kept["acc"] == 0.5
    assert "m999" in kept and "m0" not in kept


def test_the_end_metrics_keep_the_metrics_named_last_not_first() -> None:
    """A run names val_acc and train_loss at every step, and 300 per-class metrics once, in
    its first report: the end event kept the 256 first named, and the metrics reported to the end
    were the ones dropped."""
    parser = OutputParser()
    once = {f"class_{i}": float(i) for i in range(300)}
    first = {"loss": 1.0, "val_acc": 0.5, "train_loss": 0.2, "step": 0, **once}
    lines = [f"METAOPT {json.dumps(first)}"]
    lines += [f'METAOPT {{"val_acc": {0.5 + s / 100}, "train_loss": 0.1, "step": {s}}}'
              for s in range(1, 4)]  # fmt: skip
    parser.feed(("\n".join(lines) + "\n").encode())
    kept = last_metrics(parser.latest, ("loss",))
    assert len(kept) == END_METRICS
    assert kept["loss"] == 1.0 and kept["val_acc"] == 0.53 and kept["step"] == 3
    assert "train_loss" in kept and "class_299" in kept and "class_0" not in kept


@pytest.mark.asyncio
async def test_a_trial_that_cannot_be_prepared_leaves_its_log_closed(tmp_path: Path) -> None:
    """Its stop file a directory, the trial fails before it starts: the log opened for it was
    left open (a descriptor a peer lost per such trial, and a ResourceWarning)."""
    (tmp_path / "stop").mkdir()
    process = TrialProcess(_spec(tmp_path, _script(tmp_path, LOOP)), lambda kind, data: None)
    outcome = await process.run()
    assert outcome.status == "failed" and "cannot prepare the trial" in outcome.reason
    assert process._log is not None and process._log.closed


@pytest.mark.asyncio
async def test_what_of_a_trials_output_was_not_read_is_said_once_in_its_log(
    tmp_path: Path,
) -> None:
    """A metric with a bad name ("val acc", a space) in a report that also gave the objective
    was dropped without a word anywhere: its notes were shown only as the reason of a run that
    lacked its objective. Each distinct problem is now said once in the trial's log."""
    body = (
        "for step in range(1, 4):\n"
        '    print(\'METAOPT {"loss": 0.5, "val acc": 0.9, "step": %d}\' % step)\n'
        "print('METAOPT [1, 2]')\n"
    )
    outcome, _ = await _run(_spec(tmp_path, _script(tmp_path, body)))
    assert outcome.status == "completed"
    text = (tmp_path / "logs" / "output.log").read_text()
    told = [line for line in text.splitlines() if line.startswith("--- metaopt: ")]
    assert len(told) == 2, told
    assert "'val acc'" in told[0] and "METAOPT line is not a JSON object" in told[1]


@pytest.mark.asyncio
async def test_a_note_on_unread_output_never_splits_a_line_of_the_trials_own(
    tmp_path: Path,
) -> None:
    """A chunk of output may end mid-line ("epoch 1: loss ", then "0.5" a moment later): the
    note was written between the two halves of the script's line."""
    text = await _log_of_two_writes(tmp_path, "METAOPT [1, 2]\\nepoch 1: loss ", "0.5\\n")
    lines = text.decode().splitlines()
    assert "epoch 1: loss 0.5" in lines
    assert any(line.startswith("--- metaopt: METAOPT line is not a JSON object") for line in lines)


async def _log_of_two_writes(tmp_path: Path, first: str, then: str) -> bytes:
    """The log of a run that writes first, pauses (two chunks), then writes then and reports
    its objective: the strings are Python source literals' contents."""
    body = (
        "import sys, time\n"
        f"sys.stdout.write('{first}'); sys.stdout.flush()\n"
        "time.sleep(0.3)\n"
        f"sys.stdout.write('{then}METAOPT {{\"loss\": 0.5}}\\n')\n"
    )
    outcome, _ = await _run(_spec(tmp_path, _script(tmp_path, body)))
    assert outcome.status == "completed"
    return (tmp_path / "logs" / "output.log").read_bytes()


@pytest.mark.asyncio
async def test_a_note_is_not_held_back_by_a_progress_bar(tmp_path: Path) -> None:
    """A progress bar redraws its line with \\r and never ends it: the note on an unread line
    before it waited for the run's exit (hours, for `metaopt logs` of a long run). The script
    looks for it in its own log while its bar runs (up to 5 s) and reports what it saw."""
    log = tmp_path / "logs" / "output.log"
    body = f"""
        import sys, time
        sys.stdout.write("METAOPT [1, 2]\\n\\rstep 0"); sys.stdout.flush()
        seen, began = 0, time.monotonic()
        while not seen and time.monotonic() - began < 5:
            time.sleep(0.05)
            sys.stdout.write("\\rstep 1"); sys.stdout.flush()
            seen = int("--- metaopt: METAOPT line is not a JSON" in open({str(log)!r}).read())
        print('\\nMETAOPT {{"loss": %d}}' % seen)
    """
    outcome, _ = await _run(_spec(tmp_path, _script(tmp_path, body)))
    assert outcome.status == "completed" and outcome.objectives == {"loss": 1}


@pytest.mark.asyncio
async def test_a_cancelled_run_still_says_what_of_its_output_was_not_read(
    tmp_path: Path,
) -> None:
    """A run cancelled (its peer's loop torn down) while its log ended mid-line lost the note
    held for the line's end."""
    log = tmp_path / "logs" / "output.log"
    body = "import sys, time\nsys.stdout.write('METAOPT [1, 2]\\nepoch 1: loss ')\n"
    body += "sys.stdout.flush(); time.sleep(30)\n"
    process = TrialProcess(_spec(tmp_path, _script(tmp_path, body)), lambda kind, data: None)
    task = asyncio.ensure_future(process.run())
    for _ in range(400):  # (the line reaches the log, and is read in the same step)
        if log.exists() and "epoch 1: loss" in log.read_text():
            break
        await asyncio.sleep(0.025)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "--- metaopt: METAOPT line is not a JSON object" in log.read_text()


@pytest.mark.asyncio
async def test_a_note_adds_no_blank_line_where_a_crlf_pair_spans_two_chunks(
    tmp_path: Path,
) -> None:
    """A line ended by \\r\\n whose \\r closed one chunk and \\n opened the next: the \\r was
    taken for a progress bar's, the note written between the two, and a blank line added."""
    text = await _log_of_two_writes(
        tmp_path, "METAOPT [1, 2]\\nepoch 1: loss 0.5\\r", "\\nepoch 2: loss 0.4\\r\\n"
    )
    assert b"\n\n" not in text and b"epoch 1: loss 0.5\r\nepoch 2: loss 0.4\r\n" in text
    assert b"--- metaopt: METAOPT line is not a JSON object" in text


class _KilledWhileStarting(TrialProcess):
    async def _started(self, proc: Any, told: int) -> tuple[int, str | None]:
        got = await super()._started(proc, told)
        self.kill("peer shutting down")  # asked in the window: pid not yet set
        return got


@pytest.mark.asyncio
async def test_a_kill_asked_while_the_process_starts_ends_it_at_once(tmp_path: Path) -> None:
    script = _script(tmp_path, "import time\ntime.sleep(20)\nprint('METAOPT {\"loss\": 1}')\n")
    events: list[tuple[str, dict[str, Any]]] = []
    process = _KilledWhileStarting(_spec(tmp_path, script), lambda k, d: events.append((k, d)))
    outcome = await asyncio.wait_for(process.run(), 60)
    assert (outcome.status, outcome.stage) == ("interrupted", "kill")
    # Killed at once: it never reached its report (left to run, it printed one after 20 s).
    assert outcome.metrics == {} and not any(kind == "progress" for kind, _ in events)


STRAY = """
import os, sys, time
pid = os.fork()
if pid == 0:
    time.sleep(60)
    os._exit(0)
open(sys.argv[1], "w").write(str(pid))
print('METAOPT {"loss": 1}', flush=True)
"""


@pytest.mark.asyncio
async def test_a_stray_of_the_trials_group_is_killed_at_its_exit(tmp_path: Path) -> None:
    pidfile = tmp_path / "stray.pid"
    cfg = dataclasses.replace(_FAST, subreaper=False, drain=1.0)
    spec = _spec(tmp_path, _script(tmp_path, STRAY), str(pidfile), config=cfg)
    outcome = await asyncio.wait_for(TrialProcess(spec, lambda k, d: None).run(), 60)
    assert outcome.status == "completed"
    stray = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(stray, 0)
        except ProcessLookupError:
            return
        # (a zombie not yet reaped by init counts as gone)
        try:
            if Path(f"/proc/{stray}/stat").read_text().split()[2] == "Z":
                return
        except OSError:
            return
        await asyncio.sleep(0.1)
    os.kill(stray, 9)
    raise AssertionError("the trial's stray process outlived it")


# -- From a mutation audit of the trial lifecycle: each test below failed with one small bug
# -- planted in the executor (named in its docstring) that no other test caught.

STEPS_TO_60 = """\
import sys, time
import metaopt.worker as w
for step in range(1, 61):
    w.report(loss=1.0 / step, step=step)
    if w.should_stop():
        sys.exit(0)
    time.sleep(0.05)
"""


@pytest.mark.asyncio
async def test_a_stop_asked_while_the_command_starts_stops_it_once_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A freeze (or a peer stop) asked while the subreaper starts the command, before
    "started": with the branch that starts the stop then gone, the trial ran to its end and
    no stop file was made (a peer stop then waited its whole timeout for it)."""
    started = TrialProcess._started

    async def stopped_meanwhile(self: TrialProcess, proc: Any, told: int) -> Any:
        self.request_stop("frozen")
        return await started(self, proc, told)

    monkeypatch.setattr(TrialProcess, "_started", stopped_meanwhile)
    spec = _spec(tmp_path, _script(tmp_path, STEPS_TO_60))
    outcome, events = await _run(dataclasses.replace(spec, config=SUBREAPED))
    steps = [data["step"] for kind, data in events if kind == "progress"]
    assert (outcome.status, outcome.reason) == ("interrupted", "frozen")
    assert (tmp_path / "stop").exists() and max(steps) < 60


@pytest.mark.asyncio
async def test_a_stop_asked_once_the_exit_is_known_keeps_the_result(tmp_path: Path) -> None:
    """A process whose exit status is known has exited, before the run's poll notices: with
    only the poll counted, a freeze asked in that window made a run that exited 0 with its
    result an interrupted one (its result lost, and the trial run again)."""
    spec = _spec(tmp_path, _script(tmp_path, "import metaopt.worker as w\nw.report(loss=0.25)\n"))
    process = TrialProcess(spec, lambda kind, data: None)

    async def stop_once_its_exit_is_known() -> None:
        while True:  # (bounded by the run's own end: cancelled below)
            proc = process._proc
            if proc is not None and proc.returncode is not None:
                if not process.exited:  # (what the runner asks before a stop)
                    process.request_stop("frozen")
                return
            await asyncio.sleep(0)

    watcher = asyncio.ensure_future(stop_once_its_exit_is_known())
    outcome = await asyncio.wait_for(process.run(), 60)
    watcher.cancel()
    assert (outcome.status, outcome.objectives) == ("completed", {"loss": 0.25})


@pytest.mark.asyncio
async def test_a_run_cancelled_as_its_command_starts_leaves_no_command_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run cancelled (its peer stopping) while the subreaper starts the command: without the
    kill of the command's group once its pid is known, the command ran on beside the trial's
    re-run (the descriptor test of this path counts descriptors, not processes)."""
    started = TrialProcess._started
    entered = asyncio.Event()

    async def starting(self: TrialProcess, proc: Any, told: int) -> Any:
        entered.set()  # (the subreaper runs; the command's pid is not known yet)
        return await started(self, proc, told)

    monkeypatch.setattr(TrialProcess, "_started", starting)
    script = _script(tmp_path, "import os, sys, time\ntime.sleep(20)\n")
    process = TrialProcess(
        dataclasses.replace(_spec(tmp_path, script), config=SUBREAPED), lambda k, d: None
    )
    run = asyncio.ensure_future(process.run())
    await asyncio.wait_for(entered.wait(), 30)
    await asyncio.sleep(0.001)  # (inside _started's wait for the pid)
    assert process.pid is None
    run.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await run
    running: list[int] = []
    for _ in range(20):  # (2 s for the command to start, if anything still starts it)
        await asyncio.sleep(0.1)
        running = _alive_with(str(script))
    for pid in running:
        os.kill(pid, signal.SIGKILL)
    assert not running, "the trial's command outlived its cancelled run"


def _alive_with(token: str) -> list[int]:
    """Pids of live (not zombie) processes whose command line holds token."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if token.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                found.append(int(name))
    return [pid for pid in found if not pid_gone(pid)]


def test_a_shells_report_of_a_stop_signal_is_a_stop() -> None:
    """128 + SIGTERM/SIGINT/SIGHUP, as a shell reports its command's end: without it, a
    shell-script trial stopped with its peer (systemd, a shutdown) was failed for good."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        assert stopped_by_signal(-sig) and stopped_by_signal(128 + sig)
    assert not stopped_by_signal(1) and not stopped_by_signal(128 + signal.SIGSEGV)


@pytest.mark.asyncio
async def test_a_half_drawn_line_of_a_command_killed_under_a_shell_is_not_read(
    tmp_path: Path,
) -> None:
    """A command killed -9 under a shell (the OOM killer; the shell exits 137) left its last
    line half drawn: read as a report, it became the trial's latest metric."""
    script = _script(
        tmp_path,
        """\
        import os, signal, sys
        sys.stdout.write("loss: 0.9\\n")
        sys.stdout.write("loss: 0.1")  # (half drawn when the OOM killer came)
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    spec = dataclasses.replace(
        _spec(tmp_path, script),
        argv=["sh", "-c", f'"{sys.executable}" "{script}"; exit $?'],
        objective_regex=r"loss: ([0-9.]+)",
    )
    outcome, _ = await _run(spec)
    assert outcome.exit_code == 128 + signal.SIGKILL and outcome.metrics.get("loss") == 0.9


@pytest.mark.asyncio
async def test_a_start_that_failed_leaves_no_descriptor_open(tmp_path: Path) -> None:
    """The status pipe of a start that failed is closed: one descriptor of the peer leaked
    for each trial that could not start."""
    spec = dataclasses.replace(
        _spec(tmp_path, _script(tmp_path, "pass\n"), env={"BAD": "a\0b"}),  # (no exec takes it)
        config=SUBREAPED,
    )
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        outcome = await TrialProcess(spec, lambda kind, data: None).run()
        assert outcome.status == "failed" and "cannot start" in (outcome.reason or "")
    assert len(os.listdir("/proc/self/fd")) == before


STOP_THEN_EXIT = """\
import os, subprocess, sys, time
import metaopt.worker as w
for step in range(1, 600):
    w.report(loss=1.0 / step, step=step)
    if w.should_stop():
        # a helper in a session of its own holding stdout (a log shipper, say)
        helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"],
                                  start_new_session=True)
        open(os.environ["HELPER_PID"], "w").write(str(helper.pid))
        sys.exit(int(os.environ["EXIT_CODE"]))
    time.sleep(0.05)
"""


@pytest.mark.asyncio
@pytest.mark.parametrize("code", [0, 1])
async def test_an_exit_on_the_stop_file_while_output_drains_ends_at_the_stop_file(
    tmp_path: Path, code: int
) -> None:
    """Without the subreaper (the non-Linux default) a helper the trial left holds its output
    open after its exit on the stop file: the stop went on to SIGTERM there, so a crash while
    saving its checkpoint was recorded a freeze (thawed later from a broken checkpoint)."""
    helper = tmp_path / "helper.pid"
    env = {"EXIT_CODE": str(code), "HELPER_PID": str(helper)}
    spec = _spec(tmp_path, _script(tmp_path, STOP_THEN_EXIT), env=env)
    spec = dataclasses.replace(spec, config=dataclasses.replace(_FAST, subreaper=False))

    def freeze_at_the_first_step(process: TrialProcess, kind: str, data: dict[str, Any]) -> None:
        if kind == "progress" and data["step"] == 1:
            process.request_stop("frozen")

    outcome, _ = await _run(spec, freeze_at_the_first_step)
    # The run ends with the helper still holding its output (no sweep is given here): its
    # pipes close, and with them the run's transport, once the helper ends, on this loop
    # (after the loop's close, the transport's collection was an unraisable warning).
    for _ in range(100):
        if pid_gone(int(helper.read_text())):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.1)
    if code:
        assert outcome.status == "failed"
        assert (outcome.reason or "").startswith("crashed when asked to stop")
    else:
        assert (outcome.status, outcome.stage, outcome.exit_code) == ("interrupted", "stop-file", 0)
