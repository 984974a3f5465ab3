"""N replicas running the real sans-IO reconciliation sessions over the virtual network.

Each node, every ``gossip_period``, starts one session (crdt.Initiator) with a random other
node; requests and responses travel as messages on the virtual network, so they can be lost,
duplicated, reordered or cut off by a partition, and a session whose reply does not come within
``session_timeout`` is abandoned. New records go at once to ``push_fanout`` random peers
(crdt.push_message). Nodes can crash and restart with their store kept (opened again from disk
when the stores are on disk), or come back with an empty store (with a new id, or with the old
id reusing its sequence numbers, which only the backstop can untangle).

A node writes up to ``burst`` records at once, stamped with one millisecond, as a real peer
records a trial and its first events; and each node's clock is off by up to ``skew`` seconds.
Records that share a millisecond are what the backstop's range bounds must tell apart by key.

The cluster keeps the ground truth the scenarios check against: every record ever written, and
those destroyed with their last copy when a store was wiped.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from crdt import (
    Initiator,
    MemoryStore,
    ProtocolError,
    Record,
    Store,
    SyncConfig,
    push_message,
    respond,
)
from simulations._clock import VirtualClock
from simulations._network import LinkConfig, Network

__all__ = ["Cluster", "ClusterConfig", "Node"]

StoreFactory = Callable[[int, int], Store]


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Shape and timing of a simulated cluster (seconds of virtual time)."""

    nodes: int = 20
    gossip_period: float = 1.0
    push_fanout: int = 2
    session_timeout: float = 1.0
    link: LinkConfig = field(default_factory=LinkConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    burst: int = 1  # records a node writes at once, with one timestamp (1 to burst, at random)
    skew: float = 0.0  # each node's clock is off by up to this many seconds, either way


@dataclass(slots=True)
class Node:
    """One replica; ``epoch`` changes on every crash so stale callbacks know to do nothing."""

    index: int
    node_id: bytes
    store: Store
    seq: int = 0
    up: bool = True
    epoch: int = 0
    incarnation: int = 0
    session: Initiator | None = None
    awaiting: int = 0  # number of the request whose reply the session waits for
    skew_ms: int = 0  # how far this node's clock is off


@dataclass(slots=True)
class Totals:
    sessions: int = 0
    completed: int = 0
    abandoned: int = 0
    backstop: int = 0
    protocol_errors: int = 0
    pushes: int = 0


class Cluster:
    """The simulated cluster; drive it with ``clock`` and the methods below."""

    def __init__(
        self,
        config: ClusterConfig,
        seed: int,
        store_factory: StoreFactory | None = None,
    ) -> None:
        self.config = config
        self.rng = random.Random(seed)
        self.clock = VirtualClock()
        self.network = Network(self.clock, random.Random(self.rng.getrandbits(64)), config.nodes)
        self.network.default = config.link
        self._factory: StoreFactory = store_factory or (lambda index, incarnation: MemoryStore())
        self._on_disk = store_factory is not None  # a restart opens the store again
        self.nodes = [
            Node(i, self.rng.randbytes(16), self._factory(i, 0)) for i in range(config.nodes)
        ]
        if config.skew:
            for node in self.nodes:
                node.skew_ms = round(self.rng.uniform(-config.skew, config.skew) * 1000)
        self.written: dict[bytes, Record] = {}
        self.destroyed: set[bytes] = set()
        self.totals = Totals()
        self._request_number = 0
        self.writing = True

    # Ticks --------------------------------------------------------------------------------

    def start(self) -> None:
        """Schedule every node's gossip ticks, each at a random phase of the period."""
        for node in self.nodes:
            self.clock.call_later(
                self.rng.random() * self.config.gossip_period, self._ticker(node.index)
            )

    def _ticker(self, index: int) -> Callable[[], None]:
        def tick() -> None:
            self.gossip(index)
            self.clock.call_later(self.config.gossip_period, tick)

        return tick

    def schedule_writes(self, rate: float, until: float) -> None:
        """Every node writes records as a Poisson process of ``rate`` per second until ``until``."""
        for node in self.nodes:
            self._next_write(node.index, rate, until)

    def _next_write(self, index: int, rate: float, until: float) -> None:
        when = self.clock.now + self.rng.expovariate(rate)
        if when >= until:
            return

        def fire() -> None:
            if self.writing:
                self.write(index)
            self._next_write(index, rate, until)

        self.clock.call_at(when, fire)

    # Records ------------------------------------------------------------------------------

    def write(self, index: int) -> list[Record]:
        """The node writes a few records (see burst) with one timestamp of its clock and pushes
        them to a few peers; none if it is down."""
        node = self.nodes[index]
        if not node.up:
            return []
        count = self.rng.randint(1, self.config.burst) if self.config.burst > 1 else 1
        stamp = max(0, self.clock.now_ms() + node.skew_ms)
        records = []
        for _ in range(count):
            node.seq += 1
            body = {"node": index, "n": node.seq, "value": round(self.rng.random(), 6)}
            records.append(Record.create("event", node.node_id, node.seq, stamp, body))
        node.store.add(records)
        for record in records:
            self.written[record.key] = record
            self.network.note("write", index, record.key.hex()[:16])
        message = push_message(records)
        for peer in self._peers(index, self.config.push_fanout):
            self.totals.pushes += 1
            self.network.send(index, peer, len(message), self._deliver_push(peer, message))
        return records

    def _deliver_push(self, peer: int, message: bytes) -> Callable[[], None]:
        def deliver() -> None:
            node = self.nodes[peer]
            if node.up:
                respond(node.store, message, self.config.sync)

        return deliver

    def _peers(self, index: int, count: int) -> list[int]:
        others = [i for i in range(len(self.nodes)) if i != index]
        return self.rng.sample(others, min(count, len(others)))

    # Sessions -----------------------------------------------------------------------------

    def gossip(self, index: int) -> None:
        """The node starts a session with a random peer unless it is down or busy."""
        node = self.nodes[index]
        if not node.up or node.session is not None or len(self.nodes) < 2:  # (one alone)
            return
        (peer,) = self._peers(index, 1)
        node.session = Initiator(node.store, self.config.sync)
        self.totals.sessions += 1
        self.network.note("session", index, peer)
        self._request(node, peer, node.session.start())

    def _request(self, node: Node, peer: int, message: bytes) -> None:
        self._request_number += 1
        number = self._request_number
        node.awaiting = number
        epoch = node.epoch
        self.network.send(
            node.index, peer, len(message), self._serve(node.index, peer, number, message)
        )

        def timeout() -> None:
            if node.epoch == epoch and node.awaiting == number:
                self._end(node, completed=False)

        self.clock.call_later(self.config.session_timeout, timeout)

    def _serve(self, src: int, dst: int, number: int, message: bytes) -> Callable[[], None]:
        def serve() -> None:
            responder = self.nodes[dst]
            if not responder.up:
                return
            try:
                reply = respond(responder.store, message, self.config.sync)
            except ProtocolError:
                self.totals.protocol_errors += 1
                return
            self.network.send(dst, src, len(reply), self._reply(src, dst, number, reply))

        return serve

    def _reply(self, index: int, peer: int, number: int, reply: bytes) -> Callable[[], None]:
        node = self.nodes[index]
        epoch = node.epoch

        def deliver() -> None:
            # Replies to an earlier request, a duplicate, or one from before a crash: ignore.
            if node.epoch != epoch or node.awaiting != number or node.session is None:
                return
            node.awaiting = 0
            try:
                following = node.session.receive(reply)
            except ProtocolError:
                self.totals.protocol_errors += 1
                self._end(node, completed=False)
                return
            if following is None:
                self._end(node, completed=True)
            else:
                self._request(node, peer, following)

        return deliver

    def _end(self, node: Node, *, completed: bool) -> None:
        session = node.session
        node.session = None
        node.awaiting = 0
        if session is None:
            return
        if completed:
            self.totals.completed += 1
            if session.stats.phase == "backstop":
                self.totals.backstop += 1
        else:
            self.totals.abandoned += 1
        self.network.note("end", node.index, completed, session.stats.round_trips)

    # Faults -------------------------------------------------------------------------------

    def crash(self, index: int) -> None:
        node = self.nodes[index]
        node.up = False
        node.epoch += 1
        node.session = None
        node.awaiting = 0
        self.network.note("crash", index)

    def restart(self, index: int) -> None:
        """Bring a crashed node back with its store as it was: on disk, opened again (its
        version vector and fingerprint rebuilt from what the disk holds)."""
        node = self.nodes[index]
        if self._on_disk:
            node.store.close()
            node.store = self._factory(index, node.incarnation)
        node.up = True
        self.network.note("restart", index)

    def replace(self, index: int, *, keep_id: bool = False) -> None:
        """The node comes back with an empty store: with a new id, or its old id and seq 1."""
        node = self.nodes[index]
        others = [n.store for n in self.nodes if n.index != index]
        for _, key in node.store.ordered():
            if not any(key in store for store in others):
                self.destroyed.add(key)
        node.store.close()
        node.incarnation += 1
        node.store = self._factory(index, node.incarnation)
        if not keep_id:
            node.node_id = self.rng.randbytes(16)
        node.seq = 0
        node.up = True
        node.epoch += 1
        node.session = None
        node.awaiting = 0
        self.network.note("replace", index, keep_id)

    # Checks -------------------------------------------------------------------------------

    def digests(self) -> list[bytes]:
        return [n.store.fingerprint().digest() for n in self.nodes]

    def converged(self) -> bool:
        """All nodes up and holding the same set."""
        return all(n.up for n in self.nodes) and len(set(self.digests())) == 1

    def union(self) -> set[bytes]:
        keys: set[bytes] = set()
        for node in self.nodes:
            keys.update(k for _, k in node.store.ordered())
        return keys

    def lost(self) -> int:
        """Records written that no replica holds, beyond those destroyed with their last copy."""
        union = self.union()
        return sum(1 for k in self.written if k not in union and k not in self.destroyed)

    def invented(self) -> int:
        """Records some replica holds that nobody wrote."""
        return sum(1 for k in self.union() if k not in self.written)
