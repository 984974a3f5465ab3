"""The peer table: who is out there, at which address, and how recently anyone heard of them.

Soft state only. Each entry keeps the time of this node's own last contact and the freshest
evidence of life from anyone (its own contact, mDNS, or a gossiping peer's report). Gossip
carries *ages*, not timestamps, so clocks need not agree, and an age only grows as it is passed
on: a dead peer cannot be kept alive by peers repeating each other. No time in the table leaves
the node, so its owner passes ``now`` from a monotonic clock (a wall clock stepped forward made
every peer look silent at once). Entries unheard of for ``expire_after`` seconds are dropped;
seeds (``--join`` addresses) are kept forever. A peer that said it was leaving (a graceful
stop) is not live until it speaks to this node itself.
"""

from __future__ import annotations

import ipaddress
import math
import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from metaopt.peer._config import host_port

__all__ = [
    "KnownPeer",
    "LivenessChanges",
    "LivenessNews",
    "PeerTable",
    "PeerTableConfig",
    "own_addresses",
]

NODE_ID_SIZE = 16


@dataclass(frozen=True)
class PeerTableConfig:
    """Bounds of the table; defaults suit a cluster of up to a few hundred peers."""

    expire_after: float = 600.0  # drop an entry unheard of for this long
    max_peers: int = 1024  # a table never grows past this (a bad peer cannot flood it)
    max_gossip: int = 256  # entries sent per gossip message, freshest first
    max_addr_len: int = 262  # host (a DNS name is at most 255) + ":" + port


@dataclass(frozen=True)
class KnownPeer:
    """One entry: ``last_contact`` is this node's own contact, ``heard`` the freshest evidence;
    ``left``: it said it was leaving, and has not spoken to this node since."""

    node_id: bytes
    addr: str
    heard: float
    last_contact: float | None = None
    left: bool = False

    def age(self, now: float) -> float:
        return max(0.0, now - self.heard)


