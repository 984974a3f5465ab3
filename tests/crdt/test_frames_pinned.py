"""Frame rules a mutation audit of crdt/_frames.py found unpinned by the other tests."""

from __future__ import annotations

import pytest

from crdt import (
    ClusterKey,
    FrameCodec,
    FrameConfig,
    InvalidClusterKey,
    MalformedFrame,
    OversizedFrame,
    StaleFrame,
    UnsupportedFrameVersion,
)
from crdt._frames import FRAME_OVERHEAD
from tests.crdt.test_frames import KEY, OTHER, T0, codec, nonce

T0_MS = 1_700_000_000_000


def test_config_refuses_a_frame_limit_with_no_room_for_a_payload_and_a_zero_window() -> None:
    """Pins FrameConfig's bounds: max_frame_bytes must exceed the overhead (a limit equal to it
    fits only empty frames) and max_skew must be positive (a zero window refuses every frame
    sent a millisecond earlier)."""
    with pytest.raises(ValueError, match="max_frame_bytes"):
        FrameConfig(max_frame_bytes=FRAME_OVERHEAD)
    assert FrameConfig(max_frame_bytes=FRAME_OVERHEAD + 1).max_frame_bytes == FRAME_OVERHEAD + 1
    with pytest.raises(ValueError, match="max_skew"):
        FrameConfig(max_skew=0.0)
    with pytest.raises(ValueError, match="max_skew"):
        FrameConfig(max_skew=float("inf"))


def test_a_frame_of_exactly_max_frame_bytes_is_sealed_opened_and_ticketed() -> None:
    """Pins the frame limit as inclusive on all three sides (seal, open, check_ticket): a
    sender and a receiver of the same limit must agree on the frame at the edge, or a batch
    sized to the limit is sealed and then refused by every peer."""
    limit = FRAME_OVERHEAD + 10
    sender, receiver = codec(max_frame_bytes=limit), codec(max_frame_bytes=limit)
    frame = sender.seal(b"x" * 10, now=T0, nonce=nonce(1))
    assert len(frame) == limit
    assert receiver.check_ticket(sender.ticket(frame), now=T0) == limit
    assert receiver.open(frame, now=T0) == b"x" * 10
    with pytest.raises(OversizedFrame):
        sender.seal(b"x" * 11, now=T0, nonce=nonce(2))
    bigger = codec().seal(b"x" * 11, now=T0, nonce=nonce(3))
    with pytest.raises(OversizedFrame):
        receiver.check_ticket(codec().ticket(bigger), now=T0)
    with pytest.raises(OversizedFrame):
        receiver.open(bigger, now=T0)


def test_seal_refuses_a_clock_past_what_a_frame_carries() -> None:
    """Pins seal's bound on ``now`` (below 2**53 ms, and not negative): a nonsense clock is a
    ValueError at the sender, not a frame no receiver's window accepts."""
    for bad in (2**53 / 1000, 1e300, -1.0, float("inf")):
        with pytest.raises(ValueError, match="seconds since the epoch"):
            codec().seal(b"", now=bad, nonce=nonce(1))
    assert codec().seal(b"", now=0.0, nonce=nonce(1))


def test_a_frame_carries_its_senders_clock_rounded_down_to_the_millisecond() -> None:
    """Pins math.floor in seal: the time a frame carries is the millisecond the sender's clock
    was in, as the receiver's window reads its own clock (rounding up would put a frame up to
    half a millisecond into the future, off by one at the window's edge)."""
    frame = codec().seal(b"p", now=T0 + 0.0009, nonce=nonce(1))
    assert codec().open_frame(frame, now=T0).time_ms == T0_MS


def test_the_window_keeps_fractions_of_a_second() -> None:
    """Pins max_skew in milliseconds, not whole seconds: a 0.5 s window accepts a frame
    0.4 s old (truncated to seconds it would be a zero window)."""
    receiver = codec(max_skew=0.5)
    frame = codec().seal(b"p", now=T0, nonce=nonce(1))
    assert receiver.open(frame, now=T0 + 0.4) == b"p"
    with pytest.raises(StaleFrame):
        receiver.open(codec().seal(b"p", now=T0, nonce=nonce(2)), now=T0 + 0.6)


