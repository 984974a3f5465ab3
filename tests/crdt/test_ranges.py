"""The range backstop's cost: what answering a message reads from the store."""

from __future__ import annotations

from collections.abc import Iterator

from crdt import Bound, MemoryStore, Record, SetFingerprint, SyncConfig
from crdt._ranges import FINGERPRINT, SKIP, Range, process_ranges


class CountingStore(MemoryStore):
    """A MemoryStore that counts the (time, key) items its ordered() hands out."""

    def __init__(self) -> None:
        super().__init__()
        self.listed = 0

    def ordered(self, lower: Bound | None = None, upper: Bound | None = None) -> Iterator[Bound]:
        for item in super().ordered(lower, upper):
            self.listed += 1
            yield item


def filled(n: int) -> CountingStore:
    store = CountingStore()
    store.add(Record.create("event", b"o" * 16, i + 1, 1000 + i, {"i": i}) for i in range(n))
    store.listed = 0
    return store


def test_skip_ranges_are_not_read() -> None:
    store = filled(1000)
    middle: Bound = (1000 + 900, b"")
    tail = [k for _, k in store.ordered(middle, None)]
    store.listed = 0
    ranges = [Range(middle, SKIP), Range(None, FINGERPRINT, SetFingerprint.of(tail).digest())]
    outcome = process_ranges(store, ranges, SyncConfig())
    assert [r.mode for r in outcome.reply] == [SKIP] and not outcome.open
    assert store.listed == len(tail) == 100
