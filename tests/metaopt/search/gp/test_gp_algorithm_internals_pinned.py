"""GP search rules a mutation audit of metaopt/search/gp/_algorithm.py (the start threshold,
training data and imputation, subsampling, fantasies, warm starts, batch bookkeeping) found
unpinned by the other tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from metaopt.search import Observations
from metaopt.search._pareto import chebyshev_scalarise
from metaopt.search.gp import GPAlgorithm, GPConfig, _algorithm
from metaopt.search.gp._optimize import AcqConfig, _discrete_climb
from metaopt.space import Space

PLANE = Space.from_dict({"a": "uniform(0, 1)", "b": "uniform(0, 1)"})


def _bowl(X: np.ndarray) -> np.ndarray:
    return np.asarray(((X - 0.3) ** 2).sum(axis=1, keepdims=True), dtype=np.float64)


def _spy(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Record every call of _algorithm.<name> (fit_gp, maximise_log_ei, minimise_lcb)."""
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    real = getattr(_algorithm, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(_algorithm, name, spy)
    return calls


def test_the_default_start_is_twice_the_dimension_clamped_to_5_10() -> None:
    """Pins n_init's default clamp(2 d, 5, 10) and that a configured n_init wins: how many
    space-filling points a user gets before the GP takes over."""
    for d, expected in ((1, 5), (2, 5), (3, 6), (4, 8), (5, 10), (9, 10)):
        space = Space.from_dict({f"x{i}": "uniform(0, 1)" for i in range(d)})
        assert GPAlgorithm().n_init(space) == expected
        assert GPAlgorithm(GPConfig(n_init=3)).n_init(space) == 3


def test_pending_and_failed_trials_count_towards_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins that the start ends once n_init trials are known, pending and failed ones included,
    and not a trial earlier: with 8 peers most of the first round is pending at the next ask."""
    fits = _spy(monkeypatch, "fit_gp")
    rng = np.random.default_rng(0)
    X, P, F = rng.random((3, 2)), rng.random((2, 2)), rng.random((1, 2))
    alg = GPAlgorithm()  # n_init 5 in 2 dimensions
    alg.suggest(PLANE, Observations(X, _bowl(X), P[:1]), np.random.default_rng(1), 1)
    assert len(fits) == 0  # 4 known: still the start
    alg.suggest(PLANE, Observations(X, _bowl(X), P), np.random.default_rng(1), 1)
    assert len(fits) == 1  # 3 completed + 2 pending
    alg.suggest(PLANE, Observations(X, _bowl(X), P[:1], F), np.random.default_rng(1), 1)
    assert len(fits) == 2  # 3 completed + 1 pending + 1 failed


def test_the_gp_needs_two_finite_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins the 'at least 2 finite values' rule: a history of crashes and one finite score
    stays on the space-filling start (a GP on one value models nothing)."""
    fits = _spy(monkeypatch, "fit_gp")
    rng = np.random.default_rng(2)
    X = rng.random((7, 2))
    Y = _bowl(X)
    Y[1:] = np.nan
    GPAlgorithm().suggest(PLANE, Observations(X, Y), np.random.default_rng(3), 1)
    assert len(fits) == 0
    Y[1] = 0.5
    GPAlgorithm().suggest(PLANE, Observations(X, Y), np.random.default_rng(3), 1)
    assert len(fits) == 1


def test_a_trial_with_one_non_finite_objective_is_imputed_not_scalarised() -> None:
    """Pins that a trial counts as finite only if every objective is: a NaN in one of two
    objectives would make its scalarised value NaN (and the fit garbage); it is imputed at the
    worst value like a failure."""
    rng = np.random.default_rng(4)
    X = rng.random((8, 2))
    Y = np.hstack([_bowl(X), 1.0 - _bowl(X)])
    Y[2, 1] = np.nan
    obs = Observations(X, Y)
    ok = np.asarray(np.isfinite(obs.Y).all(axis=1), dtype=bool)
    Xt, y = GPAlgorithm()._training_data(obs, ok, np.random.default_rng(5))
    assert np.all(np.isfinite(y)) and len(y) == 8
    np.testing.assert_array_equal(Xt[-1], X[2])
    assert y[-1] == y[:-1].max()
    out = GPAlgorithm().suggest(PLANE, obs, np.random.default_rng(5), 2)
    assert np.all(np.isfinite(out))


def test_one_objective_is_used_as_it_is_and_several_by_random_weights() -> None:
    """Pins the scalarisation: one objective is passed through unchanged; several are turned
    into one by an augmented Chebyshev scalarisation with rho from the config and weights drawn
    from the generator (ParEGO: each ask explores another trade-off)."""
    rng = np.random.default_rng(6)
    X = rng.random((10, 2))
    single = Observations(X, _bowl(X))
    ok = np.ones(10, dtype=bool)
    _, y = GPAlgorithm()._training_data(single, ok, np.random.default_rng(0))
    np.testing.assert_array_equal(y, single.Y[:, 0])
    Y = np.hstack([_bowl(X), rng.random((10, 1)), rng.random((10, 1))])
    multi = Observations(X, Y)
    cfg = GPConfig(chebyshev_rho=0.2)
    ys = []
    for seed in range(3):
        _, y = GPAlgorithm(cfg)._training_data(multi, ok, np.random.default_rng(seed))
        w = np.random.default_rng(seed).dirichlet(np.ones(3))
        np.testing.assert_allclose(y, chebyshev_scalarise(Y, w, 0.2), rtol=1e-12)
        ys.append(y)
    assert not np.allclose(ys[0], ys[1])


def test_failed_and_non_finite_trials_are_imputed_at_the_worst_value() -> None:
    """Pins the imputation: crashed trials and non-finite scores join the training data at the
    worst finite value (so the model steers away from them); impute_failed=False leaves them out."""
    rng = np.random.default_rng(7)
    X, F = rng.random((9, 2)), rng.random((2, 2))
    Y = _bowl(X)
    Y[[1, 4]] = np.inf
    obs = Observations(X, Y, np.zeros((0, 2)), F)
    ok = np.asarray(np.isfinite(Y).all(axis=1), dtype=bool)
    Xt, y = GPAlgorithm()._training_data(obs, ok, np.random.default_rng(0))
    assert len(y) == 7 + 2 + 2
    np.testing.assert_array_equal(Xt[:7], X[ok])
    np.testing.assert_array_equal(Xt[7:9], X[[1, 4]])
    np.testing.assert_array_equal(Xt[9:], F)
    np.testing.assert_array_equal(y[7:], np.full(4, Y[ok].max()))
    Xt, y = GPAlgorithm(GPConfig(impute_failed=False))._training_data(
        obs, ok, np.random.default_rng(0)
    )
    np.testing.assert_array_equal(Xt, X[ok])
    np.testing.assert_array_equal(y, Y[ok, 0])


def test_the_subset_keeps_every_point_near_the_incumbent_and_a_distinct_remainder() -> None:
    """Pins the local subset above max_points: the round(max_points * local_fraction) points
    nearest to the best one (itself included) are all kept, the rest of the cap is filled with
    distinct other points, and rows stay in their original order."""
    rng = np.random.default_rng(8)
    X = rng.random((400, 3))
    y = ((X - 0.6) ** 2).sum(axis=1)
    for frac, n_near in ((0.75, 75), (0.2, 20)):
        alg = GPAlgorithm(GPConfig(max_points=100, local_fraction=frac))
        Xs, ys = alg._subset(X, y, np.random.default_rng(9))
        assert Xs.shape == (100, 3)
        rows = [int(np.flatnonzero((r == X).all(axis=1))[0]) for r in Xs]
        assert len(set(rows)) == 100 and rows == sorted(rows)
        np.testing.assert_array_equal(ys, y[rows])
        dist = ((X - X[int(np.argmin(y))]) ** 2).sum(axis=1)
        near = set(np.argsort(dist, kind="stable")[:n_near].tolist())
        assert near <= set(rows)
    # The 75 nearest are not all kept when only 20 are asked for (the remainder is random).
    near75 = set(np.argsort(dist, kind="stable")[:75].tolist())
    assert not near75 <= set(rows)


def test_fantasies_are_capped_at_a_subset_of_distinct_pending_points() -> None:
    """Pins the fantasy cap: above max_fantasies pending trials, that many distinct ones are
    believed, in their original order; at or below it, all of them."""
    rng = np.random.default_rng(10)
    P = rng.random((40, 2))
    alg = GPAlgorithm(GPConfig(max_fantasies=16))
    got = alg._fantasies(
        Observations(np.zeros((0, 2)), np.zeros((0, 1)), P), np.random.default_rng(0)
    )
    rows = [int(np.flatnonzero((r == P).all(axis=1))[0]) for r in got]
    assert len(rows) == 16 and len(set(rows)) == 16 and rows == sorted(rows)
    few = alg._fantasies(
        Observations(np.zeros((0, 2)), np.zeros((0, 1)), P[:16]), np.random.default_rng(0)
    )
    np.testing.assert_array_equal(few, P[:16])


def test_the_fit_is_warm_started_from_the_previous_one_of_that_space(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pins the warm start: the second suggestion's fit starts from the first fit's
    hyperparameters; a space of other coordinate kinds gets none."""
    fits = _spy(monkeypatch, "fit_gp")
    rng = np.random.default_rng(11)
    X = rng.random((10, 2))
    alg = GPAlgorithm()
    alg.suggest(PLANE, Observations(X, _bowl(X)), np.random.default_rng(0), 1)
    assert fits[0][0][5] is None  # fit_gp(X, y, spec, cfg, rng, warm)
    theta = alg._theta[PLANE.kinds].copy()
    alg.suggest(PLANE, Observations(X[:9], _bowl(X[:9])), np.random.default_rng(0), 1)
    np.testing.assert_array_equal(fits[1][0][5], theta)
    other = Space.from_dict({"a": "uniform(0, 1)", "c": "choices(['p', 'q', 'r'])"})
    U = other.round_unit(rng.random((10, 2)))
    alg.suggest(other, Observations(U, _bowl(U)), np.random.default_rng(0), 1)
    assert fits[2][0][5] is None


@pytest.mark.parametrize(
    ("search", "config"),
    [("minimise_lcb", GPConfig()), ("maximise_log_ei", GPConfig(pending_beta=None))],
)
def test_the_acquisition_search_is_anchored_at_the_best_points_first(
    monkeypatch: pytest.MonkeyPatch, search: str, config: GPConfig
) -> None:
    """Pins the anchors' order (best warped value first): the local candidates are drawn around
    the first few anchors, which must be the incumbent and its runners-up, not the worst."""
    calls = _spy(monkeypatch, search)
    rng = np.random.default_rng(12)
    X = rng.random((12, 2))
    Y = _bowl(X)
    GPAlgorithm(config).suggest(PLANE, Observations(X, Y), np.random.default_rng(0), 1)
    anchors = calls[0][0][3]
    order = np.argsort(Y[:, 0], kind="stable")
    np.testing.assert_array_equal(anchors, X[order])


def _batch_history() -> Observations:
    rng = np.random.default_rng(0)
    X = rng.random((12, 2))
    return Observations(X, _bowl(X))


def test_later_points_of_a_batch_see_the_earlier_ones_as_pending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pins the batch bookkeeping: the i-th point's model believes the batch's first i points
    (the bound's model built at the first point, then extended by each) and its search avoids
    them."""
    lcb = _spy(monkeypatch, "minimise_lcb")
    obs = _batch_history()
    out = GPAlgorithm().suggest(PLANE, obs, np.random.default_rng(1), 3)
    assert len(lcb) == 3
    for i, (args, _) in enumerate(lcb):
        model, known = args[0], args[4]
        assert model.X.shape[0] == 12 + i
        np.testing.assert_allclose(model.X[12:], out[:i], atol=1e-12)
        assert known.shape[0] == 12 + i
        np.testing.assert_allclose(known[12:], out[:i], atol=1e-12)


def test_a_log_ei_batch_extends_its_model_with_each_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins the log-EI batch (pending_beta=None): each next point's model holds the earlier ones
    as believed observations, and its incumbent is the lowest value, believed ones included."""
    ei = _spy(monkeypatch, "maximise_log_ei")
    obs = _batch_history()
    out = GPAlgorithm(GPConfig(pending_beta=None)).suggest(PLANE, obs, np.random.default_rng(1), 3)
    assert [args[0].X.shape[0] for args, _ in ei] == [12, 13, 14]
    np.testing.assert_allclose(ei[2][0][0].X[12:], out[:2], atol=1e-12)
    for args, _ in ei:
        assert args[2] == float(args[0].y.min())


def test_log_ei_improves_on_a_believed_value_below_the_best_measured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pins EI's incumbent as the fantasy model's lowest output: a pending trial in the bowl's
    centre is believed better than any measured one, and EI measured against the measured best
    would keep pointing at that optimistic fantasy."""
    ei = _spy(monkeypatch, "maximise_log_ei")
    g = np.linspace(0.05, 0.95, 4)
    X = np.array([[a, b] for a in g for b in g])
    Y = ((X - 0.5) ** 2).sum(axis=1, keepdims=True)
    P = np.array([[0.5, 0.5], [0.45, 0.55]])
    GPAlgorithm(GPConfig(pending_beta=None)).suggest(
        PLANE, Observations(X, Y, P), np.random.default_rng(0), 1
    )
    model, best = ei[0][0][0], ei[0][0][2]
    assert model.X.shape[0] == 18
    assert best == float(model.y.min()) < float(model.y[:16].min())


def test_the_stall_test_is_a_euclidean_radius() -> None:
    """Pins _stalled: a point strictly within the radius of any known point (Euclidean) is a
    stall; one just beyond it, or any point when the radius is 0, is not."""
    taken = np.array([[0.2, 0.2], [0.7, 0.1]])
    r = 1e-3
    stalled = GPAlgorithm._stalled
    assert stalled(np.array([0.7 + 0.6 * r, 0.1 + 0.6 * r]), taken, r)
    assert not stalled(np.array([0.7 + 0.8 * r, 0.1 + 0.8 * r]), taken, r)
    assert not stalled(np.array([0.2 + 2 * r, 0.2]), taken, r)
    assert not stalled(taken[0].copy(), taken, 0.0)
    assert not stalled(taken[0].copy(), np.zeros((0, 2)), r)


def test_stalled_points_of_one_batch_are_replaced_by_places_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pins that a stalled point's space-filling replacement keeps away from the batch's earlier
    points too, not only from the trials: a batch of stalls must not land in one hole."""
    obs = _batch_history()
    stalled = obs.X[3] + 1e-6
    monkeypatch.setattr(_algorithm, "maximise_log_ei", lambda *a, **k: stalled.copy())
    monkeypatch.setattr(_algorithm, "minimise_lcb", lambda *a, **k: stalled.copy())
    for seed in range(3):
        out = GPAlgorithm().suggest(PLANE, obs, np.random.default_rng(seed), 4)
        d = np.sqrt(((out[:, None] - out[None]) ** 2).sum(-1))[np.triu_indices(4, 1)]
        assert d.min() > 0.1


def test_categoricals_get_the_hamming_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins the kernel spec the fit receives: a choice coordinate is categorical (with its number
    of choices), reals and ints continuous; treated as continuous, choice 'a' would be nearer
    'b' than 'c' for no reason."""
    fits = _spy(monkeypatch, "fit_gp")
    space = Space.from_dict(
        {"x": "uniform(0, 1)", "c": "choices(['a', 'b', 'c'])", "n": "randint(0, 5)"}
    )
    U = space.round_unit(np.random.default_rng(13).random((10, 3)))
    GPAlgorithm().suggest(space, Observations(U, _bowl(U)), np.random.default_rng(0), 1)
    spec = fits[0][0][2]
    c = space.kinds.index("cat")
    assert spec.cat == (c,) and spec.cat_k == (3,)
    assert spec.cont == tuple(i for i in range(3) if i != c)


def test_the_acquisition_search_avoids_pending_and_failed_points_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pins the known points handed to the acquisition search: completed, pending and failed
    trials (rounded), so its best free point is never one another peer is running or that
    crashed, which the final de-duplication would only nudge aside."""
    lcb = _spy(monkeypatch, "minimise_lcb")
    rng = np.random.default_rng(14)
    X, P, F = rng.random((10, 2)), rng.random((2, 2)), rng.random((2, 2))
    GPAlgorithm().suggest(PLANE, Observations(X, _bowl(X), P, F), np.random.default_rng(0), 1)
    known = lcb[0][0][4]
    np.testing.assert_allclose(known, PLANE.round_unit(np.vstack([X, P, F])), atol=0)


class _Peak:
    def __init__(self, at: np.ndarray) -> None:
        self.at = at

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return -((X - self.at) ** 2).sum(axis=1)

    def with_grad(self, X: np.ndarray):  # pragma: no cover - unused
        raise NotImplementedError


SPACE = Space.from_dict({"n": "uniform(1, 20, discrete=True)"})


def _unit(n: int) -> np.ndarray:
    return SPACE.round_unit(SPACE.to_unit({"n": n})[None, :])


def test_a_climb_with_the_default_passes_ends_on_the_local_best() -> None:
    peak, start = _unit(10), _unit(11)
    assert not np.array_equal(peak, start)
    out = _discrete_climb(_Peak(peak[0].copy()), SPACE, start, AcqConfig())
    np.testing.assert_array_equal(out, peak)


def test_a_point_better_than_all_its_neighbours_is_kept() -> None:
    peak = _unit(10)
    out = _discrete_climb(_Peak(peak[0].copy()), SPACE, peak, AcqConfig(discrete_passes=3))
    np.testing.assert_array_equal(out, peak)
