"""The virtual clock, network and cluster: faults behave as named, and runs are reproducible."""

from __future__ import annotations

import random

import pytest

from simulations._clock import VirtualClock
from simulations._cluster import Cluster, ClusterConfig
from simulations._network import LinkConfig, Network


def test_clock_runs_events_in_time_then_schedule_order() -> None:
    clock = VirtualClock()
    seen: list[str] = []
    clock.call_later(2.0, lambda: seen.append("late"))
    clock.call_later(1.0, lambda: seen.append("first"))
    clock.call_later(1.0, lambda: seen.append("second"))
    cancelled = clock.call_later(0.5, lambda: seen.append("cancelled"))
    clock.cancel(cancelled)
    clock.run_until(1.5)
    assert seen == ["first", "second"] and clock.now == 1.5
    clock.run_until(10.0, stop=lambda: "late" in seen)
    assert seen[-1] == "late" and clock.now == 2.0


def _network(link: LinkConfig, n: int = 4) -> tuple[VirtualClock, Network, list[tuple[int, int]]]:
    clock = VirtualClock()
    net = Network(clock, random.Random(1), n, link)
    return clock, net, []


def _all_pairs(clock: VirtualClock, net: Network) -> set[tuple[int, int]]:
    arrived: set[tuple[int, int]] = set()
    for a in range(net.n):
        for b in range(net.n):
            if a != b:
                net.send(a, b, 10, lambda a=a, b=b: arrived.add((a, b)))  # type: ignore[misc]
    clock.run_until(clock.now + 10)
    return arrived


def test_loss_duplication_and_reordering() -> None:
    clock, net, _ = _network(LinkConfig(loss=1.0))
    assert _all_pairs(clock, net) == set() and net.dropped == 12
    clock, net, _ = _network(LinkConfig(duplicate=1.0))
    count: list[int] = []
    net.send(0, 1, 5, lambda: count.append(1))
    clock.run_until(1.0)
    assert len(count) == 2 and net.duplicated == 1
    clock, net, _ = _network(LinkConfig(latency=0.01, jitter=0.0, reorder=0.5, reorder_delay=1.0))
    order: list[int] = []
    for i in range(40):
        net.send(0, 1, 5, lambda i=i: order.append(i))  # type: ignore[misc]
    clock.run_until(5.0)
    assert sorted(order) == list(range(40)) and order != sorted(order)


def test_partitions_and_heal() -> None:
    clock, net, _ = _network(LinkConfig(), n=6)
    everyone = {(a, b) for a in range(6) for b in range(6) if a != b}
    net.cut(0, 1, one_way=True)
    assert _all_pairs(clock, net) == everyone - {(0, 1)}
    net.heal()
    net.isolate(2)
    assert not any(2 in pair for pair in _all_pairs(clock, net))
    net.heal()
    net.halves()
    assert _all_pairs(clock, net) == {(a, b) for a, b in everyone if (a < 3) == (b < 3)}
    net.heal()
    net.ring()
    assert _all_pairs(clock, net) == {(a, b) for a, b in everyone if (b - a) % 6 in (1, 5)}
    net.heal()
    assert _all_pairs(clock, net) == everyone


def _cluster(seed: int = 1, nodes: int = 6, link: LinkConfig | None = None) -> Cluster:
    cluster = Cluster(ClusterConfig(nodes=nodes, link=link or LinkConfig()), seed)
    cluster.start()
    return cluster


def _settle(cluster: Cluster, seconds: float = 30.0) -> None:
    cluster.clock.run_until(cluster.clock.now + seconds, stop=cluster.converged)


def test_cluster_converges_through_lossy_links() -> None:
    cluster = _cluster(link=LinkConfig(loss=0.2, duplicate=0.1, reorder=0.2))
    for i in range(6):
        for _ in range(5):
            cluster.write(i)
    _settle(cluster)
    assert cluster.converged() and cluster.lost() == 0 and cluster.invented() == 0
    assert len(cluster.nodes[0].store) == 30


def test_crash_keeps_the_store_and_restart_catches_up() -> None:
    cluster = _cluster()
    cluster.write(0)
    _settle(cluster)
    cluster.crash(3)
    held = len(cluster.nodes[3].store)
    assert cluster.write(3) == []
    for i in (0, 1, 2):
        cluster.write(i)
    cluster.clock.run_until(cluster.clock.now + 5)
    assert len(cluster.nodes[3].store) == held
    cluster.restart(3)
    _settle(cluster)
    assert cluster.converged() and len(cluster.nodes[3].store) == 4


@pytest.mark.parametrize("keep_id", [False, True])
def test_a_wiped_node_comes_back_and_catches_up(keep_id: bool) -> None:
    cluster = _cluster()
    for i in range(6):
        cluster.write(i)
    _settle(cluster)
    old_id = cluster.nodes[2].node_id
    cluster.replace(2, keep_id=keep_id)
    assert len(cluster.nodes[2].store) == 0 and (cluster.nodes[2].node_id == old_id) == keep_id
    # Written at once, before catching up: with the old id this reuses (origin, seq 1).
    cluster.write(2)
    _settle(cluster)
    assert cluster.converged() and cluster.lost() == 0 and cluster.invented() == 0
    assert len(cluster.nodes[0].store) == 7
    if keep_id:
        assert cluster.totals.backstop > 0


def _traced_run(seed: int) -> tuple[str, list[bytes]]:
    cluster = _cluster(seed, link=LinkConfig(loss=0.1, duplicate=0.1, reorder=0.1))
    cluster.schedule_writes(1.0, until=10.0)
    cluster.clock.run_until(5.0)
    cluster.network.halves()
    cluster.crash(1)
    cluster.clock.run_until(10.0)
    cluster.network.heal()
    cluster.restart(1)
    _settle(cluster)
    return cluster.network.trace_digest(), cluster.digests()


def test_same_seed_same_trace() -> None:
    assert _traced_run(5) == _traced_run(5)
    assert _traced_run(5)[0] != _traced_run(6)[0]
