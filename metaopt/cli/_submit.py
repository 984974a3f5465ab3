"""`metaopt submit`: turn a command line with ~priors into an experiment on the local peer.

Options are recognised anywhere before a ``--``; every other word is the command template, in
order. After ``--`` every word is the template verbatim, for programs whose own options would
collide with ours.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from crdt import ORIGIN_SIZE, Record
from metaopt._errors import MetaoptError
from metaopt._records import BLOB, ExperimentSpec, experiment_record
from metaopt.cli._format import fmt_value, state_summary
from metaopt.peer._bundle import DEFAULT_MAX_BYTES, HARD_MAX_BYTES, collect_bundle
from metaopt.peer._local import LocalPeer, resolve_data_dir
from metaopt.peer._template import parse_template
from metaopt.space import Space

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
    "--config": (True, "config"),
    "--data-dir": (True, "data_dir"),
    "--no-bundle": (False, "no_bundle"),
    "--max-bundle-mb": (True, "max_bundle_mb"),
    "--wait": (False, "wait"),
    "--json": (False, "json"),
}
_ALGORITHMS = ("auto", "gp", "evolution", "random")
_EARLY = ("freeze-thaw", "asha", "median", "none")


def add_submit_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "submit",
        help="submit an experiment: metaopt submit train.py --lr~'loguniform(1e-5, 1)'",
        description="Options: " + " ".join(sorted(_OPTIONS)) + ". Everything else (and all"
        " after --) is the command; each --x~prior, --x=~prior or ~prior word is a parameter.",
    )
    p.add_argument("words", nargs=argparse.REMAINDER)
    p.set_defaults(func=submit)


def split_submit_args(words: list[str]) -> tuple[dict[str, Any], list[str]]:
    """(options, template words) from a submit command line."""
    options: dict[str, Any] = {}
    template: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            template.extend(words[i + 1 :])
            break
        name, eq, inline = word.partition("=")
        spec = _OPTIONS.get(name) if "~" not in word else None
        if spec is None:
            template.append(word)
            i += 1
            continue
        takes_value, dest = spec
        if not takes_value:
            options[dest] = True
            i += 1
            continue
        if eq:
            options[dest] = inline
            i += 1
        elif i + 1 < len(words):
            options[dest] = words[i + 1]
            i += 2
        else:
            raise MetaoptError(f"{name} needs a value")
    return options, template


def _load_config(path: str) -> dict[str, Any]:
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise MetaoptError(f"{path} must hold a mapping of submit options")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _as_int(options: dict[str, Any], key: str, flag: str) -> int | None:
    value = options.get(key)
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise MetaoptError(f"{flag} needs a whole number, got {value!r}") from None
    if number < 1:
        raise MetaoptError(f"{flag} must be at least 1")
    return number


def build_submission(
    options: dict[str, Any], template_words: list[str], cwd: Path
) -> tuple[Record, list[Record]]:
    """The experiment record and its code blobs, validated; nothing is sent yet."""
    if options.get("config"):
        merged = _load_config(options["config"])
        merged.update(options)
        options = merged
        template_words = template_words or list(merged.get("command") or [])
    if not template_words:
        raise MetaoptError(
            "nothing to run: metaopt submit train.py --lr~'loguniform(1e-5, 1)'"
            " (or -- ./program --x~'uniform(0, 1)')"
        )
    template = parse_template(template_words)
    if not template.priors:
        raise MetaoptError(
            "no parameter to search: mark them with ~, e.g. --lr~'loguniform(1e-5, 1)'"
        )
    space = Space.from_dict(template.priors)
    program = template_words[0]
    program_path = (cwd / program) if not os.path.isabs(program) else Path(program)
    if program.endswith(".py") and not program_path.is_file():
        raise MetaoptError(f"{program}: no such script in {cwd}; check the path")
    algorithm = str(options.get("algorithm") or "auto")
    if algorithm not in _ALGORITHMS:
        raise MetaoptError(f"--algorithm {algorithm!r}: choose one of {', '.join(_ALGORITHMS)}")
    early = options.get("early_stopping")
    if early is not None and early not in _EARLY:
        raise MetaoptError(f"--early-stopping {early!r}: choose one of {', '.join(_EARLY)}")
    objective = options.get("objective") or "loss"
    objectives = tuple(o.strip() for o in str(objective).split(",") if o.strip())
    direction = "maximize" if options.get("maximize") else "minimize"
    blobs: list[Record] = []
    bundle: dict[str, Any] | None
    if options.get("no_bundle"):
        bundle = {"shared_dir": str(cwd.resolve())}
    else:
        root = program_path.parent if program_path.exists() else cwd
        max_mb = _as_int(options, "max_bundle_mb", "--max-bundle-mb")
        if max_mb and max_mb > HARD_MAX_BYTES >> 20:
            raise MetaoptError(
                f"--max-bundle-mb can be at most {HARD_MAX_BYTES >> 20}: peers refuse larger "
                "bundles; keep data out of the script's folder or use --no-bundle"
            )
        max_bytes = max_mb * (1 << 20) if max_mb else DEFAULT_MAX_BYTES
        manifest, chunks = collect_bundle(root, max_bytes=max_bytes)
        bundle = {"manifest": manifest, "root": str(root.resolve())}
        origin = secrets.token_bytes(ORIGIN_SIZE)
        now = int(time.time() * 1000)
        for seq, (digest, data) in enumerate(sorted(chunks.items()), start=1):
            blobs.append(Record.create(BLOB, origin, seq, now, {"data": data}, [digest]))
        if program_path.exists():
            program = str(program_path.resolve().relative_to(root.resolve()))
    command = (program, *template_words[1:])
    spec = ExperimentSpec(
        name=str(options.get("name") or Path(template_words[0]).stem),
        space=space.to_dict(),
        objectives=objectives,
        directions=(direction,) * len(objectives),
        algorithm=algorithm,
        max_trials=_as_int(options, "max_trials", "--max-trials"),
        command=command,
        bundle=bundle,
        objective_regex=options.get("objective_regex"),
        early_stopping=early,
        max_step=_as_int(options, "max_step", "--max-step"),
        nonce=secrets.token_hex(8),
    )
    return experiment_record(spec), blobs


def submit(args: argparse.Namespace) -> int:
    options, words = split_submit_args(list(args.words))
    experiment, blobs = build_submission(options, words, Path.cwd())
    peer = LocalPeer(resolve_data_dir(options.get("data_dir")))
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
    name = experiment.body["name"]
    if options.get("json"):
        print(json.dumps({"id": experiment.key.hex(), "name": name}))
    else:
        print(f"submitted experiment {name!r} ({experiment.key.hex()[:12]})")
        print(f"follow it with: metaopt status {name}")
    if options.get("wait"):
        return wait_for(peer, experiment.key.hex())
    return 0


def wait_for(peer: LocalPeer, experiment: str, interval: float = 1.0) -> int:
    """Show live progress until the experiment's budget is spent and nothing runs."""
    last = ""
    tty = sys.stdout.isatty()
    while True:
        info = peer.call("api.experiment", experiment)
        counts = info["counts"]
        best = info["best"][0]["value"] if info["best"] else None
        total = info["max_trials"] or "∞"
        line = (
            f"{info['name']}: {state_summary(counts, info['thawed'])},"
            f" {info['trials']}/{total} trials, best {fmt_value(best)}"
        )
        if line != last:
            print(("\r" + line) if tty else line, end="" if tty else "\n", flush=True)
            last = line
        if info["finished"]:
            break
        time.sleep(interval)
    if tty:
        print()
    if info["best"]:
        best_trial = info["best"][0]
        print(f"best {fmt_value(best_trial['value'])} with {json.dumps(best_trial['params'])}")
    return 0
