"""metaopt's record kinds on top of crdt records: what each holds and how it is read back.

Every fact is one immutable crdt.Record. Readers never trust a body: ``parse_*`` return None for
a body that does not have the expected shape, so a malformed record from a buggy or hostile peer
is skipped by every fold instead of crashing it.

| kind       | links                       | body                                              |
|------------|-----------------------------|---------------------------------------------------|
| experiment | -                           | definition (see ExperimentSpec)                   |
| blob       | content hash                | one chunk of bundled code                         |
| trial      | experiment                  | params, suggesting node, its counter              |
| event      | trial, experiment           | kind, node, step, metrics, exit code, reason      |
| control    | experiment                  | action ("stop")                                   |

An experiment record is content-derived: its origin is a hash of its definition, its seq 1 and
its time 0, so two peers (or two Studies) that define the same experiment agree on its key
without talking. ``nonce`` tells apart two submissions of the same definition.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from crdt import KEY_SIZE, ORIGIN_SIZE, Record

__all__ = [
    "BLOB",
    "CONTROL",
    "EVENT",
    "EVENT_KINDS",
    "EXPERIMENT",
    "TRIAL",
    "ControlBody",
    "EventBody",
    "ExperimentSpec",
    "TrialBody",
    "experiment_record",
    "is_metric",
    "name_problem",
    "parse_control",
    "parse_event",
    "parse_experiment",
    "parse_trial",
]

EXPERIMENT = "experiment"
TRIAL = "trial"
EVENT = "event"
CONTROL = "control"
BLOB = "blob"

# started: a node began running the trial; progress: a report (step, metrics); heartbeat: still
# alive; completed/failed/killed: terminal; frozen: paused by freeze-thaw, may be thawed;
# thawed: resumed; restarted: a resumed run went on from an older checkpoint (step) or step 0;
# lost: its node vanished (written by whoever noticed); interrupted: its node stopped
# gracefully. lost and interrupted trials are free to be run again by any peer.
EVENT_KINDS = frozenset(
    {
        "started",
        "restarted",
        "progress",
        "heartbeat",
        "completed",
        "failed",
        "killed",
        "frozen",
        "thawed",
        "lost",
        "interrupted",
    }
)
_EVENT_KIND = {kind: kind for kind in EVENT_KINDS}  # each kind's one string (parse_event)
_NO_METRICS: Mapping[str, Any] = MappingProxyType({})
CONTROL_ACTIONS = frozenset({"stop"})
MAX_SUPERSEDES = 64  # free events one (re)start may answer; more is not a real history
# What an honest writer ever puts in an event's text fields (peer/_node.write_event and
# Study cut longer ones). A reader refuses more: a listing of 5,000 failed trials with
# megabyte reasons would not fit in one reply frame.
MAX_REASON = 4096
MAX_STDERR = 8192
# A trial counter stays exact as a float and far from msgpack's 64-bit limit: a peer that
# numbers its next trial max(counter) + 1 must never be handed 2**64 - 1.
MAX_COUNTER = 2**53
MAX_INT = 2**63  # steps and integer metrics, as metaopt.report takes them
MAX_METRIC_TEXT = 1000
MAX_NAME = 64


def name_problem(name: object) -> str | None:
    """Why name cannot name an experiment (None if it can): it is shown and logged as is, and
    typed after an option (a leading '-' would read as one)."""
    if (
        isinstance(name, str)
        and 0 < len(name) <= MAX_NAME
        and name.isprintable()
        and not name.startswith("-")
    ):
        return None
    return (
        f"a name is 1-{MAX_NAME} printable characters, not starting with '-'; got {repr(name)[:70]}"
    )


def _plain(text: object) -> bool:
    """A string that can become an argument, an environment value or a path: no NUL byte."""
    return isinstance(text, str) and "\x00" not in text


def is_metric(value: Any) -> bool:
    """A metric value a record can carry: a finite number in 64 bits or a short string."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -MAX_INT <= value < MAX_INT
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= MAX_METRIC_TEXT


@dataclass(frozen=True)
class ExperimentSpec:
    """The definition of an experiment, as submitted."""

    name: str
    space: Mapping[str, str]
    objectives: tuple[str, ...] = ("objective",)
    directions: tuple[str, ...] = ("minimize",)
    algorithm: str = "auto"
    max_trials: int | None = None
    command: tuple[str, ...] | None = None
    bundle: Mapping[str, Any] | None = None
    objective_regex: str | None = None
    early_stopping: str | None = None
    max_step: int | None = None
    nonce: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_body(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "space": dict(self.space),
            "objectives": list(self.objectives),
            "directions": list(self.directions),
            "algorithm": self.algorithm,
            "max_trials": self.max_trials,
            "command": None if self.command is None else list(self.command),
            "bundle": None if self.bundle is None else dict(self.bundle),
            "objective_regex": self.objective_regex,
            "early_stopping": self.early_stopping,
            "max_step": self.max_step,
            "nonce": self.nonce,
            "options": dict(self.options),
        }


