"""Writing this node's records: its origin id, its sequence numbers and its clock."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from crdt import Record, Store

__all__ = ["NodeWriter"]

# How far ahead of the clock this node's last record may be and still hold its clock back. A
# clock stepped back (NTP) is seconds to minutes; a record stamped further ahead under this
# node's id, one it never wrote, would stamp all it writes as far ahead (a day, a re-test
# found, when this was a day). Past it, a writer's seq order still orders its own events
# (metaopt._state's causal times).
MAX_CLOCK_LEAD_MS = 3600 * 1000
# No node writes 2**62 records: a number from here up is one forged under its id.
SEQ_CEILING = 1 << 62


class NodeWriter:
    """Creates and durably adds this node's records, numbering them 1, 2, 3, ... per origin.

    The next number follows the highest of this node's numbers in the store, so a restart on
    the same data directory continues the sequence (and one restored from an older copy
    continues after the records peers sent back); a node that lost its data directory gets a
    new id (see peer/_identity), so a sequence number is not reused for a different record, and
    so does a peer or a path= Study whose replica was moved aside or deleted (DataDir's
    note_if_lost). One exception: a replica restored from an older copy numbers on from what
    it holds until its peers send the later records back; the stores keep both records of
    such a number and replicate them (tests/crdt: equivocations).

    Numbers from SEQ_CEILING up count only as the run the highest number below it is part of:
    a record any key holder forged under this node's id with the number 2**63 - 1 (the most
    a record may carry) left no number to write with, and the peer never wrote again, nor
    after a restart. One forged lower makes the node skip numbers, never reuse one.
    """

    def __init__(self, store: Store, node_id: bytes, clock: Callable[[], float]) -> None:
        self.store = store
        self.node_id = node_id
        self._clock = clock
        last_seq = self._next_seq() - 1
        last = next(iter(store.by_origin(node_id, last_seq, last_seq)), None) if last_seq else None
        # A forged record at the run's end may be stamped as far ahead as it likes.
        lead = int(clock() * 1000) + MAX_CLOCK_LEAD_MS
        self._last_ms = min(last.time, lead) if last is not None else 0

    def _next_seq(self) -> int:
        seqs = self.store.version_vector().get(self.node_id)
        return seqs.free_after(seqs.high_below(SEQ_CEILING))

    def now_ms(self) -> int:
        """The clock in ms, never before this node's previous record unless that one is more
        than MAX_CLOCK_LEAD_MS ahead of the clock (then that far ahead).

        A clock stepped back (NTP, a data directory moved to another machine) wrote a freeze
        stamped before the start it followed; held, stamps keep a node's events in order as
        far as they go, and past the lead its seq order does (metaopt._state's causal times).
        """
        # No further ahead than MAX_CLOCK_LEAD_MS, as on opening: a clock stepped back 2 h
        # while the peer ran stamped everything 2 h ahead for 2 h (1 h once restarted).
        now = int(self._clock() * 1000)
        self._last_ms = max(min(self._last_ms, now + MAX_CLOCK_LEAD_MS), now)
        return self._last_ms

    def write(self, kind: str, body: Any, links: Iterable[bytes] = ()) -> Record:
        """Create one record and return it once it is durable."""
        record = Record.create(kind, self.node_id, self._next_seq(), self.now_ms(), body, links)
        self.store.add([record])
        return record