@dataclass
class PeerTable:
    """Known peers by node id, at most one per address, plus the seed addresses."""

    config: PeerTableConfig = field(default_factory=PeerTableConfig)
    _peers: dict[bytes, KnownPeer] = field(default_factory=dict)
    _by_addr: dict[str, bytes] = field(default_factory=dict)
    _seeds: list[str] = field(default_factory=list)
    # This node's own addresses (see own_addresses): no other id is ever entered there. A
    # stale report of a dead predecessor at our address (a peer restarted on the port with a
    # new data dir) was entered, our own calls there then "reached" it, and it stayed live.
    own_addrs: frozenset[str] = frozenset()
    _replaced: set[bytes] = field(default_factory=set)  # dropped for another at their address
    # Each node's address before its latest move, and when it was last heard of there (see
    # elsewhere): what tells two peers running under one node id of each other.
    _moved: dict[bytes, tuple[str, float]] = field(default_factory=dict)

    # ----------------------------------------------------------------------------- updates

    def add_seed(self, addr: str) -> None:
        """Remember a ``--join`` address for good (its node id is learned on contact)."""
        if addr not in self._seeds:
            self._seeds.append(addr)

    def add(self, node_id: bytes, addr: str, now: float, *, contacted: bool) -> None:
        """Record evidence that ``node_id`` is at ``addr`` now; ``contacted`` if we talked to it.

        An address no URL can be made of (see ``valid_addr``) is not recorded.
        """
        if not valid_addr(addr, self.config.max_addr_len):
            return
        self._put(node_id, addr, now, now if contacted else None, authoritative=contacted)
        self.expire(now)

    def seen(self, node_id: bytes, now: float, *, itself: bool) -> None:
        """This node just talked to ``node_id`` at its known address; ``itself``: a request
        that named it as its sender, which (unlike an answer from its address) undoes a leave."""
        peer = self._peers.get(node_id)
        if peer is not None:
            self._peers[node_id] = replace(
                peer, heard=max(peer.heard, now), last_contact=now, left=peer.left and not itself
            )

    def leave(self, node_id: bytes) -> None:
        """``node_id`` said it is stopping: not live from now on, until it speaks to us again.

        Only its own word brings it back, a request that names it as its sender: not gossip
        or mDNS (a third peer that has not yet heard of its leaving may report it with an age
        that, after the time in flight, reads as news from after the leave), and not an answer
        from its address, which names no sender (another peer may have started there). It
        stays known (and among the silent ones, called now and then), so a restart on its
        address is noticed once it calls.
        """
        peer = self._peers.get(node_id)
        if peer is not None:
            self._peers[node_id] = replace(peer, left=True)

    def at(self, addr: str) -> bytes | None:
        """The node id known at ``addr`` (None for an unknown address or one of our own): a
        call there names it (``to=``), so that only that node's answer counts as its life."""
        return self._by_addr.get(addr) if addr not in self.own_addrs else None

    def forget_at(self, addr: str, node_id: bytes | None) -> None:
        """Another node answered at ``addr`` for ``node_id``: it is not there (a peer restarted
        there with a new data directory, or a stale or forged report). Dropped, so that calls
        there name nobody until the node there speaks to us itself."""
        if node_id is not None and self._by_addr.get(addr) == node_id:
            self._replace(node_id)

    def answered(self, node_id: bytes, now: float) -> None:
        """``node_id`` just answered a call that named it (see ``at``).

        Not any answer from its address: an alias of our own address (localhost:PORT for a
        peer bound to 127.0.0.1) or another peer now at that address answered for a node
        that was gone, and kept it live for good, its running trials never re-run.
        """
        self.seen(node_id, now, itself=False)
        self.expire(now)

    def merge_gossip(
        self,
        entries: Any,
        now: float,
        *,
        exclude: bytes | None = None,
        on_own_id: Callable[[str, float], None] | None = None,
    ) -> int:
        """Fold a peer's gossip (see ``to_gossip``) in; malformed entries are skipped.

        Args:
            entries: the decoded message, untrusted: a list of ``[node_id, addr, age]``.
            now: this node's clock.
            exclude: this node's own id, never entered in its own table.
            on_own_id: told (address, age) of each entry of ``exclude`` (a twin of this node
                may run at an address not its own).

        Returns:
            How many entries were well-formed and used.
        """
        if not isinstance(entries, list | tuple):
            return 0
        used = 0
        for entry in entries[: self.config.max_gossip]:
            parsed = self._parse_entry(entry)
            if parsed is None:
                continue
            node_id, addr, age = parsed
            if node_id == exclude:
                if on_own_id is not None:
                    on_own_id(addr, age)
                continue
            self._put(node_id, addr, now - age, None, authoritative=False)
            used += 1
        self.expire(now)
        return used

    def expire(self, now: float) -> None:
        """Drop entries unheard of for ``expire_after`` seconds."""
        limit = self.config.expire_after
        for node_id in [n for n, p in self._peers.items() if now - p.heard > limit]:
            self._remove(node_id)

    # ----------------------------------------------------------------------------- queries

    def get(self, node_id: bytes) -> KnownPeer | None:
        return self._peers.get(node_id)

    def all(self) -> list[KnownPeer]:
        return sorted(self._peers.values(), key=lambda p: p.node_id)

    def seed_addrs(self) -> list[str]:
        return list(self._seeds)

    def is_alive(self, node_id: bytes, now: float, timeout: float) -> bool:
        """Heard of (by anyone) within ``timeout`` seconds, and not left since."""
        peer = self._peers.get(node_id)
        return peer is not None and _live(peer, now, timeout)

    def heard_within(self, node_id: bytes, now: float, timeout: float) -> bool:
        """Heard of within ``timeout`` seconds, even if it said it was leaving since: a peer
        stopped gracefully may be back in a moment (restarted to upgrade, say), and what only
        its return can resume well (its frozen trials, whose checkpoints it holds) waits for
        the timeout, as it did before peers said they were leaving."""
        peer = self._peers.get(node_id)
        return peer is not None and now - peer.heard <= timeout

    def live(self, now: float, timeout: float) -> list[KnownPeer]:
        """Live peers, in node id order so callers stay deterministic."""
        return [p for p in self.all() if _live(p, now, timeout)]

    def silent(self, now: float, timeout: float) -> list[KnownPeer]:
        """Known peers not heard of within ``timeout`` (not yet expired), in node id order.

        They are worth an occasional call: after a stall or an outage longer than the timeout
        every peer may count every other one dead, and a peer found by mDNS is no seed, so
        without these calls such a cluster would never speak again.
        """
        return [p for p in self.all() if not _live(p, now, timeout)]

    def random_live(
        self,
        rng: random.Random | np.random.Generator,
        k: int,
        now: float,
        timeout: float,
    ) -> list[KnownPeer]:
        """Up to ``k`` distinct live peers drawn uniformly with the given generator."""
        return _draw(rng, self.live(now, timeout), k)

    def partners(
        self,
        rng: random.Random | np.random.Generator,
        k: int,
        now: float,
        timeout: float,
    ) -> list[KnownPeer]:
        """Up to ``k`` distinct live peers to send records to or reconcile with: drawn first
        from those this node talked to within ``timeout``, then, to make up ``k``, from those
        only heard of.

        A peer only heard of may not exist: one peer gossiping a thousand made-up ids as live
        (a buggy release, a stale table) drew nearly every push and anti-entropy session of
        every peer to addresses where nothing answers, and an experiment took 110 s to reach
        the next peer instead of 0.2 s, for as long as the gossip went on. Gossip rounds still
        call any live peer (``random_live``): that is how one heard of becomes one talked to.
        """
        reached: list[KnownPeer] = []
        heard_of: list[KnownPeer] = []
        for peer in self.live(now, timeout):
            (reached if _reached(peer, now, timeout) else heard_of).append(peer)
        picked = _draw(rng, reached, k)
        return picked + _draw(rng, heard_of, k - len(picked))

    def to_gossip(self, now: float, timeout: float) -> list[list[Any]]:
        """The live entries, freshest first, as ``[node_id, addr, age]`` (msgpack-ready)."""
        fresh = sorted(self.live(now, timeout), key=lambda p: (-p.heard, p.node_id))
        return [[p.node_id, p.addr, p.age(now)] for p in fresh[: self.config.max_gossip]]

    def elsewhere(self, node_id: bytes, now: float, timeout: float) -> list[list[Any]]:
        """Gossip for ``node_id`` itself: the address it was heard of at before its latest
        move, if that was within ``timeout``, as ``[node_id, addr, age]``.

        Two peers under one node id (a copied data directory, started) that reach each other
        only through a third peer never learned of each other: the third peer's table holds
        one address per node, and it told each caller of itself at its own address. Told of
        its id at another address, a peer calls there, and a twin there stops (Membership._twin);
        a peer restarted on another port finds nothing at its old one.
        """
        moved = self._moved.get(node_id)
        current = self._peers.get(node_id)
        if moved is None or current is None or moved[0] == current.addr:
            return []
        addr, heard = moved
        return [[node_id, addr, now - heard]] if now - heard <= timeout else []

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._peers

    # ---------------------------------------------------------------------------- internals

    def _put(
        self,
        node_id: bytes,
        addr: str,
        heard: float,
        contact: float | None,
        *,
        authoritative: bool,
    ) -> None:
        if addr in self.own_addrs:
            return
        old = self._peers.get(node_id)
        if old is not None and old.left and not authoritative:
            return  # see leave(): second-hand news does not bring it back
        holder = self._by_addr.get(addr)
        if holder is not None and holder != node_id:
            # Two ids at one address: a restarted peer (new data dir) or a stale report. Only
            # fresher evidence moves the address, so a dead id cannot shadow its successor.
            rival = self._peers[holder]
            if not authoritative and heard <= rival.heard:
                return
            self._replace(holder)
        if old is None:
            if len(self._peers) >= self.config.max_peers:
                return
            self._peers[node_id] = KnownPeer(node_id, addr, heard, contact)
            self._by_addr[addr] = node_id
            self._replaced.discard(node_id)  # (back: its next drop is news of its own)
            return
        new_addr = old.addr
        if addr != old.addr and (authoritative or heard > old.heard):
            self._by_addr.pop(old.addr, None)
            self._by_addr[addr] = node_id
            new_addr = addr
            if len(self._moved) >= self.config.max_peers:
                self._moved.clear()  # (news lost at worst: a twin told a round later)
            self._moved[node_id] = (old.addr, old.heard)
        self._peers[node_id] = KnownPeer(
            node_id,
            new_addr,
            max(old.heard, heard),
            contact if contact is not None else old.last_contact,
        )

    def _replace(self, node_id: bytes) -> None:
        """Drop node_id: another node is at its address now (see was_replaced)."""
        self._remove(node_id)
        if len(self._replaced) >= self.config.max_peers:
            self._replaced.clear()  # (news lost at worst: a line says "nothing heard of it")
        self._replaced.add(node_id)

    def was_replaced(self, node_id: bytes) -> bool:
        """Whether node_id was dropped because another node is at its address now, not for
        silence: the log says which."""
        return node_id in self._replaced

    def _remove(self, node_id: bytes) -> None:
        peer = self._peers.pop(node_id, None)
        if peer is not None and self._by_addr.get(peer.addr) == node_id:
            del self._by_addr[peer.addr]

    def _parse_entry(self, entry: Any) -> tuple[bytes, str, float] | None:
        if not isinstance(entry, list | tuple) or len(entry) != 3:
            return None
        node_id, addr, age = entry
        if not isinstance(node_id, bytes) or len(node_id) != NODE_ID_SIZE:
            return None
        if not isinstance(addr, str) or not valid_addr(addr, self.config.max_addr_len):
            return None
        if isinstance(age, bool) or not isinstance(age, int | float):
            return None
        age = float(age)
        if not math.isfinite(age) or age < 0:
            return None
        return node_id, addr, age


