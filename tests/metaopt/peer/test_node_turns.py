"""Peers taking turns at new points: several real Nodes in one process on a virtual clock.

Each node is a real ``Node`` (LevelDB replica, suggester, settle turns), not started: its
own records reach the others' replicas a millisecond later, as an eager push does on a
healthy cluster, and ``asyncio.sleep`` and the clock are virtual, so a run is the same run
every time. The search is replaced by a deterministic one (the first point of a finite space
the history lacks), as a GP on the same history is: two peers recording from one history
record the same point, so any such pair is a duplicate.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import heapq
import itertools
import types
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from crdt import Record
from metaopt._errors import SearchError
from metaopt._records import ExperimentSpec, experiment_record
from metaopt._suggest import Draw, Suggester, params_key
from metaopt.peer import _node
from metaopt.peer._config import PeerConfig
from metaopt.peer._node import Node

pytestmark = pytest.mark.integration

_real_sleep = asyncio.sleep
_START = 1_796_422_393.0
_PUSH = 0.001  # one eager push on loopback, in seconds
_peer: contextvars.ContextVar[int] = contextvars.ContextVar("peer")  # whose task sleeps
_POINTS = [{"depth": d, "lr": lr} for d in (1, 2) for lr in ("0.01", "0.02", "0.03")]


class VirtualTime:
    """A clock and a sleep that advance only when every task waits on them; a peer's loop
    may be busy until a time (``busy``): what it waits for and what reaches it waits till then."""

    def __init__(self) -> None:
        self.now = _START
        self.busy: dict[int, float] = {}
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    def call_later(self, delay: float, fn: Callable[[], None], peer: int | None = None) -> None:
        when = self.now + max(delay, 0.0)
        if peer is not None:
            when = max(when, self.busy.get(peer, when))
        heapq.heappush(self._timers, (when, next(self._order), fn))

    async def sleep(self, delay: float) -> None:
        done = asyncio.get_running_loop().create_future()
        self.call_later(delay, lambda: done.done() or done.set_result(None), _peer.get(None))
        await done

    async def run(self, coros: list[Coroutine[Any, Any, None]], limit: float = 60.0) -> None:
        tasks = [asyncio.ensure_future(c) for c in coros]
        while True:
            for _ in range(20):  # let every task run until it waits on the virtual clock
                await _real_sleep(0)
            if all(t.done() for t in tasks):
                break
            assert self._timers, "every task waits, on nothing the clock moves"
            when, _, fn = heapq.heappop(self._timers)
            assert when - _START < limit, "the peers never finished"
            self.now = max(self.now, when)
            fn()
        for task in tasks:
            task.result()
        while self._timers:  # the last pushes land
            when, _, fn = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            fn()


async def _inline(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)  # the search in the loop's thread: nothing beside the virtual clock


def _first_new_point(self: Suggester, draw: Draw) -> tuple[dict[str, Any], int]:
    for params in _POINTS:
        if params_key(params) not in draw.known:
            return dict(params), draw.counter
    raise SearchError("every point drawn is already a trial")


def _cluster(
    tmp_path: Path, ids: list[bytes], vt: VirtualTime, monkeypatch: pytest.MonkeyPatch
) -> list[Node]:
    """Nodes that know each other, each pushing its own records to the others."""
    nodes = []
    for i, node_id in enumerate(ids):
        data = tmp_path / f"peer{i}"
        data.mkdir()
        (data / "node_id").write_text(node_id.hex())
        config = PeerConfig(data_dir=data, port=0, mdns=False, slots=2)
        nodes.append(Node(config, clock=vt.clock, monotonic=vt.clock))
    for node in nodes:
        monkeypatch.setattr(node.replicator, "push", lambda records: None)  # no sockets
        for other in nodes:
            if other is not node:
                node.peers.add(
                    other.node_id,
                    f"127.0.0.1:{ids.index(other.node_id) + 9}",
                    vt.now,
                    contacted=True,
                )

        def forward(records: list[Record], node: Node = node) -> None:
            own = [r for r in records if r.origin == node.node_id]
            for other in nodes:
                if other is not node and own:
                    deliver = functools.partial(other.store.add, own)
                    vt.call_later(_PUSH, deliver, nodes.index(other))

        node.store.subscribe(forward)
    return nodes


# When each of the 3 peers starts asking, after the submission reached the first; whether
# the last one restarted a moment ago (the others heard its leave, not yet its return); and
# how long the first one's loop is busy (its first search imports scipy): it takes nothing in
# meanwhile, the other peers' first trials included.
_SCENARIOS = {
    "together": ([0.0, _PUSH, _PUSH], False, 0.0),
    "staggered": ([0.0, 0.017, 0.036], False, 0.0),  # slower searches, or slots freed later
    "restarted": ([0.0, _PUSH, _PUSH], True, 0.0),
    "busy": ([0.051, _PUSH, _PUSH], False, 0.051),  # a turn and a push: its turns were late
}


async def _run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ids: list[bytes],
    scenario: str,
    max_trials: int | None,
) -> list[tuple[bytes, dict[str, Any]]]:
    """Every node of 2 slots asks for 2 new points of a 6-point experiment (see _SCENARIOS),
    again on its next scheduling pass when it gave up; the trials recorded, by node."""
    vt = VirtualTime()
    fake = types.ModuleType("asyncio")
    fake.__dict__.update(vars(asyncio))
    fake.sleep = vt.sleep  # type: ignore[attr-defined]
    fake.to_thread = _inline  # type: ignore[attr-defined]
    monkeypatch.setattr(_node, "asyncio", fake)
    monkeypatch.setattr(Suggester, "compute", _first_new_point)
    space = {"lr": "choices(['0.01','0.02','0.03'])", "depth": "randint(1, 3)"}
    command = ("true",)
    exp = experiment_record(
        ExperimentSpec("small6", space, algorithm="random", command=command, max_trials=max_trials)
    )
    nodes = _cluster(tmp_path, ids, vt, monkeypatch)
    starts, restarted, busy = _SCENARIOS[scenario]
    vt.busy[0] = _START + busy
    if restarted:
        for node in nodes[:-1]:
            node.peers.leave(nodes[-1].node_id)
    try:

        async def peer(node: Node, delay: float) -> None:
            _peer.set(nodes.index(node))
            await vt.sleep(min(delay, _PUSH))
            node.store.add([exp])
            await vt.sleep(delay - min(delay, _PUSH))
            state = node.replica.experiments[exp.key]
            for _slot in range(2):
                for _pass in range(10):  # a scheduling pass every half second, as the peer
                    try:
                        if await node.new_trial(state) is not None or state.budget_spent:
                            break
                    except SearchError:
                        return
                    await vt.sleep(node.config.timing.schedule)

        await vt.run([peer(node, start) for node, start in zip(nodes, starts, strict=True)])
        states = [n.replica.experiments[exp.key] for n in nodes]
        assert len({len(s) for s in states}) == 1, "the replicas agree"
        return [(t.node, dict(t.params)) for t in states[0].trials()]
    finally:
        monkeypatch.setattr(_node, "asyncio", asyncio)
        for node in nodes:
            await node.stop()


_CLUSTERS = [[bytes([seed * 3 + i + 1]) * 16 for i in range(3)] for seed in range(6)]
_CASES = pytest.mark.parametrize(
    ("ids", "scenario"),
    [(ids, scenario) for scenario in _SCENARIOS for ids in _CLUSTERS],
    ids=[f"{scenario}-ids{i}" for scenario in _SCENARIOS for i in range(len(_CLUSTERS))],
)


@pytest.mark.asyncio
@_CASES
async def test_three_peers_of_two_slots_never_record_one_point_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ids: list[bytes], scenario: str
) -> None:
    # 3 loopback peers of 2 slots ran {'depth': 2, 'lr': '0.02'} twice, 3 ms apart, 108 ms
    # (two settle turns) after a submission: each point of the space must be tried once.
    trials = await _run(tmp_path, monkeypatch, ids, scenario, None)
    points = [params_key(p) for _, p in trials]
    assert len(points) == len(set(points)) == 6


@pytest.mark.asyncio
@_CASES
async def test_three_peers_of_two_slots_keep_to_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ids: list[bytes], scenario: str
) -> None:
    # --max-trials 4 gave 5 trials on an idle, healthy loopback cluster.
    trials = await _run(tmp_path, monkeypatch, ids, scenario, 4)
    points = [params_key(p) for _, p in trials]
    assert len(points) == len(set(points)) == 4
