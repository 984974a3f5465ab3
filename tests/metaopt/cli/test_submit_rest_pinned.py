"""Pins on `metaopt submit`'s config files, refusals, code bundle, what it sends and prints, and
`--wait`, that the rest of the suite left open (found by a mutation audit of
metaopt/cli/_submit.py)."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from crdt import Record
from metaopt._errors import MetaoptError
from metaopt.cli import main
from metaopt.cli._submit import merge_config
from metaopt.cli._wait import wait_for
from tests.metaopt.cli.test_submit import _build, _FakePeer, _refused, fake_peer  # noqa: F401

PRIOR = "--x~uniform(0, 1)"


def _config(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -- config files -------------------------------------------------------------------------------


def test_a_config_that_is_not_a_mapping_is_a_one_line_refusal(tmp_path: Path) -> None:
    """A config holding a list or a bare string (a YAML file of the command alone, say) must be
    refused as such, not end in an AttributeError traceback."""
    (tmp_path / "t.py").write_text("")
    for name, text in (("c.json", "[1, 2]"), ("c.yaml", "t.py --x~uniform(0, 1)\n")):
        config = _config(tmp_path, name, text)
        message = _refused(tmp_path, "--config", config, "t.py", PRIOR)
        assert message == f"--config {config} must hold a mapping of submit options"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('"maximize": ["acc", 1]', "maximize must be true, false or the objectives to maximize"),
        ('"command": 5', "command must be a string or a list of strings"),
        ('"command": ["t.py", 1]', "command must be a string or a list of strings"),
        # shlex's ValueError was a traceback.
        (
            '"command": "t.py --x~\'uniform(0, 1)"',
            "command: No closing quotation; close its quotes",
        ),
        # Built into a record every peer refused, saying only that it was malformed.
        ('"command": ["t.py", "a\\u0000b"]', "command word 'a\\x00b' holds a NUL character"),
    ],
)
def test_a_config_list_or_command_of_the_wrong_kind_is_refused_not_a_traceback(
    tmp_path: Path, line: str, expected: str
) -> None:
    """A config's maximize list holding a number, or a command that is neither text nor a list
    of texts, is the file's mistake: one line naming the key, not a TypeError from join/list."""
    (tmp_path / "t.py").write_text("")
    config = _config(tmp_path, "c.json", "{" + line + "}")
    assert _refused(tmp_path, "--config", config) == f"--config {config}: {expected}"


def test_a_program_on_the_command_line_replaces_the_configs_command(tmp_path: Path) -> None:
    """README: "a program there replaces the file's `command:`": a shared config with a default
    command must not run instead of the program typed now."""
    (tmp_path / "t.py").write_text("")
    (tmp_path / "other.py").write_text("")
    config = _config(
        tmp_path, "c.json", json.dumps({"command": "other.py --y~'uniform(0, 1)'", "name": "n"})
    )
    body = _build(tmp_path, "--config", config, "t.py", PRIOR)
    assert body["command"] == ["t.py", PRIOR] and body["name"] == "n"
    assert _build(tmp_path, "--config", config)["command"] == ["other.py", "--y~uniform(0, 1)"]


def test_a_merged_config_is_applied_once(tmp_path: Path) -> None:
    """merge_config drops the --config it applied, so merging again reads no file."""
    config = _config(tmp_path, "c.json", '{"max_trials": 3}')
    merged = merge_config({"config": config, "name": "a"})
    assert merged == {"max_trials": 3, "name": "a"}
    os.unlink(config)
    assert merge_config(merged) == merged


def test_an_empty_config_is_refused_not_ignored(tmp_path: Path) -> None:
    """`--config "$CFG"` with CFG unset ran without the file's options (its budget, say), as
    `--name ""` once fell back to the script's name: an empty --config must be refused."""
    (tmp_path / "t.py").write_text("")
    for given in (["--config", ""], ["--config="]):
        assert "--config" in _refused(tmp_path, *given, "t.py", PRIOR)


# -- numbers, durations, choices ----------------------------------------------------------------


