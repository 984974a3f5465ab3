"""NodeWriter's clock rules a mutation audit of metaopt/_writer.py found unpinned."""

from __future__ import annotations

from crdt import MemoryStore, Record
from metaopt._writer import NodeWriter
from tests.metaopt.test_writer import ME, NOW


class _Clock:
    """A clock a test sets by hand (seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_restart_behind_the_clock_goes_on_from_the_latest_record_not_the_first() -> None:
    """After a clock stepped back, the restarted node's next record is stamped no earlier than
    its last one (not its first): a freeze stamped before the start it follows reads as the
    trial running for good."""
    store = MemoryStore()
    clock = _Clock(NOW)
    writer = NodeWriter(store, ME, clock)
    times = []
    for step in range(3):
        clock.now = NOW + 10 * step
        times.append(writer.write("control", {}).time)
    assert times == [int(NOW * 1000), int(NOW * 1000) + 10_000, int(NOW * 1000) + 20_000]
    restarted = NodeWriter(store, ME, _Clock(NOW - 60))
    assert restarted.write("control", {}).time == int(NOW * 1000) + 20_000


def test_a_record_stamped_a_little_ahead_holds_the_clock_back_only_to_its_own_time() -> None:
    """A last record within the lead (this node's own, written before NTP stepped the clock
    back) holds later records at its time, not at the most a record may lead by."""
    store = MemoryStore()
    NodeWriter(store, ME, lambda: NOW + 120).write("control", {})  # two minutes ahead
    record = NodeWriter(store, ME, lambda: NOW).write("control", {})
    assert record.time == int((NOW + 120) * 1000)


def test_a_record_forged_a_day_ahead_holds_the_clock_back_at_most_an_hour() -> None:
    """The lead is an hour: a forged record a day ahead (the old limit) must not stamp every
    record this node writes a day ahead, which would outrank other nodes' events for a day."""
    store = MemoryStore()
    NodeWriter(store, ME, lambda: NOW).write("control", {})
    store.add([Record.create("zzz", ME, 2, int(NOW * 1000) + 86_400_000, None)])
    record = NodeWriter(store, ME, lambda: NOW).write("control", {})
    assert record.seq == 3
    assert record.time <= int(NOW * 1000) + 3_600_000


def test_records_are_stamped_in_milliseconds_not_whole_seconds() -> None:
    """Two events of one node within a second keep their order by time; a clock truncated to
    seconds would give them one stamp and leave the order to their keys."""
    clock = _Clock(NOW + 0.25)
    writer = NodeWriter(MemoryStore(), ME, clock)
    first = writer.write("control", {})
    clock.now = NOW + 0.75
    second = writer.write("control", {})
    assert (first.time, second.time) == (int(NOW * 1000) + 250, int(NOW * 1000) + 750)


def test_numbers_are_taken_for_forged_only_from_2_to_the_62() -> None:
    """CONTRIBUTING: a node numbers its records after its highest below 2**62. A record
    under its id numbered at 2**62 is passed by (the next is 2); one below it (2**61 + 5) is
    part of its run, so the next follows it, never a number it may have used."""
    store = MemoryStore()
    writer = NodeWriter(store, ME, lambda: NOW)
    writer.write("control", {})
    store.add([Record.create("zzz", ME, 2**62, int(NOW * 1000), None)])
    assert writer.write("control", {}).seq == 2
    store.add([Record.create("zzz", ME, 2**61 + 5, int(NOW * 1000), None)])
    assert writer.write("control", {}).seq == 2**61 + 6
