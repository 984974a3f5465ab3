"""Peers syncing: two at once carry a catch-up once; a partner cut off does not hold it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable
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


def padded(origin: bytes, count: int) -> list[Record]:
    """count records of origin (repeated to 16 bytes), about 370 bytes each."""
    return [
        Record.create("event", origin * 16, seq, 1000 + seq, {"pad": "x" * 300})
        for seq in range(1, count + 1)
    ]


class _Links:
    """Slow links to a test's peers (closed at its end: see started)."""

    def __init__(self) -> None:
        self.relays: list[asyncio.Server] = []

    async def slow(self, to: Node, chunk: int, pause: float, *, requests_too: bool = False) -> str:
        """The address of a slow link to the peer (see test_transport._slow_link)."""
        from tests.metaopt.peer.test_transport import _slow_link

        port = int(to.addr.rpartition(":")[2])
        relay, addr = await _slow_link(port, chunk, pause, requests_too=requests_too)
        self.relays.append(relay)
        return addr


@contextlib.asynccontextmanager
async def started(*peers: Node) -> AsyncIterator[_Links]:
    """The peers started, and stopped at the end (those that started), with the slow links
    made to them closed then."""
    running: list[Node] = []
    links = _Links()
    try:
        for peer in peers:
            await peer.start()
            running.append(peer)
        yield links
    finally:
        for peer in running:
            await peer.stop()
        for relay in links.relays:
            relay.close()


async def until(done: Callable[[], object], seconds: float, every: float = 0.1) -> None:
    """Poll done() until it holds or ``seconds`` pass (the test asserts it after)."""
    for _ in range(max(1, round(seconds / every))):
        if done():
            return
        await asyncio.sleep(every)


def joining(data_dir: Path, key: str, timing: Timing) -> Node:
    """A node on loopback of the cluster of key, its rounds on timing."""
    return Node(PeerConfig(data_dir=data_dir, port=0, mdns=False, key_text=key, timing=timing))


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


