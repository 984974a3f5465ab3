from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from metaopt._errors import SpaceError
from metaopt.space import Space

PRIORS = {
    "lr": "loguniform(1e-5, 1)",
    "depth": "randint(1, 10)",
    "act": "choices(['relu', 'tanh', 'gelu'])",
    "epochs": "fidelity(1, 81, base=3)",
    "w": "normal(0, 2)",
    "p": "uniform(-1, 1, precision=3)",
    "units": "loguniform(8, 512, discrete=True)",
    "k": "uniform(1, 5, discrete=True)",
    "opt": "choices({'adam': 3, 'sgd': 1})",
    "flag": "choices([True, False, None])",
    "z": "normal(5, 1, discrete=True)",
}
SPACE = Space.from_dict(PRIORS)
units = hnp.arrays(np.float64, (SPACE.d,), elements=st.floats(0.0, 1.0))


def test_layout() -> None:
    assert SPACE.names == tuple(sorted(set(PRIORS) - {"epochs"}))
    assert SPACE.d == len(SPACE.names) == 10
    kinds = dict(zip(SPACE.names, SPACE.kinds, strict=True))
    assert kinds == {
        "act": "cat",
        "depth": "int",
        "flag": "cat",
        "k": "int",
        "lr": "real",
        "opt": "cat",
        "p": "real",
        "units": "int",
        "w": "real",
        "z": "int",
    }
    nv = dict(zip(SPACE.names, SPACE.n_values, strict=True))
    assert nv["act"] == 3 and nv["depth"] == 9 and nv["units"] == 505 and nv["k"] == 5
    assert nv["lr"] is None and nv["z"] is None
    assert SPACE.fidelity is not None and SPACE.fidelity.name == "epochs"
    assert SPACE.fidelity_name == "epochs"
    assert SPACE.cardinality is None


def test_to_dict_round_trip_and_equality() -> None:
    again = Space.from_dict(SPACE.to_dict())
    assert again == SPACE and hash(again) == hash(SPACE)
    assert again.to_dict() == SPACE.to_dict()
    assert Space.from_dict({"x": "uniform(0, 1)"}) != Space.from_dict({"x": "uniform(0, 2)"})


@given(units)
def test_from_unit_gives_valid_plain_values(u: np.ndarray) -> None:
    params = SPACE.from_unit(u)
    assert set(params) == set(SPACE.names)
    assert 1e-5 <= params["lr"] <= 1 and type(params["lr"]) is float
    assert type(params["depth"]) is int and 1 <= params["depth"] <= 9
    assert type(params["units"]) is int and 8 <= params["units"] <= 512
    assert type(params["k"]) is int and 1 <= params["k"] <= 5
    assert type(params["z"]) is int
    assert params["act"] in ("relu", "tanh", "gelu") and params["opt"] in ("adam", "sgd")
    assert params["flag"] in (True, False, None)
    assert -1 <= params["p"] <= 1 and params["p"] == float(f"{params['p']:.2e}")
    assert math.isfinite(params["w"])


@given(units)
def test_round_trip_through_params(u: np.ndarray) -> None:
    r = SPACE.round_unit(u[None, :])
    params = SPACE.from_unit(r[0])
    back = SPACE.to_unit(params)
    np.testing.assert_allclose(back, r[0], atol=1e-9)
    again = SPACE.from_unit(back)
    for name, kind in zip(SPACE.names, SPACE.kinds, strict=True):
        if kind == "real":
            # Reals survive params -> unit -> params up to float round-off only.
            assert again[name] == pytest.approx(params[name], rel=1e-9, abs=1e-12)
        else:
            assert again[name] == params[name] and type(again[name]) is type(params[name])


@given(hnp.arrays(np.float64, (3, SPACE.d), elements=st.floats(-0.5, 1.5)))
def test_round_unit_idempotent_and_bounded(U: np.ndarray) -> None:
    r = SPACE.round_unit(U)
    assert np.array_equal(SPACE.round_unit(r), r)
    assert (r >= 0).all() and (r <= 1).all()


