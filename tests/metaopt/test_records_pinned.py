"""Record parsers' bounds and refusals a mutation audit of metaopt/_records.py found unpinned.

What a peer accepts from the network as an experiment, trial, event or control decides what
every fold, listing and scheduler sees: each bound here is one a hostile or buggy writer can
reach with a single record.
"""

from __future__ import annotations

import math
from typing import Any

from crdt import KEY_SIZE, Record
from metaopt._records import (
    CONTROL,
    EVENT,
    EXPERIMENT,
    MAX_COUNTER,
    MAX_INT,
    MAX_METRIC_TEXT,
    MAX_NAME,
    MAX_REASON,
    MAX_STDERR,
    MAX_SUPERSEDES,
    TRIAL,
    EventBody,
    TrialBody,
    experiment_record,
    is_metric,
    name_problem,
    objective_values,
    parse_control,
    parse_event,
    parse_experiment,
    parse_trial,
    trial_timeout,
)
from tests.metaopt.test_state import NODE_A, NODE_B, _spec

EXP = experiment_record(_spec())
TRIAL_KEY = b"t" * KEY_SIZE
LINKS = (TRIAL_KEY, EXP.key)


def _event(links: tuple[bytes, ...] = LINKS, **body: Any) -> EventBody | None:
    """NODE_B's event with this body (its node NODE_B unless the body says otherwise)."""
    return parse_event(Record.create(EVENT, NODE_B, 1, 1, {"node": NODE_B, **body}, links))


def _trial(links: tuple[bytes, ...] = (EXP.key,), **body: Any) -> TrialBody | None:
    full = {"params": {"x": 0.5}, "node": NODE_B, "counter": 1, **body}
    return parse_trial(Record.create(TRIAL, NODE_B, 1, 1, full, links))


def _experiment(kind: str = EXPERIMENT, **change: Any) -> object:
    body = {**_spec(command=("python", "train.py")).to_body(), **change}
    return parse_experiment(Record.create(kind, NODE_B, 1, 1, body, []))


# -- names -------------------------------------------------------------------------------------


def test_an_empty_name_is_refused_and_one_of_the_longest_length_is_not() -> None:
    """`submit --name ''` or Study(name='') must be refused (nothing to type after `status`),
    while a name of exactly MAX_NAME printable characters is a valid one."""
    assert name_problem("") is not None
    assert name_problem("x" * MAX_NAME) is None
    assert name_problem("x" * (MAX_NAME + 1)) is not None
    assert name_problem(None) is not None


# -- metric values -----------------------------------------------------------------------------


def test_a_metric_is_a_64_bit_integer_a_finite_float_or_short_text_never_a_bool() -> None:
    """The bounds of what report() may carry: a bool is not a number a curve can plot, an
    integer past int64 or a non-finite float has no place in a curve or a ranking, and a
    metric text longer than MAX_METRIC_TEXT would swell every listing."""
    for good in (0, -1, MAX_INT - 1, -MAX_INT, 0.5, -1e300, "", "x" * MAX_METRIC_TEXT):
        assert is_metric(good), good
    for bad in (True, False, MAX_INT, -MAX_INT - 1, math.inf, -math.inf, math.nan,
                "x" * (MAX_METRIC_TEXT + 1), None, [1.0], b"1"):  # fmt: skip
        assert not is_metric(bad), bad


def test_an_event_from_the_wire_with_a_bool_or_out_of_range_metric_is_refused() -> None:
    """The same bounds hold for what a peer reads from another: an event whose metric a
    record can carry (2**63 fits msgpack's uint64) but report() never writes is skipped."""
    assert _event(kind="progress", step=1, metrics={"objective": MAX_INT - 1}) is not None
    assert _event(kind="progress", step=1, metrics={"objective": -MAX_INT}) is not None
    for bad in (MAX_INT, True, math.inf):
        assert _event(kind="progress", step=1, metrics={"objective": bad}) is None, bad


