"""Replication: eager push of new records plus periodic anti-entropy with a random live peer.

Push is the fast path: a record written here goes at once to up to ``push_fanout`` live peers
(coalesced per event-loop tick), so a small lab cluster hears of it within one round trip.
Anti-entropy is the safety net that makes loss, partitions and restarts harmless: every
``anti_entropy`` seconds one reconciliation session (crdt.Initiator) with a random live peer
brings both replicas to their union; a partner that could not be reached is passed over in
the next round while another live one is known. Peers' liveness is soft state from last
contact.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

from crdt import Initiator, Record, Store, StoreError, SyncConfig, push_message
from metaopt.peer._gossip import PeerTable
from metaopt.peer._once import OnceEach
from metaopt.peer._transport import Client, PeerUnreachable, RemoteError

__all__ = ["Replicator", "stepped"]

log = logging.getLogger("metaopt.peer")


# A push stays well under what a session's message carries, in bytes (4 MiB; a receiver
# takes a push up to its frame limit, but a push as large as a session's message stays cheap
# to take in) and in records (the receiver refuses a push of more, and only says so in its
# debug log: 2 MiB of small progress events is 17,000 of them); bigger bursts (a code bundle,
# a backlog of events) go as several pushes.
_PUSH_BYTES = 2 << 20
_PUSH_RECORDS = SyncConfig().max_records // 2


_T = TypeVar("_T")


async def stepped(steps: Generator[None, None, _T]) -> _T:
    """Run a reconciliation step generator, letting the event loop run between its slices.

    A catch-up message of 16,384 records, decoded, stored and folded in one go, held the loop
    for most of a second: its heartbeats, API calls and the partner's pushes waited meanwhile.
    """
    result: list[_T] = []

    def run() -> Generator[None, None, None]:
        result.append((yield from steps))

    for _ in run():
        await asyncio.sleep(0)
    return result[0]


def _batches(records: list[Record], limit: int, count: int) -> list[list[Record]]:
    out: list[list[Record]] = [[]]
    size = 0
    for record in records:
        if out[-1] and (size + len(record.data) > limit or len(out[-1]) >= count):
            out.append([])
            size = 0
        out[-1].append(record)
        size += len(record.data)
    return out


class Replicator:
    """Moves records between this peer's store and its peers' stores."""

    def __init__(
        self,
        store: Store,
        node_id: bytes,
        peers: PeerTable,
        client: Client,
        *,
        clock: Callable[[], float],
        rng: random.Random,
        push_fanout: int,
        peer_timeout: float,
    ) -> None:
        self.store = store
        self.node_id = node_id
        self.peers = peers
        self.client = client
        self._said = OnceEach()  # (partner, fault) pairs warned of
        self._clock = clock
        self._rng = rng
        self._fanout = push_fanout
        self._peer_timeout = peer_timeout
        self._outbox: list[Record] = []
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.sessions = 0  # completed sessions that brought all the partner held (see below)
        self.last_covered: str | None = None  # the partner of the latest such session
        # Told of a partner's refusal of a session (the membership: a twin that stopped).
        self.on_refusal: Callable[[str, str, bytes | None], None] | None = None
        # Addresses this peer has a session of its own with now (see Node._on_sync).
        self._partners: dict[str, int] = {}
        self._called: dict[str, float] = {}  # when a session's last call was made, by address
        self._failed_last: str | None = None  # the partner of the last session, if it failed
        # Messages of sessions being taken in now (read, their records not all stored yet):
        # still records on their way, for CatchUp. This peer's own sessions' answers, and
        # (counted by the node) other peers' requests.
        self.storing = 0

    def on_new(self, records: list[Record]) -> None:
        """Store subscriber: queue this node's own new records for an eager push."""
        self.push([r for r in records if r.origin == self.node_id])

    def push(self, records: list[Record]) -> None:
        """Queue records for an eager push (records submitted here carry other origins)."""
        if not records:
            return
        self._outbox.extend(records)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        records, self._outbox = self._outbox, []
        if not records:
            return
        targets = self.peers.partners(self._rng, self._fanout, self._clock(), self._peer_timeout)
        if not targets:
            return
        for batch in _batches(records, _PUSH_BYTES, _PUSH_RECORDS):
            message = push_message(batch)
            for peer in targets:
                self._spawn(self._push(peer.addr, message))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _push(self, addr: str, message: bytes) -> None:
        try:
            await self.client.call(addr, "sync", message)
        except (PeerUnreachable, RemoteError) as exc:
            log.debug("push to %s failed: %s", addr, exc)

    def in_session(self) -> bool:
        """Whether a session of this peer's own is under way (its answers may be crossing)."""
        return bool(self._partners)

    def in_session_with(self, addr: str) -> bool:
        """Whether a session of this peer's with the peer at addr is under way."""
        return addr in self._partners

    async def reconcile(self, addr: str, *, to: bytes | None = None) -> bool:
        """One full anti-entropy session with a peer (the node ``to``, if known: another
        there refuses it); True if it completed."""
        self._partners[addr] = self._partners.get(addr, 0) + 1
        try:
            return await self._reconcile(addr, to)
        finally:
            self._partners[addr] -= 1
            if not self._partners[addr]:
                del self._partners[addr]

    async def _reconcile(self, addr: str, to: bytes | None) -> bool:
        session = Initiator(self.store)
        message: bytes | None = session.start()
        try:
            while message is not None:
                self._called[addr] = self._clock()
                reply = await self.client.call(addr, "sync", message, to=to, deferrable=True)
                if not isinstance(reply, bytes):
                    self._aborted(addr, "reply", "it sent a sync reply that is not bytes")
                    return False
                self.storing += 1
                try:
                    message = await stepped(session.receive_steps(reply))
                finally:
                    self.storing -= 1
        except (PeerUnreachable, RemoteError) as exc:
            log.debug("anti-entropy with %s failed: %s", addr, exc)
            if isinstance(exc, RemoteError) and self.on_refusal is not None:
                self.on_refusal(addr, str(exc), to)
            return False
        except StoreError:
            raise  # this peer's own disk, not the partner's fault (the node holds back)
        except Exception as exc:  # a protocol error from a bad peer: drop the session only
            self._aborted(addr, type(exc).__name__, str(exc))
            return False
        # CatchUp.caught_up counts the sessions that brought all the partner held when they
        # began: converged, or gave up (the sets kept apart by records landing on one side
        # first, as they do all the time in a busy cluster) with that history here. Counting
        # converged ones only, a peer restarted in a busy cluster judged and started nothing
        # for minutes (up to ten peer timeouts: 1.5-3 min in a soak under load).
        stats = session.stats
        self.sessions += stats.covered
        if stats.covered:
            self.last_covered = addr
        log.debug(
            "anti-entropy with %s ended (%s; round trips %d, records in %d, out %d): %s",
            addr,
            stats.phase,
            stats.round_trips,
            stats.records_received,
            stats.records_sent,
            "converged"
            if stats.converged
            else "all it held at the start now here"
            if stats.covered
            else "short of what it held at the start",
        )
        return True

    def _aborted(self, addr: str, kind: str, why: str) -> None:
        """A session a partner broke: warned once per partner and kind of fault (a faulty peer
        broke every session with it, a warning twice a second on every peer), then at debug."""
        if self._said.first((addr, kind)):
            log.warning("anti-entropy with %s aborted: %s (said once)", addr, why)
        else:
            log.debug("anti-entropy with %s aborted: %s", addr, why)

    async def anti_entropy_once(self) -> str | None:
        """Reconcile with one random live peer (else a seed, else a silent known peer); the
        address reconciled with, if the session completed."""
        now = self._clock()
        # Another live partner than the last one, if that one failed: one cut off by a
        # partition (its connection attempt given up after Timing.connect_timeout) could be
        # drawn again and again (a chance in three each round, with three others). Still one
        # session at a time: sessions run beside one that waited each brought the whole
        # catch-up (a partner builds its first answer before it can know of another), two or
        # three times over (reviews in network namespaces).
        drawn = self.peers.partners(self._rng, 2, now, self._peer_timeout)
        live = [p for p in drawn if p.addr != self._failed_last][:1] or drawn[:1]
        candidates = (
            [p.addr for p in live]
            or self.peers.seed_addrs()
            or [p.addr for p in self.peers.silent(now, self._peer_timeout)]
        )
        if not candidates:
            return None
        addr = self._rng.choice(candidates)
        to = self.peers.at(addr)
        completed = await self.reconcile(addr, to=to)
        called = self._called.pop(addr, None)
        self._failed_last = None if completed else addr
        if not completed:
            return None
        if to is not None and called is not None:
            # As of its last call, not of its answer's reading: an answer that waited through
            # a hold of this peer's loop read as news of now (see peer._lags).
            self.peers.answered(to, called)
        return addr

    async def drain(self, timeout: float) -> None:
        """Wait for pushes under way (used on a graceful stop)."""
        if self._outbox:
            self._flush()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
