"""The worker API a training script uses, with and without a peer."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metaopt import worker
from metaopt._errors import WorkerError
from metaopt.peer._output import OutputParser

_PROTOCOL = (
    "METAOPT_TRIAL_ID",
    "METAOPT_PARAMS",
    "METAOPT_TRIAL_DIR",
    "METAOPT_DATA_DIR",
    "METAOPT_CHECKPOINT_DIR",
    "METAOPT_STOP_FILE",
    "METAOPT_RESUME_STEP",
)


@pytest.fixture(autouse=True)
def no_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROTOCOL:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "argv", ["train.py"])


def test_report_prints_one_flushed_line(capsys: pytest.CaptureFixture[str]) -> None:
    worker.report(loss=0.25, step=3, phase="train")
    out = capsys.readouterr().out
    assert out == 'METAOPT {"loss":0.25,"step":3,"phase":"train"}\n'


def test_report_flushes_its_line_whatever_the_buffering_of_stdout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A script that re-wraps stdout (to force UTF-8, say) makes it block-buffered whatever
    # PYTHONUNBUFFERED says: unflushed, its reports reached the peer only at its exit (no
    # progress seen, no early stopping, all lost to a kill -9).
    raw = io.BytesIO()
    wrapped = io.TextIOWrapper(io.BufferedWriter(raw, buffer_size=1 << 16), encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", wrapped)
    worker.report(loss=0.5, step=1)
    assert raw.getvalue() == b'METAOPT {"loss":0.5,"step":1}\n'


def test_report_accepts_a_mapping_for_names_that_are_not_identifiers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    worker.report({"val/loss": 1}, step=0)
    assert json.loads(capsys.readouterr().out.removeprefix("METAOPT ")) == {
        "val/loss": 1,
        "step": 0,
    }


class _Tensor:
    pass


@pytest.mark.parametrize(
    ("metrics", "words"),
    [
        ({}, "at least one metric"),
        ({"step": math.nan}, "step"),
        ({"1x": math.inf}, "name"),
        ({"ok": True}, "bool"),
        ({"loss": _Tensor()}, "_Tensor"),
        ({"step": -1}, "step"),
        ({"step": 1.5}, "step"),
        ({"1x": 0.1}, "name"),
        ({"": 0.1}, "name"),
        ({"x" * 65: 0.1}, "name"),
        ({"note": "y" * 257}, "256"),
        ({"big": 2**63}, "64 bits"),
        ({"small": -(2**63) - 1}, "64 bits"),
        ({f"m{i}": i for i in range(65)}, "at most 64"),
        # report(0.12) and report("loss") raised Python's own TypeError and ValueError.
        (0.12, "e.g. report(loss=0.12, step=3)"),
        ("loss", "takes metrics by name"),
    ],
)
def test_report_refuses_misuse_with_one_line(
    metrics: object, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(WorkerError) as info:
        worker.report(metrics)
    assert words in str(info.value)
    assert "\n" not in str(info.value)
    assert capsys.readouterr().out == ""


def test_the_64_bit_integers_are_reported_edge_to_edge(capsys: pytest.CaptureFixture[str]) -> None:
    """-2**63 fits in 64 bits, and a record takes it: report() said it did not."""
    worker.report(low=-(2**63), high=2**63 - 1)
    assert capsys.readouterr().out == f'METAOPT {{"low":{-(2**63)},"high":{2**63 - 1}}}\n'


def test_a_nan_or_inf_is_reported_for_the_peer_to_record_the_run_diverged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # report(loss=nan) raised, so the script crashed with a traceback (recorded "exited with
    # code 1") where a METAOPT line with NaN is recorded "diverged", as the README says.
    np = pytest.importorskip("numpy")
    worker.report(loss=math.nan, step=3)
    worker.report({"val/loss": np.float32("inf"), "acc": -math.inf})
    out = capsys.readouterr().out
    assert out == 'METAOPT {"loss":NaN,"step":3}\nMETAOPT {"val/loss":Infinity,"acc":-Infinity}\n'
    parser = OutputParser()
    assert parser.feed(out.encode()) == [{"step": 3}]
    assert parser.nonfinite == {"loss": "nan", "val/loss": "inf", "acc": "-inf"}


def test_numpy_scalars_are_reported_as_plain_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    np = pytest.importorskip("numpy")
    worker.report(loss=np.float32(0.5), step=np.int64(2))
    assert capsys.readouterr().out == 'METAOPT {"loss":0.5,"step":2}\n'


_values = st.one_of(
    st.integers(-(2**63) + 1, 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=256),
)
_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_./-]{0,63}", fullmatch=True)


@given(st.dictionaries(_names, _values, min_size=1, max_size=8))
def test_what_report_prints_the_output_parser_reads_back(metrics: dict[str, object]) -> None:
    metrics.pop("step", None)
    if not metrics:
        return
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        worker.report(metrics)
    reports = OutputParser().feed(buf.getvalue().encode())
    assert reports == [metrics]


def test_a_report_is_printed_only_if_the_peer_can_read_its_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 63 texts of 256 CJK characters are within the rules, but JSON writes each character
    # as 6 bytes: the 98 KB line was cut unread by the peer, and the run failed.
    wide = {f"m{i}": "\u4e2d" * 256 for i in range(63)}
    with pytest.raises(WorkerError, match=r"a line of 9\d{4} bytes, and a peer reads at most"):
        worker.report(wide, loss=0.5)
    assert capsys.readouterr().out == ""
    # The longest line that is printed is read back whole.
    room = worker.MAX_REPORT_BYTES - len('METAOPT {"loss":0.5}')
    each = len(',"m10":""') + 6 * 256
    fill = {f"m{i}": "\u4e2d" * 256 for i in range(10, 10 + room // each)}
    left = room - each * len(fill) - len(',"z":""')
    fill["z"] = "\u4e2d" * (left // 6) + "a" * (left % 6)
    worker.report(fill, loss=0.5)
    line = capsys.readouterr().out.encode()
    assert len(line) == worker.MAX_REPORT_BYTES + 1
    parser = OutputParser()
    assert parser.feed(line) + parser.finish() == [{**fill, "loss": 0.5}]
    fill["z"] += "a"  # one byte more is refused
    with pytest.raises(WorkerError, match=f"a line of {worker.MAX_REPORT_BYTES + 1} bytes"):
        worker.report(fill, loss=0.5)


def test_params_come_from_the_environment_under_a_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METAOPT_PARAMS", json.dumps({"lr": 0.01, "act": "relu"}))
    monkeypatch.setattr(sys, "argv", ["train.py", "--lr", "5"])
    assert worker.params({"lr": 1.0, "epochs": 3}) == {"lr": 0.01, "act": "relu", "epochs": 3}


def test_params_under_a_peer_keep_the_fixed_options_of_the_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`submit train.py --lr~'...' --epochs 10` runs `train.py --lr 0.01 --epochs 10`: the
    environment carries only the searched parameters, and params() gave the script its own
    default epochs instead of the 10 the user submitted."""
    monkeypatch.setenv("METAOPT_PARAMS", json.dumps({"lr": 0.01, "opt": "00"}))
    argv = ["train.py", "--lr", "0.0100000001", "--opt", "00", "--epochs", "10", "--fast"]
    monkeypatch.setattr(sys, "argv", argv)
    got = worker.params({"epochs": 3, "fast": False, "seed": 1})
    assert got == {"lr": 0.01, "opt": "00", "epochs": 10, "fast": True, "seed": 1}
    # A searched value is the search's, whatever its default's kind: not refused as no number.
    monkeypatch.setenv("METAOPT_PARAMS", json.dumps({"lr": "auto"}))
    monkeypatch.setattr(sys, "argv", ["train.py", "--lr", "auto"])
    assert worker.params({"lr": 0.1}) == {"lr": "auto"}


