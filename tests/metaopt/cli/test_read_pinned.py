"""What `metaopt status`, `best`, `logs`, `freeze|thaw|kill` and `clean` print, pinned where a
mutation audit of cli/_read found it unpinned (the stand-in peer of test_read answers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaopt.cli import main
from metaopt.cli._read import _size, _why
from tests.metaopt.cli.test_read import _info, _Peer, _trial


@pytest.fixture
def peer(monkeypatch: pytest.MonkeyPatch) -> type[_Peer]:
    """test_read's stand-in peer, answering its ``info`` to every command of cli/_read."""
    monkeypatch.setattr("metaopt.cli._read._peer", lambda args, read=False, timeout=None: _Peer())
    return _Peer


def _list_row(capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["status"]) == 0
    [row] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("mo ")]
    return row.split()


def test_an_unlimited_budget_shows_as_infinity_in_the_list_and_the_header(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    """An experiment without --max-trials runs until stopped: "2/∞", not "2/None"."""
    trials = [_trial(t, "running", {"f1": 0.5}, final=False) for t in "ab"]
    peer.info = {**_info(trials, ["f1"]), "max_trials": None}
    assert _list_row(capsys)[3] == "2/∞"
    assert main(["status", "mo"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("mo (eeeeeeeeeeee): 2/∞ trials (")


def test_a_stopped_experiment_is_listed_stopped_once_nothing_runs_not_finished(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    """The peer says finished for a stopped experiment with nothing running too: the list must
    still say `metaopt stop` ended it, not that its budget ran out."""
    trials = [_trial("a", "completed", {"f1": 0.5}, final=True)]
    peer.info = {**_info(trials, ["f1"]), "stopped": True, "finished": True}
    assert _list_row(capsys)[2] == "stopped"
    peer.info = {**_info(trials, ["f1"]), "stopped": False, "finished": True}
    assert _list_row(capsys)[2] == "finished"


def test_the_experiment_header_counts_states_in_name_order_and_says_how_many_thawed(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    """The counts come in the order the trials were folded: the header sorts them, so two
    peers (and two runs of a script reading it) print the same line."""
    peer.info = {**_info([], ["f1"]), "trials": 4, "max_trials": 9, "thawed": 0,
                 "counts": {"running": 1, "failed": 2, "completed": 1}}  # fmt: skip
    assert main(["status", "mo"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "mo (eeeeeeeeeeee): 4/9 trials (1 completed, 2 failed, 1 running); minimize f1"
    peer.info["thawed"] = 2
    assert main(["status", "mo"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "(1 completed, 2 failed, 1 running; 2 thawed at least once)" in first


def test_a_reason_of_sixty_characters_is_shown_whole() -> None:
    """60 characters fit the why column: the reason is not rewritten to its stderr's end."""
    reason = "exited with code 1; last stderr: " + "E" * 27
    assert len(reason) == 60
    assert _why({"state": "failed", "reason": reason}) == reason


def test_a_long_reason_without_stderr_is_cut_with_an_ellipsis() -> None:
    """A cut reason says it was cut (the whole of it is in --json, export and logs)."""
    reason = "crashed when asked to stop (its peer was stopped): " + "x" * 40
    shown = _why({"state": "killed", "reason": reason})
    assert shown == reason[:57] + "..."


def test_the_stderr_end_is_shown_while_twenty_columns_are_left_for_it() -> None:
    """With exactly 20 columns left after the account, the stderr's end still shows there (the
    error's name is what the user needs), cut to those 20 columns."""
    account = "code 137 (the kernel's OOM killer ran)"
    stderr = "ValueError: the learning rate must be positive"
    shown = _why({"state": "failed", "reason": f"exited with {account}; last stderr: {stderr}"})
    assert len(f"{account}: ") == 40
    assert shown == f"{account}: ..." + stderr[-17:]
    assert len(shown) == 60


@pytest.mark.parametrize(
    "problem", ["METAOPT line is not JSON: '{loss: 0.1}'", "a line of 70,000 bytes " + "x" * 60]
)
def test_the_last_problem_of_a_run_that_reported_no_objective_is_shown(problem: str) -> None:
    """The cause is at the end of the reason: cut at 60, the column showed only its counts
    (bad JSON, a value not a number, METAOPT on stderr, ...; a user walkthrough)."""
    counts = "no objective reported: no numeric 'loss' in 0 reports; 1 stdout lines"
    reason = f"{counts}; last problem: {problem}"
    shown = _why({"state": "failed", "reason": reason})
    assert len(shown) <= 60 and shown.startswith("no objective reported: ")
    assert shown.endswith(problem[-20:])


def test_a_text_reported_as_an_objective_that_is_no_number_is_shown_quoted(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    """A report of the text "oops" failed the trial: shown quoted, as a text, not as a value."""
    text = _trial("t", "failed", {"loss": "oops"}, final=False)  # type: ignore[dict-item]
    peer.info = _info([text], ["loss"])
    assert main(["status", "mo"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("t" * 12))
    assert row.split()[2] == '"oops"'


def test_status_and_best_name_the_node_that_ran_a_trial_not_the_one_that_recorded_it(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    """A trial recorded by one peer and run by another: `status`, `best` and the front say where
    it ran, which is where `metaopt logs` and its checkpoints are."""
    done = {**_trial("a", "completed", {"f1": 0.25, "f2": 1.0}, final=True), "runner": "cd" * 16}
    peer.info = _info([done], ["f1"])
    done["objectives"] = {"f1": 0.25}
    assert main(["status", "mo"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("a" * 12))
    assert "cdcdcdcd" in row.split() and "abababab" not in row
    assert main(["best", "mo"]) == 0
    assert "on node cdcdcdcd " in capsys.readouterr().out
    done["objectives"] = {"f1": 0.25, "f2": 1.0}
    peer.info = _info([done], ["f1", "f2"])
    assert main(["best", "mo"]) == 0
    assert capsys.readouterr().out.splitlines()[3].split()[3] == "cdcdcdcd"


@pytest.mark.parametrize(
    ("verb", "answer", "said"),
    [
        ("freeze", "ab" * 32, "trial abababababab: freezing\n"),
        ("kill", {"id": "ab" * 32, "stopping": True}, "trial abababababab: stopping it\n"),
        ("kill", {"id": "ab" * 32, "stopping": False}, "trial abababababab: killed\n"),
        ("thaw", {"id": "ab" * 32, "from_step_0": False}, "trial abababababab: thawed\n"),
        (
            "thaw",
            {"id": "ab" * 32, "from_step_0": True},
            "trial abababababab: its peer is gone; running here again from step 0\n",
        ),
        (
            "thaw",
            {"id": "ab" * 32, "from_step_0": True, "queued": True},
            "trial abababababab: no slot is free on this peer; it resumes in the next one that"
            " frees, before any new trial, while this peer runs; from step 0, its peer is gone"
            " (`metaopt freeze TRIAL` frees one)\n",
        ),
    ],
)
def test_freeze_thaw_and_kill_say_what_the_peer_did(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str], verb: str, answer: object, said: str
) -> None:
    """A kill of a running trial is only under way (its run still has to stop), one of a frozen
    trial is done; a thaw taken over from a gone peer starts again from step 0: each says so."""
    peer.info = answer  # type: ignore[assignment]
    assert main([verb, "abab"]) == 0
    assert capsys.readouterr().out == said


def test_logs_of_a_trial_that_wrote_nothing_print_no_blank_line(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty log is no output, then the verdict: a blank line read as a line of output."""
    peer.info = {"here": True, "text": "", "state": "running", "reason": None}
    assert main(["logs", "ab" * 6]) == 0
    assert capsys.readouterr() == ("", "(running)\n")


def test_logs_of_a_trial_no_peer_has_started_is_one_line_exit_2(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    """A pending trial has run nowhere: no "ran on node None", but a one-line error."""
    peer.info = {"here": False, "runner": None, "address": None, "state": "pending"}
    assert main(["logs", "abab"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "metaopt: trial abab has not started on any peer yet\n"


def test_logs_sent_elsewhere_say_this_peer_holds_another_attempt(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    """The output this peer holds is not the run that counts: said, with where it is."""
    peer.info = {"here": False, "runner": "cd" * 16, "address": "127.0.0.1:7788",
                 "earlier": "/d/trials/ab/log", "state": "completed", "reason": None}  # fmt: skip
    assert main(["logs", "abab"]) == 0
    assert capsys.readouterr().out == (
        "trial abab ran on node cdcdcdcdcdcd at 127.0.0.1:7788; run `metaopt logs` there (this"
        " peer holds another attempt's output, not the counted one: /d/trials/ab/log)\n"
        "completed\n"
    )


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (1023, "1023 bytes"),
        (1024, "1.0 KiB"),
        (1536 * 1024, "1.5 MiB"),
        (3 * 1024**3, "3.0 GiB"),
        (2 * 1024**4, "2048.0 GiB"),
        (1024**2 - 1, "1.0 MiB"),  # rounds to 1024.0 KiB: shown in the next unit
        (1024**3 - 1, "1.0 GiB"),
        (1024**2 - 52, "1023.9 KiB"),
    ],
)
def test_sizes_are_in_binary_units_up_to_gib(size: int, shown: str) -> None:
    """What clean freed and how big a log is: 1024 bytes is 1.0 KiB; past GiB it stays GiB; a
    figure that would show as 1024.0 is shown in the next unit."""
    assert _size(size) == shown


def _clean_answer(**fields: object) -> dict[str, object]:
    return {"trials": 0, "bundles": 0, "kept": [], "freed": 0, "failed": [], "failures": 0,
            **fields}  # fmt: skip


def test_clean_counts_in_words_and_names_up_to_ten_kept_trials(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    """Plurals, code bundles only when some were freed, and the kept trials named while they
    fit on a line (ten), only counted beyond."""
    peer.info = _clean_answer(trials=0, freed=100)
    assert main(["clean"]) == 0
    assert capsys.readouterr().out == "freed 100 bytes: the folders of 0 ended trials\n"
    peer.info = _clean_answer(trials=2, bundles=1, freed=2048, kept=["ab" * 32])
    assert main(["clean", "--dry-run"]) == 0
    assert capsys.readouterr().out == (
        "would free 2.0 KiB: the folders of 2 ended trials, 1 code bundle no trial needs now\n"
        "kept the folders of the best trial: abababababab\n"
    )
    ten = [f"{i:02d}" * 32 for i in range(10)]
    peer.info = _clean_answer(trials=1, kept=ten)
    assert main(["clean"]) == 0
    kept = capsys.readouterr().out.splitlines()[1]
    assert kept.startswith("kept the folders of the 10 best trials: 000000000000, ")
    peer.info = _clean_answer(trials=1, kept=[*ten, "ff" * 32])
    assert main(["clean"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "kept the folders of the 11 best trials"


def test_clean_keeps_zero_trials_when_asked_and_refuses_fewer(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    """--keep 0 deletes every ended trial's folder (a user freeing the disk); -1 is refused."""
    peer.info = _clean_answer(trials=3)
    assert main(["clean", "--keep", "0"]) == 0
    assert main(["clean", "--keep", "-1"]) == 2
    assert "--keep -1: keep between 0 and 2**31 trials" in capsys.readouterr().err


def test_clean_says_more_were_not_shown_only_when_some_were_not(
    peer: type[_Peer], capsys: pytest.CaptureFixture[str]
) -> None:
    """Every failure listed: no "(0 more not shown)"."""
    peer.info = _clean_answer(failed=["/d/x: Permission denied"], failures=1)
    assert main(["clean"]) == 1
    assert capsys.readouterr().err == (
        "could not delete /d/x: Permission denied\n"
        "1 path could not be deleted; fix their permissions and run clean again\n"
    )


def test_clean_gives_a_live_peer_as_long_as_its_disk_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The peer answers a clean once it has deleted it all: past the 30 s of every other
    call (a hundred gigabytes of checkpoints), `metaopt clean` said the peer was hung."""
    from metaopt.cli import _read
    from metaopt.peer._identity import DataDir

    asked: list[float | None] = []

    class _Recorder:
        def __init__(self, data_dir: Path, timeout: float | None = None) -> None:
            asked.append(timeout)

        def call(self, op: str, body: object) -> object:
            return {"trials": 0, "bundles": 0, "freed": 0, "kept": []}

    dirs = DataDir(tmp_path)
    dirs.ensure()
    dirs.address_file.write_text("127.0.0.1:1\n")  # (a live peer, as far as the CLI tells)
    monkeypatch.setattr(_read, "LocalPeer", _Recorder)
    assert main(["clean", "--data-dir", str(tmp_path)]) == 0
    assert asked == [_read._CLEAN_TIMEOUT] and _read._CLEAN_TIMEOUT >= 600
