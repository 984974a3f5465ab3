"""Range-based set reconciliation over the (time, key) order: the backstop that catches anything.

Meyer's range-based set reconciliation as negentropy frames it: a message is a list of
consecutive ranges covering the whole (time, key) space, each ending at an upper bound and
carrying one of three things. ``SKIP``: this range already agrees. ``FINGERPRINT``: the sender's
digest of its keys in the range; the receiver compares with its own and, when they differ,
splits its own items in the range into ``fanout`` equal-count sub-ranges (or, when it holds at
most ``leaf_size`` there, lists its keys). ``IDS``: the sender's full key list for the range, so
the receiver knows the exact difference in both directions and the range is done. Each level
divides the mismatching ranges by ``fanout``, so d scattered differences among n records cost
O(d · fanout · log(n)) bytes in O(log n / log fanout) round trips, and clustered differences (a
partition's worth, all recent) fall into a few ranges.

Bounds are the shortest ``(time, key prefix)`` that separates two neighbouring items, so a
bound is usually a time delta alone. Processing is stateless: everything a side needs is in the
message and its own store, which is what lets the responder stay stateless.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from crdt._errors import ProtocolError
from crdt._record import KEY_SIZE
from crdt._store import Bound, SetFingerprint, Store

if TYPE_CHECKING:
    from crdt._reconcile import SyncConfig

__all__ = ["FINGERPRINT", "IDS", "SKIP", "Range", "RangeOutcome", "decode_ranges", "encode_ranges"]

SKIP = 0
FINGERPRINT = 1
IDS = 2
_FP_SIZE = 16
_START: Bound = (0, b"")
# Items read or hashed between two pauses of the range functions (about 10 ms here).
ITEMS_STEP = 16_384


@dataclass(frozen=True, slots=True)
class Range:
    """One range of a message: items below ``upper`` (None: the end) down to the previous bound."""

    upper: Bound | None
    mode: int
    payload: bytes = b""


@dataclass(slots=True)
class RangeOutcome:
    """What processing a peer's ranges produced: the reply and the keys each side lacks."""

    reply: list[Range] = field(default_factory=list)
    have: list[bytes] = field(default_factory=list)  # keys held here that the peer lacks
    need: list[bytes] = field(default_factory=list)  # keys the peer holds that are missing here

    @property
    def open(self) -> bool:
        """True while some range of the reply still needs the peer's attention."""
        return any(r.mode != SKIP for r in self.reply)


def encode_ranges(ranges: Sequence[Range]) -> list[object]:
    """Flat msgpack-ready form: [time delta | None, key prefix, mode, payload | None, ...]."""
    out: list[object] = []
    prev_time = 0
    for r in ranges:
        if r.upper is None:
            out += [None, b"", r.mode, r.payload if r.mode != SKIP else None]
        else:
            out += [r.upper[0] - prev_time, r.upper[1], r.mode, r.payload if r.mode else None]
            prev_time = r.upper[0]
    return out


def decode_ranges(value: object, config: SyncConfig) -> list[Range]:
    """Parse and check encode_ranges' form; raise ProtocolError on anything else."""
    if not isinstance(value, list) or len(value) % 4 or not value:
        raise ProtocolError("ranges must be a non-empty flat list of 4-tuples")
    if len(value) // 4 > config.max_ranges:
        raise ProtocolError(f"{len(value) // 4} ranges exceed the limit of {config.max_ranges}")
    ranges: list[Range] = []
    prev: Bound = _START
    keys = 0
    n = len(value) // 4
    for i in range(n):
        dt, prefix, mode, payload = value[4 * i : 4 * i + 4]
        last = i == n - 1
        upper: Bound | None
        if dt is None:
            if not last:
                raise ProtocolError("only the last range may extend to the end")
            upper = None
        else:
            if last:
                raise ProtocolError("the last range must extend to the end")
            if isinstance(dt, bool) or not isinstance(dt, int) or not 0 <= dt < 2**63:
                raise ProtocolError("a range bound's time delta must be a non-negative integer")
            if prev[0] + dt >= 2**63:  # bounds are record times, which are below 2**63
                raise ProtocolError("a range bound's time is past any record's time")
            if not isinstance(prefix, bytes) or len(prefix) > KEY_SIZE:
                raise ProtocolError("a range bound's key prefix must be at most 32 bytes")
            upper = (prev[0] + dt, prefix)
            if upper <= prev:
                raise ProtocolError("range bounds must increase strictly")
            prev = upper
        if mode == SKIP and payload is None:
            ranges.append(Range(upper, SKIP))
        elif mode == FINGERPRINT and isinstance(payload, bytes) and len(payload) == _FP_SIZE:
            ranges.append(Range(upper, FINGERPRINT, payload))
        elif mode == IDS and isinstance(payload, bytes) and len(payload) % KEY_SIZE == 0:
            keys += len(payload) // KEY_SIZE
            ranges.append(Range(upper, IDS, payload))
        else:
            raise ProtocolError(f"range {i} has an unknown mode or a malformed payload")
    if keys > config.max_keys:
        raise ProtocolError(f"{keys} listed keys exceed the limit of {config.max_keys}")
    return ranges


