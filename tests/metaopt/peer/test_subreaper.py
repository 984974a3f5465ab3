"""The trial's subreaper: what a trial leaves outside its group and environment dies with it."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from metaopt.peer._executor import ExecutorConfig, TrialProcess, TrialSpec
from metaopt.peer._orphans import find_orphans
from metaopt.peer._scripts import SUBREAPER, Script
from metaopt.peer._subreaper import command_file
from tests.metaopt.peer.test_executor import _REPO, _run, _script, _spec
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


def _start(command: list[str], write: int, **kw: Any) -> subprocess.Popen[bytes]:
    """The subreaper started from its file, told to run ``command``."""
    handed = command_file(command)
    try:
        return subprocess.Popen(
            [sys.executable, "-I", SUBREAPER.path, str(write), str(handed)],
            env={**os.environ, "METAOPT_SUBREAPER": "1"},
            pass_fds=(write, handed),
            **kw,
        )
    finally:
        os.close(handed)


def _subreaper(command: list[str], *, heard: bool = True) -> tuple[subprocess.Popen[bytes], int]:
    """The subreaper running ``command``, and the pid it told (0 when nobody listened)."""
    read, write = os.pipe()
    if not heard:
        os.close(read)
    process = _start(command, write, start_new_session=True)
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


def test_a_stop_signal_to_it_alone_is_dropped_and_it_goes_on_waiting() -> None:
    # (Passed on, a SIGTERM sent to every process reached the command twice: see below.)
    process, command = _subreaper([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.kill(process.pid, signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=0.5)
        os.kill(command, 0)  # (still there)
        os.killpg(command, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL  # ended as its command
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(command, signal.SIGKILL)
        process.kill()
        process.wait()


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
    process = _start(["./no-such-program"], write)
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


# The review of the subreaper (each failed on its first version).
_QUICK = ExecutorConfig(heartbeat=5.0, grace=1.0, drain=2.0)


def _command(tmp_path: Path, *argv: str, env: dict[str, str] | None = None) -> TrialSpec:
    """A trial of ``argv`` in tmp_path, its output in tmp_path/output.log."""
    return TrialSpec(
        argv=list(argv), cwd=tmp_path, log_path=tmp_path / "output.log", config=_QUICK,
        env=env or {},
    )  # fmt: skip


# A trial that starts 50 short background jobs the common way (os.system("... &"), as for an
# upload of each checkpoint), then, while it still runs, counts the zombies its parent holds.
_BACKGROUND_JOBS = """
    import os, subprocess, time
    for _ in range(50):
        os.system("true &")
    time.sleep(1.0)
    parent = os.getppid()
    ps = subprocess.run(["ps", "-e", "-o", "stat=,ppid="], capture_output=True, text=True)
    zombies = sum(
        1 for line in ps.stdout.splitlines()
        if line.split() and line.split()[0].startswith("Z") and int(line.split()[1]) == parent
    )
    print('METAOPT {"loss": %d}' % zombies)
