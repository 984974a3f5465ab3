"""Version-vector rules a mutation audit of crdt/_vector.py found unpinned by the other tests."""

from __future__ import annotations

import pytest

from crdt import SeqSet, VersionVector

ORIGIN = b"o" * 16


def test_an_empty_run_adds_nothing_to_a_seqset() -> None:
    # Pins SeqSet.add_run's lo > hi guard: the run (5, 4) was stored as a run of its own, so
    # the set held a "run" of no numbers, was truthy and had a high of 4.
    seqs = SeqSet()
    assert seqs.add_run(5, 4) == 0
    assert seqs.runs() == [] and not seqs and seqs.high == 0
    assert SeqSet([(5, 4)]) == SeqSet()
    seqs.add_run(1, 2)
    assert seqs.add_run(9, 3) == 0 and seqs.runs() == [(1, 2)]


def test_from_wire_refuses_runs_that_touch() -> None:
    # Pins "runs ascend and do not touch": to_wire never writes 1-2 and 3-4 apart, so such a
    # list is not a vector's wire form (it would not come back from to_wire as it was sent).
    with pytest.raises(ValueError, match="ascend"):
        VersionVector.from_wire([[ORIGIN, [1, 2, 3, 4]]])
    assert VersionVector.from_wire([[ORIGIN, [1, 2, 4, 5]]]).get(ORIGIN).runs() == [
        (1, 2),
        (4, 5),
    ]


def test_from_wire_refuses_a_bool_for_the_start_of_a_run() -> None:
    # Pins the bool check on a run's start (the end's is pinned in test_vector.py): True is
    # an int equal to 1 in Python, and msgpack gives a peer's true as a boolean, not a number.
    with pytest.raises(ValueError):
        VersionVector.from_wire([[ORIGIN, [True, 2]]])
