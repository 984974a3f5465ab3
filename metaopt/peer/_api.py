"""The local API the CLI talks to (same authenticated frames as peers): reads and a few writes.

Reads answer from this peer's own replica, so they work on any node, even while partitioned:
they show what this node knows now.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from crdt import Record, RecordError, StoreWriteFailed
from metaopt._errors import MetaoptError
from metaopt._records import BLOB, EXPERIMENT, parse_experiment, trial_timeout
from metaopt._state import (
    FROZEN_BY_HAND,
    KILLED_BY_HAND,
    TERMINAL_STATES,
    ExperimentState,
    TrialView,
)
from metaopt.peer._clean import (
    CleanPlan,
    carry_out,
    clean_reply,
    plan_clean,
    set_bundles_aside,
)
from metaopt.peer._pages import ListingPages, TrialPages
from metaopt.peer._storage import disk_advice
from metaopt.peer._wire import LOADING, Request
from metaopt.space import Space

if TYPE_CHECKING:
    from metaopt.peer._node import Node

__all__ = ["LocalApi", "experiment_json", "trial_json"]

MAX_SUBMIT_RECORDS = 4096
_LOG_TAIL = 1 << 20  # the bytes of a trial's log `metaopt logs` shows, its end
_LAYOUT_WAIT = 10.0  # seconds a thaw by hand waits for its code to be laid out here


def _all_points_tried(state: ExperimentState) -> str | None:
    """Why no peer can start a new trial of the experiment: every point of its finite space
    is a trial already (a point is never tried twice). None if not, or if its space cannot
    be read here. From the replica alone, so every peer says the same."""
    try:
        space = Space.from_dict(state.spec.space)
    except MetaoptError:
        return None
    card = space.cardinality
    if card is None:
        return None
    dims = space.dimensions
    on_grid: dict[tuple[int, str, Any], bool] = {}  # (a few values per dimension, many trials)

    def point(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...] | None:
        """The trial's point, None if not one the search hands out (see Dimension.on_grid)."""
        keys = [(i, type(v).__name__, v) for i, v in enumerate(params.get(d.name) for d in dims)]
        for key in keys:
            if key not in on_grid:
                on_grid[key] = dims[key[0]].on_grid(key[2])
            if not on_grid[key]:
                return None
        return tuple(k[1:] for k in keys)

    taken = {point(t.params) for t in state.trials()} - {None}
    return f"all {card} points of the space are tried" if len(taken) >= card else None


def _natural(name: str) -> list[tuple[int, int | str]]:
    """A name's sort key with its numbers as numbers: exp2 before exp10. (isdecimal, not
    isdigit: "²" is a digit to isdigit that int() cannot read, and one name holding it broke
    the listing of every experiment on every peer, for good.)"""
    return [(0, int(p)) if p.isdecimal() else (1, p) for p in re.split(r"(\d+)", name) if p]


def trial_json(state: ExperimentState, trial: TrialView) -> dict[str, Any]:
    return {
        "id": trial.id,
        "experiment": state.spec.name,
        "params": dict(trial.params),
        "state": trial.state,
        "objectives": dict(zip(state.spec.objectives, trial.values, strict=True))
        if trial.values
        else None,
        "value": trial.value,
        "metrics": dict(trial.metrics),
        "node": trial.node.hex(),
        "runner": trial.runner.hex() if trial.runner else None,
        "created": trial.created / 1000,
        "last_seen": trial.last_seen / 1000,
        "started_at": None if trial.started_at is None else trial.started_at / 1000,
        "ended_at": None if trial.ended_at is None else trial.ended_at / 1000,
        "suggest_ms": trial.suggest_ms,
        "last_step": trial.last_step,
        "steps": len(trial.curve),
        "attempts": trial.attempts,
        "thaws": trial.thaws,
        "exit_code": trial.exit_code,
        "reason": trial.reason,
    }


