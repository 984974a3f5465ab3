"""The Store port: a grow-only set of records with the indexes folds and reconciliation need.

Two adapters implement it, MemoryStore and LevelDBStore, and one contract suite
(tests/crdt/test_store_contract.py) checks both. A store never shrinks and never holds two
records with one key. ``add`` returns only once the records are durable, and subscribers hear of
records only after that, so nothing is advertised to peers before it would survive a crash.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from crdt._record import KEY_SIZE, Record
from crdt._vector import VersionVector

__all__ = ["Bound", "SetFingerprint", "Store", "Subscriber"]

Subscriber = Callable[[list[Record]], None]
# A position in the (time, key) order of the whole set; None stands for an open end.
Bound = tuple[int, bytes]

_MOD = 1 << (8 * KEY_SIZE)
_log = logging.getLogger("crdt")


class SetFingerprint:
    """Order-free digest of a set of keys: their sum mod 2^256 and their count (as negentropy).

    Sums make the digest incremental (add a key in O(1)) and range digests composable.
    """

    __slots__ = ("count", "total")

    def __init__(self, total: int = 0, count: int = 0) -> None:
        self.total = total
        self.count = count

    @classmethod
    def summed(cls, total: int, count: int) -> SetFingerprint:
        """The fingerprint of count keys whose little-endian values add up to total."""
        return cls(total % _MOD, count)

    def add(self, key: bytes) -> None:
        self.total = (self.total + int.from_bytes(key, "little")) % _MOD
        self.count += 1

    def extend(self, keys: Iterable[bytes]) -> None:
        """Add many keys (new to the set) at once: one reduction for the whole batch."""
        total = self.total
        count = self.count
        for key in keys:
            total += int.from_bytes(key, "little")
            count += 1
        self.total = total % _MOD
        self.count = count

    def digest(self) -> bytes:
        """16 bytes naming the set; equal sets give equal digests."""
        raw = self.total.to_bytes(KEY_SIZE, "little") + self.count.to_bytes(8, "little")
        return hashlib.blake2b(raw, digest_size=16).digest()

    @classmethod
    def of(cls, keys: Iterable[bytes]) -> SetFingerprint:
        fingerprint = cls()
        fingerprint.extend(keys)
        return fingerprint


def notify(subscribers: Iterable[Subscriber], records: list[Record]) -> None:
    """Tell every subscriber of a durable batch; one that raises is logged, never propagated.

    The batch is already written when this runs: an exception escaping ``add`` would tell its
    caller the write failed, and the subscribers after the failing one would never hear of it.
    """
    for callback in list(subscribers):
        try:
            callback(records)
        except Exception:
            _log.exception("a store subscriber failed on %d new records", len(records))


class Store(Protocol):
    """A replica's grow-only set of records."""

    def add(self, records: Iterable[Record]) -> list[Record]:
        """Add records durably in one atomic write; return those that were new, in order given.

        All or nothing: if the write fails, none of the batch is stored. Records arrive here
        already validated: a received message holding one bad record is refused whole
        (Record.decode_many raises before anything is stored), good records of it included;
        a well-behaved peer offers those again in its next session.
        """
        ...

    def get(self, key: bytes) -> Record | None: ...

    def raw_get(self, key: bytes) -> bytes | None:
        """The exact bytes of the record with this key, without rebuilding the record.

        For answering peers, who only re-send the bytes; they re-check them on receipt.
        """
        ...

    def __contains__(self, key: object) -> bool: ...

    def __len__(self) -> int: ...

    def version_vector(self) -> VersionVector:
        """The (origin, seq) pairs held. Read-only: callers must not mutate it."""
        ...

    def by_origin(self, origin: bytes, lo: int, hi: int) -> Iterator[Record]:
        """Records of one origin with lo <= seq <= hi, by seq."""
        ...

    def raw_by_origin(self, origin: bytes, lo: int, hi: int) -> Iterator[tuple[bytes, bytes]]:
        """(key, bytes) of by_origin's records, in its order, without rebuilding the records.

        For answering peers, who only re-send the bytes; they re-check them on receipt.
        """
        ...

    def linked(self, link: bytes) -> Iterator[Record]:
        """Records that list ``link`` among their links, in (time, key) order, as the set is at
        the call (records added while it is read are not in it)."""
        ...

    def of_kind(self, kind: str) -> Iterator[Record]:
        """Records of one kind, in (time, key) order, as the set is at the call."""
        ...

    def ordered(self, lower: Bound | None = None, upper: Bound | None = None) -> Iterator[Bound]:
        """(time, key) of every record with lower <= (time, key) < upper, ascending, as the set
        is at the call."""
        ...

    def fingerprint(self) -> SetFingerprint:
        """Digest of the whole set (kept incrementally; a copy)."""
        ...

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call back with each batch of new records once durable; returns an unsubscribe.

        A callback that raises is logged and skipped: ``add`` still returns normally and the
        other callbacks still hear of the batch.
        """
        ...

    def close(self) -> None: ...