def test_a_max_step_below_one_is_refused(tmp_path: Path) -> None:
    """--max-step is the step a finished trial reaches: 0 or a negative step would make every
    trial "at its budget" to the early stoppers, so it is refused like --max-trials 0."""
    (tmp_path / "t.py").write_text("")
    for bad in ("0", "-3"):
        message = _refused(tmp_path, f"--max-step={bad}", "t.py", PRIOR)
        assert message == "--max-step must be between 1 and 2**53"
    assert _build(tmp_path, "--max-step", "1", "t.py", PRIOR)["max_step"] == 1


def test_a_trial_timeout_takes_seconds_as_s_and_units_in_any_case(tmp_path: Path) -> None:
    """README: "seconds, or with a unit s, m, h, d": 30s is 30 seconds, and 2H / 90M read as
    2h / 90m; the upper bound 2**53 s is inclusive as --max-trials' is."""
    (tmp_path / "t.py").write_text("")
    for given, seconds in (("30s", 30), ("2H", 7200), ("90M", 5400), (str(2**53), 2**53)):
        body = _build(tmp_path, "--trial-timeout", given, "t.py", PRIOR)
        assert body["options"] == {"trial_timeout": seconds}, given


def test_the_algorithm_and_early_stopping_given_are_what_the_spec_carries(tmp_path: Path) -> None:
    """The peers search and stop as the spec says: --algorithm and --early-stopping must reach
    it (default auto, and no early stopping named), and a value not among the choices is a
    one-line refusal naming them."""
    (tmp_path / "t.py").write_text("")
    body = _build(tmp_path, "--algorithm", "evolution", "--early-stopping", "asha", "t.py", PRIOR)
    assert (body["algorithm"], body["early_stopping"]) == ("evolution", "asha")
    body = _build(tmp_path, "t.py", PRIOR)
    assert (body["algorithm"], body["early_stopping"]) == ("auto", None)
    # Every algorithm a Study takes (sobol, the space-filling start alone, was not offered).
    body = _build(tmp_path, "--algorithm", "sobol", "t.py", PRIOR)
    assert body["algorithm"] == "sobol"
    assert _refused(tmp_path, "--algorithm", "bayes", "t.py", PRIOR) == (
        "--algorithm 'bayes': choose one of auto, gp, evolution, random, sobol"
    )
    assert _refused(tmp_path, "--early-stopping", "never", "t.py", PRIOR) == (
        "--early-stopping 'never': choose one of freeze-thaw, asha, median, none"
    )


# -- what there is to run -----------------------------------------------------------------------


def test_nothing_to_search_is_refused_saying_what_is_missing(tmp_path: Path) -> None:
    """No program, no ~prior, or only a fidelity prior: three different mistakes, each told
    apart in one line (not an IndexError, nor the wrong advice)."""
    (tmp_path / "t.py").write_text("")
    assert _refused(tmp_path).startswith("nothing to run: metaopt submit train.py")
    assert _refused(tmp_path, "--max-trials", "3").startswith("nothing to run")
    assert _refused(tmp_path, "t.py", "--lr", "0.1").startswith("no parameter to search: mark")
    assert _refused(tmp_path, "t.py", "--epochs~fidelity(1, 10)") == (
        "no parameter to search besides the fidelity; add one, e.g. --lr~..."
    )


def test_a_missing_script_and_a_program_named_like_an_option_are_told_apart(
    tmp_path: Path,
) -> None:
    """A .py that is not there is "no such script" (the peers' Python would fail every trial);
    a program word not starting with -- is never taken for a misspelt submit option."""
    assert _refused(tmp_path, "nope.py", PRIOR) == (
        f"nope.py: no such script in {tmp_path}; check the path"
    )
    message = _refused(tmp_path, "max-trials", PRIOR)
    assert "nor a command on PATH" in message and "did you mean" not in message


