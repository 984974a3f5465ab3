"""Pins on the `metaopt` entry point (metaopt/cli/__init__.py): what reaches `submit` as its
words, how mistakes are said, and the exit status of each way a command can end, that the rest
of the suite left open (found by a mutation audit)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from crdt import CrdtError, Record
from metaopt.cli import main
from tests.metaopt.cli.test_submit import _FakePeer, fake_peer  # noqa: F401

PRIOR = "--x~uniform(0, 1)"


def _status_raises(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def fail(args: object) -> int:
        raise exc

    monkeypatch.setattr("metaopt.cli._read._status", fail)


def test_ctrl_c_exits_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C (during `submit --wait`, say) ends with the shell's 128+SIGINT, so a script can
    tell an interrupt from a failure (1) or a mistake (2)."""
    _status_raises(monkeypatch, KeyboardInterrupt())
    assert main(["status"]) == 130
    assert capsys.readouterr().err == ""


def test_ctrl_c_while_the_commands_load_exits_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Making the parser imports every command's modules (0.3-0.9 s): a Ctrl-C then printed
    a traceback of 12-34 lines (6 of 13 `peer start`, 2 of 8 `submit`; a review of signals)."""

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("metaopt.cli._parser", interrupted)
    try:
        code: object = main(["status"])
    except KeyboardInterrupt:  # (caught here: pytest would take it for the user's Ctrl-C)
        code = "KeyboardInterrupt escaped main()"
    assert code == 130 and capsys.readouterr().err == ""


def test_a_crdt_error_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The crdt package's errors (a record too large, one malformed) are the user's to act on:
    one line and exit 2, not a traceback."""
    _status_raises(monkeypatch, CrdtError("a record of 2000000 bytes exceeds the limit"))
    assert main(["status"]) == 2
    assert capsys.readouterr().err == "metaopt: a record of 2000000 bytes exceeds the limit\n"


def test_an_unexpected_error_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug stays a traceback (to report), not a one-line message that hides where it is."""
    _status_raises(monkeypatch, RuntimeError("bug"))
    with pytest.raises(RuntimeError, match="bug"):
        main(["status"])


def test_a_misspelt_option_given_with_a_value_is_still_named(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--slotz=16` is matched by its name, not by `--slotz=16` whole, which is too far from any
    option to be suggested; one suggestion, for the first word only."""
    assert main(["peer", "start", "--slotz=16", "--portt=1"]) == 2
    said = capsys.readouterr().err
    assert said == (
        "metaopt peer start: unrecognized argument(s) --slotz=16 --portt=1 (did you mean"
        " --slots?); see `metaopt peer start -h`\n"
    )


def test_an_argument_that_is_a_lone_surrogate_not_from_argv_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """main(argv) from Python may be handed a string no command line makes (a lone high
    surrogate): still one line naming the argument, not a UnicodeEncodeError."""
    assert main(["status", "a\ud800"]) == 2
    assert capsys.readouterr().err == (
        "metaopt: argument 2 (a\\ud800) is not valid UTF-8; type it in UTF-8\n"
    )


def test_a_help_flag_past_submits_first_word_belongs_to_the_program(
    fake_peer: type[_FakePeer],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`submit --max-trials 3 train.py --x~... -h` searches a program that takes -h: only
    `submit -h` (or --help) right after submit asks for submit's help, and submit's own words
    are never handed to argparse (which took --max-trials for an unknown option)."""
    fake_peer.added = []
    assert main(["submit", "--max-trials", "3", "train.py", PRIOR, "-h"]) == 0
    body = Record.decode(fake_peer.added[-1][0]).body
    assert body["command"] == ["train.py", PRIOR, "-h"] and body["max_trials"] == 3
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["submit", "-h"])
    assert exited.value.code == 0 and "submit's options:" in capsys.readouterr().out


def test_a_reader_gone_with_output_still_buffered_exits_141_without_a_word(tmp_path: Path) -> None:
    """`metaopt status | head -1`: stdout is pointed at /dev/null once the pipe breaks, so the
    rows still in the buffer do not fail again at exit ("Exception ignored ... BrokenPipeError"
    and status 120 instead of the 141 a shell expects of a closed pipe)."""
    code = (
        "import sys\n"
        "import metaopt.cli._read as read\n"
        "from metaopt.cli import main\n"
        "def status(args):\n"
        "    sys.stdin.read()  # until the test has closed the reading end of stdout\n"
        "    sys.stdout.write('row\\n' * 100)  # (left in the buffer)\n"
        "    raise BrokenPipeError\n"
        "read._status = status\n"
        "sys.exit(main(['status']))\n"
    )
    repo = str(Path(__file__).resolve().parents[3])
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env={"PYTHONPATH": repo, "PATH": "/usr/bin:/bin"},
    )
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    child.stdout.close()
    child.stdin.close()
    with child.stderr:
        err = child.stderr.read().decode()
    assert child.wait(timeout=60) == 141, err
    assert err == ""