def trial_timeout(spec: ExperimentSpec) -> int | None:
    """Seconds one run of a trial may take (``submit --trial-timeout``), None for no limit.

    Kept in ``options``, which peers of earlier versions read and ignore (they run trials
    without the limit); a value no submit writes is no limit either.
    """
    value = spec.options.get("trial_timeout")
    return value if type(value) is int and 1 <= value <= MAX_COUNTER else None


def experiment_record(spec: ExperimentSpec, time_ms: int = 0) -> Record:
    """The content-derived record of an experiment definition.

    time_ms is when it was submitted: the latest submission of a name is the one a name
    finds. A Study leaves it 0, so the same spec always gives the same key.
    """
    body = spec.to_body()
    probe = Record.create(EXPERIMENT, bytes(ORIGIN_SIZE), 1, 0, body)
    origin = hashlib.blake2b(probe.data, digest_size=ORIGIN_SIZE, person=b"metaopt-exp").digest()
    return Record.create(EXPERIMENT, origin, 1, time_ms, body)


def _str_tuple(value: Any) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not value or not all(map(_plain, value)):
        return None
    return tuple(value)


def _bundle_ok(bundle: Any) -> bool:
    """None, a shared directory's path, or a manifest (checked in full where it is used)."""
    if bundle is None:
        return True
    if not isinstance(bundle, dict):
        return False
    if "manifest" in bundle:
        return isinstance(bundle["manifest"], dict) and _plain(bundle.get("root", ""))
    return "shared_dir" in bundle and _plain(bundle["shared_dir"])


def parse_experiment(record: Record) -> ExperimentSpec | None:
    """The spec of an experiment record, or None if its body is malformed."""
    b = record.body
    if record.kind != EXPERIMENT or not isinstance(b, dict):
        return None
    space = b.get("space")
    objectives = _str_tuple(b.get("objectives"))
    directions = _str_tuple(b.get("directions"))
    command = b.get("command")
    max_trials = b.get("max_trials")
    max_step = b.get("max_step")
    ok = (
        # Any string: metaopt wrote names of any length and characters before the rule of
        # name_problem (now checked where a name is written); a reader that refused them
        # would make those experiments vanish. The peer's log escapes what is unprintable.
        isinstance(b.get("name"), str)
        and isinstance(space, dict)
        and bool(space)
        and all(_plain(k) and _plain(v) for k, v in space.items())
        and objectives is not None
        and directions is not None
        and len(objectives) == len(directions)
        and all(d in ("minimize", "maximize") for d in directions)
        and isinstance(b.get("algorithm"), str)
        and (max_trials is None or (type(max_trials) is int and max_trials > 0))
        and (max_step is None or (type(max_step) is int and max_step > 0))
        and (command is None or _str_tuple(command) is not None)
        and _bundle_ok(b.get("bundle"))
        and (b.get("objective_regex") is None or isinstance(b.get("objective_regex"), str))
        and (b.get("early_stopping") is None or isinstance(b.get("early_stopping"), str))
        and isinstance(b.get("nonce", ""), str)
        and isinstance(b.get("options", {}), dict)
    )
    if not ok or not isinstance(space, dict) or objectives is None or directions is None:
        return None
    return ExperimentSpec(
        name=b["name"],
        space=dict(space),
        objectives=objectives,
        directions=directions,
        algorithm=b["algorithm"],
        max_trials=max_trials,
        command=None if command is None else tuple(command),
        bundle=b.get("bundle") or None,
        objective_regex=b.get("objective_regex"),
        early_stopping=b.get("early_stopping"),
        max_step=max_step,
        nonce=b.get("nonce", ""),
        options=b.get("options", {}),
    )


@dataclass(frozen=True)
class TrialBody:
    """A trial: a point of the space that some node chose to evaluate."""

    experiment: bytes
    params: Mapping[str, Any]
    node: bytes
    counter: int
    suggest_ms: float | None = None  # how long the suggesting node took to choose it

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "params": dict(self.params),
            "node": self.node,
            "counter": self.counter,
        }
        if self.suggest_ms is not None:
            body["suggest_ms"] = self.suggest_ms
        return body


def parse_trial(record: Record) -> TrialBody | None:
    b = record.body
    if record.kind != TRIAL or not isinstance(b, dict) or len(record.links) != 1:
        return None
    params, node, counter = b.get("params"), b.get("node"), b.get("counter")
    if (
        not isinstance(params, dict)
        or not all(v is None or isinstance(v, int | float | str | bool) for v in params.values())
        or node != record.origin  # a trial is written by the node that chose it
        or type(counter) is not int
        or not 0 < counter < MAX_COUNTER
    ):
        return None
    suggest_ms = b.get("suggest_ms")
    if (
        isinstance(suggest_ms, bool)
        or not isinstance(suggest_ms, int | float)
        or not 0 <= suggest_ms < math.inf  # a duration, shown in status and JSON
    ):
        suggest_ms = None  # optional, and only informative: a bad one never drops the trial
    return TrialBody(record.links[0], params, node, counter, suggest_ms)