"""


@pytest.mark.asyncio
async def test_what_the_command_leaves_is_reaped_while_it_runs(tmp_path: Path) -> None:
    # Re-parented to the subreaper, which reaped nothing until the command had exited, each
    # finished job stayed a zombie for the whole run (a pid each, counted in RLIMIT_NPROC and
    # a cgroup's pids.max), where init reaped them before: 50 of 50.
    spec = _spec(tmp_path, _script(tmp_path, _BACKGROUND_JOBS), config=_QUICK)
    outcome, _ = await _run(spec)
    assert outcome.status == "completed"
    assert outcome.objectives == {"loss": 0.0}, f"{outcome.objectives['loss']:.0f} zombies"


@pytest.mark.asyncio
async def test_a_command_that_cannot_start_is_named_not_the_peers_python(tmp_path: Path) -> None:
    # An argument over the kernel's 128 KiB limit (E2BIG), as a long choice's value can be:
    # the reason named the interpreter that runs the subreaper, not the user's command.
    spec = _command(tmp_path, "bash", "-c", "true", "x" * 200_000)
    outcome, _ = await _run(spec)
    assert outcome.status == "failed" and outcome.exit_code is None
    assert outcome.reason is not None
    assert outcome.reason.startswith("cannot start 'bash'"), outcome.reason


@pytest.mark.asyncio
async def test_the_command_gets_the_peers_locale_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A peer whose environment has no LC_* (C locale) and PYTHONCOERCECLOCALE=0: the
    # subreaper's `python -I` ignores that variable, coerced its locale and so put
    # LC_CTYPE=C.UTF-8 in the command's environment, which the peer's own has not.
    for name in ("LC_ALL", "LC_CTYPE", "LANG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTHONCOERCECLOCALE", "0")
    spec = _command(tmp_path, "bash", "-c", 'echo "METAOPT {\\"loss\\": ${#LC_CTYPE}}"')
    outcome, _ = await _run(spec)
    assert outcome.objectives == {"loss": 0.0}, (tmp_path / "output.log").read_text()


@pytest.mark.asyncio
async def test_a_python_without_ctypes_still_runs_trials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The peer's interpreter built without _ctypes (pyenv without libffi-dev): the
    # subreaper died at its import before the handshake, and every trial failed "exited with
    # code 1 ... ModuleNotFoundError". It runs the command as a plain parent instead.
    real = sys.executable
    wrapper = tmp_path / "python-without-ctypes"
    wrapper.write_text(
        "#!/bin/sh\nshift\nexec "  # (-I; then -c CODE FD N, as the executor runs it)
        + real
        + ' -I -c \'import sys; sys.modules["_ctypes"] = None;'
        ' code = sys.argv[2]; sys.argv = ["-c", *sys.argv[3:]]; exec(code)\' "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(wrapper))
    spec = _command(
        tmp_path, real, "-c", "print('METAOPT {\"loss\": 1}')", env={"PATH": os.environ["PATH"]}
    )
    outcome, _ = await _run(spec)
    assert outcome.status == "completed", outcome.reason


# A trial that saves a checkpoint when SIGTERM comes (0.3 s), and says how often its handler ran.
_CHECKPOINTS_ON_SIGTERM = """
    import signal, sys, time
    calls = []
    def on_term(signum, frame):
        calls.append(1)
        time.sleep(0.3)  # saving its checkpoint
        print("handler calls", len(calls), flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    print('METAOPT {"loss": 1}', flush=True)
    while True:
        time.sleep(0.01)
"""


@pytest.mark.asyncio
async def test_sigterm_to_every_process_reaches_the_command_once(tmp_path: Path) -> None:
    # systemd's stop of the peer's unit (KillMode=control-group), a shutdown, or `kill -TERM`
    # of every process sends SIGTERM to each process once. The subreaper passed its own on
    # to the command's group, so the command got a second one while its handler was saving:
    # the handler ran again, nested in the first (10 of 10; once without the subreaper).

    def react(process: Any, kind: str, data: dict[str, Any]) -> None:
        if kind == "progress":
            for pid in (process.pid, process._proc.pid):  # the command's, then its parent's
                os.kill(pid, signal.SIGTERM)

    config = ExecutorConfig(grace=5.0)
    spec = _spec(tmp_path, _script(tmp_path, _CHECKPOINTS_ON_SIGTERM), config=config)
    await _run(spec, react)
    said = [ln for ln in spec.log_path.read_text().splitlines() if ln.startswith("handler")]
    assert said == ["handler calls 1"], said


@pytest.mark.asyncio
async def test_the_peers_missing_python_is_not_blamed_on_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The peer's interpreter is gone (its venv rebuilt under a running peer): the exec that
    # failed was the subreaper's Python, and the reason said the user's `true` did not exist.
    monkeypatch.setattr(sys, "executable", str(tmp_path / "gone" / "python3"))
    spec = _command(tmp_path, "true")
    outcome, _ = await _run(spec)
    assert outcome.status == "failed" and outcome.reason is not None
    assert outcome.reason.startswith("cannot start the trial: this peer's Python"), outcome.reason
    assert "'true'" not in outcome.reason


def test_an_inherited_ignored_sigchld_does_not_lose_the_commands_exit_code() -> None:
    # Ignored, SIGCHLD has the kernel reap the command at once: waitpid found no child, and
    # the subreaper exited 0 for a command that exited 3.
    read, write = os.pipe()
    process = _start(
        [sys.executable, "-c", "raise SystemExit(3)"],
        write,
        preexec_fn=lambda: signal.signal(signal.SIGCHLD, signal.SIG_IGN),
    )
    os.close(write)
    with os.fdopen(read, "rb") as told:
        assert told.read().isdigit()  # (heard: with nobody listening it kills the command)
    assert process.wait(timeout=30) == 3


def _command_lines_with(needle: bytes) -> list[int]:
    """The pids whose command line holds ``needle`` (as ``pgrep -f`` finds them)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                if needle in Path(f"/proc/{name}/cmdline").read_bytes():
                    found.append(int(name))
    return found


def _python(tmp_path: Path, code: str, *args: str) -> TrialSpec:
    """A trial of ``python -c code args...``."""
    return _command(tmp_path, sys.executable, "-c", code, *args)


@pytest.mark.asyncio
async def test_pgrep_of_the_command_finds_the_command_alone(tmp_path: Path) -> None:
    # The subreaper's command line carried the command's: `pgrep -f train.py` listed both,
    # and `kill $(pgrep -of train.py)` (the oldest) reached the subreaper, which drops a kill.
    found: list[tuple[int, list[int]]] = []

    def react(process: TrialProcess, kind: str, data: dict[str, Any]) -> None:
        if kind == "progress":
            found.append((process.pid, _command_lines_with(str(spec.argv[1]).encode())))
            process.kill("seen")

    body = "    import metaopt.worker as w\n    w.report(loss=1.0, step=1)\n    time.sleep(60)\n"
    spec = _spec(tmp_path, _script(tmp_path, "    import time\n" + body), config=_QUICK)
    await _run(spec, react)
    assert found and found[0][1] == [found[0][0]], found


@pytest.mark.asyncio
async def test_the_commands_arguments_reach_it_as_given(tmp_path: Path) -> None:
    # Handed over in the subreaper's environment: empty ones, '=' and bytes that are not
    # UTF-8 (a file name on a Latin-1 disk, as surrogate escapes) arrive unchanged.
    args = ["", "a=b", "x\udcff\u00e9", "=", " two words "]
    code = (
        f"import json, sys; assert sys.argv[1:] == {args!r}, sys.argv;"
        " print('METAOPT', json.dumps({'loss': len(sys.argv)}))"
    )
    spec = _python(tmp_path, code, *args)
    outcome, _ = await _run(spec)
    assert outcome.objectives == {"loss": 6.0}, (tmp_path / "output.log").read_text()


@pytest.mark.asyncio
async def test_the_subreaper_runs_as_the_peer_read_it_whatever_its_file_holds_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # metaopt upgraded under a running peer (pip, a git pull into an editable install): run
    # from its file, each trial started since met a subreaper of another version, which read
    # its arguments otherwise, and failed at its start (8 of 8 in a run).
    import metaopt.peer._executor as executor

    installed = tmp_path / "_subreaper.py"
    shutil.copy(SUBREAPER.path, installed)
    monkeypatch.setattr(executor, "SUBREAPER", Script.read(str(installed), SUBREAPER.variable))
    installed.write_text("import sys\nsys.exit('another version: ' + ' '.join(sys.argv[1:]))\n")
    spec = _python(tmp_path, "print('METAOPT {\"loss\": 1}')")
    outcome, _ = await _run(spec)
    assert outcome.status == "completed", (tmp_path / "output.log").read_text()


# A peer's own trial, run in a Python whose text encoding is ASCII (a C locale, as a service
# manager gives, with UTF-8 mode and locale coercion off: any 8-bit locale is alike).
_IN_AN_ASCII_LOCALE = """
import asyncio, sys
from pathlib import Path
from metaopt.peer._executor import ExecutorConfig, TrialProcess, TrialSpec
assert sys.getfilesystemencoding() == "ascii", sys.getfilesystemencoding()
where = Path(sys.argv[1])
spec = TrialSpec(argv=[sys.executable, "-c", "print('METAOPT {\\"loss\\": 2}')"], cwd=where,
                 log_path=where / "output.log", config=ExecutorConfig(grace=1.0, drain=2.0))
outcome = asyncio.run(TrialProcess(spec, lambda kind, data: None).run())
print(outcome.status, outcome.reason)
"""


def test_a_peer_whose_locale_encodes_no_more_than_ascii_runs_trials(tmp_path: Path) -> None:
    # The subreaper's source, handed over in its environment as text, held em dashes: in a
    # Latin-1 locale every trial failed "'latin-1' codec can't encode character '\u2014'".
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))}
    env.update(LC_ALL="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0", PYTHONPATH=_REPO)
    done = subprocess.run(
        [sys.executable, "-c", _IN_AN_ASCII_LOCALE, str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.stdout.split() == ["completed", "None"], done.stdout + done.stderr


@pytest.mark.parametrize(
    "args",
    [["x" * 131_060], ["x"] * 60_000],
    ids=["an argument of 128 KiB less a few bytes", "60,000 arguments"],
)
@pytest.mark.asyncio
async def test_arguments_the_kernel_takes_for_the_command_reach_it(
    tmp_path: Path, args: list[str]
) -> None:
    # Handed over in the subreaper's environment, each argument cost a variable's name more
    # of the kernel's limits (128 KiB a string, ARG_MAX in all): both failed "Argument list
    # too long", though the command ran by hand.
    code = "import sys; print('METAOPT {\"loss\": %d}' % sum(map(len, sys.argv[1:])))"
    spec = _python(tmp_path, code, *args)
    outcome, _ = await _run(spec)
    assert outcome.status == "completed", outcome.reason
    assert outcome.objectives == {"loss": float(sum(map(len, args)))}


@pytest.mark.asyncio
async def test_a_memfd_the_kernel_refuses_falls_back_to_a_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An old kernel, or a seccomp policy, refuses memfd_create though Python has it: every
    # trial failed, and the reason told the user to restart the peer.
    def refused(*args: object) -> int:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(os, "memfd_create", refused)
    outcome, _ = await _run(_python(tmp_path, "print('METAOPT {\"loss\": 1}')"))
    assert outcome.status == "completed", outcome.reason


@pytest.mark.asyncio
async def test_no_file_for_the_command_is_said_as_the_machines_not_the_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Neither a memfd nor a temporary file: the reason named the user's command as "this
    # peer's Python" that "did not run", and said to restart the peer.
    import metaopt.peer._executor as executor

    def no_room(command: list[str]) -> int:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(executor, "command_file", no_room)
    outcome, _ = await _run(_python(tmp_path, "pass"))
    assert outcome.status == "failed" and outcome.reason is not None
    assert outcome.reason.startswith("cannot start the trial: no file could hold its command")
    assert "Too many open files" in outcome.reason and "Python" not in outcome.reason


@pytest.mark.asyncio
async def test_a_run_cancelled_as_it_starts_leaves_no_descriptor_open(tmp_path: Path) -> None:
    # Cancelled while its process was being created (a peer stopping), the run left the
    # status pipe's read end open in the peer: one descriptor per cancelled start.
    def count() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = count()
    for steps in range(8):
        spec = _python(tmp_path, "import time; time.sleep(30)")
        run = asyncio.ensure_future(TrialProcess(spec, lambda kind, data: None).run())
        for _ in range(steps):
            await asyncio.sleep(0)
        run.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(run, 30)
    await asyncio.sleep(0.3)
    assert count() == before


def test_a_crashing_commands_subreaper_dumps_no_core(tmp_path: Path) -> None:
    """The subreaper re-raises its command's fatal signal on itself, with no core limit: the
    crash is the command's. Without that limit a trial that segfaulted left a core dump of
    the (Python) subreaper in its folder, on a machine that keeps cores (a mutation audit)."""
    import resource

    if Path("/proc/sys/kernel/core_pattern").read_text().strip() != "core":
        pytest.skip("this machine writes no core to the working directory")
    command = [
        sys.executable,
        "-c",
        "import os, resource, signal; resource.setrlimit(resource.RLIMIT_CORE, (0, 0));"
        " os.kill(os.getpid(), signal.SIGSEGV)",  # (the command's own core: none)
    ]
    read, tell = os.pipe()
    cmd = command_file(command)

    def cores_kept() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    proc = subprocess.Popen(
        SUBREAPER.argv(str(tell), str(cmd)),
        env={**os.environ, **SUBREAPER.env()},
        cwd=tmp_path,
        pass_fds=(tell, cmd),
        preexec_fn=cores_kept,
    )
    os.close(tell)
    os.close(cmd)
    try:
        assert proc.wait(30) == -signal.SIGSEGV
    finally:
        os.close(read)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("core")] == []
