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

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def write(self, kind: str, body: Any, links: Iterable[bytes] = ()) -> Record:
        """Create one record and return it once it is durable."""
        seq = self.store.version_vector().high(self.node_id) + 1
        record = Record.create(kind, self.node_id, seq, self.now_ms(), body, links)
        self.store.add([record])
        return record