def test_objective_values_refuse_a_bool_or_a_non_finite_number_and_give_floats() -> None:
    """A trial whose objective is True or inf must not complete with a value: it would rank
    first (or last) in `status` and steer the search."""
    assert objective_values({"a": 1, "b": 0.5}, ["a", "b"]) == (1.0, 0.5)
    assert type(objective_values({"a": 1}, ["a"])[0]) is float  # type: ignore[index]
    for bad in (True, math.inf, -math.inf, "0.5", None):
        assert objective_values({"a": bad}, ["a"]) is None, bad
    assert objective_values({"a": 1.0}, ["a", "b"]) is None


# -- experiment definitions --------------------------------------------------------------------


def test_the_trial_timeout_is_a_whole_number_of_seconds_from_one_to_2_53() -> None:
    """A `--trial-timeout` no submit writes (0 s, a bool, a huge number) is no limit, never a
    limit that kills every run at once or overflows the runner's deadline."""
    assert trial_timeout(_spec(options={"trial_timeout": 1})) == 1
    assert trial_timeout(_spec(options={"trial_timeout": MAX_COUNTER})) == MAX_COUNTER
    for bad in (0, -1, True, MAX_COUNTER + 1, 1.5, "5"):
        assert trial_timeout(_spec(options={"trial_timeout": bad})) is None, bad
    assert trial_timeout(_spec()) is None


def test_a_submission_time_stamps_the_record_but_not_the_experiments_origin() -> None:
    """`status NAME` acts on the latest submission of a name, read from the record's time;
    the origin (and so the code blobs' origin) derives from the definition alone."""
    spec = _spec(nonce="n")
    late = experiment_record(spec, time_ms=5_000)
    assert late.time == 5_000
    assert late.origin == experiment_record(spec).origin
    assert (late.seq, experiment_record(spec).time) == (1, 0)
    assert parse_experiment(late) == parse_experiment(experiment_record(spec))


def test_an_experiments_id_is_stable_across_versions() -> None:
    """A Study reopened on its data directory finds its experiment by recomputing this key:
    a change to the hashing or the body's canonical form would silently start it over."""
    record = experiment_record(_spec())
    assert record.origin.hex() == "922c1b669c7ec64b52256f144724e62f"
    assert record.key.hex() == "db356a6fc7386b59807e98e485360f9c8dd149ab35bb2c9316e2625be53fe583"


def test_an_experiment_body_with_a_field_of_the_wrong_shape_is_refused() -> None:
    """Each field a peer uses to run or show an experiment is checked before it is trusted:
    one wrong field from the wire must make the whole definition unreadable, not crash the
    scheduler, the runner or a listing later."""
    assert _experiment() is not None
    bad: list[dict[str, Any]] = [
        {"name": 5},
        {"space": ["x"]},
        {"space": {"x": 5}},
        {"space": {"x": "uniform(0, 1)\x00"}},
        {"objectives": []},
        {"objectives": "objective"},
        {"objectives": ["a", "b"]},  # two objectives, one direction
        {"directions": ["up"]},
        {"algorithm": None},
        {"max_trials": 0},
        {"max_trials": -3},
        {"max_trials": True},
        {"max_trials": 2.0},
        {"max_step": 0},
        {"max_step": True},
        {"command": []},
        {"command": "python train.py"},
        {"command": ["python", 5]},
        {"objective_regex": 5},
        {"early_stopping": ["asha"]},
        {"nonce": 5},
        {"options": ["trial_timeout"]},
        {"bundle": "/shared"},
        {"bundle": ["shared_dir"]},
        {"bundle": {"shared_dir": "/sha\x00red"}},
        {"bundle": {"manifest": {}, "root": "/ro\x00ot"}},
        {"bundle": {"manifest": ["f"]}},
    ]
    for change in bad:
        assert _experiment(**change) is None, change
    assert _experiment(kind=TRIAL) is None  # a body of the right shape under another kind


def test_an_experiment_body_at_each_lower_bound_is_read_as_written() -> None:
    """A one-trial budget, max_step 1, a bundle manifest with or without its root, and a body
    of an older version without nonce or options are all valid definitions."""
    spec = _experiment(max_trials=1, max_step=1, bundle={"manifest": {"files": []}, "root": "/r"})
    assert spec is not None
    assert (spec.max_trials, spec.max_step) == (1, 1)  # type: ignore[attr-defined]
    assert spec.bundle == {"manifest": {"files": []}, "root": "/r"}  # type: ignore[attr-defined]
    assert _experiment(bundle={"manifest": {}}) is not None
    body = _spec().to_body()
    del body["nonce"], body["options"]
    old = parse_experiment(Record.create(EXPERIMENT, NODE_B, 1, 1, body, []))
    assert old is not None and (old.nonce, dict(old.options)) == ("", {})


