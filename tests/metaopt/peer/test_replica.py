"""The peer's replica and local API: experiments and trials found by name or id."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from crdt import LevelDBStore, MemoryStore, Record
from crdt._store import notify
from metaopt._errors import MetaoptError
from metaopt._records import CONTROL, EVENT, EXPERIMENT, TRIAL, EventBody, ExperimentSpec
from metaopt._state import ExperimentState
from metaopt.peer._api import LocalApi
from metaopt.peer._replica import Replica
from metaopt.peer._wire import Request

NODE = b"n" * 16


def test_a_name_finds_the_latest_submitted_experiment_of_that_name() -> None:
    # Resubmitting under the same name and asking for its status must show the new one, not
    # the older one that happens to have more trials.
    old, new = (
        Record.create(EXPERIMENT, NODE, seq, time, ExperimentSpec("sweep", {"x": "uniform(0, 1)"},
                      nonce=str(seq)).to_body(), [])
        for seq, time in ((1, 1000), (2, 5000))
    )  # fmt: skip
    assert old.key != new.key
    store = MemoryStore()
    store.add([new])
    replica = Replica(store)
    trials = [
        Record.create(TRIAL, NODE, 10 + i, 2000, {"params": {"x": i / 4}, "node": NODE,
                      "counter": i + 1}, [old.key])
        for i in range(3)
    ]  # fmt: skip
    store.add([old, *trials])  # the older one arrives later, with more trials
    assert len(replica.experiments[old.key]) == 3 and len(replica.experiments[new.key]) == 0
    found = replica.find_experiment("sweep")
    assert found is not None and found.key == new.key
    assert Replica(store).find_experiment("sweep").key == new.key  # type: ignore[union-attr]
    assert replica.find_experiment(old.key.hex()[:8]).key == old.key  # type: ignore[union-attr]


def test_a_batch_of_records_seals_the_trials_it_ended_each_decoded_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Sealed as each ending arrived, a trial whose other events came after it was decoded
    # twice (a restart's load took 19% longer); left until a view is read, a catch-up held
    # every ended trial's events decoded at once.
    exp, trial = _experiment_and_trial()
    store = MemoryStore()
    store.add([exp])
    replica = Replica(store)
    state = replica.experiments[exp.key]
    unsealed: list[bytes] = []
    real = ExperimentState._unseal
    monkeypatch.setattr(
        ExperimentState, "_unseal", lambda self, key: (unsealed.append(key), real(self, key))
    )

    def event(seq: int, kind: str, **kw: Any) -> Record:
        body = EventBody(trial.key, exp.key, kind, NODE, **kw).to_body()
        return Record.create(EVENT, NODE, seq, 1000 + seq, body, [trial.key, exp.key])

    ending = event(9, "completed", step=2, metrics={"objective": 0.5})
    reports = [event(3 + i, "progress", step=i, metrics={"objective": 1.0}) for i in range(3)]
    store.add([trial, ending, event(2, "started"), *reports])  # its ending first, as it came
    assert trial.key not in state._events  # sealed with the batch, no view read
    assert unsealed == []  # folded from the events decoded as they came, not decoded again
    view = state.trial(trial.key)
    assert view is not None and view.state == "completed" and len(view.curve) == 3
    assert unsealed == []
    store.add([event(20, "heartbeat")])  # a late event folds it all again: decoded once more
    again = state.trial(trial.key)
    assert again is not None and again.last_seen == 1020 and unsealed == [trial.key]
    assert (again.state, again.values, again.curve) == (view.state, view.values, view.curve)


def test_an_experiment_folded_after_its_history_seals_its_ended_trials() -> None:
    # As a join brings many: its ended trials' events were held decoded until a view was read.
    exp, trial = _experiment_and_trial()
    body = EventBody(trial.key, exp.key, "completed", NODE, metrics={"objective": 0.5})
    ending = Record.create(EVENT, NODE, 3, 1003, body.to_body(), [trial.key, exp.key])
    store = MemoryStore()
    replica = Replica(store)
    store.add([trial, ending])  # its history first: nothing to fold it into yet
    store.add([exp])
    state = replica.experiments[exp.key]
    assert trial.key not in state._events and trial.key in state._sealed
    view = state.trial(trial.key)
    assert view is not None and view.state == "completed" and view.values == (0.5,)


def _experiment_and_trial() -> tuple[Record, Record]:
    """An experiment and one trial of it, both written by NODE."""
    exp = Record.create(
        EXPERIMENT, NODE, 1, 1000, ExperimentSpec("e", {"x": "uniform(0, 1)"}).to_body(), []
    )
    trial = Record.create(
        TRIAL, NODE, 2, 1001, {"params": {"x": 0.5}, "node": NODE, "counter": 1}, [exp.key]
    )
    return exp, trial


@pytest.mark.asyncio
async def test_logs_of_a_trial_that_failed_here_before_it_ran_say_so(tmp_path: Path) -> None:
    # It used to send the user to "node <this node> at an unknown address".
    store = MemoryStore()
    exp, trial = _experiment_and_trial()
    failed = EventBody(trial.key, exp.key, "failed", NODE, reason="objective regex '(' is invalid")
    started = EventBody(trial.key, exp.key, "started", NODE)  # launch writes it, then fails
    events = [
        Record.create(EVENT, NODE, 3 + i, 1002 + i, body.to_body(), [trial.key, exp.key])
        for i, body in enumerate((started, failed))
    ]
    store.add([exp, trial, *events])
    node = SimpleNamespace(
        node_id=NODE,
        replica=Replica(store),
        runner=SimpleNamespace(log_path=lambda key: tmp_path / "none.log"),
        peers=SimpleNamespace(get=lambda node_id: None),
    )
    api = LocalApi(node)  # type: ignore[arg-type]
    out = await api.logs(Request("api.logs", NODE, "", trial.key.hex()[:8]))
    assert out["here"] is True and "regex '(' is invalid" in out["text"]


@pytest.mark.asyncio
async def test_logs_of_a_trial_cut_short_here_and_rerun_elsewhere_point_to_the_rerun(
    tmp_path: Path,
) -> None:
    # A peer killed -9 mid-trial and restarted printed its cut-short attempt's output ("resume
    # 0") as the trial's log, while status showed the trial completed by another node's re-run.
    store = MemoryStore()
    other = b"o" * 16
    exp, trial = _experiment_and_trial()
    steps = [
        (NODE, EventBody(trial.key, exp.key, "started", NODE)),
        (other, EventBody(trial.key, exp.key, "lost", other, reason="no news from node")),
        (other, EventBody(trial.key, exp.key, "started", other)),
        (other, EventBody(trial.key, exp.key, "completed", other, metrics={"loss": 0.2})),
    ]
    events = [
        Record.create(EVENT, node, 3 + i, 1002 + i, body.to_body(), [trial.key, exp.key])
        for i, (node, body) in enumerate(steps)
    ]
    store.add([exp, trial, *events])
    log = tmp_path / "output.log"
    log.write_text("resume 0\n")
    node = SimpleNamespace(
        node_id=NODE,
        replica=Replica(store),
        runner=SimpleNamespace(log_path=lambda key: log),
        peers=SimpleNamespace(get=lambda node_id: SimpleNamespace(addr="127.0.0.1:9")),
    )
    api = LocalApi(node)  # type: ignore[arg-type]
    out = await api.logs(Request("api.logs", NODE, "", trial.key.hex()[:8]))
    assert out["here"] is False and out["runner"] == other.hex()
    assert out["address"] == "127.0.0.1:9" and out["earlier"] == str(log)
    assert out["stderr"] is None


@pytest.mark.asyncio
async def test_logs_of_a_trial_that_failed_elsewhere_show_its_recorded_stderr() -> None:
    # README: a failed trial is recorded "with the reason and the last lines of its stderr";
    # they were in every replica but no command showed them.
    store = MemoryStore()
    other = b"o" * 16
    exp, trial = _experiment_and_trial()
    tail = "Traceback (most recent call last):\nValueError: lr must be positive"
    events = [
        EventBody(trial.key, exp.key, "started", other),
        EventBody(trial.key, exp.key, "failed", other, exit_code=1, reason="exit 1", stderr=tail),
    ]
    store.add([exp, trial])
    store.add(
        [
            Record.create(EVENT, other, i, 1002 + i, body.to_body(), [trial.key, exp.key])
            for i, body in enumerate(events, 1)
        ]
    )
    node = SimpleNamespace(
        node_id=NODE,
        replica=Replica(store),
        runner=SimpleNamespace(log_path=lambda key: Path("/nonexistent/metaopt/output.log")),
        peers=SimpleNamespace(get=lambda node_id: None),
    )
    out = await LocalApi(node).logs(Request("api.logs", NODE, "", trial.key.hex()[:8]))  # type: ignore[arg-type]
    assert out["here"] is False and out["stderr"] == tail
    # Why it failed, which `status NAME` cuts short.
    assert (out["state"], out["reason"]) == ("failed", "exit 1")


@pytest.mark.asyncio
async def test_a_running_trial_of_a_silent_node_says_how_long_it_has_been_silent() -> None:
    store = MemoryStore()
    other = b"o" * 16
    exp = Record.create(
        EXPERIMENT, NODE, 1, 1000, ExperimentSpec("e", {"x": "uniform(0, 1)"}).to_body(), []
    )
    records = [exp]
    for seq, node in ((2, NODE), (4, other)):
        body = {"params": {"x": seq / 10}, "node": node, "counter": 1}
        trial = Record.create(TRIAL, node, seq, 1001, body, [exp.key])
        started = EventBody(trial.key, exp.key, "started", node).to_body()
        records += [trial, Record.create(EVENT, node, seq + 1, 2000, started, [trial.key, exp.key])]
    mono = [3.0]
    replica = Replica(store, monotonic=lambda: mono[0])
    store.add(records)  # they arrive
    mono[0] += 25.4
    node = SimpleNamespace(
        node_id=NODE,
        replica=replica,
        blocked_here=lambda key: None,
        config=SimpleNamespace(timing=SimpleNamespace(lost_after=60.0)),
        is_alive=lambda node_id: node_id == NODE,
        # This peer's own trial is being killed: it showed "running" with no word of it.
        runner=SimpleNamespace(stopping_as={records[1].key: "killed"}.get),
    )
    out = await LocalApi(node).experiment(Request("api.experiment", NODE, "", "e"))  # type: ignore[arg-type]
    quiet = {t["node"][:2]: t.get("quiet") for t in out["trial_list"]}
    assert quiet == {NODE.hex()[:2]: None, other.hex()[:2]: {"seconds": 25, "lost_after": 60.0}}
    stopping = {t["node"][:2]: t.get("stopping") for t in out["trial_list"]}
    assert stopping == {NODE.hex()[:2]: "killed", other.hex()[:2]: None}


def test_a_trial_id_prefix_must_be_long_enough_and_match_one_trial() -> None:
    store = MemoryStore()
    exp = Record.create(
        EXPERIMENT, NODE, 1, 1000, ExperimentSpec("e", {"x": "uniform(0, 1)"}).to_body(), []
    )
    store.add([exp])
    by_prefix: dict[str, Record] = {}
    for i in range(5000):  # until two ids share their first 4 hex digits (~300 expected)
        body = {"params": {"x": i / 5000}, "node": NODE, "counter": i + 1}
        trial = Record.create(TRIAL, NODE, 2 + i, 1001, body, [exp.key])
        store.add([trial])
        if trial.key.hex()[:4] in by_prefix:
            break
        by_prefix[trial.key.hex()[:4]] = trial
    shared = trial.key.hex()[:4]
    replica = Replica(store)
    with pytest.raises(MetaoptError, match="at least 4"):
        replica.find_trial(shared[:3])
    with pytest.raises(MetaoptError, match="matches 2 trials"):
        replica.find_trial(shared)
    found = replica.find_trial(trial.key.hex()[:16])
    assert found is not None and found[1] == trial.key


@pytest.mark.asyncio
async def test_a_freeze_or_thaw_that_cannot_happen_says_why_and_what_to_do() -> None:
    store = MemoryStore()
    spec = ExperimentSpec("e", {"x": "uniform(0, 1)"}, command=("t.py",))
    exp = Record.create(EXPERIMENT, NODE, 1, 1000, spec.to_body(), [])
    other = b"o" * 16
    trials = [
        Record.create(TRIAL, NODE, 2 + i, 1001, {"params": {"x": i / 4}, "node": NODE,
                      "counter": i + 1}, [exp.key])
        for i in range(3)
    ]  # fmt: skip
    frozen_by = {trials[0].key: NODE, trials[1].key: other}
    events = [
        Record.create(EVENT, node, 10 + i, 1100 + i, EventBody(t, exp.key, kind, node, 1).to_body(),
                      [t, exp.key])
        for i, (t, node, kind) in enumerate(
            [(t, n, k) for t, n in frozen_by.items() for k in ("started", "frozen")]
            + [(trials[2].key, NODE, "started")]
        )
    ]  # fmt: skip
    store.add([exp, *trials, *events])
    stopping: dict[bytes, str] = {}
    held: list[str | None] = [None]
    runner = SimpleNamespace(
        free_slots=lambda: 0,
        starts_held=lambda: held[0],
        running_keys=lambda: {trials[2].key},
        stopping_as=stopping.get,
        can_run=lambda state: True,
        note_stop_request=lambda *asked: None,
    )
    alive = {NODE, other}
    listened = [False]
    node = SimpleNamespace(
        node_id=NODE,
        replica=Replica(store),
        runner=runner,
        is_alive=alive.__contains__,
        listened=lambda: listened[0],
        caught_up=lambda: True,
        stopping=False,
    )
    api = LocalApi(node)  # type: ignore[arg-type]

    async def refusal(trial: Record, op: str = "thaw") -> str:
        with pytest.raises(MetaoptError) as info:
            await getattr(api, op)(Request(f"api.{op}", NODE, "", trial.key.hex()[:8]))
        return str(info.value)

    # No slot free: resumed in the next one that frees (told "freeze a running trial first",
    # a user who did saw the slot go to a new trial, again and again).
    asked: list[bytes] = []
    runner.ask_thaw = lambda state, view: asked.append(view.key)
    answer = await api.thaw(Request("api.thaw", NODE, "", trials[0].key.hex()[:8]))
    assert answer == {"id": trials[0].key.hex(), "from_step_0": False, "queued": True}
    assert asked == [trials[0].key]
    held[0] = "its disk refused a trial's folder (No space left on device)"
    assert "starts no trial now: its disk refused" in await refusal(trials[0])
    held[0] = None
    elsewhere = f"frozen on node {other.hex()[:8]}; run `metaopt thaw` there"
    assert elsewhere in await refusal(trials[1])
    assert "is running; only a frozen one thaws" in await refusal(trials[2])
    # Each used to be "not running on this peer" (as if it ran elsewhere) or "is running".
    assert "is frozen; only a running one freezes" in await refusal(trials[0], "freeze")
    stopping[trials[2].key] = "frozen"
    assert "is still being frozen; thaw it once it has stopped" in await refusal(trials[2])
    assert "is already stopping (as frozen)" in await refusal(trials[2], "freeze")
    # A kill is not refused: the runner records it killed instead (see kill_instead).
    killed_instead: list[bytes] = []
    runner.kill_instead = lambda trial, reason: killed_instead.append(trial) or True
    answer = await api.kill(Request("api.kill", NODE, "", trials[2].key.hex()[:8]))
    assert answer == {"id": trials[2].key.hex(), "stopping": True}
    assert killed_instead == [trials[2].key]
    # Its node gone, a frozen trial (one frozen by hand is re-run by no one unless told) is
    # taken over here when the user thaws it.
    alive.discard(other)
    launched: list[tuple[bytes, bool]] = []

    async def launch(state: object, view: Any, *, thaw: bool = False) -> None:
        launched.append((view.key, thaw))

    runner.free_slots, runner.launch = (lambda: 1), launch
    # Not before this peer has listened long enough to tell a gone peer from a quiet one.
    assert "has not heard from since it started; try again" in await refusal(trials[1])
    listened[0] = True
    answer = await api.thaw(Request("api.thaw", NODE, "", trials[1].key.hex()[:8]))
    assert answer == {"id": trials[1].key.hex(), "from_step_0": True}
    assert launched == [(trials[1].key, True)]


@pytest.mark.asyncio
async def test_stop_refuses_a_finished_or_stopped_experiment() -> None:
    # `metaopt stop` on a finished 6/6 experiment wrote a stop record, and status called it
    # "stopped" for good.
    store = MemoryStore()
    spec = ExperimentSpec("e", {"x": "uniform(0, 1)"}, command=("t.py",), max_trials=1)
    exp = Record.create(EXPERIMENT, NODE, 1, 1000, spec.to_body(), [])
    trial = Record.create(TRIAL, NODE, 2, 1001, {"params": {"x": 0.5}, "node": NODE,
                          "counter": 1}, [exp.key])  # fmt: skip
    done = EventBody(trial.key, exp.key, "completed", NODE, None, {"objective": 0.1}).to_body()
    store.add([exp, trial, Record.create(EVENT, NODE, 3, 1002, done, [trial.key, exp.key])])
    written: list[object] = []
    replica = Replica(store)
    node = SimpleNamespace(replica=replica, stop_experiment=written.append)
    api = LocalApi(node)  # type: ignore[arg-type]
    with pytest.raises(MetaoptError, match=r"already finished \(1/1 trials\); nothing to stop"):
        await api.stop(Request("api.stop", NODE, "", "e"))
    assert written == []


def _experiment(name: str, seq: int, time: int, nonce: str = "") -> Record:
    spec = ExperimentSpec(name, {"x": "uniform(0, 1)"}, command=("t.py",), nonce=nonce)
    return Record.create(EXPERIMENT, NODE, seq, time, spec.to_body(), [])


def _two_sharing_a_prefix() -> tuple[str, Record, Record]:
    """Two experiments whose ids share their first 4 hex digits, and those digits."""
    seen: dict[str, Record] = {}
    for i in range(5000):
        rec = _experiment(f"e{i}", i + 1, 1000 + i)
        prefix = rec.key.hex()[:4]
        if prefix in seen:
            return prefix, seen[prefix], rec
        seen[prefix] = rec
    raise AssertionError("no two of 5,000 keys share 4 hex digits")


def test_an_id_prefix_of_two_experiments_says_so() -> None:
    # It answered "no experiment 'abcd' on this peer yet", as if nothing matched.
    prefix, first, rec = _two_sharing_a_prefix()
    store = MemoryStore()
    store.add([first, rec])
    replica = Replica(store)
    with pytest.raises(MetaoptError, match=rf"'{prefix}' matches 2 experiments .*more characters"):
        replica.find_experiment(prefix)
    assert replica.find_experiment(rec.key.hex()[:12]).key == rec.key  # type: ignore[union-attr]
    assert replica.find_experiment("nothing-like-it") is None


def _found(replica: Replica, text: str) -> bytes | str | None:
    try:
        state = replica.find_experiment(text)
    except MetaoptError as exc:
        return str(exc)
    return None if state is None else state.key


def test_a_replica_of_only_the_findable_experiments_finds_what_the_whole_one_finds() -> None:
    """An offline `status NAME` folds only what NAME could find (it folded the whole replica:
    3 s for a 200-trial experiment beside one of 50,000). Whichever way an experiment is
    named (a name with namesakes, an id prefix two share, a whole id, too short a one, one in
    capitals, padded, unknown), the answer or the refusal is the whole replica's."""
    prefix, first, second = _two_sharing_a_prefix()
    older, latest = (_experiment("e", 9000 + i, 5000 + i, nonce=str(i)) for i in range(2))
    other = _experiment("other", 9100, 6000)
    store = MemoryStore()
    store.add([first, second, older, latest, other])
    whole = Replica(store)
    texts = ["e", " e ", prefix, second.key.hex()[:12], latest.key.hex()[:8].upper(),
             older.key.hex(), other.key.hex()[:3], "nothing-like-it", ""]  # fmt: skip
    for text in texts:
        only = Replica(store, only=Replica.findable(text))
        assert _found(only, text) == _found(whole, text), text
        assert other.key not in only.experiments or text.startswith(other.key.hex()[:4])
    assert _found(whole, "e") == latest.key
    assert set(Replica(store, only=Replica.findable("e")).experiments) == {older.key, latest.key}


