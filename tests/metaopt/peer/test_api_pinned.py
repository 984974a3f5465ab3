"""The local API's decisions that the CLI relies on, pinned one by one (see metaopt.peer._api)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from crdt import MemoryStore, Record
from metaopt._errors import MetaoptError
from metaopt._records import (
    BLOB,
    CONTROL,
    EVENT,
    EXPERIMENT,
    TRIAL,
    EventBody,
    ExperimentSpec,
    name_problem,
)
from metaopt.peer._api import MAX_SUBMIT_RECORDS, LocalApi
from metaopt.peer._replica import Replica
from metaopt.peer._wire import Request

NODE = b"n" * 16
OTHER = b"o" * 16


def _exp(spec: ExperimentSpec | None = None, seq: int = 1, stamp: int = 1000) -> Record:
    spec = spec or ExperimentSpec("e", {"x": "uniform(0, 1)"}, command=("t.py",))
    return Record.create(EXPERIMENT, NODE, seq, stamp, spec.to_body(), [])


def _trial(exp: Record, seq: int, params: dict[str, Any], node: bytes = NODE) -> Record:
    body = {"params": params, "node": node, "counter": seq}
    return Record.create(TRIAL, node, seq, 1000 + seq, body, [exp.key])


def _events(exp: Record, trial: Record, *steps: tuple[bytes, str], seq: int = 100,
            **kw: Any) -> list[Record]:  # fmt: skip
    """trial's events, in order: (writer, kind); kw goes into the last one."""
    out = []
    for i, (node, kind) in enumerate(steps):
        extra = kw if i == len(steps) - 1 else {}
        body = EventBody(trial.key, exp.key, kind, node, **extra).to_body()
        out.append(Record.create(EVENT, node, seq + i, 2000 + seq + i, body, [trial.key, exp.key]))
    return out


def _api(held: MemoryStore, **node: Any) -> LocalApi:
    """The local API of a stand-in node whose replica reads held (node's attributes win)."""
    base: dict[str, Any] = {
        "node_id": NODE,
        "replica": Replica(held),
        "blocked_here": lambda key: None,
        "config": SimpleNamespace(timing=SimpleNamespace(lost_after=60.0, stop_grace=3.0)),
        "is_alive": lambda node_id: True,
        "runner": SimpleNamespace(stopping_as=lambda key: None),
    }
    return LocalApi(SimpleNamespace(**{**base, **node}))  # type: ignore[arg-type]


def _call(api: LocalApi, op: str, body: Any) -> Any:
    return asyncio.run(getattr(api, op)(Request(f"api.{op}", NODE, "", body)))


def _refusal(api: LocalApi, op: str, body: Any) -> str:
    with pytest.raises(MetaoptError) as caught:
        _call(api, op, body)
    return str(caught.value)


# --- the summary: experiment_json ------------------------------------------------------


def test_points_equal_in_value_but_not_in_type_are_two_points_of_the_space() -> None:
    """A space of choices([1, 1.0]) tried at 1 only is not exhausted: `submit --wait` would
    stop early and the listing say "all points tried" while one is left."""
    spec = ExperimentSpec("e", {"k": "choices([1, 1.0])"}, command=("t.py",))
    exp = _exp(spec)
    store = MemoryStore()
    store.add([exp, _trial(exp, 2, {"k": 1}), _trial(exp, 3, {"k": 1})])
    assert _call(_api(store), "experiment", "e")["exhausted"] is None
    store.add([_trial(exp, 4, {"k": 1.0})])
    assert _call(_api(store), "experiment", "e")["exhausted"] == (
        "all 2 points of the space are tried"
    )


