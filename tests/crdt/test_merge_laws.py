"""Merging replicas through the reconciliation protocol is set union: the G-Set laws."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from crdt import Initiator, MemoryStore, Record, SyncConfig, respond

ORIGINS = [bytes([i]) * 16 for i in range(1, 4)]


def _pool(n: int) -> list[Record]:
    rng = random.Random(7)
    seqs = dict.fromkeys(ORIGINS, 0)
    out = []
    for i in range(n):
        origin = rng.choice(ORIGINS)
        seqs[origin] += 1
        out.append(Record.create("trial", origin, seqs[origin], rng.randrange(50), {"i": i}))
    # A second life of the first origin: same (origin, seq) as above, different records.
    out += [Record.create("trial", ORIGINS[0], s, 100 + s, {"again": s}) for s in range(1, 6)]
    return out


POOL = _pool(40)
sets = st.lists(st.sampled_from(POOL), unique_by=lambda r: r.key).map(frozenset)
configs = st.sampled_from([SyncConfig(), SyncConfig(fast_path=False, fanout=2, leaf_size=1)])


def merge(x: frozenset[Record], y: frozenset[Record], config: SyncConfig) -> frozenset[Record]:
    """x merged with y by one session between two fresh replicas; both must end equal."""
    a, b = MemoryStore(), MemoryStore()
    a.add(sorted(x, key=lambda r: r.key))
    b.add(sorted(y, key=lambda r: r.key))
    session = Initiator(a, config)
    message: bytes | None = session.start()
    while message is not None:
        message = session.receive(respond(b, message, config))
    result = frozenset(a.get(k) for _, k in a.ordered())
    assert result == frozenset(b.get(k) for _, k in b.ordered())
    return result  # type: ignore[return-value]


@given(x=sets, y=sets, config=configs)
def test_merge_is_union_and_commutative(
    x: frozenset[Record], y: frozenset[Record], config: SyncConfig
) -> None:
    assert merge(x, y, config) == merge(y, x, config) == x | y


@given(x=sets, y=sets, z=sets, config=configs)
def test_merge_is_associative(
    x: frozenset[Record], y: frozenset[Record], z: frozenset[Record], config: SyncConfig
) -> None:
    assert merge(merge(x, y, config), z, config) == merge(x, merge(y, z, config), config)


@given(x=sets, y=sets, config=configs)
def test_merge_is_idempotent(
    x: frozenset[Record], y: frozenset[Record], config: SyncConfig
) -> None:
    assert merge(x, x, config) == x
    once = merge(x, y, config)
    assert merge(once, y, config) == once
    assert merge(once, once, config) == once