def experiment_json(state: ExperimentState) -> dict[str, Any]:
    spec = state.spec
    best = state.best()
    return {
        "id": state.key.hex(),
        "name": spec.name,
        "space": dict(spec.space),
        "objectives": list(spec.objectives),
        "directions": list(spec.directions),
        "algorithm": spec.algorithm,
        "max_trials": spec.max_trials,
        "max_step": spec.max_step,
        "command": list(spec.command) if spec.command else None,
        "early_stopping": spec.early_stopping,
        "objective_regex": spec.objective_regex,
        "trial_timeout": trial_timeout(spec),
        "trials": len(state),
        "counts": state.counts(),
        "thawed": sum(t.thaws > 0 for t in state.trials()),
        "stopped": state.stopped,
        "active": state.active,
        "finished": state.finished,
        # Why no peer can start a new trial (unlike a program this peer cannot run, say):
        # what lets `submit --wait` stop and the listing say so.
        "exhausted": _all_points_tried(state),
        "best": [trial_json(state, t) for t in best],
        "last_failed": _last_failed(state),
    }


def _listed(state: ExperimentState, latest: bool) -> dict[str, Any]:
    """An experiment's row of the listing: whether its name finds it, beside its summary."""
    return {**experiment_json(state), "latest": latest}


def _last_failed(state: ExperimentState) -> dict[str, Any] | None:
    """The trial that failed last, and the first line of why (`submit --wait` says it)."""
    failed = [t for t in state.trials() if t.state == "failed"]
    if not failed:
        return None
    last = max(failed, key=lambda t: (t.ended_at or 0, t.key))
    line = (last.reason or "no reason recorded").strip().split("\n", 1)[0]
    return {"id": last.id, "reason": line if len(line) <= 200 else line[:197] + "..."}


