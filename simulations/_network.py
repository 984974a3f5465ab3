"""A virtual network: per-link latency, loss, duplication, reordering, partitions and heals.

Nodes are numbered 0..n-1. ``send`` hands the network a payload size and the action that
delivers it; the network decides, from its own seeded generator, whether and when the action
runs. Every decision goes into a running BLAKE2b trace, so two runs with the same seed can be
compared by one digest.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from simulations._clock import VirtualClock

__all__ = ["LinkConfig", "Network"]


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """How one directed link behaves (seconds and probabilities)."""

    latency: float = 0.02
    jitter: float = 0.01
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0  # chance a message is held back by reorder_delay, overtaking order
    reorder_delay: float = 0.2


class Network:
    """Directed links between n nodes over a virtual clock."""

    def __init__(
        self, clock: VirtualClock, rng: random.Random, n: int, link: LinkConfig = LinkConfig()
    ) -> None:
        self.clock = clock
        self.rng = rng
        self.n = n
        self.default = link
        self._links: dict[tuple[int, int], LinkConfig] = {}
        self._blocked: set[tuple[int, int]] = set()
        self._trace = hashlib.blake2b(digest_size=16)
        self.sent = 0
        self.bytes_sent = 0
        self.dropped = 0
        self.duplicated = 0

    def set_link(self, src: int, dst: int, link: LinkConfig) -> None:
        self._links[(src, dst)] = link

    def link(self, src: int, dst: int) -> LinkConfig:
        return self._links.get((src, dst), self.default)

    def note(self, *fields: object) -> None:
        """Add an event to the trace."""
        self._trace.update(repr((round(self.clock.now, 9), *fields)).encode())

    def trace_digest(self) -> str:
        return self._trace.hexdigest()

    # Partitions -------------------------------------------------------------------------

    def reachable(self, src: int, dst: int) -> bool:
        return (src, dst) not in self._blocked

    def cut(self, src: int, dst: int, *, one_way: bool = False) -> None:
        """Block src → dst (and dst → src unless one_way)."""
        self._blocked.add((src, dst))
        if not one_way:
            self._blocked.add((dst, src))
        self.note("cut", src, dst, one_way)

    def isolate(self, node: int) -> None:
        for other in range(self.n):
            if other != node:
                self.cut(node, other)

    def split(self, groups: Sequence[Iterable[int]]) -> None:
        """Block every link between different groups; nodes in no group keep their links."""
        group_of: dict[int, int] = {}
        for g, members in enumerate(groups):
            for node in members:
                group_of[node] = g
        for a in sorted(group_of):
            for b in sorted(group_of):
                if group_of[a] != group_of[b]:
                    self._blocked.add((a, b))
        self.note("split", sorted(group_of.items()))

    def halves(self) -> None:
        self.split([range(self.n // 2), range(self.n // 2, self.n)])

    def ring(self) -> None:
        """Each node can reach only its two neighbours on the ring 0, 1, ..., n-1, 0."""
        for a in range(self.n):
            for b in range(self.n):
                if a != b and (b - a) % self.n not in (1, self.n - 1):
                    self._blocked.add((a, b))
        self.note("ring")

    def heal(self) -> None:
        self._blocked.clear()
        self.note("heal")

    # Delivery ---------------------------------------------------------------------------

    def send(self, src: int, dst: int, size: int, deliver: Callable[[], None]) -> None:
        """Carry a message of ``size`` bytes; ``deliver`` runs on arrival (zero or more times)."""
        self.sent += 1
        self.bytes_sent += size
        link = self.link(src, dst)
        rng = self.rng
        if not self.reachable(src, dst) or rng.random() < link.loss:
            self.dropped += 1
            self.note("drop", src, dst, size)
            return
        copies = 2 if rng.random() < link.duplicate else 1
        self.duplicated += copies - 1
        for _ in range(copies):
            delay = link.latency + rng.random() * link.jitter
            if rng.random() < link.reorder:
                delay += link.reorder_delay
            self.note("send", src, dst, size, round(delay, 9))
            self.clock.call_later(delay, deliver)