@pytest.mark.asyncio
async def test_stopping_a_name_points_at_an_earlier_one_of_that_name_still_open() -> None:
    # Only the latest submission of a name is stopped; the earlier one went on unnoticed.
    older, oldest, latest = (_experiment("e", i, t, nonce=str(i)) for i, t in
                             ((1, 2000), (2, 1000), (3, 3000)))  # fmt: skip
    stop_oldest = Record.create(CONTROL, NODE, 9, 1500, {"action": "stop"}, [oldest.key])
    store = MemoryStore()
    store.add([older, oldest, latest, stop_oldest])
    written: list[object] = []
    node = SimpleNamespace(replica=Replica(store), stop_experiment=written.append)
    reply = await LocalApi(node).stop(Request("api.stop", NODE, "", "e"))  # type: ignore[arg-type]
    assert reply == {
        "key": latest.key.hex(),
        "name": "e",
        "older_open": [older.key.hex()],
        "newer_open": [],
    }
    assert [s.key for s in written] == [latest.key]  # type: ignore[attr-defined]
    # Stopped by its id, the earlier one names the latest as later, not earlier.
    reply = await LocalApi(node).stop(Request("api.stop", NODE, "", older.key.hex()))  # type: ignore[arg-type]
    assert reply["older_open"] == [] and reply["newer_open"] == [latest.key.hex()]


