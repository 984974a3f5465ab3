"""Records: one canonical encoding, the key names the exact bytes, bad input is refused."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import pickle
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt import (
    MAX_RECORD_SIZE,
    MalformedRecord,
    NonCanonicalRecord,
    OversizedRecord,
    Record,
    RecordError,
    canonical_packb,
    key_of,
)
from tests.strategies import record_values

ORIGIN = b"o" * 16


def raw(body: Any, *, kind: str = "trial", seq: int = 1, time: int = 5, links: Any = ()) -> bytes:
    """Plain msgpack of the record array (canonical only if body already is)."""
    data: bytes = msgpack.packb([1, kind, ORIGIN, seq, time, list(links), body], use_bin_type=True)
    return data


def test_same_bytes_for_any_dict_order() -> None:
    a = Record.create("trial", ORIGIN, 1, 5, {"b": 1, "a": {"y": 2, "x": [1, {"q": 1, "p": 2}]}})
    b = Record.create("trial", ORIGIN, 1, 5, {"a": {"x": [1, {"p": 2, "q": 1}], "y": 2}, "b": 1})
    assert a.data == b.data and a.key == b.key and a == b and hash(a) == hash(b)
    assert canonical_packb({"b": 1, "a": 2}) == canonical_packb({"a": 2, "b": 1})


def test_known_bytes_are_stable() -> None:
    """The encoding is pinned: a change here would fork every cluster's keys."""
    r = Record.create("trial", ORIGIN, 1, 5, {"b": 1.5, "a": [True, None, b"\x00", "s", -1]})
    expected = (
        b"\x97\x01\xa5trial\xc4\x10"
        + ORIGIN
        + b"\x01\x05\x90\x82\xa1a\x95\xc3\xc0\xc4\x01\x00\xa1s"
        b"\xff\xa1b\xcb" + struct.pack(">d", 1.5)
    )
    assert r.data == expected
    assert r.key == hashlib.blake2b(expected, digest_size=32).digest() == key_of(expected)


def test_records_are_immutable_and_copy_by_value() -> None:
    r = Record.create("event", ORIGIN, 7, 123, {"m": [1, 2]}, [b"k" * 32])
    for field in ("key", "data", "kind", "origin", "seq", "time", "links", "body", "other"):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(r, field, None)
        with pytest.raises(dataclasses.FrozenInstanceError):
            delattr(r, field)
    built = Record(r.key, r.data, r.kind, r.origin, r.seq, r.time, r.links, r.body)
    for twin in (built, copy.copy(r), copy.deepcopy(r), pickle.loads(pickle.dumps(r))):
        assert type(twin) is Record and twin == r and hash(twin) == hash(r)
        assert (twin.key, twin.data, twin.kind, twin.origin, twin.seq, twin.time) == (
            r.key,
            r.data,
            r.kind,
            r.origin,
            r.seq,
            r.time,
        )
        assert (twin.links, twin.body) == (r.links, r.body)


def test_decode_round_trip_keeps_exact_bytes() -> None:
    r = Record.create("event", ORIGIN, 7, 123, {"m": {"loss": 0.25}}, [b"k" * 32])
    d = Record.decode(r.data)
    assert d.data == r.data and d.key == r.key == key_of(r.data)
    assert (d.kind, d.origin, d.seq, d.time, d.links, d.body) == (
        "event",
        ORIGIN,
        7,
        123,
        (b"k" * 32,),
        {"m": {"loss": 0.25}},
    )
    for view in (bytearray(r.data), memoryview(r.data)):
        assert Record.decode(view).key == r.key  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        # map keys out of order
        raw({"a": 1})[:-4] + b"\x82\xa1b\x01\xa1a\x02",
        # an int that fits a fixint written as uint8 / uint64 / int16
        raw(0)[:-1] + b"\xcc\x05",
        raw(0)[:-1] + b"\xcf" + struct.pack(">Q", 5),
        raw(0)[:-1] + b"\xd1" + struct.pack(">h", -3),
        # a float32 where records carry float64
        raw(0)[:-1] + b"\xca" + struct.pack(">f", 1.5),
        # str8 where a fixstr fits, bin16 where bin8 fits, array16 where a fixarray fits
        raw(0)[:-1] + b"\xd9\x02ab",
        raw(0)[:-1] + b"\xc5\x00\x01x",
        raw(0)[:-1] + b"\xdc\x00\x01\x01",
        # the whole record as an array16
        b"\xdc\x00\x07" + raw(0)[1:],
        # a duplicated map key
        raw({"a": 1})[:-4] + b"\x82\xa1a\x01\xa1a\x02",
    ],
)
def test_rejects_non_canonical(data: bytes) -> None:
    with pytest.raises(NonCanonicalRecord):
        Record.decode(data)


