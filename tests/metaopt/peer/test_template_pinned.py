"""Command-line templates, where the template tests left behaviour unpinned: option and
parameter names with dots and dashes, whitespace after a prior, numbering of unnamed
positional priors, literal words that look like calls, non-string words, numpy values."""

from __future__ import annotations

import argparse

import pytest

from metaopt._errors import SpaceError
from metaopt.peer._template import Placeholder, format_value, parse_template


def test_option_names_with_dashes_and_dots_are_priors() -> None:
    """Pins that ``--learning-rate~...`` and ``--opt.lr=~...`` are priors named as typed:
    most training scripts spell their flags with dashes, and such a word refused as an
    "unfinished prior" would make the command unusable."""
    template = parse_template(
        ["train.py", "--learning-rate~loguniform(1e-5, 1)", "--opt.beta=~uniform(0, 1)"]
    )
    assert template.priors == {
        "learning-rate": "loguniform(1e-5, 1)",
        "opt.beta": "uniform(0, 1)",
    }
    assert template.render({"learning-rate": 0.5, "opt.beta": 0.25}) == [
        "train.py",
        "--learning-rate",
        "0.5",
        "--opt.beta=0.25",
    ]


def test_named_positional_priors_may_have_dashes_and_dots_in_their_names() -> None:
    """Pins ``~n-layers~...`` and ``~opt.lr~...`` as named positional priors: the name is
    how the parameter shows in status and export, so it must be kept as typed."""
    template = parse_template(["p", "~n-layers~randint(1, 6)", "~opt.lr~uniform(0, 1)"])
    assert template.parts[1:] == (
        Placeholder("n-layers", "randint(1, 6)", "positional"),
        Placeholder("opt.lr", "uniform(0, 1)", "positional"),
    )
    assert template.render({"n-layers": 3, "opt.lr": 0.5}) == ["p", "3", "0.5"]


def test_whitespace_after_a_prior_is_no_part_of_it() -> None:
    """Pins that a quoted prior with a trailing space or newline (a shell here-doc, a copy
    and paste) is still a prior, and its text is stored stripped: refused, the command is
    unusable; kept with the space, the same search is a different experiment."""
    template = parse_template(["p", "--x~uniform(0, 1) ", "--y=~uniform(0, 2)\n", "~normal(0, 1) "])
    assert template.priors == {"x": "uniform(0, 1)", "y": "uniform(0, 2)", "arg0": "normal(0, 1)"}


def test_whitespace_before_a_prior_is_no_part_of_it() -> None:
    """A space after the ~ inside the quotes (``--lr~' uniform(0, 1)'``) is a complete prior,
    as a space after it is: it was refused as "looks like an unfinished prior", which it is
    not, and the message sent the user looking for a missing parenthesis."""
    template = parse_template(["p", "--x~ uniform(0, 1)", "--y=~\tuniform(0, 2)", "~ normal(0, 1)"])
    assert template.priors == {"x": "uniform(0, 1)", "y": "uniform(0, 2)", "arg0": "normal(0, 1)"}
    assert template.render({"x": 0.5, "y": 1.5, "arg0": 0.0}) == [
        "p",
        "--x",
        "0.5",
        "--y=1.5",
        "0.0",
    ]


def test_a_named_positional_prior_does_not_take_a_number_of_the_unnamed_ones() -> None:
    """Pins that unnamed positional priors are numbered among themselves (arg0, arg1), a
    named one between them taking no number: the names are what a user reads in ``status``
    and passes to ``metaopt best``; a gap (arg0, arg2) reads as a lost parameter."""
    template = parse_template(["p", "~uniform(0, 1)", "~epochs~randint(1, 9)", "~normal(0, 1)"])
    assert list(template.priors) == ["arg0", "epochs", "arg1"]


@pytest.mark.parametrize("word", ["print(1)", "f(x)", "xuniform(0, 1)", "--flag=max(1, 2)"])
def test_a_call_without_a_tilde_is_a_literal_word(word: str) -> None:
    """Pins that only a ``~`` makes a prior: ``python -c 'print(1)'`` must run as typed, not
    have its code replaced by a sampled value."""
    template = parse_template(["python", "-c", word])
    assert template.priors == {}
    assert template.render({}) == ["python", "-c", word]


@pytest.mark.parametrize("word", [None, 3, b"--x~uniform(0, 1)"])
def test_a_command_word_that_is_not_a_string_is_a_space_error(word: object) -> None:
    """Pins the one-line SpaceError for a non-string command word (a command from a Python
    API caller or a record): a TypeError from the regex module would be a traceback."""
    with pytest.raises(SpaceError, match="is not a string"):
        parse_template(["p", word])  # type: ignore[list-item]


def test_a_numpy_float32_renders_through_python_float_rules() -> None:
    """Pins that numpy scalars that are not Python floats (float32) are rendered as Python
    values: ``str(np.float32(-5e-05))`` is ``-5e-05``, which argparse takes for an option
    (the trial failed "expected one argument")."""
    np = pytest.importorskip("numpy")
    text = format_value(np.float32(-5e-05))
    assert "e" not in text and float(text) == pytest.approx(-5e-05)
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--x", type=float)
    assert parser.parse_args(["--x", text]).x == pytest.approx(-5e-05)
    assert format_value(np.int64(7)) == "7"
