"""`metaopt submit --wait`: follow a submitted experiment on the local peer until it is done.

Progress is one line, rewritten in place on a terminal; the follow ends when the budget is
spent and nothing runs, or when the experiment is stalled here (every point tried, nothing
running), and says why trials fail and what keeps a spent experiment open.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any, TextIO

from metaopt._errors import MetaoptError
from metaopt._state import FROZEN_BY_HAND, TERMINAL_STATES
from metaopt.cli._format import (
    best_summary,
    command,
    experiment_word,
    fmt_value,
    json_text,
    printable,
    state_summary,
)
from metaopt.peer._local import LocalPeer, fetch_experiment, fetch_experiments

__all__ = ["wait_for"]


def _by_hand(trial: dict[str, Any]) -> bool:
    return bool(trial["state"] == "frozen" and trial["reason"] == FROZEN_BY_HAND)


def _only_paused(info: dict[str, Any]) -> int:
    """How many trials frozen by hand are all that keep a spent experiment open (else 0)."""
    trials = info.get("trial_list", [])
    spent = info["max_trials"] is not None and info["trials"] >= info["max_trials"]
    if not spent or any(t["state"] in ("pending", "running") for t in trials):
        return 0
    open_ = [t for t in trials if t["state"] not in TERMINAL_STATES]
    hand = [t for t in open_ if _by_hand(t)]
    return len(hand) if len(hand) == len(open_) else 0


def _stalled_here(info: dict[str, Any]) -> str | None:
    """Why nothing will happen to an unfinished experiment: every point of its space is tried,
    so no peer starts a new trial, and no trial runs or waits to. (A reason of this peer's
    alone, a program it cannot run say, is not one: another peer may run it.)"""
    why = info.get("exhausted")
    open_ = [t for t in info.get("trial_list", []) if t["state"] not in TERMINAL_STATES]
    if not why or not all(_by_hand(t) for t in open_):
        return None
    return str(why)


def wait_for(
    peer: LocalPeer,
    experiment: str,
    interval: float = 1.0,
    out: TextIO | None = None,
    patience: int = 5,
    data_dir: str | None = None,
) -> int:
    """Show live progress on out (stdout) until the budget is spent and nothing runs, or until
    patience polls in a row find the experiment stalled here (see ``_stalled_here``; the
    polls leave other peers, which may start what this one cannot, time to).

    Returns the exit code: 0 with a completed trial, 1 when every trial failed or was killed.
    ``data_dir`` is the --data-dir the user gave, for the commands it prints.
    """
    out = out or sys.stdout
    last = ""
    tty = out.isatty()
    hinted = False
    stalled = 0
    said_failure = None
    info: dict[str, Any] | None = None
    while True:
        try:
            # The trials not ended are all a poll needs (see _only_paused): the whole list
            # of a long experiment, every second, was most of a peer's work.
            info = fetch_experiment(peer, experiment, trials="open")
        except MetaoptError as exc:
            if info is None:
                raise
            # By id: whether a later submission took the name, no peer here can say.
            again = command("status", experiment_word(info, None))
            raise MetaoptError(
                f"{exc}; {info['name']} goes on on the other peers: `{again}` on one of"
                " them (or here once this peer is back) follows it"
            ) from None
        counts = info["counts"]
        total = info["max_trials"] or "∞"
        line = (
            f"{info['name']}: {state_summary(counts, info['thawed'])},"
            f" {info['trials']}/{total} trials, best {fmt_value(best_summary(info))}"
        )
        if line != last:
            # On a terminal the line is rewritten in place, its old end erased (a shorter line
            # left "best 0.0959est 0.34508" on screen).
            # Cut to the terminal's width: a wrapped line's first rows stayed on screen, as
            # \r returns to the start of the last row only.
            width = shutil.get_terminal_size().columns - 1
            cut = line if len(line) <= width else line[: max(width - 3, 0)] + "..."
            shown = f"\r{cut}\x1b[K" if tty else line
            print(shown, end="" if tty else "\n", flush=True, file=out)
            last = line
        failure = info.get("last_failed")
        if failure and failure["reason"] != said_failure:
            # Trials failing for a reason --wait never said: a script that failed at import
            # showed "0 done, 8 failed" for good, the why only in the peer's log.
            said_failure = failure["reason"]
            print(
                ("\n" if tty else "")
                + printable(f"trial {failure['id'][:12]} failed: {said_failure}"),
                flush=True,
                file=out,
            )
            if tty:
                last = ""  # the progress line is drawn again below it
        if info["finished"]:
            break
        paused = _only_paused(info)
        if paused and not hinted:
            # Only the peer that froze a trial may thaw it while it is live (once it is gone,
            # any peer may, from step 0 unless it holds the checkpoint): name that peer.
            hand = [t for t in info["trial_list"] if _by_hand(t)]
            where = ", ".join(
                f"{t['id'][:12]} on node {(t['runner'] or '?')[:8]}" for t in hand[:3]
            )
            print(
                ("\n" if tty else "")  # after the progress line, which had none
                + f"{info['name']}: the budget is spent and {paused} trial(s) frozen by hand"
                f" keep it open ({where}{', ...' if len(hand) > 3 else ''});"
                " `metaopt thaw TRIAL` on the peer that froze it (on any peer once that one"
                " is gone) resumes one,"
                f" `{command('stop', _word(peer, info), data_dir=data_dir)}` ends it",
                flush=True,
                file=out,
            )
            hinted = True
        why = _stalled_here(info)
        stalled = stalled + 1 if why else 0
        if stalled >= patience:
            print(
                ("\n" if tty else "")
                + f"{info['name']}: nothing runs and no new trial can start: {why}; --wait"
                f" stops here (`{command('stop', _word(peer, info), data_dir=data_dir)}` ends"
                " the experiment)",
                flush=True,
                file=out,
            )
            break
        time.sleep(interval)
    if tty:
        print(file=out)
    if info["finished"] and info.get("stopped"):
        # Stopped by someone else (or another shell): its best came with no word of why the
        # budget was not reached, as if the experiment had run its course.
        print(f"{info['name']}: stopped (`metaopt stop`) after {info['trials']} trials", file=out)
    if info["best"] and len(info["objectives"]) > 1:
        again = command("best", _word(peer, info), data_dir=data_dir)
        print(f"best: a front of {len(info['best'])}; `{again}` lists it", file=out)
        return 0
    if info["best"]:
        best_trial = info["best"][0]
        params = json_text(best_trial["params"])
        print(f"best {fmt_value(best_trial['value'])} with {params}", file=out)
        return 0
    # Exit 1, as `metaopt best` does: `submit --wait && next-step` must not go on.
    again = command("status", _word(peer, info), data_dir=data_dir)
    print(f"{info['name']}: no trial completed; `{again}` says why", file=out)
    return 1


def _word(peer: LocalPeer, info: dict[str, Any]) -> str:
    """How a printed command names the experiment --wait follows: by its name while the name
    finds it, else (a later submission took the name, or the peer cannot say) by its id."""
    try:
        listed = fetch_experiments(peer)
    except MetaoptError:
        listed = []
    latest = any(e["id"] == info["id"] and e.get("latest", True) for e in listed)
    return experiment_word(info, info["name"] if latest else None)
