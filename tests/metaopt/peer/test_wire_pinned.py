"""Peer-message behaviour a mutation audit found unpinned: the shape a request and a reply must
have, the exact budget a message of a given size may spend, and the caps on one list's and
one map's length."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from metaopt.peer._wire import (
    PROTOCOL_VERSION,
    Request,
    WireError,
    decode_reply,
    decode_request,
)

NODE = b"n" * 16
GOOD: dict[str, Any] = {"op": "gossip", "from": NODE, "addr": "127.0.0.1:7000", "body": None}


def _packed(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


@pytest.mark.parametrize(
    "message",
    [
        [GOOD],
        {**GOOD, "op": 7},
        {k: v for k, v in GOOD.items() if k != "op"},
        {**GOOD, "from": NODE.hex()},
        {k: v for k, v in GOOD.items() if k != "from"},
        {**GOOD, "addr": b"127.0.0.1:7000"},
        {k: v for k, v in GOOD.items() if k != "addr"},
        {**GOOD, "to": NODE.hex()},
        {**GOOD, "to": None},
        {**GOOD, "run": b"t" * 33},
    ],
    ids=[
        "list",
        "op-int",
        "no-op",
        "from-str",
        "no-from",
        "addr-bytes",
        "no-addr",
        "to-str",
        "to-nil",
        "run-too-long",
    ],
)
def test_a_request_of_the_wrong_shape_is_a_wire_error(message: Any) -> None:
    """Inside a valid frame, a request whose op, sender, address or addressee has the wrong
    type is one WireError: a str node id or bytes address reaching the node crashed a handler
    (or, for ``to``, slipped past the check that the frame was meant for this peer)."""
    with pytest.raises(WireError, match="a request is a map with op, from and addr"):
        decode_request(_packed(message))


def test_a_request_with_a_process_token_of_32_bytes_is_read() -> None:
    assert decode_request(_packed({**GOOD, "run": b"t" * 32})).run == b"t" * 32


def test_a_request_without_a_body_has_none() -> None:
    """body is optional (gossip pings and leave carry none): its absence is None, not a
    KeyError escaping as a crash of the connection's handler."""
    request = decode_request(_packed({k: v for k, v in GOOD.items() if k != "body"}))
    assert request.body is None and request.op == "gossip" and request.to is None


@pytest.mark.parametrize("proto", [True, "6", 6.0, None])
def test_a_protocol_that_is_not_a_plain_int_is_no_version(proto: Any) -> None:
    """Only an int names a protocol version: True (an int to Python), "6" or 6.0 is a peer
    speaking no version this one knows, refused like one from before version 2."""
    assert decode_request(_packed({**GOOD, "proto": proto})).protocol is None
    assert decode_reply(_packed({"ok": True, "body": 1, "proto": proto})).protocol is None
    assert decode_request(_packed({**GOOD, "proto": PROTOCOL_VERSION})).protocol == PROTOCOL_VERSION


@pytest.mark.parametrize("ok", [1, 0, "true", None])
def test_a_reply_whose_ok_is_not_a_bool_is_a_wire_error(ok: Any) -> None:
    """ok decides whether body is a result or error a message: 1 or "true" must not pass
    for success (nor 0 for a refusal)."""
    with pytest.raises(WireError, match="a reply is a map with ok"):
        decode_reply(_packed({"ok": ok, "body": {"x": 1}}))


@pytest.mark.parametrize("error", [5, None, b"bytes", ["a"]])
def test_a_refusal_whose_error_is_not_text_says_error(error: Any) -> None:
    """The client prints the error and matches its start (misaddressed:, loading:): a
    non-text error is "error", never an int or bytes handed to str methods."""
    reply = decode_reply(_packed({"ok": False, "error": error}))
    assert reply.ok is False and reply.error == "error" and reply.body is None


def _spend_of_nils(k: int) -> tuple[bytes, int]:
    """A request whose body is k nils, and what decoding it spends: the map's 1 + 2 x 5
    fields, the list's 1 + k."""
    data = Request("gossip", NODE, "127.0.0.1:7000", [None] * k).encode()
    return data, (1 + 2 * 5) + (1 + k)


def test_a_message_may_spend_exactly_its_budget_and_not_one_item_more() -> None:
    """A message of n bytes may build 4096 + n // 32 lists, maps and items: exactly that is
    accepted, one more refused (the bound every peer applies to what its peers send)."""
    exact = []
    for k in range(3000, 6000):
        data, spend = _spend_of_nils(k)
        if spend == 4096 + len(data) // 32:
            exact.append(k)
    assert exact, "no body length spends the budget exactly"
    k = exact[-1]
    assert decode_request(_spend_of_nils(k)[0]).body == [None] * k
    with pytest.raises(WireError, match="undecodable"):
        decode_request(_spend_of_nils(k + 1)[0])


def test_a_long_flat_list_of_one_byte_items_is_refused() -> None:
    """Each item counts, not just each container: 10,000 nils in 10 KB are more items than a
    message of that size holds (valid lists hold records of 100 bytes or more)."""
    with pytest.raises(WireError, match="undecodable"):
        decode_request(Request("gossip", NODE, "a:1", [None] * 10_000).encode())


def test_maps_count_their_keys_and_values() -> None:
    """A list of maps of 64 small entries each is 2 items a byte pair: 100 of them (13 KB)
    would build 12,900 objects, past the budget of a message that size."""
    maps = [{i: i for i in range(64)} for _ in range(100)]
    with pytest.raises(WireError, match="undecodable"):
        decode_request(Request("gossip", NODE, "a:1", maps).encode())
    assert decode_request(Request("gossip", NODE, "a:1", maps[:2]).encode()).body == maps[:2]


def test_a_map_holds_at_most_64_entries() -> None:
    """No message between peers has a map of more than 64 keys: a 65-key map is refused
    before msgpack builds it, whatever the message's size."""
    assert decode_request(Request("gossip", NODE, "a:1", {i: 0 for i in range(64)}).encode())
    with pytest.raises(WireError, match="undecodable"):
        decode_request(Request("gossip", NODE, "a:1", {i: 0 for i in range(65)}).encode())


def test_a_list_holds_at_most_131072_items_however_large_they_are() -> None:
    """api.add takes at most 2**17 blobs a call: a list one longer is refused before it is
    built, even when its items are large enough for the size budget to allow it."""
    items = [b"b" * 32] * (1 << 17)
    assert len(decode_request(Request("api.add", NODE, "a:1", items).encode()).body) == 1 << 17
    with pytest.raises(WireError, match="undecodable"):
        decode_request(Request("api.add", NODE, "a:1", [*items, b"b" * 32]).encode())
