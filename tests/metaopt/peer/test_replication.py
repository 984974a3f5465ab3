"""Anti-entropy picks a partner even when nobody is live and no seed was given."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from crdt import MemoryStore, Record, respond
from metaopt.peer._gossip import PeerTable
from metaopt.peer._replication import Replicator, _batches
from metaopt.peer._transport import PeerUnreachable

A, B = (bytes([i]) * 16 for i in (1, 2))
TIMEOUT = 2.0


class _Recorder:
    """A Client that reaches nobody and remembers whom it was asked to call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.deferrable: list[bool] = []  # each call's

    async def call(
        self, addr: str, op: str, body: Any = None, to: Any = None, deferrable: bool = False
    ) -> Any:
        self.calls.append((addr, op))
        self.deferrable.append(deferrable)
        raise PeerUnreachable(f"no answer from {addr}")


def _replicator(table: PeerTable, client: _Recorder, now: float) -> Replicator:
    return Replicator(
        MemoryStore(),
        bytes(16),
        table,
        client,  # type: ignore[arg-type]
        clock=lambda: now,
        rng=random.Random(0),
        push_fanout=4,
        peer_timeout=TIMEOUT,
    )


def test_with_every_peer_silent_and_no_seed_anti_entropy_still_calls_one() -> None:
    # Peers found by mDNS are no seeds: after a stall longer than the timeout each counts the
    # others dead, and only such a call lets the cluster find itself again.
    table = PeerTable()
    table.add(A, "127.0.0.1:1001", 0.0, contacted=True)
    table.add(B, "127.0.0.1:1002", 0.0, contacted=True)
    client = _Recorder()
    assert asyncio.run(_replicator(table, client, 10.0).anti_entropy_once()) is None
    assert client.calls and client.calls[0][0] in ("127.0.0.1:1001", "127.0.0.1:1002")


def test_a_live_peer_is_preferred_to_a_silent_one() -> None:
    table = PeerTable()
    table.add(A, "127.0.0.1:1001", 0.0, contacted=True)
    table.add(B, "127.0.0.1:1002", 9.5, contacted=True)
    client = _Recorder()
    asyncio.run(_replicator(table, client, 10.0).anti_entropy_once())
    assert client.calls == [("127.0.0.1:1002", "sync")]


def _flooded(now: float) -> PeerTable:
    """A table that talked to A, and heard from a peer's gossip of 1,000 ids live at
    addresses where nothing answers (a buggy release, or a hostile peer with the key)."""
    table = PeerTable()
    table.add(A, "127.0.0.1:1001", now, contacted=True)
    fakes = [
        [bytes([i >> 8, i & 255]) * 8, f"127.1.{i >> 8}.{i & 255}:9", 0.0] for i in range(1000)
    ]
    for start in range(0, len(fakes), 200):  # (a gossip message carries at most 256)
        assert table.merge_gossip(fakes[start : start + 200], now) == 200
    return table


def test_records_go_to_a_peer_talked_to_before_ones_only_heard_of() -> None:
    # Drawn from every live peer, nearly every push and anti-entropy session went to the
    # made-up ids: an experiment took 110 s to reach the next peer instead of 0.2 s.
    for seed in range(20):
        client = _Recorder()
        rep = _replicator(_flooded(10.0), client, 10.0)
        rep._rng = random.Random(seed)
        asyncio.run(rep.anti_entropy_once())
        assert client.calls == [("127.0.0.1:1001", "sync")]
    pushed = _Recorder()
    rep = _replicator(_flooded(10.0), pushed, 10.0)

    async def push() -> None:
        rep.on_new([Record.create("event", bytes(16), 1, 1000, {"i": 1})])
        await asyncio.sleep(0)
        await rep.drain(timeout=5)

    asyncio.run(push())
    # The fanout (4) made up from the others: one only heard of may be a real peer not yet
    # called (its gossip rounds call it soon).
    assert len(pushed.calls) == 4 and ("127.0.0.1:1001", "sync") in pushed.calls
    # Unheard-from past the timeout, A is one of the rest.
    client = _Recorder()
    table = _flooded(10.0)
    table.merge_gossip([[A, "127.0.0.1:1001", 0.0]], 10.0 + 2 * TIMEOUT)
    rep = _replicator(table, client, 10.0 + 2 * TIMEOUT)
    asyncio.run(rep.anti_entropy_once())
    assert len(client.calls) == 1