@pytest.mark.asyncio
async def test_an_id_too_short_to_look_up_says_how_long_one_must_be() -> None:
    # `status 5b8` said only "no experiment '5b8'", where `logs 9b2` said 4 characters.
    store = MemoryStore()
    store.add([_experiment("e", 1, 1000)])
    api = LocalApi(SimpleNamespace(replica=Replica(store)))  # type: ignore[arg-type]
    for text, hinted in (("5b8", True), ("xyz", False), ("nothing-like-it", False)):
        with pytest.raises(MetaoptError) as caught:
            await api.experiment(Request("api.experiment", NODE, "", text))
        assert ("at least 4 characters" in str(caught.value)) is hinted


@pytest.mark.asyncio
async def test_experiments_are_listed_with_their_numbers_in_order() -> None:
    store = MemoryStore()
    store.add([_experiment(name, i + 1, 1000 + i) for i, name in enumerate(["exp10", "b", "exp2"])])
    api = LocalApi(SimpleNamespace(replica=Replica(store)))  # type: ignore[arg-type]
    listed = await api.experiments(Request("api.experiments", NODE, "", None))
    assert [e["name"] for e in listed] == ["b", "exp2", "exp10"]
    # Namesakes oldest first (they were in key order), and which one the name finds.
    namesakes = [_experiment("b", 10 + i, 5000 - 1000 * i) for i in range(3)]
    store.add(namesakes)
    listed = await api.experiments(Request("api.experiments", NODE, "", None))
    bs = [e for e in listed if e["name"] == "b"]
    assert [e["latest"] for e in bs] == [False, False, False, True]
    stamps = {r.key.hex(): r.time for r in namesakes}
    assert [stamps.get(e["id"], 1001) for e in bs] == [1001, 3000, 4000, 5000]


