"""Kernel rules a mutation audit of metaopt/search/gp/_kernel.py found unpinned by the other
tests."""

from __future__ import annotations

import numpy as np

from metaopt.search.gp import KernelSpec
from metaopt.search.gp._kernel import (
    cat_index,
    matern52,
    matern52_and_grad,
    matern52_grad_s,
    pair_sqdist,
    sqdist,
)
from tests.metaopt.search.gp.test_gp_model import MIXED, _points


def test_the_fit_distances_weighted_by_lengthscales_equal_the_models_distances() -> None:
    """Pins pair_sqdist (used to fit the hyperparameters) against sqdist (used to predict): both
    must be Hamming on categoricals, else the lengthscales are fitted for another kernel than the
    one the model then predicts with."""
    rng = np.random.default_rng(0)
    X = _points(11, 12)
    inv_ls = np.exp(rng.normal(0, 1, MIXED.d))
    D = pair_sqdist(X, MIXED)
    assert D.shape == (12, 12, MIXED.d)
    np.testing.assert_allclose(D @ inv_ls**2, sqdist(X, X, inv_ls, MIXED), rtol=1e-9, atol=1e-9)
    cat = list(MIXED.cat)
    assert set(np.unique(D[:, :, cat])) <= {0.0, 1.0}


def test_categoricals_of_many_choices_are_compared_as_indices_to_the_same_distances() -> None:
    """Pins the two ways a categorical enters sqdist (a one-hot block up to 16 choices, a
    comparison of indices beyond: a 5,000-choice one-hot took 1.45 s a suggestion) to the
    Hamming distance the hyperparameters are fitted on, between two sets of points too."""
    spec = KernelSpec.from_kinds(
        ("cat", "real", "cat", "cat", "int", "cat"), (3, None, 16, 17, 10, 5000)
    )
    rng = np.random.default_rng(1)
    X = _points(3, 14, spec)
    for col, k in zip(spec.cat, spec.cat_k, strict=True):  # (repeated choices: some distances 0)
        X[:, col] = (rng.integers(0, 3, 14) * (k // 3) + 0.5) / k
    inv_ls = np.exp(rng.normal(0, 1, spec.d))
    full = pair_sqdist(X, spec) @ inv_ls**2
    np.testing.assert_allclose(sqdist(X, X, inv_ls, spec), full, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(sqdist(X[:5], X[5:], inv_ls, spec), full[:5, 5:], rtol=1e-9)
    assert (sqdist(X, X, inv_ls, spec) >= 0.0).all()


def test_a_categorical_coordinate_at_the_top_of_the_cube_is_its_last_choice() -> None:
    """Pins the clip in cat_index: a categorical coordinate at exactly 1.0 (a bound the optimiser
    and clipping can reach) is the last of its k choices, not a k-th that does not exist."""
    spec = KernelSpec.from_kinds(("cat", "real"), (3, None))
    X = np.array([[0.0, 0.5], [1.0 / 3.0, 0.5], [0.999, 0.5], [1.0, 0.5]])
    np.testing.assert_array_equal(cat_index(X, spec)[:, 0], [0, 1, 2, 2])
    s = sqdist(X, X, np.ones(2), spec)
    assert s[2, 3] == 0.0
    assert abs(s[0, 3] - 1.0) < 1e-12


def test_scaled_distances_are_never_negative_so_the_kernel_is_finite() -> None:
    """Pins the clamp in sqdist: A.A + B.B - 2 A.B rounds below zero for equal points, and the
    Matérn kernel takes its square root; a NaN there poisons every prediction."""
    spec = KernelSpec.from_kinds(("real",) * 3, (None,) * 3)
    X = np.random.default_rng(2).random((40, 3)) * 7.3 + 1e3
    inv_ls = np.array([37.0, 11.0, 53.0])
    s = sqdist(X, X, inv_ls, spec)
    assert np.all(s >= 0.0)
    assert np.all(np.isfinite(matern52(s, 1.0)))


def test_the_fused_kernel_and_gradient_equal_the_separate_ones() -> None:
    """Pins matern52_and_grad (used in the MAP fit) to matern52 and matern52_grad_s (used to
    predict and for acquisition gradients), and the gradient to the kernel's derivative: the
    other tests only compare each against itself."""
    s = np.concatenate([[0.0], np.geomspace(1e-6, 30.0, 50)])
    for signal in (0.3, 2.0):
        k, g = matern52_and_grad(s, signal)
        np.testing.assert_allclose(k, matern52(s, signal), rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(g, matern52_grad_s(s, signal), rtol=1e-12, atol=1e-300)
        h = 1e-7 * np.maximum(s, 1e-3)
        num = (matern52(s + h, signal) - matern52(np.maximum(s - h, 0.0), signal)) / (
            s + h - np.maximum(s - h, 0.0)
        )
        np.testing.assert_allclose(g[1:], num[1:], rtol=1e-5)
        assert k[0] == signal
        assert g[0] == -5.0 / 6.0 * signal
