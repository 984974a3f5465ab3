"""Writing this node's records: its origin id, its sequence numbers and its clock."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from crdt import Record, Store

__all__ = ["NodeWriter"]


class NodeWriter:
    """Creates and durably adds this node's records, numbering them 1, 2, 3, ... per origin.

    The next number is read back from the store's version vector, so a restart on the same data
    directory continues the sequence; a node that lost its data directory gets a new id (see
    peer/_identity), so a sequence number is never reused for a different record.
    """

    def __init__(self, store: Store, node_id: bytes, clock: Callable[[], float]) -> None:
        self.store = store
        self.node_id = node_id
        self._clock = clock
        high = store.version_vector().high(node_id)
        last = next(iter(store.by_origin(node_id, high, high)), None) if high else None
        self._last_ms = last.time if last is not None else 0

    def now_ms(self) -> int:
        """The clock in ms, never before this node's previous record.

        A node's events are ordered by time first: a clock stepped back (NTP, a data directory
        moved to another machine) wrote a freeze before the start it followed, and the trial
        read "running" for good.
        """
        self._last_ms = max(self._last_ms, int(self._clock() * 1000))
        return self._last_ms

    def write(self, kind: str, body: Any, links: Iterable[bytes] = ()) -> Record:
        """Create one record and return it once it is durable."""
        seq = self.store.version_vector().high(self.node_id) + 1
        record = Record.create(kind, self.node_id, seq, self.now_ms(), body, links)
        self.store.add([record])
        return record
