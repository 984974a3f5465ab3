"""A peer whose replica was moved aside starts afresh and loses nothing of the cluster's."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from crdt import Record
from metaopt._records import ExperimentSpec, experiment_record
from metaopt.peer._config import PeerConfig
from metaopt.peer._node import Node

pytestmark = pytest.mark.integration


def _note(node: Node, name: str) -> Record:
    """A record of node's own, after the experiment it belongs to."""
    experiment = experiment_record(ExperimentSpec(name, {"x": "uniform(0, 1)"}, command=("t",)))
    node.store.add([experiment])
    return node.writer.write("control", {"action": "note"}, [experiment.key])


async def _reconcile(node: Node, other: Node) -> None:
    """One completed session (one may be refused while the other runs its own)."""
    for _ in range(100):
        if await node.replicator.reconcile(other.addr):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no session completed")


@pytest.mark.asyncio
async def test_a_peer_whose_replica_was_moved_aside_gets_it_back_and_its_new_records_out(
    tmp_path: Path,
) -> None:
    # As a damaged replica's error advises, the user moved it aside and restarted. The peer
    # keeps its node id, so it numbers its records from 1 again: each number then names two
    # of its records, which the stores keep both of (an equivocation), and replicate.
    now = [1_796_422_393.0]

    def node(name: str, key: str | None = None, join: tuple[str, ...] = ()) -> Node:
        config = PeerConfig(data_dir=tmp_path / name, port=0, mdns=False, key_text=key, join=join)
        return Node(config, clock=lambda: now[0], monotonic=lambda: now[0])

    a = node("a")
    running: list[Node] = []
    try:
        await a.start()
        running.append(a)
        b = node("b", a.key.to_text(), (a.addr,))
        await b.start()
        running.append(b)
        first = _note(b, "one")
        await _reconcile(a, b)
        assert a.store.get(first.key) is not None
        old_id = b.node_id
        running.remove(b)
        await b.stop()
        shutil.move(tmp_path / "b" / "replica", tmp_path / "b-replica-damaged")

        b = node("b", a.key.to_text(), (a.addr,))
        await b.start()
        running.append(b)
        assert b.node_id == old_id
        second = _note(b, "two")
        assert (second.origin, second.seq) == (first.origin, first.seq)
        await _reconcile(a, b)
        assert a.store.get(second.key) is not None
        await _reconcile(b, a)
        assert b.store.get(first.key) is not None  # the old records come back from a
        held = [(s.fingerprint().count, s.fingerprint().total) for s in (a.store, b.store)]
        assert held[0] == held[1]
    finally:
        for peer in running:
            await peer.stop()
