"""`metaopt status|best|export|stop|logs|clean`: what this machine's replica knows, now."""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from typing import Any

from metaopt._collector import collector_paused
from metaopt._errors import MetaoptError
from metaopt._state import TERMINAL_STATES
from metaopt.cli._format import (
    best_summary,
    column_names,
    command,
    elided,
    experiment_word,
    fmt_value,
    json_text,
    printable,
    table,
    trial_state,
)
from metaopt.peer._identity import DataDir
from metaopt.peer._local import LocalPeer, fetch_experiment, fetch_experiments, resolve_data_dir
from metaopt.peer._offline import OfflinePeer

__all__ = ["add_read_commands"]

# JSON has no token for them: what json.dumps writes by default (Infinity, NaN) is not JSON.
_JSON_HELP = "as JSON (a number that is not finite as the string Infinity, -Infinity or NaN)"


def _peer(
    args: argparse.Namespace, read: bool = False, timeout: float | None = None
) -> LocalPeer | OfflinePeer:
    """The peer of the data directory, or its replica read in place if no peer runs there
    (``read``: the command only reads, and is told so; ``timeout``: seconds the live peer
    may take to answer, if not LocalPeer's)."""
    data_dir = resolve_data_dir(args.data_dir)
    dirs = DataDir(data_dir)
    # A peer killed -9 leaves its address file: the pid file says whether it runs (one that
    # names no pid says nothing: the address is tried).
    if dirs.address_file.exists() and (dirs.running_pid() or dirs.read_pid() is None):
        return LocalPeer(data_dir) if timeout is None else LocalPeer(data_dir, timeout)
    offline = OfflinePeer(data_dir, on_wait=lambda said: print(f"({said})", file=sys.stderr))
    if read:
        print(
            f"(no peer runs on {offline.dirs.root}: its replica as it was when it stopped)",
            file=sys.stderr,
        )
    return offline


def add_read_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = sub.add_parser("status", help="experiments, or one experiment's trials")
    status.add_argument("experiment", nargs="?")
    shown = status.add_mutually_exclusive_group()
    shown.add_argument(
        "--last",
        type=_count,
        default=None,
        metavar="N",
        help=f"an experiment's newest N trials (default {_LAST}; with --json, every one"
        " unless N is given)",
    )
    shown.add_argument("--all", action="store_true", help="every trial of the experiment")
    status.add_argument("--json", action="store_true", help=_JSON_HELP)
    status.add_argument("--data-dir", default=None)
    status.set_defaults(func=_status)

    best = sub.add_parser("best", help="the best trial (or Pareto front) of an experiment")
    best.add_argument("experiment")
    best.add_argument("--json", action="store_true", help=_JSON_HELP)
    best.add_argument("--data-dir", default=None)
    best.set_defaults(func=_best)

    export = sub.add_parser("export", help="every trial of an experiment as CSV or JSON")
    export.add_argument("experiment")
    export.add_argument(
        "--format", choices=("csv", "json"), default="csv", help=f"csv, or json: {_JSON_HELP}"
    )
    export.add_argument("--data-dir", default=None)
    export.set_defaults(func=_export)

    stop = sub.add_parser("stop", help="stop an experiment on every peer (no new trials)")
    stop.add_argument("experiment")
    stop.add_argument("--data-dir", default=None)
    stop.set_defaults(func=_stop)

    for verb, text in (
        ("freeze", "pause a trial running on this peer (it checkpoints and exits)"),
        ("thaw", "resume a trial this peer froze, from its checkpoint"),
        ("kill", "end a trial running on (or frozen by) this peer for good"),
    ):
        cmd = sub.add_parser(verb, help=text)
        cmd.add_argument("trial")
        cmd.add_argument("--data-dir", default=None)
        cmd.set_defaults(func=_freeze_thaw, verb=verb)

    logs = sub.add_parser("logs", help="a trial's output, or where it ran")
    logs.add_argument("trial")
    logs.add_argument("--data-dir", default=None)
    logs.set_defaults(func=_logs)

    clean = sub.add_parser(
        "clean", help="delete this machine's folders of ended trials (all but the best)"
    )
    clean.add_argument("experiment", nargs="*", help="by name or id; every experiment if none")
    clean.add_argument(
        "--keep",
        type=int,
        default=1,
        metavar="N",
        help="keep the folders of the N best completed trials of each experiment (default 1;"
        " with several objectives, the Pareto front)",
    )
    clean.add_argument("--dry-run", action="store_true", help="only say what it would free")
    clean.add_argument("--data-dir", default=None)
    clean.set_defaults(func=_clean)