# -- trials ------------------------------------------------------------------------------------


def test_a_trial_counter_is_an_integer_from_1_below_2_53_never_a_bool() -> None:
    """A peer numbers its next trial max(counter) + 1: a counter of 2**53 (inexact as a
    float) or True (which is 1) from a forged record must not be taken as a trial number."""
    assert _trial(counter=1) is not None
    assert _trial(counter=MAX_COUNTER - 1) is not None
    for bad in (0, MAX_COUNTER, True, 1.0):
        assert _trial(counter=bad) is None, bad


def test_a_trial_links_exactly_one_experiment_and_its_params_are_scalars() -> None:
    """A trial linked to two records is not one of one experiment's; a parameter that is a
    list or a map cannot be passed to a training script or compared for duplicates."""
    assert _trial(links=(EXP.key, TRIAL_KEY)) is None
    assert _trial(links=()) is None
    assert _trial(params={"x": [0.5]}) is None
    assert _trial(params={"x": {"y": 1}}) is None
    parsed = _trial(params={"x": None, "n": 3, "s": "a", "b": False})
    assert parsed is not None and parsed.experiment == EXP.key


def test_a_bad_suggest_time_drops_only_the_time_and_zero_is_kept() -> None:
    """suggest_ms is informative: True, inf or -1 is no duration (it is dropped, the trial kept;
    a record cannot hold nan), and a 0 ms suggestion survives the round trip through a record."""
    for bad in (True, math.inf, -1.0):
        forged = _trial(suggest_ms=bad)
        assert forged is not None and forged.suggest_ms is None, bad
    body = TrialBody(EXP.key, {"x": 0.5}, NODE_B, 1, suggest_ms=0.0).to_body()
    parsed = parse_trial(Record.create(TRIAL, NODE_B, 1, 1, body, [EXP.key]))
    assert parsed is not None and parsed.suggest_ms == 0.0


# -- events ------------------------------------------------------------------------------------


def test_an_event_links_its_trial_then_its_experiment_exactly() -> None:
    """The fold files an event under links[0] as the trial: swapped, every report would land
    on no trial. A third link makes it no event of ours."""
    parsed = _event(kind="started")
    assert parsed is not None and (parsed.trial, parsed.experiment) == LINKS
    assert _event(links=(*LINKS, TRIAL_KEY), kind="started") is None
    assert _event(links=(TRIAL_KEY,), kind="started") is None


def test_an_event_kind_outside_the_known_ones_is_refused() -> None:
    """A kind the fold has no rule for ("completedd", "Started") must be skipped, not read
    as some state."""
    for kind in ("completedd", "Started", ""):
        assert _event(kind=kind) is None, kind


def test_step_0_and_the_largest_int64_step_are_read_and_2_63_or_a_bool_are_refused() -> None:
    """report(step=0) is the first step of a curve; a step of 2**63 fits a record (uint64)
    but no peer or worker writes it, and True is not a step."""
    zero = _event(kind="progress", step=0, metrics={"objective": 1.0})
    assert zero is not None and zero.step == 0
    assert _event(kind="progress", step=MAX_INT - 1) is not None
    for bad in (MAX_INT, -1, True):
        assert _event(kind="progress", step=bad) is None, bad


def test_zero_step_exit_code_and_rung_survive_the_round_trip_through_a_record() -> None:
    """A clean exit (code 0), a report at step 0 and an ASHA kill at rung 0 are values, not
    absences: dropped from the body they would read back as None."""
    body = EventBody(TRIAL_KEY, EXP.key, "killed", NODE_B, step=0, exit_code=0, rung=0).to_body()
    parsed = parse_event(Record.create(EVENT, NODE_B, 1, 1, body, LINKS))
    assert parsed is not None
    assert (parsed.step, parsed.exit_code, parsed.rung) == (0, 0, 0)


