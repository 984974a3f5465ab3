"""Trial processes left by a peer killed -9 are found by their environment and stopped."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from metaopt.peer._orphans import find_orphans, kill_orphans
from metaopt.peer._watchdog import Watchdog

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc"),
]

REPO = str(Path(__file__).resolve().parents[3])
SLEEPER = "import time; time.sleep(60)"
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
# A trial that starts a child which does not print: only the process group reaches it.
WRAPPER = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', " + repr(
    "import time; time.sleep(60)"
) + "]); time.sleep(60)"  # fmt: skip


def _spawn(code: str, env: dict[str, str], argv0: str = sys.executable) -> subprocess.Popen[bytes]:
    return subprocess.Popen([argv0, "-c", code], env={**os.environ, **env}, start_new_session=True)


def _wait_gone(pid: int) -> bool:
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _seen(data_dir: str, n: int) -> None:
    """Wait (up to 20 s) until ``n`` trial processes of the data directory are seen."""
    deadline = time.monotonic() + 20
    while len(find_orphans(data_dir)) < n and time.monotonic() < deadline:
        time.sleep(0.05)


def _end(*processes: subprocess.Popen[bytes]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def _nobody() -> int:
    """A process group no process can have (and those above it)."""
    return int(Path("/proc/sys/kernel/pid_max").read_text())


def _stalled(watchdog: Watchdog, pgid: int) -> subprocess.Popen[bytes]:
    """Tell the watchdog of ``pgid`` (which starts it), stop it (SIGSTOP), and tell it of
    more trials of a moment than any pipe holds. Returns its process, still stopped: the
    caller resumes it."""
    watchdog.watch(pgid)
    process = watchdog._process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    try:
        nobody = _nobody() + 1
        for moment in range(nobody, nobody + 2 * 16 * os.sysconf("SC_PAGESIZE") // 9):
            watchdog.watch(moment)
            watchdog.release(moment)
    except BaseException:
        os.kill(process.pid, signal.SIGCONT)
        raise
    return process


def test_only_this_data_dirs_trial_processes_are_killed_with_their_groups(tmp_path: Path) -> None:
    ours = str(tmp_path / "peer")
    trial = {"METAOPT_TRIAL_ID": "ab" * 16, "METAOPT_DATA_DIR": ours}
    orphan = _spawn(WRAPPER, trial)
    # The user's shell may carry METAOPT_DATA_DIR to configure the peer: not a trial.
    shell = _spawn(SLEEPER, {"METAOPT_DATA_DIR": ours})
    other_peer = _spawn(SLEEPER, {**trial, "METAOPT_DATA_DIR": str(tmp_path / "other")})
    spawned = [orphan, shell, other_peer]
    try:
        _seen(ours, 2)  # the wrapper's child has started
        found = find_orphans(ours)
        assert orphan.pid in found and len(found) == 2
        group = [pid for pid, pgid in found.items() if pgid == orphan.pid]
        assert sorted(group) == sorted(found)
        assert kill_orphans(ours) == sorted(found)
        orphan.wait(timeout=10)
        assert all(_wait_gone(pid) for pid in found)
        assert shell.poll() is None and other_peer.poll() is None
        assert find_orphans(ours) == {}
    finally:
        _end(*spawned)


def test_one_trials_escaped_processes_are_killed_and_no_other_trials(tmp_path: Path) -> None:
    # A trial's child that left its group (setsid) outlived the trial and a graceful stop of
    # the peer, until the peer's next start: its run's end now stops it, and it alone.
    ours = str(tmp_path / "peer")
    env = {"METAOPT_DATA_DIR": ours}
    escaped = _spawn(SLEEPER, {**env, "METAOPT_TRIAL_ID": "ab" * 16})
    running = _spawn(SLEEPER, {**env, "METAOPT_TRIAL_ID": "cd" * 16})
    try:
        _seen(ours, 2)
        assert find_orphans(ours, trial="ab" * 16) == {escaped.pid: escaped.pid}
        assert kill_orphans(ours, trial="ab" * 16) == [escaped.pid]
        assert escaped.wait(timeout=10) == -signal.SIGKILL
        assert running.poll() is None
    finally:
        _end(escaped, running)


# A stand-in for a peer: it runs one silent trial (which starts a silent child of its own, as
# a shell script does) through the executor under the watchdog, prints the trial's pid, and
# waits to be killed -9.
_PEER = """
import asyncio, sys
from pathlib import Path
from metaopt.peer._executor import TrialSpec, run_trial
from metaopt.peer._watchdog import Watchdog