class LivenessChanges(NamedTuple):
    """What one look at the table found since the last: peers live for the first time, live
    again, gone, and live at another address than the last look's (with that address)."""

    found: list[KnownPeer]
    back: list[KnownPeer]
    gone: list[KnownPeer]
    moved: list[tuple[str, KnownPeer]]


@dataclass
class LivenessNews:
    """Which peers were live at the last look, so that each change is told once: a partition
    and its heal left no line in a peer's log, only its trials' losses."""

    _live: dict[bytes, KnownPeer] = field(default_factory=dict)
    _gone: set[bytes] = field(default_factory=set)  # said gone, still in the table
    # The addresses each peer in the table was told live at, in its run then (the token its
    # requests carry, see Request.run; None before one is heard): a move back to one is not
    # news within one run. A peer bound to every interface is known by others at each of its
    # addresses, and gossip and this node's own calls moved it between them every few
    # seconds, each move a line. A peer restarted back on a port it used before is news.
    _told_at: dict[bytes, tuple[bytes | None, list[str]]] = field(default_factory=dict)
    # The address each peer's last line named: a move is told against it, not against the
    # last look's (a peer seen back at an old address by gossip before its new run's first
    # request had moved there untold, and was then never told).
    _said_at: dict[bytes, str] = field(default_factory=dict)

    def changes(
        self,
        table: PeerTable,
        now: float,
        timeout: float,
        runs: Mapping[bytes, bytes] | None = None,
    ) -> LivenessChanges:
        """What changed since the last call (a gone peer as the table has it now, to tell a
        leave from silence; gone ones in id order). ``runs``: each peer's latest run token
        heard first-hand, which tells a restart from a peer moving between its addresses."""
        runs = runs or {}
        for node_id, (run, _told) in list(self._told_at.items()):
            latest = runs.get(node_id)
            if latest is not None and latest != run:
                # A new run: nothing told in it yet. The first token heard: the addresses told
                # may be of runs before (an observer that knew a peer by gossip only kept a
                # return untold), so only the one the log last named counts (at worst a peer
                # known at two addresses is told once more).
                named = self._said_at.get(node_id)
                kept = [named] if run is None and named is not None else []
                self._told_at[node_id] = (latest, kept)
        live = {p.node_id: p for p in table.live(now, timeout)}
        found = [p for n, p in live.items() if n not in self._live and n not in self._gone]
        back = [p for n, p in live.items() if n in self._gone]
        gone = [table.get(n) or p for n, p in self._live.items() if n not in live]
        moved = [
            (said, p)
            for n, p in live.items()
            if n in self._live
            and (said := self._said_at.get(n, self._live[n].addr)) != p.addr
            and p.addr not in self._told_at.get(n, (None, ()))[1]
        ]
        # An entry the table dropped (expired) is news again if it comes back, not a return.
        self._gone = {n for n in self._gone | {p.node_id for p in gone} if n in table} - set(live)
        self._live = live
        self._told_at = {n: told for n, told in self._told_at.items() if n in table}
        self._said_at = {n: addr for n, addr in self._said_at.items() if n in table}
        for peer in [*found, *back, *(p for _, p in moved)]:
            self._said_at[peer.node_id] = peer.addr
            run, told = self._told_at.get(peer.node_id, (runs.get(peer.node_id), []))
            if peer.addr not in told:
                self._told_at[peer.node_id] = (run, [*told, peer.addr][-_TOLD_ADDRESSES:])
        return LivenessChanges(found, back, sorted(gone, key=lambda p: p.node_id), moved)

    def left(self, node_id: bytes) -> None:
        """``node_id`` said it is leaving (its peer logs that at once): gone from now, so that
        a return is told even within one look (a `peer stop` then `peer start` took less than
        a gossip round, and the log's last word on the peer was that it left)."""
        if self._live.pop(node_id, None) is not None:
            self._gone.add(node_id)