def test_a_default_finer_than_its_precision_is_no_point_of_the_space_for_exhaustion() -> None:
    """Counted as a point, the default 1.5 of uniform(1, 2, precision=1) stood for the value
    2, and with 1 and 2 tried at b=2 and 1 at b=1 the listing said "all 4 points tried"
    while (2, 1) was never run (a review of README's promises)."""
    space = {"c": "uniform(1, 2, precision=1, default_value=1.5)", "b": "randint(1, 3)"}
    exp = _exp(ExperimentSpec("e", space, command=("t.py",)))
    store = MemoryStore()
    tried = [(1.5, 1), (1.0, 2), (2.0, 2), (1.0, 1)]
    store.add([exp] + [_trial(exp, i + 2, {"c": c, "b": b}) for i, (c, b) in enumerate(tried)])
    assert _call(_api(store), "experiment", "e")["exhausted"] is None
    store.add([_trial(exp, 9, {"c": 2.0, "b": 1})])
    assert _call(_api(store), "experiment", "e")["exhausted"] == (
        "all 4 points of the space are tried"
    )


def test_thawed_counts_only_trials_resumed_after_a_freeze() -> None:
    """`status` says how many trials were thawed; every trial counted would claim thaws that
    never happened."""
    exp = _exp()
    plain, thawed = _trial(exp, 2, {"x": 0.1}), _trial(exp, 3, {"x": 0.2})
    store = MemoryStore()
    store.add([exp, plain, thawed, *_events(exp, plain, (NODE, "started")),
               *_events(exp, thawed, (NODE, "started"), (NODE, "frozen"), (NODE, "thawed"),
                        seq=200)])  # fmt: skip
    shown = _call(_api(store), "experiment", "e")
    assert shown["trials"] == 2 and shown["thawed"] == 1


@pytest.mark.parametrize(("length", "shown"), [(200, 200), (201, 200)])
def test_the_last_failures_reason_is_cut_only_past_200_characters(length: int, shown: int) -> None:
    """The one line `submit --wait` prints of why a trial failed: whole up to 200 characters,
    else cut to 200 with an ellipsis that says so."""
    exp = _exp()
    trial = _trial(exp, 2, {"x": 0.1})
    reason = "r" * length
    store = MemoryStore()
    store.add([exp, trial, *_events(exp, trial, (NODE, "started"), (NODE, "failed"),
                                    reason=reason)])  # fmt: skip
    said = _call(_api(store), "experiment", "e")["last_failed"]["reason"]
    assert len(said) == shown
    assert said == (reason if length <= 200 else "r" * 197 + "...")


def test_the_last_failures_reason_is_its_first_line_with_text() -> None:
    """A reason beginning with a blank line (a traceback printed after a newline) showed as
    nothing at all."""
    exp = _exp()
    trial = _trial(exp, 2, {"x": 0.1})
    store = MemoryStore()
    store.add([exp, trial, *_events(exp, trial, (NODE, "started"), (NODE, "failed"),
                                    reason="\n  ValueError: lr\nmore")])  # fmt: skip
    assert _call(_api(store), "experiment", "e")["last_failed"]["reason"] == "ValueError: lr"


# --- finding an experiment -------------------------------------------------------------


def test_an_id_of_four_characters_or_more_gets_no_length_hint() -> None:
    """Only an id too short to look up is told it needs 4 characters; "abcd" matching nothing
    is told it matches nothing."""
    store = MemoryStore()
    store.add([_exp()])
    api = _api(store)
    assert "at least 4 characters" in _refusal(api, "experiment", "abc")
    said = _refusal(api, "experiment", "abcd")
    assert "no experiment 'abcd'" in said and "at least 4" not in said


# --- a trial's row: stopping, quiet ----------------------------------------------------


def test_only_a_running_trial_is_shown_stopping() -> None:
    """The runner may still name a stop for a trial already recorded ended (its process
    exiting): its row says how it ended, with no "stopping" beside it."""
    exp = _exp()
    running, done = _trial(exp, 2, {"x": 0.1}), _trial(exp, 3, {"x": 0.2})
    store = MemoryStore()
    store.add([exp, running, done, *_events(exp, running, (NODE, "started")),
               *_events(exp, done, (NODE, "started"), (NODE, "killed"), seq=200)])  # fmt: skip
    api = _api(store, runner=SimpleNamespace(stopping_as=lambda key: "killed"))
    rows = {t["id"]: t for t in _call(api, "experiment", "e")["trial_list"]}
    assert rows[running.key.hex()]["stopping"] == "killed"
    assert rows[done.key.hex()]["state"] == "killed" and "stopping" not in rows[done.key.hex()]


