"""Peer messages inside authenticated frames: what travels between peers and from the CLI.

A request is the msgpack map {op, from, addr, body, proto[, to]}; a reply is {ok, body, proto}
or {ok: false, error, proto}. proto is the sender's PROTOCOL_VERSION (absent before version 2);
to is the node id of the peer the request is for. The frame around it (crdt._frames)
authenticates it under the cluster key and stops replays to the same peer; ``to`` stops a
frame recorded on its way to one peer from being played to another (each peer's replay cache
is its own), and the reply's frame is bound to the request's nonce. Here we only name the
operations and check shapes, so garbage is a one-line error, never a crash.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import msgpack

from metaopt._collector import collector_paused
from metaopt._errors import MetaoptError

__all__ = [
    "LOADING",
    "MAX_RUN_TOKEN",
    "MISADDRESSED",
    "PROTOCOL_VERSION",
    "TWIN_STOPS",
    "Reply",
    "Request",
    "WireError",
    "decode_reply",
    "decode_request",
    "encode",
    "needs_addressee",
]

# What peers say to each other, versioned: a peer refuses requests and replies of another
# version (and discovery ignores its announcements). 2: a reconciliation session may ask for
# (origin, lo, hi) runs, which version 1 peers do not answer. 3: records are folded in causal
# order (a lost event's `after`, which version 2 ignores) and a trial or event must be
# written by the node it names, so the two would show one history differently. See
# CONTRIBUTING for when to bump. No bump for an operation an older peer may ignore without
# harm: it answers "unknown operation", which the sender expects. So "leave" (a stopping
# peer's notice): an older peer counts it gone after peer_timeout, as it always did. 4: a reply
# is sealed bound to its request's nonce, and the CLI's operations and "leave" name the peer
# they are for (``to``), which an older peer would neither check nor answer in a frame the
# newer one opens. 5: a version vector's digest (a session's "vh" opening) is a sum of
# per-origin hashes, kept up to date as records arrive; version 4's never matches it, so
# every session between the two would send the whole vector. Sync messages are decoded with
# caps only what version 5 sends fits. 6: the fold counts a loss only if the event it follows
# belongs to the trial's current run (version 5 compared times, and a late report of a run a
# re-run had replaced let a loss free the re-run), and only a (re)start answers a free event:
# the two versions would show one history differently. No bump for an event's "rung" (a kill
# by ASHA's rule): only early stoppers read it, and an older peer's counts the run at every
# step it reported, as it always did. 7: the fold knows a "restarted" event (a resumed run
# that counts its steps from 1 again: its curve starts again), which version 6 folds as more
# of the old run's curve, and a choices({...}) prior with a repeated key is refused: the two
# would show one history's curves, and which trials fit their space, differently. 8: a
# "restarted" event may carry the step of the older checkpoint the run went on from (its
# curve keeps the steps up to there), which version 7 folds as a restart from step 0; and
# priors with an option given twice, a precision no value in range has, or a randint over
# 2**53 values wide are refused, which version 7 took.
PROTOCOL_VERSION = 8

# The start of a refusal of a request that named another peer (the client raises
# Misaddressed: the CLI says its data directory's peer.address is stale).
MISADDRESSED = "misaddressed:"
# The start of a refusal by a peer still loading its replica (the client raises
# StillLoading: the CLI waits for it).
LOADING = "loading:"
# The start of the answer of a twin (a peer under the caller's own node id, see _twins) that
# the call made stop: so that the caller, which runs on, says so too.
TWIN_STOPS = "twin stops:"
# A process token's bytes at most (this release sends 8): kept by every peer that hears one
# (see peer._twins), a token of megabytes that changed at each answer grew a peer by 170 MB in
# 2 minutes (a wire review).
MAX_RUN_TOKEN = 32


def needs_addressee(op: str) -> bool:
    """Whether a request of op must name the peer it is for. The CLI's operations (stop a
    peer or an experiment, kill a trial, add records) and "leave" act once on the peer that
    opens them; a frame recorded on its way to one peer and played to another would act there
    too. Replication and gossip only share what every peer may have: they may go to a --join
    seed whose node id is not known yet."""
    return op.startswith("api.") or op == "leave"


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
    to: bytes | None = None  # the node id of the peer it is for, where the sender knows it
    # Seconds from its sealing (the sender's clock) to its opening here (this peer's clock),
    # set by the server, not sent: the clocks' offset, the time in flight, any wait in a socket.
    lag: float | None = None
    # A token of the sending process, drawn at its start: a request under this peer's own node
    # id with another token comes from a twin (a copy of its data directory, started). None
    # from peers before it was sent, and from the CLI.
    run: bytes | None = None
    age: float | None = None  # the sending process's, in seconds (see peer/_twins)

    def encode(self) -> bytes:
        message = {
            "op": self.op,
            "from": self.sender,
            "addr": self.addr,
            "body": self.body,
            "proto": self.protocol,
        }
        if self.to is not None:
            message["to"] = self.to
        if self.run is not None:
            message["run"] = self.run
        if self.age is not None:
            message["age"] = self.age
        return encode(message)


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


# What one message between peers may make msgpack build. Their requests and replies are small
# maps and lists of bytes (records, sync messages); a list of gossip entries is the largest
# structure. Unchecked, 16 MiB of one-byte empty arrays became 16 million Python lists: a
# request of any op, decoded before its op is known, took a peer 1.2 GB and 5 s of its loop.
_MAX_ITEMS_BASE = 4096
_BYTES_PER_ITEM = 32  # a record or blob in a list is 100 bytes or more
_MAX_LIST = 1 << 17  # api.add: 8 MiB of blobs a call
_MAX_MAP = 64


class _Budget:
    """Counts the lists, maps and their items msgpack builds of one message, refusing it once
    they pass what a valid message of its size holds. msgpack calls a hook once a container
    is built, so it overshoots by one list at most (a list's length is capped on its own)."""

    __slots__ = ("left",)

    def __init__(self, size: int) -> None:
        self.left = _MAX_ITEMS_BASE + size // _BYTES_PER_ITEM

    def _spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise ValueError("more lists and maps than a message holds")

    def list_hook(self, items: list[Any]) -> list[Any]:
        self._spend(1 + len(items))
        return items

    def object_hook(self, fields: dict[Any, Any]) -> dict[Any, Any]:
        self._spend(1 + 2 * len(fields))
        return fields


def _unpack(data: bytes, bounded: bool = True) -> Any:
    """The message in data; bounded: refuse one that builds more than a valid message of its
    size (see _Budget). Only the CLI reads its own peer's replies unbounded (a page of trials
    with their curves holds a list or number every few bytes)."""
    limits: dict[str, Any] = {}
    # The CLI's pages of trials are a million small maps and lists: the collector's passes
    # while msgpack built them were a third of decoding them (0.1 s of 0.3 at 60,000 trials).
    # (Not for other peers' messages, which are small, and bounded.)
    paused = contextlib.nullcontext() if bounded else collector_paused()
    if bounded:
        budget = _Budget(len(data))
        limits = {
            "list_hook": budget.list_hook,
            "object_hook": budget.object_hook,
            "max_array_len": _MAX_LIST,
            "max_map_len": _MAX_MAP,
        }
    try:
        with paused:
            return msgpack.unpackb(data, raw=False, strict_map_key=False, **limits)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise WireError(f"undecodable message ({type(exc).__name__})") from None


def decode_request(data: bytes) -> Request:
    value = _unpack(data)
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("op"), str)
        or not isinstance(value.get("from"), bytes)
        or not isinstance(value.get("addr"), str)
        or not isinstance(value.get("to", b""), bytes)
        or not isinstance(value.get("run", b""), bytes)
        or len(value.get("run", b"")) > MAX_RUN_TOKEN
        or not _real(value.get("age", 0.0))
    ):
        raise WireError(
            "a request is a map with op, from and addr (and to, a node id; run, a token of at"
            f" most {MAX_RUN_TOKEN} bytes)"
        )
    return Request(
        value["op"],
        value["from"],
        value["addr"],
        value.get("body"),
        None,
        _protocol(value),
        value.get("to"),
        run=value.get("run"),
        age=value.get("age"),
    )


def _real(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _protocol(value: dict[Any, Any]) -> int | None:
    proto = value.get("proto")
    return proto if type(proto) is int else None


def decode_reply(data: bytes, bounded: bool = True) -> Reply:
    value = _unpack(data, bounded)
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
        " run the same metaopt release on every peer (`metaopt --version` shows its protocol)"
    )