WRAPPER = sys.argv[2]

async def main():
    watchdog = Watchdog(lambda: 5.0)
    def on_event(kind, data):
        if kind == "started":
            watchdog.watch(data["pid"])
            print(data["pid"], flush=True)
    folder = Path(sys.argv[1])
    spec = TrialSpec(argv=[sys.executable, "-c", WRAPPER], cwd=folder,
                     log_path=folder / "output.log", env={"METAOPT_TRIAL_ID": "ab" * 16,
                     "METAOPT_DATA_DIR": str(folder)}, stop_file=folder / "stop")
    await run_trial(spec, on_event)

asyncio.run(main())
"""


def _killed(peer: subprocess.Popen[bytes]) -> None:
    """Kill -9 a stand-in peer (if it still runs) and close its output."""
    if peer.poll() is None:
        peer.kill()
    peer.wait(timeout=10)
    if peer.stdout is not None:
        peer.stdout.close()


def test_a_trial_and_what_it_started_die_with_their_peer_even_when_silent(tmp_path: Path) -> None:
    # A peer killed -9 and not restarted left its silent trial, and the children of a shell
    # script, running beside the re-run on another peer: the trial died only on its next
    # write to its closed pipe, or when its peer restarted (kill_orphans above).
    peer = subprocess.Popen(
        [sys.executable, "-c", _PEER, str(tmp_path), WRAPPER],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    left: dict[int, int] = {}
    try:
        assert peer.stdout is not None
        trial = int(peer.stdout.readline())
        deadline = time.monotonic() + 20
        while len(left := find_orphans(str(tmp_path))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the trial's child has started
        assert trial in left and len(left) == 2
        _killed(peer)
        assert all(_wait_gone(pid) for pid in left)
    finally:
        _killed(peer)
        kill_orphans(str(tmp_path))


# The stand-in above, told its data directory (so its watchdog sweeps for escaped processes),
# printing the trial's pid and its watchdog's.
_PEER_OF_A_DATA_DIR = _PEER.replace(
    "Watchdog(lambda: 5.0)", "Watchdog(lambda: 5.0, lambda: Path(sys.argv[1]))"
).replace('print(data["pid"], flush=True)', 'print(data["pid"], watchdog._process.pid, flush=True)')
# A trial whose child leaves its group (as a daemon does): only the sweep finds it.
ESCAPING = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', " + repr(
    "import time; time.sleep(60)"
) + "], start_new_session=True); time.sleep(60)"  # fmt: skip


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if _parent(int(entry.name)) == pid:
                found.add(int(entry.name))
    return found


@pytest.mark.parametrize("restarted", [False, True])
def test_the_watchdog_and_its_sweep_run_as_the_peer_read_them_after_an_upgrade(
    tmp_path: Path, restarted: bool
) -> None:
    # metaopt upgraded under a running peer: a watchdog started again ran the new file (which
    # may read its pipe otherwise), and at the peer's death it ran the new _orphans.py, whose
    # failure left the trial's escaped processes running for good.
    installed = tmp_path / "site"
    shutil.copytree(
        Path(REPO) / "metaopt", installed / "metaopt", ignore=shutil.ignore_patterns("__pycache__")
    )
    folder = tmp_path / "peer"
    folder.mkdir()
    peer = subprocess.Popen(
        [sys.executable, "-c", _PEER_OF_A_DATA_DIR, str(folder), ESCAPING],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": f"{installed}{os.pathsep}{REPO}"},
        cwd=tmp_path,  # (-c puts the current folder first: the checkout's metaopt, not this)
    )
    left: dict[int, int] = {}
    try:
        assert peer.stdout is not None
        trial, first = map(int, peer.stdout.readline().split())
        _seen(str(folder), 2)  # the trial and its escaped child
        left = find_orphans(str(folder))
        assert trial in left and len(set(left.values())) == 2
        for name in ("_watchdog.py", "_orphans.py", "_scripts.py"):
            (installed / "metaopt" / "peer" / name).write_text("raise SystemExit('upgraded')\n")
        if restarted:  # (killed by hand, or by the OOM killer)
            os.kill(first, signal.SIGKILL)
            others = {first, _parent(trial)}  # (the peer's children but the new watchdog)
            deadline = time.monotonic() + 20
            while not (_children(peer.pid) - others) and time.monotonic() < deadline:
                time.sleep(0.05)
        _killed(peer)
        assert all(_wait_gone(pid) for pid in left)
    finally:
        _killed(peer)
        kill_orphans(str(folder))


def test_a_watchdog_starts_beside_a_peers_environment_near_the_kernels_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the peer's whole environment beside its source (22 KB), a peer whose environment
    # was 15-22 KB under the limit ran trials but no watchdog (E2BIG): they outlived a kill -9.
    room = os.sysconf("SC_ARG_MAX") - sum(len(k) + len(v) + 2 for k, v in os.environ.items())
    for i in range((room - 10_000) // 8_000):
        monkeypatch.setenv(f"METAOPT_TEST_FILL_{i}", "x" * 7_970)
    sleeper = _spawn(SLEEPER, {})
    watchdog = Watchdog(lambda: 1.0)
    try:
        watchdog.watch(sleeper.pid)
        assert watchdog._process is not None and watchdog._process.poll() is None
        watchdog.close()  # its input ends, as when the peer dies
        assert sleeper.wait(timeout=10) == -signal.SIGTERM
    finally:
        watchdog.close()
        _end(sleeper)


def test_a_watchdog_started_again_still_stops_the_groups_the_first_one_knew(
    tmp_path: Path,
) -> None:
    # Killed by hand, the watchdog was started again at the next trial knowing that trial only.
    env = {"METAOPT_TRIAL_ID": "cd" * 16, "METAOPT_DATA_DIR": str(tmp_path)}
    first, second = _spawn(SLEEPER, env), _spawn(SLEEPER, env)
    # Our own children stay zombies (not gone to the watchdog) until we reap them: a short
    # grace lets the watchdog give up on them and exit before close() stops waiting.
    watchdog = Watchdog(lambda: 1.0)
    try:
        watchdog.watch(first.pid)
        assert watchdog._process is not None
        # Its own session: a signal to the peer's (a hangup, a Ctrl-C) is not its end.
        assert os.getsid(watchdog._process.pid) != os.getsid(0)
        fds = len(os.listdir("/proc/self/fd"))
        watchdog._process.kill()
        watchdog._process.wait(timeout=10)
        watchdog.watch(second.pid)
        assert len(os.listdir("/proc/self/fd")) == fds  # (the dead one's pipe closed)
        watchdog.close()  # its input ends, as when the peer dies
        assert first.wait(timeout=10) == second.wait(timeout=10) == -signal.SIGTERM
        # Closed (the peer stopped), it is not started again by a trial ending after that.
        ended = watchdog._process
        assert ended is not None
        watchdog.release(second.pid)
        assert watchdog._process is ended
        ended.wait(timeout=10)
    finally:
        for sleeper in (first, second):
            sleeper.kill()
            sleeper.wait(timeout=10)


@pytest.mark.timeout(30)  # on a write blocking the loop: fail, not hang for the default
@pytest.mark.parametrize("then", ["continued", "killed"])
def test_a_watchdog_that_stops_reading_never_blocks_its_peer_and_learns_what_it_missed(
    then: str,
) -> None:
    # Stopped (SIGSTOP), the watchdog read nothing: after ~3,600 trial starts its pipe was
    # full and the next write held up the peer's whole event loop, for as long as it stayed
    # stopped. What the pipe does not take waits in the peer, and reaches the watchdog once it
    # reads again, or a watchdog started again in its place once it is killed.
    env = {"METAOPT_TRIAL_ID": "ef" * 16, "METAOPT_DATA_DIR": "/nonexistent/metaopt-test"}
    ended, kept = _spawn(SLEEPER, env), _spawn(SLEEPER, env)

    async def peer(watchdog: Watchdog) -> None:
        first = _stalled(watchdog, ended.pid)
        try:
            watchdog.release(ended.pid)
            watchdog.watch(kept.pid)
            # However long it is stopped: the ended and the kept trial, and at most the burst's
            # trial told just before the pipe filled.
            assert 2 <= watchdog.backlog <= 3
        finally:
            os.kill(first.pid, signal.SIGKILL if then == "killed" else signal.SIGCONT)
        while watchdog.backlog:
            await asyncio.sleep(0.01)  # the loop writes the rest when the pipe takes it
        assert (watchdog._process is first) == (then == "continued")

    watchdog = Watchdog(lambda: 1.0)
    try:
        asyncio.run(peer(watchdog))
        watchdog.close()  # its input ends, as when the peer dies
        assert kept.wait(timeout=10) == -signal.SIGTERM
        assert watchdog._process is not None
        watchdog._process.wait(timeout=10)  # done with what it listed ...
        assert ended.poll() is None  # ... which no longer held the trial that had ended
    finally:
        watchdog.close()
        for sleeper in (ended, kept):
            sleeper.kill()
            sleeper.wait(timeout=10)


@pytest.mark.parametrize("closed", [False, True])
def test_a_runner_gone_without_its_peers_stop_leaves_no_watchdog_behind(
    tmp_path: Path, closed: bool
) -> None:
    # Dropped without Node.stop, a runner left its watchdog running to the end of the process,
    # unreaped ("subprocess is still running"); closed with a trial still listed, unreaped too.
    from metaopt.peer._config import Timing
    from metaopt.peer._runner import Running, TrialRunner

    sleeper = _spawn(SLEEPER, {"METAOPT_TRIAL_ID": "12" * 16, "METAOPT_DATA_DIR": str(tmp_path)})
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dirs = SimpleNamespace(trials=tmp_path, root=tmp_path)
            node = SimpleNamespace(clock=lambda: 0.0, dirs=dirs)
            config = SimpleNamespace(gpus="none", slots=1, timing=Timing(stop_grace=1.0))
            runner = TrialRunner(node, config)  # type: ignore[arg-type]
            run = Running(runner.slots[0], b"e" * 32, b"t" * 32)
            runner._on_event(run, "started", {"pid": sleeper.pid})
            process = runner.watchdog._process
            assert process is not None
            if closed:
                runner.watchdog.close()
            del runner
            gc.collect()
            # Its input ended: the watchdog stops the trial it listed, exits, and is reaped.
            assert sleeper.wait(timeout=10) == -signal.SIGTERM
            pid = process.pid
            del process
            assert _wait_gone(pid)  # a zombie until its parent waits for it
            gc.collect()
        assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)


def test_the_watchdog_also_stops_what_its_trials_started_outside_their_groups(
    tmp_path: Path,
) -> None:
    # A trial's daemon (setsid) left its group: after a kill -9 of a peer that never came
    # back, it ran on (until a restart of that peer found it).
    ours = str(tmp_path / "mo")
    trial = _spawn(SLEEPER, {"METAOPT_TRIAL_ID": "ab" * 16, "METAOPT_DATA_DIR": ours})
    escaped = _spawn(SLEEPER, {"METAOPT_TRIAL_ID": "ab" * 16, "METAOPT_DATA_DIR": ours})
    theirs = _spawn(SLEEPER, {"METAOPT_TRIAL_ID": "ab" * 16, "METAOPT_DATA_DIR": ours + "2"})
    _seen(ours, 2)
    watchdog = Watchdog(lambda: 1.0, lambda: Path(ours))
    try:
        watchdog.watch(trial.pid)  # (told of the trial's group, not the escaped one's)
        watchdog.close()  # its input ends, as when the peer dies
        assert trial.wait(timeout=10) == escaped.wait(timeout=10) == -signal.SIGTERM
        assert theirs.poll() is None  # another peer's
    finally:
        _end(trial, escaped, theirs)


def test_a_data_dir_whose_name_extends_ours_is_another_peers(tmp_path: Path) -> None:
    # Two peers on one machine in ~/mo and ~/mo2: restarting the first must not kill the
    # second's trials.
    ours = str(tmp_path / "mo")
    mine = _spawn(SLEEPER, {"METAOPT_TRIAL_ID": "ab" * 16, "METAOPT_DATA_DIR": ours})
    theirs = _spawn(SLEEPER, {"METAOPT_TRIAL_ID": "ab" * 16, "METAOPT_DATA_DIR": ours + "2"})
    try:
        _seen(ours, 1)
        time.sleep(0.2)  # (the other peer's trial has started too)
        assert find_orphans(ours) == {mine.pid: mine.pid}
    finally:
        _end(mine, theirs)


def test_a_trial_process_whose_name_holds_a_parenthesis_is_found_in_its_group(
    tmp_path: Path,
) -> None:
    # /proc/PID/stat puts the command in parentheses, and a command may hold ") 1 2 3": read
    # up to the first ")", its group was a number of its name, and the wrong group was killed.
    ours = str(tmp_path / "peer")
    odd = tmp_path / "x) 1 2 3"
    odd.symlink_to(sys.executable)
    p = _spawn(SLEEPER, {"METAOPT_TRIAL_ID": "ab" * 16, "METAOPT_DATA_DIR": ours}, str(odd))
    try:
        _seen(ours, 1)
        assert find_orphans(ours) == {p.pid: p.pid}
    finally:
        _end(p)


def test_a_fake_proc_with_a_malformed_stat_is_skipped(tmp_path: Path) -> None:
    # A stat with no group field (not a process as Linux shows one) is passed over: raised,
    # it would stop the peer's start.
    entry = tmp_path / "123"
    entry.mkdir()
    (entry / "environ").write_bytes(b"METAOPT_DATA_DIR=/data\0METAOPT_TRIAL_ID=ab\0")
    (entry / "stat").write_bytes(b"123 (x) S 1")
    assert find_orphans("/data", proc=tmp_path) == {}


def test_a_peer_never_takes_itself_for_an_orphan(tmp_path: Path) -> None:
    # A peer started from a trial's shell (its environment copied) holds both variables: it
    # would kill itself on its start.
    ours = str(tmp_path / "peer")
    code = (
        "import os; from metaopt.peer._orphans import find_orphans; "
        f"print(os.getpid() in find_orphans({ours!r}))"
    )
    env = {**os.environ, "METAOPT_TRIAL_ID": "ab" * 16, "METAOPT_DATA_DIR": ours,
           "PYTHONPATH": REPO}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    assert out.stdout.strip() == "False"


# A stand-in for a restarted peer with a trial process in its own process group (a peer
# started from a trial's shell shares the shell's group): it kills its orphans and prints
# whether that one was among them, and how it ended.
_OWN_GROUP = """
import os, subprocess, sys
from metaopt.peer._orphans import kill_orphans

