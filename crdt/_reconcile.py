"""Sans-IO reconciliation: two replicas reach their union exchanging close to only the difference.

Pure session objects (bytes in, bytes out; no sockets, clocks or threads). The responder is a
stateless function, ``respond(store, request)``, so it fits one HTTP request/response and a
replayed or duplicated request is harmless; the ``Initiator`` holds the little state a session
has (queues of records to push and keys to fetch, the ranges under way).

Why this shape, and not Merkle buckets:

* **Fast path, per-origin version vectors.** Records carry (origin, seq), and replicas receive
  most records by eager push, so nearly every difference is "what origin X wrote after seq s"
  or a hole in a run. The request carries the initiator's vector (O(origins + holes) bytes) and
  the set fingerprint. Equal fingerprints: one round trip, a few hundred bytes. Otherwise the
  responder answers with exactly the records the initiator lacks plus its own vector, and the
  initiator's second request pushes exactly what the responder lacks: a healed partition costs
  two round trips and almost nothing beyond the records themselves. Past
  ``open_vector_origins`` origins (every experiment is one) the opening carries the vector's
  16-byte digest instead: an idle session stays one small round trip, and the responder
  answers a differing one with its vector; the initiator then pushes what the responder
  lacks and asks by (origin, lo, hi) run for what it lacks, still two round trips. After the
  opening, vectors go only from responder to initiator, which asks for the rest by run.
* **Backstop, range-based set reconciliation (crdt._ranges).** Version vectors trust that one
  (origin, seq) names one record. A node that lost its disk but kept its id, or a buggy peer,
  breaks that, and the fingerprints then still differ after the fast path. The backstop needs
  no such trust: it compares fingerprints of (time, key) ranges and recurses only into those
  that differ. Range-based reconciliation beats Merkle buckets here because its ranges are cut
  at the sender's own items (equal counts, no fixed tree to keep in step on both sides, no
  per-bucket state in the store) and because ordering by time puts a partition's recent
  records into a few adjacent ranges. The responder starts it in the very reply that finds the
  vectors equal but the fingerprints not, so no round trip is spent asking; also in place of a
  vector longer than its peer accepts (past ``max_origins`` origins). Every round after the
  first opens straight into it: a peer that keeps writing has a different vector at every
  look, so a fast path re-run would never reach it.

Messages are msgpack maps with one-letter fields:

* request ``{"k": "sync", "f": fingerprint, "v"?: vector, "vh"?: its digest, "b"?: open the
  backstop if the vectors agree but the sets do not, "p"?: records, "g"?: wanted runs
  [[origin, lo, hi], ...] of the responder's vector, "w"?: wanted keys, "r"?: ranges}`` and
  ``{"k": "push", "p": records}`` (eager push);
* response ``{"s": in sync, "f": fingerprint, "d"?: records, "v"?: vector, "m"?: more,
  "w"?: keys the responder wants, "h"?: keys it has but could not fit, "r"?: ranges, "t"?:
  keys left out of "h" or "w" for want of room}``. A round that moved records and ends after a
  "t" found a difference too large for its messages, not a set that keeps changing: the fresh
  round that finds the rest does not count towards ``max_rounds`` (``max_round_trips`` still
  bounds the session; a peer of an earlier release sends no "t", and its rounds all count).

Records travel as their exact bytes and are re-decoded on receipt (the key is re-hashed); one
malformed record makes the whole message a ProtocolError and nothing of it is stored. Messages
are capped (``SyncConfig``): records beyond ``max_message_bytes`` wait for the next round trip
(the initiator asks for the runs it still lacks, or fetches the keys the responder listed), so
a catch-up of a whole replica streams in chunks, each chunk one round trip in ``stats``.

A message of records is decoded and stored a slice at a time (``step`` records): ``respond``
and ``Initiator.receive`` do it all at once, while ``respond_steps`` and
``Initiator.receive_steps`` are generators that pause between slices, so that a shell can
let other work run in between (a 4 MiB message of 16,384 records, decoded, written and folded
by the peer's replica, held its event loop for most of a second). Every record of a message is
decoded before the first is stored, so a malformed one still keeps the whole message out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import msgpack

from crdt._errors import CrdtError, ProtocolError, RecordError, SessionBusy
from crdt._ranges import decode_ranges, encode_ranges, initial_ranges, process_ranges
from crdt._record import KEY_SIZE, MAX_RECORD_SIZE, ORIGIN_SIZE, Record
from crdt._store import Store
from crdt._vector import SeqSet, VersionVector

__all__ = [
    "Initiator",
    "SyncConfig",
    "SyncStats",
    "push_message",
    "respond",
    "respond_steps",
]

_T = TypeVar("_T")
# Records decoded, or stored, between two pauses: a few tens of milliseconds of work.
STEP = 2048


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """Limits and tuning of reconciliation; both peers should use the same limits."""

    max_message_bytes: int = 4 << 20  # record bytes per message (a bigger record goes alone)
    max_records: int = 16384  # records per message
    max_keys: int = 1 << 16  # keys listed per message (wants, haves, range key lists)
    max_ranges: int = 4096  # ranges per message
    max_origins: int = 1 << 16  # origins in a version vector
    max_vector_runs: int = 1 << 17  # runs of all its origins (about one an origin in use)
    # A session opens with the whole vector (the responder can answer with the records at
    # once) up to this many origins, and past it with the vector's digest: an idle session
    # then costs one small round trip however many origins there are (every experiment is
    # one); a catching-up one learns the responder's vector first, so records the initiator
    # lacks come a round trip later.
    open_vector_origins: int = 256
    initial_fanout: int = 64  # ranges of the backstop's first message
    fanout: int = 16  # sub-ranges a mismatching range is split into
    leaf_size: int = 8  # ranges with at most this many items are sent as key lists
    fast_path: bool = True  # start with version vectors (False: backstop only, for tests)
    # Fresh starts when a round ends without convergence (not counting those after a "t").
    max_rounds: int = 4
    max_idle_round_trips: int = 64  # round trips in a row without progress (see receive)
    max_round_trips: int = 1 << 16  # hard stop for a session against a misbehaving peer

    def __post_init__(self) -> None:
        if self.fanout < 2 or self.initial_fanout < 2 or self.leaf_size < 1:
            raise ValueError("fanout and initial_fanout must be >= 2 and leaf_size >= 1")
        if self.max_ranges < 2 * self.fanout + 2 or self.max_ranges < self.initial_fanout:
            raise ValueError("max_ranges must exceed 2 * fanout + 2 and initial_fanout")
        limits = (self.max_message_bytes, self.max_records, self.max_keys, self.max_origins,
                  self.max_vector_runs)  # fmt: skip
        if min(limits) < 1 or self.max_rounds < 1 or self.max_round_trips < 1:
            raise ValueError("message limits, max_rounds and max_round_trips must be positive")
        if self.max_idle_round_trips < 0 or self.open_vector_origins < 0:
            raise ValueError("max_idle_round_trips and open_vector_origins must not be negative")
        # A backstop message can hold max_ranges ranges listing up to leaf_size keys each; a
        # peer with the same config refuses more than max_keys of them.
        if self.max_keys < self.max_ranges * self.leaf_size:
            raise ValueError(
                f"max_keys ({self.max_keys}) must be at least max_ranges * leaf_size"
                f" ({self.max_ranges * self.leaf_size}): peers refuse the backstop's key lists"
            )


DEFAULT_CONFIG = SyncConfig()


@dataclass(slots=True)
class SyncStats:
    """What a session cost and how it ended."""

    round_trips: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    records_sent: int = 0
    records_received: int = 0
    record_bytes_sent: int = 0
    record_bytes_received: int = 0
    rounds: int = 1
    phase: str = ""  # "equal", "fast", "backstop" or "gave-up"
    converged: bool = False
    # This replica came to hold every record number the peer's first vector listed: all the
    # peer held when the session began, even if the session then gave up (see _finish).
    covered: bool = False


def _pack(message: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(message, use_bin_type=True)
    return data


# The only things a valid message's lists hold: records, keys and key prefixes (bytes), run
# bounds and range time deltas (int), open ends and absent payloads (None), vector entries
# (list). A list holding anything else is refused as soon as it is built.
_LISTED_TYPES = frozenset({bytes, int, type(None), list})


class _Shape:
    """Refuses, while msgpack builds a message, what no valid message holds.

    Length caps alone do not bound memory: 16 MiB of one-byte empty arrays become 16 million
    Python lists (1.1 GiB), and 62 MiB of version-vector runs 21 million ints (2 GB, and 14 s
    of a peer's event loop). Counting containers and their items and checking what lists hold
    keeps a decoded message within a small multiple of what a valid one costs.
    """

    __slots__ = ("items", "lists", "maps")

    def __init__(self, max_lists: int, max_items: int) -> None:
        self.lists = max_lists
        self.items = max_items
        self.maps = 1  # the message itself; fields never hold maps

    def list_hook(self, items: list[Any]) -> list[Any]:
        self.lists -= 1
        self.items -= len(items)
        if self.lists < 0 or self.items < 0:
            raise ValueError("more lists or list items than a message holds")
        if not _LISTED_TYPES.issuperset(map(type, items)):
            raise ValueError("a list holds a type no message lists")
        return items

    def object_hook(self, fields: dict[str, Any]) -> dict[str, Any]:
        self.maps -= 1
        if self.maps < 0:
            raise ValueError("a map inside a message")
        return fields


@lru_cache(maxsize=8)
def _unpack_limits(config: SyncConfig) -> dict[str, int]:
    """msgpack's per-object caps: the most any field of a valid message under config holds."""
    return {
        "max_str_len": 16,  # field names and request kinds
        "max_bin_len": max(MAX_RECORD_SIZE, config.max_keys * KEY_SIZE),
        # A vector's flat runs of one origin are capped like its origins: 2 numbers a run.
        "max_array_len": max(config.max_records, 2 * config.max_origins, 4 * config.max_ranges),
        "max_map_len": 32,
        "max_ext_len": 0,
    }


def _max_lists(config: SyncConfig) -> int:
    # A vector: one list, and two per origin; wanted runs: one, and one per run; a few more
    # for records, keys and ranges.
    return 3 * config.max_origins + 16


def _max_items(config: SyncConfig) -> int:
    # Records; a vector's entries (origin and runs list each) and two numbers a run; wanted
    # runs (a list of 3 each); ranges (4 items each); a few more.
    vector = 3 * config.max_origins + 2 * config.max_vector_runs
    return config.max_records + vector + 4 * config.max_origins + 4 * config.max_ranges + 64


def _unpack(data: bytes, what: str, config: SyncConfig) -> dict[str, Any]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(f"a {what} is bytes, not {type(data).__name__}")
    shape = _Shape(_max_lists(config), _max_items(config))
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            list_hook=shape.list_hook,
            object_hook=shape.object_hook,
            **_unpack_limits(config),
        )
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(f"undecodable {what}: {type(exc).__name__}: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"a {what} is a map")
    return value


def _finish_steps(steps: Generator[None, None, _T]) -> _T:
    """Run stepped work to its end without pausing; its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: _T = done.value
            return result


def _records(value: object, config: SyncConfig, step: int) -> Generator[None, None, list[Record]]:
    """Decode every record of a message before any is stored, pausing between slices."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > config.max_records:
        raise ProtocolError(f"records must be a list of at most {config.max_records}")
    out: list[Record] = []
    for start in range(0, len(value), step):
        if start:
            yield
        try:
            out += Record.decode_many(value[start : start + step])
        except RecordError as exc:
            raise ProtocolError(f"a received record is invalid: {exc}") from None
    return out


def _store(store: Store, records: list[Record], step: int) -> Generator[None, None, int]:
    """Add records a slice at a time (each slice one durable batch), pausing before each;
    how many were new."""
    new = 0
    for start in range(0, len(records), step):
        yield
        new += len(store.add(records[start : start + step]))
    return new


def _keys(value: object, config: SyncConfig) -> list[bytes]:
    if value is None:
        return []
    if not isinstance(value, bytes) or len(value) % KEY_SIZE:
        raise ProtocolError("a key list is bytes of 32-byte keys")
    if len(value) // KEY_SIZE > config.max_keys:
        raise ProtocolError(f"{len(value) // KEY_SIZE} keys exceed the limit of {config.max_keys}")
    return [value[i : i + KEY_SIZE] for i in range(0, len(value), KEY_SIZE)]


def _vector(value: object, config: SyncConfig) -> VersionVector:
    try:
        return VersionVector.from_wire(
            value, max_origins=config.max_origins, max_runs=config.max_vector_runs
        )
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"malformed version vector: {exc}") from None


