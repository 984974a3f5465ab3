"""metaopt.space._space: construction refusals, the canonical dict, lookups, max_step checks and
the prior-CDF map (pinned by a mutation audit: the suite left these unchecked)."""

from __future__ import annotations

import numpy as np
import pytest

from metaopt._errors import SpaceError
from metaopt.space import Space, parse_prior


def test_a_parameter_given_twice_is_refused() -> None:
    """Space([...]) with two dimensions of one name is refused: one would silently shadow the
    other in every trial's params."""
    with pytest.raises(SpaceError, match="'x' is defined twice"):
        Space([parse_prior("x", "uniform(0, 1)"), parse_prior("x", "randint(0, 3)")])


def test_a_dimension_under_another_name_is_refused() -> None:
    """from_dict({'a': <Dimension named b>}) is refused: trials would carry 'b' where the user
    asked for 'a'."""
    with pytest.raises(SpaceError, match=r"^a: the Dimension is named 'b'"):
        Space.from_dict({"a": parse_prior("b", "uniform(0, 1)")})
    assert Space.from_dict({"a": parse_prior("a", "uniform(0, 1)")}).names == ("a",)


def test_to_dict_is_sorted_by_name_fidelity_included() -> None:
    """The canonical dict names the experiment: same keys in the same order on every peer, the
    fidelity among them wherever its name sorts."""
    s = Space.from_dict({"z": "uniform(0, 1)", "a": "fidelity(1, 9)", "m": "randint(0, 3)"})
    assert list(s.to_dict()) == ["a", "m", "z"]
    assert s.to_dict()["a"] == "fidelity(1, 9, base=2.0)"
    assert Space.from_dict(s.to_dict()).fidelity_name == "a"
    assert s != Space.from_dict({"z": "uniform(0, 1)", "m": "randint(0, 3)"})


def test_a_space_compares_unequal_to_other_objects() -> None:
    """== with a non-Space (None, a dict) is False, not an AttributeError."""
    s = Space.from_dict({"x": "uniform(0, 1)"})
    assert s != None  # noqa: E711
    assert s != {"x": "uniform(0, 1)"}
    assert s == Space.from_dict({"x": "uniform(0.0, 1.0)"})


def test_getitem_finds_the_fidelity_too() -> None:
    """space['epochs'] is the fidelity dimension, though it is no coordinate; an unknown name is a
    KeyError."""
    s = Space.from_dict({"x": "uniform(0, 1)", "epochs": "fidelity(1, 27, base=3)"})
    assert s["epochs"].kind == "fidelity" and s["x"].kind == "real"
    with pytest.raises(KeyError):
        s["y"]


@pytest.mark.parametrize(
    ("fidelity", "max_step", "conflict"),
    [
        ("fidelity(1, 81, base=3)", None, False),
        ("fidelity(1, 81, base=3)", 81, False),
        ("fidelity(1, 81, base=3)", 50, True),
        ("fidelity(1, 81, base=3)", 100, True),
        ("fidelity(0.1, 1)", 5, False),  # a share of the data, not steps
        ("fidelity(1, 2.5)", 3, False),  # a fractional budget is no step
    ],
)
def test_max_step_conflicts_with_an_integer_step_fidelity_only(
    fidelity: str, max_step: int | None, conflict: bool
) -> None:
    """A max_step below or above a step-count fidelity's high end is refused; a fidelity up to 1
    or fractional is a budget of another kind and leaves max_step free."""
    s = Space.from_dict({"x": "uniform(0, 1)", "e": fidelity})
    message = s.max_step_conflict(max_step)
    assert (message is not None) == conflict
    if message is not None:
        assert f"{max_step} disagrees with the fidelity prior of 'e'" in message
    assert Space.from_dict({"x": "uniform(0, 1)"}).max_step_conflict(50) is None


def test_round_unit_refuses_points_of_the_wrong_width() -> None:
    """Points wider than the space are refused, not silently cut to its first coordinates."""
    s = Space.from_dict({"x": "uniform(0, 1)", "k": "randint(0, 4)"})
    with pytest.raises(SpaceError, match="width 2, got 3"):
        s.round_unit(np.zeros((4, 3)))
    with pytest.raises(SpaceError, match="width 2, got 1"):
        s.round_unit(np.zeros((4, 1)))


