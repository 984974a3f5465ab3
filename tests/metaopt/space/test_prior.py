from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import metaopt
from metaopt._errors import MetaoptError, SpaceError
from metaopt.space import Dimension, parse_prior
from metaopt.space._prior import _round_significant


@pytest.mark.parametrize(
    ("text", "prior", "kind", "args", "n_values"),
    [
        ("uniform(0, 1)", "uniform", "real", (0.0, 1.0), None),
        ("uniform(-2.5, 3)", "uniform", "real", (-2.5, 3.0), None),
        ("loguniform(1e-5, 1)", "loguniform", "real", (1e-5, 1.0), None),
        ("normal(0, 2)", "normal", "real", (0.0, 2.0), None),
        ("gaussian(1, 0.5)", "normal", "real", (1.0, 0.5), None),
        ("randint(1, 10)", "randint", "int", (1, 10), 9),
        ("randint(-3, -1)", "randint", "int", (-3, -1), 2),
        ("uniform(1, 5, discrete=True)", "uniform", "int", (1.0, 5.0), 5),
        ("loguniform(1, 100, discrete=True)", "loguniform", "int", (1.0, 100.0), 100),
        ("normal(0, 3, discrete=True)", "normal", "int", (0.0, 3.0), None),
        ("  ~uniform(0, 1)  ", "uniform", "real", (0.0, 1.0), None),
    ],
)
def test_numeric_priors(
    text: str, prior: str, kind: str, args: tuple[float, ...], n_values: int | None
) -> None:
    d = parse_prior("p", text)
    assert (d.prior, d.kind, d.args, d.n_values) == (prior, kind, args, n_values)


def test_choices_forms() -> None:
    assert parse_prior("a", "choices(['relu', 'tanh'])").choices == ("relu", "tanh")
    assert parse_prior("a", "choices('x', 'y', 3)").choices == ("x", "y", 3)
    assert parse_prior("a", "choices((1, 2.5, True, None))").choices == (1, 2.5, True, None)
    w = parse_prior("a", "choices({'a': 1, 'b': 3})")
    assert w.choices == ("a", "b") and w.weights == (1.0, 3.0) and w.kind == "cat"
    assert w.n_values == 2


def test_fidelity() -> None:
    f = parse_prior("epochs", "fidelity(1, 81, base=3)")
    assert f.kind == "fidelity" and f.args == (1, 81) and f.base == 3.0
    assert f.rungs == (1, 3, 9, 27, 81)
    assert parse_prior("e", "fidelity(1, 10)").rungs == (1, 2, 4, 8, 10)


def test_options() -> None:
    d = parse_prior("w", "normal(0, 1, precision=3, default_value=0.5)")
    assert d.precision == 3 and d.has_default and d.default_value == 0.5
    assert parse_prior("k", "randint(1, 4, default_value=2)").default_value == 2
    assert parse_prior("c", "choices(['a', 'b'], default_value='b')").default_value == "b"
    assert not parse_prior("x", "uniform(0, 1)").has_default