def test_a_trial_is_quiet_since_its_latest_record_arrived_whatever_its_stamp() -> None:
    # Stamps only capped at the arrival: a record stamped in the future (a writer's clock
    # running ahead, or a hostile one at 2**63 - 1) counted as news from its arrival, but one
    # from a runner whose clock ran 90 s behind read as 90 s of silence on arrival, and its
    # trial was lost after a liveness gap just over the peer timeout.
    wall, mono = [100.0], [5.0]
    store = MemoryStore()
    exp, trial = _experiment_and_trial()
    store.add([exp, trial])
    replica = Replica(store, lambda: wall[0], lambda: mono[0])
    state = replica.experiments[exp.key]
    view = state.trial(trial.key)
    assert view is not None and replica.quiet_ms(view) == 0  # held when it opened: from then
    mono[0] += 20.0
    assert replica.quiet_ms(view) == 20_000
    other = b"o" * 16
    for seq, stamp in enumerate((2**63 - 1, int(wall[0] * 1000) - 90_000), start=1):
        news = EventBody(trial.key, exp.key, "heartbeat", other).to_body()
        store.add([Record.create(EVENT, other, seq, stamp, news, [trial.key, exp.key])])
        view = state.trial(trial.key)
        assert view is not None and replica.quiet_ms(view) == 0
        mono[0] += 31.0
        wall[0] += 3600.0  # NTP stepped the wall clock: the quiet time does not move
        assert replica.quiet_ms(view) == 31_000