def test_from_prior_cdf_cells_follow_the_weights() -> None:
    """In the prior's CDF, choices({'a': 1, 'b': 1, 'c': 2}) owns [0, .25), [.25, .5), [.5, 1]:
    uniform draws there follow the weights; a point on an edge belongs to the upper cell, as
    the cube's own cells do."""
    s = Space.from_dict({"c": "choices({'a': 1, 'b': 1, 'c': 2})", "x": "uniform(0, 1)"})
    C = np.array([[0.0, 0.3], [0.2, 0.3], [0.25, 0.3], [0.49, 0.3], [0.5, 0.3], [1.0, 0.3]])
    U = s.from_prior_cdf(C)
    assert [s.from_unit(u)["c"] for u in U] == ["a", "a", "b", "b", "c", "c"]
    np.testing.assert_allclose(U[:, 0], [1 / 6, 1 / 6, 0.5, 0.5, 5 / 6, 5 / 6])
    np.testing.assert_allclose(U[:, 1], 0.3)


def test_from_prior_cdf_lands_on_the_right_choice_among_many() -> None:
    """With 22 weighted choices the chosen index must map to its own cell centre: (15 / 22) * 22
    is 14.999... in floats, so a cell's left edge would fall into the cell before."""
    weights = {f"v{i}": 1 + (i == 0) for i in range(22)}
    s = Space.from_dict({"c": f"choices({weights!r})"})
    edges = s["c"].weight_edges
    assert edges is not None
    centre = (edges[15] + edges[16]) / 2
    U = s.from_prior_cdf(np.array([[centre]]))
    assert s.from_unit(U[0]) == {"c": "v15"}
    np.testing.assert_allclose(U[0, 0], 15.5 / 22)


def test_from_prior_cdf_leaves_its_input_unchanged() -> None:
    """The caller's CDF points (a Sobol draw it may reuse) are not overwritten."""
    s = Space.from_dict({"c": "choices({'a': 1, 'b': 3})"})
    C = np.array([[0.1], [0.9]])
    s.from_prior_cdf(C)
    assert C.tolist() == [[0.1], [0.9]]


def test_grid_lists_a_space_of_exactly_limit_points() -> None:
    """grid(limit) accepts a space of exactly limit points and refuses one more."""
    s = Space.from_dict({"a": "randint(0, 4)", "c": "choices(['x', 'y'])"})
    assert s.grid(limit=8).shape == (8, 2)
    with pytest.raises(SpaceError, match="has 8 points; cannot list more than 7"):
        s.grid(limit=7)


@pytest.mark.parametrize(
    "prior", ["loguniform(1, 300, discrete=True)", "randint(-3, 4)", "uniform(2, 9, discrete=True)"]
)
def test_grid_lists_every_point_once(prior: str) -> None:
    """A discrete loguniform's values are spaced on a log scale: cell centres named some
    integers twice and others never, and a search was told its space was exhausted with 31
    of 1000 points untried."""
    s = Space.from_dict({"n": prior, "c": "choices(['a', 1, 1.0])"})
    points = [s.from_unit(u) for u in s.grid()]
    listed = {(p["n"], repr(p["c"])) for p in points}
    assert len(points) == len(listed) == s.cardinality
    assert np.array_equal(np.array([s.to_unit(p) for p in points]), s.grid())


def test_defaults_include_a_default_of_none() -> None:
    """default_value=None is a default like any other (choices([..., None]))."""
    s = Space.from_dict({"c": "choices(['a', None], default_value=None)", "x": "uniform(0, 1)"})
    assert s.defaults == {"c": None}


def test_from_unit_clamps_points_outside_the_cube() -> None:
    """A point a hair outside [0, 1] decodes to the priors' end values, never past them."""
    s = Space.from_dict({"x": "uniform(-1, 1)", "k": "randint(0, 4)", "c": "choices(['a', 'b'])"})
    assert s.from_unit(np.array([-0.5, -0.5, -0.5])) == {"c": "a", "k": 0, "x": -1.0}
    assert s.from_unit(np.array([1.5, 1.5, 1.5])) == {"c": "b", "k": 3, "x": 1.0}
