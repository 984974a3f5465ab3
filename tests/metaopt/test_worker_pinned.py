"""The worker API: boundaries and by-hand parsing rules the worker tests left unpinned."""

from __future__ import annotations

import json
import math
import sys

import pytest

from metaopt import worker
from metaopt._errors import WorkerError
from tests.metaopt.test_worker import no_peer  # noqa: F401 - autouse: no peer's environment


def _printed(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    out = capsys.readouterr().out
    assert out.startswith("METAOPT ") and out.count("\n") == 1
    return json.loads(out.removeprefix("METAOPT "))


def test_the_documented_limits_are_inclusive(capsys: pytest.CaptureFixture[str]) -> None:
    """A string of 256 characters and 64 metrics in one call are allowed (the README's
    limits): a script at the limit must not crash on its report."""
    worker.report(note="y" * 256)
    assert _printed(capsys) == {"note": "y" * 256}
    many = {f"m{i}": i for i in range(64)}
    worker.report(many)
    assert _printed(capsys) == many


def test_keyword_metrics_win_over_the_mapping_on_the_same_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """report(mapping, **kw) merges as dict(mapping, **kw): a keyword names the later value."""
    worker.report({"loss": 1.0, "val/loss": 2.0}, loss=0.5)
    assert _printed(capsys) == {"loss": 0.5, "val/loss": 2.0}


def test_by_hand_nan_and_inf_are_no_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only finite numbers are recognised on the command line: 'nan' and 'inf' stay text, and
    '-inf' after a flag is no value of it (as a negative number would be)."""
    argv = ["t", "--tag", "nan", "--bound", "inf", "--debug", "-inf", "--shift", "-2.5"]
    monkeypatch.setattr(sys, "argv", argv)
    got = worker.params({"scale": 1.0})
    assert got == {"scale": 1.0, "tag": "nan", "bound": "inf", "debug": True, "shift": -2.5}
    # For a float's default, inf is a value of it (`--max-norm inf`), not the text "inf".
    monkeypatch.setattr(sys, "argv", ["t", "--scale", "inf"])
    assert worker.params({"scale": 1.0}) == {"scale": math.inf}


def test_by_hand_integers_stay_integers(monkeypatch: pytest.MonkeyPatch) -> None:
    """'--layers 4' is the int 4, not 4.0 (range(), list sizes and seeds need an int)."""
    monkeypatch.setattr(sys, "argv", ["t", "--layers", "4", "--seed=-7", "--lr", "1e-3"])
    got = worker.params()
    assert got == {"layers": 4, "seed": -7, "lr": 0.001}
    assert type(got["layers"]) is int and type(got["seed"]) is int
    assert type(got["lr"]) is float


def test_a_float_default_given_text_by_hand_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A value that is no number for a float default is a WorkerError, never a crash
    (float('auto') raised ValueError out of params())."""
    for value in ("auto", "true"):
        monkeypatch.setattr(sys, "argv", ["t", "--lr", value])
        with pytest.raises(WorkerError, match=f"--lr {value}: give a number"):
            worker.params({"lr": 0.1})


def test_a_bool_default_reads_the_usual_spellings_both_ways(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """For a bool default, 0/no/off/false are False and 1/yes/on/true are True (not the int
    0 or 1, which a check like `if flag is False` would miss)."""
    for text, value in (("0", False), ("no", False), ("OFF", False), ("False", False),
                        ("1", True), ("yes", True), ("on", True), ("TRUE", True)):  # fmt: skip
        monkeypatch.setattr(sys, "argv", ["t", "--bn", text])
        got = worker.params({"bn": not value})
        assert got["bn"] is value, text


def test_true_and_false_are_read_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    """'--bn False' (Python's spelling) is the bool False, with or without a default."""
    monkeypatch.setattr(sys, "argv", ["t", "--bn", "False", "--aug", "TRUE"])
    assert worker.params() == {"bn": False, "aug": True}


def test_resume_step_tolerates_surrounding_whitespace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A resume step set by hand in a shell (`export METAOPT_RESUME_STEP=' 12'`) still reads
    as 12; blank means a fresh start."""
    monkeypatch.setenv("METAOPT_RESUME_STEP", " 12\n")
    assert worker.resume_step() == 12
    monkeypatch.setenv("METAOPT_RESUME_STEP", "  ")
    assert worker.resume_step() is None
