"""The CLI faced with text it cannot take or must not show as is: undecodable arguments, a
pid file with no pid, other peers' names with terminal escapes, non-finite numbers as JSON."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from metaopt.cli import main
from metaopt.cli._format import json_text, printable, table
from metaopt.cli._peer import _stop
from metaopt.peer._identity import DataDir

_REPO = str(Path(__file__).resolve().parents[3])
_BAD = os.fsdecode(b"\xff\xff")  # what Python makes of undecodable bytes in argv


@pytest.mark.parametrize(
    "words",
    [
        [verb, _BAD]
        for verb in ("status", "best", "export", "stop", "freeze", "thaw", "kill", "logs")
    ]
    + [["submit", "train.py", "--x~choices(['" + os.fsdecode(b"\xff") + "'])"]],
)
def test_an_argument_that_is_not_utf8_is_one_line(
    words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # msgpack (a request) and ast.parse (a prior) refused them with tracebacks.
    assert main(words) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"metaopt: argument {len(words)} (")
    assert "\\xff" in err and "not valid UTF-8" in err


def test_an_undecodable_argument_from_a_real_command_line_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": _REPO, "METAOPT_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "metaopt", "status", b"\xff\xff\xff\xff"],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr == b"metaopt: argument 2 (\\xff\\xff\\xff\\xff) is not valid UTF-8;" \
        b" type it in UTF-8\n"  # fmt: skip


def _recording_peer(ops: list[str], answer: object) -> type:
    """A LocalPeer stand-in that notes each operation asked of it and answers ``answer``."""

    class _Peer:
        def __init__(self, data_dir: Path) -> None:
            pass

        def call(self, op: str, body: object = None) -> object:
            ops.append(op)
            return answer

    return _Peer


def test_peer_stop_with_a_pid_file_that_names_no_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dirs = DataDir(tmp_path)
    dirs.address_file.write_text("127.0.0.1:9\n")
    dirs.pid_file.write_text("xyz")
    calls: list[str] = []
    monkeypatch.setattr("metaopt.cli._peer.LocalPeer", _recording_peer(calls, None))
    assert _stop(argparse.Namespace(data_dir=str(tmp_path), timeout=1.0)) == 0
    assert calls == ["api.shutdown"] and capsys.readouterr().out == "peer stopped\n"


def test_status_with_a_pid_file_that_names_no_pid_asks_the_peer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It said "the peer is starting" for ever, reading the replica the running peer holds.
    dirs = DataDir(tmp_path)
    dirs.address_file.write_text("127.0.0.1:9\n")
    dirs.pid_file.write_text("xyz")
    asked: list[str] = []
    monkeypatch.setattr("metaopt.cli._read.LocalPeer", _recording_peer(asked, []))
    assert main(["status", "--data-dir", str(tmp_path)]) == 0
    assert asked == ["api.experiments"]


_HOSTILE = "sweep\n\x1b[31mred\x1b[0m\u200b"


def _trial(params: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "ab" * 32,
        "state": "failed",
        "thaws": 0,
        "objectives": None,
        "value": None,
        "metrics": metrics,
        "last_step": 3,
        "runner": None,
        "node": "cd" * 16,
        "params": params,
        "reason": _HOSTILE,
    }


def _info(trials: list[dict[str, Any]], best: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": "ee" * 32,
        "name": _HOSTILE,
        "space": {_HOSTILE: "uniform(0, 1)", "x": "uniform(0, 1)"},
        "objectives": [_HOSTILE],
        "directions": ["minimize"],
        "max_trials": 4,
        "trials": len(trials),
        "counts": {"failed": len(trials)},
        "thawed": 0,
        "stopped": False,
        "finished": True,
        "exhausted": None,
        "best": best,
        "trial_list": trials,
        "blocked_here": None,
    }


class _Peer:
    info: dict[str, Any] = {}  # noqa: RUF012 - replaced whole by each test

    def call(self, op: str, body: object = None) -> object:
        if op == "api.stop":
            return {"key": "ee" * 32, "name": _HOSTILE, "older_open": ["ab" * 32]}
        if op == "api.logs":
            return {
                "here": False, "runner": "cd" * 16, "address": _HOSTILE, "stderr": _HOSTILE,
                "state": "failed", "reason": _HOSTILE,
            }  # fmt: skip
        return [self.info] if op == "api.experiments" else self.info


@pytest.fixture
def peer(monkeypatch: pytest.MonkeyPatch) -> type[_Peer]:
    monkeypatch.setattr("metaopt.cli._read._peer", lambda args, read=False, timeout=None: _Peer())
    return _Peer


def _shown_safely(out: str, lines: int | None = None) -> None:
    assert "\x1b" not in out and "\u200b" not in out
    assert all(line.isprintable() for line in out.splitlines())
    assert "sweep\\n\\x1b[31mred\\x1b[0m\\u200b" in out
    if lines is not None:
        assert out.count("\n") == lines


def test_text_views_escape_what_other_peers_wrote(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    # A name with a newline and a terminal escape, accepted from another peer, broke the
    # table and coloured the terminal.
    trial = _trial({_HOSTILE: 0.5, "x": _HOSTILE}, {_HOSTILE: _HOSTILE})
    completed = {**trial, "state": "completed", "objectives": {_HOSTILE: 0.5}}
    peer.info = _info([trial], [completed])
    assert main(["status"]) == 0
    _shown_safely(capsys.readouterr().out, lines=3)  # header, rule, one row
    assert main(["status", "x"]) == 0
    _shown_safely(capsys.readouterr().out, lines=4)  # title, header, rule, one row
    assert main(["best", "x"]) == 0
    _shown_safely(capsys.readouterr().out, lines=1)
    assert main(["stop", "x"]) == 0
    _shown_safely(capsys.readouterr().out, lines=2)
    assert main(["logs", "ab" * 6]) == 0
    out = capsys.readouterr().out
    _shown_safely(out)
    assert "\nfailed: sweep\\n" in out  # how it ended and why, as recorded


def test_peer_status_escapes_other_peers_text(
    peer_status: Callable[[dict[str, Any]], None], capsys: pytest.CaptureFixture[str]
) -> None:
    status: dict[str, Any] = {
        "node_id": "ab" * 16, "name": _HOSTILE, "address": "127.0.0.1:7777", "pid": 1,
        "data_dir": "/d", "records": 9, "experiments": 1, "fingerprint": "f",
        "slots": [{"index": 0, "trial": "t", "experiment": _HOSTILE}],
        "peers": [{"node_id": "cd" * 16, "address": _HOSTILE, "last_contact": 1.0,
                   "live": True}],
    }  # fmt: skip
    peer_status(status)
    assert main(["peer", "status"]) == 0
    _shown_safely(capsys.readouterr().out)


def test_printable_keeps_plain_text_and_lines_when_asked() -> None:
    assert printable("loss 0.5 — été") == "loss 0.5 — été"
    assert printable("a\x1b[2Jb\tc") == "a\\x1b[2Jb\\tc"
    assert printable("one\x1b\ntwo", lines=True) == "one\\x1b\ntwo"
    assert table([_HOSTILE], [[_HOSTILE]]).count("\n") == 2


def test_json_of_non_finite_numbers_is_valid_json(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    # A trial of another peer with x = inf printed Infinity, which no JSON reader takes.
    trial = _trial({"x": float("inf"), "y": [float("-inf"), float("nan")]}, {"loss": 1.0})
    trial["state"], trial["objectives"] = "completed", {"loss": 1.0}
    peer.info = _info([trial], [trial])
    peer.info["objectives"] = ["loss"]
    for words in (["status", "--json"], ["status", "x", "--json"], ["best", "x", "--json"],
                  ["export", "x", "--format", "json"]):  # fmt: skip
        assert main(words) == 0
        text = capsys.readouterr().out
        assert "Infinity" in text  # as a string
        json.loads(text, parse_constant=lambda token: pytest.fail(f"{token} is not JSON"))
    assert json.loads(json_text({"x": float("-inf")})) == {"x": "-Infinity"}


def test_export_to_a_terminal_escapes_what_other_peers_wrote_and_to_a_pipe_keeps_it(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A failed trial's stderr with terminal escapes reached the terminal through export.
    peer.info = _info([_trial({_HOSTILE: 0.5, "x": 0.5}, {})], [])
    assert main(["export", "x"]) == 0
    assert "\x1b[31m" in capsys.readouterr().out  # a file or a pipe gets the data as it is
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["export", "x"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[31m" in out and out.count("\n") == 2