def test_int_and_cat_cells_are_centres() -> None:
    s = Space.from_dict({"a": "randint(0, 4)", "c": "choices(['x', 'y'])"})
    r = s.round_unit(np.array([[0.0, 0.49], [0.26, 0.5], [1.0, 1.0]]))
    np.testing.assert_allclose(r, [[0.125, 0.25], [0.375, 0.75], [0.875, 0.75]])
    assert s.from_unit(np.array([0.875, 0.25])) == {"a": 3, "c": "x"}
    assert s.cardinality == 8 and s.grid().shape == (8, 2)


def test_encodings() -> None:
    s = Space.from_dict({"lr": "loguniform(1e-4, 1)", "w": "normal(3, 2)", "x": "uniform(-1, 3)"})
    np.testing.assert_allclose(s.to_unit({"lr": 1e-2, "w": 3.0, "x": 0.0}), [0.5, 0.5, 0.25])
    assert s.from_unit(np.array([0.25, 0.975, 1.0]))["lr"] == pytest.approx(1e-3)
    assert s.from_unit(np.array([0.25, 0.975, 1.0]))["w"] == pytest.approx(
        3 + 2 * 1.959964, rel=1e-5
    )


def test_sample_follows_prior_and_weights() -> None:
    rng = np.random.default_rng(0)
    s = Space.from_dict({"opt": "choices({'adam': 3, 'sgd': 1})", "lr": "loguniform(1e-4, 1)"})
    U = s.sample(rng, 4000)
    assert np.array_equal(s.round_unit(U), U)
    share = np.mean([s.from_unit(u)["opt"] == "adam" for u in U[:1000]])
    assert 0.7 < share < 0.8
    assert 0.45 < np.mean(U[:, 0] < 0.5) < 0.55
    assert np.array_equal(
        s.sample(np.random.default_rng(1), 5), s.sample(np.random.default_rng(1), 5)
    )


def test_defaults() -> None:
    s = Space.from_dict({"a": "uniform(0, 1, default_value=0.25)", "b": "randint(0, 3)"})
    assert s.defaults == {"a": 0.25}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"x": 0.5}, "^y: missing"),
        ({"x": 0.5, "y": 1, "q": 1}, "^q: not a parameter"),
        ({"x": 2.0, "y": 1}, "^x: 2.0 is outside uniform"),
        ({"x": 0.5, "y": "a"}, "^y: expected a number"),
        ({"x": 0.5, "y": 1.5}, "^y: expected an integer"),
    ],
)
def test_to_unit_rejects_bad_params(params: dict[str, object], expected: str) -> None:
    s = Space.from_dict({"x": "uniform(0, 1)", "y": "randint(0, 3)", "e": "fidelity(1, 9)"})
    with pytest.raises(SpaceError, match=expected):
        s.to_unit(params)
    assert s.to_unit({"x": 0.5, "y": 1, "e": 3}).shape == (2,)


def test_space_errors() -> None:
    with pytest.raises(SpaceError, match="lr: cannot parse"):
        Space.from_dict({"lr": "loguniform(0, 1)"})
    with pytest.raises(SpaceError, match="only one fidelity"):
        Space.from_dict({"a": "fidelity(1, 9)", "b": "fidelity(1, 9)"})
    with pytest.raises(SpaceError, match="mapping"):
        Space.from_dict(["uniform(0, 1)"])  # type: ignore[arg-type]
    with pytest.raises(SpaceError, match="width 1"):
        Space.from_dict({"x": "uniform(0, 1)"}).from_unit(np.zeros(2))
    with pytest.raises(SpaceError, match="cannot list"):
        Space.from_dict({"x": "uniform(0, 1)"}).grid()


def test_log_integers_spread_in_log_space() -> None:
    s = Space.from_dict({"units": "loguniform(8, 512, discrete=True)"})
    mid = s.from_unit(np.array([0.5]))["units"]
    assert 60 <= mid <= 68
    values = {s.from_unit(np.array([u]))["units"] for u in np.linspace(0, 1, 2001)}
    assert min(values) == 8 and max(values) == 512
