"""NodeWriter: this node's sequence numbers and clock, also with records forged under its id."""

from __future__ import annotations

from crdt import MemoryStore, Record
from metaopt._writer import MAX_CLOCK_LEAD_MS, SEQ_CEILING, NodeWriter

ME = b"m" * 16
NOW = 1_000_000.0  # seconds


def _seqs(store: MemoryStore) -> list[int]:
    return [r.seq for r in store.by_origin(ME, 1, 2**63 - 1)]


def test_numbers_go_on_from_the_store_after_a_restart_and_the_clock_never_goes_back() -> None:
    store = MemoryStore()
    first = NodeWriter(store, ME, lambda: NOW)
    assert [first.write("control", {}).seq for _ in range(3)] == [1, 2, 3]
    again = NodeWriter(store, ME, lambda: NOW - 60)  # a clock stepped back a minute
    record = again.write("control", {})
    assert (record.seq, record.time) == (4, int(NOW * 1000))


def test_a_record_forged_with_the_last_number_under_this_id_is_passed_by() -> None:
    # Pushed by a key holder, it left no number to write with: every write raised, the peer
    # started no trial again, and a restart did not help (a fuzz test on real peers).
    store = MemoryStore()
    writer = NodeWriter(store, ME, lambda: NOW)
    writer.write("control", {})
    store.add([Record.create("zzz", ME, 2**63 - 1, int(NOW * 1000), None)])
    assert writer.write("control", {}).seq == 2
    restarted = NodeWriter(store, ME, lambda: NOW)
    assert [restarted.write("control", {}).seq for _ in range(2)] == [3, 4]
    # One forged a few numbers ahead makes the node skip numbers, never reuse one.
    store.add([Record.create("zzz", ME, 6, int(NOW * 1000), None)])
    assert [restarted.write("control", {}).seq for _ in range(2)] == [7, 8]
    assert _seqs(store) == [1, 2, 3, 4, 6, 7, 8, 2**63 - 1]
    # One forged just below the ceiling: the node goes on above it, one number at a time.
    store.add([Record.create("zzz", ME, SEQ_CEILING - 1, int(NOW * 1000), None)])
    assert [restarted.write("control", {}).seq for _ in range(2)] == [SEQ_CEILING, SEQ_CEILING + 1]
    again = NodeWriter(store, ME, lambda: NOW)
    assert again.write("control", {}).seq == SEQ_CEILING + 2


def test_a_node_whose_own_records_have_a_gap_writes_after_the_highest() -> None:
    # A data directory restored from an older copy, its newer records sent back out of order
    # by the peers: numbering after the unbroken run 1..4 wrote a different record as 5,
    # which peers held already (a review of an earlier fix found it).
    store = MemoryStore()
    writer = NodeWriter(store, ME, lambda: NOW)
    records = [writer.write("control", {"n": n}) for n in range(10)]
    restored = MemoryStore()
    restored.add(records[:4] + records[6:])
    assert NodeWriter(restored, ME, lambda: NOW).write("control", {}).seq == 11


def test_a_record_forged_far_in_the_future_under_this_id_does_not_drag_the_clock_there() -> None:
    # Forged right after this node's last number, stamped 2**63 - 1 ms: every record the
    # restarted peer wrote carried that time.
    store = MemoryStore()
    NodeWriter(store, ME, lambda: NOW).write("control", {})
    store.add([Record.create("zzz", ME, 2, 2**63 - 1, None)])
    record = NodeWriter(store, ME, lambda: NOW).write("control", {})
    assert record.seq == 3
    assert record.time == int(NOW * 1000) + MAX_CLOCK_LEAD_MS


def test_a_clock_stepped_back_hours_holds_stamps_no_further_ahead_than_a_restart_would() -> None:
    # MAX_CLOCK_LEAD_MS: "How far ahead of the clock this node's last record may be and still
    # hold its clock back" (1 h), applied when a writer opens. A running peer whose clock NTP
    # steps back 2 h (a clock set in local time instead of UTC, corrected) stamps every record
    # 2 h ahead of its clock, and of every peer's, for 2 h; restarted, 1 h at most.
    now = [1_000_000.0 + 7200]
    store = MemoryStore()
    writer = NodeWriter(store, ME, lambda: now[0])
    writer.write("trial", {"params": {"x": 0.5}, "node": ME, "counter": 0}, [b"e" * 32])
    now[0] -= 7200  # the step back
    restarted = NodeWriter(store, ME, lambda: now[0])
    assert restarted.now_ms() - int(now[0] * 1000) <= MAX_CLOCK_LEAD_MS
    lead = writer.now_ms() - int(now[0] * 1000)
    assert lead <= MAX_CLOCK_LEAD_MS, f"stamps held {lead / 1000:.0f} s ahead of the clock"