@pytest.mark.parametrize(
    "text",
    [
        "uniform(0, 1)",
        "uniform(-1.5, 2.25, precision=2, default_value=0.5)",
        "loguniform(1e-05, 1.0, discrete=False)",
        "loguniform(2, 64, discrete=True, default_value=8)",
        "normal(0, 1, precision=4)",
        "randint(0, 7, default_value=3)",
        "choices(['a', 1, 2.5, True, None], default_value=None)",
        "choices({'x': 0.1, 'y': 0.7, 'z': 0.2})",
        "fidelity(2, 100, base=4)",
    ],
)
def test_canonical_string_round_trips(text: str) -> None:
    d = parse_prior("p", text)
    again = parse_prior("p", d.to_string())
    assert again == d
    assert again.to_string() == d.to_string()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("loguniform(0, 1)", "loguniform needs 0 < low < high"),
        ("loguniform(-1, 1)", "loguniform needs 0 < low < high"),
        ("uniform(1, 1)", "uniform needs low < high"),
        ("uniform(2, 1)", "uniform needs low < high"),
        ("uniform(-1e308, 1.7e308)", "high - low to be a finite number"),
        ("uniform(1)", "exactly two arguments"),
        ("uniform(1, 2, 3)", "exactly two arguments"),
        ("normal(0, 0)", "sigma > 0"),
        ("normal(0, -1)", "sigma > 0"),
        ("randint(1, 1)", "low < high"),
        ("randint(1.5, 3)", "must be an integer"),
        ("randint(0, 5, discrete=True)", "takes no option 'discrete'"),
        ("uniform(0, 1, bad=2)", "takes no option 'bad'"),
        ("uniform(0, 1, **{'a': 1})", "**kwargs are not allowed"),
        ("uniform(0, 1, discrete='yes')", "discrete must be True or False"),
        ("uniform(0, 1, precision=0)", "precision must be"),
        ("uniform(0, 1, precision=2.5)", "precision must be"),
        ("uniform(0, 10, discrete=True, precision=2)", "real values only"),
        ("uniform(0.2, 0.8, discrete=True)", "needs an integer between"),
        ("uniform(0, 1, default_value=2)", "default_value 2 is not a value"),
        ("randint(0, 3, default_value=3)", "default_value 3 is not a value"),
        ("choices(['a'], default_value='b')", "default_value 'b' is not a value"),
        ("uniform('a', 1)", "must be a finite number"),
        ("uniform(True, 2)", "must be a finite number"),
        ("uniform(0, float('inf'))", "must be a literal"),
        ("uniform(0, 1e999)", "must be a finite number"),
        ("uniform(x, 1)", "must be a literal"),
        ("uniform(__import__('os').system('true'), 1)", "must be a literal"),
        ("uniform(0, 1)(2)", "expected a call"),
        ("os.system('true')", "expected a call"),
        ("foo(1, 2)", "unknown prior 'foo'"),
        ("uniform(0, 1", "called with literal arguments"),
        ("loguniform(1e-5 1)", "separated by commas: uniform(0, 1)"),
        ("", "called with literal arguments"),
        ("0.5", "expected a call"),
        ("choices([])", "at least one value"),
        ("choices()", "needs a list"),
        ("choices(['a', 'a'])", "must be distinct"),
        ("choices([[1], [2]])", "strings, numbers, booleans or None"),
        ("choices({'a': 0})", "weights must be positive"),
        ("choices({'a': 1e308, 'b': 1e308})", "with a finite sum"),
        ("choices([1, 2.0, 'x', 3, 2.0])", "2.0 repeats"),
        ("randint(0, 1180591620717411303424)", "within +-2**53"),
        ("randint(-9007199254740992, 9007199254740992)", "spans at most 2**53"),
        ("uniform(-9e15, 9e15, discrete=True)", "spans at most 2**53"),
        ("uniform(0, 1, precision=2, precision=3)", "option 'precision' is given twice"),
        ("uniform(0, 1, discrete=True, discrete=False)", "option 'discrete' is given twice"),
        ("uniform(1611.0, 1612.0, precision=3)", "no value of 3 significant digits"),
        ("uniform(0, 1e20, discrete=True)", "within +-2**53"),
        ("normal(0, 1e30, discrete=True)", "within +-2**53"),
        ("normal(0, 1e308)", "mu +- 40 sigma to be finite"),
        ("choices([1180591620717411303424, 1])", "fit in 64 bits"),
        ("fidelity(1, 1e19)", "at most 2**53"),
        ("fidelity(1, 1000, base=1.0000001)", "64 rungs"),
        ("randint(-9007199254740993, 0)", "within +-2**53"),
        ("choices({'a': 'x'})", "must be a finite number"),
        ("fidelity(1)", "fidelity needs (low, high)"),
        ("fidelity(0, 10)", "0 < low < high"),
        ("fidelity(1, 10, base=1)", "base > 1"),
        ("fidelity(1, 10, discrete=True)", "takes no option 'discrete'"),
    ],
)
def test_malformed_prior_is_one_clear_line(text: str, expected: str) -> None:
    with pytest.raises(SpaceError) as info:
        parse_prior("lr", text)
    msg = str(info.value)
    assert msg.startswith(f"lr: cannot parse {text!r}: ")
    assert expected in msg
    assert "\n" not in msg
    assert isinstance(info.value, MetaoptError) and isinstance(info.value, ValueError)


def test_bad_name_and_non_string() -> None:
    with pytest.raises(SpaceError, match="non-empty"):
        parse_prior("", "uniform(0, 1)")
    with pytest.raises(SpaceError, match="lr: expected a prior string"):
        parse_prior("lr", 0.5)  # type: ignore[arg-type]