def test_an_interpreters_missing_script_is_refused_and_its_options_are_not_scripts(
    tmp_path: Path,
) -> None:
    """`-- python3 nosuch.py` was submitted, and every trial failed on "can't open file"; with
    `--data t.py` after it, t.py was taken for the script to send."""
    (tmp_path / "t.py").write_text("")
    for words in (
        ["python3", "nosuch.py"],
        ["bash", "run.sh"],
        ["python3", "nosuch.py", "--data", "t.py"],
    ):
        assert _refused(tmp_path, "--", *words, PRIOR) == (
            f"{words[1]}: no such script in {tmp_path}; check the path"
        )
    # Not a script: a module, a command, an option's value, a word of the program's own.
    for words in (
        ["python3", "-m", "json.tool"],
        ["bash", "-c", "./t.py"],
        ["python3", "t.py", "x.py"],
        ["bash", "-lc", "python3 nosuch.py", "sh"],  # (refused: -lc is -l and -c)
        ["sh", "-euxc", "./nosuch.sh"],
        ["python3", "-uc", "import x; print('a.py')"],
    ):
        assert "command" in _build(tmp_path, "--", *words, PRIOR)


def test_a_module_after_a_cluster_of_short_options_sends_the_folder_it_is_run_from(
    tmp_path: Path,
) -> None:
    """`python3 -um train ../shared/cfg.py` sent cfg.py's folder (taken for the script), and
    every trial failed on "No module named train"; `-Xfrozen_modules=off` is no cluster."""
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "train.py").write_text("")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "cfg.py").write_text("")
    for words in (["-um", "train"], ["-u", "-m", "train"]):
        body = _build(tmp_path / "proj", "--", "python3", *words, "../shared/cfg.py", PRIOR)
        assert body["bundle"]["root"] == str((tmp_path / "proj").resolve())  # type: ignore[index]
    body = _build(tmp_path / "proj", "--", "python3", "-mtrain", "../shared/cfg.py", PRIOR)
    assert body["bundle"]["root"] == str((tmp_path / "proj").resolve())  # type: ignore[index]
    # An option's value holding an m or a c is no module to run (perl -Mstrict named the
    # experiment "perl" and sent the wrong folder).
    for option in ("-Xfrozen_modules=off", "-Wonce", "-Ximporttime", "-Mstrict", "-rcsv"):
        body = _build(tmp_path / "proj", "--", "python3", option, "train.py", PRIOR)
        assert body["command"][:3] == ["python3", option, "train.py"], option  # type: ignore[index]
        assert body["name"] == "train", option


def test_a_compiled_executable_without_a_shebang_is_accepted(tmp_path: Path) -> None:
    """An ELF binary has no #! line and exec starts it: only scripts without one are refused."""
    real = shutil.which("true")
    assert real is not None
    shutil.copy(real, tmp_path / "mytrue")
    (tmp_path / "mytrue").chmod(0o755)
    assert _build(tmp_path, "--", "./mytrue", PRIOR)["command"] == ["./mytrue", PRIOR]


def test_a_script_with_windows_line_endings_is_refused_and_one_without_is_not(
    tmp_path: Path,
) -> None:
    """Its #! line ending in \\r, the kernel looked for "/bin/sh\\r": every trial failed "No such
    file or directory", the script being right there (a user walkthrough)."""
    for name, text in (("crlf.sh", b"#!/bin/sh\r\necho\r\n"), ("lf.sh", b"#!/bin/sh\necho\r\n")):
        (tmp_path / name).write_bytes(text)
        (tmp_path / name).chmod(0o755)
    message = _refused(tmp_path, "--", "./crlf.sh", PRIOR)
    assert message.startswith("./crlf.sh has Windows line endings (its #! line ends in \\r)")
    assert _build(tmp_path, "--", "./lf.sh", PRIOR)["command"] == ["./lf.sh", PRIOR]


# -- the code sent -------------------------------------------------------------------------------