@pytest.mark.parametrize(
    "data",
    [
        raw(0)[:-1] + b"\xd4\x05\x00",  # fixext1
        raw(0)[:-1] + b"\xd6\xff" + struct.pack(">I", 0),  # timestamp32
        raw(0)[:-1] + b"\xd7\xff" + bytes(8),  # timestamp64
        raw(0)[:-1] + b"\xc7\x0c\xff" + bytes(12),  # timestamp96
        raw(0)[:-1] + b"\xc7\x01\x07\x00",  # ext8
    ],
)
def test_rejects_ext_types_including_timestamp(data: bytes) -> None:
    with pytest.raises(RecordError):
        Record.decode(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"\x97",
        raw(0)[:-1],
        raw(0) + b"\x00",  # trailing bytes
        msgpack.packb([1, "trial", ORIGIN, 1, 5, []]),  # six fields
        msgpack.packb({"kind": "trial"}),
        msgpack.packb([2, "trial", ORIGIN, 1, 5, [], 0]),  # unknown format
        msgpack.packb([True, "trial", ORIGIN, 1, 5, [], 0]),
        # A float equals 1 and re-encodes as itself: a second key for the same record.
        msgpack.packb([1.0, "trial", ORIGIN, 1, 5, [], 0]),
        raw(0, kind=""),
        raw(0, kind="x" * 65),
        raw(0, seq=0),
        raw(0, seq=-1),
        raw(0, time=-1),
        # One past the 63-bit range the fast path checks (it once let 2**63 through).
        raw(0, time=2**63),
        raw(0, seq=2**63),
        raw(0, links=[b""]),
        raw(0, links=[b"k" * 65]),  # one byte past MAX_LINK
        raw(0, links=[b"x"] * 17),
        raw(0, links=["text"]),
        msgpack.packb([1, "trial", b"short", 1, 5, [], 0]),
        msgpack.packb([1, "trial", ORIGIN, 1, 5, b"notalist", 0]),
        msgpack.packb([1, "trial", ORIGIN, True, 5, [], 0]),
        raw(0)[:-1] + b"\xa2\xff\xfe",  # invalid UTF-8
    ],
)
def test_rejects_malformed(data: bytes) -> None:
    with pytest.raises(MalformedRecord):
        Record.decode(data)


def test_rejects_non_bytes() -> None:
    with pytest.raises(MalformedRecord):
        Record.decode("text")  # type: ignore[arg-type]


def test_rejects_oversized() -> None:
    big = Record.create("blob", ORIGIN, 1, 1, b"x" * 2000)
    with pytest.raises(OversizedRecord):
        Record.decode(big.data, max_size=1000)
    with pytest.raises(OversizedRecord, match="split"):
        Record.create("blob", ORIGIN, 1, 1, b"x" * 2000, max_size=1000)
    with pytest.raises(OversizedRecord):
        Record.create("blob", ORIGIN, 1, 1, b"x" * MAX_RECORD_SIZE)
    with pytest.raises(OversizedRecord):
        Record.decode(b"\x00" * (MAX_RECORD_SIZE + 1))