def test_a_pending_trial_of_a_silent_node_says_how_long_it_has_been_quiet() -> None:
    """A trial claimed by a node that went quiet before it started it is taken for lost too:
    its row says so meanwhile, as a running one's does."""
    exp = _exp()
    pending = _trial(exp, 2, {"x": 0.1}, node=OTHER)
    store = MemoryStore()
    store.add([exp, pending])
    api = _api(store, is_alive=lambda node_id: node_id != OTHER)
    [row] = _call(api, "experiment", "e")["trial_list"]
    assert row["state"] == "pending" and row["quiet"]["lost_after"] == 60.0


def test_quiet_is_judged_by_the_node_running_the_trial_not_the_one_that_created_it() -> None:
    """A trial created on one node and re-run on another: whether it looks silent depends on
    its runner (a live creator hid a dead runner, a dead creator flagged a live runner)."""
    exp = _exp()
    by_me_run_there = _trial(exp, 2, {"x": 0.1}, node=NODE)
    by_them_run_here = _trial(exp, 3, {"x": 0.2}, node=OTHER)
    store = MemoryStore()
    store.add([exp, by_me_run_there, by_them_run_here,
               *_events(exp, by_me_run_there, (OTHER, "started")),
               *_events(exp, by_them_run_here, (NODE, "started"), seq=200)])  # fmt: skip
    api = _api(store, is_alive=lambda node_id: node_id == NODE)
    rows = {t["id"]: t for t in _call(api, "experiment", "e")["trial_list"]}
    assert rows[by_me_run_there.key.hex()]["runner"] == OTHER.hex()
    assert "quiet" in rows[by_me_run_there.key.hex()]
    assert "quiet" not in rows[by_them_run_here.key.hex()]


# --- submit: api.add -------------------------------------------------------------------


def test_submit_of_no_records_is_refused() -> None:
    """An empty submission would answer "submitted" with no experiment."""
    api = _api(MemoryStore())
    assert f"submit between 1 and {MAX_SUBMIT_RECORDS} records" in _refusal(api, "add", [])


def _submitting(store: MemoryStore) -> tuple[LocalApi, list[list[Record]]]:
    """An API whose node stores submitted records in store; and what it pushed to its peers."""
    pushed: list[list[Record]] = []
    api = _api(store, add_submitted=lambda records: pushed.append(store.add(records)))
    return api, pushed


def _blobs(exp: Record, n: int) -> list[Record]:
    return [Record.create(BLOB, exp.origin, 10 + i, 1000, {"data": bytes([i % 256]) * 8},
                          [exp.key]) for i in range(n)]  # fmt: skip


def test_submit_takes_up_to_its_record_limit_and_names_only_the_experiments() -> None:
    """A submission of exactly MAX_SUBMIT_RECORDS goes through (one more is refused), and the
    reply lists the experiment keys alone: `submit` reads the experiment it made from it."""
    exp = _exp()
    store = MemoryStore()
    api, pushed = _submitting(store)
    records = [exp, *_blobs(exp, MAX_SUBMIT_RECORDS - 1)]
    assert _call(api, "add", [r.data for r in records]) == [exp.key]
    assert len(pushed) == 1 and len(store) == MAX_SUBMIT_RECORDS
    more = [*records, *_blobs(_exp(seq=2), 1)]
    assert "submit between 1 and" in _refusal(_submitting(MemoryStore())[0], "add",
                                             [r.data for r in more])  # fmt: skip