def _status(args: argparse.Namespace) -> int:
    peer = _peer(args, read=True)
    if args.experiment is None:
        experiments = fetch_experiments(peer)
        if args.json:
            print(json_text(experiments, indent=2))
            return 0
        if not experiments:
            example = command("submit", "train.py", "--x~uniform(0, 1)", data_dir=args.data_dir)
            print(printable(f"no experiments yet; submit one with `{example}`"))
            return 0
        rows = []
        for e in experiments:
            c = e["counts"]
            state = _listed_state(e)
            name = elided(printable(str(e["name"])))
            rows.append(
                [
                    # A name finds its latest submission; the earlier ones are reached by id.
                    # One of 100,000 characters padded every row to as many columns.
                    name if e.get("latest", True) else f"{name} (earlier)",
                    e["id"][:12],
                    state,
                    f"{e['trials']}/{e['max_trials'] or '∞'}",
                    c.get("completed", 0),
                    # Lost and interrupted trials wait for a peer to run them again: they
                    # were in no column, and the columns did not add up to the trials. Not
                    # once it is stopped: then nothing starts again, and a lost trial there
                    # showed as running for good.
                    sum(c.get(s, 0) for s in _WAITING if not e["stopped"] or s == "running"),
                    c.get("frozen", 0),
                    # ...they are ended for good, as killed ones are: in no column, the
                    # columns did not add up to the trials again.
                    c.get("killed", 0)
                    + sum(c.get(s, 0) for s in _WAITING if e["stopped"] and s != "running"),
                    c.get("failed", 0),
                    best_summary(e),
                ]
            )
        headers = ["name", "id", "state", "trials", "done", "running", "frozen", "killed"]
        print(table([*headers, "failed", "best"], rows))
        return 0
    last = args.last if args.last is not None or args.json else _LAST
    last = None if args.all else last
    info = fetch_experiment(peer, args.experiment, last=last)
    if args.json:
        if last is not None:  # (an earlier release sends them all)
            listed = info["trial_list"]
            info = {**info, "trial_list": listed[max(len(listed) - last, 0) :]}
        print(json_text(info, indent=2))
        return 0
    print(_experiment_header(info))
    if _listed_state(info) == "exhausted":
        print(f"no peer starts a new trial of it: {printable(str(info['exhausted']))}")
    elif info.get("blocked_here"):  # (exhausted, this peer says the same in other words)
        print(f"this peer starts no new trial of it: {printable(str(info['blocked_here']))}")
    names = sorted(info["space"])
    objectives = info["objectives"]
    # A row and its cells for each of 60,000 trials, beside the million objects of the
    # reply: the collector's passes over them all were a fifth of the table's making.
    listed, older_open = info["trial_list"], []
    if last is not None:
        listed = listed[max(len(listed) - last, 0) :]  # (an earlier release sends them all)
        if len(listed) < info["trials"]:
            # Running or to run, however old: a trial running since the start was hidden
            # behind the newest 50, its node's silence with it. (Not frozen ones: under
            # freeze-thaw two trials in three are, and the list grew with the experiment.)
            newest = {t["id"] for t in listed}
            opened = fetch_experiment(peer, info["id"], trials="open")["trial_list"]
            # (Once stopped, only a running one: nothing starts again.)
            waiting = ("running",) if info["stopped"] else _WAITING
            older_open = [t for t in opened if t["id"] not in newest and t["state"] in waiting]
    with collector_paused():
        rows = [
            [t["id"][:12], trial_state(t["state"], t["thaws"])]
            + [_shown_value(t, o) for o in objectives]
            + [_step(t), (t["runner"] or t["node"])[:8]]
            + [t["params"].get(n) for n in names]
            + [_why(t)]
            for t in older_open + listed
        ]
        # "runner", as in export: the node that runs (ran) it, else the one that recorded it
        # ("node" there is always the one that recorded it).
        shown_names, shown_objectives = column_names(
            ["trial", "state", "step", "runner", "why"], names, objectives
        )
        headers = ["trial", "state", *shown_objectives, "step", "runner", *shown_names, "why"]
        shown = table(headers, rows)
    print(shown)
    if len(rows) < info["trials"]:
        word = experiment_word(info, args.experiment)
        every = command("status", word, "--all", data_dir=args.data_dir)
        also = f" and {len(older_open)} older still running or to run" if older_open else ""
        said = f"(the newest {len(listed)}{also} of {info['trials']} trials; `{every}` lists all)"
        print(printable(said))
    return 0


_LAST = 50  # status NAME's rows: the newest trials, and those running or to run