class LocalApi:
    """Operations under the ``api.`` prefix."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def handlers(self) -> dict[str, Callable[[Request], Any]]:
        loaded = self._once_loaded
        return {
            "api.status": self.status,
            "api.shutdown": self.shutdown,
            "api.experiments": loaded(self.experiments),
            "api.experiment": loaded(self.experiment),
            "api.add": loaded(self.add),
            "api.stop": loaded(self.stop),
            "api.logs": loaded(self.logs),
            "api.freeze": loaded(self.freeze),
            "api.thaw": loaded(self.thaw),
            "api.kill": loaded(self.kill),
            "api.clean": loaded(self.clean),
        }

    def _once_loaded(
        self, call: Callable[[Request], Awaitable[Any]]
    ) -> Callable[[Request], Awaitable[Any]]:
        """call, refused while the peer loads its replica (Replica.load): it would answer
        from part of the history (no experiment NAME, a name taken by an older one)."""

        async def once_loaded(request: Request) -> Any:
            loading = self.node.loading_progress()
            if loading is not None:
                done, held = loading
                raise MetaoptError(
                    f"{LOADING} the peer is still loading its history ({done:,} of about"
                    f" {held:,} records)"
                )
            try:
                return await call(request)
            except StoreWriteFailed as exc:
                # A write the disk refused (submit, freeze, kill, stop): the one line every
                # refusal is; it was "internal error in api.add", a traceback in the log.
                raise MetaoptError(
                    f"this peer cannot write its replica ({exc.disk}); {disk_advice(exc.disk)},"
                    " then try again"
                ) from None

        return once_loaded

    def _experiment(self, body: Any) -> ExperimentState:
        if not isinstance(body, str) or not body:
            raise MetaoptError("name an experiment (its name or id)")
        state = self.node.replica.find_experiment(body)
        if state is None:
            short = len(body) < 4 and all(c in "0123456789abcdefABCDEF" for c in body)
            hint = " (an id needs at least 4 characters)" if short else ""
            raise MetaoptError(
                f"no experiment {body!r} on this peer yet{hint}; `metaopt status` lists them"
            )
        return state

    async def status(self, request: Request) -> Any:
        return self.node.status()

    async def experiments(self, request: Request) -> Any:
        """Every experiment by name, namesakes oldest first: a page of them, {experiments,
        next}, for a body {after, page_bytes} (see ListingPages); all of them, a list, for no
        body (as to a CLI of an earlier release)."""
        replica = self.node.replica
        names = sorted(
            {s.spec.name for s in replica.experiments.values()}, key=lambda n: (_natural(n), n)
        )
        listing = []
        for name in names:
            # Namesakes oldest first; the latest is the one the name finds.
            same = replica.named(name)[::-1]
            listing += [(s.key.hex(), partial(_listed, s, s is same[-1])) for s in same]
        if request.body is None:
            return [row() for _, row in listing]
        rows, after = ListingPages.parse(request.body).page(listing)
        return {"experiments": rows, "next": after}

    async def experiment(self, request: Request) -> Any:
        """An experiment's summary and a page of its trials, oldest first (see ``TrialPages``).

        The body is its name or id, or a dict: experiment, trials ("all", "open" for those not
        ended, "none"), after (the previous page's ``next``; such a page has no summary),
        page_bytes (None: one page) and last (only the newest this many; None: all).
        A whole list did not fit in one reply: 60,000 trials with wide parameters passed the
        64 MiB frame limit, and `metaopt status NAME`, best and export failed.
        """
        query = TrialPages.parse(request.body)
        state = self._experiment(query.experiment)
        out: dict[str, Any] = {}
        if query.after is None:  # (later pages: their trials alone)
            out = experiment_json(state)
            out["blocked_here"] = self.node.blocked_here(state.key)
        if query.trials == "none":
            return out
        trials, rows, out["next"] = query.page(state, lambda t: trial_json(state, t))
        out["trial_list"] = rows
        # A running trial whose node went quiet shows as running until it is taken for lost;
        # say so meanwhile (a user saw a dead peer's trials "running" for a minute, unexplained).
        lost_after = self.node.config.timing.lost_after
        for shown, trial in zip(rows, trials, strict=True):
            # Asked to stop here (a kill, a freeze, a timeout), it shows running until it
            # exits: seconds, or the grace twice over for one that ignores its stop.
            stopping = self.node.runner.stopping_as(trial.key)
            if trial.state == "running" and stopping is not None:
                shown["stopping"] = stopping
            if trial.state in ("running", "pending") and not self.node.is_alive(
                trial.runner or trial.node
            ):
                quiet = round(self.node.replica.quiet_ms(trial) / 1000)  # as find_lost counts
                shown["quiet"] = {"seconds": quiet, "lost_after": lost_after}
        return out

    async def add(self, request: Request) -> Any:
        """Records built by `metaopt submit` (experiment and code blobs), all or nothing."""
        body = request.body
        if not isinstance(body, list) or not 0 < len(body) <= MAX_SUBMIT_RECORDS:
            raise MetaoptError(f"submit between 1 and {MAX_SUBMIT_RECORDS} records")
        records = []
        for data in body:
            try:
                record = Record.decode(data)
            except RecordError as exc:
                raise MetaoptError(f"a submitted record is invalid: {exc}") from None
            if record.kind not in (EXPERIMENT, BLOB):
                raise MetaoptError(f"submit carries experiment and blob records, not {record.kind}")
            if record.kind == EXPERIMENT and parse_experiment(record) is None:
                raise MetaoptError("the submitted experiment record is malformed")
            records.append(record)
        self.node.add_submitted(records)
        return [r.key for r in records if r.kind == EXPERIMENT]

    async def stop(self, request: Request) -> Any:
        state = self._experiment(request.body)
        if state.stopped:
            raise MetaoptError(f"{state.spec.name} ({state.key.hex()[:12]}) is already stopped")
        if state.finished:
            # A stop record would relabel a finished experiment "stopped" for good.
            raise MetaoptError(
                f"{state.spec.name} ({state.key.hex()[:12]}) is already finished"
                f" ({len(state)}/{state.spec.max_trials} trials); nothing to stop"
            )
        self.node.stop_experiment(state)
        # A name stops its latest submission only; an earlier one of that name still open would
        # go on running trials unnoticed (the user resubmitted and meant to replace it). An id
        # may stop an earlier one, and then a later one runs on.
        namesakes = self.node.replica.named(state.spec.name)  # the latest first
        at = [s.key for s in namesakes].index(state.key)
        open_ = {i: s.key.hex() for i, s in enumerate(namesakes) if not (s.stopped or s.finished)}
        return {
            "key": state.key.hex(),
            "name": state.spec.name,
            "older_open": [key for i, key in open_.items() if i > at],
            "newer_open": [key for i, key in open_.items() if i < at],
        }

    async def logs(self, request: Request) -> Any:
        body = request.body
        if not isinstance(body, str):
            raise MetaoptError("name a trial by its id (or a prefix of at least 4 characters)")
        found = self.node.replica.find_trial(body)
        if found is None:
            raise MetaoptError(f"no trial {body!r} on this peer; `metaopt status EXP` lists them")
        state, key = found
        trial = state.trial(key)
        runner = trial.runner if trial else None
        log_path = self.node.runner.log_path(key)
        ran_here_last = runner is None or runner == self.node.node_id
        # How it ended and why, as every peer holds it ("no numeric 'loss' in 0 reports; ...",
        # cut short in `status NAME`, was in no log).
        verdict = {
            "state": trial.state if trial else None,
            "reason": trial.reason if trial else None,
        }
        if log_path.exists() and ran_here_last:
            # Past 32 MiB a log moves to <log>.1 (replacing an earlier one) and starts anew.
            older = log_path.with_name(log_path.name + ".1")
            before: dict[str, Any] = {}
            with contextlib.suppress(OSError):
                before = {"older": str(older), "older_size": older.stat().st_size}
            with log_path.open("rb") as f:
                f.seek(0, 2)
                size = f.tell()
                # One byte before the cut as well: it says whether the cut falls at a line's
                # start (a whole line was dropped when it did).
                f.seek(max(0, size - _LOG_TAIL - 1))
                tail = f.read()
            if size <= _LOG_TAIL:
                text = tail.decode(errors="replace")
                return {"here": True, "text": text, **before, **verdict}
            # From a line's start, and saying so: the cut was silent, mid-line.
            tail = tail[tail.find(b"\n") + 1 :]
            text = tail.decode(errors="replace")
            shown = {"size": size, "path": str(log_path), **before}
            return {"here": True, "text": text, **shown, **verdict}
        if runner == self.node.node_id:
            # Ran here, and no log is left: it failed before its process started, or the disk
            # refused its log (a run that completed on an inode-full disk was said to have
            # "ended before it wrote any"), or `metaopt clean` removed its folder.
            if trial is not None and (trial.curve or trial.state == "completed"):
                text = "(no log here: its output was not kept; the disk refused it, or its"
                text += " folder was cleaned)\n"
                return {"here": True, "text": text, **verdict}
            why = (trial.reason if trial else None) or "no output was recorded"
            return {"here": True, "text": f"(no log: the trial ended before it wrote any; {why})\n"}
        where = None
        if runner is not None:
            peer = self.node.peers.get(runner)
            where = peer.addr if peer else None
        return {
            "here": False,
            "runner": runner.hex() if runner else None,
            "address": where,
            # An attempt cut short here (this peer died or restarted) before another re-ran it:
            # its partial output is not the run that counts.
            "earlier": str(log_path) if log_path.exists() else None,
            # What every peer holds of it: the last lines of stderr of a run that failed.
            "stderr": trial.stderr if trial else None,
            **verdict,
        }

    def _trial(self, body: Any) -> tuple[ExperimentState, TrialView]:
        found = self.node.replica.find_trial(body) if isinstance(body, str) else None
        if found is None:
            raise MetaoptError(f"no trial {body!r} on this peer; `metaopt status EXP` lists them")
        state, key = found
        view = state.trial(key)
        assert view is not None
        return state, view

    async def freeze(self, request: Request) -> Any:
        """Pause a trial running on this peer; it can be thawed later (here)."""
        _state, view = self._trial(request.body)
        runner = self.node.runner
        if view.key not in runner.running_keys():
            if view.state != "running":
                what = f"trial {view.id[:12]} is {view.state}"
                raise MetaoptError(f"{what}; only a running one freezes")
            raise self._not_running_here(view, "freeze")
        if (stopping := runner.stopping_as(view.key)) is not None:
            raise MetaoptError(f"trial {view.id[:12]} is already stopping (as {stopping})")
        if not await runner.end(view.key, "frozen", FROZEN_BY_HAND):
            raise self._just_ended(view)
        runner.note_stop_request(view.key, "frozen", FROZEN_BY_HAND)
        return view.id

    def _just_ended(self, view: TrialView) -> MetaoptError:
        return MetaoptError(
            f"trial {view.id[:12]} has just exited; it is recorded as it ended (`metaopt"
            " status` shows how in a moment)"
        )

    def _not_running_here(self, view: TrialView, verb: str) -> MetaoptError:
        """Why a trial recorded running cannot be frozen or killed here, and where it can."""
        where = view.runner or view.node
        if where == self.node.node_id:
            # This peer ran it before it restarted: it is taken for lost, and re-run here.
            return MetaoptError(
                f"trial {view.id[:12]} ran on this peer before it restarted and is not running"
                f" now; it is run again shortly (`metaopt status` shows it), then `metaopt"
                f" {verb}` it"
            )
        node = where.hex()[:8]
        return MetaoptError(
            f"trial {view.id[:12]} is running on node {node}; run `metaopt {verb}` there"
        )

    def _take_over_frozen(self, view: TrialView, verb: str) -> bool:
        """Whether frozen view is another peer's, gone, so this one may act on it; raises if
        that peer may be live.

        A trial frozen by hand on a peer that is gone is nobody else's to re-run (see
        find_lost): any peer may take it over when told to, from step 0 (its checkpoint went
        with its peer), or kill it.
        """
        runner = view.runner
        if runner == self.node.node_id:
            return False
        if runner is None or self.node.is_alive(runner):
            where = runner.hex()[:8] if runner else "another peer"
            raise MetaoptError(
                f"trial {view.id[:12]} is frozen on node {where}; run `metaopt {verb}` there"
            )
        if not (self.node.listened() and self.node.caught_up()):
            # Just started, it has heard from nobody yet: a live peer looks gone.
            raise MetaoptError(
                f"trial {view.id[:12]} is frozen on node {runner.hex()[:8]}, which this peer"
                f" has not heard from since it started; try again in a minute, or run"
                f" `metaopt {verb}` there"
            )
        return True

    async def kill(self, request: Request) -> Any:
        """End a trial for good: one running on this peer is stopped, a frozen one of this
        peer (or of one that is gone) is never resumed. Its checkpoint stays on disk."""
        state, view = self._trial(request.body)
        runner = self.node.runner
        if view.key in runner.running_keys():
            if not runner.kill_instead(view.key, KILLED_BY_HAND):  # (being frozen: killed)
                if (stopping := runner.stopping_as(view.key)) is not None:
                    raise MetaoptError(f"trial {view.id[:12]} is already stopping (as {stopping})")
                if not await runner.end(view.key, "killed", KILLED_BY_HAND):
                    raise self._just_ended(view)
            runner.note_stop_request(view.key, "killed", KILLED_BY_HAND)
            return {"id": view.id, "stopping": True}
        if view.state == "running":
            raise self._not_running_here(view, "kill")
        if state.ended_for_good(view) and view.state not in TERMINAL_STATES:
            raise MetaoptError(
                f"trial {view.id[:12]} is {view.state} and its experiment is stopped: no peer"
                " runs it again (`metaopt clean` deletes its folder)"
            )
        if view.state != "frozen":
            raise MetaoptError(
                f"trial {view.id[:12]} is {view.state}; only a running or frozen one is killed"
            )
        self._take_over_frozen(view, "kill")
        self.node.write_event(state.key, view.key, "killed", reason=KILLED_BY_HAND)
        return {"id": view.id, "stopping": False}

    async def thaw(self, request: Request) -> Any:
        """Resume a trial this peer froze, from its checkpoint, in a free slot."""
        state, view = self._trial(request.body)
        if view.state == "frozen" and not self.node.runner.can_run(state):
            # Its code is being laid out here (its bundle was deleted, or never written): a
            # thaw refused at once worked when asked again seconds later. Waited for, then
            # everything checked again, with no wait between the checks and the launch.
            await self.node.runner.can_run_within(state, _LAYOUT_WAIT)
            state, view = self._trial(request.body)
        if self.node.runner.stopping_as(view.key) == "frozen":
            raise MetaoptError(
                f"trial {view.id[:12]} is still being frozen; thaw it once it has stopped"
            )
        if view.state != "frozen":
            raise MetaoptError(f"trial {view.id[:12]} is {view.state}; only a frozen one thaws")
        if self.node.stopping:
            # Its stop has already interrupted the running trials: one started now would run
            # on unrecorded after the peer is gone, and be re-run from step 0 elsewhere.
            raise MetaoptError("this peer is stopping; thaw the trial once it has restarted")
        taken_over = self._take_over_frozen(view, "thaw")
        held = self.node.runner.starts_held()
        if held is not None:
            raise MetaoptError(f"this peer starts no trial now: {held}; {disk_advice(held)}")
        if not self.node.runner.can_run(state):
            raise MetaoptError(
                f"this peer cannot run {state.spec.name} (yet): its code has not reached it or"
                " cannot be laid out here (see its log); try again, or thaw it on another peer"
            )
        if self.node.runner.free_slots() <= 0:
            # In the next slot that frees, before a new trial takes it: the scheduler fills a
            # slot as soon as it frees, and "freeze a running trial first" freed one for a
            # new trial, again and again.
            self.node.runner.ask_thaw(state, view)
            return {"id": view.id, "from_step_0": taken_over, "queued": True}
        await self.node.runner.launch(state, view, thaw=True)
        return {"id": view.id, "from_step_0": taken_over}

    def clean_plan(self, body: Any) -> tuple[CleanPlan, bool]:
        """What `metaopt clean` deletes here (see _clean), and whether it is a dry run."""
        if not isinstance(body, dict):
            raise MetaoptError("clean takes experiments, keep and dry_run")
        names, keep = body.get("experiments") or [], body.get("keep", 1)
        dry_run = body.get("dry_run", False)
        # (type(): True is an int, and {"keep": true} kept one trial as if it said 1.)
        if not isinstance(names, list) or type(keep) is not int or keep < 0:
            raise MetaoptError("clean takes a list of experiments and a keep of 0 or more")
        if not isinstance(dry_run, bool):
            raise MetaoptError("clean takes a dry_run of true or false")
        replica = self.node.replica
        # Each once, named twice (by its name and its id, say): planned once per mention, its
        # folders, bundles, kept trials and bytes were counted twice.
        named = {(state := self._experiment(n)).key: state for n in names}
        states = list(named.values()) if names else replica.experiments.values()
        plan = plan_clean(states, self.node.dirs, self.node.runner.running_keys(), keep)
        return plan, dry_run

    async def clean(self, request: Request) -> Any:
        """Delete the folders of this peer's ended trials (but the best) and the code bundles
        no trial needs now (see _clean); ``dry_run`` only says what that would free."""
        plan, dry_run = self.clean_plan(request.body)
        if not dry_run:
            set_bundles_aside(plan, self.node.dirs.bundles)  # (here, between two launches)
        # Off the loop: a thousand checkpoints take a while to count and delete.
        await asyncio.to_thread(carry_out, plan, self.node.dirs.clean_lock, dry_run=dry_run)
        return clean_reply(plan)

    async def shutdown(self, request: Request) -> Any:
        """Stop the peer; says how many trials it stops and their grace (`peer stop` waits
        for them, up to twice the grace for one that ignores its stop)."""
        self.node.request_stop()
        grace = self.node.config.timing.stop_grace
        return {"running": self.node.runner.stoppable(), "grace": grace}
