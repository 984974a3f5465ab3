"""Gossip that waited in a paused peer's sockets is as old as the pause.

Ages were measured from when a request was handled, not from when it was sent: a peer stopped
with SIGSTOP (or whose event loop was held) for longer than the peer timeout handled on
resuming the gossip sent to it meanwhile, counted peers that died meanwhile as heard of a
moment ago, and told the others so: they counted the dead peer live again for another peer
timeout (its running trials' loss waited as long), 3 of 3 (a membership review).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crdt import ClusterKey
from metaopt.peer._config import PeerConfig, Timing
from metaopt.peer._node import Node

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CODE = Path(__file__).resolve().parents[3]
TIMING = "peer_timeout=4,lost_after=6,anti_entropy=0.5,gossip=0.5,stop_grace=1,request_timeout=1"
FAST = Timing(peer_timeout=4.0, lost_after=6.0, anti_entropy=0.5, gossip=0.5, stop_grace=1.0,
              request_timeout=1.0)  # fmt: skip


@pytest.mark.asyncio
async def test_a_peer_dead_while_another_was_paused_is_not_counted_live_again(
    tmp_path: Path,
) -> None:
    key = ClusterKey.generate(os.urandom(32)).to_text()
    env = dict(os.environ, PYTHONPATH=str(CODE), METAOPT_KEY=key)
    env.pop("METAOPT_DATA_DIR", None)
    with open(tmp_path / "b.log", "w") as out:
        paused = subprocess.Popen(
            [sys.executable, "-P", "-m", "metaopt", "peer", "start", "--host", "127.0.0.1",
             "--no-mdns", "--port", "0", "--data-dir", str(tmp_path / "b"), "--timing", TIMING,
             "--gpus", "none"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    node: Node | None = None
    try:
        address = tmp_path / "b" / "peer.address"
        for _ in range(200):
            if address.exists() and address.read_text().strip():
                break
            await asyncio.sleep(0.1)
        join = (address.read_text().strip(),)
        node = Node(PeerConfig(data_dir=tmp_path / "a", port=0, mdns=False, key_text=key,
                               join=join, timing=FAST))  # fmt: skip
        await node.start()
        for _ in range(100):
            if node.peers.live(node.monotonic(), FAST.peer_timeout):
                break
            await asyncio.sleep(0.1)
        assert node.peers.live(node.monotonic(), FAST.peer_timeout)
        dead = os.urandom(16)  # live here a moment ago; it dies now
        node.peers.add(dead, "127.0.0.1:9", node.monotonic(), contacted=True)
        died = time.monotonic()
        os.kill(paused.pid, signal.SIGSTOP)
        await asyncio.sleep(2 * FAST.peer_timeout)  # everyone counts it gone meanwhile
        assert not node.is_alive(dead)
        os.kill(paused.pid, signal.SIGCONT)
        alive_at: list[float] = []
        while time.monotonic() - died < 4 * FAST.peer_timeout:
            if node.is_alive(dead):
                alive_at.append(round(time.monotonic() - died, 1))
            await asyncio.sleep(0.25)
        assert not alive_at, (
            f"a peer dead since 0 s, gone here at {FAST.peer_timeout:g} s, counted live again"
            f" from {alive_at[0]} s to {alive_at[-1]} s"
        )
    finally:
        os.kill(paused.pid, signal.SIGCONT)
        paused.send_signal(signal.SIGTERM)
        try:
            paused.wait(20)
        except subprocess.TimeoutExpired:
            paused.kill()
            paused.wait()
        if node is not None:
            await node.stop()
