"""A peer judging other peers' trials through clock trouble: its own wall clock stepped by NTP,
and a runner whose clock runs behind."""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path

import pytest

from crdt import Record
from metaopt._records import EVENT, TRIAL, EventBody, ExperimentSpec, experiment_record, parse_event
from metaopt.peer._config import PeerConfig
from metaopt.peer._node import Node

pytestmark = pytest.mark.integration

OTHER = b"o" * 16  # runs the trial


class _Clocks:
    """A wall clock and a monotonic one that the test moves by hand."""

    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 1_000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


@pytest.fixture
def clocks() -> _Clocks:
    return _Clocks()


@pytest.fixture
def node(tmp_path: Path, clocks: _Clocks) -> Node:
    config = PeerConfig(data_dir=tmp_path / "peer", port=0, mdns=False, slots=1)
    node = Node(config, clock=lambda: clocks.wall, monotonic=lambda: clocks.mono)
    node.replicator.sessions = 1  # caught up
    node.started_at -= node.config.timing.peer_timeout  # and has listened long enough
    return node  # (each test stops it: stop() awaits)


class _Runner:
    """OTHER, running one trial of a one-trial experiment, its stamps ``behind`` s late."""

    def __init__(self, node: Node, clocks: _Clocks, behind: float = 0.0) -> None:
        spec = ExperimentSpec(
            "e", {"x": "uniform(0, 1)"}, command=(sys.executable, "-c", "pass"), max_trials=1
        )
        self.node, self.clocks, self.behind = node, clocks, behind
        self.exp = experiment_record(spec)
        self.seq = 1
        body = {"params": {"x": 0.5}, "node": OTHER, "counter": 1}
        self.trial = Record.create(TRIAL, OTHER, self.seq, self._stamp(), body, [self.exp.key])
        node.store.add([self.exp, self.trial])
        self.say("started")

    def _stamp(self) -> int:
        return int((self.clocks.wall - self.behind) * 1000)

    def say(self, kind: str) -> None:
        """A record of the trial arrives now, and with it word from its runner."""
        self.seq += 1
        body = EventBody(self.trial.key, self.exp.key, kind, OTHER).to_body()
        links = [self.trial.key, self.exp.key]
        self.node.store.add([Record.create(EVENT, OTHER, self.seq, self._stamp(), body, links)])
        self.node.peers.add(OTHER, "127.0.0.1:9", self.node.monotonic(), contacted=True)

    def events(self) -> list[tuple[str, bytes]]:
        records = sorted(
            (r for r in self.node.store.linked(self.trial.key) if r.kind == EVENT),
            key=lambda r: (r.origin, r.seq),
        )
        return [(e.kind, e.node) for e in map(parse_event, records) if e is not None]


@pytest.mark.asyncio
async def test_a_wall_clock_stepped_forward_does_not_make_a_live_peers_trial_lost(
    node: Node, clocks: _Clocks
) -> None:
    # Liveness and quiet time were on the wall clock: after NTP stepped it 120 s forward every
    # peer looked unheard and every trial quiet, and a live peer's running trial was written
    # lost and run again here (events: heartbeat, lost by this node, started here).
    runner = _Runner(node, clocks)
    try:
        runner.say("heartbeat")
        clocks.wall += 120.0
        await node._schedule_once()
        assert runner.events() == [("started", OTHER), ("heartbeat", OTHER)]
        status = node.status()
        assert status["uptime"] < 60 and status["peers"][0]["last_contact"] == 0.0
        # The same 120 s of real silence (the set-up is a real judgment): lost, run here.
        clocks.mono += 120.0
        await node._schedule_once()
        assert ("lost", node.node_id) in runner.events()
        assert ("started", node.node_id) in runner.events()
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_heartbeat_from_a_runner_whose_clock_is_behind_is_news_when_it_arrives(
    node: Node, clocks: _Clocks
) -> None:
    # Its stamp, capped at the arrival, read as 90 s of silence the moment it arrived: a
    # liveness gap just over the peer timeout took its trial for lost (a peer with a right
    # clock needs lost_after of real silence).
    timing = node.config.timing
    runner = _Runner(node, clocks, behind=90.0)
    try:
        runner.say("heartbeat")
        clocks.advance(timing.peer_timeout + 1)
        assert not node.is_alive(OTHER)
        await node._schedule_once()
        assert ("lost", node.node_id) not in runner.events()
        clocks.advance(timing.lost_after - timing.peer_timeout)  # lost_after of silence
        await node._schedule_once()
        assert ("lost", node.node_id) in runner.events()
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_periodic_task_that_keeps_failing_logs_its_traceback_once_a_minute(
    node: Node, clocks: _Clocks, caplog: pytest.LogCaptureFixture
) -> None:
    # A fault met at every round logged a traceback twice a second, for good.
    rounds = 0

    async def broken() -> None:
        nonlocal rounds
        rounds += 1
        clocks.advance(1.0)
        if rounds == 130:
            node.request_stop()
        raise KeyError("a bug")

    try:
        with caplog.at_level("ERROR", logger="metaopt.peer"):
            await node._every(0.0, broken)
    finally:
        await node.stop()
    said = [r.getMessage() for r in caplog.records if "periodic task broken" in r.getMessage()]
    assert said == [
        "periodic task broken failed",
        "periodic task broken failed (59 more times since it was last logged)",
        "periodic task broken failed (59 more times since it was last logged)",
    ]
    assert all(r.exc_info for r in caplog.records if "periodic task broken" in r.getMessage())


