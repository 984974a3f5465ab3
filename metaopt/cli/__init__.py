"""The `metaopt` command: peer start/stop/status/key, submit, status, best, export, stop, logs."""

from __future__ import annotations

import argparse
import os
import sys

from metaopt._errors import MetaoptError

__all__ = ["main"]


def _run_submit(args: argparse.Namespace) -> int:
    from metaopt.cli._submit import submit

    return submit(args)


def _parser() -> argparse.ArgumentParser:
    from metaopt.cli._peer import add_peer_commands
    from metaopt.cli._read import add_read_commands
    from metaopt.cli._submit import add_submit_command

    parser = argparse.ArgumentParser(
        prog="metaopt", description="Hyperparameter search with no master."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_peer_commands(sub)
    add_submit_command(sub)
    add_read_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user's mistake is one line on stderr and exit status 2."""
    parser = _parser()
    words = sys.argv[1:] if argv is None else list(argv)
    if words[:1] == ["submit"] and not set(words[1:2]) & {"-h", "--help"}:
        # submit's words are a command template with our options mixed in: argparse would
        # mistake the template's own options for ours, so submit splits them itself.
        args = argparse.Namespace(words=words[1:], func=_run_submit)
    else:
        args = parser.parse_args(words)
    try:
        return int(args.func(args) or 0)
    except MetaoptError as exc:
        print(f"metaopt: {exc}", file=sys.stderr)
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
            print(f"metaopt: {exc}", file=sys.stderr)
            return 2
        raise
