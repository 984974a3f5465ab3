"""The in-memory Store: what the simulator and in-process Studies run on."""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator

from crdt._interrupts import interrupts_held
from crdt._record import Record
from crdt._store import Bound, SetFingerprint, Subscriber, notify
from crdt._vector import VersionVector

__all__ = ["MemoryStore"]


class _Ordered:
    """(time, key) pairs kept sorted lazily: appends are O(1), the sort happens on first read."""

    __slots__ = ("_items", "_sorted")

    def __init__(self) -> None:
        self._items: list[Bound] = []
        self._sorted = True

    def append(self, item: Bound) -> None:
        if self._sorted and self._items and item < self._items[-1]:
            self._sorted = False
        self._items.append(item)

    def view(self) -> list[Bound]:
        if not self._sorted:
            self._items.sort()
            self._sorted = True
        return self._items


class MemoryStore:
    """A grow-only set of records held in this process only."""

    def __init__(self) -> None:
        self._records: dict[bytes, Record] = {}
        self._vv = VersionVector()
        self._by_origin: dict[bytes, dict[int, list[Record]]] = defaultdict(dict)
        self._order = _Ordered()
        self._links: dict[bytes, _Ordered] = defaultdict(_Ordered)
        self._kinds: dict[str, _Ordered] = defaultdict(_Ordered)
        self._fp = SetFingerprint()
        self._subscribers: list[Subscriber] = []

    def add(self, records: Iterable[Record]) -> list[Record]:
        new: list[Record] = []
        with interrupts_held():  # (a record held but not indexed, or not told, is lost)
            for record in records:
                if record.key in self._records:
                    continue
                self._records[record.key] = record
                self._index(record)
                new.append(record)
            if new:
                notify(self._subscribers, new)
        return new

    def _index(self, record: Record) -> None:
        bound = (record.time, record.key)
        self._vv.add(record.origin, record.seq)
        self._by_origin[record.origin].setdefault(record.seq, []).append(record)
        self._order.append(bound)
        for link in record.links:
            self._links[link].append(bound)
        self._kinds[record.kind].append(bound)
        self._fp.add(record.key)

    def get(self, key: bytes) -> Record | None:
        return self._records.get(key)

    def raw_get(self, key: bytes) -> bytes | None:
        record = self._records.get(key)
        return None if record is None else record.data

    def __contains__(self, key: object) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def version_vector(self) -> VersionVector:
        return self._vv

    def by_origin(self, origin: bytes, lo: int, hi: int) -> Iterator[Record]:
        seqs = self._by_origin.get(origin)
        if not seqs:
            return
        if hi - lo + 1 <= len(seqs):
            for seq in range(lo, hi + 1):
                yield from seqs.get(seq, ())
        else:
            for seq in sorted(s for s in seqs if lo <= s <= hi):
                yield from seqs[seq]

    def raw_by_origin(self, origin: bytes, lo: int, hi: int) -> Iterator[tuple[bytes, bytes]]:
        for record in self.by_origin(origin, lo, hi):
            yield record.key, record.data

    def _resolve(self, bounds: Iterable[Bound]) -> Iterator[Record]:
        records = self._records
        for _, key in bounds:
            yield records[key]

    def linked(self, link: bytes) -> Iterator[Record]:
        ordered = self._links.get(link)
        return self._resolve(list(ordered.view())) if ordered else iter(())

    def of_kind(self, kind: str) -> Iterator[Record]:
        ordered = self._kinds.get(kind)
        return self._resolve(list(ordered.view())) if ordered else iter(())

    def ordered(self, lower: Bound | None = None, upper: Bound | None = None) -> Iterator[Bound]:
        items = self._order.view()
        start = 0 if lower is None else bisect_left(items, lower)
        stop = len(items) if upper is None else bisect_left(items, upper)
        return iter(items[start:stop])

    def fingerprint(self) -> SetFingerprint:
        return SetFingerprint(self._fp.total, self._fp.count)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def close(self) -> None:
        self._subscribers.clear()
