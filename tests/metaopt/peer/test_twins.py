"""A data directory copied to make a second peer: two peers under one node id.

Unnoticed, each took the other's running trials (recorded under "its" node id) for its own,
cut short by a restart, and re-ran them: points ran twice and a budget of 4 took 5 trials.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from metaopt.peer._config import PeerConfig
from metaopt.peer._node import Node
from metaopt.peer._transport import Misaddressed
from metaopt.peer._twins import TwinWatch
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


def test_the_twin_started_later_stops_and_the_other_runs_alone(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "c")
    try:
        original = cluster.start_peer("a")
        cluster.kill(original, signal.SIGTERM)  # a clean stop, then copy it whole
        copy_dir = tmp_path / "c" / "b"
        shutil.copytree(original.data_dir, copy_dir)
        cluster.restart(original)
        time.sleep(0.05)  # (the copy's process starts later by the clock too)
        copy = cluster.start_peer("b", data_dir=copy_dir)  # joins the original
        assert (copy_dir / "node_id").read_text() == (original.data_dir / "node_id").read_text()
        assert original.proc is not None and copy.proc is not None
        # The original hears the copy's call and calls it back; the copy, hearing an earlier
        # process under its id, stops (under a supervisor, the copy restarted stops again,
        # and the original runs on: not each in turn).
        wait_for(lambda: copy.proc.poll() is not None, 30, copy.log)
        said = [line for line in copy.log().splitlines() if "this peer's node id" in line]
        assert said and "give one of them its own data directory" in said[0]
        assert original.proc.poll() is None  # it goes on, alone, as this node
        (tmp_path / "w").mkdir()
        (tmp_path / "w" / "train.py").write_text(TRAIN)
        out = original.cli(
            "submit", "--name", "dup", "--max-trials", "4",
            str(tmp_path / "w" / "train.py"), "--x~uniform(0, 1)",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr

        def finished() -> bool:
            rows = original.json("status")
            return bool(rows) and rows[0]["finished"]

        wait_for(finished, 60, original.log)
        time.sleep(1)
        assert original.json("status", "dup")["trials"] == 4
        assert "restarted while it ran" not in original.log()
        assert "this peer's node id" not in original.log()
    finally:
        cluster.close()


class _Wired:
    """Nodes driven by hand: no server, no socket; every call goes to the addressed node's
    own handler, as the transport would (run token included). One clock for all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.now = time.time()
        self.nodes: dict[str, Node] = {}

    def node(self, name: str, addr: str, key: str | None = None, skew: float = 0.0) -> Node:
        """A node at ``addr`` whose wall clock reads ``skew`` seconds from the shared one."""
        config = PeerConfig(data_dir=self.root / name, port=0, mdns=False, key_text=key)
        made = Node(config, clock=lambda: self.now + skew, monotonic=lambda: self.now)
        made.addr = addr
        made.peers.own_addrs = frozenset({addr})
        made.client = self._client_of(made)  # type: ignore[assignment]
        self.nodes[addr] = made
        return made

    def _client_of(self, sender: Node) -> Any:
        async def call(addr: str, op: str, body: Any = None, to: bytes | None = None) -> Any:
            target = self.nodes[addr]
            if to is not None and to != target.node_id:
                raise Misaddressed("another node")
            lag = target.clock() - sender.clock()  # (as the server sets it: no time in flight)
            request = Request(op, sender.node_id, sender.addr, body, remote="127.0.0.1",
                              to=to, lag=lag, run=sender.twins.token)  # fmt: skip
            return await target._handlers()[op](request)

        return SimpleNamespace(call=call)

    async def rounds(self, n: int, *nodes: Node) -> None:
        for _ in range(n):
            for node in nodes:
                if not node.failed:
                    await node._gossip()
            self.now += 1.0
            await asyncio.sleep(0.01)  # (the calls to where a node's own id was heard of)

    def close(self) -> None:
        for node in self.nodes.values():
            node.store.close()

    def copy(self, name: str, to: str) -> None:
        shutil.copytree(self.root / name, self.root / to)

    def original_and_copy(self) -> None:
        """A data directory "a" that a peer ran in once, and its copy "copy"."""
        first = self.node("a", "127.0.0.1:41000")
        first.store.close()
        del self.nodes[first.addr]
        self.copy("a", "copy")


@pytest.mark.asyncio
async def test_twins_joined_through_a_third_peer_hear_each_other(tmp_path: Path) -> None:
    """Twins that reach each other only through a third peer (or mDNS) never heard each
    other, and neither stopped (a review of the session's fixes)."""
    wired = _Wired(tmp_path)
    a, twin, _ = await _twins_through_a_third_peer(wired)
    try:
        called = {p.addr for n in (a, twin) for p in n.peers.all()}
        assert twin.failed and a.failed is None, (
            f"the later twin did not stop after 10 rounds; the twins know only {sorted(called)}"
        )
    finally:
        wired.close()


