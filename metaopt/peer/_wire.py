"""Peer messages inside authenticated frames: what travels between peers and from the CLI.

A request is the msgpack map {op, from, addr, body, proto}; a reply is {ok, body, proto} or
{ok: false, error, proto}. proto is the sender's PROTOCOL_VERSION (absent before version 2).
The frame around it (crdt._frames) authenticates it under the cluster key and stops replays;
here we only name the operations and check shapes, so garbage is a one-line error, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from metaopt._errors import MetaoptError

__all__ = [
    "PROTOCOL_VERSION",
    "Reply",
    "Request",
    "WireError",
    "decode_reply",
    "decode_request",
    "encode",
]

# What peers say to each other, versioned: a peer refuses requests and replies of another
# version (and discovery ignores its announcements). 2: a reconciliation session may ask for
# (origin, lo, hi) runs, which version 1 peers do not answer. 3: records are folded in causal
# order (a lost event's `after`, which version 2 ignores) and a trial or event must be
# written by the node it names, so the two would show one history differently. See
# CONTRIBUTING for when to bump. No bump for an operation an older peer may ignore without
# harm: it answers "unknown operation", which the sender expects. So "leave" (a stopping
# peer's notice): an older peer counts it gone after peer_timeout, as it always did.
PROTOCOL_VERSION = 3


class WireError(MetaoptError):
    """A message inside a valid frame had the wrong shape."""


@dataclass(frozen=True)
class Request:
    op: str
    sender: bytes
    addr: str
    body: Any
    remote: str | None = None  # the IP the request came from (set by the server, not sent)
    protocol: int | None = PROTOCOL_VERSION  # the sender's; None from a peer before version 2

    def encode(self) -> bytes:
        return encode(
            {
                "op": self.op,
                "from": self.sender,
                "addr": self.addr,
                "body": self.body,
                "proto": self.protocol,
            }
        )


@dataclass(frozen=True)
class Reply:
    ok: bool
    body: Any = None
    error: str | None = None
    protocol: int | None = PROTOCOL_VERSION  # the answering peer's; None before version 2

    def encode(self) -> bytes:
        if self.ok:
            return encode({"ok": True, "body": self.body, "proto": self.protocol})
        return encode({"ok": False, "error": self.error or "error", "proto": self.protocol})


def encode(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise WireError(f"undecodable message ({type(exc).__name__})") from None


def decode_request(data: bytes) -> Request:
    value = _unpack(data)
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("op"), str)
        or not isinstance(value.get("from"), bytes)
        or not isinstance(value.get("addr"), str)
    ):
        raise WireError("a request is a map with op, from and addr")
    return Request(
        value["op"], value["from"], value["addr"], value.get("body"), None, _protocol(value)
    )


def _protocol(value: dict[Any, Any]) -> int | None:
    proto = value.get("proto")
    return proto if type(proto) is int else None


def decode_reply(data: bytes) -> Reply:
    value = _unpack(data)
    if not isinstance(value, dict) or not isinstance(value.get("ok"), bool):
        raise WireError("a reply is a map with ok")
    if value["ok"]:
        return Reply(True, value.get("body"), None, _protocol(value))
    error = value.get("error")
    return Reply(False, None, error if isinstance(error, str) else "error", _protocol(value))


def other_version(protocol: int | None) -> str | None:
    """Why a message of this protocol version is refused here, or None if it is ours."""
    if protocol == PROTOCOL_VERSION:
        return None
    theirs = "from before version 2" if protocol is None else f"version {protocol}"
    return (
        f"metaopt protocol {theirs} against version {PROTOCOL_VERSION} here;"
        " run the same metaopt release on every peer"
    )