def test_a_name_means_the_same_experiment_on_every_peer_and_after_a_restart() -> None:
    # Stamps were capped at their arrival: a submission stamped by a clock 100 s ahead lost
    # its name to one made 15 s later, until a restart capped it at the opening, by then past
    # its stamp: `stop NAME` stopped another experiment after the restart, and on other peers.
    now = [100.0]
    store = MemoryStore()
    replica = Replica(store, lambda: now[0])

    def submit(seq: int, stamp_ms: int) -> Record:
        spec = ExperimentSpec("sweep", {"x": "uniform(0, 1)"}, nonce=str(seq))
        record = Record.create(EXPERIMENT, NODE, seq, stamp_ms, spec.to_body(), [])
        store.add([record])
        return record

    first = submit(1, 99_000)
    ahead = submit(2, 100_000 + 100_000)  # arrives at 100 s, stamped 100 s ahead
    now[0] = 115.0
    later = submit(3, 115_000)
    expected = [ahead.key, later.key, first.key]
    for clock in (115.0, 250.0, 100.0 - 3600):  # as it runs, restarted later, a clock behind
        opened = Replica(store, lambda clock=clock: clock)  # type: ignore[misc]
        assert [s.key for s in opened.named("sweep")] == expected
    assert [s.key for s in replica.named("sweep")] == expected