async def _twins_through_a_third_peer(wired: _Wired) -> tuple[Node, Node, Node]:
    """The original, its copy (started later) and a third peer c, after ten gossip rounds."""
    wired.original_and_copy()
    a = wired.node("a", "127.0.0.1:41001")
    wired.now += 0.01  # (the copy's process starts later)
    key = a.key.to_text()
    twin, c = wired.node("copy", "127.0.0.1:41002"), wired.node("c", "127.0.0.1:41003", key)
    assert a.node_id == twin.node_id and a.twins.token < twin.twins.token
    # c knew the original (it talked to it before the copy); both twins have c as their seed
    # (a --join, or the `peers` file the copy inherited).
    c.peers.add(a.node_id, a.addr, wired.now, contacted=True)
    a.peers.add_seed(c.addr)
    twin.peers.add_seed(c.addr)
    await wired.rounds(10, a, twin, c)
    return a, twin, c


@pytest.mark.asyncio
async def test_the_stopping_twin_does_not_tell_the_cluster_that_the_other_leaves(
    tmp_path: Path,
) -> None:
    """The copy stopped as any peer does, telling its live peers, under the node id it shares
    with the original, that it was leaving: they counted the original gone until it next
    called them (a review of the session's fixes)."""
    wired = _Wired(tmp_path)
    a, twin, c = await _twins_through_a_third_peer(wired)
    try:
        assert twin.failed and a.failed is None
        timeout = c.config.timing.peer_timeout
        assert a.node_id in {p.node_id for p in c.peers.live(wired.now, timeout)}
        await twin._leave()  # what the copy's Node.stop() does next, as any stop
        assert a.node_id in {p.node_id for p in c.peers.live(wired.now, timeout)}
    finally:
        wired.close()


@pytest.mark.asyncio
async def test_the_copy_started_later_stops_even_when_its_clock_is_behind(tmp_path: Path) -> None:
    """The copy starts 30 s after the original, on a machine whose clock is 60 s behind
    (peers accept clocks up to 2 minutes apart): by the tokens' own clocks, the original
    stopped (a review of the session's fixes)."""
    wired = _Wired(tmp_path)
    wired.original_and_copy()
    original = wired.node("a", "127.0.0.1:41001")
    wired.now += 30.0
    copy = wired.node("copy", "127.0.0.1:41002", skew=-60.0)
    copy.peers.add_seed(original.addr)
    try:
        await wired.rounds(3, copy, original)
        assert copy.failed and original.failed is None, (copy.failed, original.failed)
    finally:
        wired.close()


@pytest.mark.asyncio
async def test_a_twin_restarted_again_and_again_stops_each_time_and_the_other_runs_on(
    tmp_path: Path,
) -> None:
    """Under a supervisor that restarts what exits, twins that each --join the other stopped
    each other in turn (22 stops in 40 s; a review of the session's fixes): the one that
    heard the other stopped, and a restarted twin always called first."""
    wired = _Wired(tmp_path)
    wired.original_and_copy()
    a = wired.node("a", "127.0.0.1:41001")
    try:
        for life in range(3):
            wired.now += 5.0
            twin = wired.node("copy", "127.0.0.1:41002")  # started (again) by its supervisor
            twin.peers.add_seed(a.addr)
            a.peers.add_seed(twin.addr)
            await wired.rounds(3, twin, a)  # the restarted one calls first
            assert twin.failed and a.failed is None, f"life {life}"
            twin.store.close()
            del wired.nodes[twin.addr]
    finally:
        wired.close()


def test_of_two_twins_the_one_started_later_stops_and_only_once() -> None:
    """Both twins pick the same one to stop, whichever hears the other first; a twin's token
    is never this process's own, and a request without one (an older peer, the CLI) is none."""
    earlier, later = TwinWatch(1000.0, b"\xff" * 4), TwinWatch(1000.001, b"\x00" * 4)
    assert earlier.token < later.token
    assert not earlier.is_twin(earlier.token) and not earlier.is_twin(None)
    assert earlier.is_twin(later.token) and later.is_twin(earlier.token)
    assert not earlier.stops_for(later.token, 0.0)  # it calls the later one back instead
    assert later.stops_for(earlier.token, 0.0) and not later.stops_for(earlier.token, 0.0)
    # Read through the request's lag: started 30 s later by a clock 60 s behind, the copy's
    # token is the smaller, and its requests' lag (+60 s) puts it where it belongs.
    original, copy = TwinWatch(1060.0, b"\x00" * 4), TwinWatch(1030.0, b"\xff" * 4)
    assert copy.token < original.token
    assert not original.stops_for(copy.token, 60.0) and copy.stops_for(original.token, -60.0)


def test_an_address_is_called_once_a_minute_per_process_there() -> None:
    watch = TwinWatch(1000.0, b"\x00" * 4)
    assert watch.should_call("127.0.0.1:1", None, 5.0)
    assert not watch.should_call("127.0.0.1:1", None, 64.9)
    assert watch.should_call("127.0.0.1:1", b"t" * 12, 6.0)  # a new process there: at once
    assert watch.should_call("127.0.0.1:1", None, 65.0)
