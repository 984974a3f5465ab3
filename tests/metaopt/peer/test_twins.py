"""A data directory copied to make a second peer: two peers under one node id.

Unnoticed, each took the other's running trials (recorded under "its" node id) for its own,
cut short by a restart, and re-ran them: points ran twice and a budget of 4 took 5 trials.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest

from metaopt.peer._wire import Request, decode_request
from tests.metaopt.peer.cluster import Cluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRAIN = """\
import argparse, time, metaopt
p = argparse.ArgumentParser(); p.add_argument("--x", type=float, default=0.0)
a = p.parse_args()
time.sleep(1.5)
metaopt.report(loss=(a.x - 0.3) ** 2, step=1)
"""


def test_a_request_carries_its_process_token_and_one_without_reads_as_none() -> None:
    sent = Request("gossip", b"n" * 16, "127.0.0.1:1", None, to=b"m" * 16, run=b"r" * 8)
    assert decode_request(sent.encode()).run == b"r" * 8
    assert decode_request(Request("gossip", b"n" * 16, "127.0.0.1:1", None).encode()).run is None


def test_the_peer_that_hears_its_twin_stops_and_the_twin_runs_alone(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "c")
    try:
        original = cluster.start_peer("a")
        cluster.kill(original, signal.SIGTERM)  # a clean stop, then copy it whole
        copy_dir = tmp_path / "c" / "b"
        shutil.copytree(original.data_dir, copy_dir)
        cluster.restart(original)
        copy = cluster.start_peer("b", data_dir=copy_dir)  # joins the original
        assert (copy_dir / "node_id").read_text() == (original.data_dir / "node_id").read_text()
        assert original.proc is not None and copy.proc is not None
        wait_for(lambda: original.proc.poll() is not None, 30, original.log)
        said = [line for line in original.log().splitlines() if "this peer's node id" in line]
        assert said and "give one of them its own data directory" in said[0]
        assert copy.proc.poll() is None  # it goes on, alone, as this node
        (tmp_path / "w").mkdir()
        (tmp_path / "w" / "train.py").write_text(TRAIN)
        out = copy.cli(
            "submit", "--name", "dup", "--max-trials", "4",
            str(tmp_path / "w" / "train.py"), "--x~uniform(0, 1)",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr

        def finished() -> bool:
            rows = copy.json("status")
            return bool(rows) and rows[0]["finished"]

        wait_for(finished, 60, copy.log)
        time.sleep(1)
        assert copy.json("status", "dup")["trials"] == 4
        assert "restarted while it ran" not in copy.log()
    finally:
        cluster.close()
