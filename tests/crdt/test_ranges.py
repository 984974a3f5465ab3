"""The range backstop's cost: what answering a message reads from the store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crdt import Bound, MemoryStore, ProtocolError, Record, SetFingerprint, SyncConfig
from crdt._ranges import FINGERPRINT, IDS, SKIP, Range, decode_ranges, process_ranges
from crdt._reconcile import _finish_steps


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
    outcome = _finish_steps(process_ranges(store, ranges, SyncConfig()))
    assert [r.mode for r in outcome.reply] == [SKIP] and not outcome.open
    assert store.listed == len(tail) == 100


# The smallest limits a config allows: 6 ranges a message, 6 listed keys.
SMALL = SyncConfig(fanout=2, initial_fanout=2, leaf_size=1, max_ranges=6, max_keys=6)


def _keys(n: int, first: int = 0) -> bytes:
    return b"".join(bytes([first + i]) * 32 for i in range(n))


def test_decode_ranges_accepts_up_to_its_limits() -> None:
    # The checks below refuse one past each limit; the limit itself passes.
    six = [1, b"", SKIP, None] * 5 + [None, b"", SKIP, None]
    assert len(decode_ranges(six, SMALL)) == 6
    listed = [1, b"", IDS, _keys(3), None, b"", IDS, _keys(3, 3)]
    assert [r.payload for r in decode_ranges(listed, SMALL)] == [_keys(3), _keys(3, 3)]


@pytest.mark.parametrize(
    "ranges",
    [
        # One range more than max_ranges (each bound 1 ms after the last).
        [1, b"", SKIP, None] * 6 + [None, b"", SKIP, None],
        # Key lists totalling max_keys + 1 keys, split over two ranges.
        [1, b"", IDS, _keys(4), None, b"", IDS, _keys(3, 4)],
        # A key list that is not a whole number of 32-byte keys.
        [None, b"", IDS, _keys(1) + b"x"],
        # Two ranges that both extend to the end: only the last may.
        [None, b"", SKIP, None, None, b"", SKIP, None],
    ],
    ids=["ranges", "keys", "ragged-ids", "two-unbounded"],
)
def test_decode_ranges_refuses_what_breaks_the_message_limits(ranges: list[object]) -> None:
    # Each was let through once a check was dropped: a peer could make its partner hold and
    # answer more than any message of the agreed limits carries, or keys cut mid-way.
    with pytest.raises(ProtocolError):
        decode_ranges(ranges, SMALL)