def test_an_exit_code_must_be_an_integer_not_a_bool() -> None:
    assert _event(kind="failed", exit_code=-9) is not None
    assert _event(kind="failed", exit_code=True) is None
    assert _event(kind="failed", exit_code="1") is None


def test_reason_and_stderr_of_exactly_the_limit_are_read_and_one_more_is_refused() -> None:
    """Node.write_event cuts reasons to MAX_REASON and stderr to MAX_STDERR characters: what
    an honest peer writes must read back, what is longer would break a listing's frame."""
    assert _event(kind="failed", reason="r" * MAX_REASON) is not None
    assert _event(kind="failed", stderr="e" * MAX_STDERR) is not None
    assert _event(kind="failed", reason="r" * (MAX_REASON + 1)) is None
    assert _event(kind="failed", stderr="e" * (MAX_STDERR + 1)) is None
    assert _event(kind="failed", reason=5) is None
    assert _event(kind="failed", stderr=["e"]) is None


def test_supersedes_is_a_list_of_at_most_64_keys_of_the_right_size() -> None:
    """A (re)start answers at most MAX_SUPERSEDES free events, each named by its key: a
    string, a longer list or short keys from a forged record must not be read as a past."""
    keys = [bytes([i]) * KEY_SIZE for i in range(MAX_SUPERSEDES + 1)]
    full = _event(kind="started", supersedes=keys[:MAX_SUPERSEDES])
    assert full is not None and full.supersedes == tuple(keys[:MAX_SUPERSEDES])
    assert _event(kind="started", supersedes=keys) is None
    assert _event(kind="started", supersedes=[b"k" * (KEY_SIZE - 1)]) is None
    assert _event(kind="started", supersedes=["k" * KEY_SIZE]) is None
    assert _event(kind="started", supersedes="k" * KEY_SIZE) is None


def test_after_is_one_key_of_the_right_size_and_rung_a_non_negative_integer() -> None:
    """A lost event's `after` orders it behind one event by key: a short one names nothing.
    A rung is an index from 0; a negative one or a bool is a forged value."""
    lost = _event(kind="lost", after=b"a" * KEY_SIZE)
    assert lost is not None and lost.after == b"a" * KEY_SIZE
    assert _event(kind="lost", after=b"a" * (KEY_SIZE - 1)) is None
    assert _event(kind="lost", after="a" * KEY_SIZE) is None
    assert _event(kind="killed", rung=0) is not None
    for bad in (-1, True, MAX_INT):
        assert _event(kind="killed", rung=bad) is None, bad


def test_an_events_ids_are_shared_with_the_names_seen_before() -> None:
    """With names, equal ids become one object (the fold's memory), and the values are
    unchanged."""
    names: dict[bytes, bytes] = {}
    body = EventBody(TRIAL_KEY, EXP.key, "started", NODE_B).to_body()
    first = parse_event(Record.create(EVENT, NODE_B, 1, 1, body, LINKS), names)
    second = parse_event(Record.create(EVENT, NODE_B, 2, 2, body, LINKS), names)
    assert first is not None and second is not None
    assert (first.trial, first.experiment, first.node) == (TRIAL_KEY, EXP.key, NODE_B)
    assert first.trial is second.trial and first.node is second.node
    assert first.experiment is second.experiment


# -- controls ----------------------------------------------------------------------------------


def test_a_control_links_one_experiment_and_names_a_known_action() -> None:
    """`metaopt stop` writes {"action": "stop"} linked to the experiment: a control linked to
    two records, or with another action, must not stop anything."""
    stop = Record.create(CONTROL, NODE_A, 1, 1, {"action": "stop"}, [EXP.key])
    assert parse_control(stop) is not None
    assert parse_control(stop).experiment == EXP.key  # type: ignore[union-attr]
    two = Record.create(CONTROL, NODE_A, 1, 1, {"action": "stop"}, [EXP.key, TRIAL_KEY])
    assert parse_control(two) is None
    for action in ("pause", "Stop", ["stop"]):
        other = Record.create(CONTROL, NODE_A, 1, 1, {"action": action}, [EXP.key])
        assert parse_control(other) is None, action
