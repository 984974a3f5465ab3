"""`metaopt submit` and `metaopt peer start` input checks and messages, without a peer."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import pytest

from crdt import MAX_RECORD_SIZE
from metaopt._errors import MetaoptError
from metaopt.cli import main
from metaopt.cli._submit import build_submission, merge_config, split_submit_args


def _build(cwd: Path, *words: str) -> dict[str, object]:
    options, template = split_submit_args(list(words))
    record, _ = build_submission(merge_config(options), template, cwd)
    body: dict[str, object] = record.body
    return body


def _refused(cwd: Path, *words: str) -> str:
    with pytest.raises(MetaoptError) as info:
        _build(cwd, *words)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_submission_carries_its_submit_time(tmp_path: Path) -> None:
    # A name finds the latest submission of that name by its record's time; at 0 for every
    # submission the older run was found about one time in three (by key order).
    (tmp_path / "train.py").write_text("print(1)\n")
    options, template = split_submit_args(["train.py", "--x~uniform(0, 1)"])
    before = int(time.time() * 1000)
    record, _ = build_submission(merge_config(options), template, tmp_path)
    assert before <= record.time <= int(time.time() * 1000)


def test_a_bundled_program_keeps_its_dot_slash(tmp_path: Path) -> None:
    # "train" alone is looked up on PATH by exec: every trial failed with "No such file".
    program = tmp_path / "train"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "run").write_text("#!/bin/sh\n")
    (tmp_path / "sub" / "run").chmod(0o755)
    assert _build(tmp_path, "--", "./train", "--x~uniform(0, 1)")["command"][0] == "./train"  # type: ignore[index]
    assert _build(tmp_path, "--", "train", "--x~uniform(0, 1)")["command"][0] == "./train"  # type: ignore[index]
    assert _build(tmp_path, "sub/run", "--x~uniform(0, 1)")["command"][0] == "./run"  # type: ignore[index]
    shared = _build(tmp_path, "--no-bundle", "--", "train", "--x~uniform(0, 1)")
    assert shared["command"][0] == "./train"  # type: ignore[index]
    (tmp_path / "t.py").write_text("")
    assert _build(tmp_path, "t.py", "--x~uniform(0, 1)")["command"][0] == "t.py"  # type: ignore[index]
    assert _build(tmp_path, "--", "sh", "t.py", "--x~uniform(0, 1)")["command"][0] == "sh"  # type: ignore[index]


def test_an_interpreter_named_by_its_path_runs_the_script_sent_from_its_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `-- /opt/conda/envs/torch/bin/python train.py` (as the README has it) sent the
    # interpreter's folder and ran ./python there: every trial failed with "can't open file
    # train.py"; a venv's python (a link out of its folder) was refused.
    interpreter = tmp_path / "envs" / "torch" / "bin" / "python"
    interpreter.parent.mkdir(parents=True)
    interpreter.write_text("#!/bin/sh\n")
    interpreter.chmod(0o755)
    project, other = tmp_path / "project", tmp_path / "w5"
    (project / ".venv" / "bin").mkdir(parents=True)
    other.mkdir()
    (project / "train.py").write_text("print(1)\n")
    (other / "p.py").write_text("print(2)\n")
    venv_python = project / ".venv" / "bin" / "python"
    venv_python.symlink_to(sys.executable)

    def sent(*words: str) -> tuple[list[str], str, list[str]]:
        body = _build(project, "--", *words, "--x~uniform(0, 1)")
        bundle: dict[str, object] = body["bundle"]  # type: ignore[assignment]
        files = [f[0] for f in bundle["manifest"]["files"]]  # type: ignore[index]
        return list(body["command"])[:-1], str(bundle["root"]), files  # type: ignore[call-overload]

    command, root, files = sent(str(interpreter), "train.py")
    assert command == [str(interpreter), "train.py"]
    assert (root, files) == (str(project.resolve()), ["train.py"])
    assert f"every peer runs {interpreter}" in capsys.readouterr().err
    # A project's own venv: by its path from here, the link not followed.
    command, root, _ = sent(".venv/bin/python", "-u", "train.py")
    assert command == [str(venv_python), "-u", "train.py"] and root == str(project.resolve())
    # A command on PATH with a script in another folder: that folder is sent.
    command, root, files = sent("python3", "../w5/p.py")
    assert (command, root, files) == (["python3", "p.py"], str(other.resolve()), ["p.py"])
    # A script, module or file inside the folder: the whole folder is sent, the words kept
    # (only scripts/ went, without the train.py that run.sh runs from here).
    (project / "scripts").mkdir()
    (project / "scripts" / "run.sh").write_text("python3 train.py\n")
    (project / "pkg.py").write_text("")
    for words in (
        ["bash", "scripts/run.sh"],
        ["python3", "-m", "pkg", "--cfg", "scripts/run.sh"],
        ["env", "python3", "--config_file", "scripts/run.sh", "train.py"],
        ["sh", "-c", "python3 train.py"],
    ):
        command, root, files = sent(*words)
        assert (command, root) == (words, str(project.resolve()))
        assert {"train.py", "scripts/run.sh", "pkg.py"} <= set(files)
    (project / "latest.sh").symlink_to(project / "scripts" / "run.sh")
    assert sent("bash", "latest.sh")[0] == ["bash", "latest.sh"]  # (a word as typed)
    # A python inside the folder (a conda env kept in the project) is an interpreter too.
    conda = project / "env" / "bin" / "python3.11"
    conda.parent.mkdir(parents=True)
    conda.write_text("#!/bin/sh\n")
    conda.chmod(0o755)
    command, root, _ = sent("./env/bin/python3.11", "train.py")
    assert (command, root) == ([str(conda), "train.py"], str(project.resolve()))
    # A program from elsewhere with no file after it is the code: its folder is sent.
    command, root, _ = sent(str(interpreter))
    assert (command, root) == (["./python"], str(interpreter.parent.resolve()))


def test_programs_no_peer_could_start_are_refused(tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    assert "not executable" in _refused(tmp_path, "./run.sh", "--x~uniform(0, 1)")
    assert "no such program" in _refused(tmp_path, "./trian", "--x~uniform(0, 1)")
    assert "nor a command on PATH" in _refused(tmp_path, "no-such-cmd-x", "--x~uniform(0, 1)")


def test_objective_names_and_regex_are_checked_at_submit(tmp_path: Path) -> None:
    (tmp_path / "t.py").write_text("")
    base = ("t.py", "--x~uniform(0, 1)")
    assert "not allowed" in _refused(tmp_path, "--objective", "val loss", *base)
    # '' and 'loss,,acc' ran as loss and loss,acc.
    for empty in (",", "", "loss,,acc", "loss,"):
        assert "has an empty name" in _refused(tmp_path, "--objective", empty, *base)
    assert "names no objective; give --maximize alone" in _refused(tmp_path, "--maximize=", *base)
    # 65 objectives: no report holds them all, and every trial failed (a reading of Study).
    many = ",".join(f"o{i}" for i in range(65))
    assert "names 65 objectives; at most 64" in _refused(tmp_path, "--objective", many, *base)
    for size in ("0", "5000"):
        said = _refused(tmp_path, "--max-bundle-mb", size, *base)
        assert said.startswith("--max-bundle-mb must be between 1 and 1024")
    said = _refused(tmp_path, "--no-bundle", "--max-bundle-mb", "5", *base)
    assert said == "--max-bundle-mb bounds a bundle, and --no-bundle sends none; drop one"
    assert "not a regular expression" in _refused(tmp_path, "--objective-regex", "(", *base)
    # (An unset shell variable: the peers read none, and the trials failed not naming it.)
    said = _refused(tmp_path, "--objective-regex", "", *base)
    assert said.startswith("--objective-regex is empty; give a regex with one group")
    assert _refused(tmp_path, "--objective-regex=", *base) == said
    body = _build(tmp_path, "--objective", "acc", "--objective-regex", "a=(\\S+)", *base)
    assert body["objectives"] == ["acc"] and body["objective_regex"] == "a=(\\S+)"
    # A regex reports one objective: with two, every trial failed for want of the second.
    several = _refused(tmp_path, "--objective", "acc,loss", "--objective-regex", "a=(\\S+)", *base)
    assert "reports one objective" in several and "METAOPT" in several
    assert "twice" in _refused(tmp_path, "--objective", "loss,loss", *base)
    # A named group names the objective ("maximize loss" was shown for an accuracy), unless
    # --objective does.
    named = ("--objective-regex", "acc = (?P<accuracy>[0-9.]+)")
    assert _build(tmp_path, *named, *base)["objectives"] == ["accuracy"]
    # One that disagrees is refused: `--objective loss` minimised the accuracies as the loss.
    said = _refused(tmp_path, "--objective", "loss", *named, *base)
    assert said == (
        "--objective-regex 'acc = (?P<accuracy>[0-9.]+)' names its number 'accuracy', but"
        " --objective is 'loss'; name the group (?P<loss>...) or leave out --objective"
    )
    assert _build(tmp_path, "--objective", "accuracy", *named, *base)["objectives"] == ["accuracy"]
    assert _build(tmp_path, "--objective-regex", "acc = ([0-9.]+)", *base)["objectives"] == ["loss"]
    said = _refused(tmp_path, "--objective-regex", "(?P<step>[0-9]+)", *base)
    assert said.startswith("--objective-regex's group step: 'step' is a report's step")
    # Peers read the first group: one in front recorded the epoch as the accuracy.
    said = _refused(tmp_path, "--objective-regex", r"epoch (\d+) acc=(?P<acc>[0-9.]+)", *base)
    assert "make (?P<acc>...) its first group" in said
    said = _refused(
        tmp_path, "--objective=acc", "--objective-regex", r"(\d+) a=(?P<acc>\S+)", *base
    )
    assert "make (?P<acc>...) its first group" in said
    ok = _build(tmp_path, "--objective-regex", r"epoch (?:\d+) acc=(?P<acc>[0-9.]+)", *base)
    assert ok["objectives"] == ["acc"]
    assert "a report's step" in _refused(tmp_path, "--objective", "step", *base)


def test_a_regex_without_a_group_is_noted_at_submit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "t.py").write_text("")
    base = ("t.py", "--x~uniform(0, 1)")
    _build(tmp_path, "--objective-regex", "acc=[0-9.]+", *base)
    note = capsys.readouterr().err
    assert "has no group, so all it matches must be the number" in note and note.count("\n") == 1
    _build(tmp_path, "--objective-regex", "acc=([0-9.]+)", *base)
    assert capsys.readouterr().err == ""
    # Several groups: the first is the number ('epoch (\d+): ...' recorded the epoch, unsaid).
    _build(tmp_path, "--objective-regex", r"epoch (\d+): accuracy = ([0-9.]+)", *base)
    note = capsys.readouterr().err
    assert note.count("\n") == 1 and "has 2 groups; the number is group 1's" in note
    assert "(?:...)" in note and "(?P<loss>...)" in note
    for one in (r"epoch (?:\d+): acc = ([0-9.]+)", r"(?P<acc>[0-9.]+) in epoch (\d+)"):
        _build(tmp_path, "--objective-regex", one, *base)
        assert capsys.readouterr().err == ""


def test_config_files(tmp_path: Path) -> None:
    (tmp_path / "t.py").write_text("")
    assert "cannot read --config" in _refused(tmp_path, "--config", str(tmp_path / "no.yaml"))
    assert "cannot read --config" in _refused(tmp_path, "--config", str(tmp_path))
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: [unclosed\n  max_trials: 3\n")
    assert "not valid YAML" in _refused(tmp_path, "--config", str(bad_yaml))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{name: 1")
    assert "not valid JSON" in _refused(tmp_path, "--config", str(bad_json))
    typo = tmp_path / "typo.yaml"
    typo.write_text("maxtrials: 7\n")
    assert "unknown option(s) maxtrials (did you mean max_trials?)" in _refused(
        tmp_path, "--config", str(typo)
    )
    typo.write_text("--name: x\n")  # shown as __name
    assert "unknown option(s) --name (did you mean name?); known: " in _refused(
        tmp_path, "--config", str(typo)
    )
    nested = tmp_path / "main.yaml"
    nested.write_text("config: good.yaml\n")  # taken, and ignored: its max_trials was lost
    assert _refused(tmp_path, "--config", str(nested)) == (
        f"--config {nested}: config: a config file cannot name another; merge the two"
    )
    huge = tmp_path / "huge.json"  # shlex took minutes over a command of 1.6 MB
    huge.write_text(json.dumps({"command": "t.py '" + "x" * (1 << 21) + "'"}))
    assert "command is 2,097,159 characters, more than one experiment record (1 MiB)" in (
        _refused(tmp_path, "--config", str(huge))
    )
    good = tmp_path / "good.yaml"
    good.write_text(
        "name: c\nmax-trials: 4\nobjective: [loss, acc]\n"
        f"command: {tmp_path / 't.py'} --x~'uniform(0, 1)' --steps 2\n"
    )
    body = _build(tmp_path, "--config", str(good))
    assert body["objectives"] == ["loss", "acc"] and body["max_trials"] == 4
    assert body["command"] == ["t.py", "--x~uniform(0, 1)", "--steps", "2"]
    assert merge_config({"config": str(good), "wait": True})["wait"] is True


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["peer", "start", "--port", "70000"], {}, "between 0 and 65535"),
        (["peer", "start", "--port", "x"], {}, "--port (or METAOPT_PORT) needs a whole number"),
        (["peer", "start"], {"METAOPT_PORT": "abc"}, "needs a whole number, got 'abc'"),
        (["peer", "start", "--slots", "two"], {}, "--slots (or METAOPT_SLOTS)"),
        (["peer", "start", "--join", "garbage"], {}, "expected HOST:PORT"),
        (["peer", "start", "--join", "http://h:1"], {}, "expected HOST:PORT"),
        (["status"], {"METAOPT_PORT": "abc", "METAOPT_SLOTS": "?"}, "no peer"),
        (["peer", "start", "--key", "k", "--key-file", "f"], {}, "--key or --key-file, not both"),
        (["peer", "stop"], {}, "nothing to stop"),  # it said "start one"
    ],
)
def test_peer_options_are_one_line_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    expected: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # A data dir with no peer in it: nothing here may start a peer or reach one.
    assert main([*argv, "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err


def test_peer_key_of_a_stopped_peer_gives_the_key_and_says_the_address_is_to_come(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It printed a LAN command (--host 0.0.0.0) for a cluster that might be on loopback.
    data = tmp_path / "d"
    data.mkdir()
    (data / "cluster.key").write_text("mo1-k\n")
    assert main(["peer", "key", "--data-dir", str(data)]) == 0
    out, err = capsys.readouterr()
    assert out == "metaopt peer start --key mo1-k --join HOST:PORT\n"
    assert "no peer runs on" in err and "0.0.0.0" not in out
    # The command it names asks the same peer (it asked the default data directory's).
    assert f"`metaopt peer key --data-dir {data}` names its address" in err


def test_a_data_dir_that_is_a_file_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "f").write_text("")
    args = ["peer", "start", "--no-mdns", "--port", "0", "--data-dir", str(tmp_path / "f")]
    assert main(args) == 2
    assert "is a file, not a directory" in capsys.readouterr().err


def test_a_key_or_seed_on_the_command_line_replaces_the_environments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # METAOPT_KEY_FILE left in the shell beat a --key typed now: the peer joined the other
    # cluster; METAOPT_JOIN's seeds were added to --join's.
    from metaopt.cli._peer import _config
    from tests.metaopt.cli.test_peer_pinned import _args

    (tmp_path / "a.key").write_text("key-of-a\n")
    monkeypatch.setenv("METAOPT_KEY_FILE", str(tmp_path / "a.key"))
    monkeypatch.setenv("METAOPT_JOIN", "127.0.0.1:1,127.0.0.1:2")

    def config(**given: object) -> tuple[object, tuple[str, ...]]:
        built = _config(_args(tmp_path, **given))
        return built.key_text, built.join

    assert config() == ("key-of-a", ("127.0.0.1:1", "127.0.0.1:2"))
    assert config(key="key-of-b", join=["127.0.0.1:3"]) == ("key-of-b", ("127.0.0.1:3",))
    monkeypatch.setenv("METAOPT_KEY", "key-of-c")  # the environment's key over its key file
    assert config()[0] == "key-of-c"


def test_a_second_detached_start_leaves_the_running_peer_reachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It used to delete the running peer's address file before failing on the locked replica,
    # and `peer status` / `peer stop` then said no peer was running. A stand-in process whose
    # command line names metaopt plays the running peer here; it holds the replica's lock as a
    # peer does, so a start that got past the check would exit at once, not linger.
    data = tmp_path / "d"
    data.mkdir()
    hold = "import plyvel, sys, time; db = plyvel.DB(sys.argv[1], create_if_missing=True)"
    stand_in = subprocess.Popen(
        [sys.executable, "-c", f"{hold}; print(flush=True); time.sleep(60)", str(data / "replica"),
         "metaopt"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert stand_in.stdout is not None
        stand_in.stdout.readline()  # it runs (exec'd, so its command line is its own)
        (data / "peer.pid").write_text(f"{stand_in.pid}\n")
        (data / "peer.address").write_text("127.0.0.1:9\n")
        assert main(["peer", "start", "--detach", "--no-mdns", "--data-dir", str(data)]) == 2
        err = capsys.readouterr().err
        assert f"already running on {data} (pid {stand_in.pid})" in err, err
        assert (data / "peer.address").exists()
    finally:
        stand_in.kill()
        stand_in.communicate()  # reaps it and closes its pipe


def test_the_join_command_names_an_address_another_machine_can_reach() -> None:
    from metaopt.cli._peer import join_command

    local = join_command("K", "127.0.0.1:7787")
    # Another peer on this machine: its own data dir and a free port, or "in use".
    assert local == (
        "metaopt peer start --key K --join 127.0.0.1:7787 --port 0 --data-dir ./metaopt-peer2"
    )
    lan = join_command("K", "10.0.0.5:7787")
    assert lan == "metaopt peer start --host 0.0.0.0 --key K --join 10.0.0.5:7787"
    everywhere = join_command("K", "0.0.0.0:7787")
    assert everywhere.startswith("metaopt peer start --host 0.0.0.0 --key K --join ")
    assert "0.0.0.0:7787" not in everywhere and everywhere.endswith(":7787")


def test_a_flag_with_a_value_is_read_as_true_or_false() -> None:
    assert split_submit_args(["--maximize=false", "t.py"])[0] == {"maximize": False}
    assert split_submit_args(["--wait=yes", "t.py"])[0] == {"wait": True}
    assert split_submit_args(["--wait", "t.py"])[0] == {"wait": True}
    with pytest.raises(MetaoptError, match="is a flag"):
        split_submit_args(["--wait=sometimes", "t.py"])
    # --maximize=NAMES maximizes those objectives only.
    assert split_submit_args(["--maximize=acc", "t.py"])[0] == {"maximize": "acc"}


def test_an_option_given_twice_is_the_last_said_in_a_note_and_an_objective_is_refused() -> None:
    # The last won without a word; as argparse has it, a wrapper's `--max-trials 50 "$@"`
    # lets its user give another. --objective a --objective b meant two objectives: refused.
    notes: list[str] = []
    options = split_submit_args(["--name=dd5", "t.py", "--x~uniform(0, 1)", "--name=inner"], notes)
    assert options[0]["name"] == "inner"
    assert notes == ["note: --name given twice; the last, 'inner', is used"]
    with pytest.raises(MetaoptError, match=r"^--objective given twice \('loss', then 'acc'\);"):
        split_submit_args(["--objective", "loss", "--objective", "acc", "t.py"])
    with pytest.raises(MetaoptError, match=r"as --objective loss,acc$"):
        split_submit_args(["--objective", "loss", "--objective", "acc", "t.py"])
    # The same value twice is one option, and no note.
    notes.clear()
    assert split_submit_args(["--max-trials", "7", "--max-trials=7", "t.py"], notes)[0] == {
        "max_trials": "7"
    }
    assert notes == []


def test_maximize_followed_by_an_objective_is_refused_not_read_as_all_of_them() -> None:
    # `--maximize acc` maximised loss as well, and gave "acc" to the program.
    with pytest.raises(MetaoptError, match="write --maximize=acc to maximize only acc"):
        split_submit_args(["--objective", "loss,acc", "--maximize", "acc", "t.py"])
    with pytest.raises(MetaoptError, match="--maximize=loss"):
        split_submit_args(["t.py", "--maximize", "loss"])
    # Followed by the name of an objective that is not one yet, the name was taken for the
    # program: "acc: not a file in ... nor a command on PATH".
    with pytest.raises(MetaoptError, match="to maximize an objective acc, write --objective=acc"):
        split_submit_args(["--maximize", "acc", "t.py"])
    # After the program, the name went to it as an argument, and loss was maximized.
    with pytest.raises(MetaoptError, match="acc is not an objective; to maximize an objective"):
        split_submit_args(["t.py", "--x~uniform(0, 1)", "--maximize", "acc"])
    # Followed by the program (or anything not an objective) it maximizes them all.
    assert split_submit_args(["--maximize", "t.py"])[0] == {"maximize": True}
    assert split_submit_args(["--maximize", "python3", "t.py"])[0] == {"maximize": True}
    assert split_submit_args(["--objective", "acc", "t.py", "--maximize", "--x", "acc"])[0] == {
        "objective": "acc",
        "maximize": True,
    }


def test_a_prior_a_space_away_from_its_option_is_noted() -> None:
    # --lr '~loguniform(1e-5, 1)' searched a parameter "arg0" after a literal --lr, silently.
    notes: list[str] = []
    _, template = split_submit_args(["t.py", "--lr", "~loguniform(1e-5, 1)"], notes)
    assert template == ["t.py", "--lr", "~loguniform(1e-5, 1)"]  # (as given: it may be meant)
    assert notes == [
        "note: ~loguniform(1e-5, 1) is a parameter of its own (its position names it), after a"
        " fixed --lr; write --lr~loguniform(1e-5, 1) to search --lr's value"
    ]
    for fine in (
        ["t.py", "--lr~loguniform(1e-5, 1)", "~uniform(0, 1)"],
        ["t.py", "~uniform(0, 1)"],
    ):
        notes.clear()
        split_submit_args(fine, notes)
        assert notes == []


def test_an_options_value_may_hold_a_tilde() -> None:
    # --name=run~2 was "not an option of submit", --data-dir=~/peers "no such program", and an
    # --objective-regex with a ~ went to the program unread.
    options, template = split_submit_args(
        ["--name=run~2", "t.py", "--x~uniform(0, 1)", "--objective-regex=a~ ([0-9]+)"]
    )
    assert options == {"name": "run~2", "objective_regex": "a~ ([0-9]+)"}
    assert template == ["t.py", "--x~uniform(0, 1)"]
    assert split_submit_args(["--data-dir=~/peers", "t.py"])[0] == {"data_dir": "~/peers"}
    # A parameter of the program named as an option is still the program's.
    assert split_submit_args(["t.py", "--name=~choices(['a', 'b'])"]) == (
        {},
        ["t.py", "--name=~choices(['a', 'b'])"],
    )


def test_a_misspelt_option_past_the_program_is_noted() -> None:
    # --max-trails 5 went to the program, and the search ran without a budget, unsaid.
    notes: list[str] = []
    options, template = split_submit_args(
        ["t.py", "--x~uniform(0, 1)", "--max-trails", "5", "--epochs", "3"], notes
    )
    assert options == {} and template[2:] == ["--max-trails", "5", "--epochs", "3"]
    assert notes == [
        "note: --max-trails goes to the program, not to submit (did you mean --max-trials?);"
        " words after -- go to the program without this note"
    ]
    notes.clear()
    split_submit_args(["t.py", "--x~uniform(0, 1)", "--", "--max-trails", "5"], notes)
    assert notes == []


def test_a_prior_without_its_tilde_is_noted() -> None:
    # --lr=loguniform(1e-5, 1) went to the program as it was, unsaid: every trial ran with
    # the program's default lr.
    for words in (
        ["t.py", "--x~uniform(0, 1)", "--lr=loguniform(1e-5, 1)"],
        ["t.py", "--x~uniform(0, 1)", "--lr", "loguniform(1e-5, 1)"],
        ["--", "python3", "t.py", "--x~uniform(0, 1)", "--lr=loguniform(1e-5, 1)"],
    ):
        notes: list[str] = []
        options, template = split_submit_args(words, notes)
        assert options == {} and template[-1].endswith("loguniform(1e-5, 1)")
        assert notes == [
            f"note: {template[-1]} goes to the program as it is, not searched; write"
            " --lr~'loguniform(1e-5, 1)' to search lr"
        ]
    for fine in (
        ["t.py", "--lr~loguniform(1e-5, 1)"],
        ["t.py", "--mode=uniformly", "--x~normal(0, 1)"],
        ["t.py", "--x~uniform(0, 1)", "normal(0, 1)"],  # (no option before it to search)
    ):
        notes = []
        split_submit_args(fine, notes)
        assert notes == []


def test_maximize_names_the_objectives_it_maximizes(tmp_path: Path) -> None:
    # Low loss with high accuracy could not be asked for: --maximize turned both around.
    (tmp_path / "t.py").write_text("")
    base = ("t.py", "--x~uniform(0, 1)")
    two = ("--objective", "loss,acc")
    assert _build(tmp_path, *two, *base)["directions"] == ["minimize", "minimize"]
    assert _build(tmp_path, *two, "--maximize", *base)["directions"] == ["maximize", "maximize"]
    assert _build(tmp_path, *two, "--maximize=acc", *base)["directions"] == ["minimize", "maximize"]
    assert _build(tmp_path, *two, "--maximize=no", *base)["directions"] == ["minimize", "minimize"]
    message = _refused(tmp_path, *two, "--maximize=accuracy", *base)
    assert "accuracy, not one of the objectives (loss, acc)" in message
    config = tmp_path / "c.yaml"
    config.write_text("objective: [loss, acc]\nmaximize: [acc]\n")
    directions = _build(tmp_path, "--config", str(config), *base)["directions"]
    assert directions == ["minimize", "maximize"]


@pytest.mark.parametrize(
    ("line", "flag", "expected"),
    [
        ('"maximize": "acc"', "--maximize", "not one of the objectives (loss)"),
        ('"maximize": 1', "maximize", "must be true, false or the objectives"),
        ('"wait": "yes"', "wait", "must be true or false"),
        ('"max_trials": 2.9', "--max-trials", "whole number"),
        ('"max_trials": true', "--max-trials", "whole number"),
        ('"name": 5', "name", "must be a string, got 5"),
        ('"objective_regex": 5', "objective_regex", "must be a string, got 5"),
        ('"data_dir": 5', "data_dir", "must be a string, got 5"),
        ('"algorithm": ["gp"]', "algorithm", "must be a string, got ['gp']"),
        ('"early_stopping": false', "early_stopping", "must be a string, got False"),
        ('"objective": 5', "objective", "must be a string or a list of strings, got 5"),
        ('"objective": ["loss", 5]', "objective", "a list of strings, got ['loss', 5]"),
    ],
)
def test_a_config_value_of_the_wrong_kind_is_refused_not_guessed_at(
    tmp_path: Path, line: str, flag: str, expected: str
) -> None:
    # JSON "maximize": "no" maximized (a non-empty string is true), and 2.9 trials became 2.
    (tmp_path / "t.py").write_text("")
    config = tmp_path / "c.json"
    config.write_text("{" + line + "}")
    message = _refused(tmp_path, "--config", str(config), "t.py", "--x~uniform(0, 1)")
    assert flag in message and expected in message
    config.write_text('{"maximize": "no"}')  # as --maximize=no on the command line
    assert _build(tmp_path, "--config", str(config), "t.py", "--x~uniform(0, 1)")["directions"] == [
        "minimize"
    ]
    config.write_text('{"max_trials": 3.0}')  # a whole number written as a float is one
    assert _build(tmp_path, "--config", str(config), "t.py", "--x~uniform(0, 1)")["max_trials"] == 3


def test_a_script_linking_outside_its_folder_is_a_one_line_error(tmp_path: Path) -> None:
    # It was a 21-line ValueError traceback (relative_to).
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "real_train.py").write_text("print(1)\n")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "train.py").symlink_to(tmp_path / "elsewhere" / "real_train.py")
    message = _refused(tmp_path / "w", "train.py", "--x~uniform(0, 1)")
    assert "train.py links to" in message and "outside" in message and "--no-bundle" in message


def test_a_max_step_the_fidelity_prior_contradicts_is_refused(tmp_path: Path) -> None:
    # Trials ran to the fidelity's 20 while the stoppers took step 10 for the end: every
    # trial past it was "at its budget" and never stopped.
    (tmp_path / "t.py").write_text("")
    space = ("--x~uniform(0, 1)", "--epochs~fidelity(1, 20)")
    message = _refused(tmp_path, "--max-step", "10", "t.py", *space)
    assert "--max-step 10 disagrees with the fidelity prior of 'epochs'" in message
    assert _build(tmp_path, "--max-step", "20", "t.py", *space)["max_step"] == 20
    # A fidelity up to 1 (a share of the data) counts no steps: any --max-step goes with it.
    for share in ("fidelity(0.1, 1.0)", "fidelity(0.125, 0.5)"):
        built = _build(tmp_path, "--max-step", "100", "t.py", "--x~uniform(0, 1)", f"--f~{share}")
        assert built["max_step"] == 100


def test_a_program_option_taken_for_a_submit_option_points_to_the_double_dash(
    tmp_path: Path,
) -> None:
    (tmp_path / "t.py").write_text("")
    (tmp_path / "model.yaml").write_text("layers: 3\n")
    message = _refused(
        tmp_path, "t.py", "--config", str(tmp_path / "model.yaml"), "--x~uniform(0, 1)"
    )
    assert "unknown option(s) layers" in message and "after `--`" in message


def test_an_executable_without_a_shebang_is_refused_at_submit(tmp_path: Path) -> None:
    # Every trial failed with "cannot start './run.sh': Exec format error".
    script = tmp_path / "run.sh"
    script.write_text("echo METAOPT '{\"loss\": 1}'\n")
    script.chmod(0o755)
    message = _refused(tmp_path, "--", "./run.sh", "--x~uniform(0, 1)")
    assert "no #! line" in message and "sh ./run.sh" in message
    script.write_text("#!/bin/sh\necho METAOPT '{\"loss\": 1}'\n")
    assert _build(tmp_path, "--", "./run.sh", "--x~uniform(0, 1)")["command"][0] == "./run.sh"  # type: ignore[index]


def test_a_closed_pipe_ends_the_command_quietly(tmp_path: Path) -> None:
    # `metaopt peer key | head -0`: the reader is gone before the line is written. The read
    # end is closed before the child has even imported metaopt, so its write always fails.
    import os
    import subprocess
    import sys

    from crdt import ClusterKey
    from metaopt.peer._identity import DataDir

    DataDir(tmp_path).write_key(ClusterKey.generate(os.urandom(32)).to_text())
    child = subprocess.Popen(
        [sys.executable, "-m", "metaopt", "peer", "key", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()
    with child.stderr:
        err = child.stderr.read().decode()
    assert child.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


class _FakePeer:
    """What `metaopt submit` asks its peer, answered from a list of known experiments."""

    known: ClassVar[list[dict[str, object]]] = []
    added: ClassVar[list[list[bytes]]] = []

    def __init__(self, data_dir: Path) -> None: ...

    def call(self, op: str, body: object = None) -> object:
        if op == "api.experiments":
            return self.known
        assert op == "api.add" and isinstance(body, list)
        self.added.append(body)
        return None


@pytest.fixture
def fake_peer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> type[_FakePeer]:
    """A train.py in the working directory, and submit's peer a _FakePeer that knows nothing."""
    (tmp_path / "train.py").write_text("print(1)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("metaopt.cli._submit.LocalPeer", _FakePeer)
    _FakePeer.known = []
    return _FakePeer


def test_a_submit_says_when_a_namesake_stamped_ahead_keeps_the_name(
    fake_peer: type[_FakePeer], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A name means the namesake with the latest stamp on every peer: one submitted where the
    # clock runs ahead keeps it for a while, and "now means this experiment" was false.
    from crdt import Record

    ahead = {"id": "ab" * 32, "name": "train", "latest": True}
    fake_peer.known = [ahead]

    class _Listing(_FakePeer):
        def call(self, op: str, body: object = None) -> object:
            if op == "api.add" and isinstance(body, list) and len(body) == 1:
                mine = Record.decode(body[0]).key.hex()
                self.known = [ahead, {"id": mine, "name": "train", "latest": False}]
            return super().call(op, body)

    monkeypatch.setattr("metaopt.cli._submit.LocalPeer", _Listing)
    assert main(["submit", "train.py", "--x~uniform(0, 1)"]) == 0
    said = capsys.readouterr()
    err, out = said.err, said.out
    assert "note: the name 'train' still means abababababab, stamped later" in err, err
    assert "now means" not in err
    mine = out.split("(")[1].split(")")[0]  # "submitted experiment 'train' (<id>)"
    assert f"follow it with: metaopt status {mine}" in out  # its id: the name finds the other


def test_a_submit_says_when_its_name_hides_an_earlier_experiment(
    fake_peer: type[_FakePeer], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The name then means the new one for status, stop and best; the old one only by id.
    fake_peer.known = [{"id": "ab" * 32, "name": "train"}, {"id": "cd" * 32, "name": "other"}]
    assert main(["submit", "--max-trials", "3", "train.py", "--x~uniform(0, 1)"]) == 0
    err = capsys.readouterr().err
    assert "'train' now means this experiment" in err and "abababababab" in err, err
    assert "cdcdcd" not in err and "--max-trials" not in err
    # One still running goes on: say so, and how to stop it (it only said the name moved).
    assert "note: the earlier train (abababababab) still runs; `metaopt stop abababababab`" in err
    fake_peer.known = [
        {"id": "ab" * 32, "name": "train", "stopped": True, "finished": False},
        {"id": "ef" * 32, "name": "train", "stopped": False, "finished": True},
        {"id": "12" * 32, "name": "train", "stopped": False, "finished": False},
    ]
    assert main(["submit", "--data-dir", "d", "train.py", "--x~uniform(0, 1)"]) == 0
    err = capsys.readouterr().err
    assert "reached by id: abababababab, efefefefefef, 121212121212\n" in err
    assert err.count("still runs") == 1
    assert "(121212121212) still runs; `metaopt stop 121212121212 --data-dir d` stops it" in err
    # The latest three (after 15 submissions the note ran to 200 characters of ids).
    fake_peer.known = [{"id": f"{i:02x}" * 32, "name": "train", "stopped": True} for i in range(15)]
    assert main(["submit", "--data-dir", "d", "train.py", "--x~uniform(0, 1)"]) == 0
    err = capsys.readouterr().err
    assert "reached by id: 0c0c0c0c0c0c, 0d0d0d0d0d0d, 0e0e0e0e0e0e and 12 more" in err
    assert "(`metaopt status --data-dir d`)\n" in err
    fake_peer.known = []
    assert main(["submit", "train.py", "--x~uniform(0, 1)"]) == 0
    assert capsys.readouterr().err == ""
    # --wait with no budget follows a search that only `metaopt stop` ends: say so.
    monkeypatch.setattr("metaopt.cli._submit.wait_for", lambda *a, **kw: 0)
    assert main(["submit", "--wait", "train.py", "--x~uniform(0, 1)"]) == 0
    assert "no --max-trials, so the search goes on until `metaopt stop train`" in (
        capsys.readouterr().err
    )


def test_the_commands_submit_prints_ask_the_peer_it_asked(
    fake_peer: type[_FakePeer], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `submit --data-dir p1` said `metaopt status train`, which reads another peer's replica.
    monkeypatch.setattr("metaopt.cli._submit.wait_for", lambda *a, **kw: kw["data_dir"] == "p 1")
    assert main(["submit", "--data-dir", "p 1", "--wait", "train.py", "--x~uniform(0, 1)"]) == 1
    out, err = capsys.readouterr()
    assert "follow it with: metaopt status train --data-dir 'p 1'\n" in out
    assert "goes on until `metaopt stop train --data-dir 'p 1'`" in err


def test_a_folder_over_a_mebibyte_is_submitted_as_blobs_that_each_fit_a_record(
    tmp_path: Path,
) -> None:
    # Chunks of a whole MiB plus the record's own fields overflowed the 1 MiB record limit:
    # every bundle over 1 MiB failed with "a blob record of 1048657 bytes exceeds ...".
    (tmp_path / "train.py").write_text("print(1)\n")
    (tmp_path / "weights.bin").write_bytes(os.urandom(5 << 19))  # 2.5 MiB
    options, template = split_submit_args(["train.py", "--x~uniform(0, 1)"])
    experiment, blobs = build_submission(merge_config(options), template, tmp_path)
    assert len(blobs) == 3 and all(len(b.data) <= MAX_RECORD_SIZE for b in blobs)
    # One origin per submission (each origin stays in every version vector for good): the
    # blobs follow the experiment record under its own.
    assert {b.origin for b in blobs} == {experiment.origin}
    assert sorted(b.seq for b in blobs) == [2, 3, 4] and experiment.seq == 1
    assert sum(len(b.body["data"]) for b in blobs) == (5 << 19) + len("print(1)\n")


def test_an_experiment_is_named_after_its_script_and_a_bad_name_is_refused(tmp_path: Path) -> None:
    # `-- sh s3/train.sh` was named "sh", like every other shell-script sweep.
    (tmp_path / "s3").mkdir()
    (tmp_path / "s3" / "train.sh").write_text("echo\n")
    (tmp_path / "train.py").write_text("")
    prior = "--x~uniform(0, 1)"
    assert _build(tmp_path, "--", "sh", "s3/train.sh", prior)["name"] == "train"
    assert _build(tmp_path, "--", "python3", "-u", "train.py", prior)["name"] == "train"
    assert _build(tmp_path, "--", "true", prior)["name"] == "true"
    assert _build(tmp_path, "--name", "sweep-1", "train.py", prior)["name"] == "sweep-1"
    # A name every peer can read back: a script's long or odd name is cut or replaced.
    (tmp_path / ("t" * 70 + ".py")).write_text("")
    assert _build(tmp_path, "--", "t" * 70 + ".py", prior)["name"] == "t" * 64
    (tmp_path / "-odd.py").write_text("")
    assert _build(tmp_path, "--", "python3", "./-odd.py", prior)["name"] == "experiment"
    for bad in ("x" * 65, "-x", "a\tb"):
        assert "1-64 printable characters" in _refused(tmp_path, f"--name={bad}", "train.py", prior)
    # An empty name (a script's --name "$RUN" with RUN unset) took the script's name.
    for empty in (("--name", ""), ("--name=",)):
        said = _refused(tmp_path, *empty, "train.py", prior)
        assert said == "--name is empty; give a name, or leave out --name for the script's"
    # " sweep" was taken, listed as "sweep", and `status sweep` found nothing.
    assert "give 'sweep'" in _refused(tmp_path, "--name= sweep ", "train.py", prior)
    (tmp_path / "my run .py").write_text("")
    assert _build(tmp_path, "--", "my run .py", prior)["name"] == "my run"


def test_a_folder_of_more_files_than_a_record_can_list_is_a_one_line_error(
    tmp_path: Path,
) -> None:
    # It said "a experiment record of 7517875 bytes exceeds the 1048576-byte limit; split it
    # into smaller records", which a user cannot do.
    (tmp_path / "train.py").write_text("print(1)\n")
    data = tmp_path / "data"
    data.mkdir()
    for i in range(5000):  # ~250 bytes of manifest each
        (data / f"{i:05d}-{'x' * 200}.txt").write_text("1")
    message = _refused(tmp_path, "train.py", "--x~uniform(0, 1)")
    assert "5001 files" in message and "--no-bundle" in message and "move data out" in message


def test_wait_exits_1_when_no_trial_completed(capsys: pytest.CaptureFixture[str]) -> None:
    # `submit --wait && next-step` went on after every trial had failed.
    from metaopt.cli._wait import wait_for

    info: dict[str, object] = {
        "id": "c1" * 32, "name": "crash", "counts": {"failed": 2}, "thawed": 0, "best": [],
        "max_trials": 2, "trials": 2, "finished": True, "objectives": ["loss"],
    }  # fmt: skip

    class _Done:
        def call(self, op: str, body: object = None) -> object:
            return [{**info, "latest": True}] if op == "api.experiments" else info

    assert wait_for(_Done(), "crash", interval=0.0) == 1  # type: ignore[arg-type]
    assert "crash: no trial completed" in capsys.readouterr().out
    info["best"] = [{"value": 0.5, "params": {"x": 1}}]
    assert wait_for(_Done(), "crash", interval=0.0) == 0  # type: ignore[arg-type]
    assert "best 0.5 with" in capsys.readouterr().out
    # Several objectives: a front, not one member's first value as "the best".
    info["objectives"] = ["loss", "acc"]
    info["best"] = [{"value": 0.5, "params": {"x": 1}}, {"value": 0.7, "params": {"x": 2}}]
    assert wait_for(_Done(), "crash", interval=0.0) == 0  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "best front of 2" in out and "a front of 2; `metaopt best crash` lists it" in out
    assert "0.5" not in out


def test_wait_on_an_experiment_stopped_meanwhile_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # It printed the best and exited 0 as if the experiment had run its course.
    from metaopt.cli._wait import wait_for

    info: dict[str, object] = {
        "id": "c1" * 32, "name": "sweep", "counts": {"completed": 3}, "thawed": 0,
        "best": [{"value": 0.5, "params": {"x": 1}}], "max_trials": 10, "trials": 3,
        "finished": True, "stopped": True, "objectives": ["loss"],
    }  # fmt: skip

    class _Stopped:
        def call(self, op: str, body: object = None) -> object:
            return [{**info, "latest": True}] if op == "api.experiments" else info

    assert wait_for(_Stopped(), "sweep", interval=0.0) == 0  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "sweep: stopped (`metaopt stop`) after 3 trials\nbest 0.5 with" in out


def test_wait_says_why_trials_fail_once_per_reason(capsys: pytest.CaptureFixture[str]) -> None:
    # A script failing at import showed "0 done, 8 failed" over and over, the why only in the
    # peer's log.
    from metaopt.cli._wait import wait_for

    crash = "exited with code 1; last stderr: ModuleNotFoundError: No module named 'torchh'"
    polls = [
        {"counts": {"failed": n}, "trials": n, "finished": n == 4,
         "last_failed": {"id": f"{n:02}" * 32, "reason": crash if n < 4 else "timed out"}}
        for n in (1, 2, 3, 4)
    ]  # fmt: skip
    info = {"id": "c1" * 32, "name": "crash", "thawed": 0, "best": [], "max_trials": 4,
            "objectives": ["loss"]}  # fmt: skip

    class _Failing:
        def call(self, op: str, body: object = None) -> object:
            if op == "api.experiments":
                return [{**info, **polls[0], "latest": True}]
            return {**info, **(polls.pop(0) if len(polls) > 1 else polls[0])}

    assert wait_for(_Failing(), "crash", interval=0.0) == 1  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert out.count("No module named 'torchh'") == 1 and "trial 010101010101 failed" in out
    assert "trial 040404040404 failed: timed out" in out


def test_wait_names_its_experiment_by_id_once_a_later_submission_took_its_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `metaopt status NAME` would have shown the later namesake, not the experiment followed.
    from metaopt.cli._wait import wait_for

    info: dict[str, object] = {
        "id": "0d" * 32, "name": "nc", "counts": {"failed": 1}, "thawed": 0, "best": [],
        "max_trials": 1, "trials": 1, "finished": True, "objectives": ["loss"],
    }  # fmt: skip
    later = {**info, "id": "ee" * 32, "latest": True}

    class _Peer:
        def call(self, op: str, body: object = None) -> object:
            return [{**info, "latest": False}, later] if op == "api.experiments" else info

    assert wait_for(_Peer(), "0d" * 32, interval=0.0) == 1  # type: ignore[arg-type]
    assert "nc: no trial completed; `metaopt status 0d0d0d0d0d0d` says why" in (
        capsys.readouterr().out
    )
    info["objectives"] = ["loss", "acc"]
    info["best"] = [{"value": 0.5, "params": {"x": 1}}, {"value": 0.7, "params": {"x": 2}}]
    assert wait_for(_Peer(), "0d" * 32, interval=0.0, data_dir="p1") == 0  # type: ignore[arg-type]
    assert "`metaopt best 0d0d0d0d0d0d --data-dir p1` lists it" in capsys.readouterr().out


def test_wait_whose_peer_stops_answering_says_the_experiment_goes_on_elsewhere(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from metaopt.cli._wait import wait_for

    info = {
        "id": "5e" * 32, "name": "sweep", "counts": {"running": 1}, "thawed": 0, "best": [],
        "max_trials": 4, "trials": 1, "finished": False, "objectives": ["loss"],
    }  # fmt: skip
    calls = []

    class _Dying:
        def call(self, op: str, body: object = None) -> object:
            calls.append(op)
            if len(calls) > 1:
                raise MetaoptError("the peer of /d at 127.0.0.1:9 does not answer (refused)")
            return info

    with pytest.raises(MetaoptError) as caught:
        wait_for(_Dying(), "sweep", interval=0.0)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("the peer of /d at 127.0.0.1:9 does not answer")
    # By id: a later submission may have taken the name meanwhile, and no peer here can say.
    assert "sweep goes on on the other peers: `metaopt status 5e5e5e5e5e5e`" in message
    assert "\n" not in message


def test_wait_says_what_keeps_a_spent_experiment_open_when_only_hand_frozen_trials_do(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `submit --wait` ran on for ever with "1 frozen" and nothing saying what to do.
    from metaopt.cli._wait import wait_for

    paused = {
        "state": "frozen",
        "reason": "frozen by the user",
        "id": "ab" * 32,
        "runner": "94e08333" * 4,
    }
    polls = [
        {"id": "70" * 32, "name": "p", "counts": {"completed": 1, "frozen": 1}, "thawed": 0,
         "best": [],
         "max_trials": 2, "trials": 2, "finished": finished,
         "trial_list": [{"state": "completed", "reason": None}, trial]}
        for trial, finished in (
            ({"state": "frozen", "reason": "3 of 9 runs better at rung 3"}, False),
            (paused, False), (paused, False), ({"state": "killed", "reason": "x"}, True),
        )
    ]  # fmt: skip

    class _Peer:
        def call(self, op: str, body: object = None) -> object:
            if op == "api.experiments":
                return [{"id": "70" * 32, "name": "p", "latest": True}]
            return polls.pop(0)

    wait_for(_Peer(), "p", interval=0.0)  # type: ignore[arg-type]
    out = capsys.readouterr().out
    hint = "p: the budget is spent and 1 trial(s) frozen by hand keep it open"
    assert out.count(hint) == 1  # once, and not for the policy's own freeze
    # Only the peer that froze it may thaw it: `thaw` with this peer's --data-dir was refused.
    assert (
        "(abababababab on node 94e08333); `metaopt thaw TRIAL` on the peer that froze it (on any"
        " peer once that one is gone) resumes one"
    ) in out
    assert "`metaopt stop p` ends it" in out


def _prog_poll(
    trial_list: list[dict[str, object]],
    blocked: str | None,
    exhausted: str | None,
    finished: bool = False,
) -> dict[str, object]:
    """A --wait poll's answer for experiment "prog": 2 of its 3 trials made."""
    return {"id": "9a" * 32, "name": "prog", "counts": {"completed": 1, "running": 1},
            "thawed": 0, "best": [{"value": 0.77, "params": {"k": 1}}], "max_trials": 3,
            "trials": 2, "finished": finished, "objectives": ["acc"], "trial_list": trial_list,
            "blocked_here": blocked, "exhausted": exhausted}  # fmt: skip


class _ProgPeer:
    """A peer that answers --wait's polls of "prog" with ``polls``, in turn."""

    def __init__(self, polls: list[dict[str, object]]) -> None:
        self.polls = polls

    def call(self, op: str, body: object = None) -> object:
        if op == "api.experiments":
            return [{"id": "9a" * 32, "name": "prog", "latest": True}]
        return self.polls.pop(0)


def test_wait_stops_when_nothing_runs_and_its_peer_starts_no_new_trial(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A space of two points and --max-trials 3: `submit --wait` printed "2 done, 2/3 trials"
    # and then nothing, for ever; the reason was only in the peer's log and `metaopt status`.
    from metaopt.cli._wait import wait_for

    why = "all 2 points of the space are tried"
    running = {"state": "running", "reason": None}
    done = {"state": "completed", "reason": None}
    polls = [
        _prog_poll([done, trial], blocked, exhausted)
        for trial, blocked, exhausted in (
            (running, None, None), (running, why, why), (done, None, None),
            # This peer cannot run the program: another peer may, so it waits on.
            (done, "python3.12: not found here", None),
            *[(done, "python3.12: not found here", why)] * 3,
        )
    ]  # fmt: skip
    assert wait_for(_ProgPeer(polls), "prog", interval=0.0, patience=3) == 0  # type: ignore[arg-type]
    assert not polls  # a running trial, or a peer that may start one again, kept it waiting
    out = capsys.readouterr().out
    assert f"prog: nothing runs and no new trial can start: {why}; --wait stops" in out
    assert out.rstrip().endswith('best 0.77 with {"k": 1}')


def test_waits_patience_counts_stalled_polls_in_a_row_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A poll where a trial runs again (a thaw, a lost trial re-run elsewhere) starts the count
    # afresh: stalled spells added up, --wait would give up on an experiment still moving.
    from metaopt.cli._wait import wait_for

    why = "all 2 points of the space are tried"
    done = {"state": "completed", "reason": None}
    running = {"state": "running", "reason": None}
    polls = [
        _prog_poll(trials, None, exhausted, finished)
        for trials, exhausted, finished in (
            ([done], why, False), ([done], why, False),
            ([done, running], why, False),
            ([done], why, False), ([done], why, False),
            ([done, done], None, True),
        )
    ]  # fmt: skip
    assert wait_for(_ProgPeer(polls), "prog", interval=0.0, patience=3) == 0  # type: ignore[arg-type]
    assert not polls  # it followed the experiment to its end
    assert "--wait stops here" not in capsys.readouterr().out


def test_a_misspelt_option_is_named_as_one_not_taken_for_the_program(tmp_path: Path) -> None:
    # `--max-trial 2` said "--max-trial: not a file in ... nor a command on PATH".
    (tmp_path / "t.py").write_text("")
    prior = "--x~uniform(0, 1)"
    message = _refused(tmp_path, "--max-trial", "2", "t.py", prior)
    assert message.startswith("--max-trial: not an option of submit; did you mean --max-trials?")
    assert "did you mean --wait?" in _refused(tmp_path, "--wiat", "t.py", prior)
    assert "nor a command on PATH" in _refused(tmp_path, "--frobnicate", "t.py", prior)


def test_a_trial_timeout_is_a_duration_kept_in_the_spec_options(tmp_path: Path) -> None:
    from metaopt._records import parse_experiment, trial_timeout

    (tmp_path / "t.py").write_text("")
    base = ("t.py", "--x~uniform(0, 1)")
    for given, seconds in (("600", 600), ("90m", 5400), ("1.5h", 5400), ("2d", 172800)):
        body = _build(tmp_path, "--trial-timeout", given, *base)
        assert body["options"] == {"trial_timeout": seconds}
    assert _build(tmp_path, *base)["options"] == {}
    assert "needs a duration such as 3600, 90m or 2h" in _refused(
        tmp_path, "--trial-timeout", "soon", *base
    )
    for bad in ("0.2", "inf", "nan", "1e20"):
        assert "a duration between 1 s and 2**53 s" in _refused(
            tmp_path, f"--trial-timeout={bad}", *base
        )
    options, template = split_submit_args(["--trial-timeout", "2h", *base])
    record, _ = build_submission(options, template, tmp_path)
    spec = parse_experiment(record)
    assert spec is not None and trial_timeout(spec) == 7200
    # What no submit writes (another version's, or a hostile peer's) is no limit.
    for odd in (0, -5, 2.5, "1h", True, 2**60):
        assert trial_timeout(dataclasses.replace(spec, options={"trial_timeout": odd})) is None


def test_a_word_too_long_for_a_file_name_is_no_traceback(tmp_path: Path) -> None:
    # `submit python3 -c "<346 characters>" --x~...` raised OSError: File name too long.
    code = "echo " + "x" * 300
    body = _build(tmp_path, "--no-bundle", "sh", "-c", code, "--x~uniform(0, 1)")
    assert body["name"] == "sh"


def test_a_program_word_too_long_for_a_file_name_is_one_line(tmp_path: Path) -> None:
    # A program of 300 characters raised OSError: File name too long (Path.is_file).
    for program in ("a" * 300 + ".py", "a" * 300, "./" + "a" * 300):
        assert "\n" not in _refused(tmp_path, "--", program, "--x~uniform(0, 1)")


def test_an_interpreter_by_its_path_names_the_experiment_after_its_script(
    tmp_path: Path,
) -> None:
    # `-- /opt/conda/envs/torch/bin/python train.py` (the README's way to another
    # environment) and `.venv/bin/python train.py` named every such experiment "python".
    (tmp_path / "train.py").write_text("print(1)\n")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(sys.executable)
    for interpreter in (sys.executable, ".venv/bin/python"):
        body = _build(tmp_path, "--", interpreter, "-u", "train.py", "--x~uniform(0, 1)")
        assert body["name"] == "train"


def test_wait_on_a_terminal_erases_the_end_of_a_longer_line_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "10 running" then "9 running" left "best 0.0959est 0.34508" on screen.
    from metaopt.cli._wait import wait_for

    class _Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    infos = [
        {"id": "c1" * 32, "name": "e", "counts": counts, "thawed": 0, "max_trials": 12,
         "trials": 12, "finished": finished, "objectives": ["loss"], "trial_list": [],
         "best": [{"value": 0.5, "params": {"x": 1}}], "stopped": False}
        for counts, finished in (({"running": 10, "completed": 2}, False),
                                 ({"running": 9, "completed": 3}, True))
    ]  # fmt: skip

    class _Peer:
        def call(self, op: str, body: object = None) -> object:
            if op == "api.experiments":
                return [{**infos[0], "latest": True}]
            return infos.pop(0) if len(infos) > 1 else infos[0]

    out = _Tty()
    wait_for(_Peer(), "e", interval=0.0, out=out)  # type: ignore[arg-type]
    # Wider than the terminal it would wrap, and \r redraws its last row only: cut to fit.
    narrow = _Tty()
    infos.append(dict(infos[0]))
    monkeypatch.setattr(shutil, "get_terminal_size", lambda: os.terminal_size((20, 24)))
    wait_for(_Peer(), "e", interval=0.0, out=narrow)  # type: ignore[arg-type]
    assert narrow.getvalue().startswith("\re: 3 done, 9 run...\x1b[K\n")
    lines = out.getvalue().split("\r")[1:]
    assert len(lines) == 2 and all(line.endswith("\x1b[K") for line in lines[:1])
    assert lines[1].startswith("e: 3 done") and "\x1b[K" in lines[1]


def test_a_choice_with_a_nul_character_is_refused(tmp_path: Path) -> None:
    # No command line carries it: every trial failed to start.
    (tmp_path / "t.py").write_text("")
    message = _refused(tmp_path, "t.py", "--x~choices(['a\\x00b', 'c'])")
    assert message == "x: a choice holds a NUL character; no program gets it"


@pytest.mark.parametrize(
    ("word", "why"),
    [
        ("--lérn~uniform(0, 1)", "names its parameter 'lérn', which no parameter may be"),
        ("--lérn=~uniform(0, 1)", "names its parameter 'lérn', which no parameter may be"),
        ("~lérn~uniform(0, 1)", "names its parameter 'lérn', which no parameter may be"),
        ("--my lr~uniform(0, 1)", "names its parameter 'my lr', which no parameter may be"),
        ("--~uniform(0, 1)", "names no parameter"),
        ("--=~uniform(0, 1)", "names no parameter"),
    ],
)
def test_a_parameter_with_a_name_no_parameter_may_have_is_refused_naming_the_word(
    tmp_path: Path, word: str, why: str
) -> None:
    # It went to the program as a literal word, and the experiment ran without it; alone, it
    # was "no parameter to search: mark them with ~".
    (tmp_path / "t.py").write_text("")
    form = (
        ": write --NAME~prior (or --NAME=~prior, ~NAME~prior), NAME being ASCII letters,"
        " digits, _, . or - and starting with a letter or _, e.g. --lr~'loguniform(1e-5, 1)'"
    )
    for words in (("t.py", "--x~uniform(0, 1)", word), ("t.py", word)):
        assert _refused(tmp_path, *words) == f"{word!r} {why}{form}"
    # What is not a parameter's mark stays the program's.
    assert _build(tmp_path, "t.py", "--x~uniform(0, 1)", "--out=~/runs", "~/d~")["command"] == [
        "t.py", "--x~uniform(0, 1)", "--out=~/runs", "~/d~"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("line", "given", "expected"),
    [
        ('"max_trials": "ten"', ["--max-trials", "5"], "--max-trials needs a whole number"),
        ('"max_trials": 0', ["--max-trials", "5"], "--max-trials must be between 1 and"),
        ('"max_step": 2.5', ["--max-step", "5"], "--max-step needs a whole number"),
        ('"max_bundle_mb": "big"', ["--max-bundle-mb", "5"], "--max-bundle-mb needs a whole"),
        ('"trial_timeout": "soon"', ["--trial-timeout", "5"], "--trial-timeout needs a duration"),
        ('"algorithm": "bayes"', ["--algorithm", "gp"], "--algorithm 'bayes': choose one of"),
        ('"early_stopping": "x"', ["--early-stopping", "asha"], "--early-stopping 'x': choose"),
    ],
)
def test_a_config_value_the_command_line_overrides_is_still_checked(
    tmp_path: Path, line: str, given: list[str], expected: str
) -> None:
    # "max_trials": "ten" passed without a word beside --max-trials 5.
    (tmp_path / "t.py").write_text("")
    config = tmp_path / "c.json"
    config.write_text("{" + line + "}")
    message = _refused(tmp_path, "--config", str(config), *given, "t.py", "--x~uniform(0, 1)")
    assert message.startswith(f"--config {config}: {expected}")


def test_links_left_out_of_the_code_are_noted(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # A link to a data folder was left out silently: the trials on other machines lacked it.
    (tmp_path / "t.py").write_text("print(1)\n")
    (tmp_path / "data").symlink_to("/")
    _build(tmp_path, "t.py", "--x~uniform(0, 1)")
    said = capfd.readouterr().err
    assert "note: links left out of the code sent to the peers" in said and ": data;" in said


def test_empty_folders_too_many_to_send_are_noted(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # Past the cap they are not sent, rather than the folder refused (a review).
    (tmp_path / "t.py").write_text("print(1)\n")
    for i in range(1001):
        (tmp_path / "runs" / f"{i:04}").mkdir(parents=True)
    _build(tmp_path, "t.py", "--x~uniform(0, 1)")
    said = capfd.readouterr().err
    assert "note: 1001 empty folders (such as runs/0000) not sent to the peers, more than 1000" in (
        said
    )


def test_submit_help_says_what_each_option_does(capsys: pytest.CaptureFixture[str]) -> None:
    # It listed the options' names only.
    from metaopt.cli._submit import _OPTION_HELP, _OPTIONS

    assert list(_OPTION_HELP) == list(_OPTIONS)
    with pytest.raises(SystemExit):
        main(["submit", "--help"])
    said = capsys.readouterr().out
    for name, text in _OPTION_HELP.items():
        assert f"  {name} " in said and text.rpartition("  ")[2] in said


def test_an_objective_regex_with_a_huge_repeat_is_one_line(tmp_path: Path) -> None:
    # re's OverflowError was a traceback here (and regex's layout of 'x{1000000000}' took
    # every byte of memory until the kernel killed the process).
    (tmp_path / "train.py").write_text("print(1)\n")
    for pattern in ("loss=([0-9.]+){4294967296}", "loss=([0-9.]+)x{1000000000}"):
        said = _refused(tmp_path, "--objective-regex", pattern, "train.py", "--x~uniform(0, 1)")
        assert said.startswith(f"--objective-regex {pattern!r} is not a regular expression: ")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_script_left_out_of_the_code_sent_is_refused(tmp_path: Path) -> None:
    # Submitted from a folder the repository ignores, the bundle held no file: every trial
    # on every peer failed with "can't open file .../code/train.py", and submit said nothing.
    repo, plain = tmp_path / "repo", tmp_path / "plain"
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    (repo / ".gitignore").write_text("exp/\n")
    (repo / "exp").mkdir()
    (repo / "exp" / "train.py").write_text("print(1)\n")
    said = _refused(repo / "exp", "train.py", "--x~uniform(0, 1)")
    assert said.startswith("train.py is left out of the code sent to the peers (git ignores")
    # A module run from there: the bundle held no file either ("No module named pkg").
    (repo / "exp" / "pkg").mkdir()
    (repo / "exp" / "pkg" / "train.py").write_text("print(1)\n")
    said = _refused(repo / "exp", "--", "python3", "-m", "pkg.train", "--x~uniform(0, 1)")
    assert said.startswith(f"none of the files of {(repo / 'exp').resolve()} is sent")
    (repo / "train.py").write_text("print(1)\n")  # (seen by git: sent)
    assert _build(repo, "train.py", "--x~uniform(0, 1)")["name"] == "train"
    # Outside git, hidden folders are never sent.
    (plain / ".hidden").mkdir(parents=True)
    (plain / ".hidden" / "run.py").write_text("print(1)\n")
    said = _refused(plain, "--", "python3", ".hidden/run.py", "--x~uniform(0, 1)")
    assert said.startswith(".hidden/run.py is left out of the code sent to the peers")
    # A link to it is sent as a copy under its own name: the word the peers run is there.
    (plain / "train.py").symlink_to(plain / ".hidden" / "run.py")
    body = _build(plain, "--", "python3", "train.py", "--x~uniform(0, 1)")
    assert body["command"][:2] == ["python3", "train.py"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("words", "said"),
    [
        (["--lr~loguniform(1e-5, 1)", "--lr", "0.1"], "--lr is searched"),
        (["--lr~loguniform[1e-5, 1]", "--x~uniform(0, 1)"], "is not a prior as written"),
        (["--lr~loguniform[1e-5, 1]"], "is not a prior as written"),  # (not "no parameter")
    ],
)
def test_a_command_the_program_would_not_read_as_meant_is_refused_at_submit(
    tmp_path: Path, words: list[str], said: str
) -> None:
    (tmp_path / "train.py").write_text("print(1)\n")
    assert said in _refused(tmp_path, "train.py", *words)
