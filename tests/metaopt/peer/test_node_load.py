"""A peer listens as soon as it starts, and folds the history it holds afterwards."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crdt import MemoryStore, Record, StoreError
from metaopt._errors import MetaoptError
from metaopt._records import TRIAL
from metaopt._state import ExperimentState
from metaopt.peer._config import PeerConfig, Timing
from metaopt.peer._local import LocalPeer
from metaopt.peer._node import Node
from metaopt.peer._replica import Replica
from metaopt.peer._wire import Request
from tests.metaopt.peer.test_node_schedule import _experiment, _lone_node, _others_trial

pytestmark = pytest.mark.integration


async def _call(node: Node, op: str, body: object = None) -> object:
    return await node.api.handlers()[op](Request(op, node.node_id, "", body))


async def _restarted_holding(
    tmp_path: Path, records: list[Record], timing: Timing | None = None
) -> Node:
    """A node, not started, over a data directory whose replica holds records."""
    first = _lone_node(tmp_path)
    first.store.add(records)
    await first.stop()
    if timing is None:
        return _lone_node(tmp_path)
    config = PeerConfig(data_dir=tmp_path / "peer", port=0, mdns=False, slots=1, timing=timing)
    return Node(config)


@pytest.mark.asyncio
async def test_a_restarted_peer_listens_before_it_has_loaded_its_history(tmp_path: Path) -> None:
    # A peer folded its whole replica before it listened: 21 s for a million records, while
    # `peer start --detach` gave up after 30 s, `peer status` said no peer ran and the other
    # peers counted it gone.
    exp = _experiment("held", {"x": "uniform(0, 1)"}, max_trials=100)
    trials = [_others_trial(exp, {"x": i / 10}, i + 1) for i in range(10)]
    node = await _restarted_holding(tmp_path, [exp, *trials])
    try:
        await node.start()
        assert (tmp_path / "peer" / "peer.address").exists()  # it listens
        assert node.replica.loading and exp.key not in node.replica.experiments
        status = await _call(node, "api.status")
        assert isinstance(status, dict) and tuple(status["loading"]) == (0, 11)
        assert not node.caught_up()  # nothing is judged or claimed on part of the history
        # Calls that would answer from part of the history say what is going on.
        for op, body in [("api.experiments", None), ("api.experiment", "held")]:
            with pytest.raises(
                MetaoptError,
                match=r"^loading: the peer is still loading its history \(0 of about 11 records\)$",
            ):
                await _call(node, op, body)

        await node.load()  # (waits for the fold start() began)
        assert len(node.replica.experiments[exp.key]) == 10
        assert node.loading_progress() is None
        listed = await _call(node, "api.experiments")
        assert isinstance(listed, list) and [e["name"] for e in listed] == ["held"]
        # Its turns count from the latest trial held, as when the fold came before listening.
        stamps = [min(t.time, node._opened_ms) for t in trials]
        assert node._latest_stamp[exp.key] == max(stamps)
    finally:
        await node.stop()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("error", "said", "traceback"),
    [
        (OSError("Input/output error"), r"cannot load the replica in .*: Input/output error", True),
        # The store's own error says what is wrong and what to do: as it is, in one line.
        (
            StoreError("cannot read the store at R: bad block; restore"),
            r"cannot read .*restore",
            False,
        ),
    ],
)
async def test_a_peer_that_cannot_read_its_replica_stops_rather_than_load_for_good(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    said: str,
    traceback: bool,
) -> None:
    node = await _restarted_holding(tmp_path, [_experiment("held", {"x": "uniform(0, 1)"})])

    def unreadable(key: bytes) -> object:
        raise error

    monkeypatch.setattr(node.store, "linked", unreadable)
    try:
        await node.start()
        await asyncio.wait_for(node.run_until_stopped(), timeout=10)
        assert node.stopping  # and says why (`peer start` exits with it, not 0)
        assert node.failed is not None and re.fullmatch(said, node.failed)
        logged = [r for r in caplog.records if "the peer stops" in r.getMessage()]
        assert len(logged) == 1 and (logged[0].exc_info is not None) == traceback
    finally:
        await node.stop()


def _hold_back_load(node: Node, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Hold the node's load until the returned event is set."""
    go_on = asyncio.Event()
    load = node.replica.load

    async def held_back() -> None:
        await go_on.wait()
        await load()

    monkeypatch.setattr(node.replica, "load", held_back)
    return go_on