@pytest.mark.asyncio
async def test_kill_ends_a_trial_of_this_peer_for_good_and_says_where_another_is() -> None:
    # There was no way to end one trial: `metaopt stop` leaves running trials alone, and a
    # freeze is a pause (a hung script held its slot until someone froze it and never thawed).
    store = MemoryStore()
    spec = ExperimentSpec("e", {"x": "uniform(0, 1)"}, command=("t.py",))
    exp = Record.create(EXPERIMENT, NODE, 1, 1000, spec.to_body(), [])
    other, gone = b"o" * 16, b"g" * 16
    trials = [
        Record.create(TRIAL, NODE, 2 + i, 1001, {"params": {"x": i / 8}, "node": NODE,
                      "counter": i + 1}, [exp.key])
        for i in range(6)
    ]  # fmt: skip
    run, mine, elsewhere, done, orphan, stale = (t.key for t in trials)
    history = [(run, NODE, "started"), (mine, NODE, "started"), (mine, NODE, "frozen"),
               (elsewhere, other, "started"), (elsewhere, other, "frozen"),
               (done, NODE, "started"), (done, NODE, "completed"),
               (orphan, gone, "started"), (orphan, gone, "frozen"),
               (stale, NODE, "started")]  # fmt: skip
    seq = iter(range(10, 100))
    store.add([exp, *trials])
    store.add([
        Record.create(EVENT, node, next(seq), 1100, EventBody(t, exp.key, kind, node, 1,
                      {"objective": 0.5} if kind == "completed" else {}).to_body(),
                      [t, exp.key])
        for t, node, kind in history
    ])  # fmt: skip
    ended: list[tuple[bytes, str, str]] = []
    noted: list[tuple[bytes, str, str]] = []  # stop requests kept on disk (see the runner)

    async def end(trial: bytes, outcome: str, reason: str) -> bool:
        ended.append((trial, outcome, reason))
        return True

    def write_event(experiment: bytes, trial: bytes, kind: str, *, reason: str) -> None:
        body = EventBody(trial, experiment, kind, NODE, reason=reason).to_body()
        store.add([Record.create(EVENT, NODE, next(seq), 1200, body, [trial, experiment])])

    replica = Replica(store)
    node = SimpleNamespace(
        node_id=NODE,
        replica=replica,
        runner=SimpleNamespace(
            running_keys=lambda: {run},
            stopping_as=lambda key: None,
            end=end,
            kill_instead=lambda key, why: False,
            note_stop_request=lambda *asked: noted.append(asked),
        ),
        is_alive={NODE, other}.__contains__,
        listened=lambda: True,
        caught_up=lambda: True,
        write_event=write_event,
    )
    api = LocalApi(node)  # type: ignore[arg-type]

    async def kill(trial: bytes) -> str:
        answer = await api.kill(Request("api.kill", NODE, "", trial.hex()[:8]))
        assert answer["stopping"] is (trial == run)
        return str(answer["id"])

    async def refusal(trial: bytes) -> str:
        with pytest.raises(MetaoptError) as info:
            await kill(trial)
        assert "\n" not in str(info.value)
        return str(info.value)

    assert await kill(run) == run.hex() and ended == [(run, "killed", "killed by the user")]
    assert noted == ended  # kept until recorded: a crash in the grace does not forget it
    assert await kill(mine) == mine.hex()
    assert f"frozen on node {other.hex()[:8]}; run `metaopt kill` there" in await refusal(elsewhere)
    assert "is completed; only a running or frozen one is killed" in await refusal(done)
    # Recorded running here, but not running: this peer restarted since (it said "running on
    # node <this node>; run `metaopt kill` there").
    assert "ran on this peer before it restarted" in await refusal(stale)
    assert await kill(orphan) == orphan.hex()  # its peer is gone: nobody else would end it
    state = replica.experiments[exp.key]
    for key in (mine, orphan):
        view = state.trial(key)
        assert view is not None and (view.state, view.reason) == ("killed", "killed by the user")
    assert state.trial(elsewhere).state == "frozen"  # type: ignore[union-attr]
    # Stopped, a trial that was to run again never will: nothing to kill ("only a running or
    # frozen one is killed" left it in no column for good).
    body = {"params": {"x": 0.99}, "node": NODE, "counter": 9}
    waiting = Record.create(TRIAL, NODE, 200, 1001, body, [exp.key])
    interrupted = EventBody(waiting.key, exp.key, "interrupted", NODE).to_body()
    store.add([waiting, Record.create(EVENT, NODE, 201, 1100, interrupted, [waiting.key, exp.key]),
               Record.create(CONTROL, NODE, 202, 1300, {"action": "stop"}, [exp.key])])  # fmt: skip
    said = await refusal(waiting.key)
    assert "is interrupted and its experiment is stopped: no peer runs it again" in said


@pytest.mark.asyncio
async def test_an_experiment_whose_every_point_is_a_trial_says_so_on_every_peer() -> None:
    # `submit --wait` stops on it; it was this peer's own search failure, which a peer that
    # cannot run the program (and so never searches) never had: its --wait ran for ever.
    store = MemoryStore()
    spec = ExperimentSpec("few", {"k": "choices([1, 2])", "e": "fidelity(1, 9, base=3)"},
                          command=("t.py",))  # fmt: skip
    exp = Record.create(EXPERIMENT, NODE, 1, 1000, spec.to_body(), [])
    store.add([exp])
    timing = SimpleNamespace(lost_after=60)
    node = SimpleNamespace(replica=Replica(store), blocked_here=lambda key: None,
                           clock=lambda: 2.0, is_alive=lambda node: True,
                           config=SimpleNamespace(timing=timing),
                           runner=SimpleNamespace(stopping_as=lambda key: None))  # fmt: skip
    api = LocalApi(node)  # type: ignore[arg-type]

    async def exhausted() -> object:
        return (await api.experiment(Request("api.experiment", NODE, "", "few")))["exhausted"]

    for i, k in enumerate((1, 1, 2)):  # the same point twice (a re-run) counts once
        assert await exhausted() is None
        body = {"params": {"k": k, "e": 9}, "node": NODE, "counter": i + 1}
        store.add([Record.create(TRIAL, NODE, 2 + i, 1001 + i, body, [exp.key])])
    assert await exhausted() == "all 2 points of the space are tried"


@pytest.mark.parametrize(
    ("prior", "values"),
    [
        ("randint(0, 2)", (0, 1)),
        # Counted as endless, a precision= range stayed "active" for good, and `submit
        # --wait` never ended.
        ("uniform(1, 3, precision=1)", (1.0, 2.0, 3.0)),
    ],
)
@pytest.mark.asyncio
async def test_an_experiment_whose_every_point_is_a_trial_is_listed_as_exhausted(
    prior: str, values: tuple[float, ...]
) -> None:
    # A finite space fully tried with no budget showed "active" forever, though no peer would
    # ever start another trial of it.
    store = MemoryStore()
    spec = ExperimentSpec("grid", {"n": prior})
    exp = Record.create(EXPERIMENT, NODE, 1, 1000, spec.to_body(), [])
    store.add([exp])
    api = LocalApi(SimpleNamespace(replica=Replica(store)))  # type: ignore[arg-type]
    for i, n in enumerate(values):
        listed = await api.experiments(Request("api.experiments", NODE, "", None))
        assert listed[0]["exhausted"] is None
        body = {"params": {"n": n}, "node": NODE, "counter": i + 1}
        store.add([Record.create(TRIAL, NODE, 2 + i, 1001, body, [exp.key])])
    listed = await api.experiments(Request("api.experiments", NODE, "", None))
    assert listed[0]["exhausted"] == f"all {len(values)} points of the space are tried"


