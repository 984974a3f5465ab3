"""Trial processes left by a peer killed -9 are found by their environment and stopped."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from metaopt.peer._orphans import find_orphans, kill_orphans

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc"),
]

SLEEPER = "import time; time.sleep(60)"
# A trial that starts a child which does not print: only the process group reaches it.
WRAPPER = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', " + repr(
    "import time; time.sleep(60)"
) + "]); time.sleep(60)"  # fmt: skip


def _spawn(code: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, **env}, start_new_session=True
    )


def _wait_gone(pid: int) -> bool:
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_only_this_data_dirs_trial_processes_are_killed_with_their_groups(tmp_path: Path) -> None:
    ours = str(tmp_path / "peer")
    trial = {"METAOPT_TRIAL_ID": "ab" * 16, "METAOPT_DATA_DIR": ours}
    orphan = _spawn(WRAPPER, trial)
    # The user's shell may carry METAOPT_DATA_DIR to configure the peer: not a trial.
    shell = _spawn(SLEEPER, {"METAOPT_DATA_DIR": ours})
    other_peer = _spawn(SLEEPER, {**trial, "METAOPT_DATA_DIR": str(tmp_path / "other")})
    spawned = [orphan, shell, other_peer]
    try:
        deadline = time.monotonic() + 20
        while len(find_orphans(ours)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the wrapper's child has started
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
        for process in spawned:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


def test_one_trials_escaped_processes_are_killed_and_no_other_trials(tmp_path: Path) -> None:
    # A trial's child that left its group (setsid) outlived the trial and a graceful stop of
    # the peer, until the peer's next start: its run's end now stops it, and it alone.
    ours = str(tmp_path / "peer")
    env = {"METAOPT_DATA_DIR": ours}
    escaped = _spawn(SLEEPER, {**env, "METAOPT_TRIAL_ID": "ab" * 16})
    running = _spawn(SLEEPER, {**env, "METAOPT_TRIAL_ID": "cd" * 16})
    try:
        deadline = time.monotonic() + 20
        while len(find_orphans(ours)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert find_orphans(ours, trial="ab" * 16) == {escaped.pid: escaped.pid}
        assert kill_orphans(ours, trial="ab" * 16) == [escaped.pid]
        assert escaped.wait(timeout=10) == -signal.SIGKILL
        assert running.poll() is None
    finally:
        for process in (escaped, running):
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


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


def test_a_trial_and_what_it_started_die_with_their_peer_even_when_silent(tmp_path: Path) -> None:
    # A peer killed -9 and not restarted left its silent trial, and the children of a shell
    # script, running beside the re-run on another peer: the trial died only on its next
    # write to its closed pipe, or when its peer restarted (kill_orphans above).
    repo = str(Path(__file__).resolve().parents[3])
    peer = subprocess.Popen(
        [sys.executable, "-c", _PEER, str(tmp_path), WRAPPER],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": repo},
    )
    left: dict[int, int] = {}
    try:
        assert peer.stdout is not None
        trial = int(peer.stdout.readline())
        deadline = time.monotonic() + 20
        while len(left := find_orphans(str(tmp_path))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the trial's child has started
        assert trial in left and len(left) == 2
        peer.kill()
        peer.wait(timeout=10)
        assert all(_wait_gone(pid) for pid in left)
    finally:
        if peer.poll() is None:
            peer.kill()
        peer.wait(timeout=10)
        if peer.stdout is not None:
            peer.stdout.close()
        kill_orphans(str(tmp_path))


def test_a_watchdog_started_again_still_stops_the_groups_the_first_one_knew(
    tmp_path: Path,
) -> None:
    # Killed by hand, the watchdog was started again at the next trial knowing that trial only.
    from metaopt.peer._watchdog import Watchdog

    env = {"METAOPT_TRIAL_ID": "cd" * 16, "METAOPT_DATA_DIR": str(tmp_path)}
    first, second = _spawn(SLEEPER, env), _spawn(SLEEPER, env)
    # Our own children stay zombies (not gone to the watchdog) until we reap them: a short
    # grace lets the watchdog give up on them and exit before close() stops waiting.
    watchdog = Watchdog(lambda: 1.0)
    try:
        watchdog.watch(first.pid)
        assert watchdog._process is not None
        watchdog._process.kill()
        watchdog._process.wait(timeout=10)
        watchdog.watch(second.pid)
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
    from metaopt.peer._watchdog import Watchdog

    env = {"METAOPT_TRIAL_ID": "ef" * 16, "METAOPT_DATA_DIR": "/nonexistent/metaopt-test"}
    ended, kept = _spawn(SLEEPER, env), _spawn(SLEEPER, env)
    # Trials of a moment, as groups no process can have: more lines than any pipe holds.
    nobody = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    burst = range(nobody, nobody + 2 * 16 * os.sysconf("SC_PAGESIZE") // 9)

    async def peer(watchdog: Watchdog) -> None:
        watchdog.watch(ended.pid)
        first = watchdog._process
        assert first is not None
        os.kill(first.pid, signal.SIGSTOP)
        try:
            for pgid in burst:
                watchdog.watch(pgid)
                watchdog.release(pgid)
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
            node = SimpleNamespace(clock=lambda: 0.0, dirs=SimpleNamespace(trials=tmp_path))
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
