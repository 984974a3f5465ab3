"""Wire frames: every rejection has its own error, rotation works, the replay cache is bounded."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt import (
    TICKET_SIZE,
    ClusterKey,
    FrameCodec,
    FrameConfig,
    FrameError,
    InvalidClusterKey,
    MalformedFrame,
    OversizedFrame,
    ReplayedFrame,
    StaleFrame,
    TamperedFrame,
    UnknownKey,
    UnsupportedFrameVersion,
)

KEY = ClusterKey.generate(bytes(range(32)))
OTHER = ClusterKey.generate(bytes(range(1, 33)))
T0 = 1_700_000_000.0


def nonce(i: int) -> bytes:
    return i.to_bytes(16, "big")


def codec(**config: float) -> FrameCodec:
    return FrameCodec([KEY], FrameConfig(**config))  # type: ignore[arg-type]


def test_round_trip_and_msgpack_readable() -> None:
    frame = codec().seal(b"payload", now=T0, nonce=nonce(1))
    version, key_id, time_ms, n, payload, mac = msgpack.unpackb(frame)
    assert (version, key_id, time_ms, n, payload) == (
        1,
        KEY.key_id,
        int(T0 * 1000),
        nonce(1),
        b"payload",
    )
    assert len(mac) == 32
    assert codec().open(frame, now=T0 + 1) == b"payload"


def test_empty_payload() -> None:
    assert codec().open(codec().seal(b"", now=T0, nonce=nonce(1)), now=T0) == b""


def test_oversized_rejected_before_anything_else() -> None:
    small = codec(max_frame_bytes=200)
    with pytest.raises(OversizedFrame, match="limit"):
        small.open(b"\x00" * 201, now=T0)
    with pytest.raises(OversizedFrame):
        small.seal(b"x" * 200, now=T0, nonce=nonce(1))
    frame = codec().seal(b"x" * 200, now=T0, nonce=nonce(1))
    with pytest.raises(OversizedFrame):
        small.open(frame, now=T0)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x96", b"\x00" * 100, b"\xc0", msgpack.packb({"a": 1}), msgpack.packb([1, 2, 3])],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(MalformedFrame):
        codec().open(data, now=T0)


def test_truncated_and_padded_are_malformed() -> None:
    frame = codec().seal(b"payload", now=T0, nonce=nonce(1))
    for bad in (frame[:-1], frame + b"\x00", frame[:50]):
        with pytest.raises(MalformedFrame):
            codec().open(bad, now=T0)


def test_not_bytes_is_malformed() -> None:
    with pytest.raises(MalformedFrame):
        codec().open("text", now=T0)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [0, 2, 255, 70000])
def test_unsupported_version(version: int) -> None:
    frame = msgpack.packb([version, KEY.key_id, 0, nonce(1), b"", b"\x00" * 32])
    with pytest.raises(UnsupportedFrameVersion, match="same metaopt version"):
        codec().open(frame, now=T0)


def test_unknown_key_is_unauthenticated() -> None:
    frame = FrameCodec([OTHER]).seal(b"payload", now=T0, nonce=nonce(1))
    with pytest.raises(UnknownKey, match="metaopt peer key"):
        codec().open(frame, now=T0)


def test_every_single_byte_flip_is_rejected() -> None:
    frame = codec().seal(b"some payload", now=T0, nonce=nonce(1))
    for i in range(len(frame)):
        bad = bytearray(frame)
        bad[i] ^= 0x01
        with pytest.raises(FrameError):
            codec().open(bytes(bad), now=T0)


@pytest.mark.parametrize("where", ["payload", "time", "nonce", "mac"])
def test_tampered(where: str) -> None:
    frame = bytearray(codec().seal(b"some payload", now=T0, nonce=nonce(1)))
    index = {"payload": 45, "time": 20, "nonce": 30, "mac": len(frame) - 1}[where]
    frame[index] ^= 0x40
    with pytest.raises(TamperedFrame, match="MAC"):
        codec().open(bytes(frame), now=T0)


def test_forged_mac_with_same_key_id_is_tampered() -> None:
    frame = codec().seal(b"payload", now=T0, nonce=nonce(1))
    forged = frame[:-32] + bytes(32)
    with pytest.raises(TamperedFrame):
        codec().open(forged, now=T0)


def test_associated_data_binds() -> None:
    frame = codec().seal(b"reply", now=T0, nonce=nonce(2), associated=nonce(1))
    with pytest.raises(TamperedFrame):
        codec().open(frame, now=T0, associated=nonce(9))
    with pytest.raises(TamperedFrame):
        codec().open(frame, now=T0)
    assert codec().open(frame, now=T0, associated=nonce(1)) == b"reply"


def test_known_frame_bytes_are_stable() -> None:
    """The frame and its MAC are pinned: a change here splits every cluster's peers in two."""
    frame = codec().seal(b"payload", now=T0, nonce=nonce(1), associated=b"request nonce")
    assert frame == bytes.fromhex(
        "9601c408df0d3446f4f9031fcf0000018bcfe56800c410000000000000000000000000000000"
        "01c6000000077061796c6f6164c420b1e7428c9abed3c10cda7ee7021fa47493b9c8a9a5f025"
        "9108dc5869a50c64ab"
    )


