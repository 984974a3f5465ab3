"""The CLI's text helpers, pinned where a mutation audit of cli/_format found them unpinned."""

from __future__ import annotations

import json

from metaopt.cli._format import (
    best_summary,
    column_names,
    columns,
    command,
    elided,
    experiment_word,
    fmt_value,
    json_text,
    state_summary,
    table,
    trial_state,
)


def test_fullwidth_characters_take_two_columns_as_wide_ones_do() -> None:
    """Fullwidth Latin (East Asian width F, an IME's default in CJK locales) is two columns on
    a terminal: counted as one, it pushed the table's columns out of line."""
    assert columns("ＡＢ") == 4
    wide, narrow = table(["name", "x"], [["ＡＢ", 1], ["abcd", 2]]).splitlines()[2:]
    assert columns(wide[: wide.index("1")]) == columns(narrow[: narrow.index("2")])
    assert columns(elided("Ａ" * 30)) <= 40


def test_non_finite_numbers_in_a_tuple_are_valid_json_too() -> None:
    """Any sequence, not only a list, goes through: json.dumps refuses inf in a tuple."""
    assert json.loads(json_text({"x": (1.0, float("inf"))})) == {"x": [1.0, "Infinity"]}


def test_a_name_with_a_colon_is_prefixed_so_it_cannot_look_like_a_prefixed_one() -> None:
    """A parameter named "metric:loss" beside a metric "loss" (prefixed as "metric:loss" if it
    were also a parameter) would make two columns of one header."""
    assert column_names(["trial"], ["metric:loss", "x"], ["loss"]) == (
        ["param:metric:loss", "x"],
        ["loss"],
    )


def test_a_printed_command_names_the_data_dir_only_when_one_was_given() -> None:
    """--data-dir '' is the default's: the printed command does not carry an empty one."""
    assert command("status", "mo", data_dir="") == "metaopt status mo"
    assert command("status", "mo", data_dir="/d d") == "metaopt status mo --data-dir '/d d'"


def test_a_name_typed_with_spaces_around_it_is_printed_as_the_name() -> None:
    """The peer finds " mo " as mo: the hint names mo (its latest), not this one's id."""
    info = {"name": "mo", "id": "ee" * 32}
    assert experiment_word(info, " mo ") == "mo"
    assert experiment_word(info, "eeee") == "e" * 12


def test_values_show_five_significant_digits_and_four_in_scientific_notation() -> None:
    """Below 1e-3 and from 1e5 up, scientific notation with four digits; between, five."""
    assert fmt_value(12345.67) == "12346"
    assert fmt_value(123456.7) == "1.235e+05"
    assert fmt_value(0.0012345) == "0.0012345"
    assert fmt_value(0.00012345) == "0.0001234"
    assert fmt_value(0.0) == "0"


def test_interrupted_trials_are_counted_when_there_are_any() -> None:
    """Trials waiting for a peer to run them again are in the summary, or the counts do not
    add up to the trials."""
    assert state_summary({"running": 1, "interrupted": 2}) == (
        "0 done, 1 running, 2 interrupted, 0 failed"
    )


def test_one_objectives_best_is_its_value_not_a_front() -> None:
    assert best_summary({"best": [{"value": 0.5}], "objectives": ["loss"]}) == 0.5
    assert best_summary({"best": [{"value": 0.5}], "objectives": ["a", "b"]}) == "front of 1"
    assert best_summary({"best": [], "objectives": ["loss"]}) is None


# -- From a mutation audit: each failed with one small bug planted in _format.py.


def test_a_single_thawed_trial_is_counted_in_the_summary() -> None:
    said = state_summary({"completed": 3, "running": 1}, thawed=1)
    assert said == "3 done, 1 running, 1 thawed, 0 failed"


def test_a_trial_thawed_once_says_so() -> None:
    assert trial_state("running", 1) == "running, thawed 1x"
