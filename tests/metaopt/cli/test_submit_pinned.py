"""Pins on `metaopt submit`'s option splitting, prior marking, config files and refusals that
the rest of the suite left open (found by a mutation audit of metaopt/cli/_submit.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metaopt._errors import MetaoptError
from metaopt.cli._submit import split_submit_args
from tests.metaopt.cli.test_submit import _build, _refused

PRIOR = "--x~uniform(0, 1)"


def _config(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -- splitting submit's options from the program's words ---------------------------------------


def test_an_option_needing_a_value_given_last_is_refused_not_dropped() -> None:
    """`submit t.py --x~... --max-trials` must say the budget is missing, not run unbounded."""
    for option in ("--max-trials", "--name", "--config", "--objective"):
        with pytest.raises(MetaoptError, match=f"^{option} needs a value$"):
            split_submit_args(["t.py", PRIOR, option])


def test_a_flags_true_or_false_value_is_read_whatever_its_case() -> None:
    """--wait=YES / --json=TRUE / --wait=False are booleans, as documented, not refusals or a
    silent False: a script's ${WAIT^^} should behave as its lower-case spelling."""
    assert split_submit_args(["--wait=YES", "t.py"])[0] == {"wait": True}
    assert split_submit_args(["--json=TRUE", "t.py"])[0] == {"json": True}
    assert split_submit_args(["--no-bundle=False", "t.py"])[0] == {"no_bundle": False}
    assert split_submit_args(["--maximize=No", "t.py"])[0] == {"maximize": False}


def test_maximize_with_a_value_does_not_claim_the_next_word() -> None:
    """Only a bare --maximize may swallow an objective's name; --maximize=yes followed by a
    program argument `acc` must leave it to the program."""
    options, template = split_submit_args(["t.py", PRIOR, "--maximize=yes", "acc"])
    assert options == {"maximize": True}
    assert template == ["t.py", PRIOR, "acc"]


