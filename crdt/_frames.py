"""Authenticated, versioned wire frames: HMAC-SHA256 under the cluster key, replay window, size cap.

Sans-IO: the caller passes the clock (``now``) and the 16 random nonce bytes, so the simulator can
run the same code deterministically. A version-1 frame is one msgpack array whose every element
has a fixed-width encoding, so any msgpack reader can inspect it while ``open`` checks it by byte
offsets, without parsing attacker bytes before they are authenticated::

    0x96                                  fixarray of 6
    0x01                                  version
    0xc4 0x08 <key id 8>                  which cluster key sealed it (rotation)
    0xcf <time ms u64>                    the sender's clock
    0xc4 0x10 <nonce 16>                  unique per frame (replay cache)
    0xc6 <len u32> <payload>              the message, itself msgpack
    0xc4 0x20 <mac 32>                    HMAC-SHA256 over every byte before the mac element

``open`` checks, in order: size, structure and version, known key id, MAC, time window, nonce;
each failure raises its own FrameError subclass, and only a frame passing all of them yields its
payload (and enters the nonce cache).
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from crdt._errors import CrdtError, FrameError

__all__ = [
    "FRAME_OVERHEAD",
    "FRAME_VERSION",
    "NONCE_SIZE",
    "TICKET_SIZE",
    "ClusterKey",
    "FrameCodec",
    "FrameConfig",
    "InvalidClusterKey",
    "MalformedFrame",
    "OpenedFrame",
    "OversizedFrame",
    "ReplayedFrame",
    "StaleFrame",
    "TamperedFrame",
    "UnknownKey",
    "UnsupportedFrameVersion",
]

FRAME_VERSION = 1
NONCE_SIZE = 16
KEY_ID_SIZE = 8
SECRET_SIZE = 32
MAC_SIZE = 32

_KEY_ID_AT = 4
_TIME_AT = 13
_NONCE_AT = 23
_LEN_AT = 40
_HEADER = 44  # bytes before the payload
_TRAILER = 2 + MAC_SIZE
FRAME_OVERHEAD = _HEADER + _TRAILER
TICKET_SIZE = _HEADER + MAC_SIZE
# The MAC context of tickets; open() is never called with it, so a ticket is never a frame MAC.
_TICKET_CONTEXT = b"metaopt frame ticket"
_MAX_PAYLOAD = (1 << 32) - 1

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

_TEXT_PREFIX = "mo1-"
_CHECK_SIZE = 4


class OversizedFrame(FrameError):
    """The frame is larger than the configured limit."""


class MalformedFrame(FrameError):
    """The bytes are not a frame of the known layout."""


class UnsupportedFrameVersion(FrameError):
    """The frame is of a version this peer does not speak."""


class UnknownKey(FrameError):
    """The frame was sealed under a cluster key this peer does not hold (unauthenticated)."""


class TamperedFrame(FrameError):
    """The frame's MAC does not match its bytes."""


class StaleFrame(FrameError):
    """The frame's timestamp lies outside the accepted window."""


class ReplayedFrame(FrameError):
    """The frame's nonce was already accepted within the window."""


class InvalidClusterKey(CrdtError, ValueError):
    """A cluster key text or secret that cannot be used."""


def _blake(data: bytes, *, key: bytes, person: bytes, size: int) -> bytes:
    return hashlib.blake2b(data, key=key, person=person, digest_size=size).digest()


def _checksum(secret: bytes) -> bytes:
    return _blake(b"", key=secret, person=b"metaopt-keycheck", size=_CHECK_SIZE)