def test_from_python_validation() -> None:
    d = parse_prior("n", "randint(1, 10)")
    assert d.from_python(3) == 3.0 and d.from_python(np.int64(9)) == 9.0
    for bad in (10, 0, 2.5, "3", True, float("nan")):
        with pytest.raises(SpaceError, match=r"^n: "):
            d.from_python(bad)
    c = parse_prior("c", "choices([1, True, 'a'])")
    assert c.from_python(True) == 1.0 and c.from_python(1) == 0.0 and c.from_python(1.0) == 0.0
    with pytest.raises(SpaceError, match="is not one of"):
        c.from_python("b")


def test_precision_rounds_significant_digits() -> None:
    d = parse_prior("x", "loguniform(1e-4, 1, precision=2)")
    values = d.decode(np.linspace(0, 1, 101))
    for v in values:
        assert float(f"{v:.1e}") == pytest.approx(v, rel=1e-12)
    assert values.min() >= 1e-4 and values.max() <= 1.0


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("algorithm", ["auto", "random"])
def test_values_at_the_bounds_keep_their_precision(seed: int, algorithm: str) -> None:
    # A value rounded past a bound was clipped to it: the bound, with more digits than asked
    # (uniform(0.123, 0.987, precision=2) handed out 0.987 and 0.123 in 16 of 25 trials, as
    # the GP and evolution land on the faces of the cube).
    a = parse_prior("a", "uniform(0.123, 0.987, precision=2)")
    assert a.decode(np.array([0.0, 1.0])).tolist() == [0.13, 0.98]
    b = parse_prior("b", "loguniform(0.00123, 9.87, precision=2)")
    assert b.decode(np.array([0.0, 1.0])).tolist() == [0.0013, 9.8]
    study = metaopt.Study({"a": a.to_string(), "b": b.to_string()}, algorithm=algorithm, seed=seed)
    for _ in range(12):
        trial = study.ask()
        for name in ("a", "b"):
            value = trial.params[name]
            assert float(f"{value:.1e}") == value, (name, value)
        study.tell(trial, 1.0)


def test_values_of_a_precision_are_the_floats_nearest_their_decimals() -> None:
    # Dividing by 10.0**-5 (inexact) gave 900000.0000000001 for 912345 at one digit.
    values = np.array([912345.0, 7.654e9, 123456789.0, -0.000123456, 5.55e300, 1.5e-320])
    assert _round_significant(values, 1).tolist() == [9e5, 8e9, 1e8, -0.0001, 6e300, 1e-320]
    assert _round_significant(values, 2, np.floor).tolist() == [
        9.1e5,
        7.6e9,
        1.2e8,
        -0.00013,
        5.5e300,
        1.5e-320,  # (the float nearest 1.5e-320 rounds to itself, either way)
    ]
    d = parse_prior("n", "uniform(100000, 1000000, precision=1)")
    assert all(float(f"{v:.0e}") == v for v in d.decode(np.linspace(0, 1, 201)))


@pytest.mark.parametrize(
    "text", ["uniform(0.07, 0.079, precision=1)", "loguniform(0.07, 0.075, precision=1)"]
)
def test_a_prior_whose_low_bound_is_a_value_of_its_precision_is_taken(text: str) -> None:
    # The float 0.07 is a hair above the decimal (0.07 * 100 is 7.000000000000001): rounded
    # up it was 0.08, and the prior was refused as holding no value of one digit.
    assert parse_prior("x", text).decode(np.array([0.0, 0.5, 1.0])).tolist() == [0.07] * 3


def test_a_decimal_of_the_precision_rounded_up_or_down_stays_itself() -> None:
    # 460 of the decimals of 1-3 digits from 1e-4 to 1e3 came out one unit off either way.
    for digits in (1, 2, 3):
        for exponent in range(-4, 3):
            mantissas = np.arange(10 ** (digits - 1), 10**digits)
            values = np.array([float(f"{m}e{exponent - digits + 1}") for m in mantissas])
            for how in (np.round, np.floor, np.ceil):
                assert np.array_equal(_round_significant(values, digits, how), values)
                assert np.array_equal(_round_significant(-values, digits, how), -values)


