"""Replication behaviour a mutation audit found unpinned: batching, fanout, later pushes,
the session bookkeeping the node's refusals rest on, and the choice of an anti-entropy partner."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import msgpack
import pytest

from crdt import MemoryStore, Record, SyncConfig, respond
from metaopt.peer._gossip import PeerTable
from metaopt.peer._replication import Replicator, _batches
from metaopt.peer._transport import PeerUnreachable, RemoteError
from tests.metaopt.peer.test_replication import Answers, fake_session

A, B, C, D = (bytes([i]) * 16 for i in (1, 2, 3, 4))
ME = bytes(16)
TIMEOUT = 2.0


def _replicator(table: PeerTable, client: Any, now: float, fanout: int = 4) -> Replicator:
    return Replicator(
        MemoryStore(),
        ME,
        table,
        client,
        clock=lambda: now,
        rng=random.Random(0),
        push_fanout=fanout,
        peer_timeout=TIMEOUT,
    )


class _Pushes:
    """A Client that records which address got which pushed records, after a few ticks (as a
    real call would take), and answers b"ack"."""

    def __init__(self) -> None:
        self.got: list[tuple[str, list[bytes]]] = []

    async def call(
        self, addr: str, op: str, body: Any = None, to: Any = None, deferrable: bool = False
    ) -> Any:
        for _ in range(3):
            await asyncio.sleep(0)
        self.got.append((addr, list(msgpack.unpackb(body)["p"])))
        return b"ack"


def _mine(seq: int) -> Record:
    return Record.create("event", ME, seq, 1000 + seq, {"i": seq})


def test_push_batches_start_their_byte_count_afresh() -> None:
    """Each batch is filled up to the byte limit on its own: a batch that carried the previous
    one's size over sent every later record alone, one message each."""
    records = [Record.create("blob", A, seq, 1000, {"b": b"x" * 900}) for seq in range(1, 6)]
    size = len(records[0].data)
    assert all(len(r.data) == size for r in records)
    limit = 2 * size + size // 2
    assert _batches(records, limit, 100) == [records[:2], records[2:4], records[4:]]
    # A record bigger than the limit travels alone, and no batch is ever empty.
    assert _batches(records[:2], size // 2, 100) == [records[:1], records[1:2]]


def test_a_push_goes_to_as_many_live_peers_as_the_fanout_allows() -> None:
    """Push is the fast path: with a fanout of 2 and three live peers, two distinct peers hear
    of a new record at once (not one), and with a larger fanout every live peer does."""

    async def push(fanout: int) -> list[str]:
        table = PeerTable()
        for i, node in enumerate((A, B, C)):
            table.add(node, f"127.0.0.1:100{i + 1}", 10.0, contacted=True)
        table.add(D, "127.0.0.1:1004", 0.0, contacted=True)  # silent: never pushed to
        client = _Pushes()
        rep = _replicator(table, client, 10.0, fanout)
        rep.push([_mine(1)])
        await asyncio.sleep(0)
        await rep.drain(timeout=5)
        return [addr for addr, _ in client.got]

    two = asyncio.run(push(2))
    assert len(two) == 2 and len(set(two)) == 2 and "127.0.0.1:1004" not in two
    assert sorted(asyncio.run(push(4))) == ["127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"]


def test_records_written_after_a_push_went_out_are_pushed_too() -> None:
    """Pushes are coalesced per loop tick, but only per tick: a record written after the first
    push was sent must go out eagerly as well, not wait for anti-entropy."""

    async def two_writes() -> list[list[bytes]]:
        table = PeerTable()
        table.add(B, "127.0.0.1:1002", 10.0, contacted=True)
        client = _Pushes()
        rep = _replicator(table, client, 10.0)
        rep.push([_mine(1)])
        rep.push([_mine(2)])  # same tick: one message
        for _ in range(10):
            await asyncio.sleep(0)
        rep.push([_mine(3)])  # a later tick: its own message, sent without a drain
        for _ in range(10):
            await asyncio.sleep(0)
        return [records for _, records in client.got]

    assert asyncio.run(two_writes()) == [[_mine(1).data, _mine(2).data], [_mine(3).data]]


def test_drain_waits_for_pushes_still_on_the_wire() -> None:
    """A graceful stop drains its pushes: the records written just before it reach the peer
    even when the call takes a few ticks to answer."""

    async def stop_right_after_writing() -> list[tuple[str, list[bytes]]]:
        table = PeerTable()
        table.add(B, "127.0.0.1:1002", 10.0, contacted=True)
        client = _Pushes()
        rep = _replicator(table, client, 10.0)
        rep.push([_mine(1)])
        await rep.drain(timeout=5)
        return client.got

    assert asyncio.run(stop_right_after_writing()) == [("127.0.0.1:1002", [_mine(1).data])]


def test_a_push_the_peer_refuses_is_dropped_quietly() -> None:
    """A refused push (RemoteError) is anti-entropy's job to repair; it must not escape the
    push task (an unretrieved task exception, logged as an error at shutdown)."""

    class _Refuses:
        async def call(
            self, addr: str, op: str, body: Any = None, to: Any = None, deferrable: bool = False
        ) -> Any:
            raise RemoteError("refused")

    rep = _replicator(PeerTable(), _Refuses(), 0.0)
    assert asyncio.run(rep._push("127.0.0.1:1002", b"x")) is None


def test_a_session_stays_under_way_while_another_with_the_same_peer_runs() -> None:
    """The node refuses a peer's session while it has one of its own with that peer: with
    two of this peer's sessions with it overlapping, the first ending must not make the
    second look finished (a catch-up would then cross the wire twice), and both ending must
    (else that peer's sessions were refused for good)."""
    gates: list[asyncio.Event] = []

    class _Slow:
        async def call(
            self, addr: str, op: str, body: Any = None, to: Any = None, deferrable: bool = False
        ) -> Any:
            gate = asyncio.Event()
            gates.append(gate)
            await gate.wait()
            raise PeerUnreachable("gone")

    async def overlap() -> None:
        rep = _replicator(PeerTable(), _Slow(), 0.0)
        addr = "127.0.0.1:1002"
        first = asyncio.ensure_future(rep.reconcile(addr))
        second = asyncio.ensure_future(rep.reconcile(addr))
        while len(gates) < 2:
            await asyncio.sleep(0)
        assert rep.in_session_with(addr)
        gates[0].set()
        assert await first is False
        assert rep.in_session_with(addr)  # the second still runs
        gates[1].set()
        assert await second is False
        assert not rep.in_session_with(addr)
        assert not rep.in_session_with("127.0.0.1:1003")

    asyncio.run(overlap())


def test_anti_entropy_prefers_a_live_peer_to_a_seed() -> None:
    """Seeds are a fallback for a peer that knows no live one: with a live peer known, a
    session with the --join address would miss what the live peers hold (and a dead seed
    would waste every round)."""
    table = PeerTable()
    table.add_seed("127.0.0.1:1009")
    table.add(B, "127.0.0.1:1002", 9.5, contacted=True)
    calls: list[str] = []

    class _Nobody:
        async def call(
            self, addr: str, op: str, body: Any = None, to: Any = None, deferrable: bool = False
        ) -> Any:
            calls.append(addr)
            raise PeerUnreachable("no answer")

    for _ in range(5):
        asyncio.run(_replicator(table, _Nobody(), 10.0).anti_entropy_once())
    assert calls == ["127.0.0.1:1002"] * 5


def test_a_burst_of_large_records_is_pushed_in_pieces_under_the_message_limit() -> None:
    """A reconciliation message carries at most max_message_bytes (4 MiB) of records: five
    records of 900 KiB (a code bundle's blobs) go as several pushes, each under it, and all
    of them arrive."""
    far = MemoryStore()
    sizes: list[int] = []

    class _Receiver:
        async def call(
            self, addr: str, op: str, body: Any = None, to: Any = None, deferrable: bool = False
        ) -> Any:
            sizes.append(sum(len(data) for data in msgpack.unpackb(body)["p"]))
            return respond(far, body)

    blobs = [Record.create("blob", ME, seq, 1000, {"b": bytes([seq]) * 900_000})
             for seq in range(1, 6)]  # fmt: skip

    async def burst() -> None:
        table = PeerTable()
        table.add(B, "127.0.0.1:1002", 10.0, contacted=True)
        rep = _replicator(table, _Receiver(), 10.0)
        rep.push(blobs)
        await rep.drain(timeout=30)

    asyncio.run(burst())
    assert len(far) == len(blobs)
    assert len(sizes) >= 2 and max(sizes) <= SyncConfig().max_message_bytes


def test_others_records_heard_outside_an_event_loop_are_ignored() -> None:
    """on_new is a store subscriber: records of other origins only (nothing to push) added
    while no event loop runs must not raise out of the store's add."""
    rep = _replicator(PeerTable(), _Pushes(), 0.0)
    rep.on_new([Record.create("event", A, 1, 1000, {"i": 1})])
    rep.on_new([])


@pytest.mark.parametrize("fault", [PeerUnreachable, RemoteError])
def test_a_failed_session_is_not_counted_and_returns_false(fault: type[Exception]) -> None:
    """An unreachable or refusing partner: no session counted, and no address returned for
    the node to mark as reached."""

    class _Fails:
        async def call(
            self, addr: str, op: str, body: Any = None, to: Any = None, deferrable: bool = False
        ) -> Any:
            raise fault("no")

    table = PeerTable()
    table.add(B, "127.0.0.1:1002", 10.0, contacted=True)
    rep = _replicator(table, _Fails(), 10.0)
    assert asyncio.run(rep.anti_entropy_once()) is None and rep.sessions == 0


def test_a_partner_that_completed_a_session_is_live_again(monkeypatch: Any) -> None:
    monkeypatch.setattr("metaopt.peer._replication.Initiator", fake_session(True))
    table = PeerTable()
    table.add(A, "127.0.0.1:1001", 0.0, contacted=True)  # silent by t=10
    rep = _replicator(table, Answers(), 10.0)  # type: ignore[arg-type]
    assert not table.is_alive(A, 10.0, 2.0)
    assert asyncio.run(rep.anti_entropy_once()) == "127.0.0.1:1001"
    assert table.is_alive(A, 10.0, 2.0)