def test_max_bundle_mb_is_a_bound_in_mebibytes(tmp_path: Path) -> None:
    """--max-bundle-mb 1 refuses a 2 MiB folder and 3 takes it: the bound the user gives is
    the one applied, in MiB."""
    (tmp_path / "t.py").write_text("")
    (tmp_path / "w.bin").write_bytes(b"\0" * (2 << 20))
    message = _refused(tmp_path, "--max-bundle-mb", "1", "t.py", PRIOR)
    assert "over the 1.0 MiB" in message
    body = _build(tmp_path, "--max-bundle-mb", "3", "t.py", PRIOR)
    assert "manifest" in body["bundle"]  # type: ignore[operator]


def test_a_script_given_by_its_absolute_path_runs_from_the_bundle(tmp_path: Path) -> None:
    """`-- python3 /home/me/proj/t.py`: the command names the script inside the copy each trial
    runs in, not this machine's path (which another machine lacks, or holds other code at)."""
    (tmp_path / "t.py").write_text("")
    body = _build(tmp_path, "--", "python3", str(tmp_path / "t.py"), PRIOR)
    assert body["command"] == ["python3", "t.py", PRIOR]
    assert body["bundle"]["root"] == str(tmp_path.resolve())  # type: ignore[index]


def test_no_bundle_names_the_folder_with_its_links_resolved(tmp_path: Path) -> None:
    """--no-bundle runs trials in the folder submitted from, named without links, as the peers
    resolve a bundle's root."""
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "t.py").write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    body = _build(tmp_path / "link", "--no-bundle", "t.py", PRIOR)
    assert body["bundle"] == {"shared_dir": str((tmp_path / "real").resolve())}


@pytest.mark.parametrize(
    ("part", "said"),
    [
        (
            "space",
            "the space takes 2,880,036 bytes (each prior as written and as read)",
        ),  # with --no-bundle: crdt's "split it into smaller records"
        ("command", "the command is 1,200,0"),  # it blamed the folder's 1 file
        ("tilde", "the command is 1,350,008 bytes"),  # ~/ paths were counted as priors
        ("files", "holds 40001 files, more than one experiment record (1 MiB) can list"),
    ],
)
def test_an_oversized_experiment_names_its_largest_part(
    tmp_path: Path, part: str, said: str
) -> None:
    """An experiment too large for a record says which part to shrink, in one line."""
    (tmp_path / "t.py").write_text("")
    words = ["t.py", PRIOR]
    if part == "space":
        words = [
            "--no-bundle",
            "t.py",
            "--c~choices(" + repr([f"v{i:07d}" for i in range(120_000)]) + ")",
        ]
    elif part == "command":
        words = ["t.py", PRIOR, *(["x" * 120_000] * 10)]
    elif part == "tilde":
        words = ["t.py", PRIOR, *(f"--in=~/data/file{i:06d}.csv" for i in range(50_000))]
    else:
        (tmp_path / "data").mkdir()
        for i in range(40_000):
            (tmp_path / "data" / f"f{i:05d}-{'n' * 20}").touch()
    message = _refused(tmp_path, *words)
    assert said in message and "\n" not in message


# -- what submit sends and prints -----------------------------------------------------------------


def test_the_code_is_sent_in_requests_of_at_most_8_mib_before_the_experiment(
    fake_peer: type[_FakePeer],  # noqa: F811
    tmp_path: Path,
) -> None:
    """A large folder goes in several api.add calls of at most 8 MiB each (one huge request
    timed out), and the experiment record last, alone: no peer may see an experiment whose
    code is not stored yet."""
    (tmp_path / "w.bin").write_bytes(os.urandom(12 << 20))
    fake_peer.added = []
    assert main(["submit", "--max-bundle-mb", "20", "train.py", PRIOR]) == 0
    *blobs, last = fake_peer.added
    assert len(blobs) >= 2 and all(sum(map(len, b)) <= 8 << 20 for b in blobs)
    assert len(last) == 1 and Record.decode(last[0]).body["name"] == "train"
    assert all(Record.decode(d).seq >= 2 for b in blobs for d in b)


