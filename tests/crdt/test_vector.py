"""SeqSet and VersionVector agree with a plain Python set model."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt import SeqSet, VersionVector

runs = st.lists(st.tuples(st.integers(1, 60), st.integers(0, 8)), max_size=25).map(
    lambda pairs: [(lo, lo + n) for lo, n in pairs]
)


def model(pairs: list[tuple[int, int]]) -> set[int]:
    return {n for lo, hi in pairs for n in range(lo, hi + 1)}


def runs_of(numbers: set[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if out and out[-1][1] + 1 == n:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


@given(runs)
def test_seqset_matches_set_model(pairs: list[tuple[int, int]]) -> None:
    seqs = SeqSet()
    held: set[int] = set()
    for lo, hi in pairs:
        added = seqs.add_run(lo, hi)
        new = set(range(lo, hi + 1)) - held
        assert added == len(new)
        held |= new
        assert seqs.runs() == runs_of(held)  # sorted, disjoint, non-adjacent
    assert len(seqs) == len(held)
    assert seqs.high == max(held, default=0)
    for limit in (1, 2, 17, 40, 81):
        assert seqs.high_below(limit) == max((n for n in held if n < limit), default=0)
    for n in range(0, 75):
        assert seqs.free_after(n) == next(m for m in range(n + 1, 200) if m not in held)
    for n in range(0, 75):
        assert (n in seqs) == (n in held)
    assert seqs == SeqSet(runs_of(held))


@given(st.permutations(range(1, 400)))
def test_shuffled_adds_end_as_one_run(numbers: list[int]) -> None:
    seqs = SeqSet()
    for i, n in enumerate(numbers):
        assert seqs.add(n)
        if i % 50 == 0:
            assert seqs.runs() == runs_of(set(numbers[: i + 1]))
    assert seqs.runs() == [(1, 399)]


@given(st.lists(st.integers(1, 80), max_size=60))
def test_add_reports_newness(numbers: list[int]) -> None:
    seqs = SeqSet()
    held: set[int] = set()
    for n in numbers:
        assert seqs.add(n) == (n not in held)
        held.add(n)
    assert seqs.runs() == runs_of(held)


@given(runs, runs)
def test_missing_from_is_set_difference(
    mine: list[tuple[int, int]], theirs: list[tuple[int, int]]
) -> None:
    a, b = SeqSet(mine), SeqSet(theirs)
    assert list(a.missing_from(b)) == runs_of(model(mine) - model(theirs))


origins = st.sampled_from([bytes([i]) * 16 for i in range(4)])
vv_entries = st.lists(st.tuples(origins, st.integers(1, 40)), max_size=40)


def build(entries: list[tuple[bytes, int]]) -> VersionVector:
    vv = VersionVector()
    for origin, seq in entries:
        vv.add(origin, seq)
    return vv


@given(vv_entries, vv_entries)
def test_version_vector_matches_model(
    mine: list[tuple[bytes, int]], theirs: list[tuple[bytes, int]]
) -> None:
    a, b = build(mine), build(theirs)
    for origin, seq in mine:
        assert a.contains(origin, seq)
    missing = {(o, n) for o, lo, hi in a.missing_from(b) for n in range(lo, hi + 1)}
    assert missing == set(mine) - set(theirs)
    assert a.origins() == sorted({o for o, _ in mine})
    for origin in a.origins():
        assert a.high(origin) == max(s for o, s in mine if o == origin)


@given(st.lists(st.tuples(origins, st.integers(1, 40), st.integers(0, 6)), max_size=20))
def test_add_run_is_adding_each(entries: list[tuple[bytes, int, int]]) -> None:
    by_runs, one_by_one = VersionVector(), VersionVector()
    for origin, lo, n in entries:
        hi = lo + n
        added = sum(one_by_one.add(origin, seq) for seq in range(lo, hi + 1))
        assert by_runs.add_run(origin, lo, hi) == added
        assert by_runs == one_by_one
    assert by_runs.add_run(b"\x09" * 16, 5, 4) == 0  # an empty run adds nothing
    assert by_runs == one_by_one and b"\x09" * 16 not in by_runs.origins()


@given(vv_entries, vv_entries, st.randoms())
def test_digest_names_the_held_pairs_whatever_the_order(
    mine: list[tuple[bytes, int]], theirs: list[tuple[bytes, int]], rng: Any
) -> None:
    a = build(mine)
    a.digest()  # computed midway, so later adds update it rather than start it
    shuffled = mine + theirs
    rng.shuffle(shuffled)
    for origin, seq in theirs:
        a.add(origin, seq)
    b = build(shuffled)
    wire = VersionVector.from_wire(msgpack.unpackb(msgpack.packb(b.to_wire())))
    assert a.digest() == b.digest() == wire.digest()
    assert (build(mine).digest() == a.digest()) == (set(mine) >= set(theirs))
    assert VersionVector({b"\x09" * 16: SeqSet()}).digest() == VersionVector().digest()


class CountingMsgpack:
    """Stands in for msgpack in crdt._vector: counts the bytes it serialises."""

    def __init__(self) -> None:
        self.packed = 0

    def packb(self, value: object, **kwargs: Any) -> bytes:
        data: bytes = msgpack.packb(value, **kwargs)
        self.packed += len(data)
        return data


def test_digest_after_an_add_serialises_only_that_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    vv = VersionVector()
    for i in range(1000):
        vv.add_run(i.to_bytes(16, "big"), 1, 5)
    vv.digest()
    counting = CountingMsgpack()
    monkeypatch.setattr("crdt._vector.msgpack", counting)
    vv.add((7).to_bytes(16, "big"), 9)
    vv.digest()
    assert 0 < counting.packed < 64  # one origin and its runs; the whole vector is ~25 KB


@given(vv_entries)
def test_wire_round_trip(entries: list[tuple[bytes, int]]) -> None:
    vv = build(entries)
    wire = msgpack.unpackb(msgpack.packb(vv.to_wire()))
    assert VersionVector.from_wire(wire) == vv


@pytest.mark.parametrize(
    "junk",
    [
        None,
        b"x",
        {"a": 1},
        [1],
        [[b"o"]],
        [[b"o", [1]]],
        [["o", [1, 2]]],
        [[b"o", [0, 2]]],
        [[b"o", [3, 2]]],
        [[b"o", [1, True]]],
        [[b"o", [1, 2.0]]],
        [[b"o", [1, 2**63]]],
        [[b"o", "runs"]],
    ],
)
def test_from_wire_rejects_junk(junk: Any) -> None:
    with pytest.raises(ValueError):
        VersionVector.from_wire(junk)


def test_from_wire_bounds_origins() -> None:
    with pytest.raises(ValueError):
        VersionVector.from_wire([[bytes([i]), [1, 1]] for i in range(5)], max_origins=4)


def test_from_wire_bounds_the_runs_of_all_origins_together() -> None:
    # Each origin's runs were capped, not their sum: 331 origins of 32,767 runs each (62 MiB)
    # held a peer's event loop 14 s and took 2 GB.
    wire = [[bytes([i]) * 16, [1, 1, 3, 3, 5, 5]] for i in range(4)]
    assert VersionVector.from_wire(wire, max_runs=12).total_runs() == 12
    with pytest.raises(ValueError, match="more than 11 runs"):
        VersionVector.from_wire(wire, max_runs=11)


def test_from_wire_refuses_an_origin_listed_twice() -> None:
    # Without the check the second entry silently replaced the first: a peer's vector parsed
    # as holding less (or other) than it said.
    o = b"o" * 16
    with pytest.raises(ValueError, match="twice"):
        VersionVector.from_wire([[o, [1, 1]], [o, [3, 3]]])


def test_digest_follows_add_run_after_it_was_computed() -> None:
    # Stores update their live vector only through add_run: a digest cached before it and not
    # invalidated told peers "mine is this" about a vector the replica no longer had.
    o = b"o" * 16
    vv = VersionVector()
    vv.add(o, 1)
    d0 = vv.digest()
    assert vv.add_run(o, 5, 9) == 5
    assert vv.digest() != d0
    assert vv.digest() == VersionVector.from_wire(vv.to_wire()).digest()


def test_an_origin_with_no_seqs_counts_for_nothing_in_equality() -> None:
    # An origin listed with no runs holds nothing: the vector equals the empty one (digest()
    # already says so), or a peer's empty entry read as a difference.
    o = b"o" * 16
    listed_empty = VersionVector.from_wire([[o, []]])
    assert listed_empty == VersionVector() and VersionVector() == listed_empty
    assert VersionVector({o: SeqSet()}) == VersionVector()
    assert listed_empty != VersionVector.from_wire([[o, [1, 1]]])