class ClusterKey:
    """A shared 32-byte cluster secret; ``key_id`` and ``fingerprint`` are public, it is not."""

    __slots__ = ("_mac_key", "_secret", "key_id")

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes) or len(secret) != SECRET_SIZE:
            raise InvalidClusterKey(
                f"a cluster key secret is {SECRET_SIZE} bytes; create one with ClusterKey.generate"
            )
        self._secret = secret
        # Separate keyed derivations: the public id reveals nothing about the MAC key or secret.
        self.key_id = _blake(b"", key=secret, person=b"metaopt-key-id", size=KEY_ID_SIZE)
        self._mac_key = _blake(b"", key=secret, person=b"metaopt-frame-v1", size=MAC_SIZE)

    @classmethod
    def generate(cls, entropy: bytes) -> ClusterKey:
        """A new key from at least 32 bytes of entropy (pass ``os.urandom(32)``)."""
        if not isinstance(entropy, bytes) or len(entropy) < SECRET_SIZE:
            raise InvalidClusterKey(
                f"a cluster key needs at least {SECRET_SIZE} bytes of entropy; pass os.urandom(32)"
            )
        return cls(
            hashlib.blake2b(entropy, digest_size=SECRET_SIZE, person=b"metaopt-keygen").digest()
        )

    @classmethod
    def from_text(cls, text: str) -> ClusterKey:
        """Parse ``to_text``'s form; raise InvalidClusterKey with a one-line hint if it is wrong."""
        if not isinstance(text, str):
            raise InvalidClusterKey(f"a cluster key is text, not {type(text).__name__}")
        cleaned = "".join(text.split()).lower()
        if not cleaned.startswith(_TEXT_PREFIX):
            raise InvalidClusterKey(
                f"a cluster key starts with {_TEXT_PREFIX!r}; copy the whole key printed by"
                " `metaopt peer key` on a member"
            )
        body = cleaned[len(_TEXT_PREFIX) :].upper()
        try:
            raw = base64.b32decode(body + "=" * (-len(body) % 8))
        except ValueError:
            raw = b""
        if len(raw) != SECRET_SIZE + _CHECK_SIZE:
            raise InvalidClusterKey(
                "the cluster key is truncated or has characters outside a-z and 2-7; copy it again"
                " from `metaopt peer key` on a member"
            )
        secret, check = raw[:SECRET_SIZE], raw[SECRET_SIZE:]
        if not hmac.compare_digest(check, _checksum(secret)):
            raise InvalidClusterKey(
                "the cluster key has a typo (its checksum does not match); copy it again from"
                " `metaopt peer key` on a member"
            )
        return cls(secret)

    def to_text(self) -> str:
        """``mo1-`` and lowercase base32 of the secret and a 4-byte checksum: 62 characters."""
        raw = self._secret + _checksum(self._secret)
        return _TEXT_PREFIX + base64.b32encode(raw).decode("ascii").rstrip("=").lower()

    @property
    def fingerprint(self) -> str:
        """The key id in hex: a public name for the cluster, safe to announce over mDNS."""
        return self.key_id.hex()

    @property
    def mac_key(self) -> bytes:
        """The HMAC-SHA256 key frames are sealed with (derived; never the raw secret)."""
        return self._mac_key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClusterKey) and hmac.compare_digest(self._secret, other._secret)

    def __hash__(self) -> int:
        return hash(self.key_id)

    def __repr__(self) -> str:
        return f"ClusterKey(fingerprint={self.fingerprint})"


@dataclass(frozen=True, slots=True)
class FrameConfig:
    """Limits of the frame codec; every peer of a cluster should use the same values.

    Attributes:
        max_frame_bytes: frames larger than this are refused before any other work.
        max_skew: seconds a frame's timestamp may differ from the receiver's clock.
        nonce_cache_size: most nonces remembered; when full, the oldest are dropped and frames
            no newer than them are refused as stale, so a replay is never accepted.
    """

    max_frame_bytes: int = 64 << 20
    max_skew: float = 120.0
    nonce_cache_size: int = 1 << 16

    def __post_init__(self) -> None:
        if not FRAME_OVERHEAD < self.max_frame_bytes <= FRAME_OVERHEAD + _MAX_PAYLOAD:
            raise ValueError(f"max_frame_bytes must be in ({FRAME_OVERHEAD}, 2**32]")
        if not (math.isfinite(self.max_skew) and self.max_skew > 0):
            raise ValueError("max_skew must be a positive number of seconds")
        if self.nonce_cache_size < 1:
            raise ValueError("nonce_cache_size must be at least 1")