@pytest.mark.parametrize(
    ("record", "said"),
    [
        (_trial(_exp(), 2, {"x": 0.5}), "submit carries experiment and blob records, not trial"),
        (
            Record.create(EXPERIMENT, NODE, 1, 1000, {"name": 3}, []),
            "the submitted experiment record is malformed",
        ),
    ],
    ids=["a-trial", "a-malformed-experiment"],
)
def test_submit_refuses_what_is_not_a_well_formed_experiment_or_blob_and_stores_nothing(
    record: Record, said: str
) -> None:
    """Submission is all or nothing: a record the CLI never builds (a trial, an experiment a
    peer cannot read) would be stored and spread for good, the good ones beside it too."""
    exp = _exp()
    store = MemoryStore()
    api, pushed = _submitting(store)
    assert said in _refusal(api, "add", [exp.data, record.data])
    assert len(store) == 0 and pushed == []


# --- stop ------------------------------------------------------------------------------


def test_stop_refuses_an_experiment_already_stopped_and_writes_nothing() -> None:
    """A second `metaopt stop` says it was already stopped rather than write another stop."""
    exp = _exp()
    store = MemoryStore()
    store.add([exp, Record.create(CONTROL, NODE, 9, 1500, {"action": "stop"}, [exp.key])])
    written: list[object] = []
    api = _api(store, stop_experiment=written.append)
    assert "is already stopped" in _refusal(api, "stop", "e") and written == []


def test_stop_does_not_point_at_an_earlier_namesake_that_finished() -> None:
    """An earlier submission of the name that used its budget runs nothing: `stop` must not
    tell the user it is still open."""
    spec = ExperimentSpec("e", {"x": "uniform(0, 1)"}, command=("t.py",), max_trials=1)
    old = _exp(spec, seq=1, stamp=1000)
    latest = _exp(ExperimentSpec("e", {"x": "uniform(0, 1)"}, command=("t.py",), nonce="2"),
                  seq=2, stamp=3000)  # fmt: skip
    done = _trial(old, 3, {"x": 0.5})
    store = MemoryStore()
    store.add([old, latest, done, *_events(old, done, (NODE, "started"), (NODE, "completed"),
                                           step=1, metrics={"objective": 0.1})])  # fmt: skip
    written: list[object] = []
    api = _api(store, stop_experiment=written.append)
    assert api.node.replica.experiments[old.key].finished
    reply = _call(api, "stop", "e")
    assert reply["key"] == latest.key.hex() and reply["older_open"] == []


# --- logs ------------------------------------------------------------------------------


def _logs_api(store: MemoryStore, log: Path) -> LocalApi:
    return _api(store, runner=SimpleNamespace(log_path=lambda key: log),
                peers=SimpleNamespace(get=lambda node_id: None))  # fmt: skip


def test_a_log_of_exactly_the_shown_size_is_shown_whole(tmp_path: Path) -> None:
    """Only a log past 1 MiB is cut (from a line start, saying so); one of exactly 1 MiB lost
    its first line and was said to be cut."""
    exp = _exp()
    trial = _trial(exp, 2, {"x": 0.5})
    store = MemoryStore()
    store.add([exp, trial, *_events(exp, trial, (NODE, "started"))])
    log = tmp_path / "output.log"
    first = b"first line\n"
    log.write_bytes(first + b"y" * ((1 << 20) - len(first)))
    out = _call(_logs_api(store, log), "logs", trial.key.hex()[:8])
    assert out["here"] is True and out["text"].startswith("first line\n")
    assert len(out["text"]) == 1 << 20 and "size" not in out


def test_a_log_cut_at_a_line_start_keeps_that_line(tmp_path: Path) -> None:
    """The 1 MiB cut goes to the next line's start, unless it falls at one: then the line
    there was dropped whole as if it had been cut."""
    exp = _exp()
    trial = _trial(exp, 2, {"x": 0.5})
    store = MemoryStore()
    store.add([exp, trial, *_events(exp, trial, (NODE, "started"))])
    log = tmp_path / "output.log"
    kept = b"kept line\n" + b"y" * ((1 << 20) - 10)
    log.write_bytes(b"dropped\n" + kept)
    out = _call(_logs_api(store, log), "logs", trial.key.hex()[:8])
    assert out["text"].encode() == kept and out["size"] == len(kept) + 8
    log.write_bytes(b"dropped" + kept[1:] + b"\n")  # the cut now falls inside "kept line"
    out = _call(_logs_api(store, log), "logs", trial.key.hex()[:8])
    assert out["text"].encode() == b"y" * ((1 << 20) - 10) + b"\n"