@pytest.mark.parametrize(
    "body",
    [float("nan"), {1: "int key"}, {"s": {1, 2}}, 2**64, -(2**63) - 1, object()],
)
def test_create_refuses_values_without_one_encoding(body: Any) -> None:
    with pytest.raises(RecordError):
        Record.create("trial", ORIGIN, 1, 1, body)


def test_create_checks_header() -> None:
    for args in [("", ORIGIN, 1, 1), ("t", b"x", 1, 1), ("t", ORIGIN, 0, 1), ("t", ORIGIN, 1, -1)]:
        with pytest.raises(RecordError):
            Record.create(*args, body=None)


@given(
    record_values,
    st.text(min_size=1, max_size=16),
    st.integers(1, 2**63 - 1),
    st.integers(0, 2**63 - 1),
    st.lists(st.binary(min_size=1, max_size=64), max_size=4),
)
def test_round_trip_generated(
    body: Any, kind: str, seq: int, time: int, links: list[bytes]
) -> None:
    r = Record.create(kind, ORIGIN, seq, time, body, links)
    d = Record.decode(r.data)
    assert d.data == r.data and d.key == key_of(r.data) == r.key
    assert (d.kind, d.seq, d.time, d.links) == (kind, seq, time, tuple(links))
    assert canonical_packb(d.body) == canonical_packb(body)
    assert Record.load(r.key, r.data).body == d.body


@given(st.dictionaries(st.text(max_size=6), st.integers(-(2**63), 2**63), max_size=8), st.randoms())
def test_dict_order_never_changes_the_key(mapping: dict[str, int], rnd: Any) -> None:
    items = list(mapping.items())
    rnd.shuffle(items)
    a = Record.create("t", ORIGIN, 1, 1, mapping)
    b = Record.create("t", ORIGIN, 1, 1, dict(items))
    assert a.data == b.data


def test_decode_refuses_nan_like_create() -> None:
    nan = raw(0.5)[:-8] + struct.pack(">Q", 0x7FF8000000000001)
    with pytest.raises(RecordError):
        Record.decode(nan)


def test_decode_many_matches_decode() -> None:
    records = [
        Record.create(
            "event", ORIGIN, i, 10 * i, {"m": {"loss": i / 3}, "s": [i, "x"]}, [b"k" * 32]
        )
        for i in range(1, 20)
    ]
    decoded = Record.decode_many([r.data for r in records])
    assert [(d.key, d.data, d.body, d.links) for d in decoded] == [
        (r.key, r.data, r.body, r.links) for r in records
    ]
    assert Record.decode_many([]) == []
    views = iter([bytearray(records[0].data)])
    assert Record.decode_many(views)[0].key == records[0].key  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        raw({"a": 1})[:-4] + b"\x82\xa1b\x01\xa1a\x02",  # unsorted keys
        raw(0)[:-1] + b"\xd6\xff" + struct.pack(">I", 0),  # timestamp
        raw(0) + b"\x00",
        b"\xc1",
    ],
)
def test_decode_many_refuses_a_batch_with_one_bad_record(bad: bytes) -> None:
    good = Record.create("trial", ORIGIN, 1, 1, {"a": 1}).data
    with pytest.raises(RecordError):
        Record.decode_many([good, bad, good])
    with pytest.raises(OversizedRecord):
        Record.decode_many([good, b"\x00" * 50], max_size=40)


def _body_bytes(packed_body: bytes) -> bytes:
    return raw(0)[:-1] + packed_body


