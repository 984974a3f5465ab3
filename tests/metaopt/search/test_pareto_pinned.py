"""Pareto rules a mutation audit of metaopt/search/_pareto.py found unpinned by the other tests."""

from __future__ import annotations

import numpy as np

from metaopt.search import crowding_distance, parego_scalarise, pareto_front


def test_a_front_of_only_non_finite_rows_is_empty() -> None:
    """Pins that pareto_front never reports NaN results as the best trials: with no finite row
    the non-finite rows form the only front, and the Pareto front is empty."""
    Y = np.array([[np.nan, 1.0], [2.0, np.nan], [np.inf, 0.0]])
    assert pareto_front(Y).tolist() == []


def test_crowding_is_finite_when_an_objective_is_constant() -> None:
    """Pins the span > 0 guard: points equal in one objective add nothing there (no 0 / 0 NaN,
    which would make NSGA-II's truncation order arbitrary)."""
    c = crowding_distance(np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]))
    assert np.isinf(c[[0, 2]]).all() and c[1] == 0.0
    c = crowding_distance(np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 3.0]]))
    assert np.isinf(c[[0, 2]]).all() and c[1] == 1.0


def test_crowding_marks_both_ends_of_every_objective_infinite() -> None:
    """Pins that the largest value of each objective is an extreme as well as the smallest: in
    three objectives a point can be the largest of one without being the smallest of any."""
    Y = np.array(
        [[0.0, 3.0, 3.0], [3.0, 0.0, 3.0], [1.0, 1.0, 4.0], [2.0, 2.0, 0.0], [1.5, 1.5, 2.0]]
    )
    c = crowding_distance(Y)
    assert np.isinf(c[:4]).all() and np.isfinite(c[4])


def test_chebyshev_scalarisation_of_a_constant_objective_is_finite() -> None:
    """Pins the hi > lo guard: an objective equal on every trial (a metric that never moved)
    contributes 0 instead of NaN, so the GP still gets a usable target."""
    s = parego_scalarise(np.array([[1.0, 2.0], [1.0, 3.0], [1.0, 4.0]]), np.array([0.5, 0.5]), 0.05)
    assert np.isfinite(s).all()
    np.testing.assert_allclose(s, [0.0, 0.2625, 0.525])


def test_chebyshev_augmentation_is_weighted() -> None:
    """Pins ParEGO's augmented term rho * sum(w * z): the tie-break follows the weights too."""
    Y = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    w = np.array([0.2, 0.8])
    s = parego_scalarise(Y, w, 0.1)
    np.testing.assert_allclose(s, [0.8 + 0.1 * 0.8, 0.2 + 0.1 * 0.2, 0.4 + 0.1 * 0.5])
