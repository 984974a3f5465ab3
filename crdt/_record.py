"""Immutable records in one canonical msgpack encoding, named by the BLAKE2b-256 of their bytes.

A record is the unit of replication. Its bytes are the array
``[FORMAT, kind, origin, seq, time, links, body]``; the same record gives the same bytes on every
machine because maps are written with keys in sorted order, integers in their shortest form and
floats always as float64 (msgpack-python's own rules), and decoding re-encodes and compares, so
a second spelling of the same value is rejected instead of getting a second key.

``origin`` and ``seq`` make the fast reconciliation path possible (per-origin version vectors);
``time`` (milliseconds at the origin) orders records for range-based reconciliation, where
clustered recent differences fall into few ranges; ``links`` are the keys of the records this one
belongs to, which the stores index so a fold over one experiment never scans the whole set.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import FrozenInstanceError
from typing import Any

import msgpack

from crdt._errors import MalformedRecord, NonCanonicalRecord, OversizedRecord, RecordError

__all__ = [
    "FORMAT",
    "KEY_SIZE",
    "MAX_RECORD_SIZE",
    "ORIGIN_SIZE",
    "Record",
    "canonical_packb",
    "key_of",
]

FORMAT = 1
KEY_SIZE = 32
ORIGIN_SIZE = 16
MAX_RECORD_SIZE = 1 << 20
MAX_LINKS = 16
MAX_LINK = 64
MAX_KIND = 64
_U63 = 1 << 63
_blake2b = hashlib.blake2b
_unpackb = msgpack.unpackb


def key_of(data: bytes) -> bytes:
    """The record key: BLAKE2b-256 of the exact bytes."""
    return _blake2b(data, digest_size=KEY_SIZE).digest()


def _canonical(value: Any) -> Any:
    """The value rebuilt with sorted map keys, refusing what has no single encoding."""
    if isinstance(value, dict | Mapping):
        items = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise RecordError(f"map keys must be strings, got {type(k).__name__}")
            items.append((k, _canonical(v)))
        items.sort(key=lambda kv: kv[0])
        return dict(items)
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        if math.isnan(value):
            raise RecordError("NaN has no canonical encoding; record a missing value as None")
        return value
    if value is None or isinstance(value, bool | int | str | bytes):
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
            raise RecordError(f"integer {value} does not fit in 64 bits")
        return value
    raise RecordError(f"cannot record a value of type {type(value).__name__}")


def canonical_packb(value: Any) -> bytes:
    """Encode a plain value (maps with str keys, lists, str, bytes, int, float, bool, None)."""
    data: bytes = msgpack.packb(_canonical(value), use_bin_type=True)
    return data


class _Fields:
    """Record's slots, writable: a record is built as one of these and then becomes a Record.

    Assigning each slot and then ``__class__`` is a quarter of what a frozen dataclass's
    ``__init__`` costs (an ``object.__setattr__`` per field), and replicas build one record per
    record received; the Record that results refuses assignment all the same.
    """

    __slots__ = ("body", "data", "key", "kind", "links", "origin", "seq", "time")

    key: bytes
    data: bytes
    kind: str
    origin: bytes
    seq: int
    time: int
    links: tuple[bytes, ...]
    body: Any


_blank = _Fields.__new__


class Record(_Fields):
    """One immutable record; equality and hashing are by key."""

    __slots__ = ()

    def __new__(
        cls,
        key: bytes,
        data: bytes,
        kind: str,
        origin: bytes,
        seq: int,
        time: int,
        links: tuple[bytes, ...],
        body: Any,
    ) -> Record:
        record = _blank(_Fields)
        record.key = key
        record.data = data
        record.kind = kind
        record.origin = origin
        record.seq = seq
        record.time = time
        record.links = links
        record.body = body
        record.__class__ = Record  # the same slots, so allowed; from here on it is immutable
        return record  # type: ignore[return-value]  # a Record since the line above

    @classmethod
    def create(
        cls,
        kind: str,
        origin: bytes,
        seq: int,
        time: int,
        body: Any,
        links: Iterable[bytes] = (),
        *,
        max_size: int = MAX_RECORD_SIZE,
    ) -> Record:
        """Build a record, encoding it canonically.

        Args:
            kind: what the record is ("trial", "event", ...), at most 64 characters.
            origin: the writing node's 16-byte id.
            seq: the origin's sequence number for this record, from 1, never reused.
            time: milliseconds since the epoch at the origin.
            body: plain msgpack-able value.
            links: keys of records this one belongs to (indexed by the stores).
            max_size: refuse records larger than this many bytes.
        Returns:
            The record; ``key`` names its exact bytes.
        """
        links = tuple(links)
        _check_header(kind, origin, seq, time, links)
        try:
            body = _canonical(body)
        except RecursionError:  # (_canonical recurses; a list costs it two frames a level)
            raise RecordError("the record body is nested too deeply") from None
        try:
            data = msgpack.packb(
                [FORMAT, kind, origin, seq, time, list(links), body], use_bin_type=True
            )
        except UnicodeEncodeError:
            raise RecordError("strings must be valid Unicode (no lone surrogates)") from None
        except ValueError as exc:  # msgpack's nesting limit
            raise RecordError(f"cannot encode the record: {exc}") from None
        if len(data) > max_size:
            raise OversizedRecord(
                f"a {kind} record of {len(data)} bytes exceeds the {max_size}-byte limit;"
                " split it into smaller records"
            )
        return _new(Record, key_of(data), data, kind, origin, seq, time, links, body)

    @classmethod
    def decode(cls, data: bytes, *, max_size: int = MAX_RECORD_SIZE) -> Record:
        """Parse received bytes, keeping them exactly; raise a RecordError subclass if invalid."""
        return _decode(data, max_size, _packb)

    @classmethod
    def decode_many(
        cls, datas: Iterable[bytes], *, max_size: int = MAX_RECORD_SIZE
    ) -> list[Record]:
        """Decode a batch with Record.decode's checks; raise on the first invalid one.

        Args:
            datas: received record bytes.
            max_size: refuse records larger than this many bytes.
        Returns:
            The records, in the order given.
        """
        # One Packer for the whole batch; msgpack.packb builds one per call.
        pack = msgpack.Packer(use_bin_type=True).pack
        return [_decode(data, max_size, pack) for data in datas]

    @classmethod
    def load(cls, key: bytes, data: bytes) -> Record:
        """Rebuild a record from bytes this replica already verified (its own store)."""
        _fmt, kind, origin, seq, time, links, body = msgpack.unpackb(
            data, raw=False, strict_map_key=False
        )
        return _new(Record, key, data, kind, origin, seq, time, tuple(links), body)

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}: records are immutable")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}: records are immutable")

    def __reduce__(self) -> tuple[type[Record], tuple[Any, ...]]:
        # copy and pickle would otherwise restore the slots through the refused __setattr__.
        return (
            Record,
            (
                self.key,
                self.data,
                self.kind,
                self.origin,
                self.seq,
                self.time,
                self.links,
                self.body,
            ),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return (
            f"Record({self.kind} {self.key.hex()[:12]} origin={self.origin.hex()[:8]}"
            f" seq={self.seq})"
        )


# Record(...) minus type.__call__'s detour (a fifth of building one): _new(Record, ...).
_new = Record.__new__


def _reject_ext(code: int, data: bytes) -> Any:
    raise MalformedRecord(f"msgpack extension type {code} is not allowed in records")


def _packb(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def _decode(data: Any, max_size: int, pack: Callable[[Any], bytes]) -> Record:
    """Record.decode: a fast path for the common record, the exact checks for anything else.

    The fast path accepts only what the exact checks (``_decode_exact``) accept, and anything
    it is unsure of goes to them for the verdict, so both give the same record or the same
    error. It saves the Python walk over the body (a third of the decoding cost): msgpack calls
    ``_sorted_str_keys`` on each map as it builds it, Timestamps arrive as integers (which
    re-encode differently, so they fail the byte comparison), and a NaN can only hide where the
    bytes hold float64's NaN pattern, which one regular-expression scan rules out.
    """
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MalformedRecord(f"a record is bytes, not {type(data).__name__}")
        data = bytes(data)
    if len(data) > max_size:
        raise OversizedRecord(f"record of {len(data)} bytes exceeds the {max_size}-byte limit")
    try:
        value = _unpackb(
            data, raw=False, timestamp=2, object_hook=_sorted_str_keys, ext_hook=_reject_ext
        )
    except Exception:
        return _decode_exact(data, pack)
    if type(value) is not list or len(value) != 7:
        return _decode_exact(data, pack)
    fmt, kind, origin, seq, time, links, body = value
    # unpackb makes exact types, and 16 characters are at most 64 UTF-8 bytes.
    if not (
        type(fmt) is int
        and fmt == FORMAT
        and type(kind) is str
        and 0 < len(kind) <= MAX_KIND // 4
        and type(origin) is bytes
        and len(origin) == ORIGIN_SIZE
        and type(seq) is int
        and 0 < seq < _U63
        and type(time) is int
        and 0 <= time < _U63
        and type(links) is list
        and len(links) <= MAX_LINKS
    ):
        return _decode_exact(data, pack)
    for link in links:
        if type(link) is not bytes or not 0 < len(link) <= MAX_LINK:
            return _decode_exact(data, pack)
    if _NAN_BYTES(data) is not None:
        return _decode_exact(data, pack)
    try:
        canonical = pack(value) == data
    except Exception:
        canonical = False
    if not canonical:
        return _decode_exact(data, pack)
    return _new(
        Record,
        _blake2b(data, digest_size=KEY_SIZE).digest(),
        data,
        kind,
        origin,
        seq,
        time,
        tuple(links),
        body,
    )


class _Unsure(Exception):
    """Raised inside the fast path's unpacking: let the exact checks decide."""