def test_an_experiments_json_carries_its_regex_and_trial_timeout() -> None:
    # `status NAME --json` left out settings it was submitted with.
    from metaopt._state import ExperimentState
    from metaopt.peer._api import experiment_json

    spec = ExperimentSpec(
        "e", {"x": "uniform(0, 1)"}, objective_regex=r"acc=([0-9.]+)",
        options={"trial_timeout": 7200},
    )  # fmt: skip
    shown = experiment_json(ExperimentState(b"k" * 32, spec))
    assert shown["objective_regex"] == r"acc=([0-9.]+)" and shown["trial_timeout"] == 7200
    plain = experiment_json(ExperimentState(b"k" * 32, ExperimentSpec("e", {})))
    assert plain["trial_timeout"] is None and plain["objective_regex"] is None


def _history(trials: int, events: int) -> tuple[Record, list[Record]]:
    """An experiment and its trials' records, each trial with a run of progress events."""
    exp, _ = _experiment_and_trial()
    out = []
    seq = 10
    for i in range(trials):
        seq += 1
        body = {"params": {"x": i / trials}, "node": NODE, "counter": i + 1}
        trial = Record.create(TRIAL, NODE, seq, 2000 + seq, body, [exp.key])
        out.append(trial)
        for step in range(events):
            seq += 1
            event = EventBody(trial.key, exp.key, "progress", NODE, step, {"objective": step})
            out.append(Record.create(EVENT, NODE, seq, 2000 + seq, event.to_body(),
                                     [trial.key, exp.key]))  # fmt: skip
    return exp, out


class _Redelivering(MemoryStore):
    """A MemoryStore that can tell its subscribers of records again (as a store may after a
    write it could not confirm)."""

    def redeliver(self, records: list[Record]) -> None:
        notify(self._subscribers, records)


@pytest.mark.asyncio
@pytest.mark.parametrize("heard_twice", [False, True], ids=["once", "heard-twice"])
async def test_an_experiment_arriving_after_its_history_is_folded_a_step_at_a_time(
    heard_twice: bool,
) -> None:
    # A catching-up peer that heard of an experiment after its million records folded them
    # all at once, its event loop held for 23 s (77 s for 3 million).
    # heard-twice: heard of again while its fold ran in a task, the experiment was folded a
    # second time from the start; records arriving meanwhile went to the second fold only,
    # and the first listed the experiment without them.
    exp, history = _history(trials=30, events=9)
    early, late = history[:200], history[200:]
    store = _Redelivering()
    replica = Replica(store, fold_step=40)
    told: list[tuple[list[bytes], bool]] = []  # each batch heard, and if exp was listed then
    replica.listen(lambda new: told.append(([r.key for r in new], exp.key in replica.experiments)))
    store.add(early)
    store.add([exp])
    assert exp.key not in replica.experiments  # not yet folded whole
    if heard_twice:
        store.redeliver([exp])
    ticks = 0
    while exp.key not in replica.experiments and ticks < 1000:
        if ticks == 1:
            store.add(late)  # arriving mid-fold, folded too
        await asyncio.sleep(0)
        ticks += 1
    assert ticks > 3  # the loop ran between the steps
    state = replica.experiments[exp.key]
    whole = ExperimentState.from_store(store, exp.key)
    assert whole is not None and state.trials() == whole.trials() and len(state) == 30
    # Listeners hear of the experiment once it is listed, and of nothing twice.
    heard = [key for keys, _ in told for key in keys]
    assert sorted(heard) == sorted(r.key for r in [exp, *history])
    assert [listed for keys, listed in told if exp.key in keys] == [True]
    replica.close()


@pytest.mark.asyncio
async def test_a_deferred_replica_loads_what_it_held_a_step_at_a_time() -> None:
    # A peer folded its whole replica before it listened (21 s for a million records).
    exp, history = _history(trials=30, events=9)
    store = MemoryStore()
    store.add([exp, *history[:200]])
    replica = Replica(store, fold_step=40, defer=True)
    assert replica.loading and not replica.experiments
    loading = asyncio.ensure_future(replica.load())
    ticks = 0
    while replica.loading and ticks < 1000:
        if ticks == 1:
            store.add(history[200:])  # arriving mid-load, folded too
        assert exp.key not in replica.experiments  # listed once folded whole
        await asyncio.sleep(0)
        ticks += 1
    await loading
    assert ticks > 3  # the loop ran between the steps
    whole = ExperimentState.from_store(store, exp.key)
    assert whole is not None and replica.experiments[exp.key].trials() == whole.trials()
    # Counted for `peer status`: the 200 held at opening, and never a record twice.
    assert 200 <= replica.folded_records <= len(store)
    replica.close()