def test_dimension_is_frozen_value() -> None:
    a = parse_prior("x", "uniform(0, 1)")
    assert a == Dimension("x", "uniform", (0.0, 1.0)) and hash(a) == hash(
        parse_prior("x", "uniform(0.0, 1.0)")
    )


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def prior_texts(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["uniform", "loguniform", "normal", "randint", "choices"]))
    if kind == "uniform":
        a = draw(finite)
        # Narrower than 1e-6 of the magnitude and floats cannot resolve the unit coordinate.
        b = a + max(1e-6 * abs(a), draw(st.floats(1e-3, 1e6)))
        opt = draw(st.sampled_from(["", ", precision=3", ", discrete=True"]))
        if opt == ", discrete=True":
            b = a + 1 + draw(st.floats(0, 1e3))
        if opt == ", precision=3":
            b = max(b, a + abs(a))  # ([a, 2a] holds a value of one digit, [-a, 0] holds 0)
        return f"uniform({a!r}, {b!r}{opt})"
    if kind == "loguniform":
        a = draw(st.floats(1e-8, 1e3))
        b = a * draw(st.floats(1.5, 1e6))
        opt = draw(st.sampled_from(["", ", precision=2", ", discrete=True"]))
        if opt == ", discrete=True":
            a, b = float(draw(st.integers(1, 50))), float(draw(st.integers(60, 10_000)))
        return f"loguniform({a!r}, {b!r}{opt})"
    if kind == "normal":
        return f"normal({draw(finite)!r}, {draw(st.floats(1e-3, 1e3))!r})"
    if kind == "randint":
        a = draw(st.integers(-1000, 1000))
        return f"randint({a}, {a + draw(st.integers(1, 1000))})"
    values = draw(
        st.lists(
            st.one_of(st.text(max_size=5), st.integers(-9, 9)),
            min_size=1,
            max_size=6,
            unique_by=lambda v: (type(v), v),
        )
    )
    return f"choices({values!r})"


@settings(max_examples=200, deadline=None)
@given(prior_texts(), st.floats(0, 1))
# Rounding to a precision once overflowed for bounds near the ends of the float range.
@example("uniform(1.1125369292536007e-308, 1.0, precision=3)", 0.0)
@example("uniform(-1e300, 1.7e308, precision=2)", 1.0)
def test_any_valid_prior_round_trips(text: str, u: float) -> None:
    d = parse_prior("p", text)
    assert parse_prior("p", d.to_string()) == d
    r = d.round(np.array([u]))
    assert np.array_equal(d.round(r), r)
    value = d.to_python(float(d.decode(r)[0]))
    np.testing.assert_allclose(d.encode(np.array([d.from_python(value)])), r, atol=1e-9)