def _sorted_str_keys(mapping: dict[Any, Any]) -> dict[Any, Any]:
    keys = [*mapping]
    # strict_map_key leaves only str and bytes keys, and sorting a mix of the two raises.
    if keys != sorted(keys) or (keys and type(keys[0]) is not str):
        raise _Unsure
    return mapping


# float64 NaN is 0xcb, then a sign bit and eleven exponent bits all set (infinities match too).
_NAN_BYTES = re.compile(rb"\xcb[\x7f\xff][\xf0-\xff]").search


def _decode_exact(data: bytes, pack: Callable[[Any], bytes]) -> Record:
    """Every check, in the order that decides which error a bad record gets."""
    try:
        value = _unpackb(data, raw=False, strict_map_key=False, ext_hook=_reject_ext)
    except RecordError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise MalformedRecord(f"undecodable record: {type(exc).__name__}") from None
    if type(value) is not list or len(value) != 7:
        raise MalformedRecord("a record is an array of 7 fields")
    fmt, kind, origin, seq, time, links, body = value
    if type(fmt) is not int or fmt != FORMAT:  # (1.0 and True equal 1: second spellings)
        raise MalformedRecord(f"unknown record format {fmt!r}")
    if type(links) is not list:
        raise MalformedRecord("links must be an array")
    links = tuple(links)
    try:
        _check_header(kind, origin, seq, time, links)
    except RecordError as exc:
        raise MalformedRecord(str(exc)) from None
    _check_body(body)
    # Everything else with a second spelling (integer and float widths, str/bin/array/map
    # lengths, duplicate map keys, trailing bytes) re-encodes differently.
    try:
        again = pack(value)
    except Exception as exc:
        raise MalformedRecord(f"unencodable record: {type(exc).__name__}") from None
    if again != data:
        raise NonCanonicalRecord("record bytes are not in canonical msgpack form")
    return _new(Record, key_of(data), data, kind, origin, seq, time, links, body)