def test_the_mac_tells_where_the_associated_bytes_end() -> None:
    # The associated bytes are length-prefixed in the MAC: without it, bytes moved from the
    # end of the associated data to the start of the signed bytes kept the same MAC.
    mac = FrameCodec._mac
    assert mac(KEY, b"bc", b"a") != mac(KEY, b"c", b"ab")
    assert mac(KEY, b"abc", b"") != mac(KEY, b"bc", b"a")


def _ms_to_s(ms: int) -> float:
    """Seconds that a FrameCodec reads back as exactly ms milliseconds."""
    now = ms / 1000
    assert math.floor(now * 1000) == ms
    return now


T0_MS = int(T0 * 1000)


@pytest.mark.parametrize("sign", [1, -1], ids=["ahead", "behind"])
def test_the_window_is_max_skew_to_the_millisecond(sign: int) -> None:
    # A frame max_skew old (or ahead) is taken, one millisecond more is not: a window
    # widened by up to a second (the receiver's clock read in whole seconds) went unseen.
    frame = codec().seal(b"payload", now=T0, nonce=nonce(1))
    assert codec().open(frame, now=_ms_to_s(T0_MS - sign * 120_000)) == b"payload"
    with pytest.raises(StaleFrame, match="clock"):
        codec().open(frame, now=_ms_to_s(T0_MS - sign * 120_001))


def test_a_nonce_is_remembered_as_long_as_its_frame_is_inside_the_window() -> None:
    # Expired a millisecond early, a nonce raised the cache's floor to its frame's time: a
    # fresh frame of that same millisecond, still inside the window, was refused as stale,
    # and a replay of the first was said to be stale rather than a replay.
    receiver = codec()
    first = codec().seal(b"first", now=T0, nonce=nonce(1))
    second = codec().seal(b"second", now=T0, nonce=nonce(2))
    assert receiver.open(first, now=T0) == b"first"
    edge = _ms_to_s(T0_MS + 120_000)  # both frames exactly max_skew old
    assert receiver.open(second, now=edge) == b"second"
    with pytest.raises(ReplayedFrame):
        receiver.open(first, now=edge)


@pytest.mark.parametrize("offset", [-121.0, 121.0, -1e6, 1e6])
def test_stale_outside_window(offset: float) -> None:
    frame = codec().seal(b"payload", now=T0 + offset, nonce=nonce(1))
    with pytest.raises(StaleFrame, match="clock"):
        codec(max_skew=120.0).open(frame, now=T0)


@pytest.mark.parametrize("offset", [-119.0, 0.0, 119.0])
def test_inside_window_accepted(offset: float) -> None:
    frame = codec().seal(b"payload", now=T0 + offset, nonce=nonce(1))
    assert codec(max_skew=120.0).open(frame, now=T0) == b"payload"


