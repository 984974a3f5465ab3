"""What `metaopt status`, `best` and `export` print, from a peer's answers (no peer needed)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from metaopt.cli import main


def _trial(tid: str, state: str, metrics: dict[str, float], final: bool) -> dict[str, Any]:
    return {
        "id": tid * 16,
        "state": state,
        "thaws": 0,
        "objectives": dict(metrics) if final else None,
        "value": metrics.get("f1") if final else None,
        "metrics": dict(metrics),
        "last_step": 7,
        "runner": None,
        "node": "ab" * 16,
        "params": {"x": 0.5},
        "reason": None if final else "not in the top third at rung 3",
    }


def _info(trials: list[dict[str, Any]], objectives: list[str]) -> dict[str, Any]:
    done = [t for t in trials if t["objectives"]]
    return {
        "id": "ee" * 32,
        "name": "mo",
        "space": {"x": "uniform(0, 1)"},
        "objectives": objectives,
        "directions": ["minimize"] * len(objectives),
        "max_trials": 4,
        "trials": len(trials),
        "counts": {t["state"]: 1 for t in trials},
        "thawed": 0,
        "stopped": False,
        "finished": False,
        "best": done,
        "trial_list": trials,
        "blocked_here": None,
    }


class _Peer:
    info: dict[str, Any] = {}  # noqa: RUF012 - replaced whole by each test

    def call(self, op: str, body: object = None) -> object:
        if isinstance(body, dict) and body.get("trials") == "open":
            ended = ("completed", "failed", "killed")
            listed = [t for t in self.info["trial_list"] if t["state"] not in ended]
            return {**self.info, "trial_list": listed}
        return [self.info] if op == "api.experiments" else self.info


@pytest.fixture
def peer(monkeypatch: pytest.MonkeyPatch) -> type[_Peer]:
    monkeypatch.setattr("metaopt.cli._read._peer", lambda args, read=False, timeout=None: _Peer())
    return _Peer


def test_every_objective_has_a_column_and_an_unfinished_trial_shows_its_last_value(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    # Only the first objective was shown, and a killed trial's last loss showed as "-".
    peer.info = _info(
        [
            _trial("a", "completed", {"f1": 0.25, "f2": 3.0}, final=True),
            _trial("b", "killed", {"f1": 0.75, "f2": 9.0}, final=False),
        ],
        ["f1", "f2"],
    )
    assert main(["status", "mo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("trial"))
    assert header.split()[:6] == ["trial", "state", "f1", "f2", "step", "runner"]
    assert lines[0].endswith("; minimize f1, minimize f2")  # was "minimize/minimize f1, f2"
    killed = next(line for line in lines if line.startswith("b" * 12))
    assert killed.split()[1:4] == ["killed", "0.75", "9"]
    assert main(["status"]) == 0
    assert "front of 1" in capsys.readouterr().out  # a front, not one trial's f1


def test_status_of_an_experiment_shows_its_newest_trials_and_says_how_to_see_all(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    # 20,000 trials printed 20,003 lines. (This fake peer sends every trial, as a peer of an
    # earlier release does: the command cuts them itself.)
    peer.info = _info(
        [_trial(f"{i:x}", "completed", {"f1": i}, final=True) for i in range(12)], ["f1"]
    )
    assert main(["status", "mo", "--last", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split()[0] for line in lines if line[:12] in {f"{i:x}" * 12 for i in range(12)}]
    assert rows == ["9" * 12, "a" * 12, "b" * 12]
    assert lines[-1] == "(the newest 3 of 12 trials; `metaopt status mo --all` lists all)"
    # A trial running shows however old (one running since the start was hidden); a frozen
    # one does not (under freeze-thaw two in three are, and the list grew with them).
    peer.info["trial_list"][0]["state"] = "running"
    peer.info["trial_list"][1]["state"] = "frozen"
    assert main(["status", "mo", "--last", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split()[0] for line in lines if line[:12] in {f"{i:x}" * 12 for i in range(12)}]
    assert rows == ["0" * 12, "9" * 12, "a" * 12, "b" * 12]
    assert lines[-1].startswith("(the newest 3 and 1 older still running or to run of 12 trials;")
    # Once stopped, nothing starts again: a pending one is not "to run".
    peer.info["trial_list"][0]["state"], peer.info["stopped"] = "pending", True
    assert main(["status", "mo", "--last", "3"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("(the newest 3 of 12 trials;")
    peer.info["stopped"] = False
    assert main(["status", "mo", "--last", str(10**30)]) == 0  # (a traceback past 64 bits)
    assert "newest" not in capsys.readouterr().out
    for every in (["--all"], [], ["--last", "12"]):  # the default shows 50
        assert main(["status", "mo", *every]) == 0
        out = capsys.readouterr().out
        assert "0" * 12 in out and "b" * 12 in out and "newest" not in out
    # --json lists every trial, unless --last is given (it was ignored there).
    for given, listed in (([], 12), (["--last", "3"], 3), (["--all"], 12)):
        assert main(["status", "mo", "--json", *given]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["trial_list"][-1]["id"].startswith("b" * 12)
        assert len(out["trial_list"]) == listed and out["trials"] == 12
    with pytest.raises(SystemExit) as exited:
        main(["status", "mo", "--last", "-1"])
    assert exited.value.code == 2
    assert "argument --last: -1 is below 0; see `metaopt status -h`" in capsys.readouterr().err


def test_best_of_several_objectives_is_a_table_of_the_front(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    """A front was printed a trial a line, values and params in running text: a dozen trials
    could not be read down a column. Now a column each, best first by the first objective."""
    trials = [
        _trial("a", "completed", {"f1": 0.75, "f2": 1.0}, final=True),
        _trial("b", "completed", {"f1": 0.25, "f2": 3.0}, final=True),
    ]
    trials[1]["params"] = {"x": 0.125}
    peer.info = _info(trials, ["f1", "f2"])
    assert main(["best", "mo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "mo: a Pareto front of 2"
    assert lines[1].split() == ["trial", "f1", "f2", "runner", "x"]
    assert lines[3].split() == ["b" * 12, "0.25", "3", "ab" * 4, "0.125"]
    assert lines[4].split() == ["a" * 12, "0.75", "1", "ab" * 4, "0.5"]
    peer.info["directions"] = ["maximize", "minimize"]
    assert main(["best", "mo"]) == 0
    assert capsys.readouterr().out.splitlines()[3].startswith("a" * 12)


def test_export_keeps_its_columns_and_best_says_when_nothing_completed(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    peer.info = _info([_trial("b", "failed", {}, final=False)], ["loss"])
    assert main(["export", "mo"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["trial", "state", "node", "runner", "x", "loss", "step", "reason"]
    assert main(["best", "mo", "--json"]) == 1  # as without --json: nothing completed
    assert json.loads(capsys.readouterr().out) is None
    assert main(["best", "mo"]) == 1
    assert capsys.readouterr().out == "mo: no completed trial yet\n"
    peer.info["finished"] = True
    peer.info["name"] = "my run"
    assert main(["best", "my run"]) == 1
    said = capsys.readouterr().out
    assert "finished with no completed trial; `metaopt status 'my run'` says why" in said
    peer.info["stopped"] = True  # (by `metaopt stop`: it did not finish)
    assert main(["best", "my run"]) == 1
    assert "my run: stopped with no completed trial;" in capsys.readouterr().out


def test_a_hint_names_an_experiment_reached_by_id_by_its_id(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    # `best ID` of an earlier namesake said `metaopt status NAME`, which shows the later one.
    peer.info = {**_info([_trial("b", "failed", {}, final=False)], ["loss"]), "finished": True}
    assert main(["best", "eeeeee"]) == 1
    said = capsys.readouterr().out
    assert said == "mo: finished with no completed trial; `metaopt status eeeeeeeeeeee` says why\n"
    # With the --data-dir given, as typed: without it the command read another peer.
    assert main(["best", "mo", "--data-dir", "~/my peer"]) == 1
    said = capsys.readouterr().out
    assert "`metaopt status mo --data-dir '~/my peer'` says why" in said


def test_export_has_one_step_column_however_the_trials_reported_their_step(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    # A report's "step" became a metric column of its own beside the step column.
    running = _trial("r", "running", {"loss": 0.5, "step": 3, "acc": 0.9}, final=False)
    peer.info = _info([running], ["loss"])
    assert main(["export", "mo"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["trial", "state", "node", "runner", "x", "loss", "acc", "step", "reason"]
    assert rows[1][5:8] == ["0.5", "0.9", "7"]


def test_status_says_a_running_trials_node_is_silent(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    silent = _trial("s", "running", {"loss": 0.5}, final=False)
    silent["quiet"] = {"seconds": 25, "lost_after": 60.0}
    peer.info = _info([silent, _trial("r", "running", {"loss": 0.4}, final=False)], ["loss"])
    assert main(["status", "mo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("s" * 12))
    assert row.endswith("node silent 25 s; re-run elsewhere at 60 s")
    assert "silent" not in next(line for line in lines if line.startswith("r" * 12))


def test_a_step_0_report_shows_as_step_0_and_no_report_as_blank(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    at_zero = _trial("z", "running", {"loss": 0.5}, final=False)
    at_zero.update(last_step=0, steps=1)
    silent = _trial("n", "running", {}, final=False)
    silent.update(last_step=0, steps=0)
    peer.info = _info([at_zero, silent], ["loss"])
    assert main(["export", "mo"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert [row[rows[0].index("step")] for row in rows[1:]] == ["0", ""]


def test_stop_names_the_experiment_it_stopped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `metaopt stop 12b7` said "experiment 12b7 (12b744f02436) stopped".
    class _Stopping:
        def call(self, op: str, body: object = None) -> object:
            return {
                "key": "12b7" + "0" * 60,
                "name": "sweep",
                "older_open": ["ab" * 32],
                "newer_open": ["cd" * 32],
            }

    monkeypatch.setattr("metaopt.cli._read._peer", lambda args: _Stopping())
    assert main(["stop", "12b7"]) == 0
    out = capsys.readouterr().out
    assert "experiment sweep (12b700000000) stopped" in out
    assert "an earlier sweep (abababababab) still runs" in out
    assert "a later sweep (cdcdcdcdcdcd) still runs" in out  # it was called earlier too


def test_status_says_why_a_trial_failed(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    # `submit --wait` sends the user to `metaopt status NAME` when nothing completed, which
    # showed no reason at all.
    failed = _trial("c", "failed", {}, final=False)
    failed["reason"] = "exited with code 1; last stderr: " + "boom " * 30 + "\nTraceback ..."
    stderr = "ModuleNotFoundError: No module named 'torchvision_extra'"
    missing = {**_trial("d", "failed", {}, final=False), "reason": "exited with code 1; last"
               f" stderr: {stderr}"}  # fmt: skip
    peer.info = _info([_trial("a", "completed", {"f1": 0.25}, final=True), failed, missing], ["f1"])
    assert main(["status", "mo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert next(line for line in lines if line.startswith("trial")).split()[-1] == "why"
    row = next(line for line in lines if line.startswith("c" * 12))
    assert "code 1: ...oom boom" in row
    assert "Traceback" not in row  # one line of the reason, cut short
    # The end of the last stderr line, where the error says what it is (the module's name
    # was cut off).
    row = next(line for line in lines if line.startswith("d" * 12))
    assert row.endswith("code 1: ...otFoundError: No module named 'torchvision_extra'")
    # A long account before the stderr leaves it no room: the line cut at 60 as any other.
    from metaopt.cli._read import _why

    crashed = "crashed when asked to stop (its peer was stopped): exited with code 1"
    shown = _why({**missing, "reason": f"{crashed}; last stderr: {stderr}"})
    assert len(shown) == 60 and shown.startswith("crashed when asked to stop")
    done = next(line for line in lines if line.startswith("a" * 12))
    assert "exited" not in done


def test_a_peer_that_hears_no_other_says_what_that_means(
    peer_status: Callable[[dict[str, Any]], None], capsys: pytest.CaptureFixture[str]
) -> None:
    # Cut off from the others, a peer showed only "peers (0 live of 3)" while it prepared to
    # re-run their trials itself.
    status: dict[str, Any] = {
        "node_id": "ab" * 16, "name": "lab1", "address": "127.0.0.1:7777", "pid": 1,
        "data_dir": "/d", "records": 9, "experiments": 1, "fingerprint": "f", "slots": [],
        "lost_after": 60.0,
        "peers": [{"node_id": "cd" * 16, "address": "127.0.0.1:7778", "last_contact": 45.0,
                   "live": False}],
    }  # fmt: skip
    peer_status(status)
    assert main(["peer", "status"]) == 0
    out = capsys.readouterr().out
    assert "hears none of the others (cut off, or they stopped)" in out
    assert "silent 60 s" in out
    status["peers"][0]["live"] = True
    assert main(["peer", "status"]) == 0
    assert "hears none" not in capsys.readouterr().out
    # A full disk: the peer holds back, and the user (whose log is on that disk) reads why.
    status["storage"] = "cannot write its replica (No space left on device)"
    assert main(["peer", "status"]) == 0
    assert "this peer cannot write its replica (No space left on device): it" in (
        capsys.readouterr().out
    )
    # ... and, cut off meanwhile, it is not said to run on alone and take others' trials.
    status["peers"][0]["live"] = False
    assert main(["peer", "status"]) == 0
    out = capsys.readouterr().out
    assert "it records nothing" in out and "runs on alone" not in out


def test_status_and_best_of_a_stopped_peer_read_its_replica(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.metaopt.peer.test_offline import _stopped_peer

    _stopped_peer(tmp_path)
    assert main(["status", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "sweep" in out.out and "no peer runs on" in out.err
    assert main(["best", "sweep", "--data-dir", str(tmp_path)]) == 0
    assert "0.25" in capsys.readouterr().out
    # Killed -9, a peer leaves its address and pid files: they name no running peer.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    (tmp_path / "peer.pid").write_text(dead)
    (tmp_path / "peer.address").write_text("127.0.0.1:9\n")
    assert main(["status", "sweep", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "no peer runs on" in out.err and "completed" in out.out


def test_an_earlier_namesake_is_marked_in_the_list(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `train.py` and `./train.sh` both named "train": two rows, not saying which a name finds.
    earlier = {**_info([], ["loss"]), "name": "train", "latest": False, "id": "aa" * 32}
    latest = {**_info([], ["loss"]), "name": "train", "latest": True, "id": "bb" * 32}

    class _Two(_Peer):
        def call(self, op: str, body: object = None) -> object:
            return [earlier, latest]

    monkeypatch.setattr("metaopt.cli._read._peer", lambda args, read=False, timeout=None: _Two())
    assert main(["status"]) == 0
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines()[2:]]
    assert rows == [["train", "(earlier)"], ["train", "bbbbbbbbbbbb"]]


def test_a_trial_being_stopped_here_says_so(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    running = {**_trial("a", "running", {"f1": 0.5}, False), "reason": None, "stopping": "killed"}
    peer.info = _info([running], ["f1"])
    assert main(["status", "mo"]) == 0
    assert "being stopped here (to be recorded killed)" in capsys.readouterr().out


def test_an_exhausted_experiment_is_listed_so_once_nothing_is_open(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    done = _trial("a", "completed", {"f1": 0.5}, final=True)
    for other, shown in (("frozen", "active"), ("running", "active"), ("failed", "exhausted")):
        peer.info = {
            **_info([done, _trial("b", other, {"f1": 0.7}, final=False)], ["f1"]),
            "max_trials": None,
            "exhausted": "all 2 points of the space are tried",
            "blocked_here": "all 2 points of the space are already tried or pending",
        }
        assert main(["status"]) == 0
        assert capsys.readouterr().out.splitlines()[2].split()[2] == shown
        assert main(["status", "mo"]) == 0
        out = capsys.readouterr().out
        said = "no peer starts a new trial of it: all 2 points" in out
        assert said is (shown == "exhausted")
        assert ("this peer starts no new trial" in out) is (shown != "exhausted")  # said once


def test_a_lost_trial_counts_as_running_only_while_its_experiment_may_run_it_again(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    # A stopped experiment's lost trial is never run again, yet it showed as running for good.
    trials = [_trial(k, s, {"f1": 0.5}, final=False) for k, s in (("a", "running"), ("b", "lost"))]
    for stopped, running in ((False, "2"), (True, "1")):
        peer.info = {**_info(trials, ["f1"]), "stopped": stopped}
        assert main(["status"]) == 0
        row = capsys.readouterr().out.splitlines()[2].split()
        assert row[2] == ("stopped" if stopped else "active") and row[5] == running


def test_no_column_name_repeats_when_a_parameter_and_a_metric_share_a_name(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    # The header read trial,state,node,runner,a,mode,err,acc,mode,step,reason: a CSV reader
    # keyed by name kept one of the two mode columns and lost the other without a word.
    trial = _trial("a", "completed", {"err": 0.25, "mode": 3.0, "trial": 1.0}, final=True)
    trial["params"] = {"a": 0.5, "mode": "fast", "state": 2}
    peer.info = {**_info([trial], ["err"]), "space": dict.fromkeys(trial["params"], "~")}
    assert main(["export", "mo"]) == 0
    text = capsys.readouterr().out
    header = next(csv.reader(io.StringIO(text)))
    assert header == [
        "trial", "state", "node", "runner", "a", "param:mode", "param:state",
        "err", "metric:mode", "metric:trial", "step", "reason",
    ]  # fmt: skip
    row = next(csv.DictReader(io.StringIO(text)))
    assert row["param:mode"] == "fast" and row["metric:mode"] == "3.0"
    assert row["param:state"] == "2" and row["state"] == "completed"
    assert row["metric:trial"] == "1.0" and row["trial"] == "a" * 16
    # The status table: an objective named as a parameter, or as a fixed column.
    peer.info["objectives"], peer.info["directions"] = ["mode", "why"], ["minimize"] * 2
    trial["objectives"] = {"mode": 3.0, "why": 1.0}
    assert main(["status", "mo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    shown = next(line for line in lines if line.startswith("trial")).split()
    assert shown == [
        "trial", "state", "metric:mode", "metric:why", "step", "runner", "a", "param:mode",
        "param:state", "why",
    ]  # fmt: skip


def test_a_text_reported_as_an_objective_is_shown_quoted_not_as_a_number(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    # A trial failed for reporting loss "0.3", and its loss column read 0.3.
    text = _trial("t", "failed", {"loss": "0.3"}, final=False)  # type: ignore[dict-item]
    diverged = _trial("n", "failed", {"loss": "nan"}, final=False)  # type: ignore[dict-item]
    number = _trial("u", "killed", {"loss": 0.3}, final=False)
    peer.info = _info([text, diverged, number], ["loss"])
    assert main(["status", "mo"]) == 0
    lines = capsys.readouterr().out.splitlines()[3:]  # the experiment, the header, its rule
    shown = {line.split()[0][:1]: line.split()[2] for line in lines if line[:1] in "tnu"}
    assert shown == {"t": '"0.3"', "n": "nan", "u": "0.3"}


def test_a_replica_unreadable_past_its_opening_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A table cut short that the opening's scan did not touch: a plyvel traceback.
    import plyvel

    def damaged(args: object) -> int:
        raise plyvel.IOError("IO error: /d/replica/000005.ldb: Invalid argument")

    monkeypatch.setattr("metaopt.cli._read._status", damaged)
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("metaopt: cannot read the replica (IO error") and err.count("\n") == 1


def test_a_stopped_experiments_trials_that_were_to_run_again_count_with_the_killed(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    # They were in no column: "3/3 done 0 running 0 frozen 0 killed 2 failed 0".
    trials = [_trial(t, s, {"f1": 0.5}, final=False) for t, s in (("a", "killed"),
              ("b", "interrupted"), ("c", "lost"), ("d", "running"))]  # fmt: skip
    peer.info = {**_info(trials, ["f1"]), "stopped": True, "trials": 4, "max_trials": 4}
    assert main(["status"]) == 0
    [row] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("mo ")]
    assert row.split()[4:9] == ["0", "1", "0", "3", "0"]  # done, running, frozen, killed, failed


def test_a_long_name_is_elided_in_the_list_so_its_columns_stay_readable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A name of 100,000 characters padded every row to 100,000 columns (7.6 MB of output).
    long = {**_info([], ["loss"]), "name": "sweep-" + "x" * 99_988 + "-lr-v2", "id": "aa" * 32}
    fits = {**_info([], ["loss"]), "name": "n" * 40, "id": "bb" * 32, "latest": False}

    class _Two(_Peer):
        def call(self, op: str, body: object = None) -> object:
            return [long, fits]

    monkeypatch.setattr("metaopt.cli._read._peer", lambda args, read=False, timeout=None: _Two())
    assert main(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) < 150
    assert [line.split()[:2] for line in lines[2:]] == [
        ["sweep-xxxxxxxxxxxxxxxxxxxx…xxxxxxx-lr-v2", "aaaaaaaaaaaa"],
        ["n" * 40, "(earlier)"],
    ]
    assert main(["status", "--json"]) == 0  # whole there
    assert [e["name"] for e in json.loads(capsys.readouterr().out)] == [long["name"], "n" * 40]


def test_logs_of_a_trial_say_how_it_ended_and_why_after_its_output(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    # The reason a trial failed ("... put the number in a group"), cut short in `status NAME`,
    # was in no command's output but --json and export.
    why = "no numeric 'loss' in 0 reports; put the number in a group: loss=([0-9.]+)"
    peer.info = {"here": True, "text": "epoch 1\n", "state": "failed", "reason": why}
    assert main(["logs", "ab" * 6]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == ("epoch 1\n", f"(failed: {why})\n")
    peer.info = {"here": True, "text": "epoch 1\n", "state": "completed", "reason": None}
    assert main(["logs", "ab" * 6]) == 0
    assert capsys.readouterr() == ("epoch 1\n", "(completed)\n")
    peer.info = {"here": True, "text": "epoch 1\n"}  # (a peer of an earlier release)
    assert main(["logs", "ab" * 6]) == 0
    assert capsys.readouterr() == ("epoch 1\n", "")
    # Output without a final newline ran on into the footer on a terminal: "…xxxx(failed…".
    peer.info = {"here": True, "text": "xxxx", "state": "killed", "reason": "timeout"}
    assert main(["logs", "ab" * 6]) == 0
    assert capsys.readouterr() == ("xxxx\n", "(killed: timeout)\n")


def test_logs_name_the_file_a_long_log_moved_its_start_to(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    older = {"older": "/d/trials/t/output.log.1", "older_size": 32 << 20}
    peer.info = {"here": True, "text": "end\n", **older}
    assert main(["logs", "ab" * 6]) == 0
    assert capsys.readouterr() == (
        "end\n",
        "(its latest lines only; earlier output: /d/trials/t/output.log.1 (32.0 MiB))\n",
    )
    peer.info = {"here": True, "text": "end\n", "size": 8 << 20, "path": "/d/o.log", **older}
    assert main(["logs", "ab" * 6]) == 0
    assert capsys.readouterr()[1] == (
        "(its last lines only, of 8.0 MiB, in /d/o.log; earlier output:"
        " /d/trials/t/output.log.1 (32.0 MiB))\n"
    )


@pytest.mark.parametrize(
    ("words", "said"),
    [
        (
            ["status", "--jsn"],
            "metaopt status: unrecognized argument(s) --jsn (did you mean --json?);"
            " see `metaopt status -h`",
        ),
        (
            ["peer", "start", "--slotz", "2"],
            "metaopt peer start: unrecognized argument(s) --slotz 2 (did you mean --slots?);"
            " see `metaopt peer start -h`",
        ),
        (
            ["status", "a", "b"],
            "metaopt status: unrecognized argument(s) b; see `metaopt status -h`",
        ),
        (
            ["status", "sweep", "json"],
            "metaopt status: unrecognized argument(s) json (did you mean --json?);"
            " see `metaopt status -h`",
        ),
        (
            ["peer", "start", "port", "7787"],
            "metaopt peer start: unrecognized argument(s) port 7787 (did you mean --port?);"
            " see `metaopt peer start -h`",
        ),
        (
            ["status", "sweep", "csv"],
            "metaopt status: unrecognized argument(s) csv; see `metaopt status -h`",
        ),
        (
            ["logs"],
            "metaopt logs: the following arguments are required: trial; see `metaopt logs -h`",
        ),
    ],
)
def test_a_mistyped_command_line_is_one_line_naming_the_command(
    words: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse printed the usage of `metaopt` over three lines, then the mistake, naming no
    command (`metaopt status --jsn`), and no option close to the one mistyped."""
    try:
        code = main(words)
    except SystemExit as exited:  # (argparse's own exit, for what it finds missing)
        code = exited.code  # type: ignore[assignment]
    assert code == 2
    assert capsys.readouterr().err == said + "\n"


