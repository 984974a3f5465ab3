"""`metaopt submit`: turn a command line with ~priors into an experiment on the local peer.

Options are recognised anywhere before a ``--``; every other word is the command template, in
order. After ``--`` every word is the template verbatim, for programs whose own options would
collide with ours.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import re
import secrets
import shlex
import shutil
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import msgpack

from crdt import MAX_RECORD_SIZE, OversizedRecord, Record
from metaopt._errors import MetaoptError, SpaceError, WorkerError
from metaopt._records import BLOB, MAX_NAME, ExperimentSpec, experiment_record, name_problem
from metaopt.cli._format import command
from metaopt.cli._wait import wait_for
from metaopt.peer._bundle import (
    DEFAULT_MAX_BYTES,
    HARD_MAX_BYTES,
    MAX_EMPTY_DIR_BYTES,
    MAX_EMPTY_DIRS,
    collect_bundle,
    manifest_paths,
)
from metaopt.peer._local import LocalPeer, fetch_experiments, resolve_data_dir
from metaopt.peer._output import CAPTURE_HINT, compile_objective_regex
from metaopt.peer._template import check_submitted, parse_template
from metaopt.space import PRIOR_NAMES, Space
from metaopt.worker import MAX_METRICS, check_name

__all__ = ["add_submit_command", "build_submission", "split_submit_args", "submit"]

# option name -> (takes a value, destination)
_OPTIONS: dict[str, tuple[bool, str]] = {
    "--name": (True, "name"),
    "--max-trials": (True, "max_trials"),
    "--algorithm": (True, "algorithm"),
    "--objective": (True, "objective"),
    "--maximize": (False, "maximize"),
    "--objective-regex": (True, "objective_regex"),
    "--early-stopping": (True, "early_stopping"),
    "--max-step": (True, "max_step"),
    "--trial-timeout": (True, "trial_timeout"),
    "--config": (True, "config"),
    "--data-dir": (True, "data_dir"),
    "--no-bundle": (False, "no_bundle"),
    "--max-bundle-mb": (True, "max_bundle_mb"),
    "--wait": (False, "wait"),
    "--json": (False, "json"),
}
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")
_FLAGS = ("wait", "json", "no_bundle")
_TEXTS = ("name", "algorithm", "objective_regex", "early_stopping", "data_dir")
_ALGORITHMS = ("auto", "gp", "evolution", "random", "sobol")  # as Study(algorithm=) takes
_EARLY = ("freeze-thaw", "asha", "median", "none")


# What `submit --help` says of each option (the README has the whole story).
_OPTION_HELP: dict[str, str] = {
    "--name": "NAME  the experiment's name (default: the script's, e.g. train)",
    "--max-trials": "N  the budget of trials, across every peer (default: until stopped)",
    "--algorithm": f"A  the search: {', '.join(_ALGORITHMS)} (default auto)",
    "--objective": "NAME[,NAME...]  what the program reports to optimise (default loss)",
    "--maximize": "maximize every objective; --maximize=acc: these ones only",
    "--objective-regex": "RE  read the objective from the program's output: its first group",
    "--early-stopping": f"S  {'|'.join(_EARLY)} (default freeze-thaw once trials report steps)",
    "--max-step": "N  the step a finished trial reaches: the early stoppers' horizon",
    "--trial-timeout": "T  kill a trial's run past this long (seconds, or 30m, 2h, 1d)",
    "--config": "FILE  these options (and command:) from YAML or JSON",
    "--data-dir": "DIR  which local peer to submit through (METAOPT_DATA_DIR)",
    "--no-bundle": "send no code: the peers share the file system it is submitted from",
    "--max-bundle-mb": "N  the most code (MiB) to send (default 50, at most 1024)",
    "--wait": "follow it until it is done; Ctrl-C leaves it running (exit 1: none completed)",
    "--json": "print its id and name as JSON (--wait's progress then goes to stderr)",
}


def add_submit_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rows = [(f"{name} {text.rpartition('  ')[0]}".strip(), text.rpartition("  ")[2])
            for name, text in _OPTION_HELP.items()]  # fmt: skip
    width = max(len(left) for left, _ in rows)
    about = (
        "Everything but the options below (and all after --) is the command to run; each"
        " --x~prior, --x=~prior or ~prior word in it is a parameter to search, e.g. metaopt"
        " submit train.py --lr~'loguniform(1e-5, 1)' --layers~'randint(1, 5)'"
    )
    p = sub.add_parser(
        "submit",
        help="submit an experiment: metaopt submit train.py --lr~'loguniform(1e-5, 1)'",
        usage="metaopt submit [options] PROGRAM [WORDS...]  (or [options] -- PROGRAM ...)",
        description=textwrap.fill(about, 88),
        epilog="submit's options:\n"
        + "\n".join(f"  {left:<{width}}  {said}" for left, said in rows),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("words", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=submit)


def _set_option(
    options: dict[str, Any], name: str, dest: str, value: Any, notes: list[str] | None
) -> None:
    """Set an option; given again with another value, the last wins, as argparse has it (a
    wrapper's `metaopt submit --max-trials 50 "$@"` lets its user give another), said in a
    note: it won without a word. Not --objective: given twice it meant two objectives
    (`--objective loss --objective acc` searched acc alone)."""
    if dest in options and options[dest] != value:
        if dest == "objective":
            raise MetaoptError(
                f"{name} given twice ({options[dest]!r}, then {value!r}); name several"
                f" objectives once, as {name} {options[dest]},{value}"
            )
        if notes is not None:
            notes.append(f"note: {name} given twice; the last, {value!r}, is used")
    options[dest] = value


def split_submit_args(
    words: list[str], notes: list[str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """(options, template words) from a submit command line; ``notes`` gets what the user
    should hear of words left to the program."""
    options: dict[str, Any] = {}
    template: list[str] = []
    after_maximize: str | None = None  # the word after a bare --maximize
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            for after in words[i + 1 :]:
                if notes is not None and template and "~" not in after:
                    _note_a_prior_without_tilde(after, template[-1], notes)
                template.append(after)
            break
        name, eq, inline = word.partition("=")
        # A parameter of the program may share an option's name (--name~choices(...)); a
        # value holding a ~ (--name=run~2, --data-dir=~/peers) is still the option's.
        prior = _is_prior(word)
        spec = None if prior else _OPTIONS.get(name)
        if spec is None:
            if notes is not None and word.startswith("--") and template and not prior:
                # Past the program's name, a misspelt option went to the program unnoticed:
                # --max-trails 5 ran without a budget.
                close = difflib.get_close_matches(name, _OPTIONS, n=1, cutoff=0.75)
                if close:
                    notes.append(
                        f"note: {name} goes to the program, not to submit (did you mean"
                        f" {close[0]}?); words after -- go to the program without this note"
                    )
            if notes is not None and not prior and template:
                _note_a_prior_without_tilde(word, template[-1], notes)
            if notes is not None and prior and word.startswith("~") and template[-1:]:
                before = template[-1]
                if before.startswith("--") and "~" not in before and "=" not in before:
                    # --lr '~loguniform(...)' (a space too many) searched a parameter arg0
                    # after a literal --lr, without a word.
                    notes.append(
                        f"note: {word} is a parameter of its own (its position names it), after"
                        f" a fixed {before}; write {before}{word} to search {before}'s value"
                    )
            template.append(word)
            i += 1
            continue
        takes_value, dest = spec
        if not takes_value:
            if eq and inline.lower() not in _TRUE + _FALSE:
                if dest != "maximize":
                    raise MetaoptError(
                        f"{name} is a flag; give it alone (or ={inline!r} as true/false)"
                    )
                _set_option(options, name, dest, inline, notes)  # --maximize=acc: these only
            else:
                _set_option(options, name, dest, not eq or inline.lower() in _TRUE, notes)
                if dest == "maximize" and not eq and i + 1 < len(words):
                    after_maximize = words[i + 1]
            i += 1
            continue
        if eq:
            _set_option(options, name, dest, inline, notes)
            i += 1
        elif i + 1 < len(words):
            _set_option(options, name, dest, words[i + 1], notes)
            i += 2
        else:
            raise MetaoptError(f"{name} needs a value")
    if options.get("maximize") is True and after_maximize is not None:
        # `--maximize acc` maximised every objective (loss too) and gave acc to the program.
        objectives = {o.strip() for o in str(options.get("objective") or "loss").split(",")}
        named = {w.strip() for w in after_maximize.split(",")}
        if named <= objectives:
            raise MetaoptError(
                f"--maximize {after_maximize}: write --maximize={after_maximize} to maximize"
                f" only {after_maximize} (--maximize alone maximizes every objective)"
            )
        if _NAMES.fullmatch(after_maximize) and not _runnable_word(after_maximize):
            # The objective's name taken for the program ("acc: not a file ... nor a
            # command"), or, after the program, given to it as an argument while --maximize
            # maximized loss, without a word.
            first = template[:1] == [after_maximize]
            raise MetaoptError(
                f"--maximize {after_maximize}: {after_maximize} is "
                + ("neither a file nor a command" if first else "not an objective")
                + f"; to maximize an objective {after_maximize}, write"
                f" --objective={after_maximize} --maximize (--maximize alone maximizes every"
                " objective)"
                + (
                    ""
                    if first
                    else f", or to pass {after_maximize} to the program, put it before --maximize"
                )
            )
    return options, template


_NAMES = re.compile(r"[A-Za-z_]\w*(?:,[A-Za-z_]\w*)*")  # what objectives look like, programs not


# A word marking a parameter whatever its name (--NAME~prior, --NAME=~prior, ~NAME~prior):
# one whose name the template does not take stayed a literal word, and ran without it.
_ANY_NAMED_PRIOR = re.compile(r"(--?|~)([^=~]*)=?~\s*[A-Za-z_]\w*\s*\(.*\)\s*", re.DOTALL)
_PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def _check_parameter_name(word: str) -> None:
    """Refuse a word that marks a parameter with a name no parameter may have."""
    marked = _ANY_NAMED_PRIOR.fullmatch(word)
    if marked is None or _PARAMETER_NAME.fullmatch(marked.group(2)):
        return
    name = marked.group(2)
    what = (
        f"names its parameter {name!r}, which no parameter may be" if name else "names no parameter"
    )
    raise MetaoptError(
        f"{word!r} {what}: write --NAME~prior (or --NAME=~prior, ~NAME~prior),"
        " NAME being ASCII letters, digits, _, . or - and starting with a letter or _, e.g."
        " --lr~'loguniform(1e-5, 1)'"
    )


def _runnable_word(word: str) -> bool:
    """Whether a word names a file here or a command on PATH."""
    try:
        return Path(word).exists() or shutil.which(word) is not None
    except (OSError, ValueError):  # a name too long, a NUL: not a program either
        return False


_A_PRIOR_CALL = re.compile(rf"\s*(?:{'|'.join(PRIOR_NAMES)})\s*\(")


def _note_a_prior_without_tilde(word: str, before: str, notes: list[str]) -> None:
    """Note a prior written without its ~, which the program got as a literal value:
    `--lr=loguniform(1e-5, 1)` ran every trial with the program's default lr."""
    name, eq, value = word.partition("=")
    if eq and name.startswith("-") and _A_PRIOR_CALL.match(value):
        option, prior = name, value
    elif _A_PRIOR_CALL.match(word) and before.startswith("-") and not {"=", "~"} & set(before):
        option, prior = before, word
    else:
        return
    notes.append(
        f"note: {word} goes to the program as it is, not searched; write {option}~'{prior}'"
        f" to search {option.lstrip('-')}"
    )


def _is_prior(word: str) -> bool:
    """Whether the word marks a parameter of the program (or a broken attempt at one)."""
    if "~" not in word:
        return False
    try:
        return bool(parse_template([word]).priors)
    except SpaceError:
        return True  # the template says what is wrong with it


def _load_config(path: str) -> dict[str, Any]:
    """The options in a --config file (YAML or JSON), named as on the command line."""
    try:
        # (~ expanded: the shell leaves one after = as it is, --config=~/sweep.yaml.)
        text = Path(path).expanduser().read_text()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise MetaoptError(f"cannot read --config {path}: {why}") from None
    # The format by the file's name, in its message too: by the exception's type, a YAML
    # date out of range (a ValueError) was "not valid JSON", a JSON nested too deeply "YAML".
    is_yaml = path.lower().endswith((".yaml", ".yml"))
    if is_yaml:
        import yaml
    try:
        data = yaml.safe_load(text) if is_yaml else json.loads(text)
    except Exception as exc:  # JSONDecodeError, YAMLError, a YAML date's ValueError, recursion
        first = " ".join(str(exc).split())  # (a YAMLError's text spans lines)
        raise MetaoptError(
            f"--config {path} is not valid {'YAML' if is_yaml else 'JSON'}: {first}"
        ) from None
    if not isinstance(data, dict):
        raise MetaoptError(f"--config {path} must hold a mapping of submit options")
    written = {str(k).replace("-", "_"): str(k) for k in data}  # (a key as the file has it)
    options = {str(k).replace("-", "_"): v for k, v in data.items()}
    if "config" in options:  # (it was taken, and ignored: max_trials in the other was lost)
        raise MetaoptError(
            f"--config {path}: config: a config file cannot name another; merge the two"
        )
    known = {dest for _, dest in _OPTIONS.values() if dest != "config"} | {"command"}
    unknown = sorted(set(options) - known)
    if unknown:
        # (max-trails: listed 20 options without pointing at max_trials, as the CLI does.)
        close = [difflib.get_close_matches(u, known, n=1, cutoff=0.75) for u in unknown]
        meant = [  # (the key as written: `--name:` was shown as __name)
            f"{written[u]} (did you mean {c[0]}?)" if c else written[u]
            for u, c in zip(unknown, close, strict=True)
        ]
        raise MetaoptError(
            f"--config {path}: unknown option(s) {', '.join(meant)}; known: "
            + ", ".join(sorted(known))
            + "; if --config is your program's own option, put the program after `--`"
        )
    for flag in _FLAGS:
        if not isinstance(options.get(flag, False), bool):
            raise MetaoptError(f"--config {path}: {flag} must be true or false")
    maximize = options.get("maximize")
    if isinstance(maximize, list) and all(isinstance(o, str) for o in maximize):
        options["maximize"] = ",".join(maximize)
    elif maximize is not None and not isinstance(maximize, bool | str):
        raise MetaoptError(
            f"--config {path}: maximize must be true, false or the objectives to maximize"
        )
    command = options.get("command")
    if isinstance(command, str) and len(command) > MAX_RECORD_SIZE:
        # (shlex took minutes over a command of 1.6 MB, and it could never be recorded)
        raise MetaoptError(
            f"--config {path}: command is {len(command):,} characters, more than one experiment"
            f" record ({MAX_RECORD_SIZE >> 20} MiB) holds; pass large values in a file the"
            " script reads"
        )
    if isinstance(command, str):
        try:
            options["command"] = command = shlex.split(command)
        except ValueError as exc:  # ("No closing quotation": it was a traceback)
            raise MetaoptError(f"--config {path}: command: {exc}; close its quotes") from None
    elif command is not None and not (
        isinstance(command, list) and all(isinstance(w, str) for w in command)
    ):
        raise MetaoptError(f"--config {path}: command must be a string or a list of strings")
    if command is not None and (bad := next((w for w in command if "\x00" in w), None)):
        # No program takes one as an argument, and every peer refused the record, saying
        # only that it was malformed.
        raise MetaoptError(f"--config {path}: command word {bad!r} holds a NUL character")
    objective = options.get("objective")
    if isinstance(objective, list) and all(isinstance(o, str) for o in objective):
        options["objective"] = ",".join(objective)
    elif objective is not None and not isinstance(objective, str):
        raise MetaoptError(
            f"--config {path}: objective must be a string or a list of strings, got {objective!r}"
        )
    for key in _TEXTS:
        # A number was made text: "data_dir": 5 asked the peer of a data directory "5".
        if options.get(key) is not None and not isinstance(options[key], str):
            raise MetaoptError(f"--config {path}: {key} must be a string, got {options[key]!r}")
    # Checked here as well as where they are used: one the command line overrides was never
    # read, so "max_trials": "ten" passed without a word beside --max-trials 5.
    for key, flag in (("max_trials", "--max-trials"), ("max_step", "--max-step")):
        _as_int(options, key, f"--config {path}: {flag}")
    _as_int(options, "max_bundle_mb", f"--config {path}: --max-bundle-mb", ranged=False)
    _as_seconds(options, "trial_timeout", f"--config {path}: --trial-timeout")
    _choice(options.get("algorithm"), f"--config {path}: --algorithm", _ALGORITHMS)
    _choice(options.get("early_stopping"), f"--config {path}: --early-stopping", _EARLY)
    return options


def _choice(value: object, flag: str, choices: tuple[str, ...]) -> None:
    """Refuse a value (None: not given) that is not one of ``choices``."""
    if value is not None and value not in choices:
        raise MetaoptError(f"{flag} {value!r}: choose one of {', '.join(choices)}")


def merge_config(options: dict[str, Any]) -> dict[str, Any]:
    """The command-line options over those of their --config file, if any."""
    if options.get("config") == "":  # `--config "$CFG"` with CFG unset: its budget dropped
        raise MetaoptError("--config is empty; give a file, or leave out --config")
    if not options.get("config"):
        return options
    merged = _load_config(str(options["config"]))
    merged.update(options)
    del merged["config"]  # applied: merging again is a no-op
    return merged


def _as_int(options: dict[str, Any], key: str, flag: str, *, ranged: bool = True) -> int | None:
    """options[key] as a whole number, in [1, 2**53] if ``ranged`` (else the caller's range)."""
    value = options.get(key)
    if value is None:
        return None
    try:
        # Not int(2.9) == 2 nor int(True) == 1: a config file's 2.9 or true is a mistake.
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise MetaoptError(f"{flag} needs a whole number, got {value!r}") from None
    if ranged and not 1 <= number <= 2**53:
        raise MetaoptError(f"{flag} must be between 1 and 2**53")
    return number


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _as_seconds(options: dict[str, Any], key: str, flag: str) -> int | None:
    """A duration: whole seconds, or a number with a unit s, m, h or d (90m, 1.5h)."""
    value = options.get(key)
    if value is None:
        return None
    text = str(value).strip().lower()
    unit = _UNITS.get(text[-1:], 0)
    try:
        if isinstance(value, bool):
            raise ValueError
        seconds = float(text[:-1] if unit else text) * (unit or 1)
    except ValueError:
        raise MetaoptError(
            f"{flag} needs a duration such as 3600, 90m or 2h, got {value!r}"
        ) from None
    if not 1 <= seconds <= 2**53:  # also refuses nan and inf
        raise MetaoptError(f"{flag} must be a duration between 1 s and 2**53 s, got {value!r}")
    return round(seconds)


def build_submission(
    options: dict[str, Any], template_words: list[str], cwd: Path
) -> tuple[Record, list[Record]]:
    """The experiment record and its code blobs, validated; nothing is sent yet.

    options are the command line's merged with its --config file (``merge_config``).
    """
    template_words = template_words or list(options.get("command") or [])
    if not template_words:
        raise MetaoptError(
            "nothing to run: metaopt submit train.py --lr~'loguniform(1e-5, 1)'"
            " (or -- ./program --x~'uniform(0, 1)')"
        )
    for word in template_words:
        _check_parameter_name(word)
    template = parse_template(template_words)
    check_submitted(template)
    if not template.priors:
        raise MetaoptError(
            "no parameter to search: mark them with ~, e.g. --lr~'loguniform(1e-5, 1)'"
        )
    space = Space.from_dict(template.priors)
    for dim in space.dimensions:
        if any(isinstance(c, str) and "\x00" in c for c in dim.choices):
            # No command line carries it: every trial with it would fail to start.
            raise MetaoptError(f"{dim.name}: a choice holds a NUL character; no program gets it")
    if space.d == 0:
        raise MetaoptError("no parameter to search besides the fidelity; add one, e.g. --lr~...")
    program = template_words[0]
    program_path = _path_of(program, cwd)
    _check_program(program, program_path, cwd)
    # The word naming the code sent to the peers: the program's, unless it is an interpreter
    # from outside the folder, then its script's (`-- /opt/conda/envs/torch/bin/python
    # train.py` sent the interpreter's folder, and ran ./python there).
    _check_missing_script(template_words, cwd)
    at = _script_word(template_words, cwd)
    script = template_words[at]
    script_path = _path_of(script, cwd)
    algorithm = str(options.get("algorithm") or "auto")
    _choice(algorithm, "--algorithm", _ALGORITHMS)
    early = options.get("early_stopping")
    _choice(early, "--early-stopping", _EARLY)
    objective = options.get("objective")
    regex = options.get("objective_regex")
    if regex is not None and not str(regex):
        # (An unset shell variable, --objective-regex "$RE"): the peers read no regex, and
        # every trial of a program that prints only "loss = 0.3" failed, the regex unnamed.
        raise MetaoptError(
            "--objective-regex is empty; give a regex with one group, e.g."
            " --objective-regex 'loss = ([0-9.]+)', or leave the option out"
        )
    given, source = "loss" if objective is None else str(objective), "--objective"
    if objective is None and regex is not None:
        # 'accuracy = (?P<accuracy>[0-9.]+)' names what it reads: "maximize loss" was
        # shown for an accuracy.
        with contextlib.suppress(re.error):  # said below
            named = compile_objective_regex(str(regex)).groupindex
            first = [n for n, i in named.items() if i == 1]
            if first or len(named) == 1:  # (a lone group that is not the first is refused below)
                given, source = (first or list(named))[0], "--objective-regex's group"
    objectives = tuple(o.strip() for o in given.split(","))
    if not all(objectives):
        # '' and 'loss,,acc' ran as loss and loss,acc: a slip in a script went unnoticed.
        raise MetaoptError(
            f"--objective {objective!r} has an empty name; give names separated by commas,"
            " e.g. --objective loss,acc"
        )
    for name in objectives:
        try:
            check_name(name)
        except WorkerError as exc:
            raise MetaoptError(f"{source}: {exc}") from None
    if len(set(objectives)) < len(objectives):
        raise MetaoptError(f"--objective {','.join(objectives)} names an objective twice")
    if len(objectives) > MAX_METRICS:  # (no report could hold them all: every trial failed)
        raise MetaoptError(f"--objective names {len(objectives)} objectives; at most {MAX_METRICS}")
    if "step" in objectives:
        raise MetaoptError(
            f"{source} step: 'step' is a report's step; name the objective otherwise"
        )
    if regex is not None:
        if len(objectives) > 1:
            raise MetaoptError(
                "--objective-regex reports one objective; with several, have the program "
                "print a METAOPT {json} line or call metaopt.report"
            )
        try:
            # As the peers compile it: one they would refuse is refused here.
            pattern = compile_objective_regex(str(regex))
        except re.error as exc:
            raise MetaoptError(
                f"--objective-regex {regex!r} is not a regular expression: {exc}"
            ) from None
        _check_groups(str(regex), pattern, objectives[0])
    directions = _directions(options.get("maximize"), objectives)
    blobs: list[Record] = []
    chunks: dict[bytes, bytes] = {}
    bundle: dict[str, Any] | None
    if options.get("no_bundle"):
        if options.get("max_bundle_mb") is not None:  # (it was taken without a word)
            raise MetaoptError(
                "--max-bundle-mb bounds a bundle, and --no-bundle sends none; drop one"
            )
        bundle = {"shared_dir": str(cwd.resolve())}
    else:
        # The program's folder (`sub/run` sends sub/); a script's, for an interpreter, only
        # when it lies outside the folder submitted from (`python3 ../w5/p.py`): `bash
        # scripts/run.sh` that runs train.py from here needs all of it.
        if at == 0:
            root = script_path.parent if script_path.exists() else cwd
        else:
            root = cwd if _inside(script_path, cwd) else script_path.parent
        most = HARD_MAX_BYTES >> 20
        max_mb = _as_int(options, "max_bundle_mb", "--max-bundle-mb", ranged=False)
        if max_mb is not None and not 1 <= max_mb <= most:
            why = ": peers refuse larger bundles; keep data out of the script's folder or use"
            why = f"{why} --no-bundle" if max_mb > most else ""
            raise MetaoptError(f"--max-bundle-mb must be between 1 and {most}{why}")
        max_bytes = max_mb * (1 << 20) if max_mb else DEFAULT_MAX_BYTES
        left_out: list[str] = []
        empty: list[str] = []
        manifest, chunks = collect_bundle(
            root, max_bytes=max_bytes, left_out=left_out, empty_left_out=empty
        )
        if empty:
            print(
                f"note: {len(empty)} empty folders (such as {empty[0]}) not sent to the peers,"
                f" more than {MAX_EMPTY_DIRS} or {MAX_EMPTY_DIR_BYTES >> 10} KiB of names; a"
                " trial on another machine that needs one must make it",
                file=sys.stderr,
            )
        if left_out:
            shown = ", ".join(left_out[:5]) + (
                f" and {len(left_out) - 5} more" if len(left_out) > 5 else ""
            )
            print(
                f"note: links left out of the code sent to the peers (to a folder, or out of"
                f" {root}): {shown}; the trials will not find them on other machines",
                file=sys.stderr,
            )
        bundle = {"manifest": manifest, "root": str(root.resolve())}
        # A script's word as typed, unless the peers would not find it from the bundle's
        # root: the program (sub/run is ./run there), an absolute path, or outside the folder.
        if script_path.exists() and (at == 0 or root != cwd or os.path.isabs(script)):
            try:
                script = script_path.resolve().relative_to(root.resolve()).as_posix()
            except ValueError:  # a link to a file outside the folder that is bundled
                raise MetaoptError(
                    f"{script} links to {script_path.resolve()}, outside {root.resolve()},"
                    " the folder sent to the peers; copy it into the folder, submit the"
                    " file it links to, or use --no-bundle on a shared file system"
                ) from None
        _check_sent(script, script_path, root, manifest_paths(manifest))
    if at == 0 and "/" not in script and not script.endswith(".py") and script_path.is_file():
        script = "./" + script  # a file, not a command: exec would look "train" up on PATH
    if at > 0 and "/" in program:
        # An interpreter by its path (a venv's or conda's python): not sent, so run from
        # where it is, not from the trial's copy of the folder. (Not resolved: a venv's
        # python is a link, and finds its packages by the link's path.)
        program = os.path.abspath(program_path)
        print(f"note: every peer runs {program}: it must be there on each machine", file=sys.stderr)
    words = [program, *template_words[1:]]
    words[at] = script
    command = tuple(words)
    max_step = _as_int(options, "max_step", "--max-step")
    if (conflict := space.max_step_conflict(max_step)) is not None:
        raise MetaoptError(f"--max-step {conflict}")
    spec = ExperimentSpec(
        name=_name(options.get("name"), template_words, cwd),
        space=space.to_dict(),
        objectives=objectives,
        directions=directions,
        algorithm=algorithm,
        max_trials=_as_int(options, "max_trials", "--max-trials"),
        command=command,
        bundle=bundle,
        objective_regex=None if regex is None else str(regex),
        early_stopping=early,
        max_step=max_step,
        nonce=secrets.token_hex(8),
        options=_spec_options(options),
    )
    # The submit time, not 0: `status NAME` and `stop NAME` act on the latest of a name.
    now = int(time.time() * 1000)
    try:
        experiment = experiment_record(spec, time_ms=now)
    except OversizedRecord:
        raise _too_large(spec) from None
    # The code's blobs follow the experiment (seq 1) under its origin, derived from this
    # submission alone: each origin is one more entry in every version vector, for good.
    for seq, (digest, data) in enumerate(sorted(chunks.items()), start=2):
        blobs.append(Record.create(BLOB, experiment.origin, seq, now, {"data": data}, [digest]))
    return experiment, blobs


def _too_large(spec: ExperimentSpec) -> MetaoptError:
    """What to do about an experiment too large for a record: its largest part named (any
    part was taken for the bundle's file list, and with --no-bundle crdt's own words said to
    split the record, which no user can do)."""
    record = f"one experiment record ({MAX_RECORD_SIZE >> 20} MiB)"
    bundle = spec.bundle or {}
    words = spec.command or ()

    def size(value: Any) -> int:
        return len(msgpack.packb(value, use_bin_type=True))

    parts = {
        "files": size(bundle.get("manifest")),
        "command": size([w for w in words if not _is_prior(w)]),
        # Its priors twice: as written in the command (--c~choices([...])) and as read.
        "space": size(spec.space) + size([w for w in words if _is_prior(w)]),
    }
    largest = max(parts, key=lambda part: parts[part])
    if largest == "files":
        return MetaoptError(
            f"{bundle['root']} holds {len(bundle['manifest']['files'])} files, more than {record}"
            " can list; move data out of the folder, or use --no-bundle on a shared file system"
        )
    if largest == "command":
        return MetaoptError(
            f"the command is {parts['command']:,} bytes, more than {record} holds; pass large"
            " values in a file the script reads (sent with its folder), not on its command line"
        )
    return MetaoptError(
        f"the space takes {parts['space']:,} bytes (each prior as written and as read), more"
        f" than {record} holds; use fewer or shorter choices (an index into a list of your"
        " own, say)"
    )


def _check_groups(regex: str, pattern: Any, objective: str) -> None:
    """Refuse a regex whose number (peers read its first group) is not the objective's: a
    first group named otherwise (`--objective loss` with (?P<accuracy>...) minimised the
    accuracies as the loss), or the objective's named group behind another; note one that
    has no group, or several with the first unnamed (which one is the number)."""
    named: dict[str, int] = dict(pattern.groupindex)
    first = next((n for n, i in named.items() if i == 1), None)
    if first is not None and first != objective:
        raise MetaoptError(
            f"--objective-regex {regex!r} names its number {first!r}, but --objective is"
            f" {objective!r}; name the group (?P<{objective}>...) or leave out --objective"
        )
    if named.get(objective, 1) != 1:
        raise MetaoptError(
            f"--objective-regex {regex!r}: make (?P<{objective}>...) its first group"
            " (write the others as (?:...))"
        )
    if not pattern.groups:
        print(
            f"note: --objective-regex {regex!r} has no group, so all it matches must be"
            f" the number{CAPTURE_HINT}",
            file=sys.stderr,
        )
    elif pattern.groups > 1 and first is None:
        # 'epoch (\d+): acc = ([0-9.]+)' recorded the epoch, without a word.
        print(
            f"note: --objective-regex {regex!r} has {pattern.groups} groups; the number is"
            " group 1's: write the others as (?:...), or name the number's group first"
            f" (?P<{objective}>...)",
            file=sys.stderr,
        )


def _name(given: Any, words: list[str], cwd: Path) -> str:
    """--name, else the stem of the script run: `sh s3/train.sh` and `python -u train.py` are
    both "train", not "sh" and "python"."""
    if given is None:
        # The script's word, not the first that is a file: an interpreter given by its path
        # (`-- /opt/conda/envs/torch/bin/python train.py`, `.venv/bin/python train.py`) named
        # every such experiment "python".
        stem = Path(words[_script_word(words, cwd)]).stem[:MAX_NAME].strip()
        return "experiment" if name_problem(stem) else stem
    name = str(given)
    if not name:
        # It fell back to the script's name: a script's `--name "$RUN"` with RUN unset
        # replaced the previous run of that script unnoticed.
        raise MetaoptError("--name is empty; give a name, or leave out --name for the script's")
    if (problem := name_problem(name)) is not None:
        raise MetaoptError(f"--name: {problem}")
    if name != name.strip():
        # Shown in a table it reads as its stripped self, which then finds nothing.
        raise MetaoptError(f"--name {name!r} starts or ends with a space; give {name.strip()!r}")
    return name


def _spec_options(options: dict[str, Any]) -> dict[str, Any]:
    """What goes in the spec's options (read by _records' accessors)."""
    out: dict[str, Any] = {}
    timeout = _as_seconds(options, "trial_timeout", "--trial-timeout")
    if timeout is not None:
        out["trial_timeout"] = timeout
    return out


def _directions(maximize: Any, objectives: tuple[str, ...]) -> tuple[str, ...]:
    """Each objective's direction: --maximize alone maximizes all, --maximize=a,b those."""
    if maximize is None or isinstance(maximize, bool):
        return ("maximize" if maximize else "minimize",) * len(objectives)
    if str(maximize).lower() in _TRUE + _FALSE:
        return _directions(str(maximize).lower() in _TRUE, objectives)
    chosen = {o.strip() for o in str(maximize).split(",") if o.strip()}
    strangers = sorted(chosen - set(objectives))
    if not chosen:
        raise MetaoptError(
            f"--maximize={maximize} names no objective; give --maximize alone to maximize"
            f" them all, or --maximize=NAME for some of {', '.join(objectives)}"
        )
    if strangers:
        raise MetaoptError(
            f"--maximize={maximize} names {', '.join(strangers)}, not one of the objectives"
            f" ({', '.join(objectives)}); give it alone to maximize them all"
        )
    return tuple("maximize" if o in chosen else "minimize" for o in objectives)


def _path_of(word: str, cwd: Path) -> Path:
    return Path(word) if os.path.isabs(word) else cwd / word


def _script_word(words: list[str], cwd: Path) -> int:
    """Which word names the code to run: the program (0), unless it is an interpreter or
    tool (`python3`, `bash`, `/opt/conda/envs/torch/bin/python`, a python inside the folder)
    followed by a file (its script, past any options; none after -m or -c), then that file's
    (or a file its options name: inside the folder, the folder is sent either way)."""
    program = words[0]
    path = _path_of(program, cwd)
    if program.endswith(".py") or (
        _is_file(path) and _inside(path, cwd) and not path.name.startswith("python")
    ):
        return 0
    for at, word in enumerate(words[1:], start=1):
        if _code_follows(word):
            return 0  # a module or a command, not a file
        if "~" not in word and not word.startswith("-") and _is_file(_path_of(word, cwd)):
            return at
    return 0


def _code_follows(word: str) -> bool:
    """Whether an interpreter's option says a module or a command follows, not a script: -m
    or -c, with the module or code attached or not (python3 -mtrain.main), or ending a
    cluster of short options (bash -lc, sh -euxc, python -um). Not a letter inside one: in
    perl -Mstrict, ruby -rcsv or python -Wonce the rest is the option's value."""
    if word[:1] != "-" or word[1:2] == "-":
        return False
    return word[1:2] in ("c", "m") or _SHORT_CLUSTER.fullmatch(word) is not None


_SHORT_CLUSTER = re.compile(r"-[A-Za-z]*[cm]")

# What a script's name ends with, after an interpreter (`python3 train.py`, `bash run.sh`).
_SCRIPT_SUFFIXES = (".py", ".sh", ".bash", ".R", ".r", ".jl", ".pl", ".rb", ".js", ".lua")


def _check_missing_script(words: list[str], cwd: Path) -> None:
    """Refuse an interpreter's script that is not there (`-- python3 nosuch.py`): submitted,
    every trial failed on "can't open file", and a file named later (--data t.py) was taken
    for the script to send (a script named first is refused as missing)."""
    program = _path_of(words[0], cwd)
    if words[0].endswith(".py") or (_is_file(program) and _inside(program, cwd)):
        return  # (the program is the folder's own: its arguments are its business)
    for word in words[1:]:
        if _code_follows(word):
            return  # a module or a command, not a file
        if "~" in word or word.startswith("-"):
            continue
        if word.endswith(_SCRIPT_SUFFIXES) and not _is_file(_path_of(word, cwd)):
            raise MetaoptError(f"{word}: no such script in {cwd}; check the path")
        return  # (the first plain word after the interpreter is its script, if any)


def _check_sent(script: str, script_path: Path, root: Path, sent: list[str]) -> None:
    """Refuse a bundle without the script the peers will run (its word as they run it, from
    the bundle's root), or without any of the folder's files: submitted from a folder git
    ignores, the bundle held no file, and every trial on every peer failed on "can't open
    file" (or "No module named" for `python3 -m`)."""
    if _is_file(script_path) and _inside(script_path, root) and not os.path.isabs(script):
        if os.path.normpath(script) not in sent:
            raise MetaoptError(
                f"{script} is left out of the code sent to the peers (git ignores it, or it"
                " is in a folder never sent: hidden, venv, node_modules); let git see it, or"
                " use --no-bundle on a shared file system"
            )
    elif not sent and any(_is_file(p) for p in root.iterdir() if not p.name.startswith(".")):
        raise MetaoptError(
            f"none of the files of {root} is sent to the peers (git ignores them all?); let git"
            " see them, or use --no-bundle on a shared file system"
        )


def _is_file(path: Path) -> bool:
    """Path.is_file, false for a word that can be no file's name: it raised on a word too
    long for one (a program word of 300 characters was a traceback)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _inside(path: Path, folder: Path) -> bool:
    """Whether path is in folder, links followed: a project's .venv/bin/python links out."""
    return path.resolve().is_relative_to(folder.resolve())


def _check_program(program: str, path: Path, cwd: Path) -> None:
    """Refuse a program no peer could start: missing, or a file without the execute bit."""
    if program.endswith(".py"):
        if not _is_file(path):
            raise MetaoptError(f"{program}: no such script in {cwd}; check the path")
        return  # run with the peer's Python
    if "/" not in program and not _is_file(path):
        option = program.split("=", 1)[0]
        close = difflib.get_close_matches(option, _OPTIONS, n=1, cutoff=0.75)
        if program.startswith("--") and close:
            # The first word submit does not know starts the program: a misspelt option
            # was taken for the program's name.
            raise MetaoptError(
                f"{option}: not an option of submit; did you mean {close[0]}? (the program"
                " starts at the first word submit does not know)"
            )
        if shutil.which(program) is None:
            raise MetaoptError(
                f"{program}: not a file in {cwd} nor a command on PATH; check the name"
            )
        return
    if not _is_file(path):
        raise MetaoptError(f"{program}: no such program; check the path")
    if not os.access(path, os.X_OK):
        raise MetaoptError(
            f"{program} is not executable; chmod +x {program}, or name its interpreter "
            f"first (e.g. bash {program})"
        )
    try:
        with path.open("rb") as f:
            head = f.readline(4096)
    except OSError:
        return  # unreadable here; the peer says why if it cannot start it either
    if head[:2] == b"#!" and head.endswith(b"\r\n"):
        # The kernel takes the \r for part of the interpreter's name: every trial failed
        # "No such file or directory" (or env's own riddle), the file being right there.
        raise MetaoptError(
            f"{program} has Windows line endings (its #! line ends in \\r), so it cannot be"
            f" started; convert it, e.g. dos2unix {program}"
        )
    if head[:2] != b"#!" and head[:4] != b"\x7fELF":
        # A shell runs such a file itself; exec (how a peer starts a trial) refuses it.
        raise MetaoptError(
            f"{program} has no #! line, so it cannot be started on its own; add one "
            f"(e.g. #!/bin/sh), or name its interpreter first (e.g. sh {program})"
        )


def submit(args: argparse.Namespace) -> int:
    notes: list[str] = []
    options, words = split_submit_args(list(args.words), notes)
    for note in notes:
        print(note, file=sys.stderr)
    options = merge_config(options)
    experiment, blobs = build_submission(options, words, Path.cwd())
    given_dir = options.get("data_dir")
    # The printed commands ask the same peer: without it they asked another.
    data_dir = None if given_dir is None else str(given_dir)
    peer = LocalPeer(resolve_data_dir(given_dir))
    name = experiment.body["name"]
    namesakes = [e for e in fetch_experiments(peer) if e.get("name") == name]
    earlier = [e["id"][:12] for e in namesakes]
    # As `metaopt stop` counts them: resubmitting does not stop the earlier one.
    running = [e["id"][:12] for e in namesakes if not (e.get("stopped") or e.get("finished"))]
    # Blobs first in their own calls so a large bundle never makes one huge request, and the
    # experiment last, so no peer ever sees an experiment whose code has not been stored here.
    batch: list[bytes] = []
    size = 0
    for blob in blobs:
        if batch and size + len(blob.data) > (8 << 20):
            peer.call("api.add", batch)
            batch, size = [], 0
        batch.append(blob.data)
        size += len(blob.data)
    if batch:
        peer.call("api.add", batch)
    peer.call("api.add", [experiment.data])
    note, word = (
        _name_note(peer, name, experiment.key.hex(), earlier, data_dir) if earlier else ("", name)
    )
    if options.get("json"):
        print(json.dumps({"id": experiment.key.hex(), "name": name}))
    else:
        print(f"submitted experiment {name!r} ({experiment.key.hex()[:12]})")
        print(f"follow it with: {command('status', word, data_dir=data_dir)}")
    if note:
        print(note, file=sys.stderr)
    for short in running:
        again = command("stop", short, data_dir=data_dir)
        print(f"note: the earlier {name} ({short}) still runs; `{again}` stops it", file=sys.stderr)
    if options.get("wait") and experiment.body.get("max_trials") is None:
        print(
            "note: no --max-trials, so the search goes on until"
            f" `{command('stop', word, data_dir=data_dir)}`; --wait follows it until then"
            " (Ctrl-C leaves it running)",
            file=sys.stderr,
        )
    if options.get("wait"):
        # With --json, stdout holds only the JSON line: progress goes to stderr.
        out = sys.stderr if options.get("json") else None
        try:
            return wait_for(peer, experiment.key.hex(), out=out, data_dir=data_dir)
        except KeyboardInterrupt:
            # (It ended without a word, the experiment running on out of sight.) By id: a
            # later submission may have taken the name meanwhile (see wait_for).
            short = experiment.key.hex()[:12]
            follow, stop = (command(c, short, data_dir=data_dir) for c in ("status", "stop"))
            print(
                f"\nstopped following {name} ({short}); it runs on: `{follow}` follows it,"
                f" `{stop}` stops it",
                file=sys.stderr,
            )
            raise
    return 0


def _name_note(
    peer: LocalPeer, name: str, mine: str, earlier: list[str], data_dir: str | None
) -> tuple[str, str]:
    """What the name means now that this experiment is submitted under it, and the word that
    reaches this one: the name, unless a namesake carries a later stamp (submitted where the
    clock ran ahead, or this one's behind; see Replica.named), which every peer then takes
    for the latest."""
    try:
        listed = fetch_experiments(peer)
    except MetaoptError:  # (submitted all the same; the peer went away just after)
        listed = []
    me = next((e for e in listed if e.get("id") == mine), None)
    if me is None or me.get("latest", True):
        # The latest few (after 15 submissions the note ran to 200 characters of ids).
        shown = ", ".join(earlier[-3:])
        if len(earlier) > 3:
            shown += f" and {len(earlier) - 3} more (`{command('status', data_dir=data_dir)}`)"
        return (
            f"note: the name {name!r} now means this experiment; its earlier namesakes are"
            f" reached by id: {shown}"
        ), name
    winner = next((e["id"][:12] for e in listed if e.get("name") == name and e.get("latest")), "?")
    return (
        f"note: the name {name!r} still means {winner}, stamped later than this one (a clock"
        f" ahead where that was submitted, or behind here); reach this one by its id {mine[:12]}"
    ), mine[:12]
