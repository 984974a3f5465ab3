"""A peer that stops gracefully says so: its peers count it gone at once, not a timeout later."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from metaopt.peer._config import PeerConfig
from metaopt.peer._node import Node
from metaopt.peer._transport import Server

pytestmark = pytest.mark.integration

OLDER = b"\x07" * 16  # a peer of a release before "leave"


def _node_on(
    root: Path,
    clock: Callable[[], float],
    name: str,
    key: str | None = None,
    join: tuple[str, ...] = (),
) -> Node:
    """A node on loopback with its data directory under root, on the test's clock."""
    config = PeerConfig(data_dir=root / name, port=0, mdns=False, key_text=key, join=join)
    return Node(config, clock=clock, monotonic=clock)


@pytest.mark.asyncio
async def test_a_stopped_peer_is_gone_at_once_until_it_speaks_again(tmp_path: Path) -> None:
    # Peers showed a stopped peer live for peer_timeout (30 s): `metaopt thaw` of a trial
    # frozen there was refused, and its interrupted trials waited. Every clock here stands
    # still, so only the leave can make a peer count another gone.
    now = time.time()

    node = functools.partial(_node_on, tmp_path, lambda: now)

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
        assert not b.is_alive(a.node_id) and a.node_id not in b.membership.live_nodes()
        # But its frozen trials are not lost before the timeout: it may be back in a moment
        # (stopped to restart), and only it holds their checkpoints.
        assert b.membership.not_gone(a.node_id)
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


@pytest.mark.asyncio
async def test_a_peer_restarted_in_a_moment_calls_every_peer_it_hears_of(tmp_path: Path) -> None:
    # Only a peer's own call undoes its leave. Restarted in a moment, a peer that heard of
    # the others from one of them (or by mDNS), not from its peers file, called one random
    # peer a round: the rest counted it gone until chance picked them (5 of 40 in a review).
    now = time.time()

    node = functools.partial(_node_on, tmp_path, lambda: now)

    a = node("a")
    others = [node(name, a.key.to_text()) for name in "bcde"]
    running = [a, *others]
    try:
        for peer in running:
            await peer.start()
        for peer in others:
            a.peers.add(peer.node_id, peer.addr, now, contacted=True)
            for other in others:
                if other is not peer:
                    peer.peers.add(other.node_id, other.addr, now, contacted=True)
        running.remove(a)
        await a.stop()
        assert not any(peer.is_alive(a.node_id) for peer in others)

        (tmp_path / "a" / "peers").unlink(missing_ok=True)  # it hears of them from b alone
        restarted = node("a", join=(others[0].addr,))
        running.append(restarted)
        await restarted.start()
        for _ in range(2):  # the seed's answer names the others; the next round calls them
            await restarted._gossip()
        assert [peer.is_alive(a.node_id) for peer in others] == [True] * len(others)
    finally:
        for peer in running:
            await peer.stop()


@pytest.mark.asyncio
async def test_a_peer_it_cannot_reach_is_greeted_a_few_times_not_every_round(
    tmp_path: Path,
) -> None:
    # A live peer no call of this one reaches (a partial partition: others keep reporting it
    # live) was greeted at every round, for good, and so was every peer once 1,024 had been
    # (a review). Tried three times; the greetings kept are of the peers in the table.
    now = [time.time()]
    a = _node_on(tmp_path, lambda: now[0], "a")
    b = _node_on(tmp_path, lambda: now[0], "b", a.key.to_text())
    ghost = b"\x05" * 16
    try:
        await a.start()
        await b.start()
        a.peers.add(b.node_id, b.addr, now[0], contacted=True)
        for round_ in range(6):
            a.peers.add(ghost, "127.0.0.1:9", now[0], contacted=False)  # reported live again
            await a._gossip()
            if round_ == 0:  # b answered its first greeting: greeted no more
                assert a.membership._greeted[b.node_id] == 3
        timeout = a.config.timing.peer_timeout
        assert a.is_alive(ghost) and a.membership._greetings(now[0], timeout) == []
        assert a.membership._greeted == {b.node_id: 3, ghost: 3}  # reached; tried 3 times
        now[0] += a.peers.config.expire_after + 1
        a.peers.expire(now[0])
        a.membership._greetings(now[0], a.config.timing.peer_timeout)
        assert ghost not in a.membership._greeted  # (it left the table: nothing kept of it)
    finally:
        await b.stop()
        await a.stop()


@pytest.mark.asyncio
async def test_a_peer_logs_another_found_silent_back_and_leaving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A partition and its heal left no line in a peer's log (a chaos run over network
    namespaces): only its trials' losses said anything."""
    now = [time.time()]

    def clock() -> float:
        return now[0]

    node = functools.partial(_node_on, tmp_path, clock)

    a = node("a")
    b = node("b", a.key.to_text())
    running = [a, b]
    short = a.node_id.hex()[:8]
    try:
        await a.start()
        await b.start()
        b.peers.add(a.node_id, a.addr, now[0], contacted=True)

        async def said_after_gossip() -> list[str]:
            caplog.clear()
            with caplog.at_level("INFO", logger="metaopt.peer"):
                await b._gossip()
            return [r.getMessage() for r in caplog.records if short in r.getMessage()]

        assert await said_after_gossip() == [f"peer {short} at {a.addr} is live"]
        assert await said_after_gossip() == []
        running.remove(a)
        await a.stop()  # it says it is leaving: no second word when it is counted gone
        assert await said_after_gossip() == []
        b.peers.add(a.node_id, a.addr, now[0], contacted=True)  # as if it called again
        assert await said_after_gossip() == [f"peer {short} at {a.addr} is live again"]
        now[0] += 31.0
        [silent] = await said_after_gossip()
        assert silent.startswith(f"peer {short} at {a.addr}: nothing heard of it for 30 s")
    finally:
        for peer in running:
            await peer.stop()


@pytest.mark.asyncio
async def test_a_peer_stops_cleanly_on_a_disk_gone_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a disk remounted read-only (ext4 errors=remount-ro) removing peer.pid raised: a
    # traceback, and `peer stop` said the peer "ended before its stop completed (killed, or it
    # failed)" (a review of every write on a full disk).
    node = Node(PeerConfig(data_dir=tmp_path / "peer", port=0, mdns=False, host="127.0.0.1"))
    await node.start()
    import errno
    import pathlib
    from typing import Any

    real = pathlib.Path.unlink

    def read_only(self: Path, *args: Any, **kwargs: Any) -> None:
        if self.name in ("peer.pid", "peer.address"):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "unlink", read_only)
    await node.stop()


def test_a_peer_not_live_is_not_greeted(tmp_path: Path) -> None:
    # Greetings are for live peers: one silent past the timeout, still in the table, is not
    # called (a mutation audit: greeting every peer in the table went unnoticed).
    now = time.time()
    a = _node_on(tmp_path, lambda: now, "a")
    try:
        timeout = a.config.timing.peer_timeout
        a.peers.add(b"\x05" * 16, "127.0.0.1:9", now - 3 * timeout, contacted=False)
        assert a.peers.all() and not a.peers.live(now, timeout)
        assert a.membership._greetings(now, timeout) == []
        a.peers.add(b"\x06" * 16, "127.0.0.1:10", now, contacted=False)
        assert a.membership._greetings(now, timeout) == ["127.0.0.1:10"]
    finally:
        a.store.close()
