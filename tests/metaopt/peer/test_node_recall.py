"""A peer restarted on its data directory finds the peers it knew, without --join, and one
whose replica was moved aside gets it back under a new node id."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from crdt import Record
from metaopt._records import ExperimentSpec, experiment_record
from metaopt.peer._config import PeerConfig
from metaopt.peer._node import Node

pytestmark = pytest.mark.integration


def _factory(root: Path, now: list[float]) -> Callable[..., Node]:
    """Nodes on loopback with data directories under root, on a clock the test moves."""

    def node(name: str, key: str | None = None, join: tuple[str, ...] = ()) -> Node:
        config = PeerConfig(data_dir=root / name, port=0, mdns=False, key_text=key, join=join)
        return Node(config, clock=lambda: now[0], monotonic=lambda: now[0])

    return node


@contextlib.asynccontextmanager
async def _joined_pair(
    root: Path,
) -> AsyncIterator[tuple[Callable[..., Node], list[float], list[Node]]]:
    """A node factory on a clock the test moves (``now``), and the nodes running: peer a,
    and b started with a as its seed, first; whatever the test adds or removes there, the
    nodes running at the end are stopped."""
    now = [1_796_422_393.0]
    node = _factory(root, now)
    running: list[Node] = []
    try:
        a = node("a")
        await a.start()
        running.append(a)
        b = node("b", a.key.to_text(), (a.addr,))
        await b.start()
        running.append(b)
        yield node, now, running
    finally:
        for peer in running:
            await peer.stop()


@pytest.mark.asyncio
async def test_a_restarted_peer_calls_the_peers_it_talked_to_and_says_if_none_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Restarted without --join (the printed join command has --port 0, so it came back on
    # another port), a peer heard of no one, ran alone on its own copy of the history and
    # took a finished experiment of --max-trials 40 to 57 trials.
    async with _joined_pair(tmp_path) as (node, now, running):
        a, b = running
        await b._gossip()  # b calls its seed; a now knows b
        await a._gossip()  # and calls it back: b knows a by its node id
        await b._gossip()  # and keeps a's address
        assert b.is_alive(a.node_id) and (tmp_path / "b" / "peers").read_text() == f"{a.addr}\n"
        running.remove(b)
        await b.stop()

        restarted = node("b")  # no --join, and a new port
        await restarted.start()
        running.append(restarted)
        assert not restarted.caught_up()  # it knew peers: not alone, so not caught up yet
        await restarted._gossip()
        assert a.is_alive(restarted.node_id)  # it called a

        running.remove(a)
        await a.stop()
        running.remove(restarted)
        await restarted.stop()
        alone = node("b")
        caplog.set_level(logging.WARNING, logger="metaopt.peer")
        await alone.start()
        running.append(alone)
        await alone._gossip()
        assert not [r for r in caplog.records if "runs alone" in r.getMessage()]
        for _ in range(int(alone.config.timing.peer_timeout)):
            now[0] += 1.0
            alone._check_stall()  # (as its watch ticks: time passed, its loop not held)
        for _ in range(2):
            await alone._gossip()
        [warning] = [r.getMessage() for r in caplog.records if "runs alone" in r.getMessage()]
        assert a.addr in warning and "keeps calling them" in warning and "--join" in warning
        assert (tmp_path / "b" / "peers").read_text() == f"{a.addr}\n"  # kept while alone


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
@pytest.mark.parametrize("lost", ["moved aside", "deleted"])
async def test_a_peer_whose_replica_is_gone_takes_a_new_node_id_and_gets_its_records_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, lost: str
) -> None:
    # As a damaged replica's error advises, the user moved it aside and restarted. The peer
    # kept its node id and numbered its records from 1 again: each number then named two of
    # its records, which every store kept both of (an equivocation). It takes a new id.
    async with _joined_pair(tmp_path) as (node, _, running):
        a, b = running
        first = _note(b, "one")
        await _reconcile(a, b)
        assert a.store.get(first.key) is not None
        old_id = b.node_id
        running.remove(b)
        await b.stop()
        if lost == "moved aside":
            shutil.move(tmp_path / "b" / "replica", tmp_path / "b-replica-damaged")
        else:
            shutil.rmtree(tmp_path / "b" / "replica")

        caplog.set_level(logging.WARNING, logger="metaopt.peer")
        b = node("b", a.key.to_text(), (a.addr,))
        await b.start()
        running.append(b)
        assert b.node_id != old_id
        assert (tmp_path / "b" / "node_id").read_text() == b.node_id.hex() + "\n"
        [said] = [r.getMessage() for r in caplog.records if "is gone" in r.getMessage()]
        assert old_id.hex()[:8] in said and b.node_id.hex()[:8] in said
        second = _note(b, "two")
        assert (second.origin, second.seq) == (b.node_id, 1)
        await _reconcile(a, b)
        await _reconcile(b, a)
        for store in (a.store, b.store):  # the old records come back from a, the new go out
            assert store.get(first.key) is not None and store.get(second.key) is not None
            assert [r.key for r in store.by_origin(old_id, 1, 1)] == [first.key]
        held = [(s.fingerprint().count, s.fingerprint().total) for s in (a.store, b.store)]
        assert held[0] == held[1]

        running.remove(b)
        await b.stop()
        again = node("b", a.key.to_text(), (a.addr,))  # a plain restart keeps the new id
        await again.start()
        running.append(again)
        assert again.node_id == b.node_id
        assert again.writer.write("control", {"action": "note"}, [first.links[0]]).seq == 2


@pytest.mark.asyncio
async def test_a_gossip_call_failing_at_every_round_is_logged_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Gossip calls its targets at once; a bug in one call was logged at every round, for
    # good, where a periodic task's failure is logged once a minute (a review of the fixes).
    node = Node(PeerConfig(data_dir=tmp_path / "s", port=0, mdns=False))
    node.peers.add_seed("127.0.0.1:9")

    async def answers(addr: str, op: str, body: object, to: object = None) -> object:
        return {}

    def broken(*args: object, **kw: object) -> None:
        raise ValueError("a bug in merging a reply")

    node.client.call = answers  # type: ignore[method-assign]
    node.peers.merge_gossip = broken  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.INFO, logger="metaopt"):
            for _ in range(10):  # ten rounds, 1-2 s of a peer's life at the default timings
                await node._round(node._gossip)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, f"{len(errors)} ERROR lines in 10 rounds"
        assert errors[0].exc_info is not None  # (with its traceback)
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_bug_in_one_gossip_call_does_not_keep_the_others_news_from_the_peers_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Raised for the round (above), it skipped the peers file and the liveness lines of the
    # peers that did answer, at every round while it lasted (a review of the fixes).
    node = Node(PeerConfig(data_dir=tmp_path / "s", port=0, mdns=False))
    other = bytes(range(len(node.node_id)))
    node.peers.add_seed("127.0.0.1:9")  # the target whose call meets the bug

    async def call(addr: str, op: str, body: object = None, to: object = None) -> object:
        if addr == "127.0.0.1:9":
            raise ValueError("a bug in one call")
        return [[other, "127.0.0.1:8", 0.0]]

    node.client.call = call  # type: ignore[method-assign]
    node.peers.add(other, "127.0.0.1:8", node.monotonic(), contacted=True)  # live, talking
    try:
        with caplog.at_level(logging.INFO, logger="metaopt"):
            for _ in range(3):
                await node._round(node._gossip)
        assert node.dirs.read_peers() == ["127.0.0.1:8"], "peers file never written"
        assert f"peer {other.hex()[:8]} at 127.0.0.1:8 is live" in caplog.text
    finally:
        await node.stop()