@dataclass(frozen=True, slots=True)
class EventBody:
    """Something that happened to a trial, on one node.

    (Slots: a replica keeps one per event for good; they cut its fold by a sixth.)
    """

    trial: bytes
    experiment: bytes
    kind: str
    node: bytes
    step: int | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    reason: str | None = None
    stderr: str | None = None  # the last lines a failed trial wrote to stderr
    # A (re)start's causal past: the keys of the lost/interrupted events that freed the trial.
    # Event times are each writer's wall clock, so with clock skew a re-run's "started" can sort
    # before the "lost" it answers; the fold drops superseded free events whatever the times.
    supersedes: tuple[bytes, ...] = ()
    # A lost event's causal past: the key of the trial's latest event its writer had seen.
    # The fold orders it after that event, so a runner whose clock ran ahead (its last
    # heartbeat stamped after the loss was noticed) no longer reads as running on. A key, not
    # a time: nothing a peer stamps can put a loss beyond reach.
    after: bytes | None = None
    # A kill by a rung rule (ASHA): the rung it was judged at. Its run reported past it (a
    # peer judges every few seconds), and those values must not outrank other runs there.
    rung: int | None = None

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": self.kind, "node": self.node}
        if self.step is not None:
            body["step"] = self.step
        if self.metrics:
            body["metrics"] = dict(self.metrics)
        if self.exit_code is not None:
            body["exit_code"] = self.exit_code
        if self.reason is not None:
            body["reason"] = self.reason
        if self.stderr is not None:
            body["stderr"] = self.stderr
        if self.supersedes:
            body["supersedes"] = list(self.supersedes)
        if self.after is not None:
            body["after"] = self.after
        if self.rung is not None:
            body["rung"] = self.rung
        return body


def parse_event(record: Record, names: dict[bytes, bytes] | None = None) -> EventBody | None:
    """The event a record holds, None if it holds none.

    names: ids seen before (trial, experiment, node), each kept once: the event then refers
    to those objects rather than its own copies of them. A fold keeps every event it reads,
    and the copies were a quarter of its memory (228 of 925 bytes a progress event).
    """
    b = record.body
    if record.kind != EVENT or not isinstance(b, dict) or len(record.links) != 2:
        return None
    kind, node = b.get("kind"), b.get("node")
    step, metrics = b.get("step"), b.get("metrics", {})
    exit_code, reason, stderr = b.get("exit_code"), b.get("reason"), b.get("stderr")
    supersedes, after, rung = b.get("supersedes", []), b.get("after"), b.get("rung")
    if (
        not isinstance(kind, str)  # first: a list or map from the wire is unhashable
        or kind not in EVENT_KINDS
        or node != record.origin  # an event is written by the node it speaks for
        or (step is not None and (type(step) is not int or not 0 <= step < MAX_INT))
        or not isinstance(metrics, dict)
        # (Each generator only when there is something to check: most events carry no
        # supersedes and a start no metrics, and a replica's fold parses every event.)
        or (metrics and not all(isinstance(k, str) and is_metric(v) for k, v in metrics.items()))
        or (exit_code is not None and type(exit_code) is not int)
        or (reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON))
        or (stderr is not None and (not isinstance(stderr, str) or len(stderr) > MAX_STDERR))
        or not isinstance(supersedes, list)
        or len(supersedes) > MAX_SUPERSEDES
        or (supersedes and not all(isinstance(k, bytes) and len(k) == KEY_SIZE for k in supersedes))
        or (after is not None and (not isinstance(after, bytes) or len(after) != KEY_SIZE))
        or (rung is not None and (type(rung) is not int or not 0 <= rung < MAX_INT))
    ):
        return None
    trial, experiment = record.links
    # Kept once for all events: the kind (each event held its own copy of "progress", 57
    # bytes) and an empty metrics mapping (read-only: a fresh {} each was 64 bytes).
    kind = _EVENT_KIND[kind]
    if not metrics:
        metrics = _NO_METRICS
    if names is not None:
        trial = names.setdefault(trial, trial)
        experiment = names.setdefault(experiment, experiment)
        node = names.setdefault(node, node)
    return EventBody(
        trial,
        experiment,
        kind,
        node,
        step,
        metrics,
        exit_code,
        reason,
        stderr,
        tuple(supersedes),
        after,
        rung,
    )


@dataclass(frozen=True)
class ControlBody:
    experiment: bytes
    action: str


def parse_control(record: Record) -> ControlBody | None:
    b = record.body
    if record.kind != CONTROL or not isinstance(b, dict) or len(record.links) != 1:
        return None
    action = b.get("action")
    if not isinstance(action, str) or action not in CONTROL_ACTIONS:
        return None
    return ControlBody(record.links[0], action)


def objective_values(
    metrics: Mapping[str, Any], objectives: Sequence[str]
) -> tuple[float, ...] | None:
    """The objectives read from a metrics dict, or None if any is missing or not a number."""
    out = []
    for name in objectives:
        value = metrics.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not math.isfinite(value):
            return None
        out.append(float(value))
    return tuple(out)