def test_a_log_moved_aside_past_its_limit_is_named_with_the_part_shown(tmp_path: Path) -> None:
    """Past 32 MiB a log moves to <log>.1: the reply named only <log> as the whole log, and
    a short new part was shown as if it were all the run wrote (a review)."""
    exp = _exp()
    trial = _trial(exp, 2, {"x": 0.5})
    store = MemoryStore()
    store.add([exp, trial, *_events(exp, trial, (NODE, "started"))])
    log = tmp_path / "output.log"
    log.write_bytes(b"latest\n")
    out = _call(_logs_api(store, log), "logs", trial.key.hex()[:8])
    assert "older" not in out and "size" not in out
    (tmp_path / "output.log.1").write_bytes(b"BEGIN\n" * 1000)
    out = _call(_logs_api(store, log), "logs", trial.key.hex()[:8])
    assert (out["text"], out["older"], out["older_size"]) == (
        "latest\n",
        str(tmp_path / "output.log.1"),
        6000,
    )
    log.write_bytes(b"z\n" * (1 << 20))
    out = _call(_logs_api(store, log), "logs", trial.key.hex()[:8])
    assert (out["size"], out["older_size"]) == (2 << 20, 6000)


def test_logs_of_a_trial_no_runner_has_started_show_the_log_here(tmp_path: Path) -> None:
    """A trial whose start has not been recorded yet (pending) but whose output is here: its
    log is shown, not "it ran elsewhere" with no node."""
    exp = _exp()
    trial = _trial(exp, 2, {"x": 0.5})
    store = MemoryStore()
    store.add([exp, trial])
    log = tmp_path / "output.log"
    log.write_text("epoch 1\n")
    out = _call(_logs_api(store, log), "logs", trial.key.hex()[:8])
    assert out["here"] is True and out["text"] == "epoch 1\n" and out["state"] == "pending"


# --- freeze, kill, thaw by hand --------------------------------------------------------


def _running_here(ends: bool) -> tuple[LocalApi, Record, list[tuple[Any, ...]], list[Any]]:
    """An API over one trial running on this peer whose stop ends it (ends) or finds it has
    exited already; with the runner's end calls and noted stop requests."""
    exp = _exp()
    trial = _trial(exp, 2, {"x": 0.5})
    store = MemoryStore()
    store.add([exp, trial, *_events(exp, trial, (NODE, "started"))])
    ended: list[tuple[Any, ...]] = []
    noted: list[Any] = []

    async def end(key: bytes, outcome: str, reason: str) -> bool:
        ended.append((key, outcome, reason))
        return ends

    runner = SimpleNamespace(
        running_keys=lambda: {trial.key},
        stopping_as=lambda key: None,
        end=end,
        kill_instead=lambda key, why: False,
        note_stop_request=lambda *asked: noted.append(asked),
    )
    return _api(store, runner=runner), trial, ended, noted


def test_a_freeze_is_kept_as_a_stop_request_until_recorded() -> None:
    """The freeze is noted for the runner (a crash in its grace must not forget that the user
    froze it), and answers the trial's id."""
    api, trial, ended, noted = _running_here(ends=True)
    assert _call(api, "freeze", trial.key.hex()[:8]) == trial.key.hex()
    assert ended == [(trial.key, "frozen", "frozen by the user")]
    assert noted == [(trial.key, "frozen", "frozen by the user")]


@pytest.mark.parametrize("op", ["freeze", "kill"])
def test_a_trial_that_exits_as_it_is_stopped_says_so_and_notes_no_stop(op: str) -> None:
    """The trial ended on its own meanwhile: the user is told it is recorded as it ended,
    and no stop request is left behind to relabel it."""
    api, trial, _ended, noted = _running_here(ends=False)
    assert "has just exited" in _refusal(api, op, trial.key.hex()[:8]) and noted == []