def test_a_report_with_no_stdout_is_checked_and_goes_nowhere_as_print(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Run with stdout closed (`python train.py >&-`), sys.stdout is None: print() writes
    # nothing, and report() raised AttributeError.
    monkeypatch.setattr(sys, "stdout", None)
    worker.report(loss=0.5)
    with pytest.raises(WorkerError):
        worker.report(loss=True)


def test_params_of_something_not_a_dict_is_one_line_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # params(parser.parse_args()) raised "TypeError: 'Namespace' object is not iterable".
    import argparse

    monkeypatch.setattr(sys, "argv", ["train.py"])
    with pytest.raises(
        WorkerError, match=r"got Namespace; for argparse's result pass vars\(args\)"
    ):
        worker.params(argparse.Namespace(lr=0.1))  # type: ignore[arg-type]
    assert worker.params(vars(argparse.Namespace(lr=0.1))) == {"lr": 0.1}


def test_params_returns_a_fresh_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METAOPT_PARAMS", '{"lr": 0.01}')
    worker.params()["lr"] = 7
    assert worker.params() == {"lr": 0.01}


@pytest.mark.parametrize("text", ["{", "[1, 2]", '"lr"'])
def test_malformed_params_env_is_a_worker_error(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("METAOPT_PARAMS", text)
    with pytest.raises(WorkerError, match="METAOPT_PARAMS"):
        worker.params()


def test_by_hand_params_come_from_argv_with_types_inferred(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = [
        "train.py",
        "data.csv",
        "--lr=1e-3",
        "--layers",
        "4",
        "--act",
        "tanh",
        "--shift",
        "-2",
        "--debug",
        "--bn",
        "false",
        "--",
        "--ignored",
        "1",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    assert worker.params({"lr": 0.1, "epochs": 10}) == {
        "lr": 0.001,
        "epochs": 10,
        "layers": 4,
        "act": "tanh",
        "shift": -2,
        "debug": True,
        "bn": False,
    }


def test_by_hand_values_take_the_type_of_their_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        sys, "argv", ["t", "--lr", "1", "--name", "007", "--flag", "yes", "--n", "3"]
    )
    got = worker.params({"lr": 0.5, "name": "x", "flag": False, "n": 1})
    assert got == {"lr": 1.0, "name": "007", "flag": True, "n": 3}
    assert isinstance(got["lr"], float)


@pytest.mark.parametrize(
    ("text", "number"), [("1e6", 10**6), ("10.0", 10), ("-2.0", -2), ("1e30", 10**30)]
)
def test_a_whole_number_written_as_a_float_is_an_ints_value(
    monkeypatch: pytest.MonkeyPatch, text: str, number: int
) -> None:
    """`--steps 1e6` is a whole number: an int, exactly, as the default is (a float's
    1e30 would be off by 2e13)."""
    monkeypatch.setattr(sys, "argv", ["t", "--steps", text])
    got = worker.params({"steps": 100})
    assert got == {"steps": number} and type(got["steps"]) is int


@pytest.mark.parametrize(
    ("argv", "defaults", "said"),
    [
        (["--lr", "abc"], {"lr": 0.1}, "--lr abc: give a number (its default is 0.1)"),
        (["--n", "many"], {"n": 3}, "--n many: give a number (its default is 3)"),
        (["--lr"], {"lr": 0.1}, "--lr: give a number (its default is 0.1)"),
        (["--bn=maybe"], {"bn": False}, "--bn=maybe: give true or false (its default is False)"),
        (["--lr="], {"lr": 0.1}, "--lr=: give a number (its default is 0.1)"),
        (["--n=3.5x"], {"n": 3}, "--n=3.5x: give a number (its default is 3)"),
        (["--n", "5.5"], {"n": 3}, "--n 5.5: give a whole number (its default is 3)"),
        (["--n=1e-3"], {"n": 3}, "--n=1e-3: give a whole number (its default is 3)"),
        (["--n", "-0.5"], {"n": 0}, "--n -0.5: give a whole number (its default is 0)"),
        (["--ns=2.5"], {"ns": [1]}, "--ns=2.5: give int values (its default is [1])"),
    ],
)
def test_a_value_that_is_not_of_its_defaults_kind_is_refused(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], defaults: dict[str, Any], said: str
) -> None:
    """`--lr abc` gave the script the text "abc" for a float, to fail far from the cause."""
    monkeypatch.setattr(sys, "argv", ["t", *argv])
    with pytest.raises(WorkerError) as refused:
        worker.params(defaults)
    assert str(refused.value) == said


@pytest.mark.parametrize(
    ("argv", "got"),
    [
        (["--verbose", "data.csv", "--lr", "0.01"], {"verbose": True, "lr": 0.01}),
        (["--lr", "0.01", "--verbose", "data.csv"], {"verbose": True, "lr": 0.01}),
        (["--verbose", "no", "data.csv"], {"verbose": False, "lr": 0.1}),
        (["--verbose", "maybe"], {"verbose": True, "lr": 0.1}),
    ],
)
def test_a_word_after_a_flag_whose_default_is_a_bool_is_an_argument(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], got: dict[str, Any]
) -> None:
    """`train.py --verbose data.csv`: the flag is bare and data.csv the program's own argument
    (as argparse's store_true reads it); every trial of such a command failed on "give true
    or false", by hand and under a peer. A bool word after it is still its value."""
    monkeypatch.setattr(sys, "argv", ["t", *argv])
    assert worker.params({"verbose": False, "lr": 0.1}) == got


def test_under_a_peer_a_word_after_a_flag_is_an_argument_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run a peer makes of `submit flag.py --lr~... --verbose data.csv`: the searched lr
    comes from METAOPT_PARAMS, the flag from the command line."""
    monkeypatch.setenv("METAOPT_PARAMS", '{"lr": 0.01}')
    monkeypatch.setattr(sys, "argv", ["flag.py", "--lr", "0.01", "--verbose", "data.csv"])
    assert worker.params({"verbose": False, "lr": 0.1}) == {"verbose": True, "lr": 0.01}


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [
        (["--verbose"], 1),
        (["--verbose", "--verbose"], 2),
        (["--verbose", "--lr", "0.5", "--verbose", "--verbose"], 3),
        (["--verbose", "--lr", "0.5"], 1),
        ([], 0),
    ],
)
def test_a_bare_flag_whose_default_is_zero_counts_how_often_it_is_given(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], verbose: int
) -> None:
    """argparse's action="count" (default 0) is a bare flag: `train.py --verbose` was refused
    with "give a number", and every trial of such a command failed under a peer. It counts
    (an int, as the default is) each time it is given, as argparse does: `--verbose
    --verbose` was 1."""
    monkeypatch.setattr(sys, "argv", ["t", "--lr", "0.5", *argv])
    got = worker.params({"lr": 0.1, "verbose": 0})
    assert got == {"lr": 0.5, "verbose": verbose} and type(got["verbose"]) is int


@pytest.mark.parametrize("argv", [["--epochs"], ["--epochs", "--lr", "0.1"], ["--epochs", "x"]])
def test_a_bare_option_whose_default_is_another_int_is_refused(
    monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    """`--epochs $EPOCHS` with the variable unset: not a count, so not 1 epoch without a word."""
    monkeypatch.setattr(sys, "argv", ["t", *argv])
    with pytest.raises(WorkerError, match="give a number"):
        worker.params({"epochs": 10, "lr": 0.5})


@pytest.mark.parametrize("argv", [["--seed", "abc"], ["--seed", "0x1F"], ["--seed", "data/"]])
def test_a_word_that_is_no_number_after_an_option_whose_default_is_zero_is_refused(
    monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    """A default of 0 is not always a count (seed, num_workers, start_epoch): `--seed abc`, or
    `--num-workers $NW data/` with $NW unset, gave 1 without a word when such a word was
    taken for the program's own argument after a count."""
    monkeypatch.setattr(sys, "argv", ["t", *argv])
    with pytest.raises(WorkerError, match=r"^--seed \S+: give a number \(its default is 0\)"):
        worker.params({"seed": 0})


def test_a_count_flag_before_the_programs_argument_is_refused_saying_where_it_goes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--verbose data.csv` with a count's default reads as `--seed abc` does, which must be
    refused: the refusal says how to give a count so that it is read as one."""
    monkeypatch.setattr(sys, "argv", ["t", "--verbose", "data.csv"])
    with pytest.raises(WorkerError) as refused:
        worker.params({"verbose": 0})
    assert str(refused.value) == (
        "--verbose data.csv: give a number (its default is 0); if --verbose counts"
        " (action='count'), give it after the program's arguments"
    )


@pytest.mark.parametrize(
    ("argv", "defaults", "got"),
    [
        (["--layers", "64", "128", "--lr", "0.5"], {"layers": [32]}, {"layers": [64, 128]}),
        (["--layers=64"], {"layers": (32, 32)}, {"layers": (64,)}),
        (["--milestones", "0.5", "-1"], {"milestones": [0.1]}, {"milestones": [0.5, -1.0]}),
        (["--layers"], {"layers": []}, {"layers": []}),
        (["--tag", "a", "007", "--tag", "c"], {"tag": ["x"]}, {"tag": ["a", "007", "c"]}),
        (["--ids", "3", "b", "--", "--ids", "9"], {"ids": []}, {"ids": [3, "b"]}),
        (["--aug", "yes", "off"], {"aug": [False]}, {"aug": [True, False]}),
    ],
)
def test_an_option_whose_default_is_a_list_takes_every_word_given(
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    defaults: dict[str, Any],
    got: dict[str, Any],
) -> None:
    """argparse's nargs (and action="append" given more than once): `--layers 64 128` gave
    the int 64 where the script's default is a list, and 128 went nowhere. Each word is read
    as the default's first item is (inferred for an empty default), as a plain value."""
    monkeypatch.setattr(sys, "argv", ["t", *argv])
    read = worker.params(defaults)
    assert {name: read[name] for name in got} == got
    assert all(
        type(a) is type(b) for name in got for a, b in zip(read[name], got[name], strict=True)
    )
    assert all(type(read[name]) is type(got[name]) for name in got)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["--layers", "64", "data.csv"],
            "--layers 64 data.csv: give int values (its default is [32]);"
            " the program's own arguments go before --layers",
        ),
        (["--layers=64,128"], "--layers=64,128: give int values (its default is [32])"),
        (["--layers", "x"], "--layers x: give int values (its default is [32])"),
    ],
)
def test_a_word_that_is_not_of_a_lists_kind_is_refused(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], said: str
) -> None:
    """As argparse's nargs with type=int refuses it: the words after the option are all its
    values, so a program's own argument after them would fail far from the cause."""
    monkeypatch.setattr(sys, "argv", ["t", *argv])
    with pytest.raises(WorkerError) as refused:
        worker.params({"layers": [32]})
    assert str(refused.value) == said


def test_text_values_are_plain_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value read from the word after its option came back as a private str subclass, which
    yaml.safe_dump refused and a pickle tied to metaopt: a script's own parameters must be
    plain values."""
    monkeypatch.setattr(sys, "argv", ["t", "--data-dir", "/data/x", "--opt", "adam", "--n=a"])
    got = worker.params({"data_dir": "/tmp"})
    assert got == {"data_dir": "/data/x", "opt": "adam", "n": "a"}
    assert all(type(v) is str for v in got.values())


@pytest.mark.parametrize("argv", [["--resume", "--lr", "0.3"], ["--log", "-"]])
def test_a_texts_option_given_bare_or_with_a_dash_is_not_refused(
    monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    # argparse takes both (nargs="?" with a const; "-" for stdout): refused here, every trial
    # of such a script failed at its start (a review of a change that refused them).
    monkeypatch.setattr(sys, "argv", ["t", *argv])
    got = worker.params({"resume": "", "log": "out.txt", "lr": 0.1})
    assert got["lr"] == (0.3 if "--lr" in argv else 0.1)


def test_a_dashed_option_reaches_the_key_argparse_would_give_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--learning-rate` is argparse's learning_rate: the searched value and the fixed
    --batch-size went to keys the script never read, and every trial ran with the default
    learning rate. A name written with its dash in the defaults keeps it."""
    monkeypatch.setenv("METAOPT_PARAMS", '{"learning-rate": 0.5}')
    monkeypatch.setattr(sys, "argv", ["t", "--learning-rate", "0.5", "--batch-size", "64"])
    got = worker.params({"learning_rate": 0.01, "batch_size": 32})
    assert got == {"learning_rate": 0.5, "batch_size": 64}
    assert worker.params({"batch-size": 8}) == {"batch-size": 64, "learning-rate": 0.5}


def test_a_no_flag_turns_off_the_bool_it_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """argparse's BooleanOptionalAction: `--no-shuffle` is shuffle=False (it was a new key
    no-shuffle=True, and the run shuffled), also with the program's own argument after it. A
    default that names no-shuffle itself keeps it."""
    monkeypatch.setattr(
        sys, "argv", ["t", "--no-shuffle", "--no_data-aug", "data.csv", "--no-such"]
    )
    got = worker.params({"shuffle": True, "data_aug": True, "such": 3})
    assert got == {"shuffle": False, "data_aug": False, "such": 3, "no-such": True}
    assert worker.params({"no-shuffle": False, "shuffle": True})["no-shuffle"] is True
    monkeypatch.setattr(sys, "argv", ["t", "--no-shuffle=true"])  # (argparse refuses it too)
    with pytest.raises(WorkerError, match=r"^--no-shuffle=true: give --no-shuffle alone"):
        worker.params({"shuffle": True})


def test_by_hand_params_follow_a_changed_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["t", "--x", "1"])
    assert worker.params() == {"x": 1}
    monkeypatch.setattr(sys, "argv", ["t", "--x", "2"])
    assert worker.params() == {"x": 2}


def test_should_stop_follows_the_stop_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert worker.should_stop() is False
    stop = tmp_path / "stop"
    monkeypatch.setenv("METAOPT_STOP_FILE", str(stop))
    assert worker.should_stop() is False
    stop.touch()
    assert worker.should_stop() is True


def test_checkpoint_dir_is_created(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert worker.checkpoint_dir() == Path("metaopt-checkpoint")
    assert (tmp_path / "metaopt-checkpoint").is_dir()
    monkeypatch.setenv("METAOPT_CHECKPOINT_DIR", str(tmp_path / "a" / "b"))
    assert worker.checkpoint_dir() == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir()


def test_resume_step_and_ids(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert worker.resume_step() is None
    assert worker.trial_id() is None
    assert worker.trial_dir() is None
    assert worker.data_dir() is None
    monkeypatch.setenv("METAOPT_RESUME_STEP", "12")
    monkeypatch.setenv("METAOPT_TRIAL_ID", "abc")
    monkeypatch.setenv("METAOPT_TRIAL_DIR", str(tmp_path))
    monkeypatch.setenv("METAOPT_DATA_DIR", str(tmp_path / "d"))
    assert worker.resume_step() == 12
    assert worker.trial_id() == "abc"
    assert worker.trial_dir() == tmp_path
    assert worker.data_dir() == tmp_path / "d"
    for bad in ("-3", "²"):  # ("²" is a digit to isdigit: int() raised ValueError)
        monkeypatch.setenv("METAOPT_RESUME_STEP", bad)
        with pytest.raises(WorkerError, match="METAOPT_RESUME_STEP"):
            worker.resume_step()


def test_the_package_exports_the_worker_api() -> None:
    import metaopt

    assert metaopt.report is worker.report
    assert metaopt.params is worker.params


def _older_pythons() -> list[str]:
    """Python 3.8-3.10 interpreters that run here: on PATH, or installed by pyenv (whose
    shims on PATH may exist and not run)."""
    names = ("python3.8", "python3.9", "python3.10", "pypy3")
    candidates = [shutil.which(name) for name in names]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates += sorted(str(p) for p in pyenv.glob("3.[89]*/bin/python3"))
    candidates += sorted(str(p) for p in pyenv.glob("3.10*/bin/python3"))
    probe = "import sys; assert (3, 8) <= sys.version_info < (3, 11)"
    return [
        path
        for path in candidates
        if path and subprocess.run([path, "-c", probe], capture_output=True).returncode == 0
    ]


_OLDER_PYTHONS = _older_pythons()


@pytest.mark.skipif(not _OLDER_PYTHONS, reason="no Python 3.8-3.10 interpreter on this machine")
def test_the_worker_api_runs_under_an_older_python(tmp_path: Path) -> None:
    # A trial may run under its own environment's Python; `int | float | str` at import time
    # made `import metaopt` raise TypeError on 3.9.
    (tmp_path / "metaopt").symlink_to(Path(worker.__file__).parent, target_is_directory=True)
    # `from metaopt import *` loaded the Study too: ImportError on 3.8 and 3.9, and "No module
    # named 'numpy'" wherever the trial's Python has none.
    probe = (
        "import sys, metaopt; assert sys.version_info < (3, 11)\n"
        "from metaopt import *; report(loss=0.25)\n"
        "metaopt.report(loss=0.5, step=1)\n"
        "metaopt.report(loss=float('nan'))\n"
        "print(metaopt.params()['x'], metaopt.should_stop(), metaopt.resume_step())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "METAOPT_PARAMS": '{"x": 2}'}
    ran = subprocess.run(
        [_OLDER_PYTHONS[0], "-c", probe], env=env, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == [
        'METAOPT {"loss":0.25}',
        'METAOPT {"loss":0.5,"step":1}',
        'METAOPT {"loss":NaN}',
        "2 False None",
    ]
