"""A writer killed by SIGKILL mid-stream loses nothing it acknowledged; the store stays consistent.

SIGKILL keeps the OS page cache, so this checks the process-crash half of durability; the
power-loss half rests on LevelDB's sync=True write batches (fsync of the log before add returns).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from crdt import LevelDBStore, Record, SetFingerprint, VersionVector

WRITER = Path(__file__).with_name("durability_writer.py")
ROOT = Path(__file__).resolve().parents[2]


def run_and_kill(path: Path, seed: int, wait_for: int) -> set[bytes]:
    """Start the writer, read acknowledgements until wait_for keys, SIGKILL it; return the acks."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    acked: set[bytes] = set()
    try:
        assert child.stdout is not None
        while len(acked) < wait_for:
            line = child.stdout.readline()
            if not line:
                break
            acked.add(bytes.fromhex(line.decode().strip()))
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        _, err = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL, err.decode()
    assert len(acked) >= wait_for, err.decode()
    return acked


def check_consistent(store: LevelDBStore) -> set[bytes]:
    keys = {key for _, key in store.ordered()}
    assert len(keys) == len(store)
    vv = VersionVector()
    for key in keys:
        record = store.get(key)
        assert record is not None
        again = Record.decode(record.data)
        assert again.key == key
        vv.add(again.origin, again.seq)
    assert store.version_vector() == vv
    expected = SetFingerprint.of(keys)
    assert (store.fingerprint().total, store.fingerprint().count) == (
        expected.total,
        expected.count,
    )
    assert {r.key for r in store.linked(b"exp")} == keys
    for origin in vv.origins():
        assert len(list(store.by_origin(origin, 1, 2**62))) == len(vv.get(origin))
    return keys


@pytest.mark.integration
@pytest.mark.slow
def test_sigkill_mid_stream_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "db"
    all_acked: set[bytes] = set()
    for round_no, wait_for in enumerate([5, 200, 1000]):
        acked = run_and_kill(path, seed=round_no + 1, wait_for=wait_for)
        all_acked |= acked
        with LevelDBStore(path) as store:
            keys = check_consistent(store)
            missing = all_acked - keys
            assert not missing, f"{len(missing)} acknowledged records lost"