@pytest.mark.parametrize(
    ("packed_body", "error"),
    [
        # unsorted keys inside a map inside a list inside a map
        (b"\x81\xa1a\x91\x82\xa1y\x01\xa1x\x02", NonCanonicalRecord),
        # an integer, a bin and a nil map key, nested
        (b"\x91\x81\x01\x02", NonCanonicalRecord),
        (b"\x81\xa1a\x81\xc4\x01k\x02", NonCanonicalRecord),
        (b"\x91\x81\xc0\x02", NonCanonicalRecord),
        # NaN at depth
        (b"\x81\xa1a\x92\x01\xcb" + struct.pack(">d", float("nan")), RecordError),
        # a timestamp inside a map value
        (b"\x81\xa1t\xd6\xff" + struct.pack(">I", 7), RecordError),
    ],
)
def test_decode_checks_every_level(packed_body: bytes, error: type[Exception]) -> None:
    data = _body_bytes(packed_body)
    with pytest.raises(error):
        Record.decode(data)
    with pytest.raises(error):
        Record.decode_many([data])


def test_decode_accepts_infinities_and_deep_nesting_without_recursion() -> None:
    body: Any = [float("inf"), float("-inf"), {"a": {"b": [{"c": None}]}}]
    r = Record.create("t", ORIGIN, 1, 1, body)
    assert Record.decode(r.data).body == body
    deep = _body_bytes(b"\x91" * 5000 + b"\x01")
    with pytest.raises(RecordError):  # msgpack's own nesting limit; never a RecursionError
        Record.decode(deep)


@given(record_values, st.binary(max_size=6), st.integers(0, 200))
def test_decode_many_agrees_with_decode_on_mutations(body: Any, junk: bytes, at: int) -> None:
    data = Record.create("t", ORIGIN, 1, 1, body).data
    mutated = data[:at] + junk + data[at + len(junk) :]
    try:
        one: Record | None = Record.decode(mutated)
    except RecordError as exc:
        with pytest.raises(type(exc)):
            Record.decode_many([mutated])
        return
    (many,) = Record.decode_many([mutated])
    assert one is not None and many.key == one.key and many.data == one.data == mutated


# Raw msgpack values as a peer might send them: maps in any order and with any key types, NaN,
# timestamps, byte strings shaped like a float64 NaN.
_raw_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=6)
    | st.binary(max_size=6)
    | st.just(b"\xcb\x7f\xf8\x00")
    | st.builds(msgpack.Timestamp, st.integers(0, 2**34 - 1), st.integers(0, 10**9 - 1))
)
_raw_value = st.recursive(
    _raw_leaf,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=3) | st.binary(max_size=2) | st.integers(0, 3), children, max_size=4
        )
    ),
    max_leaves=12,
)
_raw_header = st.tuples(
    st.sampled_from([1, 1, 1.0, True, 2]),
    st.sampled_from(["event", "x" * 16, "x" * 17, "\u00e9" * 16, "\U0001f600" * 17, "", 5]),
    st.sampled_from([ORIGIN, b"short"]),
    st.sampled_from([1, 2**63 - 1, 2**63, 0, True, 1.0]),
    st.sampled_from([0, 2**63 - 1, 2**63, -1]),
    st.sampled_from([[], [b"k" * 32], [b"k" * 64, b"x"], [b""], [b"k" * 65], ["s"], [b"x"] * 17]),
)


def _verdict(decode: Any, data: bytes) -> tuple[Any, ...]:
    try:
        r = decode(data)
    except RecordError as exc:
        return (type(exc), str(exc))
    return (r.key, r.data, r.kind, r.origin, r.seq, r.time, r.links, canonical_packb(r.body))


@given(_raw_header, _raw_value, st.booleans())
def test_fast_decoding_gives_the_exact_checks_verdict(
    header: tuple[Any, ...], body: Any, plain_header: bool
) -> None:
    """Record.decode skips the body walk when it can prove the walk would pass; never otherwise."""
    from crdt._record import _decode_exact, _packb

    fields = [1, "event", ORIGIN, 3, 5, [b"k" * 32]] if plain_header else list(header)
    data = msgpack.packb([*fields, body], use_bin_type=True)
    exact = _verdict(lambda d: _decode_exact(d, _packb), data)
    assert _verdict(Record.decode, data) == exact
    assert _verdict(lambda d: Record.decode_many([d])[0], data) == exact