def _count(text: str) -> int:
    """--last's N: a whole number, 0 or more (argparse says so in one line otherwise)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text} is below 0")
    return min(n, 1 << 62)  # (any more is every trial: past 64 bits it was a traceback)


_WAITING = ("running", "pending", "lost", "interrupted")  # the list's "running" column


def _listed_state(e: dict[str, Any]) -> str:
    """stopped, finished, exhausted (every point of its finite space is a trial and none is
    open: nothing more will happen, though no budget ended it) or active."""
    if e["stopped"]:
        return "stopped"
    if e["finished"]:
        return "finished"
    open_ = sum(n for s, n in e["counts"].items() if s not in TERMINAL_STATES)
    return "exhausted" if e.get("exhausted") and not open_ else "active"


def _step(trial: dict[str, Any]) -> Any:
    """The last step a trial reported; blank if it reported none (a step 0 report shows 0)."""
    return trial["last_step"] if trial["last_step"] or trial.get("steps") else ""


def _why(trial: dict[str, Any]) -> str:
    """Why a trial failed, was killed or lost: the first line of its reason, cut short (the
    whole of it is in --json, export and `metaopt logs`); or why a running one may not be."""
    if trial.get("stopping"):
        return f"being stopped here (to be recorded {trial['stopping']})"
    quiet = trial.get("quiet")
    if quiet is not None:
        return f"node silent {quiet['seconds']} s; re-run elsewhere at {quiet['lost_after']:g} s"
    if trial["state"] in ("completed", "running", "pending") or not trial["reason"]:
        return ""
    line = str(trial["reason"]).strip().split("\n", 1)[0]
    why, _, stderr = line.partition("; last stderr: ")
    head = f"{why.removeprefix('exited with ')}: "
    if not stderr:
        # "no objective reported: no numeric 'loss' in 0 reports; 1 stdout lines; last
        # problem: METAOPT line is not JSON: ..." showed no more than its counts.
        why, _, stderr = line.partition("; last problem: ")
        head = f"{why.partition(': ')[0]}: "
    room = 60 - len(head)
    if stderr and len(line) > 60 and room >= 20:
        # The error is at the end: "exited with code 1; last stderr: ModuleNotFoundError:
        # No ..." lost the module's name.
        return head + (stderr if len(stderr) <= room else "..." + stderr[3 - room :])
    return line if len(line) <= 60 else line[:57] + "..."


def _shown_value(trial: dict[str, Any], objective: str) -> Any:
    """A trial's final value of an objective, else the last one it reported (running, frozen
    and killed trials have no final value, but their curves say where they stand)."""
    final = trial["objectives"] or {}
    value = final[objective] if objective in final else trial["metrics"].get(objective)
    if isinstance(value, str) and not _not_finite(value):
        # A report of the text "0.3" failed the trial, and showed as the number 0.3.
        return json_text(value)
    return value  # (a diverged run's "nan" or "inf", as the peer records it, shows as such)


def _not_finite(text: str) -> bool:
    try:
        return not math.isfinite(float(text))
    except ValueError:
        return False


def _experiment_header(info: dict[str, Any]) -> str:
    c = info["counts"]
    parts = ", ".join(f"{v} {k}" for k, v in sorted(c.items()))
    if info["thawed"]:
        parts += f"; {info['thawed']} thawed at least once"
    pairs = zip(info["directions"], info["objectives"], strict=True)
    goals = ", ".join(f"{direction} {objective}" for direction, objective in pairs)
    return printable(
        f"{info['name']} ({info['id'][:12]}): {info['trials']}/{info['max_trials'] or '∞'} trials"
        f" ({parts or 'none yet'}); {goals}"
    )


def _best(args: argparse.Namespace) -> int:
    info = fetch_experiment(_peer(args, read=True), args.experiment, trials="none")
    best = info["best"]
    if args.json:  # a list for a Pareto front, else one trial; null (exit 1) if none yet
        print(json_text(best if len(info["objectives"]) > 1 else (best[0] if best else None)))
        return 0 if best else 1
    if not best:
        if info["finished"]:
            word = experiment_word(info, args.experiment)
            again = command("status", word, data_dir=args.data_dir)
            # (A stopped one was said to have finished: `metaopt stop` ended it.)
            ended = "stopped" if info.get("stopped") else "finished"
            said = f"{info['name']}: {ended} with no completed trial; `{again}` says why"
            print(printable(said))
        else:
            print(printable(f"{info['name']}: no completed trial yet"))
        return 1
    if len(info["objectives"]) > 1:
        print(_front_table(info, best))
        return 0
    for trial in best:
        objectives = trial["objectives"] or {}
        values = ", ".join(f"{k} {fmt_value(v)}" for k, v in objectives.items())
        where = (trial["runner"] or trial["node"])[:8]
        line = f"{trial['id'][:12]}  {values}  on node {where}  {json_text(trial['params'])}"
        print(printable(line))
    return 0


def _front_table(info: dict[str, Any], front: list[dict[str, Any]]) -> str:
    """A Pareto front as status shows trials, a column per objective and parameter, best first
    by the first objective: as one line each, with the values and params in running text, a
    front of a dozen trials could not be read down a column."""
    names, objectives = sorted(info["space"]), info["objectives"]
    first_sign = -1.0 if info["directions"][0] == "maximize" else 1.0

    def first_value(trial: dict[str, Any]) -> float:
        value = (trial["objectives"] or {}).get(objectives[0])
        return first_sign * value if isinstance(value, (int, float)) else math.inf

    rows = [
        [t["id"][:12]]
        + [(t["objectives"] or {}).get(o) for o in objectives]
        + [(t["runner"] or t["node"])[:8]]
        + [t["params"].get(n) for n in names]
        for t in sorted(front, key=first_value)
    ]
    shown_names, shown_objectives = column_names(["trial", "runner"], names, objectives)
    heading = f"{printable(str(info['name']))}: a Pareto front of {len(front)}"
    return heading + "\n" + table(["trial", *shown_objectives, "runner", *shown_names], rows)


def _export(args: argparse.Namespace) -> int:
    info = fetch_experiment(_peer(args, read=True), args.experiment)
    trials = info["trial_list"]
    if args.format == "json":
        print(json_text(trials, indent=2))
        return 0
    names = sorted(info["space"])
    # The objectives always have a column, whatever the trials reported: the header keeps
    # its shape for a script reading it (with no completed trial they used to vanish).
    objectives = list(info["objectives"])
    # A report's "step" is the step column's (the trial's last step), not a second one.
    others = sorted({k for t in trials for k in (t["metrics"] or {})} - {*objectives, "step"})
    out = io.StringIO()
    writer = csv.writer(out)
    fixed = ["trial", "state", "node", "runner", "step", "reason"]
    shown_names, shown_metrics = column_names(fixed, names, [*objectives, *others])
    # Raw for a file or a pipe; on a terminal, other peers' text as status shows it: escapes
    # in a failed trial's reason (its stderr) reached the terminal through export.
    cell = (lambda v: printable(v) if isinstance(v, str) else v) if sys.stdout.isatty() else None
    header = [*fixed[:4], *shown_names, *shown_metrics, *fixed[4:]]
    writer.writerow(map(cell, header) if cell else header)
    for t in trials:
        row = (
            [t["id"], t["state"], t["node"], t["runner"] or ""]
            + [t["params"].get(n) for n in names]
            + [t["metrics"].get(m) for m in (*objectives, *others)]
            + [_step(t), t["reason"] or ""]
        )
        writer.writerow(map(cell, row) if cell else row)
    sys.stdout.write(out.getvalue())
    return 0


def _stop(args: argparse.Namespace) -> int:
    reply = _peer(args).call("api.stop", args.experiment)
    key, name = reply["key"], reply["name"]
    print(printable(f"experiment {name} ({key[:12]}) stopped: no peer starts new trials for it"))
    for which, field in (("an earlier", "older_open"), ("a later", "newer_open")):
        for other in reply.get(field, []):
            short = other[:12]
            again = command("stop", short, data_dir=args.data_dir)
            print(printable(f"{which} {name} ({short}) still runs; `{again}` stops it"))
    return 0


def _freeze_thaw(args: argparse.Namespace) -> int:
    answer = _peer(args).call(f"api.{args.verb}", args.trial)
    if args.verb == "freeze":
        print(f"trial {answer[:12]}: freezing")
    elif args.verb == "kill":
        done = "stopping it" if answer["stopping"] else "killed"
        print(f"trial {answer['id'][:12]}: {done}")
    elif answer.get("queued"):
        # (A peer of an earlier release said "no free slot", and thawed nothing.)
        again = "; from step 0, its peer is gone" if answer["from_step_0"] else ""
        print(
            f"trial {answer['id'][:12]}: no slot is free on this peer; it resumes in the next"
            f" one that frees, before any new trial, while this peer runs{again}"
            " (`metaopt freeze TRIAL` frees one)"
        )
    elif answer["from_step_0"]:
        print(f"trial {answer['id'][:12]}: its peer is gone; running here again from step 0")
    else:
        print(f"trial {answer['id'][:12]}: thawed")
    return 0


def _logs(args: argparse.Namespace) -> int:
    info = _peer(args, read=True).call("api.logs", args.trial)
    # (Peers of earlier releases send no state or reason.)
    state, reason = info.get("state"), info.get("reason")
    verdict = f"{state}: {reason}" if reason else state
    if info["here"]:
        text = info["text"]
        # The footer goes on a line of its own, also after output without a final newline.
        sys.stdout.write(text if not text or text.endswith("\n") else text + "\n")
        sys.stdout.flush()
        older = ""
        if isinstance(info.get("older"), str) and isinstance(info.get("older_size"), int):
            # (Past 32 MiB its log moves there, replacing what an earlier move put there:
            # output before this part, the run's start only while it wrote under 64 MiB.)
            older = f"{info['older']} ({_size(info['older_size'])})"
        if "size" in info:
            shown = f"(its last lines only, of {_size(info['size'])}"
            where = (
                f", in {info['path']}; earlier output: {older})"
                if older
                else (f"; the whole log: {info['path']})")
            )
            print(shown + where, file=sys.stderr)
        elif older:
            print(f"(its latest lines only; earlier output: {older})", file=sys.stderr)
        if verdict is not None:
            print(printable(f"({verdict})"), file=sys.stderr)
        return 0
    if info["runner"] is None:
        if state in ("pending", None):
            raise MetaoptError(f"trial {args.trial} has not started on any peer yet")
        # Ended without a run (params outside its space, killed before its turn): how, and
        # why, as for any trial; it said "has not started on any peer yet".
        print(printable(f"trial {args.trial} ran on no peer ({verdict})"))
        return 0
    where = info["address"] or "an unknown address"
    line = f"trial {args.trial} ran on node {info['runner'][:12]} at {where}"
    line += "; run `metaopt logs` there"
    if info.get("earlier"):
        # (Not "cut short": a run whose end the disk refused may have run to its end. Nor
        # "earlier": a peer that took over a paused peer's trial ran the later attempt, and the
        # paused one's, resumed, counted.)
        other = info["earlier"]
        line += f" (this peer holds another attempt's output, not the counted one: {other})"
    print(printable(line))
    if verdict is not None:
        print(printable(verdict))
    if info.get("stderr"):  # another peer's record: its lines, not its terminal escapes
        stderr = printable(str(info["stderr"]), lines=True)
        print(f"the last lines of its stderr, as recorded:\n{stderr}")
    return 0


_CLEAN_TIMEOUT = 3600.0  # seconds a live peer may take to delete what clean frees


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    # The unit is picked on the figure as shown: 1073741823 bytes is "1.0 GiB", not "1024.0 MiB".
    power = 1
    while power < 3 and round(n / 1024**power, 1) >= 1024:
        power += 1
    return f"{n / 1024**power:.1f} {('KiB', 'MiB', 'GiB')[power - 1]}"


def _counted(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _clean(args: argparse.Namespace) -> int:
    if not 0 <= args.keep <= 2**31:
        raise MetaoptError(f"--keep {args.keep}: keep between 0 and 2**31 trials")
    body = {"experiments": args.experiment, "keep": args.keep, "dry_run": args.dry_run}
    # The peer answers once it has deleted it all, which takes as long as the disk does: past
    # 30 s (a hundred gigabytes of checkpoints) a clean said the peer was hung.
    done = _peer(args, timeout=_CLEAN_TIMEOUT).call("api.clean", body)
    verb = "would free" if args.dry_run else "freed"
    what = [f"the folders of {_counted(done['trials'], 'ended trial')}"]
    if done["bundles"]:
        what.append(f"{_counted(done['bundles'], 'code bundle')} no trial needs now")
    print(f"{verb} {_size(done['freed'])}: {', '.join(what)}")
    kept = done["kept"]
    if kept:
        ids = f": {', '.join(t[:12] for t in kept)}" if len(kept) <= 10 else ""
        best = "best trial" if len(kept) == 1 else f"{len(kept)} best trials"
        print(f"kept the folders of the {best}{ids}")
    if done.get("failures"):
        # Left behind, and not counted as freed: a file its owner or the disk would not let go.
        for line in done["failed"]:
            print(printable(f"could not delete {line}"), file=sys.stderr)
        more = done["failures"] - len(done["failed"])
        print(
            f"{_counted(done['failures'], 'path')} could not be deleted"
            + (f" ({more} more not shown)" if more > 0 else "")
            + "; fix their permissions and run clean again",
            file=sys.stderr,
        )
        return 1
    return 0
