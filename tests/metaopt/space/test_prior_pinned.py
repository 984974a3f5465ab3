"""metaopt.space._prior: bounds, refusals, lookups and the unit-cube map of one prior
(pinned by a mutation audit: these boundaries and conversions were left unchecked by the suite)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metaopt._errors import SpaceError
from metaopt.space import parse_prior


def _refused(text: str, expected: str) -> None:
    with pytest.raises(SpaceError, match=expected):
        parse_prior("p", text)


def test_discrete_bounds_that_are_not_integers_round_inward() -> None:
    """uniform(0.5, 3.5, discrete=True) holds 1, 2 and 3 only: a trial must never receive 0 or 4,
    values outside what the user wrote."""
    for text in ("uniform(0.5, 3.5, discrete=True)", "loguniform(0.5, 3.5, discrete=True)"):
        d = parse_prior("k", text)
        assert d.int_bounds == (1, 3) and d.n_values == 3
        assert set(d.decode(np.linspace(0, 1, 1001)).tolist()) == {1.0, 2.0, 3.0}
        for outside in (0, 4):
            with pytest.raises(SpaceError, match="is outside"):
                d.from_python(outside)


def test_fidelity_rungs_end_exactly_at_high_without_a_near_duplicate() -> None:
    """The ladder stops at the high end the user wrote: float round-off of low * base**k must
    neither add a rung a hair past high nor a rung a hair below it next to high."""
    assert parse_prior("e", "fidelity(1, 81, base=3)").rungs == (1, 3, 9, 27, 81)
    past = parse_prior("e", "fidelity(0.1, 0.9, base=3)").rungs  # 0.3 * 3 = 0.9000000000000001
    assert len(past) == 3 and past[-1] == 0.9 and max(past) <= 0.9
    below = parse_prior("e", "fidelity(0.7, 6.3, base=3)").rungs  # 2.1 * 3 = 6.299999999999999
    assert len(below) == 3 and below[-1] == 6.3


def test_whole_fidelity_rungs_are_ints_and_fractional_ones_floats() -> None:
    """A rung is a step number shown and compared as such: whole bounds and base give ints all
    the way (not 1, 3.0, 9.0, 81); a fractional base or bound keeps floats."""
    whole = parse_prior("e", "fidelity(1, 81, base=3)").rungs
    assert [type(r) for r in whole] == [int] * 5
    halves = parse_prior("e", "fidelity(1, 10, base=2.5)").rungs
    assert halves == (1, 2.5, 6.25, 10) and type(halves[1]) is float


def test_a_discrete_normal_refuses_an_integer_past_exact_floats() -> None:
    """The parser keeps a discrete normal within +-2**53; a forged record's 10**300 (or 2**53 +
    2) is outside it, not a value that encodes to the top of the cube."""
    d = parse_prior("x", "normal(0, 1, discrete=True)")
    assert d.from_python(2**53) == 2.0**53 and d.from_python(-7) == -7.0
    for value in (10**300, 2**53 + 2, -(2**53) - 2):
        with pytest.raises(SpaceError, match="is outside normal"):
            d.from_python(value)
    assert parse_prior("x", "normal(0, 1)").from_python(1e300) == 1e300  # a real normal: any


@pytest.mark.parametrize(
    "text",
    [
        "uniform(-1, 1)",
        "loguniform(1e-3, 1)",
        "normal(0, 1)",
        "randint(0, 4)",
        "uniform(1, 5, discrete=True)",
        "loguniform(3, 9, discrete=True)",
        "choices(['a', 'b', 'c'])",
    ],
)
def test_decode_clamps_coordinates_outside_the_cube(text: str) -> None:
    """An optimizer's step just past a face of the cube decodes to the prior's end value, not to a
    value outside the prior (an integer below the range, a real past its bound)."""
    d = parse_prior("x", text)
    np.testing.assert_array_equal(d.decode(np.array([-0.5, 1.5])), d.decode(np.array([0.0, 1.0])))


def test_log_integers_round_back_into_their_range() -> None:
    """loguniform(3, 9, discrete=True) widens its log range to 2.5..9.5; the ends must snap to 3
    and 9 (numpy rounds 2.5 to 2, even), never to a value outside the prior."""
    d = parse_prior("k", "loguniform(3, 9, discrete=True)")
    assert d.decode(np.array([0.0, 1.0])).tolist() == [3.0, 9.0]


def test_equal_weights_are_no_weighted_categorical_and_weights_are_normalised() -> None:
    """Equal weights are the cube's own equal cells (random search spreads such a choice like any
    other); unequal weights give CDF edges from 0 to 1 as wide as the weights."""
    assert parse_prior("c", "choices({'a': 2, 'b': 2})").weight_edges is None
    assert parse_prior("c", "choices(['a', 'b'])").weight_edges is None
    edges = parse_prior("c", "choices({'a': 1, 'b': 3})").weight_edges
    assert edges is not None
    np.testing.assert_allclose(edges, [0.0, 0.25, 1.0])


def test_a_boolean_choice_is_not_found_as_a_number() -> None:
    """choices([True, False]) holds booleans only: a trial value 1 or 0 (another peer's record, a
    user's JSON) is not True or False, as the list form keeps 1 and True apart."""
    d = parse_prior("c", "choices([True, False])")
    assert d.from_python(True) == 0 and d.from_python(False) == 1
    for value in (1, 0, 1.0, 0.0, np.int64(1)):
        with pytest.raises(SpaceError, match="is not one of"):
            d.from_python(value)
    with pytest.raises(SpaceError, match="is not one of"):
        parse_prior("c", "choices([True, 'x'])").from_python(1)


def test_a_number_past_the_float_range_is_one_line_not_an_overflow() -> None:
    """An integer too big for a float (a forged or corrupt record, a typo'd default) is refused
    with one SpaceError, not an OverflowError traceback."""
    with pytest.raises(SpaceError, match="is not finite"):
        parse_prior("x", "uniform(0, 1)").from_python(10**400)
    with pytest.raises(SpaceError, match=r"default_value .* is not a value of this prior"):
        parse_prior("x", "uniform(0, 1, default_value=1" + "0" * 400 + ")")


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_a_non_finite_value_is_refused_even_by_an_unbounded_normal(value: float) -> None:
    """normal() has no bounds, yet inf is no value of it: accepted, it would encode to the cube's
    face and stand for a point no trial ran."""
    for text in ("normal(0, 1)", "normal(0, 1, discrete=True)"):
        with pytest.raises(SpaceError, match="is not finite"):
            parse_prior("w", text).from_python(value)


def test_a_hair_outside_the_bounds_is_accepted_but_no_more() -> None:
    """A value off by float round-off (1e-12 of the bounds' magnitude, from exp/log on another
    peer) still belongs to uniform(0, 1); a value visibly outside does not."""
    d = parse_prior("x", "uniform(0, 1)")
    assert d.from_python(1 + 1e-13) == 1 + 1e-13 and d.from_python(-1e-13) == -1e-13
    for outside in (1 + 1e-9, -1e-9, 1.0001):
        with pytest.raises(SpaceError, match="is outside"):
            d.from_python(outside)


def test_precision_rounding_stays_finite_near_the_ends_of_the_float_range() -> None:
    """precision=15 on values near 1e-300: 10**(14 + 300) overflows, so those values must take the
    exact decimal path and come out finite and inside the bounds."""
    d = parse_prior("x", "uniform(1e-300, 1e-299, precision=15)")
    values = d.decode(np.linspace(0, 1, 11))
    assert np.isfinite(values).all()
    assert values.min() >= 1e-300 and values.max() <= 1e-299


@pytest.mark.parametrize("name", [" lr", "lr ", "\tlr"])
def test_a_parameter_name_with_surrounding_spaces_is_refused(name: str) -> None:
    """' lr' and 'lr' would be two parameters that print the same; the name is refused instead."""
    with pytest.raises(SpaceError, match="without surrounding spaces"):
        parse_prior(name, "uniform(0, 1)")


def test_precision_is_an_integer_from_1_to_15() -> None:
    """15 significant digits is the most a float holds; 16 and True (a bool is no count) are
    refused rather than silently meaning something else."""
    assert parse_prior("x", "uniform(0, 1, precision=15)").precision == 15
    assert parse_prior("x", "uniform(0, 1, precision=1)").precision == 1
    _refused("uniform(0, 1, precision=16)", "precision must be")
    _refused("uniform(0, 1, precision=True)", "precision must be")


def test_randint_bounds_may_reach_2_to_the_53_exactly() -> None:
    """+-2**53 is still exact in a float: the bound is inclusive, one past it is refused. The
    span is at most 2**53 values too: randint(-2**53, 2**53) counted its cells in float64 and
    handed out 2**53 at the top face of the cube (a review proved it)."""
    d = parse_prior("n", f"randint(0, {2**53})")
    assert d.int_bounds == (0, 2**53 - 1)
    assert d.decode(np.array([1.0])).tolist() == [2**53 - 1]
    assert parse_prior("n", f"randint({-(2**53)}, 0)").int_bounds == (-(2**53), -1)
    _refused(f"randint(0, {2**53 + 1})", "within")
    _refused(f"randint({-(2**53)}, {2**53})", "spans at most")


def test_a_discrete_normal_refuses_a_sigma_whose_tails_pass_2_to_the_53() -> None:
    """A discrete normal's values reach mu +- 40 sigma in principle: sigma 1e15 (within 2**53 by
    itself) would hand trials integers a float cannot hold; 2e14 is fine."""
    _refused("normal(0, 1e15, discrete=True)", "within")
    assert parse_prior("z", "normal(0, 2e14, discrete=True)").kind == "int"


def test_a_discrete_prior_with_exactly_one_integer_is_accepted() -> None:
    """uniform(0.5, 1.5, discrete=True) holds the single integer 1, a valid (if trivial) prior;
    a discrete normal has no range to hold an integer and needs none."""
    d = parse_prior("k", "uniform(0.5, 1.5, discrete=True)")
    assert d.n_values == 1 and d.decode(np.array([0.0, 1.0])).tolist() == [1.0, 1.0]
    assert parse_prior("z", "normal(0.5, 0.25, discrete=True)").kind == "int"


def test_a_single_value_not_in_a_list_is_no_choices() -> None:
    """choices('x') is ambiguous (a one-value space, or a typo for choices('x', 'y')): refused,
    while the list form of one value is accepted."""
    _refused("choices('x')", "needs a list")
    assert parse_prior("c", "choices(['x'])").choices == ("x",)


def test_choice_integers_fit_in_64_bits_inclusive_of_both_ends() -> None:
    """The 64-bit range is [-2**63, 2**63): both ends are accepted, 2**63 is refused."""
    d = parse_prior("c", f"choices([{2**63 - 1}, {-(2**63)}])")
    assert d.choices == (2**63 - 1, -(2**63))
    _refused(f"choices([{2**63}])", "fit in 64 bits")


@pytest.mark.parametrize("text", ["choices([1e999])", "choices([1, -1e999])", "choices(1, 1e999)"])
def test_an_infinite_float_choice_is_refused(text: str) -> None:
    """1e999 is a literal for inf: not a value a trial can be given or found by."""
    _refused(text, "strings, numbers, booleans or None")


def test_a_fidelity_ladder_of_more_than_64_rungs_is_refused() -> None:
    """log(1e20) / log(2.04) is 64.6 rungs (refused); with base 2.06 it is 63.7 (accepted)."""
    _refused("fidelity(1e-10, 1e10, base=2.04)", "64 rungs")
    assert len(parse_prior("e", "fidelity(1e-10, 1e10, base=2.06)").rungs) == 65


def test_whole_fidelity_bounds_are_kept_and_written_as_integers() -> None:
    """fidelity(1.0, 81.0) is written fidelity(1, 81, ...): the canonical text names the experiment
    on every peer, and a trial's budget of 81 steps stays an int."""
    d = parse_prior("e", "fidelity(1.0, 81.0, base=3)")
    assert d.to_string() == "fidelity(1, 81, base=3.0)"
    assert [type(a) for a in d.args] == [int, int]
    assert parse_prior("e", "fidelity(0.5, 4)").to_string() == "fidelity(0.5, 4, base=2.0)"


def test_default_value_takes_the_type_of_its_dimension() -> None:
    """A default is given to trials as the dimension's own type: randint's 2.0 is the int 2 and
    uniform's 1 the float 1.0, and the canonical text says so."""
    k = parse_prior("k", "randint(0, 4, default_value=2.0)")
    assert type(k.default_value) is int and k.to_string() == "randint(0, 4, default_value=2)"
    x = parse_prior("x", "uniform(0, 2, default_value=1)")
    assert type(x.default_value) is float and x.to_string().endswith("default_value=1.0)")
    z = parse_prior("z", "normal(0, 1, discrete=True, default_value=-3.0)")
    assert type(z.default_value) is int and z.default_value == -3


def test_discrete_uniform_gives_each_integer_an_equal_cell() -> None:
    """uniform(1, 5, discrete=True) is five equal cells like randint(1, 6): the end integers are as
    likely as the middle ones (a linear map with rounding gave them half a cell)."""
    d = parse_prior("k", "uniform(1, 5, discrete=True)")
    values = d.decode((np.arange(1000) + 0.5) / 1000)
    assert [int(np.sum(values == v)) for v in (1, 2, 3, 4, 5)] == [200] * 5
    np.testing.assert_allclose(d.encode(np.array([1.0, 3.0, 5.0])), [0.1, 0.5, 0.9])


def test_log_integers_at_the_ends_get_a_full_step_of_the_log_scale() -> None:
    """loguniform(8, 512, discrete=True) spans log(7.5)..log(512.5): 8 owns log(7.5)..log(8.5),
    a full step, not the half step a range of log(8)..log(512) would leave it."""
    d = parse_prior("u", "loguniform(8, 512, discrete=True)")
    span = math.log(512.5 / 7.5)
    np.testing.assert_allclose(d.encode(np.array([8.0])), [math.log(8 / 7.5) / span])
    share = float(np.mean(d.decode((np.arange(100_000) + 0.5) / 100_000) == 8))
    assert share == pytest.approx(math.log(8.5 / 7.5) / span, abs=1e-4)


def test_choices_dict_with_equal_keys_is_refused_like_the_list_form() -> None:
    """choices([1, 1.0, True]) is three choices and choices(['a', 'a']) is refused, but the dict
    form {1: 1, 1.0: 2, True: 3} silently became the single choice 1 of weight 3."""
    _refused("choices({'a': 1, 'a': 2})", "must be distinct")
    try:
        d = parse_prior("c", "choices({1: 1, 1.0: 2, True: 3})")
    except SpaceError:
        return  # refused: fine
    assert d.choices == (1, 1.0, True)  # or kept apart, as the list form does