async def _command_waiting(node: Node, capsys: pytest.CaptureFixture[str]) -> asyncio.Future[Any]:
    """`metaopt status`'s call to the node, once it has said that it waits for the load."""
    call = asyncio.ensure_future(LocalPeer(node.dirs.root).acall("api.experiments"))
    for _ in range(200):  # (bounded: 10 s)
        if "waiting for it" in capsys.readouterr().err:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the command did not say it waits")
    assert not call.done()
    return call


@pytest.mark.asyncio
async def test_a_command_waits_for_its_peer_to_load_and_says_so_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A script's `peer start --detach` then `metaopt submit` would fail on a restarted peer
    # with a long history: the peer listens before it has loaded it.
    node = await _restarted_holding(tmp_path, [_experiment("held", {"x": "uniform(0, 1)"})])
    go_on = _hold_back_load(node, monkeypatch)
    try:
        await node.start()
        call = await _command_waiting(node, capsys)
        go_on.set()
        listed = await asyncio.wait_for(call, timeout=10)
        assert [e["name"] for e in listed] == ["held"]
        assert "waiting" not in capsys.readouterr().err  # (said once)
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_command_waiting_on_a_peer_that_stops_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # It said "its peer.address is left from one that stopped or died": a stop removes it,
    # and a peer that could not load its replica says why in its log.
    node = await _restarted_holding(tmp_path, [_experiment("held", {"x": "uniform(0, 1)"})])
    _hold_back_load(node, monkeypatch)
    try:
        await node.start()
        call = await _command_waiting(node, capsys)
    finally:
        await node.stop()
    with pytest.raises(MetaoptError, match="stopped while this command waited for it to load"):
        await asyncio.wait_for(call, timeout=10)


@pytest.mark.asyncio
async def test_a_loading_peer_starts_no_trial_until_its_whole_replica_is_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With one experiment loaded and another not, a scheduling pass would start trials from
    # part of the history (one without a budget is never refused by the turns).
    first, second = (_experiment(n, {"x": "uniform(0, 1)"}) for n in ("first", "second"))
    timing = Timing(anti_entropy=0.1, schedule=0.05)
    node = await _restarted_holding(tmp_path, [first, second], timing)
    go_on = asyncio.Event()
    steps = node.replica._fold_steps

    def held_back(state: ExperimentState) -> Iterator[None]:
        while state.key == second.key and not go_on.is_set():
            yield None  # (load() lets the loop run at each)
        yield from steps(state)

    monkeypatch.setattr(node.replica, "_fold_steps", held_back)

    def own_trials() -> int:
        return sum(
            r.kind == TRIAL and r.origin == node.node_id
            for key in (first.key, second.key)
            for r in node.store.linked(key)
        )

    try:
        await node.start()
        for _ in range(100):  # (bounded: 5 s)
            if first.key in node.replica.experiments:
                break
            await asyncio.sleep(0.05)
        assert first.key in node.replica.experiments and node.replica.loading
        node.kick()
        await asyncio.sleep(1.0)  # ten anti-entropy periods: a lone peer would be caught up
        assert not node.caught_up() and own_trials() == 0
        go_on.set()
        for _ in range(600):  # (bounded: 30 s; the search stack is imported in a thread)
            if own_trials():
                break
            await asyncio.sleep(0.05)
        assert own_trials() > 0
    finally:
        await node.stop()


def test_a_loads_progress_never_counts_a_record_twice() -> None:
    # Records arriving for a held experiment were counted on arrival and again when the load
    # read them: "1,400,000 of about 1,100,000 records folded".
    a, b = (_experiment(n, {"x": "uniform(0, 1)"}) for n in ("a", "b"))
    store = MemoryStore()
    store.add([a, b, *(_others_trial(a, {"x": i / 100}, i + 1) for i in range(100))])
    replica = Replica(store, fold_step=10, defer=True)

    async def load_while_records_arrive() -> None:
        loading = asyncio.ensure_future(replica.load())
        await asyncio.sleep(0)
        store.add([_others_trial(b, {"x": i / 100}, 200 + i) for i in range(100)])
        await loading

    asyncio.run(load_while_records_arrive())
    assert len(replica.experiments[b.key]) == 100
    assert replica.folded_records <= len(store)