def test_submit_json_prints_only_the_full_id_and_name_and_wait_follows_that_id_on_stderr(
    fake_peer: type[_FakePeer],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--json's stdout is one JSON line a script can parse, with the whole id; --wait then
    follows that experiment by id (a later namesake may take the name) and draws its progress on
    stderr so stdout stays parseable."""
    import sys

    followed: list[tuple[Any, ...]] = []

    def follow(*args: Any, **kwargs: Any) -> int:
        followed.append((args[1], kwargs["out"]))
        return 0

    monkeypatch.setattr("metaopt.cli._submit.wait_for", follow)
    assert main(["submit", "--json", "--max-trials", "2", "train.py", PRIOR]) == 0
    line = capsys.readouterr().out
    said = json.loads(line)
    assert line.count("\n") == 1 and set(said) == {"id", "name"} and said["name"] == "train"
    assert len(said["id"]) == 64 and not followed
    assert main(["submit", "--json", "--wait", "--max-trials", "2", "train.py", PRIOR]) == 0
    said = json.loads(capsys.readouterr().out)
    assert followed == [(said["id"], sys.stderr)]
    assert main(["submit", "--wait", "--max-trials", "2", "train.py", PRIOR]) == 0
    assert followed[-1][1] is None  # (stdout, without --json)


def test_ctrl_c_during_submit_wait_says_the_experiment_runs_on_and_how_to_stop_it(
    fake_peer: type[_FakePeer],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It exited 130 without a word, the experiment running on out of sight (a review of
    signals)."""

    def interrupted(*args: Any, **kwargs: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("metaopt.cli._submit.wait_for", interrupted)
    assert main(["submit", "--wait", "--max-trials", "2", "train.py", PRIOR]) == 130
    short = Record.decode(fake_peer.added[-1][0]).key.hex()[:12]  # (the experiment, last)
    # By id: a later submission may have taken the name while it followed this one.
    assert capsys.readouterr().err.endswith(
        f"\nstopped following train ({short}); it runs on: `metaopt status {short}` follows"
        f" it, `metaopt stop {short}` stops it\n"
    )


def test_a_peer_that_does_not_say_latest_is_taken_to_mean_the_name_is_this_ones(
    fake_peer: type[_FakePeer],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A peer of an earlier release lists experiments without "latest": the name then means the
    one just submitted (as it did then), so submit prints the name, not an id."""

    class _Old(_FakePeer):
        def call(self, op: str, body: object = None) -> object:
            if op == "api.add" and isinstance(body, list) and len(body) == 1:
                mine = Record.decode(body[0]).key.hex()
                _Old.known = [{"id": "ab" * 32, "name": "train"}, {"id": mine, "name": "train"}]
            return super().call(op, body)

    fake_peer.known = [{"id": "ab" * 32, "name": "train"}]
    monkeypatch.setattr("metaopt.cli._submit.LocalPeer", _Old)
    assert main(["submit", "--max-trials", "1", "train.py", PRIOR]) == 0
    out, err = capsys.readouterr()
    assert "follow it with: metaopt status train\n" in out
    assert "note: the name 'train' now means this experiment" in err


# -- --wait --------------------------------------------------------------------------------------


def _info(trial_list: list[dict[str, Any]], **over: Any) -> dict[str, Any]:
    base = {
        "id": "70" * 32, "name": "p", "counts": {}, "thawed": 0, "best": [], "max_trials": 2,
        "trials": 2, "finished": False, "objectives": ["loss"], "trial_list": trial_list,
    }  # fmt: skip
    return {**base, **over}


class _Polled:
    """A peer answering api.experiment with each poll in turn (the last one for good)."""

    def __init__(self, polls: list[dict[str, Any]]) -> None:
        self.polls = polls
        self.asked: list[object] = []

    def call(self, op: str, body: object = None) -> object:
        if op == "api.experiments":
            return [{"id": self.polls[0]["id"], "name": self.polls[0]["name"], "latest": True}]
        self.asked.append(body)
        return self.polls.pop(0) if len(self.polls) > 1 else self.polls[0]


_BY_HAND = {"state": "frozen", "reason": "frozen by the user", "id": "ab" * 32, "runner": "n" * 8}


def test_wait_gives_no_thaw_hint_while_a_trial_still_runs_or_a_policy_froze_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The "frozen by hand keep it open" hint is for a spent budget held open by those trials
    alone: a trial still running, or one the early stopper froze (it may thaw it), also keeps
    it open, and the hint would send the user to thaw or stop for nothing."""
    for other in ({"state": "running", "reason": None}, {"state": "frozen", "reason": "rung 3"}):
        polls = [_info([other, _BY_HAND]), _info([], finished=True)]
        wait_for(_Polled(polls), "p", interval=0.0)  # type: ignore[arg-type]
        assert "frozen by hand keep it open" not in capsys.readouterr().out, other


def test_wait_goes_on_while_a_trial_runs_in_an_exhausted_space(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every point tried but a trial still running: its result is still to come, so --wait
    follows it to the end instead of giving up after `patience` polls."""
    running = {"state": "running", "reason": None}
    why = "all 2 points of the space are tried"
    polls = [_info([running], exhausted=why) for _ in range(4)]
    polls.append(_info([], finished=True, best=[{"value": 0.5, "params": {"x": 1}}]))
    peer = _Polled(polls)
    assert wait_for(peer, "p", interval=0.0, patience=2) == 0  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "nothing runs" not in out and out.rstrip().endswith('best 0.5 with {"x": 1}')
    assert len(peer.polls) == 1  # every poll read, down to the finished one


def test_wait_asks_only_for_the_trials_not_ended(capsys: pytest.CaptureFixture[str]) -> None:
    """Each second's poll asks for the open trials only: the whole list of a long experiment,
    every second, was most of a peer's work."""
    peer = _Polled([_info([], finished=True)])
    wait_for(peer, "p", interval=0.0)  # type: ignore[arg-type]
    assert peer.asked == [{"experiment": "p", "trials": "open"}]


def test_wait_whose_peer_fails_at_the_first_poll_says_the_peers_own_error() -> None:
    """Before any poll answered there is no experiment to say goes on elsewhere: the peer's
    error must come out as it is (not a TypeError on the missing info)."""

    class _Gone:
        def call(self, op: str, body: object = None) -> object:
            raise MetaoptError("no peer runs on /d; start one with: metaopt peer start")

    with pytest.raises(MetaoptError, match=r"^no peer runs on /d; start one with"):
        wait_for(_Gone(), "p", interval=0.0)  # type: ignore[arg-type]


def test_wait_names_its_experiment_by_name_when_the_peer_does_not_say_latest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A peer of an earlier release lists no "latest": the name still finds the experiment, so
    the printed command uses it, not an id."""

    class _Old(_Polled):
        def call(self, op: str, body: object = None) -> object:
            if op == "api.experiments":
                return [{"id": "70" * 32, "name": "p"}]
            return super().call(op, body)

    assert wait_for(_Old([_info([], finished=True)]), "p", interval=0.0) == 1  # type: ignore[arg-type]
    assert "p: no trial completed; `metaopt status p` says why" in capsys.readouterr().out


def test_wait_with_json_writes_nothing_to_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With out=stderr (as --json gives it) every line of --wait's goes there."""
    import sys

    peer = _Polled([_info([], finished=True, best=[{"value": 1, "params": {"x": 2}}])])
    assert wait_for(peer, "p", interval=0.0, out=sys.stderr) == 0  # type: ignore[arg-type]
    out, err = capsys.readouterr()
    assert out == "" and 'best 1 with {"x": 2}' in err


def test_wait_progress_is_written_on_each_change_to_a_non_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Off a terminal (a log file) each new state is a line of its own, an unchanged one not
    repeated."""
    polls = [_info([], counts={"running": 1}, trials=1), _info([], counts={"running": 1}, trials=1),
             _info([], counts={"completed": 2}, finished=True)]  # fmt: skip
    out = io.StringIO()
    wait_for(_Polled(polls), "p", interval=0.0, out=out)  # type: ignore[arg-type]
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("p: ") and "1/2 trials" in lines[0]
    assert "2/2 trials" in lines[1] and "no trial completed" in lines[2]