def _thaw_api(trial_node: bytes, alive: set[bytes], *, started: bool = True,
              ) -> tuple[LocalApi, Record, list[Any]]:  # fmt: skip
    """An API over one trial frozen by trial_node (its start recorded, or not yet arrived),
    on a peer with a free slot that has listened long enough; and the launches it makes."""
    exp = _exp()
    trial = _trial(exp, 2, {"x": 0.5})
    store = MemoryStore()
    steps = ((trial_node, "started"), (trial_node, "frozen")) if started else (
        (trial_node, "frozen"),)  # fmt: skip
    store.add([exp, trial, *_events(exp, trial, *steps, step=1)])
    launched: list[Any] = []

    async def launch(state: object, view: Any, *, thaw: bool = False) -> None:
        launched.append((view.key, thaw))

    runner = SimpleNamespace(stopping_as=lambda key: None, free_slots=lambda: 1,
                             starts_held=lambda: None, can_run=lambda state: True,
                             launch=launch)  # fmt: skip
    api = _api(store, runner=runner, is_alive=alive.__contains__, listened=lambda: True,
               caught_up=lambda: True, stopping=False)  # fmt: skip
    return api, trial, launched


def test_thawing_a_trial_this_peer_froze_resumes_it_from_its_checkpoint() -> None:
    """Thawed where it was frozen, it goes on from its checkpoint: the reply must not tell
    the user it restarts from step 0 (only a trial taken over from a gone peer does)."""
    api, trial, launched = _thaw_api(NODE, {NODE})
    assert _call(api, "thaw", trial.key.hex()[:8]) == {"id": trial.key.hex(), "from_step_0": False}
    assert launched == [(trial.key, True)]


def test_a_frozen_trial_whose_runner_is_not_known_here_is_not_taken_over() -> None:
    """Its freeze heard before its start: which peer holds its checkpoint is not known here,
    so it is not taken for a gone peer's and re-run from step 0."""
    api, trial, launched = _thaw_api(OTHER, {NODE}, started=False)
    view = api.node.replica.experiments[trial.links[0]].trial(trial.key)
    assert view is not None and view.state == "frozen" and view.runner is None
    assert "is frozen on node another peer" in _refusal(api, "thaw", trial.key.hex()[:8])
    assert launched == []


def test_kill_refuses_a_trial_waiting_to_start() -> None:
    """A pending trial of an experiment still running is not the user's to kill by hand (it
    is no peer's run yet): the refusal says what kill takes."""
    exp = _exp()
    trial = _trial(exp, 2, {"x": 0.5})
    store = MemoryStore()
    store.add([exp, trial])
    runner = SimpleNamespace(running_keys=lambda: set(), stopping_as=lambda key: None)
    api = _api(store, runner=runner, is_alive=lambda node_id: False, listened=lambda: True,
               caught_up=lambda: True, write_event=lambda *a, **k: None)  # fmt: skip
    said = _refusal(api, "kill", trial.key.hex()[:8])
    assert "is pending; only a running or frozen one is killed" in said


# --- clean -----------------------------------------------------------------------------


def _clean_api(tmp_path: Path) -> tuple[LocalApi, Record, Record, Path]:
    """An API over two experiments, "e" (two completed trials) and "f" (stopped, with a code
    bundle here); with both experiments and f's bundle folder."""
    from metaopt.peer._identity import DataDir

    dirs = DataDir(tmp_path)
    dirs.ensure()
    e = _exp()
    f = _exp(ExperimentSpec("f", {"x": "uniform(0, 1)"}, command=("t.py",)), seq=50)
    store = MemoryStore()
    store.add([e, f, Record.create(CONTROL, NODE, 60, 1500, {"action": "stop"}, [f.key])])
    for i in range(2):
        trial = _trial(e, 2 + i, {"x": i / 4})
        events = _events(e, trial, (NODE, "started"), (NODE, "completed"), seq=100 + 10 * i,
                         step=1, metrics={"objective": i})  # fmt: skip
        store.add([trial, *events])
    bundle = dirs.bundles / f.key.hex()[:16]
    bundle.mkdir(parents=True)
    (bundle / "t.py").write_text("print(1)\n")
    api = _api(store, dirs=dirs, runner=SimpleNamespace(running_keys=lambda: frozenset()))
    return api, e, f, bundle


