"""Peer messages: what decodes, and what a message may make a peer build in memory."""

from __future__ import annotations

import msgpack
import pytest

from metaopt._records import EVENT_KINDS
from metaopt.peer._wire import (
    PROTOCOL_VERSION,
    Reply,
    Request,
    WireError,
    decode_reply,
    decode_request,
)

NODE = b"n" * 16


def _request(body: object, op: str = "gossip") -> bytes:
    return Request(op, NODE, "127.0.0.1:7000", body).encode()


@pytest.mark.parametrize("op", ["gossip", "api.add", "no.such.op"])
def test_a_request_of_many_tiny_containers_is_refused_whatever_its_op(op: str) -> None:
    # 2 MiB of one-byte empty arrays decoded to 2 million Python lists (about 150 MB), before
    # the op was known: a 64 MiB frame would have taken gigabytes and seconds of the loop.
    long_list = b"\xdd" + (2 << 20).to_bytes(4, "big") + b"\x90" * (2 << 20)
    nested = b"\xdc" + (60_000).to_bytes(2, "big") + (b"\x9f" + b"\x90" * 15) * 60_000
    message = msgpack.packb(
        {"op": op, "from": NODE, "addr": "127.0.0.1:7000", "body": None}, use_bin_type=True
    )
    for flood in (long_list, nested):
        crafted = message[:-1] + flood  # the body (nil, the last byte) replaced by the flood
        with pytest.raises(WireError, match="undecodable"):
            decode_request(crafted)
    with pytest.raises(WireError, match="undecodable"):
        decode_request(_request([{} for _ in range(200_000)]))


def test_what_peers_send_still_decodes() -> None:
    gossip = [[bytes([i]) * 16, f"10.0.{i}.1:7000", 1.5] for i in range(256)]
    assert decode_request(_request(gossip)).body == gossip
    blobs = [bytes([i % 256]) * 100 for i in range(80_000)]  # api.add: 8 MiB of small blobs
    assert decode_request(_request(blobs, "api.add")).body == blobs
    assert decode_request(_request(b"s" * (1 << 20), "sync")).body == b"s" * (1 << 20)


def test_only_an_unbounded_reply_may_hold_a_page_of_curves() -> None:
    # The CLI reads pages of trials from its own peer: a list or a number every few bytes.
    page = {"trials": [{"curve": [[s, 0.5] for s in range(100)]} for _ in range(300)]}
    data = Reply(True, page).encode()
    assert decode_reply(data, bounded=False).body == page
    with pytest.raises(WireError):
        decode_reply(data)


_V6_EVENT_KINDS = frozenset(
    {"started", "progress", "heartbeat", "completed", "failed", "killed", "frozen", "thawed",
     "lost", "interrupted"}
)  # fmt: skip
# The event kinds each protocol version folds. A new kind changes what a peer makes of one
# history (version 6 took a restarted run's steps for more of the old run's curve), so it comes
# with a new version, which peers of the older one refuse (CONTRIBUTING: when to bump).
_FOLDED_EVENT_KINDS = {6: _V6_EVENT_KINDS, 7: _V6_EVENT_KINDS | {"restarted"}}
_FOLDED_EVENT_KINDS[8] = _FOLDED_EVENT_KINDS[7]  # (8: a restart may carry its checkpoint's step)


def test_a_new_event_kind_comes_with_a_new_protocol_version() -> None:
    """The fold's event kinds are those of this protocol version: "restarted" went out under
    version 6, so two peers that talked showed one trial's curve differently."""
    assert _FOLDED_EVENT_KINDS[PROTOCOL_VERSION] == EVENT_KINDS