def fake_session(converged: bool, covered: bool | None = None) -> type:
    """A stand-in for the sans-IO Initiator: one round, converged or given up (having
    brought all the partner held when it began, or not)."""
    fields = {
        "converged": converged,
        "covered": converged if covered is None else covered,
        "phase": "fast" if converged else "gave-up",
        "round_trips": 1,
        "records_received": 0,
        "records_sent": 0,
    }

    class _Session:
        def __init__(self, store: Any) -> None:
            self.stats = type("Stats", (), fields)()

        def start(self) -> bytes:
            return b"open"

        def receive_steps(self, reply: bytes) -> Iterator[None]:
            return None
            yield

    return _Session


class Answers:
    """A peer that answers every call."""

    async def call(
        self, addr: str, op: str, body: Any = None, to: Any = None, deferrable: bool = False
    ) -> Any:
        return b"reply"


def test_only_a_session_that_brought_the_partners_history_counts_as_caught_up(
    monkeypatch: Any,
) -> None:
    # A session that gave up short of what the partner held proves nothing about what this
    # replica holds; one that gave up with all of it here (the sets kept apart by records in
    # flight, as in any busy cluster) does, as a converged one does.
    monkeypatch.setattr("metaopt.peer._replication.Initiator", fake_session(False))
    rep = _replicator(PeerTable(), Answers(), 0.0)  # type: ignore[arg-type]
    assert asyncio.run(rep.reconcile("127.0.0.1:1001")) and rep.sessions == 0
    monkeypatch.setattr("metaopt.peer._replication.Initiator", fake_session(False, True))
    assert asyncio.run(rep.reconcile("127.0.0.1:1001")) and rep.sessions == 1
    monkeypatch.setattr("metaopt.peer._replication.Initiator", fake_session(True))
    assert asyncio.run(rep.reconcile("127.0.0.1:1002")) and rep.sessions == 2
    assert rep.last_covered == "127.0.0.1:1002"  # (named when the peer says it caught up)
    monkeypatch.setattr("metaopt.peer._replication.Initiator", fake_session(False))
    assert asyncio.run(rep.reconcile("127.0.0.1:1003")) and rep.last_covered == "127.0.0.1:1002"


def test_a_burst_of_many_small_records_is_pushed_in_pieces_the_receiver_takes() -> None:
    # 20,000 progress events fit in 2 MiB, but a push of more than max_records (16,384) is
    # refused whole, and the receiver says so only in its debug log.
    far = MemoryStore()

    class _Receiver:
        async def call(
            self, addr: str, op: str, body: Any = None, to: Any = None, deferrable: bool = False
        ) -> Any:
            return respond(far, body)

    events = [Record.create("event", A, seq, 1000 + seq, {"s": seq}) for seq in range(1, 20001)]
    assert sum(len(r.data) for r in events) < 2 << 20

    async def burst() -> None:
        table = PeerTable()
        table.add(B, "127.0.0.1:1002", 10.0, contacted=True)
        rep = _replicator(table, _Receiver(), 10.0)  # type: ignore[arg-type]
        rep.push(events)
        await rep.drain(timeout=30)

    asyncio.run(burst())
    assert len(far) == len(events)