@pytest.mark.parametrize("text", ["loguniform(1, 1000, discrete=True)", "loguniform(1e-5, 1)"])
def test_a_log_value_at_or_below_zero_encodes_to_zero_without_a_warning(text: str) -> None:
    # The GP's integer neighbours of the lowest value of loguniform(1, 1000, discrete=True)
    # include 0: numpy warned "divide by zero encountered in log" in every Study using it.
    dim = parse_prior("x", text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dim.encode(np.array([0.0, -1.0])).tolist() == [0.0, 0.0]


def test_a_choice_is_found_by_its_type_first_then_as_an_equal_number() -> None:
    dim = parse_prior("c", "choices([1, 2.0, 'a', True, None, -0.0])")
    found = [(1, 0), (1.0, 0), (2, 1), (np.int64(2), 1), ("a", 2), (True, 3), (None, 4), (0, 5)]
    for value, index in found:
        assert dim.from_python(value) == index
    for value in ("b", False, 3, [1], {"x": 1}):
        with pytest.raises(SpaceError, match="is not one of"):
            dim.from_python(value)
    many = parse_prior("c", f"choices({list(range(5000))!r})")
    with pytest.raises(SpaceError) as caught:
        many.from_python(-1)
    assert len(str(caught.value)) < 300  # not all 5,000 of them


def test_a_large_integer_is_found_exactly_among_the_choices() -> None:
    # Looked up as floats, 2**62 - 1 was taken for the choice 2**62 + 1, and a default of
    # 10**400 raised OverflowError (a traceback at submit) instead of one line.
    dim = parse_prior("c", f"choices([{2**62 + 1}, 'x'])")
    assert dim.from_python(2**62 + 1) == 0
    with pytest.raises(SpaceError):
        dim.from_python(2**62 - 1)
    with pytest.raises(SpaceError, match=r"default_value .* is not a value of this prior"):
        parse_prior("c", "choices([1, 2], default_value=1" + "0" * 400 + ")")
    with pytest.raises(SpaceError) as caught:
        dim.from_python("y" * 10_000)
    assert len(str(caught.value)) < 500


def test_a_prior_nested_too_deeply_is_one_short_line() -> None:
    # ast's RecursionError escaped: one experiment record with such a prior made every peer's
    # `metaopt status` an internal error.
    for text in ("uniform(" + "1+" * 5000 + "1, 2)", "choices(" + "[" * 5000 + "]" * 5000 + ")"):
        with pytest.raises(SpaceError) as info:
            parse_prior("lr", text)
        msg = str(info.value)
        assert msg.startswith("lr: cannot parse ") and len(msg) < 400 and "\n" not in msg


def test_a_default_finer_than_its_precision_is_taken_as_given() -> None:
    # Refused for a while, a Study made before (its space given again at each reopen) or an
    # experiment holding one could no longer be opened or run: a review of the day's fixes.
    d = parse_prior("x", "uniform(0, 1, precision=2, default_value=0.123)")
    assert d.default_value == 0.123
    # ... and it is no value the search hands out: not counted as its rounded neighbour 0.12.
    assert not d.on_grid(0.123) and d.on_grid(0.12) and d.on_grid(0.1 + 0.02)
    # By the unit cube's measure, as the search's known points are: a default within float
    # noise of a grid point there is that point for both (by two measures, --wait never ended).
    from metaopt.space import Space

    near = "uniform(1, 100, precision=2, default_value=1.00000001)"
    assert parse_prior("x", near).on_grid(1.00000001)
    space = Space.from_dict({"x": near})
    u = space.to_unit({"x": 1.00000001})
    assert space.round_known(u[None, :])[0, 0] == space.round_unit(u[None, :])[0, 0]
    assert not d.on_grid(1.5) and not d.on_grid("0.12")
    assert parse_prior("n", "randint(1, 3, default_value=2)").on_grid(2)
    assert parse_prior("u", "uniform(0, 1)").on_grid(0.123)


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("uniform(1, 9, precision=1)", 9),
        ("uniform(0.05, 0.95, precision=1)", 14),  # 0.05-0.09, then 0.1-0.9
        ("uniform(10, 99, precision=2)", 90),
        ("loguniform(1e-3, 1, precision=1)", 28),
        ("uniform(-0.95, -0.05, precision=1)", 14),
        ("uniform(0.07, 0.079, precision=1)", 1),
        ("uniform(0.012, 0.0125, precision=3)", 6),  # 0.0120-0.0125
        ("uniform(0, 1, precision=1)", None),  # 1e-300 has one digit too: endless
        ("uniform(-1, 1, precision=2)", None),
        ("normal(0, 1, precision=2)", None),
        ("loguniform(1e-9, 1e9, precision=6)", None),  # 16 million: taken as endless
        ("loguniform(1e-5, 10, precision=5)", 540_001),
        ("uniform(1e25, 9e25, precision=2)", 81),
        ("uniform(0, 1)", None),
        # (review) A bound a hair below a power of ten: 0.091-0.099 were not counted.
        ("uniform(0.01, 0.09999999999999998, precision=2)", 90),  # (1 - 0.9)
        ("uniform(0.01, 0.09999999999999999, precision=2)", 90),
        ("uniform(-9.999999999999999e-06, -1e-06, precision=2)", 90),
        # (review) Values within 1e-9 of each other in the cube, which the search cannot tell
        # apart: "all 109 points tried" with 27 never tried. Endless, as are absurd spans.
        ("uniform(1e-12, 1, precision=1)", None),
        ("uniform(0.00416, 3520, precision=4)", None),
        ("uniform(-6e27, -88.09, precision=2)", None),
        ("loguniform(1e-3, 1e3, precision=8)", None),
    ],
)
def test_a_precision_range_counts_and_lists_the_values_it_can_take(
    text: str, count: int | None
) -> None:
    # Counted as endless, a precision= space was never used up: its search said "nearly
    # exhausted" with a point left, and `submit --wait` waited on it for good (4 of 4).
    dim = parse_prior("x", text)
    assert dim.count == count
    if count is None:
        return
    listed = dim.listed_values
    assert listed is not None and len(set(listed.tolist())) == count
    assert list(listed) == sorted(listed)
    assert (dim.decode(dim.encode(listed)) == listed).all()  # each its own value
    drawn = set(dim.decode(np.random.default_rng(0).random(20_000)).tolist())
    assert drawn <= set(listed.tolist())  # what a search draws
    if count <= 100:
        assert drawn == set(listed.tolist())  # and all of it


def test_the_grids_measure_is_the_searchs_resolution() -> None:
    # A default within the search's resolution of a grid point is that point for the search
    # (dedupe's atol) and so for the count: by a measure relative to the value, on wide ranges
    # the count said a point was left that the search could never suggest (a review).
    from metaopt.search._dedupe import DedupeConfig
    from metaopt.space._prior import ROUND_OFF

    assert DedupeConfig().atol == ROUND_OFF
