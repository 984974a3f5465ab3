"""Two peers syncing each other at once: the joiner's catch-up crosses the wire once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from crdt import Record
from metaopt.peer._config import PeerConfig, Timing
from metaopt.peer._node import Node

pytestmark = pytest.mark.integration

# Only the sessions the test starts (the periodic ones run once at the start, alone).
QUIET = Timing(anti_entropy=600.0, gossip=600.0)


def quiet_node(data_dir: Path, key: str | None = None) -> Node:
    """A node on loopback whose periodic rounds wait ten minutes: a test drives them."""
    return Node(PeerConfig(data_dir=data_dir, port=0, mdns=False, key_text=key, timing=QUIET))


@pytest.mark.asyncio
async def test_sessions_both_ways_at_once_carry_a_catch_up_once(tmp_path: Path) -> None:
    # The joiner's anti-entropy pulled the history while its partner's pushed it the same
    # records: a 3-million-record catch-up crossed the wire twice.
    full = quiet_node(tmp_path / "full")
    joiner = quiet_node(tmp_path / "joiner", full.key.to_text())
    origin = b"\x05" * 16
    history = [
        Record.create("event", origin, seq, 1000 + seq, {"s": seq}) for seq in range(1, 40_001)
    ]
    full.store.add(history)
    offered = 0  # records the joiner was handed, new or not
    add = joiner.store.add

    def counting(records: Iterable[Record]) -> list[Record]:
        nonlocal offered
        batch = list(records)
        offered += len(batch)
        return add(batch)

    joiner.store.add = counting  # type: ignore[method-assign]
    running: list[Node] = []
    try:
        for peer in (full, joiner):
            await peer.start()
            running.append(peer)
        await asyncio.sleep(0.2)  # their periodic rounds ran once, knowing no peer yet
        now = time.monotonic()
        full.peers.add(joiner.node_id, joiner.addr, now, contacted=True)
        joiner.peers.add(full.node_id, full.addr, now, contacted=True)
        await asyncio.wait_for(
            asyncio.gather(
                joiner.replicator.reconcile(full.addr), full.replicator.reconcile(joiner.addr)
            ),
            timeout=60,
        )
        for _ in range(3):  # the refused side's next session finds the two in sync
            if len(joiner.store) == len(history):
                break
            await asyncio.wait_for(joiner.replicator.reconcile(full.addr), timeout=60)
        assert len(joiner.store) == len(history)
        assert offered < 1.1 * len(history)
    finally:
        for peer in running:
            await peer.stop()