def test_this_peers_own_disk_refusing_a_session_s_records_is_not_the_partners_fault() -> None:
    # Swallowed as "anti-entropy aborted" every round, it never reached the node's hold: a
    # peer catching up on a full disk kept answering its peers.
    from crdt import StoreWriteFailed

    theirs = MemoryStore()
    theirs.add([Record.create("event", A, 1, 1, {"i": 1})])

    class _Answers:
        async def call(
            self, addr: str, op: str, body: Any = None, to: Any = None, deferrable: bool = False
        ) -> Any:
            return respond(theirs, body)

    rep = _replicator(PeerTable(), _Answers(), 0.0)  # type: ignore[arg-type]

    def full(records: Any) -> Any:
        raise StoreWriteFailed("cannot write the store: No space left on device", "full")

    rep.store.add = full  # type: ignore[method-assign]
    with pytest.raises(StoreWriteFailed):
        asyncio.run(rep.reconcile("127.0.0.1:1001"))


def test_a_partner_that_breaks_every_session_is_warned_of_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A faulty (or hostile) peer broke every session with it: a warning twice a second on
    # every peer, for good.
    class _Garbage:
        async def call(
            self, addr: str, op: str, body: Any = None, to: Any = None, deferrable: bool = False
        ) -> Any:
            return b"\xc1 not a sync message" if addr.endswith("1") else {"not": "bytes"}

    rep = _replicator(PeerTable(), _Garbage(), 0.0)  # type: ignore[arg-type]
    with caplog.at_level("DEBUG", logger="metaopt.peer"):
        for _ in range(5):
            for addr in ("127.0.0.1:1001", "127.0.0.1:1002"):
                assert asyncio.run(rep.reconcile(addr)) is False
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 2 and all("(said once)" in w for w in warned)
    assert "127.0.0.1:1001" in warned[0] and "not bytes" in warned[1]
    assert sum("aborted" in r.getMessage() for r in caplog.records) == 10


def test_a_catch_up_message_is_stored_in_slices_with_the_loop_running_between() -> None:
    # 16,384 records a message, decoded, stored and folded in one go, held the joining peer's
    # event loop for most of a second each; heartbeats and API calls waited.
    theirs = MemoryStore()
    theirs.add([Record.create("event", A, seq, 1000 + seq, {"s": seq}) for seq in range(1, 5001)])

    class _Answers:
        async def call(
            self, addr: str, op: str, body: Any = None, to: Any = None, deferrable: bool = False
        ) -> Any:
            return respond(theirs, body)

    ticks = 0
    seen: list[int] = []  # the ticker's count at each batch stored

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async def catch_up() -> None:
        rep = _replicator(PeerTable(), _Answers(), 0.0)  # type: ignore[arg-type]
        rep.store.subscribe(lambda new: seen.append(ticks))
        task = asyncio.ensure_future(ticker())
        assert await rep.reconcile("127.0.0.1:1001")
        task.cancel()
        assert len(rep.store) == len(theirs)

    asyncio.run(catch_up())
    assert len(seen) >= 3 and len(set(seen)) == len(seen)


def test_only_this_nodes_own_new_records_are_pushed() -> None:
    # Records received from others reach this store too, and were pushed on again: every push
    # bounced through each receiver's peers, a cluster's traffic multiplied by its fanout.
    mine = Record.create("event", bytes(16), 1, 1000, {"i": 1})  # the replicator's node id
    theirs = Record.create("event", A, 1, 1000, {"i": 2})
    pushed: list[list[bytes]] = []

    class _Receiver:
        async def call(
            self, addr: str, op: str, body: Any = None, to: Any = None, deferrable: bool = False
        ) -> Any:
            pushed.append(list(msgpack.unpackb(body)["p"]))
            return b"ack"

    async def hear(records: list[Record]) -> None:
        table = PeerTable()
        table.add(B, "127.0.0.1:1002", 10.0, contacted=True)
        rep = _replicator(table, _Receiver(), 10.0)  # type: ignore[arg-type]
        rep.on_new(records)
        await asyncio.sleep(0)
        await rep.drain(timeout=5)

    asyncio.run(hear([theirs]))
    assert pushed == []
    asyncio.run(hear([theirs, mine]))
    assert pushed == [[mine.data]]