def _fingerprint(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != 16:
        raise ProtocolError("a set fingerprint is 16 bytes")
    return value


class _Batch:
    """Records for one message, up to the byte and count caps (always at least one)."""

    __slots__ = ("config", "data", "size")

    def __init__(self, config: SyncConfig) -> None:
        self.config = config
        self.data: list[bytes] = []
        self.size = 0

    def take(self, data: bytes) -> bool:
        if self.data and (
            self.size + len(data) > self.config.max_message_bytes
            or len(self.data) >= self.config.max_records
        ):
            return False
        self.data.append(data)
        self.size += len(data)
        return True


def _runs(value: object, config: SyncConfig) -> list[tuple[bytes, int, int]]:
    """The (origin, lo, hi) runs a request asks for: [[origin, lo, hi], ...]."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > config.max_origins:
        raise ProtocolError(f"wanted runs must be a list of at most {config.max_origins}")
    out = []
    for entry in value:
        if (
            not isinstance(entry, list)
            or len(entry) != 3
            or not isinstance(entry[0], bytes)
            or len(entry[0]) != ORIGIN_SIZE
            or not all(type(n) is int and 1 <= n < 2**63 for n in entry[1:])
            or entry[1] > entry[2]
        ):
            raise ProtocolError("a wanted run is [origin, lo, hi] with 1 <= lo <= hi")
        out.append((entry[0], entry[1], entry[2]))
    return out


def _serve_runs(store: Store, runs: Iterable[tuple[bytes, int, int]], batch: _Batch) -> bool:
    """Add the runs' records to batch until it is full; True if some did not fit."""
    # batch.take inlined: this loop is every record of a catch-up.
    datas = batch.data
    size = batch.size
    cap = batch.config.max_message_bytes
    count_cap = batch.config.max_records
    try:
        for origin, lo, hi in runs:
            for _, data in store.raw_by_origin(origin, lo, hi):
                if datas and (size + len(data) > cap or len(datas) >= count_cap):
                    return True
                datas.append(data)
                size += len(data)
        return False
    finally:
        batch.size = size


def _roots_first(runs: Iterable[tuple[bytes, int, int]]) -> list[tuple[bytes, int, int]]:
    """Runs to send, the shortest first (then by origin, as listed).

    An origin of a few records is most often one whose records others link to: an experiment
    is an origin of its own with one record, and its trials and events fill the long runs of
    the nodes that ran them. Sent by origin alone, an experiment whose origin sorted after
    theirs came last in a catch-up, and the receiver folded its whole history at once (23 s
    for a million records); sent first, each message's records fold as they arrive.
    """
    return sorted(runs, key=lambda run: run[2] - run[1])


def _listable(vector: VersionVector, config: SyncConfig) -> list[list[object]] | None:
    """The vector's wire form if a peer with this config accepts it, else None."""
    # Each origin's runs go as one flat array of two numbers a run, which msgpack caps.
    too_many_runs = (
        2 * vector.most_runs() > _unpack_limits(config)["max_array_len"]
        or vector.total_runs() > config.max_vector_runs
    )
    if len(vector) > config.max_origins or too_many_runs:
        return None
    return vector.to_wire()


def push_message(records: list[Record]) -> bytes:
    """An eager push of new records; ``respond`` stores them and acknowledges."""
    return _pack({"k": "push", "p": [r.data for r in records]})


def respond(store: Store, request: bytes, config: SyncConfig = DEFAULT_CONFIG) -> bytes:
    """Answer one request of a session (or an eager push) from this replica's store.

    Args:
        store: this replica; records the request carries are added to it.
        request: the initiator's message bytes.
        config: limits; requests beyond them raise ProtocolError.
    Returns:
        The response bytes.
    """
    return _finish_steps(respond_steps(store, request, config))


def respond_steps(
    store: Store,
    request: bytes,
    config: SyncConfig = DEFAULT_CONFIG,
    step: int = STEP,
    *,
    busy: bool = False,
) -> Generator[None, None, bytes]:
    """``respond``, pausing after each ``step`` records decoded or stored; returns the response.

    The store may change while it is paused: it reads what it answers from only once it has
    stored the request's records, and the backstop's ranges a slice at a time (records added
    meanwhile may or may not be in its answer; a later round finds them, as it finds those
    added after it answered).
    busy: refuse a session's request with SessionBusy, storing nothing of it (a push is
    taken): the caller has a session of its own with the sender under way.
    """
    message = _unpack(request, "request", config)
    kind = message.get("k")
    if kind not in ("sync", "push"):
        raise ProtocolError(f"unknown request kind {kind!r}")
    if busy and kind == "sync":
        raise SessionBusy("a session with this peer is under way the other way")
    incoming = yield from _records(message.get("p"), config, step)
    if kind == "push":
        return _pack({"k": "ack", "n": (yield from _store(store, incoming, step))})
    theirs = _fingerprint(message.get("f"))
    wanted = _keys(message.get("w"), config)
    ranges = decode_ranges(message["r"], config) if message.get("r") is not None else None
    their_vv = _vector(message["v"], config) if message.get("v") is not None else None
    their_hash = _fingerprint(message["vh"]) if message.get("vh") is not None else None
    runs = _runs(message.get("g"), config)
    yield from _store(store, incoming, step)
    digest = store.fingerprint().digest()
    if digest == theirs:
        return _pack({"s": True, "f": digest})
    out: dict[str, Any] = {"s": False, "f": digest}
    batch = _Batch(config)
    overflow: list[bytes] = []
    left_out = False

    def offer(keys: list[bytes]) -> None:
        nonlocal left_out
        for key in keys:
            data = store.raw_get(key)
            if data is None or batch.take(data):
                continue
            if len(overflow) < config.max_keys:
                overflow.append(key)
            else:
                left_out = True

    offer(wanted)
    if ranges is not None:
        outcome = yield from process_ranges(store, ranges, config)
        if outcome.open:
            out["r"] = encode_ranges(outcome.reply)
        offer(outcome.have)
        if outcome.need:
            out["w"] = b"".join(outcome.need[: config.max_keys])
            left_out = left_out or len(outcome.need) > config.max_keys
    mine = store.version_vector()
    same_vectors = True
    send_vector = False
    if runs and _serve_runs(store, runs, batch):
        out["m"] = True
    if their_vv is not None:
        same_vectors = their_vv == mine
        if _serve_runs(store, _roots_first(mine.missing_from(their_vv)), batch):
            out["m"] = True
        send_vector = True
    elif their_hash is not None:
        same_vectors = mine.digest() == their_hash
        send_vector = not same_vectors
    unlistable = False
    if send_vector:
        wire = _listable(mine, config)
        unlistable = wire is None
        if wire is not None:
            out["v"] = wire
    backstop_now = unlistable or (same_vectors and not batch.data)
    if ranges is None and message.get("b") and backstop_now:
        # Same (origin, seq) pairs, different sets: only the backstop can find the difference.
        # A vector too long for the peer to accept: the backstop finds it without one.
        out["r"] = encode_ranges((yield from initial_ranges(store, config)))
    if batch.data:
        out["d"] = batch.data
    if overflow:
        out["h"] = b"".join(overflow)
    if left_out:
        out["t"] = True
    return _pack(out)


def _held_by(vector: VersionVector, key: bytes, data: bytes) -> bool:
    """Whether vector lists the (origin, seq) of this replica's record (key, data)."""
    # Rebuilt only here, for at most one record a response: the carry decides by its pair.
    record = Record.load(key, data)
    return vector.contains(record.origin, record.seq)


class Initiator:
    """The stateful side of one reconciliation session with one peer.

    Args:
        store: this replica; records received are added to it.
        config: limits and tuning (the peer should use the same limits).
    """

    def __init__(self, store: Store, config: SyncConfig = DEFAULT_CONFIG) -> None:
        self.store = store
        self.config = config
        self.stats = SyncStats()
        self.done = False
        self._started = False
        self._push_keys: deque[bytes] = deque()
        self._push_runs: list[tuple[bytes, int, int]] = []
        # The runs pushed whole in this session: not pushed again, whatever the peer's next
        # vector says (it stores a push before it answers, so one it did not take, it never
        # takes: each was pushed again at every answer, megabytes a minute to such a peer).
        self._pushed_runs = VersionVector()
        # (key, bytes) of records to send: only the bytes travel, so none is rebuilt.
        self._push_iter: Iterator[tuple[bytes, bytes]] | None = None
        self._carry: tuple[bytes, bytes] | None = None
        self._want: deque[bytes] = deque()
        self._backstop = False
        # The peer's vector as its last response listed it: what to ask it for by run.
        self._their_vv: VersionVector | None = None
        self._first_vv: VersionVector | None = None  # as its first response listed it
        self._asked_runs = False  # the last request asked for runs of the peer's vector
        self._idle = 0
        # Whether the last request pushed records, and the fingerprint the peer answered the
        # one before it with: a push the peer took changes its fingerprint (see receive).
        self._pushed = False
        self._their_fingerprint: bytes | None = None
        self._left_out = False  # the responder left keys out this round (its "t")
        self._round_moved = False  # records went either way this round
        self._counted_rounds = 1  # rounds that count towards max_rounds

    def start(self) -> bytes:
        """The first request."""
        if self._started:
            raise CrdtError("start() was already called; make a new Initiator per session")
        self._started = True
        return self._opening()

    def _opening(self) -> bytes:
        message: dict[str, Any] = {"k": "sync", "f": self.store.fingerprint().digest(), "b": True}
        # Only the first round opens with the vector. A later one follows a round that ended
        # with the sets still apart: under steady churn the vectors differ at every look, so
        # the fast path would never hand over to the backstop, and an equivocation would never
        # heal. An opening without a vector has the responder start the backstop at once.
        if self.config.fast_path and self.stats.rounds == 1:
            vector = self.store.version_vector()
            # Never a vector the peer refuses (too many origins, or an origin of more runs than
            # a message array holds: every session it opened failed): its digest goes instead.
            wire = _listable(vector, self.config)
            if wire is not None and len(vector) <= self.config.open_vector_origins:
                message["v"] = wire
            else:
                message["vh"] = vector.digest()
        self._backstop = False
        self._their_vv = None
        return self._send(message)

    def _send(self, message: dict[str, Any]) -> bytes:
        self._asked_runs = "g" in message
        data = _pack(message)
        self.stats.bytes_sent += len(data)
        return data

    def _finish(self, converged: bool, phase: str) -> None:
        self.done = True
        self.stats.converged = converged
        self.stats.phase = phase
        # Records landing on one side before the other (pushes under way) keep two busy
        # replicas' sets apart at every look: such a session gives up however much history
        # it brought (1 new record a round trip, each on one side first: 0 of 12 converged).
        # Holding all the peer held when the session began is the catch-up a restarted peer
        # waits for (not an equivocating second record under a number held: the backstop's).
        first = self._first_vv
        self.stats.covered = converged or (
            first is not None
            and next(first.missing_from(self.store.version_vector()), None) is None
        )

    def receive(self, response: bytes) -> bytes | None:
        """Take the peer's response; return the next request, or None when the session is over.

        Raises ProtocolError (and stores nothing of the response) if the response is malformed.
        """
        return _finish_steps(self.receive_steps(response))

    def receive_steps(
        self, response: bytes, step: int = STEP
    ) -> Generator[None, None, bytes | None]:
        """``receive``, pausing after each ``step`` records decoded or stored; returns what
        ``receive`` does. The session takes nothing else until it has returned."""
        if self.done or not self._started:
            raise CrdtError("receive() needs a started session that is not done")
        stats = self.stats
        stats.round_trips += 1
        stats.bytes_received += len(response)
        message = _unpack(response, "response", self.config)
        in_sync = message.get("s")
        if not isinstance(in_sync, bool):
            raise ProtocolError("a response says whether the sets are in sync")
        theirs = _fingerprint(message.get("f"))
        records = yield from _records(message.get("d"), self.config, step)
        their_vv = _vector(message["v"], self.config) if message.get("v") is not None else None
        wants = _keys(message.get("w"), self.config)
        haves = _keys(message.get("h"), self.config)
        ranges = decode_ranges(message["r"], self.config) if message.get("r") is not None else None
        more = message.get("m") is True
        self._left_out = self._left_out or message.get("t") is True
        # Progress, for max_idle_round_trips: records received, or a push the peer took (its
        # fingerprint moved, whoever moved it). A push counted however often the same records
        # went: a peer whose vector never listed what it was pushed (a lie, or a store that
        # drops them) had each pushed again 65,535 times, one session holding every caller's
        # anti-entropy for minutes. Records received count even if held here by then: another
        # session delivering the same history faster made a catch-up of ~2M records give up
        # half done when only records new here counted (a review, 21 of 21).
        took = self._pushed and theirs != self._their_fingerprint
        self._their_fingerprint = theirs
        if records or took:  # (before a new round opens too: a review, 12 of 200 sessions)
            self._idle = 0
        if records:
            self._round_moved = True
            yield from _store(self.store, records, step)
            stats.records_received += len(records)
            stats.record_bytes_received += sum(map(len, message["d"]))
        if in_sync:
            self._finish(True, self._phase())
            return None
        if their_vv is not None:
            if self._first_vv is None:
                self._first_vv = their_vv
            # The peer's vector already counts what it took from our last request, so this
            # replaces (never adds to) the queue of what it lacks.
            self._push_runs = _roots_first(self._unpushed(their_vv))
            self._their_vv = their_vv
            self._push_iter = None
            carry, self._carry = self._carry, None
            if carry is not None and _held_by(their_vv, *carry):
                # Asked for by key (the backstop's doing), so the new runs do not cover it.
                self._push_keys.appendleft(carry[0])
        if self._asked_runs and not records:
            # Its vector listed runs it did not send when asked (lost, or a lie): stop asking;
            # a fresh round compares the sets again.
            self._their_vv = None
        self._push_keys.extend(wants)
        self._want.extend(haves)
        reply_ranges = None
        if ranges is not None:
            self._backstop = True
            outcome = yield from process_ranges(self.store, ranges, self.config)
            self._push_keys.extend(outcome.have)
            self._want.extend(outcome.need)
            if outcome.open:
                reply_ranges = outcome.reply
        batch = self._fill()
        want = [self._want.popleft() for _ in range(min(len(self._want), self.config.max_keys))]
        mine = self.store.fingerprint().digest()
        lacking = self._lacking()
        if not (batch.data or want or reply_ranges or more or lacking):
            if mine == theirs:
                self._finish(True, self._phase())
                return None
            # Free only if it moved records: a peer saying "t" to every opening, moving
            # nothing, would otherwise hold the session for good.
            if not (self._left_out and self._round_moved):
                if self._counted_rounds >= self.config.max_rounds:
                    self._finish(False, "gave-up")
                    return None
                self._counted_rounds += 1
            if stats.round_trips >= self.config.max_round_trips:
                self._finish(False, "gave-up")
                return None
            self._left_out = self._round_moved = self._pushed = False
            stats.rounds += 1
            return self._opening()
        self._round_moved = self._round_moved or bool(records or batch.data)
        if not (records or took):
            self._idle += 1  # (set to 0 above, where progress is read)
        self._pushed = bool(batch.data)
        if (
            self._idle > self.config.max_idle_round_trips
            or stats.round_trips >= self.config.max_round_trips
        ):
            self._finish(False, "gave-up")
            return None
        out: dict[str, Any] = {"k": "sync", "f": mine}
        if batch.data:
            out["p"] = batch.data
            stats.records_sent += len(batch.data)
            stats.record_bytes_sent += batch.size
        if want:
            out["w"] = b"".join(want)
        if reply_ranges is not None:
            out["r"] = encode_ranges(reply_ranges)
        if lacking:
            # By run, not by sending our vector again: a vector lists every origin there is.
            out["g"] = [[origin, lo, hi] for origin, lo, hi in lacking]
        elif self.config.fast_path and not self._backstop:
            # "Mine is now this": if the peer's differs, it answers with its vector.
            out["vh"] = self.store.version_vector().digest()
            out["b"] = True
        return self._send(out)

    def _unpushed(self, their_vv: VersionVector) -> Iterator[tuple[bytes, int, int]]:
        """Runs held here that the peer's vector lacks, less those pushed in this session:
        one merge of the two per origin (run by run, a replica with 50,000 holes in one
        origin took 27 s in one step, the peer's loop held; a review)."""
        mine = self.store.version_vector()
        for origin in mine.origins():
            lacked = SeqSet(mine.get(origin).missing_from(their_vv.get(origin)))
            for lo, hi in lacked.missing_from(self._pushed_runs.get(origin)):
                yield origin, lo, hi

    def _lacking(self) -> list[tuple[bytes, int, int]]:
        """Runs the peer's last vector lists that this replica still lacks (a bounded list)."""
        if self._their_vv is None or self._backstop:
            return []
        missing = _roots_first(self._their_vv.missing_from(self.store.version_vector()))
        # Every run yields at least one record and an answer holds at most max_records.
        return missing[: min(self.config.max_origins, self.config.max_records)]

    def _phase(self) -> str:
        if self._backstop:
            return "backstop"
        return (
            "equal" if self.stats.round_trips == 1 and not self.stats.records_received else "fast"
        )

    def _pending(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, bytes) the peer lacks: first what it asked for by key, then its vector's gaps."""
        store = self.store
        while self._push_keys:
            key = self._push_keys.popleft()
            data = store.raw_get(key)
            if data is not None:
                yield key, data
        while self._push_runs:
            origin, lo, hi = self._push_runs.pop(0)
            yield from store.raw_by_origin(origin, lo, hi)
            self._pushed_runs.add_run(origin, lo, hi)  # (every record of it taken in a batch)

    def _fill(self) -> _Batch:
        batch = _Batch(self.config)
        if self._carry is not None:
            batch.take(self._carry[1])
            self._carry = None
        if self._push_iter is None:
            self._push_iter = self._pending()
        for key, data in self._push_iter:
            if not batch.take(data):
                self._carry = (key, data)
                break
        else:
            self._push_iter = None
        return batch
