"""Record rules a mutation audit of crdt/_record.py found unpinned by the other tests."""

from __future__ import annotations

import struct
import sys
from typing import Any

import msgpack
import pytest

from crdt import OversizedRecord, Record, RecordError

ORIGIN = b"o" * 16


def _raw(body_bytes: bytes, *, kind: str = "trial") -> bytes:
    """A record array [1, kind, ORIGIN, 1, 5, [], body] whose body is given as msgpack bytes."""
    head: bytes = msgpack.packb([1, kind, ORIGIN, 1, 5, [], None], use_bin_type=True)
    return head[:-1] + body_bytes


def test_create_refuses_a_lone_surrogate_as_a_record_error() -> None:
    """Pins create's UnicodeEncodeError catch: a caller catching RecordError (the documented
    error) would otherwise see a bare UnicodeEncodeError escape from a trial's parameters."""
    with pytest.raises(RecordError, match="Unicode"):
        Record.create("trial", ORIGIN, 1, 1, {"name": "\ud800"})
    with pytest.raises(RecordError):
        Record.create("trial", ORIGIN, 1, 1, ["ok", "\udfff"])


def test_create_refuses_nesting_past_msgpacks_limit_as_a_record_error() -> None:
    """Pins create's ValueError catch (msgpack's own nesting limit): the refusal is a
    RecordError, not a ValueError. The recursion limit is raised only so the body reaches
    msgpack; under the default limit the body walk stops first."""
    body: Any = 1
    for _ in range(1500):
        body = {"a": body}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 5000))
    try:
        with pytest.raises(RecordError, match="cannot encode"):
            Record.create("trial", ORIGIN, 1, 1, body)
    finally:
        sys.setrecursionlimit(limit)


def test_a_record_of_exactly_max_size_bytes_is_accepted_both_ways() -> None:
    """Pins the size limit as inclusive (len > max_size refused, == accepted) in create and in
    decode: peers with the same limit must agree on the record at the edge, or one of them
    writes a record every other one refuses (and a refused record fails its whole message)."""
    data = Record.create("blob", ORIGIN, 1, 1, b"x" * 100).data
    size = len(data)
    made = Record.create("blob", ORIGIN, 1, 1, b"x" * 100, max_size=size)
    assert made.data == data
    assert Record.decode(data, max_size=size).data == data
    assert Record.decode_many([data], max_size=size)[0].data == data
    with pytest.raises(OversizedRecord):
        Record.create("blob", ORIGIN, 1, 1, b"x" * 100, max_size=size - 1)
    with pytest.raises(OversizedRecord):
        Record.decode(data, max_size=size - 1)


@pytest.mark.parametrize(
    "bits",
    [0x7FF0000000000001, 0xFFF0000000000001, 0x7FF0000000000100, 0x7FF7FFFFFFFFFFFF],
    ids=["snan", "negative-snan", "snan-low-payload", "snan-high-payload"],
)
def test_decode_refuses_every_nan_bit_pattern(bits: int) -> None:
    """Pins the fast path's NaN byte scan down to NaNs whose mantissa's top bits are zero
    (signalling NaNs, third byte 0xf0-0xf7): each bit pattern would be a distinct record key
    for the same missing value, which create refuses outright."""
    data = _raw(b"\x91\xcb" + struct.pack(">Q", bits))
    with pytest.raises(RecordError, match="NaN"):
        Record.decode(data)
    with pytest.raises(RecordError, match="NaN"):
        Record.decode_many([data])


def test_decode_accepts_infinities_beside_the_nan_scan() -> None:
    """The NaN scan's byte range also matches infinities; they are valid and must still pass."""
    for value in (float("inf"), float("-inf")):
        data = _raw(b"\xcb" + struct.pack(">d", value))
        assert Record.decode(data).body == value


@pytest.mark.parametrize("kind", ["k" * 64, "\u00e9" * 32, "\U0001f600" * 16])
def test_a_kind_of_exactly_64_utf8_bytes_is_accepted(kind: str) -> None:
    """Pins MAX_KIND as inclusive (1 to 64 UTF-8 bytes): a kind at the limit is created,
    decoded and round-trips; one byte more is refused by both."""
    record = Record.create(kind, ORIGIN, 1, 1, None)
    assert Record.decode(record.data).kind == kind
    with pytest.raises(RecordError):
        Record.create(kind + "k", ORIGIN, 1, 1, None)
    with pytest.raises(RecordError):
        Record.decode(_raw(b"\xc0", kind=kind + "k"))


def test_a_boolean_time_is_refused_like_a_boolean_seq() -> None:
    """Pins the bool check on ``time`` (seq's is pinned elsewhere): msgpack's true is a
    Python int equal to 1, and a record whose time is true would be a second encoding of
    time 1, a different key for the same record."""
    with pytest.raises(RecordError, match="time"):
        Record.create("trial", ORIGIN, 1, True, None)
    data: bytes = msgpack.packb([1, "trial", ORIGIN, 1, True, [], None], use_bin_type=True)
    with pytest.raises(RecordError, match="time"):
        Record.decode(data)
    with pytest.raises(RecordError, match="time"):
        Record.decode_many([data])


def test_a_record_of_exactly_max_links_links_is_accepted() -> None:
    """Pins MAX_LINKS (16) as inclusive: a record linking 16 records is created and decoded;
    17 are refused by both."""
    links = [bytes([i]) * 32 for i in range(16)]
    record = Record.create("trial", ORIGIN, 1, 1, None, links)
    assert Record.decode(record.data).links == tuple(links)
    with pytest.raises(RecordError):
        Record.create("trial", ORIGIN, 1, 1, None, [*links, b"x"])


def test_a_link_of_exactly_64_bytes_is_accepted_by_create_and_decode() -> None:
    """Pins MAX_LINK (64 bytes) as inclusive in create as in decode: a record decode accepts
    from a peer must also be one this node can write."""
    link = b"L" * 64
    record = Record.create("trial", ORIGIN, 1, 1, None, [link])
    assert Record.decode(record.data).links == (link,)
    with pytest.raises(RecordError):
        Record.create("trial", ORIGIN, 1, 1, None, [link + b"L"])


@pytest.mark.parametrize("container", ["list", "dict"])
def test_a_body_nested_too_deeply_is_a_record_error(container: str) -> None:
    """create's canonical form recurses, and a body 1,000 levels deep raised RecursionError,
    which callers mapping RecordError to a one-line message did not catch."""
    body: object = 1
    for _ in range(1000):
        body = [body] if container == "list" else {"a": body}
    with pytest.raises(RecordError, match="nested too deeply"):
        Record.create("t", b"o" * 16, 1, 1, body)