def test_replayed() -> None:
    receiver = codec()
    frame = codec().seal(b"payload", now=T0, nonce=nonce(1))
    assert receiver.open(frame, now=T0) == b"payload"
    with pytest.raises(ReplayedFrame, match="nonce"):
        receiver.open(frame, now=T0 + 60)
    # The same nonce in a fresh frame is also a replay: the nonce, not the bytes, is remembered.
    with pytest.raises(ReplayedFrame):
        receiver.open(codec().seal(b"other", now=T0 + 1, nonce=nonce(1)), now=T0 + 1)


def test_replay_after_window_is_stale_even_if_the_clock_goes_back() -> None:
    receiver = codec(max_skew=10.0)
    frame = codec().seal(b"payload", now=T0, nonce=nonce(1))
    receiver.open(frame, now=T0)
    receiver.open(codec().seal(b"x", now=T0 + 30, nonce=nonce(2)), now=T0 + 30)
    assert receiver.cached_nonces == 1  # the first nonce expired
    with pytest.raises(StaleFrame):
        receiver.open(frame, now=T0 + 5)  # receiver clock stepped back: still refused


def test_rejected_frames_do_not_enter_the_cache() -> None:
    receiver = codec()
    frame = bytearray(codec().seal(b"payload", now=T0, nonce=nonce(1)))
    frame[-1] ^= 1
    with pytest.raises(TamperedFrame):
        receiver.open(bytes(frame), now=T0)
    stale = codec().seal(b"payload", now=T0 - 1000, nonce=nonce(2))
    with pytest.raises(StaleFrame):
        receiver.open(stale, now=T0)
    assert receiver.cached_nonces == 0
    assert receiver.open(codec().seal(b"payload", now=T0, nonce=nonce(1)), now=T0) == b"payload"


def test_replay_cache_bounded_and_never_accepts_a_replay() -> None:
    receiver = codec(nonce_cache_size=8)
    sender = codec()
    frames = [sender.seal(b"p", now=T0 + i / 1000, nonce=nonce(i)) for i in range(40)]
    for i, frame in enumerate(frames):
        receiver.open(frame, now=T0 + i / 1000)
        assert receiver.cached_nonces <= 8
    for frame in frames:
        with pytest.raises((ReplayedFrame, StaleFrame)):
            receiver.open(frame, now=T0 + 0.05)
    assert receiver.cached_nonces == 8


def test_rotation() -> None:
    old_sender = FrameCodec([OTHER])
    new_sender = FrameCodec([KEY, OTHER])
    rotating = FrameCodec([KEY, OTHER])
    assert rotating.open(old_sender.seal(b"a", now=T0, nonce=nonce(1)), now=T0) == b"a"
    frame = new_sender.seal(b"b", now=T0, nonce=nonce(2))
    assert rotating.open(frame, now=T0) == b"b"
    with pytest.raises(UnknownKey):
        FrameCodec([OTHER]).open(frame, now=T0)
    assert FrameCodec([KEY]).open(frame, now=T0) == b"b"


def test_codec_misuse() -> None:
    with pytest.raises(ValueError):
        FrameCodec([])
    with pytest.raises(ValueError):
        FrameCodec([KEY, ClusterKey.generate(bytes(range(32)))])
    with pytest.raises(ValueError):
        codec().seal(b"", now=T0, nonce=b"short")
    with pytest.raises(ValueError):
        codec().seal(b"", now=float("nan"), nonce=nonce(1))
    with pytest.raises(ValueError):
        FrameConfig(nonce_cache_size=0)


def test_key_text_round_trip_and_typos() -> None:
    text = KEY.to_text()
    assert text.startswith("mo1-") and text == text.strip()
    assert ClusterKey.from_text(text) == KEY
    assert ClusterKey.from_text(f"  {text.upper()}\n") == KEY
    assert KEY != OTHER
    for bad in ("", "mo1-", text[:-3], text[4:], text + "a", text.replace("mo1-", "mo2-")):
        with pytest.raises(InvalidClusterKey):
            ClusterKey.from_text(bad)
    # One mistyped character anywhere in the body fails the checksum (or the alphabet).
    for i in range(4, len(text) - 1):
        typo = text[:i] + ("a" if text[i] != "a" else "b") + text[i + 1 :]
        with pytest.raises(InvalidClusterKey):
            ClusterKey.from_text(typo)


