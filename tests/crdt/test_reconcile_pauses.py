"""The range backstop reads the store a slice at a time, pausing between, as records are.

A session whose fast path ends with the two sets still apart (both peers wrote a record while
it ran, as peers running trials do) opens a second round straight into the backstop. Its
first message fingerprints the whole replica (``initial_ranges``) and the other side's answer
reads it all again (``process_ranges``), and each did so in one go: on a real peer holding
2,060,000 records each backstop session held its event loop 1.5-2.5 s (4 of 4 sessions; a
scale review). The work grows with the replica, not with the difference (a few records here).

Counted in items read from the store's (time, key) index between two pauses: no timings.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from crdt import Initiator, MemoryStore, Record
from crdt._ranges import ITEMS_STEP
from crdt._reconcile import respond_steps
from tests.crdt.test_ranges import CountingStore

N = 3 * ITEMS_STEP
A, B, C = b"\xaa" * 16, b"\xbb" * 16, b"\xcc" * 16


def _replica() -> CountingStore:
    store = CountingStore()
    store.add([Record.create("event", C, s, 1000 + s, {"s": s}) for s in range(1, N + 1)])
    return store


def _drive(store: CountingStore, steps: Generator[None, None, Any]) -> tuple[Any, int]:
    """Run stepped work as the peer does (peer._replication.stepped): its result, and the
    most items it read from the store between two pauses (each pause lets the loop run)."""
    most, last = 0, store.listed
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value, max(most, store.listed - last)
        most, last = max(most, store.listed - last), store.listed


def _write(store: MemoryStore, node: bytes, seq: int) -> None:
    store.add([Record.create("event", node, seq, 10**6 + seq, {"x": seq})])


def test_a_session_both_peers_wrote_during_reads_the_replica_a_slice_at_a_time() -> None:
    ini, res = _replica(), _replica()
    _write(ini, A, 1)  # the difference the session starts on (a report not pushed yet)
    session = Initiator(ini)
    message: bytes | None = session.start()
    trips = most_res = most_ini = 0
    while message is not None:
        reply, most = _drive(res, respond_steps(res, message))
        most_res = max(most_res, most)
        trips += 1
        # While the reply travels, each peer records a report of a trial it runs.
        if trips == 1:
            _write(res, B, 1)
        if trips == 2:
            _write(ini, A, 2)
            _write(res, B, 2)
        message, most = _drive(ini, session.receive_steps(reply))
        most_ini = max(most_ini, most)
    assert session.stats.converged
    assert session.stats.phase == "backstop"  # a few records apart, and the backstop ran
    assert ini.listed >= N and res.listed >= N  # each side read every record it holds
    # The store is read a slice (ITEMS_STEP) at a time between pauses; it was read whole.
    assert most_res <= ITEMS_STEP, f"the responder read {most_res} of {N} items without a pause"
    assert most_ini <= ITEMS_STEP, f"the initiator read {most_ini} of {N} items without a pause"


def test_answering_a_backstop_opening_reads_the_replica_a_slice_at_a_time() -> None:
    # The request a second round opens with (no vector, "b": open the backstop).
    import msgpack

    res = _replica()
    request = msgpack.packb({"k": "sync", "f": b"\0" * 16, "b": True}, use_bin_type=True)
    _, most = _drive(res, respond_steps(res, request))
    assert most <= ITEMS_STEP, f"read {most} of {N} items without a pause"
