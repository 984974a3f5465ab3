"""A peer catching up a long history is not caught up until the history has come.

``Node.caught_up`` waits for a session of its own to complete, else for others' records to
stop arriving, but at most ten peer timeouts (300 s by default), for records that arrive
without end. A catch-up carried by the partner's session (the joiner's own sessions are
refused as busy meanwhile, or fail) delivers records for as long as the history takes to
cross: 73 s for 2,060,000 records on 2 cores. Past the cap the joiner judged and scheduled on
the part it held: on a real peer started empty with a 60 s cap and fed 20 experiments of
1,000 trials of 100 steps, every budget spent, 2 of 2 runs started trials of spent experiments
(1005/1000, 13 trials over budget in 6 of the 20; a scale review).

Timing-free: the joiner's clock moves one second per round trip of the partner's session.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from crdt import Initiator, MemoryStore, Record, SyncConfig
from metaopt._records import EVENT, TRIAL, EventBody, ExperimentSpec, experiment_record
from metaopt.peer._config import PeerConfig, Timing
from metaopt.peer._node import Node
from metaopt.peer._scheduler import plan_work
from metaopt.peer._wire import Request

FULL = b"\x01" * 16  # the partner, which holds the whole history
RUNNER = b"\x02" * 16  # the peer that ran its trials
BUDGET = 20


def _history() -> list[Record]:
    spec = ExperimentSpec(
        "spent", {"x": "uniform(0, 1)"}, command=("true",), max_trials=BUDGET, max_step=30
    )
    exp = experiment_record(spec, 1_000)
    out, seq = [exp], 0
    for i in range(BUDGET):
        seq += 1
        body = {"params": {"x": (i + 0.5) / BUDGET}, "node": RUNNER, "counter": i + 1}
        trial = Record.create(TRIAL, RUNNER, seq, 2_000 + 100 * i, body, [exp.key])
        out.append(trial)
        links = [trial.key, exp.key]
        events = [EventBody(trial.key, exp.key, "started", RUNNER)]
        events += [
            EventBody(trial.key, exp.key, "progress", RUNNER, s, {"objective": 1 / s})
            for s in range(1, 31)
        ]
        events.append(EventBody(trial.key, exp.key, "completed", RUNNER, None, {"objective": 0.1}))
        for event in events:
            seq += 1
            out.append(
                Record.create(EVENT, RUNNER, seq, 2_000 + 100 * i + seq, event.to_body(), links)
            )
    return out


@pytest.mark.integration  # (it opens sockets on 127.0.0.1)
@pytest.mark.asyncio
async def test_a_peer_is_not_caught_up_while_a_partners_session_still_brings_its_history(
    tmp_path: Path,
) -> None:
    now = [1000.0]
    config = PeerConfig(
        data_dir=tmp_path / "joiner", port=0, mdns=False, timing=Timing(peer_timeout=3)
    )
    joiner = Node(config, clock=lambda: now[0], monotonic=lambda: now[0])
    joiner.started_at = now[0]
    await joiner.load()  # (an empty replica)
    history = _history()
    full = MemoryStore()
    full.add(history)
    session = Initiator(full, SyncConfig(max_records=10))  # a long history: many round trips
    early: list[
        tuple[int, int]
    ] = []  # (records held, trials of the spent experiment) when it judged
    planned = []
    try:
        message: bytes | None = session.start()
        while message is not None:
            reply = await joiner._on_sync(Request("sync", FULL, "127.0.0.1:9", message))
            now[0] += 1.0
            if joiner.caught_up() and len(joiner.store) < len(history):
                state = next(iter(joiner.replica.experiments.values()))
                early.append((len(joiner.store), len(state)))
                planned.append(plan_work(
                    [state], joiner.node_id, 1, set(), [joiner.node_id], int(now[0] * 1000),
                    4000, lambda s: True, quiet_ms=lambda t: 0,
                ) != [])  # fmt: skip
            message = session.receive(reply)
        assert session.stats.converged and len(joiner.store) == len(history)
        assert not early, (
            f"took its history for whole at {early[0][0]} of {len(history)} records, holding"
            f" {early[0][1]} of the {BUDGET} trials of an experiment whose budget is spent;"
            f" the scheduler gave a slot a new trial of it at {sum(planned)} of the"
            f" {len(planned)} looks before the history was whole"
        )
    finally:
        await joiner.stop()


def _waiting(tmp_path: Path, now: list[float]) -> Node:
    """A node on the clock now, listening since now[0], that knows of a peer from its last
    life (not alone: with no session of its own it waits the peer timeout)."""
    from tests.metaopt.peer.test_node_pinned import _judging

    node = _judging(tmp_path, now)
    node.membership._recalled = ["127.0.0.1:9"]
    return node


@pytest.mark.asyncio
async def test_new_records_without_end_are_waited_for_ten_timeouts_history_to_its_end(
    tmp_path: Path,
) -> None:
    # Records stamped well before the peer listened (HISTORY_MARGIN) are history it catches
    # up on, a finite set; records stamped since (or within the clocks' skew) may come for
    # ever from a busy cluster, and hold it back ten timeouts at most.
    from metaopt.peer._catch_up import HISTORY_MARGIN

    now = [10_000.0]
    node = _waiting(tmp_path, now)
    timeout = node.config.timing.peer_timeout

    def arrive(age: float) -> None:
        """A record of another peer, stamped age seconds before this peer listened."""
        stamp = int((10_000.0 - age) * 1000)
        node.store.add([Record.create(EVENT, FULL, int(now[0] * 1000), stamp, {"n": now[0]})])

    try:
        now[0] += 10 * timeout
        arrive(HISTORY_MARGIN - 60)  # (as new: a clock behind by a minute)
        assert node.caught_up()
        arrive(HISTORY_MARGIN + 60)
        assert not node.caught_up()
        now[0] += timeout - 1  # (the history may still come: a slow link's gaps)
        arrive(0)
        assert not node.caught_up()
        now[0] += 1  # the history has come
        arrive(0)
        assert node.caught_up()
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_message_of_records_still_crossing_is_waited_for(tmp_path: Path) -> None:
    # At 3 Mbit/s a message of 4 MiB took tens of seconds to cross: a joiner that held no
    # record yet said it was caught up at the peer timeout, and ran trials of spent budgets.
    now = [10_000.0]
    node = _waiting(tmp_path, now)
    try:
        node.server.receiving = 1  # (a partner's request of records being read)
        now[0] += 2 * node.config.timing.peer_timeout
        assert not node.caught_up()
        node.server.receiving, node.client.receiving = 0, 1  # (its own session's answer)
        assert not node.caught_up()
        node.client.receiving = 0
        assert node.caught_up()
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_past_ten_timeouts_a_message_of_records_still_crossing_is_waited_for(
    tmp_path: Path,
) -> None:
    # Over 1 Mbit/s a message of 4 MiB took 34 s: past the ten timeouts a joiner holding a
    # fifth of the history took new records arriving for a busy cluster's, and ran trials of
    # spent budgets (20 trials, every one of 10 experiments over its budget).
    now = [10_000.0]
    node = _waiting(tmp_path, now)
    timing = node.config.timing
    try:
        now[0] += 10 * timing.peer_timeout
        node.store.add([Record.create(EVENT, FULL, 1, int(now[0] * 1000), {"n": 1})])
        node.client.receiving = 1  # (its own session's answer, or a partner's request)
        assert not node.caught_up()
        node.client.receiving = 0  # (new records keep arriving, and the ten timeouts are up)
        assert node.caught_up()
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_the_quiet_after_part_of_its_history_is_waited_for_a_peer_timeout(
    tmp_path: Path,
) -> None:
    # Over 1 Mbit/s the gaps between two messages of a catch-up passed 4 s (a session given
    # up, a partner busy with one of its own, the next round): a joiner went on at 74% of
    # its history and ran trials of spent budgets (2 of 5 runs, in namespaces).
    from metaopt.peer._catch_up import HISTORY_MARGIN

    now = [10_000.0]
    node = _waiting(tmp_path, now)
    timeout = node.config.timing.peer_timeout
    old = int((10_000.0 - HISTORY_MARGIN - 60) * 1000)  # (stamped well before it listened)
    try:
        now[0] += timeout
        node.store.add([Record.create(EVENT, FULL, 1, old, {"n": 1})])
        now[0] += 2 * node.config.timing.anti_entropy  # (4 s without a record)
        assert not node.caught_up()
        now[0] += timeout  # (none of its history for a peer timeout: cut off, or all here)
        assert node.caught_up()
    finally:
        await node.stop()