@dataclass(frozen=True, slots=True)
class OpenedFrame:
    """What an authenticated frame carried, with the header fields a caller may bind to."""

    payload: bytes
    key_id: bytes
    time_ms: int
    nonce: bytes


class _NonceCache:
    """Nonces of accepted frames, bounded in size and expiring by frame time.

    ``floor`` is the newest frame time ever dropped from the cache (by expiry or eviction): a
    frame at or below it might be a replay we no longer remember, so it is refused instead.
    """

    __slots__ = ("_heap", "_seen", "floor", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._seen: set[bytes] = set()
        self._heap: list[tuple[int, bytes]] = []
        self.floor = -1

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, nonce: bytes) -> bool:
        return nonce in self._seen

    def expire(self, before_ms: int) -> None:
        heap = self._heap
        while heap and heap[0][0] < before_ms:
            self._drop()

    def add(self, time_ms: int, nonce: bytes) -> None:
        heapq.heappush(self._heap, (time_ms, nonce))
        self._seen.add(nonce)
        while len(self._seen) > self.size:
            self._drop()

    def _drop(self) -> None:
        time_ms, nonce = heapq.heappop(self._heap)
        self._seen.discard(nonce)
        self.floor = max(self.floor, time_ms)


class FrameCodec:
    """Seals payloads into frames and opens frames from peers of the same cluster."""

    def __init__(self, keys: Sequence[ClusterKey], config: FrameConfig | None = None) -> None:
        """Use the first key to seal; accept frames under any of them.

        Args:
            keys: the current key first (frames are sealed with it), then older keys still
                accepted while a cluster rotates.
            config: limits; the defaults suit a LAN cluster.
        """
        keys = list(keys)
        if not keys:
            raise ValueError("a FrameCodec needs at least one cluster key")
        if any(not isinstance(k, ClusterKey) for k in keys):
            raise TypeError("keys must be ClusterKey instances")
        self._keys = {k.key_id: k for k in keys}
        if len(self._keys) != len(keys):
            raise ValueError("the same cluster key is listed twice")
        self.current = keys[0]
        self.config = config or FrameConfig()
        self._skew_ms = round(self.config.max_skew * 1000)
        self._nonces = _NonceCache(self.config.nonce_cache_size)

    @property
    def cached_nonces(self) -> int:
        """How many nonces the replay cache holds now (bounded by nonce_cache_size)."""
        return len(self._nonces)

    def seal(self, payload: bytes, *, now: float, nonce: bytes, associated: bytes = b"") -> bytes:
        """Frame a payload under the current key.

        Args:
            payload: the message bytes.
            now: the sender's clock, seconds since the epoch.
            nonce: 16 fresh random bytes (``os.urandom(16)``); never reuse one.
            associated: bytes the receiver must pass to ``open`` too (bound by the MAC, not sent),
                e.g. the request's nonce in a reply so replies cannot be swapped.
        Returns:
            The frame bytes.
        """
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE} random bytes")
        if not (math.isfinite(now) and 0 <= now < 2**53 / 1000):
            raise ValueError("now must be seconds since the epoch")
        payload = bytes(payload)
        size = FRAME_OVERHEAD + len(payload)
        if size > self.config.max_frame_bytes:
            raise OversizedFrame(
                f"a frame of {size} bytes would exceed the {self.config.max_frame_bytes}-byte"
                " limit; send the payload in smaller parts"
            )
        header = b"".join(
            (
                b"\x96",
                bytes([FRAME_VERSION]),
                b"\xc4\x08",
                self.current.key_id,
                b"\xcf",
                _U64.pack(math.floor(now * 1000)),
                b"\xc4\x10",
                nonce,
                b"\xc6",
                _U32.pack(len(payload)),
            )
        )
        signed = header + payload
        return signed + b"\xc4\x20" + self._mac(self.current, signed, associated)

    def open(self, frame: bytes, *, now: float, associated: bytes = b"") -> bytes:
        """Check a received frame and return its payload; raise a FrameError subclass if invalid.

        Args:
            frame: the bytes as received.
            now: the receiver's clock, seconds since the epoch.
            associated: the bytes the sender passed to ``seal``.
        Returns:
            The payload, only once every check passed.
        """
        return self.open_frame(frame, now=now, associated=associated).payload

    def open_frame(
        self, frame: bytes, *, now: float, associated: bytes = b"", ticket: bytes | None = None
    ) -> OpenedFrame:
        """``open``, also returning the authenticated header fields.

        ticket: the ticket the frame was announced with (``check_ticket``), if any; a frame
        whose header differs from it is refused.
        """
        if not isinstance(frame, bytes | bytearray | memoryview):
            raise MalformedFrame(f"a frame is bytes, not {type(frame).__name__}")
        frame = bytes(frame)
        limit = self.config.max_frame_bytes
        if len(frame) > limit:
            raise OversizedFrame(
                f"frame of {len(frame)} bytes exceeds the {limit}-byte limit; have the sender"
                " send smaller batches (or raise max_frame_bytes on every peer)"
            )
        payload_len = self._check_layout(frame)
        if ticket is not None and frame[:_HEADER] != ticket[:_HEADER]:
            raise TamperedFrame("frame does not match the ticket it was announced with; resend it")
        key = self._key_of(frame)
        signed = frame[: _HEADER + payload_len]
        if not hmac.compare_digest(self._mac(key, signed, associated), frame[-MAC_SIZE:]):
            raise TamperedFrame(
                "frame authentication failed (MAC mismatch): it was altered in transit or sealed"
                " with another secret of the same id; check the network path and the key text"
            )
        time_ms = self._check_time(frame, now)
        nonce = frame[_NONCE_AT : _NONCE_AT + NONCE_SIZE]
        cache = self._nonces
        cache.expire(math.floor(now * 1000) - self._skew_ms)
        if nonce in cache:
            raise ReplayedFrame(
                "frame nonce was already accepted within the window: a replay or a duplicate"
                " send; drop it (senders must use a fresh random nonce per frame)"
            )
        if time_ms <= cache.floor:
            raise StaleFrame(
                "frame is older than the replay cache still covers (it filled up or the clock"
                " went back); resend it, or raise nonce_cache_size"
            )
        cache.add(time_ms, nonce)
        return OpenedFrame(frame[_HEADER : _HEADER + payload_len], key.key_id, time_ms, nonce)

    def ticket(self, frame: bytes) -> bytes:
        """A sealed frame's ticket: its header with a MAC of its own (TICKET_SIZE bytes).

        A receiver checks it (``check_ticket``) before reading the frame, so a sender without
        the cluster key cannot make it hold a single frame in memory. Not secret; the frame
        itself is still checked in full by ``open``.
        """
        header = bytes(frame[:_HEADER])
        self._check_header(header)
        return header + self._mac(self._key_of(header), header, _TICKET_CONTEXT)

    def check_ticket(self, ticket: bytes, *, now: float) -> int:
        """Check a ticket; return the size in bytes of the frame it announces.

        Raises the FrameError subclass ``open`` would for the same header (unknown key,
        tampered, stale, oversized, replayed nonce). Nothing is remembered: the frame's nonce
        is recorded when the frame is opened.
        """
        if not isinstance(ticket, bytes) or len(ticket) != TICKET_SIZE:
            raise MalformedFrame(
                f"a frame ticket is {TICKET_SIZE} bytes; is the sender a metaopt peer?"
            )
        header = ticket[:_HEADER]
        payload_len = self._check_header(header)
        size = _HEADER + payload_len + _TRAILER
        if size > self.config.max_frame_bytes:
            raise OversizedFrame(
                f"a ticket announces a {size}-byte frame, over the"
                f" {self.config.max_frame_bytes}-byte limit; have the sender send smaller batches"
            )
        key = self._key_of(header)
        if not hmac.compare_digest(self._mac(key, header, _TICKET_CONTEXT), ticket[_HEADER:]):
            raise TamperedFrame("frame ticket authentication failed (MAC mismatch); check the key")
        self._check_time(header, now)
        if header[_NONCE_AT : _NONCE_AT + NONCE_SIZE] in self._nonces:
            raise ReplayedFrame("a ticket names a frame already accepted: a replay; drop it")
        return size

    def _key_of(self, header: bytes) -> ClusterKey:
        key = self._keys.get(header[_KEY_ID_AT : _KEY_ID_AT + KEY_ID_SIZE])
        if key is None:
            fingerprint = header[_KEY_ID_AT : _KEY_ID_AT + KEY_ID_SIZE].hex()
            raise UnknownKey(
                f"frame sealed with cluster key {fingerprint}, which this peer does not hold;"
                " use the cluster's key (run `metaopt peer key` on a member)"
            )
        return key

    def _check_time(self, header: bytes, now: float) -> int:
        time_ms = int.from_bytes(header[_TIME_AT : _TIME_AT + 8], "big")
        now_ms = math.floor(now * 1000)
        if abs(time_ms - now_ms) > self._skew_ms:
            raise StaleFrame(
                f"the sender's clock is {(time_ms - now_ms) / 1000:+.1f} s off the receiver's"
                f" (window ±{self.config.max_skew:g} s); synchronise the peers' clocks (NTP)"
            )
        return time_ms

    @staticmethod
    def _check_header(frame: bytes) -> int:
        """Check the version and the header's layout; return the declared payload length."""
        version = _peek_version(frame)
        if version is None:
            raise MalformedFrame(
                "not a metaopt frame (no versioned msgpack array); is the sender a metaopt peer?"
            )
        if version != FRAME_VERSION:
            raise UnsupportedFrameVersion(
                f"frame version {version} is not supported (this peer speaks {FRAME_VERSION});"
                " run the same metaopt version on every peer"
            )
        if (
            len(frame) < _HEADER
            or frame[0] != 0x96
            or frame[2:4] != b"\xc4\x08"
            or frame[_TIME_AT - 1] != 0xCF
            or frame[_NONCE_AT - 2 : _NONCE_AT] != b"\xc4\x10"
            or frame[_LEN_AT - 1] != 0xC6
        ):
            raise MalformedFrame(
                f"frame header does not match version {FRAME_VERSION}'s layout;"
                " is the sender a metaopt peer?"
            )
        return int.from_bytes(frame[_LEN_AT:_HEADER], "big")

    @classmethod
    def _check_layout(cls, frame: bytes) -> int:
        """Check structure and version; return the payload length."""
        payload_len = cls._check_header(frame)
        if _HEADER + payload_len + _TRAILER != len(frame):
            raise MalformedFrame(
                f"frame length {len(frame)} does not match its declared payload of"
                f" {payload_len} bytes; the frame was truncated or padded in transit"
            )
        if frame[-_TRAILER:-MAC_SIZE] != b"\xc4\x20":
            raise MalformedFrame(
                "frame trailer is not a 32-byte MAC; is the sender a metaopt peer?"
            )
        return payload_len

    @staticmethod
    def _mac(key: ClusterKey, signed: bytes, associated: bytes) -> bytes:
        mac = hmac.new(key.mac_key, digestmod=hashlib.sha256)
        # Length-prefixing the associated bytes keeps (signed, associated) splits unambiguous.
        mac.update(_U32.pack(len(associated)))
        mac.update(associated)
        mac.update(signed)
        return mac.digest()


def _peek_version(frame: bytes) -> int | None:
    """The first element of a msgpack array if it is an unsigned integer, else None."""
    if not frame:
        return None
    first = frame[0]
    if 0x90 <= first <= 0x9F:
        at = 1
    elif first == 0xDC:
        at = 3
    elif first == 0xDD:
        at = 5
    else:
        return None
    # An empty array has no first element: the byte after it was read as a version, and
    # junk was told to "run the same metaopt version" rather than that it is no frame.
    if len(frame) <= at or first == 0x90 or (at > 1 and not any(frame[1:at])):
        return None
    tag = frame[at]
    if tag < 0x80:
        return tag
    widths = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
    width = widths.get(tag)
    if width is None or len(frame) < at + 1 + width:
        return None
    return int.from_bytes(frame[at + 1 : at + 1 + width], "big")
