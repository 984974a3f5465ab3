"""Range backstop rules a mutation audit of crdt/_ranges.py found unpinned by the other tests."""

from __future__ import annotations

import pytest

from crdt import MemoryStore, ProtocolError, Record, SetFingerprint, SyncConfig
from crdt._ranges import (
    FINGERPRINT,
    SKIP,
    Range,
    decode_ranges,
    initial_ranges,
    process_ranges,
)
from crdt._reconcile import _finish_steps
from tests.crdt.test_ranges import SMALL, filled

_END = [None, b"", SKIP, None]


@pytest.mark.parametrize(
    "ranges",
    [
        [],
        [True, b"", SKIP, None, *_END],
        [None, b"", SKIP, b"x"],
        [1, b"", FINGERPRINT, b"f" * 16, 2**63 - 1, b"", SKIP, None, *_END],
    ],
    ids=["empty", "bool-delta", "skip-with-payload", "bound-at-2**63"],
)
def test_decode_ranges_refuses_what_no_peer_encodes(ranges: list[object]) -> None:
    # Pins checks no other test reached: a message of no ranges, True for a time delta (an
    # int in Python, a boolean on the wire), a SKIP carrying a payload, and a bound at 2**63,
    # past any record's time.
    with pytest.raises(ProtocolError):
        decode_ranges(ranges, SMALL)


def test_decode_ranges_accepts_the_largest_bound_a_record_can_need() -> None:
    # Pins the upper limits themselves: a bound at time 2**63 - 1 with a whole 32-byte key
    # (two keys that share 31 bytes are separated by all 32).
    ranges = decode_ranges([2**63 - 1, b"k" * 32, SKIP, None, *_END], SMALL)
    assert ranges == [Range((2**63 - 1, b"k" * 32), SKIP), Range(None, SKIP)]


def test_bounds_are_a_time_alone_across_times_and_the_shortest_key_prefix_within_one() -> None:
    # Pins the shortest bound between neighbours: a bound is usually a time delta alone, and
    # a key byte more in each would grow every message for nothing.
    store = MemoryStore()
    store.add(
        Record.create("event", b"o" * 16, i + 1, time, {"i": i})
        for i, time in enumerate([1000, 1000, 1001, 1002])
    )
    items = list(store.ordered())
    config = SyncConfig(fanout=2, initial_fanout=4, leaf_size=1, max_ranges=8, max_keys=8)
    bounds = [r.upper for r in _finish_steps(initial_ranges(store, config))]
    (a, b) = (items[0][1], items[1][1])
    shared = next(i for i in range(32) if a[i] != b[i])
    assert bounds == [(1000, b[: shared + 1]), (1001, b""), (1002, b""), None]


def test_the_rest_folded_past_the_budget_is_fingerprinted_from_the_last_bound() -> None:
    # Pins the fingerprint of what a full reply folds into one range: the items past the
    # ranges it answered, so a peer holding the same rest skips it (not a digest of the whole
    # set, which never matches and re-splits a range that agrees).
    store = filled(10)
    wrong = SetFingerprint.of([]).digest()
    ranges = [Range((1000 + t, b""), FINGERPRINT, wrong) for t in (2, 4, 6)]
    outcome = _finish_steps(
        process_ranges(store, [*ranges, Range(None, FINGERPRINT, wrong)], SMALL)
    )
    # SMALL's budget: the first two ranges answered (each split in two), the rest folded.
    assert [r.mode for r in outcome.reply] == [FINGERPRINT] * 5
    assert [r.upper for r in outcome.reply][3:] == [(1000 + 4, b""), None]
    again = _finish_steps(process_ranges(filled(10), outcome.reply, SMALL))
    assert [r.mode for r in again.reply] == [SKIP] and not again.open