def test_clean_keeps_the_best_trial_unless_told_a_keep_of_0(tmp_path: Path) -> None:
    """`metaopt clean --keep 0` empties every ended trial's folder; with no keep given the
    best trial's folder stays (what `best` points the user to); a negative keep, a keep of
    true (an int to Python) and a dry_run that is not true or false are refused."""
    api, _e, _f, _bundle = _clean_api(tmp_path)
    plan, dry_run = api.clean_plan({})
    assert len(plan.to_keep) == 1 and len(plan.to_empty) == 1 and dry_run is False
    plan, _ = api.clean_plan({"keep": 0})
    assert plan.to_keep == [] and len(plan.to_empty) == 2
    for bad in ({"keep": -1}, {"keep": True}, {"keep": 1.0}, {"experiments": "e"}, "e", None):
        with pytest.raises(MetaoptError, match="clean takes"):
            api.clean_plan(bad)
    with pytest.raises(MetaoptError, match="dry_run of true or false"):
        api.clean_plan({"dry_run": "no"})


def test_clean_of_named_experiments_touches_only_theirs(tmp_path: Path) -> None:
    """`metaopt clean e` must not delete another experiment's code bundle."""
    api, _e, _f, _bundle = _clean_api(tmp_path)
    plan, _ = api.clean_plan({"experiments": ["e"], "keep": 0})
    assert plan.bundles == 0 and len(plan.to_empty) == 2
    plan, _ = api.clean_plan({"keep": 0})
    assert plan.bundles == 1


def test_a_dry_run_clean_moves_and_deletes_nothing(tmp_path: Path) -> None:
    """`metaopt clean --dry-run` only says what it would free: the bundle it names stays where
    a starting trial looks for it."""
    api, _e, _f, bundle = _clean_api(tmp_path)
    out = _call(api, "clean", {"experiments": ["f"], "keep": 1, "dry_run": True})
    assert out["bundles"] == 1 and out["freed"] > 0
    assert (bundle / "t.py").read_text() == "print(1)\n"
    assert sorted(p.name for p in bundle.parent.iterdir()) == [bundle.name]
    out = _call(api, "clean", {"experiments": ["f"], "keep": 1})
    assert out["bundles"] == 1 and not bundle.exists()


@pytest.mark.parametrize("odd", ["x1²", "²", "v1①", "exp٣"])
def test_a_name_with_a_digit_int_does_not_read_is_listed_with_the_others(odd: str) -> None:
    """`metaopt submit --name 'x1²'` is accepted; after it `metaopt status` and every later
    `metaopt submit` failed with "internal error in api.experiments: invalid literal for int()"
    on every peer holding it (records are never deleted)."""
    assert name_problem(odd) is None  # a name submit accepts
    store = MemoryStore()
    store.add([
        Record.create(EXPERIMENT, NODE, i + 1, 1000 + i,
                      ExperimentSpec(name, {"x": "uniform(0, 1)"}).to_body(), [])
        for i, name in enumerate(["exp10", odd, "exp2"])
    ])  # fmt: skip
    api = LocalApi(SimpleNamespace(replica=Replica(store)))  # type: ignore[arg-type]
    listed = asyncio.run(api.experiments(Request("api.experiments", NODE, "", None)))
    names = [e["name"] for e in listed]
    assert sorted(names) == sorted(["exp10", odd, "exp2"])
    assert names.index("exp2") < names.index("exp10")  # numbers still sort as numbers
