from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from metaopt.search import crowding_distance, hypervolume_2d, non_dominated_sort, pareto_front

objs = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 25), st.integers(1, 3)),
    elements=st.integers(0, 6).map(float),
)


def _brute_front(Y: np.ndarray) -> list[int]:
    return [
        i
        for i in range(len(Y))
        if not any((Y[j] <= Y[i]).all() and (Y[j] < Y[i]).any() for j in range(len(Y)))
    ]


@settings(max_examples=60, deadline=None)
@given(objs)
def test_front_matches_brute_force(Y: np.ndarray) -> None:
    assert pareto_front(Y).tolist() == _brute_front(Y)


@settings(max_examples=60, deadline=None)
@given(objs)
def test_fronts_partition_and_each_is_dominated_by_previous(Y: np.ndarray) -> None:
    fronts = non_dominated_sort(Y)
    assert sorted(np.concatenate(fronts).tolist()) == list(range(len(Y)))
    rest = np.arange(len(Y))
    for f in fronts:
        assert sorted(f.tolist()) == rest[_brute_front(Y[rest])].tolist()
        rest = np.setdiff1d(rest, f)


def test_known_front_and_nan_rows_last() -> None:
    Y = np.array([[1.0, 4.0], [2.0, 2.0], [4.0, 1.0], [3.0, 3.0], [np.nan, 0.0], [5.0, 5.0]])
    fronts = non_dominated_sort(Y)
    assert [f.tolist() for f in fronts] == [[0, 1, 2], [3], [5], [4]]
    assert pareto_front(Y).tolist() == [0, 1, 2]


def test_crowding_extremes_infinite() -> None:
    Y = np.array([[0.0, 3.0], [1.0, 2.0], [2.0, 1.0], [3.0, 0.0]])
    c = crowding_distance(Y)
    assert np.isinf(c[[0, 3]]).all()
    np.testing.assert_allclose(c[1:3], [2 / 3 + 2 / 3, 2 / 3 + 2 / 3])


def test_hypervolume_2d() -> None:
    Y = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [3.0, 3.0]])
    assert hypervolume_2d(Y, (4.0, 4.0)) == 3 + 2 + 1
    assert hypervolume_2d(Y, (0.5, 0.5)) == 0.0
    assert hypervolume_2d(np.array([[0.0, 0.0]]), (1.0, 2.0)) == 2.0
