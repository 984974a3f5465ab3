"""The `metaopt` command: peer start/stop/status/key, submit, status, best, export, stop, logs."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from typing import NoReturn, cast

from metaopt._errors import MetaoptError
from metaopt.cli._format import printable

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse's mistakes in one line, naming the command's help: it printed the usage of
    `metaopt` over three lines, then the mistake (`metaopt status --jsn` named no `status`)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}; see `{self.prog} -h`\n")


def _deepest(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)command parser that read ``args``: `metaopt peer start`'s for its options."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(str(getattr(args, action.dest, "")))
            if chosen is not None:
                return _deepest(chosen, args)
    return parser


def _unrecognised(parser: argparse.ArgumentParser, extra: list[str]) -> str:
    """What `metaopt CMD` did not take, with the option meant where one is close."""
    options = [o for a in parser._actions for o in a.option_strings]
    said = f"{parser.prog}: unrecognized argument(s) {' '.join(extra)}"
    for word in extra:
        # A bare word is held to a closer match: `status sweep json` meant --json, but a
        # stray positional should not be offered any option that shares a few letters.
        dashed, cutoff = (word, 0.75) if word.startswith("-") else ("--" + word, 0.85)
        close = difflib.get_close_matches(dashed.partition("=")[0], options, n=1, cutoff=cutoff)
        if close:
            said += f" (did you mean {close[0]}?)"
            break
    return f"{said}; see `{parser.prog} -h`"


def _run_submit(args: argparse.Namespace) -> int:
    from metaopt.cli._submit import submit

    return submit(args)


def _parser() -> argparse.ArgumentParser:
    from metaopt import __version__
    from metaopt.cli._peer import add_peer_commands
    from metaopt.cli._read import add_read_commands
    from metaopt.cli._submit import add_submit_command

    parser = _Parser(prog="metaopt", description="Hyperparameter search with no master.")
    # Every peer of a cluster runs one release: how to see which one this is.
    # With the protocol: releases between which peers refuse each other bore one number
    # (0.1.0 for protocols 6, 7 and 8), and the refusal said "run the same release".
    from metaopt.peer._wire import PROTOCOL_VERSION

    parser.add_argument(
        "--version",
        action="version",
        version=f"metaopt {__version__} (protocol {PROTOCOL_VERSION})",
    )
    # (The subcommands' parsers are _Parsers too: argparse makes them of the parent's class.)
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", required=True),
    )
    add_peer_commands(sub)
    add_submit_command(sub)
    add_read_commands(sub)
    return parser


def _undecodable(words: list[str]) -> str | None:
    """Why an argument cannot be taken, if one is not UTF-8: Python hands its bytes on as lone
    surrogates, which every later step refused with a traceback of its own (a record, a
    request, a prior's parser)."""
    for i, word in enumerate(words, 1):
        try:
            word.encode("utf-8")
        except UnicodeEncodeError:
            try:
                raw = word.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:  # not from the command line's bytes (main(argv))
                raw = word.encode("utf-8", "backslashreplace")
            shown = raw.decode("utf-8", "backslashreplace")
            return f"argument {i} ({shown}) is not valid UTF-8; type it in UTF-8"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user's mistake is one line on stderr and exit status 2."""
    try:
        # (It imports every command's modules, aiohttp and all: 0.3-0.9 s, in which a Ctrl-C
        # printed a traceback of 12-34 lines.)
        parser = _parser()
    except KeyboardInterrupt:
        return 130
    words = sys.argv[1:] if argv is None else list(argv)
    bad = _undecodable(words)
    if bad is not None:
        print(f"metaopt: {bad}", file=sys.stderr)
        return 2
    if words[:1] == ["submit"] and not set(words[1:2]) & {"-h", "--help"}:
        # submit's words are a command template with our options mixed in: argparse would
        # mistake the template's own options for ours, so submit splits them itself.
        args = argparse.Namespace(words=words[1:], func=_run_submit)
    else:
        args, extra = parser.parse_known_args(words)
        if extra:
            print(_unrecognised(_deepest(parser, args), extra), file=sys.stderr)
            return 2
    try:
        return int(args.func(args) or 0)
    except MetaoptError as exc:
        # Escaped: an error may quote what other peers wrote (an experiment's name), and one
        # with a terminal escape and a newline in it forged lines on the user's screen.
        print(f"metaopt: {printable(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `metaopt status | head`: the reader left. Point stdout at /dev/null so the flush at
        # exit does not raise again (the recipe in Python's signal module documentation).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:
        from crdt import CrdtError

        if isinstance(exc, CrdtError):
            print(f"metaopt: {printable(str(exc))}", file=sys.stderr)
            return 2
        if type(exc).__module__.startswith("plyvel"):
            # A replica damaged on disk past what its opening reads (a table cut short).
            print(
                f"metaopt: cannot read the replica ({exc}); restore it from a copy, or move the"
                " data directory aside",
                file=sys.stderr,
            )
            return 2
        raise