def test_a_push_batch_stays_under_its_byte_limit() -> None:
    # A record that would take a batch past the limit starts the next batch: checking the
    # size before adding it let a batch grow to the limit plus one record (past the 4 MiB a
    # receiver takes, with records near the 1 MiB cap).
    records = [Record.create("blob", A, seq, 1000, {"b": b"x" * 900}) for seq in range(1, 4)]
    size = len(records[0].data)
    assert all(len(r.data) == size for r in records)
    batches = _batches(records, limit=2 * size + size // 2, count=100)
    assert batches == [records[:2], records[2:]]
    assert _batches(records, limit=3 * size, count=100) == [records]  # the limit itself fits
    assert _batches(records, limit=3 * size, count=2) == [records[:2], records[2:]]


# ------------------------------------------------------ a partner that could not be reached

LIVE, OTHER, SEED = "127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1009"


class _FailsAt:
    """A Client that cannot reach the addresses in ``down`` and answers the rest from an
    empty store; it notes whom it called."""

    def __init__(self, down: set[str]) -> None:
        self.down = down
        self.far = MemoryStore()
        self.calls: list[str] = []

    async def call(
        self, addr: str, op: str, body: Any = None, to: Any = None, deferrable: bool = False
    ) -> Any:
        self.calls.append(addr)
        if addr in self.down:
            raise PeerUnreachable(f"no answer from {addr} (ServerTimeoutError)")
        return respond(self.far, body)


def test_a_partner_that_could_not_be_reached_is_passed_over_in_the_next_round() -> None:
    # One cut off by a partition could be drawn again and again, each time given up only
    # after the connect timeout, while a live partner that answers was known.
    first_down = 0
    for seed in range(20):
        table = PeerTable()
        table.add(A, LIVE, 10.0, contacted=True)
        table.add(B, OTHER, 10.0, contacted=True)
        client = _FailsAt({LIVE})
        rep = _replicator(table, client, 10.0)  # type: ignore[arg-type]
        rep._rng = random.Random(seed)
        done = [asyncio.run(rep.anti_entropy_once()) for _ in range(2)]
        if client.calls[0] == LIVE:
            first_down += 1
            assert client.calls == [LIVE, OTHER] and done == [None, OTHER]
    assert 0 < first_down < 20  # (both orders were drawn)


def test_the_only_live_partner_is_called_again_though_it_failed_not_a_seed() -> None:
    # (See test_anti_entropy_prefers_a_live_peer_to_a_seed: with a live peer known, a session
    # with the --join address would miss what the live peers hold.)
    table = PeerTable()
    table.add(A, LIVE, 10.0, contacted=True)
    table.add_seed(SEED)
    client = _FailsAt({LIVE})
    rep = _replicator(table, client, 10.0)  # type: ignore[arg-type]
    for _ in range(3):
        assert asyncio.run(rep.anti_entropy_once()) is None
    assert client.calls == [LIVE] * 3
    client.down.clear()
    assert asyncio.run(rep.anti_entropy_once()) == LIVE


def test_a_session_s_messages_may_be_put_off_by_their_receiver_and_pushes_not() -> None:
    # A peer catching up and reading one large body answers another's session unread
    # (Server._put_off). Not a push: the pieces of one burst (a code bundle) arrive together,
    # and each put off the next (a review: 10 of 30 records of a 6 MiB burst arrived).
    table = PeerTable()
    table.add(A, "127.0.0.1:1001", 9.5, contacted=True)
    client = _Recorder()

    async def push_and_reconcile() -> None:
        replicator = _replicator(table, client, 10.0)
        replicator.push([Record.create("event", bytes(16), 1, 1000, {"s": 1})])
        await asyncio.sleep(0)  # (the push goes out at the next tick)
        await replicator.drain(5.0)
        await replicator.anti_entropy_once()

    asyncio.run(push_and_reconcile())
    assert client.calls == [("127.0.0.1:1001", "sync")] * 2
    assert client.deferrable == [False, True]