# What unpackb yields besides containers and floats; msgpack's Timestamp is not among them.
_LEAVES = frozenset({str, bytes, int, bool, type(None)})


def _check_body(body: Any) -> None:
    """Raise unless body is what create makes: str map keys in sorted order, no NaN, plain types.

    These are what a re-encoding cannot see (msgpack writes a map in the order it holds and
    NaN bits as they are), so one iterative pass checks them all; no recursion limit applies.
    """
    stack: list[Any] = [[body]]
    pop = stack.pop
    push = stack.append
    while stack:
        items = pop()
        if type(items) is dict:
            keys = list(items)
            for k in keys:
                if type(k) is not str:
                    raise NonCanonicalRecord("map keys must be strings")
            # A dict holds each key once, so sorted here means strictly ascending; a key sent
            # twice decodes to a shorter map, which the re-encoding then catches.
            if keys != sorted(keys):
                raise NonCanonicalRecord("map keys are not in sorted order")
            items = items.values()
        for v in items:
            t = type(v)
            if t in _LEAVES:
                continue
            if t is float:
                # create refuses NaN; its many bit patterns would give one value many keys.
                if v != v:
                    raise MalformedRecord("record body holds NaN; a missing value is None")
            elif t is dict or t is list:
                push(v)
            else:
                raise MalformedRecord(
                    f"record body holds a {t.__name__}, which records do not carry"
                )


def _check_header(kind: Any, origin: Any, seq: Any, time: Any, links: tuple[Any, ...]) -> None:
    # Bytes, not characters: the LevelDB index prefixes the kind with a one-byte length.
    if not isinstance(kind, str) or not 0 < len(kind.encode("utf-8", "replace")) <= MAX_KIND:
        raise RecordError(f"kind must be a string of 1 to {MAX_KIND} UTF-8 bytes")
    if not isinstance(origin, bytes) or len(origin) != ORIGIN_SIZE:
        raise RecordError(f"origin must be {ORIGIN_SIZE} bytes")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq < 2**63:
        raise RecordError("seq must be an integer from 1")
    if isinstance(time, bool) or not isinstance(time, int) or not 0 <= time < 2**63:
        raise RecordError("time must be a non-negative integer of milliseconds")
    if len(links) > MAX_LINKS:
        raise RecordError(f"at most {MAX_LINKS} links")
    for link in links:
        if not isinstance(link, bytes) or not 0 < len(link) <= MAX_LINK:
            raise RecordError("a link is 1 to 64 bytes")
