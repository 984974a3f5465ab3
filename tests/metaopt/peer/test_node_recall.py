"""A peer restarted on its data directory finds the peers it knew, without --join."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from metaopt.peer._config import PeerConfig
from metaopt.peer._node import Node

pytestmark = pytest.mark.integration


@pytest.mark.asyncio
async def test_a_restarted_peer_calls_the_peers_it_talked_to_and_says_if_none_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Restarted without --join (the printed join command has --port 0, so it came back on
    # another port), a peer heard of no one, ran alone on its own copy of the history and
    # took a finished experiment of --max-trials 40 to 57 trials.
    now = [1_796_422_393.0]

    def node(name: str, key: str | None = None, join: tuple[str, ...] = ()) -> Node:
        config = PeerConfig(data_dir=tmp_path / name, port=0, mdns=False, key_text=key, join=join)
        return Node(config, clock=lambda: now[0], monotonic=lambda: now[0])

    a = node("a")
    running: list[Node] = []
    try:
        await a.start()
        running.append(a)
        b = node("b", a.key.to_text(), (a.addr,))
        await b.start()
        running.append(b)
        await b._gossip()  # b calls its seed; a now knows b
        await a._gossip()  # and calls it back: b knows a by its node id
        await b._gossip()  # and keeps a's address
        assert b.is_alive(a.node_id) and (tmp_path / "b" / "peers").read_text() == f"{a.addr}\n"
        running.remove(b)
        await b.stop()

        restarted = node("b")  # no --join, and a new port
        await restarted.start()
        running.append(restarted)
        assert not restarted.caught_up()  # it knew peers: not alone, so not caught up yet
        await restarted._gossip()
        assert a.is_alive(restarted.node_id)  # it called a

        running.remove(a)
        await a.stop()
        running.remove(restarted)
        await restarted.stop()
        alone = node("b")
        caplog.set_level(logging.WARNING, logger="metaopt.peer")
        await alone.start()
        running.append(alone)
        await alone._gossip()
        assert not [r for r in caplog.records if "runs alone" in r.getMessage()]
        now[0] += alone.config.timing.peer_timeout
        for _ in range(2):
            await alone._gossip()
        [warning] = [r.getMessage() for r in caplog.records if "runs alone" in r.getMessage()]
        assert a.addr in warning and "keeps calling them" in warning and "--join" in warning
        assert (tmp_path / "b" / "peers").read_text() == f"{a.addr}\n"  # kept while alone
    finally:
        for peer in running:
            await peer.stop()
