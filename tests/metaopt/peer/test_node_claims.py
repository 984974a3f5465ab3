"""A peer claiming and starting trials: only a trial still free is run, a start the disk
refuses gives its slot back, and a peer that is stopping thaws nothing."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from crdt import Record, StoreWriteFailed
from metaopt._errors import MetaoptError
from metaopt._records import EVENT, TRIAL, EventBody, ExperimentSpec, experiment_record, parse_event
from metaopt._state import ExperimentState, TrialView
from metaopt.peer._api import LocalApi
from metaopt.peer._config import PeerConfig
from metaopt.peer._node import Node

pytestmark = pytest.mark.integration

GONE = b"g" * 16  # ran the trial, then died
FINDER = b"f" * 16  # noticed, and wrote it lost
RIVAL = b"r" * 16  # a live peer that claims it too


def _experiment(max_trials: int | None, nonce: str = "") -> Record:
    command = (sys.executable, "-c", "pass")
    spec = ExperimentSpec(
        "e",
        {"x": "uniform(0, 1)"},
        algorithm="random",
        command=command,
        max_trials=max_trials,
        nonce=nonce,
    )
    return experiment_record(spec)


def _event(exp: Record, trial: Record, body: EventBody, origin: bytes, seq: int) -> Record:
    return Record.create(
        EVENT, origin, seq, int(time.time() * 1000), body.to_body(), [trial.key, exp.key]
    )


def _lost_trial(exp: Record) -> tuple[Record, list[Record]]:
    """A trial GONE started and FINDER wrote lost: free for any peer to claim."""
    body = {"params": {"x": 0.25}, "node": GONE, "counter": 1}
    trial = Record.create(TRIAL, GONE, 1, int(time.time() * 1000) - 120_000, body, [exp.key])
    started = _event(exp, trial, EventBody(trial.key, exp.key, "started", GONE), GONE, 2)
    lost = EventBody(trial.key, exp.key, "lost", FINDER, reason="gone", after=started.key)
    return trial, [started, _event(exp, trial, lost, FINDER, 1)]


def _kinds(node: Node, trial: Record) -> list[tuple[str, bytes]]:
    events = [parse_event(r) for r in node.store.linked(trial.key) if r.kind == EVENT]
    return sorted((e.kind, e.node) for e in events if e is not None)


def _asking_for(trial: Record) -> SimpleNamespace:
    """A local API request naming the trial (what `metaopt thaw TRIAL` sends)."""
    return SimpleNamespace(body=trial.key.hex())


def _frozen_here(tmp_path: Path) -> tuple[Node, Record, Record]:
    """A caught-up node holding an experiment of budget 1 whose one trial it froze at step 2."""
    exp = _experiment(max_trials=1)
    node = _node(tmp_path)
    me = node.node_id
    body = {"params": {"x": 0.5}, "node": me, "counter": 1}
    trial = Record.create(TRIAL, me, 1, int(time.time() * 1000), body, [exp.key])
    ran = [
        EventBody(trial.key, exp.key, "started", me),
        EventBody(trial.key, exp.key, "frozen", me, 2),
    ]
    node.store.add([exp, trial, *(_event(exp, trial, e, me, i) for i, e in enumerate(ran, 2))])
    return node, exp, trial


def _node(tmp_path: Path) -> Node:
    node = Node(PeerConfig(data_dir=tmp_path / "peer", port=0, mdns=False, slots=1))
    node.replicator.sessions = 1  # caught up: free trials may be claimed
    return node


@pytest.mark.asyncio
@pytest.mark.parametrize("meanwhile", ["claimed elsewhere", "completed"])
async def test_a_free_trial_that_moved_on_during_the_pass_is_not_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, meanwhile: str
) -> None:
    # The pass chose the lost trial, then awaited (a search for another experiment, or the
    # stopper): a rival's claim or the trial's end arrived meanwhile, and the pass started it
    # all the same, a second full run.
    exp = _experiment(max_trials=1)
    trial, events = _lost_trial(exp)
    node = _node(tmp_path)
    worth_rerun = node.runner.early_stopping.worth_rerun

    async def news_arrives(state: ExperimentState, view: TrialView) -> TrialView | None:
        if meanwhile == "claimed elsewhere":
            news = EventBody(trial.key, exp.key, "started", RIVAL, supersedes=view.free_events)
        else:
            news = EventBody(trial.key, exp.key, "completed", GONE, 9, {"objective": 0.5})
        node.store.add([_event(exp, trial, news, RIVAL if meanwhile != "completed" else GONE, 3)])
        return await worth_rerun(state, view)

    monkeypatch.setattr(node.runner.early_stopping, "worth_rerun", news_arrives)
    try:
        node.store.add([exp, trial, *events])
        await node._schedule_once()
        assert ("started", node.node_id) not in _kinds(node, trial)
        assert node.runner.free_slots() == 1
        # Without the news the same pass claims it (the test's set-up is a real claim).
        monkeypatch.setattr(node.runner.early_stopping, "worth_rerun", worth_rerun)
        other = _experiment(max_trials=1, nonce="another")
        trial2, events2 = _lost_trial(other)
        node.store.add([other, trial2, *events2])
        await node._schedule_once()
        assert ("started", node.node_id) in _kinds(node, trial2)
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_start_the_disk_refuses_gives_its_slot_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The slot was taken before the started event was written and never given back when the
    # write raised: a one-slot peer ran nothing again until restarted, and the trial, pending
    # here and "running here", was never found lost.
    exp = _experiment(max_trials=2)
    node = _node(tmp_path)
    write_event = node.write_event
    refuse = [True]

    def full_disk(experiment: bytes, trial: bytes, kind: str, **kw: object) -> Record:
        if kind == "started" and refuse[0]:
            raise StoreWriteFailed("no space left on device", "no space left on device")
        return write_event(experiment, trial, kind, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(node, "write_event", full_disk)
    try:
        node.store.add([exp])
        with pytest.raises(StoreWriteFailed):
            await node._schedule_once()
        assert node.runner.free_slots() == 1 and not node.runner.running_keys()
        refuse[0] = False  # the disk has room again: the pending trial is found and run
        for _ in range(3):
            await node._schedule_once()
        state = node.replica.experiments[exp.key]
        assert any(t.state == "running" for t in state.trials())
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_peer_that_is_stopping_thaws_nothing_by_hand(tmp_path: Path) -> None:
    # Its stop had already interrupted the running trials: a trial thawed then ran on
    # unrecorded after the peer was gone, and was re-run from step 0 elsewhere.
    node, _exp, trial = _frozen_here(tmp_path)
    me = node.node_id
    api = LocalApi(node)

    try:
        node.request_stop()
        with pytest.raises(MetaoptError, match="stopping"):
            await api.thaw(_asking_for(trial))  # type: ignore[arg-type]
        assert not node.runner.running_keys()
        assert ("thawed", me) not in _kinds(node, trial)
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_free_trial_beyond_a_budget_the_others_used_up_is_killed_not_run(
    tmp_path: Path,
) -> None:
    # Recorded by a peer killed a moment later, it reached the others only after they had
    # spent the budget: taken for lost on the restart, it was run, and the experiment ended
    # 41/40.
    exp = _experiment(max_trials=1)
    trial, events = _lost_trial(exp)
    body = {"params": {"x": 0.75}, "node": RIVAL, "counter": 1}
    done = Record.create(TRIAL, RIVAL, 1, int(time.time() * 1000), body, [exp.key])
    completed = EventBody(done.key, exp.key, "completed", RIVAL, None, {"objective": 0.5})
    node = _node(tmp_path)
    try:
        node.store.add([exp, trial, *events, done, _event(exp, done, completed, RIVAL, 2)])
        await node._schedule_once()
        assert ("started", node.node_id) not in _kinds(node, trial)
        assert ("killed", node.node_id) in _kinds(node, trial)
        assert node.replica.experiments[exp.key].finished
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_thaw_by_hand_of_an_experiment_whose_code_is_not_here_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Taken over from a gone peer once the budget was spent, the experiment's code had not
    # been laid out here (nothing else would run): the launch failed the user's paused trial
    # with "cannot start: b'...'" (a KeyError), for good.
    node, exp, trial = _frozen_here(tmp_path)
    me = node.node_id
    monkeypatch.setattr(node.runner, "can_run", lambda state: False)

    try:
        with pytest.raises(MetaoptError, match="cannot run e \\(yet\\)"):
            await LocalApi(node).thaw(_asking_for(trial))  # type: ignore[arg-type]
        assert ("failed", me) not in _kinds(node, trial) and not node.runner.running_keys()
        await node.runner.launch(
            node.replica.experiments[exp.key],
            node.replica.experiments[exp.key].trial(trial.key),
            thaw=True,
        )  # type: ignore[arg-type]
        assert ("thawed", me) not in _kinds(node, trial)  # the runner refuses it as well
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_thaw_by_hand_waits_for_its_code_being_laid_out_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its bundle deleted (by `metaopt clean` under a running trial, then frozen), the thaw
    # was refused at once and worked when asked again seconds later (a review, 3 of 3).
    node, _exp, trial = _frozen_here(tmp_path)
    me = node.node_id
    laid_out, waited = [False], []
    monkeypatch.setattr(node.runner, "can_run", lambda state: laid_out[0])

    async def can_run_within(state: object, timeout: float) -> bool:
        waited.append(timeout)
        laid_out[0] = True
        return True

    monkeypatch.setattr(node.runner, "can_run_within", can_run_within)

    try:
        reply = await LocalApi(node).thaw(_asking_for(trial))  # type: ignore[arg-type]
        assert reply["id"] == trial.key.hex() and len(waited) == 1
        assert ("thawed", me) in _kinds(node, trial)
    finally:
        await node.stop()
