"""The trial's subreaper: what a trial leaves outside its group and environment dies with it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from metaopt.peer._executor import _SUBREAPER, TrialProcess
from metaopt.peer._orphans import find_orphans
from tests.metaopt.peer.test_executor import _run, _script, _spec
from tests.metaopt.peer.test_orphans import _PEER, _wait_gone

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux child subreaper"),
]

# A process that leaves the trial's group and clears its environment, with no pipe of the
# trial's held: neither the group kill, nor the sweeps by METAOPT_TRIAL_ID, nor the drain's
# stop of a process holding the output found it.
_ESCAPES = """
    import os, subprocess, sys, time
    escaped = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True, env=dict(),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    open({pid_file!r}, "w").write(str(escaped.pid))
"""


def _escaping(tmp_path: Path, then: str) -> tuple[Path, Path]:
    pid_file = tmp_path / "escaped.pid"
    body = _ESCAPES.format(pid_file=str(pid_file)) + then
    return _script(tmp_path, body), pid_file


def _gone_or_kill(pid_file: Path, within: float = 5.0) -> bool:
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + within
    while not (gone := _wait_gone(pid)) and time.monotonic() < deadline:
        pass
    if not gone:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return gone


@pytest.mark.asyncio
async def test_what_a_trial_left_outside_its_group_and_environment_dies_at_its_end(
    tmp_path: Path,
) -> None:
    # (The subreaper's mark, which the sweeps pass over, is not the command's: loss 0.)
    then = "    print('METAOPT {\"loss\": %d}' % ('METAOPT_SUBREAPER' in os.environ))\n"
    script, pid_file = _escaping(tmp_path, then)
    outcome, _ = await _run(_spec(tmp_path, script))
    assert outcome.status == "completed" and outcome.objectives == {"loss": 0.0}
    assert _gone_or_kill(pid_file)


@pytest.mark.asyncio
async def test_it_dies_too_when_the_trial_is_killed(tmp_path: Path) -> None:
    # SIGKILL reaches the trial's group, not the subreaper, which reaps what the trial left.
    then = """
    import metaopt.worker as w
    w.report(loss=1.0, step=1)
    time.sleep(60)
    """
    script, pid_file = _escaping(tmp_path, then)

    def react(process: TrialProcess, kind: str, data: dict[str, Any]) -> None:
        if kind == "progress":
            process.kill("peer shutting down")

    outcome, _ = await _run(_spec(tmp_path, script), react)
    assert (outcome.status, outcome.stage, outcome.exit_code) == ("interrupted", "kill", -9)
    assert _gone_or_kill(pid_file)


@pytest.mark.parametrize(
    "then",
    [
        "time.sleep(60)",
        "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
    ],
    ids=["stops", "stubborn"],
)
def test_it_dies_with_the_trial_when_the_peer_is_killed(tmp_path: Path, then: str) -> None:
    # The peer killed -9: its watchdog stops the trial's group (SIGKILL after 5 s for the
    # stubborn one), not the subreaper, which then kills the rest: killed together with a
    # stubborn trial, it left the rest running.
    pid_file = tmp_path / "escaped.pid"
    trial = _ESCAPES.format(pid_file=str(pid_file)).strip().replace("\n    ", "\n")
    trial += "\n" + then + "\n"
    peer = subprocess.Popen(
        [sys.executable, "-c", _PEER, str(tmp_path), trial],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
    )
    trial_group = 0
    try:
        assert peer.stdout is not None
        trial_group = int(peer.stdout.readline())  # the trial has started
        deadline = time.monotonic() + 20
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        peer.kill()
        peer.wait(timeout=10)
        assert _gone_or_kill(pid_file, within=20.0)
    finally:
        for group in (peer.pid, trial_group):  # (what a failure left)
            with contextlib.suppress(ProcessLookupError):
                if group:
                    os.killpg(group, signal.SIGKILL)
        peer.communicate()


def _subreaper(command: list[str], *, heard: bool = True) -> tuple[subprocess.Popen[bytes], int]:
    """The subreaper running ``command``, and the pid it told (0 when nobody listened)."""
    read, write = os.pipe()
    if not heard:
        os.close(read)
    process = subprocess.Popen(
        [sys.executable, "-I", _SUBREAPER, str(write), *command],
        pass_fds=(write,),
        start_new_session=True,
    )
    os.close(write)
    if not heard:
        return process, 0
    with os.fdopen(read, "rb") as told:
        return process, int(told.read())


def test_nobody_hearing_that_the_command_started_kills_it() -> None:
    # The peer died (or gave up) while the subreaper started the command: its watchdog was
    # never told the command's group, so the subreaper is the one to end it.
    process, _ = _subreaper([sys.executable, "-c", "import time; time.sleep(60)"], heard=False)
    assert process.wait(timeout=30) == -signal.SIGKILL


def test_a_stop_signal_sent_to_it_reaches_the_command() -> None:
    process, command = _subreaper([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=30) == -signal.SIGTERM
        assert _wait_gone(command)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(command, signal.SIGKILL)


@pytest.mark.parametrize(
    ("code", "end"),
    [
        ("raise SystemExit(3)", 3),
        ("import os; os.kill(os.getpid(), 15)", -15),
        ("import os; os.kill(os.getpid(), 9)", -9),
        ("import os; os.abort()", -6),
    ],
)
def test_it_exits_as_the_command_did(code: str, end: int) -> None:
    process, _ = _subreaper([sys.executable, "-c", code])
    assert process.wait(timeout=30) == end


def test_a_command_that_cannot_start_is_told_with_why() -> None:
    read, write = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-I", _SUBREAPER, str(write), "./no-such-program"], pass_fds=(write,)
    )
    os.close(write)
    with os.fdopen(read, "rb") as told:
        assert told.read() == b"!No such file or directory"
    assert process.wait(timeout=30) == 127


def test_the_sweeps_by_environment_leave_a_subreaper_alone(tmp_path: Path) -> None:
    ours = str(tmp_path)
    env = {**os.environ, "METAOPT_DATA_DIR": ours, "METAOPT_TRIAL_ID": "ab" * 16}
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    subreaper = subprocess.Popen(sleeper, env={**env, "METAOPT_SUBREAPER": "1"})
    trial = subprocess.Popen(sleeper, env=env)
    try:
        deadline = time.monotonic() + 20
        while not find_orphans(ours) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(find_orphans(ours)) == [trial.pid]
    finally:
        for process in (subreaper, trial):
            process.kill()
            process.wait()
