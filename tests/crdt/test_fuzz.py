"""A bounded fuzz loop (fixed seed and count) over the record and frame decoders.

Only RecordError / FrameError subclasses may escape, and rejected input never reaches a store.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from crdt import (
    ClusterKey,
    FrameCodec,
    FrameError,
    MemoryStore,
    Record,
    RecordError,
    SetFingerprint,
)

SEED = 20261122
ROUNDS = 3000
T0 = 1_700_000_000.0


def seeds(rng: random.Random) -> list[bytes]:
    origin = bytes(range(16))
    return [
        Record.create("trial", origin, 1, 1, {}).data,
        Record.create(
            "event", origin, 2, 99, {"m": {"loss": 0.5, "s": "x"}, "b": b"\x00" * 40}, [b"e" * 32]
        ).data,
        Record.create(
            "blob", origin, 3**30, 2**40, [1, -1, 2**63, None, True, [[]], {"": 1.0}]
        ).data,
        bytes(rng.randrange(256) for _ in range(64)),
    ]


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        at = rng.randrange(len(out) + 1)
        if op == 0 and out:
            out[at % len(out)] = rng.randrange(256)
        elif op == 1 and out:
            out[at % len(out)] ^= 1 << rng.randrange(8)
        elif op == 2:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3:
            del out[at : at + rng.randint(1, 8)]
        else:
            out[at:at] = rng.choice(
                [b"\xcf", b"\xdc\xff\xff", b"\xdf\x00\x01\x00\x00", b"\xc7\x05\xff", b"\xca"]
            )
    return bytes(out)


def fuzz(
    decode: Callable[[bytes], object],
    allowed: type[Exception],
    inputs: list[bytes],
    rng: random.Random,
) -> tuple[int, int]:
    accepted = rejected = 0
    for _ in range(ROUNDS):
        if rng.random() < 0.2:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(120)))
        else:
            data = mutate(rng, rng.choice(inputs))
        try:
            decode(data)
            accepted += 1
        except allowed:
            rejected += 1
    return accepted, rejected


def test_record_decoder_fuzz() -> None:
    rng = random.Random(SEED)
    store = MemoryStore()
    stored: set[bytes] = set()

    def decode_and_store(data: bytes) -> object:
        record = Record.decode(data)
        # Accepted mutants are canonical records in their own right, named by their exact bytes.
        assert record.data == data and Record.decode(record.data).key == record.key
        store.add([record])
        stored.add(record.key)
        return record

    accepted, rejected = fuzz(decode_and_store, RecordError, seeds(rng), rng)
    assert accepted + rejected == ROUNDS and rejected > ROUNDS // 2
    # Only accepted input ever reached the store.
    assert len(store) == len(stored)
    assert store.fingerprint().digest() == SetFingerprint.of(stored).digest()


def test_frame_decoder_fuzz() -> None:
    rng = random.Random(SEED + 1)
    key = ClusterKey.generate(bytes(range(32)))
    sender, receiver = FrameCodec([key]), FrameCodec([key])
    store = MemoryStore()
    frames = [
        sender.seal(payload, now=T0, nonce=i.to_bytes(16, "big"))
        for i, payload in enumerate(seeds(rng)[:3])  # payloads that are records
    ]

    originals = set(frames)
    opened: list[bytes] = []

    def open_and_store(data: bytes) -> object:
        payload = receiver.open(data, now=T0)
        # Only an unchanged frame authenticates (a mutation can be a no-op), and only once.
        assert data in originals and data not in opened
        opened.append(data)
        store.add([Record.decode(payload)])
        return payload

    accepted, rejected = fuzz(open_and_store, FrameError, frames, rng)
    assert rejected > ROUNDS * 9 // 10 and accepted == len(opened)
    assert receiver.cached_nonces == len(opened)
    assert len(store) == len(opened)