@pytest.mark.asyncio
async def test_a_deferred_replica_folds_its_trials_views_a_step_at_a_time_as_it_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Loading folded the records a step at a time but no trial's view: the peer's first
    scheduling pass lists every trial (to find lost ones) and folded all their views at once,
    its loop held 2 s for 100,000 trials. They are folded as the replica loads, a step of
    them at a time; listing them then folds none."""
    from metaopt import _state

    exp, history = _history(trials=300, events=2)
    store = MemoryStore()
    store.add([exp, *history])
    replica = Replica(store, fold_step=40, defer=True)
    folds = [0]
    of = _state.TrialFold.of.__func__  # type: ignore[attr-defined]

    def counted(cls: Any, *args: Any, **kwargs: Any) -> Any:
        folds[0] += 1
        return of(cls, *args, **kwargs)

    monkeypatch.setattr(_state.TrialFold, "of", classmethod(counted))
    loading = asyncio.ensure_future(replica.load())
    most = seen = 0
    while not loading.done():
        await asyncio.sleep(0)
        most, seen = max(most, folds[0] - seen), folds[0]
    await loading
    assert folds[0] == 300 and most <= 40  # each once, at most a step between two turns
    assert len(replica.experiments[exp.key].trials()) == 300 and folds[0] == 300
    replica.close()


@pytest.mark.asyncio
async def test_a_deferred_replica_of_many_short_experiments_lets_the_loop_run_between_them() -> (
    None
):
    # 4,000 experiments of 240 records each (none a step long) were folded in one go.
    store = MemoryStore()
    for i in range(5):
        spec = ExperimentSpec(f"e{i}", {"x": "uniform(0, 1)"})
        store.add([Record.create(EXPERIMENT, NODE, 100 + i, 1000, spec.to_body(), [])])
    replica = Replica(store, fold_step=40, defer=True)
    loading = asyncio.ensure_future(replica.load())
    listed = []
    for _ in range(100):
        await asyncio.sleep(0)
        listed.append(len(replica.experiments))
        if not replica.loading:
            break
    await loading
    assert listed[-1] == 5 and len(set(listed)) >= 5  # one at a time, the loop running between
    replica.close()


@pytest.mark.asyncio
async def test_an_experiment_with_a_short_history_here_is_listed_at_once() -> None:
    # `metaopt submit` finds the experiment it has just written.
    exp, history = _history(trials=3, events=2)
    store = MemoryStore()
    replica = Replica(store, fold_step=40)
    store.add(history)
    store.add([exp])
    assert len(replica.experiments[exp.key]) == 3


@pytest.mark.asyncio
async def test_a_replica_closed_mid_fold_stops_folding(tmp_path: Path) -> None:
    exp, history = _history(trials=30, events=9)
    store = LevelDBStore(tmp_path / "store")
    replica = Replica(store, fold_step=40)
    store.add([*history, exp])
    await asyncio.sleep(0)
    replica.close()
    store.close()
    for _ in range(10):
        await asyncio.sleep(0)
    assert exp.key not in replica.experiments
    with LevelDBStore(tmp_path / "store") as again:  # folded whole when opened again
        assert len(Replica(again).experiments[exp.key]) == 30


def test_folds_are_moved_out_of_the_collectors_sight_as_they_grow() -> None:
    # Every full pass of the collector walked the folds of the whole history: a catch-up of 3
    # million records held the event loop up to 2.6 s at a time in those passes.
    exp, history = _history(trials=20, events=9)
    store = MemoryStore()
    replica = Replica(store, freeze_every=100)
    gc.unfreeze()
    try:
        store.add([exp, *history[:50]])
        assert gc.get_freeze_count() == 0
        store.add(history[50:])
        frozen = gc.get_freeze_count()
        assert frozen > 0
        Replica(store, freeze_every=0)  # (folds it all again: never freezes)
        assert gc.get_freeze_count() == frozen
        assert len(replica.experiments[exp.key]) == 20
        # Cyclic garbage already old is collected first, not frozen for good with the folds.
        garbage = _Cycle()
        garbage.me = garbage
        gone = weakref.ref(garbage)
        gc.collect()  # (now in the oldest generation)
        del garbage
        store.add(_history(trials=40, events=9)[1])  # (new records: a freeze comes)
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()


class _Cycle:
    me: object = None


@pytest.mark.asyncio
async def test_logs_of_a_trial_that_completed_here_without_a_log_do_not_say_it_wrote_nothing(
    tmp_path: Path,
) -> None:
    # A peer on an inode-full tmpfs ran a trial whose output.log the disk refused; the trial
    # ran on and completed, and `metaopt logs` there said "(no log: the trial ended before
    # it wrote any; no output was recorded)", without how it ended (a soak of 3 real peers).
    store = MemoryStore()
    exp = Record.create(
        EXPERIMENT, NODE, 1, 1000, ExperimentSpec("e", {"x": "uniform(0, 1)"}).to_body(), []
    )
    trial = Record.create(
        TRIAL, NODE, 2, 1001, {"params": {"x": 0.5}, "node": NODE, "counter": 1}, [exp.key]
    )
    bodies = [
        EventBody(trial.key, exp.key, "started", NODE),
        EventBody(trial.key, exp.key, "progress", NODE, step=1, metrics={"objective": 0.5}),
        EventBody(trial.key, exp.key, "completed", NODE, metrics={"objective": 0.22}, exit_code=0),
    ]
    events = [
        Record.create(EVENT, NODE, 3 + i, 1002 + i, body.to_body(), [trial.key, exp.key])
        for i, body in enumerate(bodies)
    ]
    store.add([exp, trial, *events])
    node = SimpleNamespace(
        node_id=NODE,
        replica=Replica(store),
        runner=SimpleNamespace(log_path=lambda key: tmp_path / "output.log"),  # none: refused
        peers=SimpleNamespace(get=lambda node_id: None),
    )
    out = await LocalApi(node).logs(Request("api.logs", NODE, "", trial.key.hex()[:8]))  # type: ignore[arg-type]
    assert "ended before it wrote any" not in out["text"], out["text"]
    assert "its output was not kept" in out["text"] and out.get("state") == "completed", out