@pytest.mark.asyncio
async def test_a_pass_a_free_slot_started_that_fails_is_logged_as_the_periodic_ones_are(
    node: Node, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """kick() started a scheduling pass as a task of its own, whose failure was a "Task
    exception was never retrieved" traceback at every kick, not once a minute beside the
    periodic pass's, and a disk refusing writes there went unnoticed."""

    async def broken() -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(node, "_schedule_once", broken)
    try:
        with caplog.at_level("ERROR"):
            for _ in range(3):
                node.kick()
                await asyncio.sleep(0.01)
            gc.collect()  # (a task's exception unretrieved is logged when it is collected)
    finally:
        await node.stop()
    said = [r.getMessage() for r in caplog.records]
    assert said == ["periodic task _schedule failed"], said


@pytest.mark.asyncio
async def test_after_its_loop_was_held_a_peer_listens_again_before_taking_trials_for_lost(
    node: Node, clocks: _Clocks, caplog: pytest.LogCaptureFixture
) -> None:
    # A 77 s fold of a large history (or a SIGSTOP) held the loop: nothing was heard meanwhile,
    # and a live peer's running trial, quiet that long here, was written lost and run again.
    timing = node.config.timing
    runner = _Runner(node, clocks)
    try:
        node._loop_held(timing.peer_timeout / 4)  # a short hold changes nothing
        clocks.advance(timing.lost_after + 17)  # the loop held this long
        with caplog.at_level("WARNING", logger="metaopt.peer"):
            node._loop_held(timing.lost_after + 17)
        assert "this peer did not run for 77 s" in caplog.text
        await node._schedule_once()
        assert ("lost", node.node_id) not in runner.events()
        runner.say("heartbeat")  # heard from again: it was alive all along
        await node._schedule_once()
        assert ("lost", node.node_id) not in runner.events()
        # Real silence after that, as long as ever, still takes it for lost.
        node.replicator.sessions += 1  # (a session converged since)
        clocks.advance(timing.lost_after + 1)
        await node._schedule_once()
        assert ("lost", node.node_id) in runner.events()
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_the_stall_watcher_measures_how_long_the_loop_was_held(
    node: Node, clocks: _Clocks
) -> None:
    held: list[float] = []
    # The monotonic clock at each look (and at each tick's end): the loop runs a second,
    # is held 41, runs a second.
    looks = iter([0.0, 1.0, 1.0, 42.0, 42.0, 43.0, 43.0])
    node.monotonic = lambda: next(looks)  # type: ignore[method-assign]

    def note(seconds: float) -> None:
        held.append(seconds)
        if len(held) == 3:
            node.request_stop()

    node._loop_held = note  # type: ignore[method-assign]
    try:
        await node._watch_for_stalls(tick=1e-6)  # (real sleeps of a microsecond)
    finally:
        node.monotonic = lambda: clocks.mono  # type: ignore[method-assign]
        await node.stop()
    # What the clock moved between two ticks, less the tick: 41 s once the loop was held.
    assert held == pytest.approx([1.0, 41.0, 1.0], abs=1e-5)


@pytest.mark.asyncio
async def test_a_hold_the_watcher_has_not_seen_yet_is_noticed_by_the_scheduling_pass(
    node: Node, clocks: _Clocks
) -> None:
    # Held just before a pass's judgement (a launch copying code, SIGSTOP there), the pass ran
    # find_lost before the watcher's next tick could say the peer had heard nobody.
    runner = _Runner(node, clocks)
    node._watching = True  # as a started peer's watcher, which last looked now
    node._last_tick = clocks.mono
    try:
        clocks.advance(node.config.timing.lost_after + 17)
        await node._schedule_once()
        assert ("lost", node.node_id) not in runner.events()
        node._check_stall()  # measured once: the watcher does not report it again
        assert node._last_tick == pytest.approx(clocks.mono - 1.0)
    finally:
        await node.stop()