_TOLD_ADDRESSES = 8  # addresses kept per peer in LivenessNews._told_at


def _live(peer: KnownPeer, now: float, timeout: float) -> bool:
    return not peer.left and now - peer.heard <= timeout


def _reached(peer: KnownPeer, now: float, timeout: float) -> bool:
    """This node talked to it (it answered a call, or called) within ``timeout``."""
    return peer.last_contact is not None and now - peer.last_contact <= timeout


def _draw(
    rng: random.Random | np.random.Generator, peers: list[KnownPeer], k: int
) -> list[KnownPeer]:
    """Up to ``k`` distinct peers of ``peers``, drawn uniformly."""
    if k <= 0 or not peers:
        return []
    k = min(k, len(peers))
    if isinstance(rng, np.random.Generator):
        picks = rng.choice(len(peers), size=k, replace=False)
        return [peers[int(i)] for i in picks]
    return rng.sample(peers, k)


# A DNS label (1-63 characters; "_" is seen in the wild) or an IPv4 address's part.
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def valid_addr(addr: str, max_len: int) -> bool:
    """Whether addr is host:port that a URL can be made of: a name, IPv4 or [IPv6], a port.

    Addresses arrive from other peers unauthenticated (gossip, a request's sender address), so
    anything else, such as a 64-character label that IDNA refuses, is dropped on arrival.
    """
    host, sep, port = addr.rpartition(":")
    if not sep or not host or len(addr) > max_len or not (port.isascii() and port.isdigit()):
        return False
    if not 0 < int(port) < 65536:
        return False
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    return all(_LABEL.fullmatch(label) for label in host.removesuffix(".").split("."))


def own_addresses(host: str, port: int, local_ips: Iterable[str]) -> frozenset[str]:
    """The addresses others may know this peer by: the one it bound and, bound to 0.0.0.0
    (every interface), each of this machine's addresses at its port."""
    out = {host_port(host, port)}
    if host in ("0.0.0.0", ""):
        out |= {host_port(ip, port) for ip in local_ips}
    return frozenset(out)