def test_maximize_before_a_file_named_like_an_objective_takes_it_as_the_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--maximize train` where ./train is the program (not on PATH) maximizes all objectives
    and runs ./train; it must not be refused as an objective's name."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train").write_text("#!/bin/sh\n")
    options, template = split_submit_args(["--maximize", "train", PRIOR])
    assert options == {"maximize": True} and template == ["train", PRIOR]


def test_a_broken_prior_on_an_option_name_stays_the_programs_and_is_refused(
    tmp_path: Path,
) -> None:
    """`--name=~uniform(0,` (a prior cut by the shell) must be reported as an unfinished prior,
    not silently become the experiment's name "~uniform(0,"."""
    word = "--name=~uniform(0,"
    assert split_submit_args(["t.py", word]) == ({}, ["t.py", word])
    (tmp_path / "t.py").write_text("")
    assert "unfinished prior" in _refused(tmp_path, "t.py", word)


def test_a_misspelt_option_before_the_program_is_refused_without_a_note() -> None:
    """Before the program, a misspelt option is refused by the program check (it is taken for
    the program); the "goes to the program" note belongs past the program only."""
    notes: list[str] = []
    split_submit_args(["--max-trails", "5", "t.py", PRIOR], notes)
    assert notes == []


# -- notes on priors that were not marked as meant ---------------------------------------------


def test_a_prior_word_after_a_flag_of_the_program_is_not_noted() -> None:
    """`t.py --verbose --x~...` searches x after a fixed --verbose: nothing to note. Only a
    ~prior word standing alone after an option is the "space too many" slip."""
    for words in (
        ["t.py", "--verbose", PRIOR],
        ["t.py", "--verbose", "--y=~uniform(0, 1)"],
        ["t.py", "--mode=fast", "~uniform(0, 1)"],  # (the option before it has its value)
    ):
        notes: list[str] = []
        split_submit_args(words, notes)
        assert notes == [], words


def test_a_prior_without_tilde_is_noted_only_after_an_option_waiting_for_a_value() -> None:
    """`--mode=a uniform(0, 1)` and `x=uniform(0, 1)` are not `--lr uniform(...)`: the note's
    advice (write --mode=a~'uniform(0, 1)', or x~...) would be wrong there."""
    for words in (
        ["t.py", PRIOR, "--mode=a", "uniform(0, 1)"],
        ["t.py", PRIOR, "x=uniform(0, 1)"],
    ):
        notes: list[str] = []
        split_submit_args(words, notes)
        assert notes == [], words


def test_a_parameter_name_starting_with_a_digit_is_refused(tmp_path: Path) -> None:
    """--1lr~uniform(...) is no parameter: it would go to the program as a literal word and
    never be searched."""
    (tmp_path / "t.py").write_text("")
    message = _refused(tmp_path, "t.py", PRIOR, "--1lr~uniform(0, 1)")
    assert "names its parameter '1lr', which no parameter may be" in message


# -- config files -------------------------------------------------------------------------------


def test_the_command_line_overrides_the_config_file(tmp_path: Path) -> None:
    """Documented precedence: an option given on the command line wins over the same option
    in --config (a one-off `--max-trials 5` must not be ignored for the file's 100)."""
    (tmp_path / "t.py").write_text("")
    config = _config(
        tmp_path, "c.json", json.dumps({"max_trials": 100, "name": "file", "algorithm": "gp"})
    )
    body = _build(tmp_path, "--config", config, "--max-trials", "5", "--name", "cli", "t.py", PRIOR)
    assert body["max_trials"] == 5 and body["name"] == "cli"
    assert body["algorithm"] == "gp"  # (what the command line leaves out still comes from it)


def test_a_yml_config_is_read_as_yaml(tmp_path: Path) -> None:
    """A config named .yml is YAML, as .yaml is; not refused as invalid JSON."""
    (tmp_path / "t.py").write_text("")
    config = _config(tmp_path, "c.yml", "max-trials: 3\nname: viayml\n")
    body = _build(tmp_path, "--config", config, "t.py", PRIOR)
    assert body["max_trials"] == 3 and body["name"] == "viayml"


def test_a_config_no_bundle_that_is_not_a_boolean_is_refused(tmp_path: Path) -> None:
    """A config's "no_bundle": "no" is a non-empty string that would skip the bundle: refused."""
    (tmp_path / "t.py").write_text("")
    config = _config(tmp_path, "c.json", '{"no_bundle": "no"}')
    message = _refused(tmp_path, "--config", config, "t.py", PRIOR)
    assert message == f"--config {config}: no_bundle must be true or false"


def test_a_config_maximize_as_true_or_false_text_is_read_whatever_its_case(
    tmp_path: Path,
) -> None:
    """A config's "maximize": "Yes" / "FALSE" mean all / none, as --maximize=Yes does,
    not an objective named "Yes"."""
    (tmp_path / "t.py").write_text("")
    for text, direction in (("Yes", "maximize"), ("FALSE", "minimize")):
        config = _config(tmp_path, "c.json", json.dumps({"maximize": text}))
        assert _build(tmp_path, "--config", config, "t.py", PRIOR)["directions"] == [direction]


# -- bounds --------------------------------------------------------------------------------------


def test_max_trials_bounds_are_inclusive(tmp_path: Path) -> None:
    """--max-trials takes 1 through 2**53 (the largest exact float), refusing 0 and 2**53 + 1."""
    (tmp_path / "t.py").write_text("")
    for n in (1, 2**53):
        assert _build(tmp_path, "--max-trials", str(n), "t.py", PRIOR)["max_trials"] == n
    for n in (0, 2**53 + 1):
        assert "between 1 and 2**53" in _refused(tmp_path, "--max-trials", str(n), "t.py", PRIOR)


def test_max_bundle_mb_takes_the_peers_largest_and_no_more(tmp_path: Path) -> None:
    """--max-bundle-mb 1024 (the peers' hard limit) is accepted; 1025 and 0 are refused."""
    (tmp_path / "t.py").write_text("")
    _build(tmp_path, "--max-bundle-mb", "1024", "t.py", PRIOR)
    assert "peers refuse larger bundles" in _refused(
        tmp_path, "--max-bundle-mb", "1025", "t.py", PRIOR
    )
    assert "between 1 and 1024" in _refused(tmp_path, "--max-bundle-mb", "0", "t.py", PRIOR)


def test_max_bundle_mb_with_no_bundle_is_refused_even_when_zero(tmp_path: Path) -> None:
    """A bound on a bundle that is not sent is a contradiction, whatever the bound (a config's
    0 or an empty --max-bundle-mb= too)."""
    (tmp_path / "t.py").write_text("")
    for given in (["--max-bundle-mb", "5"], ["--max-bundle-mb="]):
        assert "--no-bundle sends none" in _refused(tmp_path, "--no-bundle", *given, "t.py", PRIOR)
    config = _config(tmp_path, "c.json", '{"max_bundle_mb": 0}')
    assert "--no-bundle sends none" in _refused(
        tmp_path, "--config", config, "--no-bundle", "t.py", PRIOR
    )


def test_a_trial_timeout_is_rounded_to_the_nearest_second(tmp_path: Path) -> None:
    """1.6 s is 2 s, not 1 s (truncating a fractional duration shortens every trial's limit)."""
    (tmp_path / "t.py").write_text("")
    body = _build(tmp_path, "--trial-timeout", "1.6", "t.py", PRIOR)
    assert body["options"] == {"trial_timeout": 2}


# -- which word is the script ---------------------------------------------------------------


def test_an_interpreter_running_code_with_c_sends_the_folder_not_a_later_file(
    tmp_path: Path,
) -> None:
    """`python3 -c CODE ../lib/t.py ...`: with -c there is no script; the folder submitted from
    is the code sent, not the folder of a file named later as an argument."""
    work, lib = tmp_path / "work", tmp_path / "lib"
    work.mkdir()
    lib.mkdir()
    (lib / "t.py").write_text("")
    body = _build(work, "python3", "-c", "import sys", "../lib/t.py", PRIOR)
    bundle = body["bundle"]
    assert isinstance(bundle, dict) and bundle["root"] == str(work.resolve())
    assert body["command"] == ["python3", "-c", "import sys", "../lib/t.py", PRIOR]


def test_a_config_error_names_the_files_own_format(tmp_path: Path) -> None:
    """A YAML file with a bad date must not be called "not valid JSON" (yaml raises ValueError
    there), nor a JSON file nested too deep "not valid YAML" (RecursionError): the user is sent
    looking for the wrong syntax."""
    (tmp_path / "t.py").write_text("")
    yaml_config = _config(tmp_path, "c.yaml", "max-trials: 3\nwhen: 2001-13-45\n")
    assert "is not valid YAML" in _refused(tmp_path, "--config", yaml_config, "t.py", PRIOR)
    json_config = _config(tmp_path, "c.json", "[" * 100_000)
    assert "is not valid JSON" in _refused(tmp_path, "--config", json_config, "t.py", PRIOR)


PRIOR = "--x~uniform(0, 1)"


def test_max_bundle_mb_counts_mebibytes(tmp_path: Path) -> None:
    (tmp_path / "t.py").write_text("print(1)\n")
    (tmp_path / "data.bin").write_bytes(b"\0" * 1_040_000)  # < 1 MiB, > 1 MB with t.py
    _build(tmp_path, "--max-bundle-mb", "1", "t.py", PRIOR)  # accepted: under 1 MiB


# -- From a mutation audit of what `metaopt submit` is given: each test below failed with one
# -- small bug planted in _submit.py that no CLI test caught.


def _with_script(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text("print(1)\n")
    return tmp_path


def test_max_trials_is_kept_beside_max_step(tmp_path: Path) -> None:
    body = _build(
        _with_script(tmp_path), "train.py", "--x~uniform(0, 1)",
        "--max-trials", "5", "--max-step", "100",
    )  # fmt: skip
    assert (body["max_trials"], body["max_step"]) == (5, 100)


def test_a_name_with_a_leading_space_is_refused(tmp_path: Path) -> None:
    """Shown without it in a table, and then `status train` found nothing."""
    said = _refused(_with_script(tmp_path), "--name", " train", "train.py", "--x~uniform(0, 1)")
    assert "starts or ends with a space" in said


def test_a_config_files_maximize_list_maximizes_every_objective_it_names(tmp_path: Path) -> None:
    cwd = _with_script(tmp_path)
    config = _config(tmp_path, "sweep.yaml", "objective: [loss, acc, f1]\nmaximize: [acc, f1]\n")
    body = _build(cwd, "--config", config, "train.py", "--x~uniform(0, 1)")
    assert list(body["objectives"]) == ["loss", "acc", "f1"]  # type: ignore[call-overload]
    assert list(body["directions"]) == ["minimize", "maximize", "maximize"]  # type: ignore[call-overload]


def test_a_regex_whose_first_group_is_unnamed_reports_loss_whatever_groups_follow(
    tmp_path: Path,
) -> None:
    """As the README says: the objective is `loss` unless --objective or the name of the
    regex's first group says otherwise; named groups after it are other metrics."""
    regex = r"(\d+) (?P<acc>[0-9.]+) (?P<f1>[0-9.]+)"
    body = _build(
        _with_script(tmp_path), "--objective-regex", regex, "train.py", "--x~uniform(0, 1)"
    )
    assert list(body["objectives"]) == ["loss"]  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("interpreter", "script"), [("bash", "nosuch.bash"), ("perl", "nosuch.pl")]
)
def test_a_missing_script_of_any_known_suffix_is_refused(
    tmp_path: Path, interpreter: str, script: str
) -> None:
    """Accepted, every trial on every peer failed with "can't open file"."""
    said = _refused(tmp_path, "--", interpreter, script, "--x~uniform(0, 1)")
    assert f"{script}: no such script" in said
