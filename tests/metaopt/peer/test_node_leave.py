"""A peer that stops gracefully says so: its peers count it gone at once, not a timeout later."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from metaopt.peer._config import PeerConfig
from metaopt.peer._node import Node
from metaopt.peer._transport import Server

pytestmark = pytest.mark.integration

OLDER = b"\x07" * 16  # a peer of a release before "leave"


@pytest.mark.asyncio
async def test_a_stopped_peer_is_gone_at_once_until_it_speaks_again(tmp_path: Path) -> None:
    # Peers showed a stopped peer live for peer_timeout (30 s): `metaopt thaw` of a trial
    # frozen there was refused, and its interrupted trials waited. Every clock here stands
    # still, so only the leave can make a peer count another gone.
    now = time.time()

    def clock() -> float:
        return now

    def node(name: str, key: str | None = None) -> Node:
        config = PeerConfig(data_dir=tmp_path / name, port=0, mdns=False, key_text=key)
        return Node(config, clock=clock, monotonic=clock)

    a = node("a")
    b = node("b", a.key.to_text())
    older = Server(a.codec, {}, node_id=OLDER)  # answers every operation with "unknown operation"
    running = [a, b]  # stopped at the end, unless the test stopped them
    try:
        await a.start()
        await b.start()
        older_port = await older.start("127.0.0.1", 0)
        a.peers.add(b.node_id, b.addr, now, contacted=True)
        a.peers.add(OLDER, f"127.0.0.1:{older_port}", now, contacted=True)
        b.peers.add(a.node_id, a.addr, now, contacted=True)
        assert b.is_alive(a.node_id)

        running.remove(a)
        await a.stop()  # an older peer's "unknown operation" does not break the stop
        assert older.bytes_in > 0
        assert not b.is_alive(a.node_id) and a.node_id not in b.live_nodes()
        # But its frozen trials are not lost before the timeout: it may be back in a moment
        # (stopped to restart), and only it holds their checkpoints.
        assert b._not_gone(a.node_id)
        [shown] = b.status()["peers"]
        assert shown["node_id"] == a.node_id.hex() and shown["live"] is False
        # A third peer that had not heard of the leave yet reports it seen a moment ago.
        b.peers.merge_gossip([[a.node_id, a.addr, 0.0]], now, exclude=b.node_id)
        assert not b.is_alive(a.node_id)

        # Restarted on its data directory (the same node id), it is live once it calls.
        restarted = node("a")
        running.append(restarted)
        await restarted.start()
        await restarted.client.call(b.addr, "gossip", [])
        assert restarted.node_id == a.node_id and b.is_alive(a.node_id)
    finally:
        for peer in running:
            await peer.stop()
        await older.stop()