def blackhole() -> tuple[socket.socket, list[socket.socket], str]:
    """A listening socket whose accept queue is full: a new connection's SYN is dropped, as a
    partner cut off by a partition drops it (the caller waits for a handshake that never
    comes). Close the sockets after."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fill = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fill.append(filler)
    return server, fill, f"127.0.0.1:{port}"


@pytest.mark.asyncio
async def test_a_partner_cut_off_does_not_hold_a_catch_up(tmp_path: Path) -> None:
    # Each session with it waiting the request timeout, a partner cut off by a partition held
    # anti-entropy that long: a peer restarted beside one caught up in 12.3-12.6 s, not 2.7-2.9.
    server, fill, cut_off = blackhole()
    full = quiet_node(tmp_path / "full")
    joiner = Node(
        PeerConfig(
            data_dir=tmp_path / "joiner",
            port=0,
            mdns=False,
            key_text=full.key.to_text(),
            timing=Timing(
                anti_entropy=0.2, gossip=600.0, request_timeout=600.0, connect_timeout=0.5
            ),
        )
    )
    history = [Record.create("event", b"\x05" * 16, seq, 1000 + seq, {"s": seq})
               for seq in range(1, 101)]  # fmt: skip
    full.store.add(history)
    running: list[Node] = []
    try:
        for peer in (full, joiner):
            await peer.start()
            running.append(peer)
        joiner.peers.add(b"\x09" * 16, cut_off, time.monotonic(), contacted=True)
        for _ in range(300):  # (30 s at most)
            if joiner.replicator.in_session_with(cut_off):
                break
            await asyncio.sleep(0.1)
        assert joiner.replicator.in_session_with(cut_off)
        joiner.peers.add(full.node_id, full.addr, time.monotonic(), contacted=True)
        for _ in range(300):  # (the request timeout is 600 s)
            if len(joiner.store) >= len(history):
                break
            await asyncio.sleep(0.1)
        assert len(joiner.store) >= len(history)
    finally:
        for peer in running:
            await peer.stop()
        for sock in (server, *fill):
            sock.close()


@pytest.mark.asyncio
async def test_a_history_that_crosses_a_slow_link_slower_than_the_request_timeout_comes(
    tmp_path: Path,
) -> None:
    # A call bounded as a whole by the request timeout gave up every answer still coming
    # over a slow link (5 Mbit/s, several partners sending at once): a joiner's own sessions
    # failed one after another, their bytes sent for nothing. It waits request_timeout for
    # each next bytes of an answer, and transfer_timeout in all.
    full = quiet_node(tmp_path / "full")
    timing = Timing(anti_entropy=0.2, gossip=600.0, request_timeout=1.0, transfer_timeout=60.0)
    joiner = joining(tmp_path / "joiner", full.key.to_text(), timing)
    history = padded(b"\x05", 400)  # (about 150 KB: 4 s over the link)
    full.store.add(history)
    async with started(full, joiner) as links:
        slow = await links.slow(full, 4096, 0.1)
        joiner.peers.add(full.node_id, slow, time.monotonic(), contacted=True)
        await until(lambda: len(joiner.store) >= len(history), 30.0)
        assert len(joiner.store) >= len(history)
        assert joiner.replicator.sessions >= 1  # (its own session brought it)


@pytest.mark.asyncio
async def test_a_peer_reading_a_large_answer_puts_off_another_peers_records_till_it_is_read(
    tmp_path: Path,
) -> None:
    # A joiner over a slow link was sent its history by every peer at once, 4 MiB messages
    # sharing the link: over 1 Mbit/s each took longer than the transfer timeout, was given
    # up and sent again, and the joiner stalled at a third of the history. While it reads one
    # large body, another peer's records are answered unread, and that peer tries later.
    full = quiet_node(tmp_path / "full")
    key = full.key.to_text()
    other = quiet_node(tmp_path / "other", key)
    timing = Timing(
        anti_entropy=0.2, gossip=600.0, request_timeout=5.0, transfer_timeout=60.0,
        peer_timeout=3.0,  # (its twin check waits that long without gossip)
    )  # fmt: skip
    joiner = joining(tmp_path / "joiner", key, timing)
    ours, theirs = padded(b"\x05", 400), padded(b"\x06", 400)  # (150 KB each: 8 s over the link)
    full.store.add(ours)
    other.store.add(theirs)
    async with started(full, other, joiner) as links:
        slow = await links.slow(full, 4096, 0.2)
        joiner.peers.add(full.node_id, slow, time.monotonic(), contacted=True)
        await until(lambda: joiner.client.receiving, 3.0, every=0.01)
        assert joiner.client.receiving  # its own session's answer is coming
        assert not await other.replicator.reconcile(joiner.addr, to=joiner.node_id)
        assert joiner.server.put_off == 1 and joiner.client.receiving
        assert not any(r.key in joiner.store for r in theirs)
        await until(lambda: len(joiner.store) >= len(ours), 30.0)
        assert all(r.key in joiner.store for r in ours)
        await until(joiner.caught_up, 10.0)  # (its session ends a round trip later)
        assert joiner.caught_up()  # (its own session brought all its partner held)
        # Caught up, it takes them while it reads another answer: once caught up, one slow
        # transfer held a near peer's records back for all of it (a review).
        joiner.client.receiving += 1
        try:
            assert await other.replicator.reconcile(joiner.addr, to=joiner.node_id)
        finally:
            joiner.client.receiving -= 1
        assert all(r.key in joiner.store for r in theirs) and joiner.server.put_off == 1


@pytest.mark.asyncio
async def test_a_joiner_is_not_caught_up_between_an_answer_s_last_byte_and_its_records(
    tmp_path: Path,
) -> None:
    # Past the peer timeout, with no record arrived for 4 s, a joiner whose one large body
    # was its own session's answer said it was caught up once that answer was read, before
    # its records were stored: holding none of the history (1 of 2 runs at 1 Mbit/s, a review).
    full = quiet_node(tmp_path / "full")
    history = padded(b"\x05", 8000)  # (about 3 MB: 5 s over the link)
    full.store.add(history)
    timing = Timing(anti_entropy=0.5, gossip=600.0, peer_timeout=2.0, request_timeout=5.0)
    joiner = joining(tmp_path / "joiner", full.key.to_text(), timing)
    partial: list[int] = []  # records held when it was found caught up short of the history
    async with started(full, joiner) as links:
        slow = await links.slow(full, 65536, 0.1)
        joiner.peers.add(full.node_id, slow, time.monotonic(), contacted=True)
        began = time.monotonic()
        while len(joiner.store) < len(history) and time.monotonic() - began < 60:
            if joiner.catch_up._because() is not None:  # (at every turn of the loop)
                partial.append(len(joiner.store))
            await asyncio.sleep(0)
        assert len(joiner.store) == len(history)
        assert partial == []


@pytest.mark.asyncio
async def test_catching_up_a_peer_takes_in_one_large_message_of_records_at_a_time(
    tmp_path: Path,
) -> None:
    # Over 1 Mbit/s two 4 MiB messages side by side (its own session's answer and another
    # peer's session) each outlast the transfer timeout, as three did: 52 MB crossed for a
    # history of 15, and the joiner took itself for caught up at 74% of it.
    full = quiet_node(tmp_path / "full")
    other = quiet_node(tmp_path / "other", full.key.to_text())
    joiner = quiet_node(tmp_path / "joiner", full.key.to_text())
    other.store.add(padded(b"\x06", 400))  # (about 150 KB)
    calls: list[str] = []
    async with started(full, other, joiner):
        assert not joiner.catch_up.judged_caught_up
        joiner.replicator._partners[full.addr] = 1  # (a session of its own under way)
        assert not await other.replicator.reconcile(joiner.addr, to=joiner.node_id)
        assert joiner.server.put_off == 1 and len(joiner.store) == 0
        del joiner.replicator._partners[full.addr]

        async def counted() -> str | None:
            calls.append("session")
            return None

        joiner.replicator.anti_entropy_once = counted  # type: ignore[method-assign]
        joiner.server.receiving += 1  # (another peer's message being read)
        await joiner._anti_entropy()
        assert calls == []  # (its own waits a round)
        joiner.server.receiving -= 1
        await joiner._anti_entropy()
        assert calls == ["session"]
        assert await other.replicator.reconcile(joiner.addr, to=joiner.node_id)
        assert len(joiner.store) == 400


@pytest.mark.asyncio
async def test_a_joiner_is_not_caught_up_between_a_request_s_last_byte_and_its_records(
    tmp_path: Path,
) -> None:
    # The same gap when the history comes as another peer's session requests: between a
    # request's last byte and its records the joiner held none of them (a review).
    full = quiet_node(tmp_path / "full")
    history = padded(b"\x05", 8000)
    full.store.add(history)
    timing = Timing(anti_entropy=600.0, gossip=600.0, peer_timeout=1.0, request_timeout=5.0)
    joiner = Node(
        PeerConfig(
            data_dir=tmp_path / "joiner", port=0, mdns=False, key_text=full.key.to_text(),
            timing=timing, join=("127.0.0.1:9",),  # (a seed: not alone; nobody there)
        )
    )  # fmt: skip
    partial: list[int] = []  # records held when it was found caught up short of the history
    async with started(full, joiner) as links:
        await asyncio.sleep(1.5)  # (past its peer timeout, no record arrived)
        slow = await links.slow(joiner, 65536, 0.1, requests_too=True)
        session = asyncio.ensure_future(full.replicator.reconcile(slow, to=joiner.node_id))
        began = time.monotonic()
        crossing = False  # (from the first byte of its large message on)
        while not session.done() and time.monotonic() - began < 60:
            crossing = crossing or joiner.server.receiving > 0
            short = crossing and len(joiner.store) < len(history)
            if short and joiner.catch_up._because() is not None:  # (at every turn of the loop)
                partial.append(len(joiner.store))
            await asyncio.sleep(0)
        assert await session
        assert len(joiner.store) == len(history)
        assert partial == []
