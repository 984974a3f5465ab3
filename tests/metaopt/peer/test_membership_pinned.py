"""Pins the wiring of Membership to its Node: the membership reads the node's clock and start
time at each call, not copies made when the node was built (setting node.started_at or
node.monotonic, as the node tests do, reached only the node's half after the move)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from metaopt.peer._config import PeerConfig
from metaopt.peer._node import Node

pytestmark = pytest.mark.integration


@pytest.mark.asyncio
async def test_the_alone_line_counts_from_the_nodes_started_at(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    node = Node(
        PeerConfig(data_dir=tmp_path / "n", port=0, mdns=False),
        clock=lambda: now[0],
        monotonic=lambda: now[0],
    )
    # Listening since a peer timeout ago (as _judging / _lone_node tests set it).
    node.started_at = now[0] - node.config.timing.peer_timeout
    try:
        assert node.listened()
        with caplog.at_level("INFO", logger="metaopt.peer"):
            await node._gossip()
        assert "this peer runs alone" in caplog.text
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_liveness_is_judged_on_the_nodes_monotonic_clock(tmp_path: Path) -> None:
    node = Node(PeerConfig(data_dir=tmp_path / "n", port=0, mdns=False))
    other = b"\x01" * 16
    node.peers.add(other, "127.0.0.1:9", time.monotonic(), contacted=True)
    # The node's clock moved on far past the peer timeout (as test_storage sets node.monotonic).
    node.monotonic = lambda: time.monotonic() + 10_000  # type: ignore[method-assign]
    try:
        [shown] = node.status()["peers"]
        assert shown["live"] is False  # the node's own view (PeerTable on node.monotonic)
        # The same node answers LocalApi (node.is_alive) on the clock given at construction.
        assert node.is_alive(other) is False
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_an_old_address_of_this_nodes_id_is_not_called(tmp_path: Path) -> None:
    now = [1000.0]
    node = Node(
        PeerConfig(data_dir=tmp_path / "n", port=0, mdns=False),
        clock=lambda: now[0],
        monotonic=lambda: now[0],
    )
    spawned: list[Any] = []

    def spawn(coro: Any) -> None:
        spawned.append(coro)
        coro.close()

    node.membership._spawn = spawn  # type: ignore[assignment]
    try:
        timeout = node.config.timing.peer_timeout
        node.membership.maybe_twin_at("127.0.0.1:7009", 10 * timeout)
        assert spawned == []
        node.membership.maybe_twin_at("127.0.0.1:7009", 0.0)  # heard of there just now
        assert len(spawned) == 1
    finally:
        node.membership._twin_calls = 0
        await node.stop()