def test_an_error_quoting_another_peers_name_shows_it_escaped(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """An id prefix that matches two experiments names them in the error: a name another
    peer wrote with a terminal escape and a newline in it cleared the screen and forged a
    line of its own, where tables, logs and every other view escape such text."""
    from crdt import LevelDBStore
    from metaopt._records import ExperimentSpec, experiment_record
    from metaopt.peer._identity import DataDir

    evil = "x\x1b[2J\nmetaopt: forged line"
    by_prefix: dict[str, Any] = {}
    for i in range(100_000):  # two experiments whose ids share their first 4 hex digits
        spec = ExperimentSpec(evil, {"x": "uniform(0, 1)"}, command=("t.py",), nonce=str(i))
        record = experiment_record(spec, time_ms=1000 + i)
        if (prefix := record.key.hex()[:4]) in by_prefix:
            break
        by_prefix[prefix] = record
    dirs = DataDir(tmp_path)
    dirs.ensure()
    dirs.node_id()
    store = LevelDBStore(dirs.replica)
    store.add([by_prefix[prefix], record])
    store.close()
    assert main(["status", prefix, "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "matches 2 experiments" in err and "x\\x1b[2J\\nmetaopt: forged line" in err
    assert "\x1b" not in err and "\nmetaopt: forged" not in err
