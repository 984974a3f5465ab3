"""Command-line templates: finding priors and rendering a trial's argv."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metaopt._errors import MetaoptError, SpaceError
from metaopt.peer._template import check_submitted, format_value, parse_template, render


def test_the_three_forms_and_literals() -> None:
    words = [
        "train.py",
        "--lr~loguniform(1e-5, 1)",
        "--layers=~randint(1, 6)",
        "-d~uniform(0, 0.5)",
        "~choices(['a', 'b'])",
        "~epochs~fidelity(1, 81, base=3)",
        "~/data",
        "--out=~/runs",
        "data.csv",
    ]
    template = parse_template(words)
    assert template.priors == {
        "lr": "loguniform(1e-5, 1)",
        "layers": "randint(1, 6)",
        "d": "uniform(0, 0.5)",
        "arg0": "choices(['a', 'b'])",
        "epochs": "fidelity(1, 81, base=3)",
    }
    params = {"lr": 1e-5, "layers": 3, "d": 0.25, "arg0": "b", "epochs": 9, "extra": 1}
    assert template.render(params) == [
        "train.py",
        "--lr",
        "1e-05",
        "--layers=3",
        "-d",
        "0.25",
        "b",
        "9",
        "~/data",
        "--out=~/runs",
        "data.csv",
    ]
    assert template.words == tuple(words)


def test_unnamed_positional_priors_are_numbered_in_order() -> None:
    template = parse_template(["prog", "~uniform(0, 1)", "x", "~normal(0, 1)"])
    assert list(template.priors) == ["arg0", "arg1"]


def test_a_duplicate_name_is_a_space_error() -> None:
    with pytest.raises(SpaceError, match="twice"):
        parse_template(["p", "--x~uniform(0, 1)", "--x=~uniform(0, 2)"])


def test_a_missing_value_is_a_one_line_error() -> None:
    template = parse_template(["p", "--x~uniform(0, 1)"])
    with pytest.raises(MetaoptError, match="'x'"):
        render(template, {})


def test_values_render_as_single_words() -> None:
    assert format_value(0.1) == "0.1"
    assert format_value(True) == "True"
    assert format_value(7) == "7"
    # Negative with an exponent: positional (argparse), and still a float, not an int.
    assert format_value(-5e-05) == "-0.00005" and format_value(-1e16) == "-10000000000000000.0"
    assert format_value("a b") == "a b"
    np = pytest.importorskip("numpy")
    assert format_value(np.float64(0.5)) == "0.5"


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_round_trip_through_their_text(x: float) -> None:
    argv = parse_template(["p", "--x=~uniform(0, 1)"]).render({"x": x})
    assert float(argv[1].removeprefix("--x=")) == x


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_float_reaches_an_argparse_program_as_two_words_or_positional(x: float) -> None:
    # "-5e-05" is an option to argparse (its negative-number pattern has no exponent): trials
    # of uniform(-0.0002, 0.0002) failed "argument --x: expected one argument".
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--x", type=float)
    parser.add_argument("y", type=float)
    argv = parse_template(["p", "--x~uniform(-1, 1)", "~uniform(-1, 1)"]).render(
        {"x": x, "arg0": x}
    )
    parsed = parser.parse_args(argv[1:])
    assert parsed.x == x and parsed.y == x


@pytest.mark.parametrize("value", ["--flag", "-v", "-inf", "-", "-x=1"])
def test_a_value_that_looks_like_an_option_reaches_argparse_as_a_value(value: str) -> None:
    # `--mode --flag` (a choice of "--flag"): argparse took it for an option, and every trial
    # with it failed. Joined to its option it is a value; a short option is never joined
    # (`-m=--flag` is "=--flag" to argparse), nor a negative number.
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--mode")
    argv = parse_template(["p", "--mode~choices(['a'])"]).render({"mode": value})
    assert argv == ["p", f"--mode={value}"] and parser.parse_args(argv[1:]).mode == value
    assert parse_template(["p", "--mode~choices(['a'])"]).render({"mode": "-3"}) == [
        "p",
        "--mode",
        "-3",
    ]
    assert parse_template(["p", "-m~choices(['a'])"]).render({"m": value}) == ["p", "-m", value]


# Not ending in "~": "--a~" is an option whose prior went missing (below), not a literal.
@given(
    st.lists(st.text(alphabet="ab-=~ /", max_size=8).filter(lambda w: w[-1:] != "~"), max_size=6)
)
def test_words_without_a_call_stay_literal(words: list[str]) -> None:
    template = parse_template(["p", *words])
    assert template.priors == {}
    assert template.render({}) == ["p", *words]


@pytest.mark.parametrize(
    "word",
    ["--x~uniform(0, 1", "--lr~", "--lr=~", "-l~", "~uniform(0,1", "~lr~uniform(", "~lr~"],
)
def test_an_unfinished_prior_is_an_error_not_a_literal(word: str) -> None:
    # Passed through as text, it made "no parameter to search" or a trial with a broken flag.
    with pytest.raises(SpaceError, match="unfinished prior") as info:
        parse_template(["p.py", "--y~uniform(0, 1)", word])
    assert "\n" not in str(info.value)


def test_text_after_a_prior_is_named_not_taken_for_an_unfinished_prior() -> None:
    with pytest.raises(SpaceError) as info:
        parse_template(["p.py", "--lr~uniform(0, 1)x"])
    assert str(info.value).startswith("'--lr~uniform(0, 1)x' has 'x' after its prior")


@pytest.mark.parametrize("word", ["~", "~/data", "--out=~/runs", "x~y", "--x~abc", "--x~1e-3"])
def test_a_tilde_without_a_call_is_still_literal(word: str) -> None:
    assert parse_template(["p.py", word]).parts[1] == word


@pytest.mark.parametrize(
    "word",
    [
        "--lr~loguniform[1e-5, 1]",
        "--lr~loguniform 1e-5 1",
        "--lr=~uniform",
        "--lr~~uniform(0, 1)",
        "-l~ choices{1, 2}",
        "~lr~normal",
        "~~randint(1, 3)",
        "~gaussian[0, 1]",
    ],
)
def test_a_prior_s_name_without_its_call_is_an_error_not_a_literal(word: str) -> None:
    # Passed through as text, the program got the word as it was and the parameter was not
    # searched, with no note (a user walkthrough).
    with pytest.raises(SpaceError, match="is not a prior as written") as info:
        check_submitted(parse_template(["p.py", "--y~uniform(0, 1)", word]))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "word", ["--mode~normalised", "--out=~uniforms", "--x~fidelity_table", "~choicesfile"]
)
def test_a_word_that_only_begins_as_a_prior_s_name_is_literal(word: str) -> None:
    template = parse_template(["p.py", "--y~uniform(0, 1)", word])
    check_submitted(template)
    assert template.parts[2] == word


@pytest.mark.parametrize(
    ("words", "given"),
    [
        (["--lr~loguniform(1e-5, 1)", "--lr", "0.1"], "--lr 0.1"),
        (["--lr=~loguniform(1e-5, 1)", "--lr=0.1"], "--lr=0.1"),
        (["-l~loguniform(1e-5, 1)", "-l", "0.1"], "-l 0.1"),
    ],
)
def test_an_option_searched_and_also_given_a_value_is_an_error(
    words: list[str], given: str
) -> None:
    # The program's argparse took the last one: every trial ran with the fixed value, while
    # status and best listed the searched values it never used (a user walkthrough).
    with pytest.raises(SpaceError, match="is searched") as info:
        check_submitted(parse_template(["p.py", *words]))
    assert f"also given a value ({given})" in str(info.value)


@pytest.mark.parametrize(
    "words",
    [
        ["python", "-m", "pkg.train", "-m~uniform(0.5, 0.99)"],  # (python's -m: a launcher's)
        ["nice", "-n", "5", "./train.sh", "-n~randint(1, 8)"],
        ["train.py", "--lr", "0.1", "--epochs", "5", "--lr~loguniform(1e-5, 1)"],  # (the last)
        ["train.py", "--data=~uniform/x", "--sep=~choices.txt", "~normal.std", "--y~uniform(0, 1)"],
    ],
)
def test_commands_that_run_as_meant_are_not_refused(words: list[str]) -> None:
    # A flag before its prior is a launcher's, or the one argparse overrides with the prior;
    # a prior's name followed by a path's characters is a path (a review, each accepted before).
    check_submitted(parse_template(words))


def test_options_that_only_share_a_prefix_with_a_searched_one_are_literal() -> None:
    template = parse_template(["p.py", "--lr~uniform(0, 1)", "--lr2", "3", "--lr-decay=0.5"])
    check_submitted(template)
    assert template.render({"lr": 0.5}) == ["p.py", "--lr", "0.5", "--lr2", "3", "--lr-decay=0.5"]


def test_a_command_submitted_before_the_checks_still_renders_its_trials() -> None:
    # A trial starts from the stored command: one these checks refuse now ran before them.
    template = parse_template(["p.py", "--lr~uniform(0, 1)", "--lr", "0.1", "--x~normal[0, 1]"])
    assert template.render({"lr": 0.5}) == [
        "p.py",
        "--lr",
        "0.5",
        "--lr",
        "0.1",
        "--x~normal[0, 1]",
    ]