env = {**os.environ, "METAOPT_TRIAL_ID": "ab" * 16, "METAOPT_DATA_DIR": sys.argv[1]}
trial = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
print(kill_orphans(sys.argv[1]) == [trial.pid], trial.wait(timeout=10), flush=True)
"""


def test_an_orphan_in_the_peers_own_group_is_killed_but_not_its_group(tmp_path: Path) -> None:
    # Killing the orphan's group would kill the peer itself, at every start. (The peer runs
    # in a session of its own: were its group killed, the test run would not die with it.)
    peer = subprocess.Popen(
        [sys.executable, "-c", _OWN_GROUP, str(tmp_path / "peer")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": REPO},
        start_new_session=True,
    )
    try:
        out, _ = peer.communicate(timeout=60)
        assert (peer.returncode, out.split()) == (0, ["True", str(-signal.SIGKILL)])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(peer.pid, signal.SIGKILL)  # (what is left of its group)
        peer.communicate()


def test_an_orphans_child_with_a_clean_environment_dies_with_its_group(tmp_path: Path) -> None:
    # Its children too, whatever their environment (env -i, a daemon's sanitised one): found
    # by neither variable, such a child would hold its GPU for good.
    ours = str(tmp_path / "peer")
    wrapper = (
        "import subprocess, sys, time; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], env={}); "
        "print(c.pid, flush=True); time.sleep(60)"
    )
    p = subprocess.Popen([sys.executable, "-c", wrapper], stdout=subprocess.PIPE,
                         env={**os.environ, "METAOPT_TRIAL_ID": "ab" * 16,
                              "METAOPT_DATA_DIR": ours}, start_new_session=True)  # fmt: skip
    child = 0
    try:
        assert p.stdout is not None
        child = int(p.stdout.readline())
        assert child not in find_orphans(ours)  # not found by its environment ...
        assert kill_orphans(ours) == [p.pid]
        assert _wait_gone(child)  # ... but by its group
    finally:
        _end(p)
        if child and not _wait_gone(child):
            os.kill(child, signal.SIGKILL)
        if p.stdout is not None:
            p.stdout.close()


@pytest.mark.parametrize(
    ("code", "grace", "end"),
    [
        (SLEEPER, 30.0, -signal.SIGTERM),
        (STUBBORN, 1.0, -signal.SIGKILL),
    ],
    ids=["terminated", "killed"],
)
def test_the_watchdog_stops_its_trials_kills_them_after_the_grace_and_exits_once_gone(
    code: str, grace: float, end: int
) -> None:
    # A trial ignoring SIGTERM would outlive its dead peer for good; and a watchdog waiting
    # out the whole grace after its trials are gone would linger after every peer's stop.
    env = {"METAOPT_TRIAL_ID": "cd" * 16, "METAOPT_DATA_DIR": "/nonexistent/metaopt-test"}
    trial = _spawn(code, env)
    watchdog = Watchdog(lambda: grace)
    try:
        time.sleep(0.5)  # (its handler is set)
        watchdog.watch(trial.pid)
        process = watchdog._process
        assert process is not None
        watchdog.close()
        assert trial.wait(timeout=15) == end
        process.wait(timeout=10)  # well within a grace of 30 s
    finally:
        _end(trial)


def test_what_the_pipe_did_not_take_is_told_before_the_end_on_close() -> None:
    # No event loop: what a stopped watchdog's pipe did not take waits for the next call; a
    # close is the last one, and must tell it all before the end of its input, or a trial
    # started meanwhile outlives its peer.
    env = {"METAOPT_TRIAL_ID": "ef" * 16, "METAOPT_DATA_DIR": "/nonexistent/metaopt-test"}
    kept = _spawn(SLEEPER, env)
    watchdog = Watchdog(lambda: 1.0)
    try:
        first = _stalled(watchdog, _nobody())
        watchdog.release(_nobody())
        watchdog.watch(kept.pid)
        assert watchdog.backlog >= 1
        os.kill(first.pid, signal.SIGCONT)
        time.sleep(0.5)  # it empties its pipe
        watchdog.close()
        assert kept.wait(timeout=10) == -signal.SIGTERM
    finally:
        watchdog.close()
        _end(kept)


def test_a_closed_watchdog_is_never_started_again_even_once_it_has_exited() -> None:
    # Started again by a trial ending after the peer's stop, a watchdog would be left behind.
    watchdog = Watchdog(lambda: 1.0)
    watchdog.watch(1 << 30)
    ended = watchdog._process
    assert ended is not None
    watchdog.close()
    ended.wait(timeout=15)
    watchdog.release(1 << 30)
    watchdog.watch((1 << 30) + 1)
    assert watchdog._process is ended


def test_a_stalled_watchdog_is_warned_of_once_and_the_writer_stops_once_it_reads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A warning at every full pipe would flood the log; a writer left on the loop with
    # nothing to tell would wake it at every turn.

    async def peer(watchdog: Watchdog) -> None:
        os.kill(_stalled(watchdog, _nobody()).pid, signal.SIGCONT)
        while watchdog.backlog:
            await asyncio.sleep(0.01)
        assert watchdog._writer is None
        await asyncio.sleep(0.1)
        for pgid in (_nobody() + 1, _nobody() + 2):  # (told at once: no warning)
            watchdog.watch(pgid)
            watchdog.release(pgid)

    watchdog = Watchdog(lambda: 1.0)
    with caplog.at_level(logging.INFO, logger="metaopt.peer"):
        try:
            asyncio.run(peer(watchdog))
        finally:
            watchdog.close()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("does not read its pipe" in m for m in messages) == 1
    assert sum("reads its pipe again" in m for m in messages) == 1


@pytest.mark.asyncio
async def test_a_watchdog_that_died_is_started_again_before_its_peer_dies() -> None:
    # Started again only at the next trial's start or end, a watchdog killed while long
    # trials ran was missing when the peer was killed -9: a real peer's 2 of 2 trials still
    # ran 10 s after (an asyncio and child process review).
    trial = _spawn(SLEEPER, {})
    watchdog = Watchdog(lambda: 0.5)
    try:
        watchdog.watch(trial.pid)
        dead = watchdog._process
        assert dead is not None
        dead.kill()  # by hand, the OOM killer, ...
        deadline = time.monotonic() + 10.0
        while watchdog._process is dead and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the peer runs on; its trial is quiet
        assert watchdog._process is not dead, "the watchdog was not started again"
        assert watchdog._end is not None
        watchdog._end()  # the peer dies: the kernel closes its end of the pipe
        assert await asyncio.to_thread(trial.wait, 10) == -signal.SIGTERM
    finally:
        trial.kill()
        trial.wait(timeout=10)
        watchdog.close()


@pytest.mark.asyncio
async def test_a_watchdog_that_keeps_dying_is_started_again_three_times_a_minute() -> None:
    # One that dies as it starts (a broken interpreter, say) is not started again and again
    # at the pace it dies: past the third death in a minute, at the next trial's start or end.
    trial = _spawn(SLEEPER, {})
    watchdog = Watchdog(lambda: 0.5)
    started: list[int] = []
    try:
        watchdog.watch(trial.pid)
        for _ in range(4):
            dead = watchdog._process
            assert dead is not None
            started.append(dead.pid)
            dead.kill()
            deadline = time.monotonic() + 3.0
            while watchdog._process is dead and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        assert len(set(started)) == 4 and watchdog._process is dead  # the 4th: not again
        watchdog.release(trial.pid)  # a trial ends: started again
        assert watchdog._process is not dead
    finally:
        trial.kill()
        trial.wait(timeout=10)
        watchdog.close()
