"""The benchmarks' loopback cluster harness stops what it started, and nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from metaopt.peer._identity import DataDir
from metaopt.peer._orphans import find_orphans
from simulations._peers import LoopbackCluster, PeerProcess


def _sleeper(**env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "30"], start_new_session=True, env={**os.environ, **env})


def _gone(proc: subprocess.Popen[bytes], within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return True
        time.sleep(0.05)
    return False


def test_close_kills_its_peers_trials_and_spares_a_process_that_reused_a_trials_pid(
    tmp_path: Path,
) -> None:
    # A finished trial's pid file is kept; close() killed the process group it named, which
    # once the pid was reused was any process of the machine.
    data_dir = tmp_path / "peer1"
    trial_dir = data_dir / "trials" / "t-finished-long-ago"
    trial_dir.mkdir(parents=True)
    bystander = _sleeper()
    orphan = _sleeper(METAOPT_DATA_DIR=str(DataDir(data_dir).root), METAOPT_TRIAL_ID="ab" * 16)
    try:
        (trial_dir / "pid").write_text(f"{bystander.pid}\n")
        # Until its exec is through, a process's /proc environ reads empty (Popen returns when
        # the descriptors close, a little before): under load, close() found nothing yet.
        deadline = time.monotonic() + 10
        while orphan.pid not in find_orphans(DataDir(data_dir).root):
            assert time.monotonic() < deadline, "the orphan's environment never showed"
            time.sleep(0.01)
        cluster = LoopbackCluster(tmp_path)
        cluster.peers.append(PeerProcess("peer1", data_dir, 1, tmp_path / "peer1.log"))
        cluster.close()
        assert _gone(orphan), "a trial of the cluster's peer outlived close()"
        time.sleep(0.2)
        assert bystander.poll() is None, "close() killed a process that was no trial"
    finally:
        for proc in (bystander, orphan):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