def _between(a: Bound, b: Bound) -> Bound:
    """The shortest bound x with a < x <= b."""
    if a[0] != b[0]:
        return (b[0], b"")
    ka, kb = a[1], b[1]
    i = 0
    while i < len(ka) and i < len(kb) and ka[i] == kb[i]:
        i += 1
    return (b[0], kb[: i + 1])


def _digest(items: Sequence[Bound]) -> Generator[None, None, bytes]:
    fingerprint = SetFingerprint()
    for start in range(0, len(items), ITEMS_STEP):
        if start:
            yield
        fingerprint.extend(k for _, k in items[start : start + ITEMS_STEP])
    return fingerprint.digest()


def _listed(items: Iterator[Bound]) -> Generator[None, None, list[Bound]]:
    """The items read, pausing every ITEMS_STEP."""
    out: list[Bound] = []
    for item in items:
        out.append(item)
        if len(out) % ITEMS_STEP == 0:
            yield
    return out


def _split(
    items: list[Bound], upper: Bound | None, fanout: int, config: SyncConfig
) -> Generator[None, None, list[Range]]:
    """This side's items of one range as ``fanout`` fingerprinted sub-ranges, or its key list."""
    if len(items) <= config.leaf_size:
        return [Range(upper, IDS, b"".join(k for _, k in items))]
    parts = min(fanout, len(items))
    out: list[Range] = []
    cuts = [len(items) * j // parts for j in range(parts + 1)]
    for j in range(parts):
        chunk = items[cuts[j] : cuts[j + 1]]
        bound = upper if j == parts - 1 else _between(chunk[-1], items[cuts[j + 1]])
        out.append(Range(bound, FINGERPRINT, (yield from _digest(chunk))))
    return out


def _append(out: list[Range], r: Range) -> None:
    if r.mode == SKIP and out and out[-1].mode == SKIP:
        out[-1] = r
    else:
        out.append(r)


def initial_ranges(store: Store, config: SyncConfig) -> Generator[None, None, list[Range]]:
    """Open the backstop: this side's whole set in ``initial_fanout`` fingerprinted ranges.

    Like ``process_ranges``, a generator that pauses every ITEMS_STEP items read or hashed (a
    peer drives it with its event loop running between): the backstop reads the whole set,
    whatever the difference, and at 2 million records held a peer's loop 1.5-2.5 s a session.
    """
    items = yield from _listed(store.ordered())
    return (yield from _split(items, None, config.initial_fanout, config))


def process_ranges(
    store: Store, ranges: Sequence[Range], config: SyncConfig
) -> Generator[None, None, RangeOutcome]:
    """Answer a peer's ranges from this side's store (pure: reads the store, changes nothing),
    pausing as ``initial_ranges`` does."""
    outcome = RangeOutcome()
    reply = outcome.reply
    lower: Bound = _START
    # Past this many reply ranges the rest is folded into one fingerprint for a later round,
    # which keeps every message under max_ranges however many differences there are.
    budget = config.max_ranges - config.fanout - 1
    for r in ranges:
        if r.mode == SKIP:
            # Agreed already: its items are not read (a late round is mostly SKIP ranges).
            _append(reply, Range(r.upper, SKIP))
        elif len(reply) >= budget:
            rest = yield from _listed(store.ordered(lower, None))
            _append(reply, Range(None, FINGERPRINT, (yield from _digest(rest))))
            return outcome
        else:
            yield  # (between ranges too: many small ones add up)
            items = yield from _listed(store.ordered(lower, r.upper))
            yield from _answer(items, r, outcome, config)
        if r.upper is not None:
            lower = r.upper
    return outcome


def _answer(
    items: list[Bound], r: Range, outcome: RangeOutcome, config: SyncConfig
) -> Generator[None, None, None]:
    """Answer one FINGERPRINT or IDS range from this side's items in it."""
    reply = outcome.reply
    if r.mode == FINGERPRINT:
        if (yield from _digest(items)) == r.payload:
            _append(reply, Range(r.upper, SKIP))
        else:
            reply.extend((yield from _split(items, r.upper, config.fanout, config)))
        return
    payload = r.payload
    theirs = [payload[i : i + KEY_SIZE] for i in range(0, len(payload), KEY_SIZE)]
    their_set = set(theirs)
    mine = [k for _, k in items]
    mine_set = set(mine)
    outcome.have.extend(k for k in mine if k not in their_set)
    outcome.need.extend(k for k in theirs if k not in mine_set)
    _append(reply, Range(r.upper, SKIP))