def test_key_never_revealed() -> None:
    secret_hex = bytes(range(32)).hex()
    assert KEY.fingerprint not in KEY.to_text()
    assert secret_hex not in repr(KEY) and KEY.fingerprint in repr(KEY)
    assert KEY.fingerprint == KEY.key_id.hex() and len(KEY.fingerprint) == 16
    with pytest.raises(InvalidClusterKey):
        ClusterKey.generate(b"too short")
    with pytest.raises(InvalidClusterKey):
        ClusterKey(b"x" * 31)


@given(st.binary(max_size=300))
def test_random_bytes_only_raise_frame_errors(data: bytes) -> None:
    receiver = codec()
    with pytest.raises(FrameError):
        receiver.open(data, now=T0)
    with pytest.raises(FrameError):
        receiver.check_ticket(data, now=T0)
    assert receiver.cached_nonces == 0


@given(
    st.binary(max_size=64),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(-5, 5),
)
def test_mutated_frames_only_raise_frame_errors(
    payload: bytes, edits: list[tuple[int, int]], resize: int
) -> None:
    frame = bytearray(codec().seal(payload, now=T0, nonce=nonce(7)))
    for at, value in edits:
        if at < len(frame):
            frame[at] = value
    if resize > 0:
        frame += bytes(resize)
    elif resize < 0:
        del frame[resize:]
    receiver = codec()
    try:
        assert receiver.open(bytes(frame), now=T0) == payload
    except FrameError:
        assert receiver.cached_nonces == 0


def test_a_ticket_announces_its_frame_and_proves_the_key() -> None:
    sender, receiver = codec(), codec()
    frame = sender.seal(b"payload", now=T0, nonce=nonce(1))
    ticket = sender.ticket(frame)
    assert len(ticket) == TICKET_SIZE
    assert receiver.check_ticket(ticket, now=T0 + 1) == len(frame)
    assert receiver.open_frame(frame, now=T0 + 1, ticket=ticket).payload == b"payload"
    with pytest.raises(ReplayedFrame):  # its frame was accepted: the ticket is spent
        receiver.check_ticket(ticket, now=T0 + 2)
    with pytest.raises(UnknownKey):
        FrameCodec([OTHER]).check_ticket(ticket, now=T0)
    forged = ticket[:-1] + bytes([ticket[-1] ^ 1])
    with pytest.raises(TamperedFrame):
        receiver.check_ticket(forged, now=T0)
    longer = bytearray(ticket)  # a claim to a bigger frame breaks the ticket's MAC
    longer[TICKET_SIZE - 33] ^= 1
    with pytest.raises(TamperedFrame):
        codec().check_ticket(bytes(longer), now=T0)
    with pytest.raises(StaleFrame):
        codec().check_ticket(ticket, now=T0 + 3600)
    with pytest.raises(MalformedFrame):
        codec().check_ticket(ticket[:-1], now=T0)
    with pytest.raises(OversizedFrame):
        codec(max_frame_bytes=len(frame) - 1).check_ticket(ticket, now=T0)


def test_a_frame_must_match_its_ticket() -> None:
    sender = codec()
    first = sender.seal(b"one", now=T0, nonce=nonce(1))
    second = sender.seal(b"two", now=T0, nonce=nonce(2))
    with pytest.raises(TamperedFrame, match="ticket"):
        codec().open_frame(second, now=T0, ticket=sender.ticket(first))


def test_a_ticket_is_not_a_frame_mac() -> None:
    # The ticket's MAC is made in a context open() never uses: an empty frame built from a
    # ticket's header and MAC does not open.
    sender = codec()
    empty = sender.seal(b"", now=T0, nonce=nonce(3))
    ticket = sender.ticket(empty)
    forged = empty[:-32] + ticket[-32:]
    with pytest.raises(TamperedFrame):
        codec().open(forged, now=T0)