def test_an_opened_frame_names_the_key_that_sealed_it() -> None:
    """Pins OpenedFrame.key_id during a rotation: a frame sealed under the older key reports
    that key, not the receiver's current one, so a caller binding to it sees which key the
    sender still uses."""
    rotating = FrameCodec([KEY, OTHER])
    old = FrameCodec([OTHER]).seal(b"a", now=T0, nonce=nonce(1))
    new = FrameCodec([KEY]).seal(b"b", now=T0, nonce=nonce(2))
    assert rotating.open_frame(old, now=T0).key_id == OTHER.key_id
    assert rotating.open_frame(new, now=T0).key_id == KEY.key_id


# Byte offsets of the fixed tags of a version-1 frame of a 7-byte payload.
_LAYOUT = {"array": 0, "key-id-bin": 2, "key-id-len": 3, "time-u64": 12, "nonce-bin": 21,
           "nonce-len": 22, "payload-bin32": 39, "mac-bin": 51, "mac-len": 52}  # fmt: skip


@pytest.mark.parametrize("at", _LAYOUT.values(), ids=_LAYOUT.keys())
def test_a_frame_with_a_wrong_layout_tag_is_malformed_not_tampered(at: int) -> None:
    """Pins each tag check of the layout (header and trailer): a frame of another layout is
    MalformedFrame ("is the sender a metaopt peer?"), checked before the MAC, not a MAC
    mismatch that tells the user to check the network path and the key."""
    frame = bytearray(codec().seal(b"payload", now=T0, nonce=nonce(1)))
    assert len(frame) == FRAME_OVERHEAD + 7
    frame[at] ^= 0x01
    with pytest.raises(MalformedFrame):
        codec().open(bytes(frame), now=T0)
    if at < 44:  # the header: a ticket of it is refused the same way
        ticket = bytes(frame[:44]) + bytes(32)
        with pytest.raises(MalformedFrame):
            codec().check_ticket(ticket, now=T0)


@pytest.mark.parametrize(
    "data",
    [b"\x96\x80" + bytes(80), b"\x96\xcd", b"\x96\xce\x00\x00"],
    ids=["fixmap", "u16", "u32"],
)
def test_bytes_without_a_readable_version_are_not_a_frame(data: bytes) -> None:
    """Pins _peek_version's edges: a 0x80 tag (a map, not a number) and a number cut short are
    "not a metaopt frame" (MalformedFrame), not a frame of some unsupported version."""
    with pytest.raises(MalformedFrame):
        codec().open(data, now=T0)


@pytest.mark.parametrize(
    "head", [b"\x90", b"\xdc\x00\x00", b"\xdd\x00\x00\x00\x00"], ids=["fix", "a16", "a32"]
)
def test_an_empty_array_has_no_version_and_is_not_a_frame(head: bytes) -> None:
    """The byte after an empty array was read as its version: such junk was told to run the
    same metaopt version on every peer, where it is no metaopt frame at all."""
    with pytest.raises(MalformedFrame):
        codec().open(head + b"\x02" + bytes(100), now=T0)


def test_an_array16_or_array32_frame_is_read_for_its_version() -> None:
    """Pins _peek_version's offsets for array16/array32 heads: such bytes with version 2 are
    UnsupportedFrameVersion (a newer metaopt's frame), so the user is told to upgrade."""
    for head in (b"\xdc\x00\x06", b"\xdd\x00\x00\x00\x06"):
        with pytest.raises(UnsupportedFrameVersion):
            codec().open(head + b"\x02" + bytes(100), now=T0)


def test_a_truncated_or_padded_key_text_is_called_truncated_not_a_typo() -> None:
    """Pins from_text's length check (exactly 32 + 4 bytes): a key cut short in copying, or
    with a stray character appended, gets the hint to copy it again whole, not the typo one."""
    text = KEY.to_text()
    for bad in (text[:-3], text[:-8], text + "aaaaaaaa"):
        with pytest.raises(InvalidClusterKey, match="truncated"):
            ClusterKey.from_text(bad)


def test_a_nonce_is_forgotten_once_its_frame_leaves_the_window() -> None:
    """Pins expiry at now - max_skew (not later): the replay cache holds only the nonces of
    frames still inside the window, so a busy peer's cache does not fill with nonces no replay
    could use, evicting live ones and refusing fresh frames as stale."""
    receiver = codec(max_skew=10.0)
    receiver.open(codec().seal(b"a", now=T0, nonce=nonce(1)), now=T0)
    receiver.open(codec().seal(b"b", now=T0 + 10.5, nonce=nonce(2)), now=T0 + 10.5)
    assert receiver.cached_nonces == 1
