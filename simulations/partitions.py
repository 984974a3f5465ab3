"""Random partitions and crashes while every node keeps writing, then a heal: does it converge?

``python -m simulations.partitions --nodes 20 --seed 1`` runs ``--chaos`` virtual seconds in
which, every few seconds, the network is split (halves, three groups, a ring, one node
isolated, one-way cuts) or healed and nodes crash and restart with their stores, and one node
comes back with an empty store and a new id (and one with its old id, reusing its sequence
numbers), over links that lose, duplicate and reorder
messages. Nodes write records a few at a time with one millisecond stamp, from clocks a few
seconds apart. Then the network heals, crashed nodes restart, writes stop, and the run measures
the virtual time and gossip rounds until every replica holds the same set, and checks that set
against the ground truth: records lost (must be 0) and invented (must be 0). Records whose only
copy was on the wiped disk are counted apart, as destroyed, since no protocol can save them.

``--tight`` shrinks every message limit (TIGHT_SYNC) so sessions run the paths a real cluster
reaches at scale: messages cut short and continued, the version vector's digest at the start
of a session, the backstop splitting ranges. ``--disk DIR`` keeps every store in LevelDB there,
and a restart opens it again from disk.

``--trace-digest`` prints only the digest of the whole run's trace (same seed → same digest).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from crdt import LevelDBStore, Store, SyncConfig
from crdt._reconcile import DEFAULT_CONFIG
from simulations._cluster import Cluster, ClusterConfig
from simulations._network import LinkConfig

__all__ = ["Result", "run"]

CHAOS_LINK = LinkConfig(latency=0.02, jitter=0.03, loss=0.05, duplicate=0.02, reorder=0.05)
# Every limit small: a few records or keys fill a message, ranges split after four items, and
# past two origins a session opens with the vector's digest.
TIGHT_SYNC = SyncConfig(
    max_message_bytes=2048,
    max_records=6,
    max_keys=64,
    max_ranges=16,
    initial_fanout=8,
    fanout=4,
    leaf_size=4,
    open_vector_origins=2,
)


@dataclass(frozen=True, slots=True)
class Result:
    nodes: int
    seed: int
    written: int
    lost: int
    invented: int
    destroyed: int
    converged: bool
    seconds_to_converge: float
    rounds_to_converge: int
    bytes_per_record: float
    sessions: int
    backstop_sessions: int
    events: list[str]
    trace: str


def _chaos_step(
    cluster: Cluster, events: list[str], down: dict[int, float], wiped: set[str]
) -> None:
    """One random fault or heal; each kind of wipe happens at most once per run."""
    rng = cluster.rng
    net = cluster.network
    n = len(cluster.nodes)
    now = cluster.clock.now
    kinds = ["halves", "groups", "ring", "isolate", "one-way", "heal", "crash", "crash"]
    kinds += sorted({"wipe", "wipe keeping id"} - wiped)
    choice = rng.choice(kinds)
    if choice == "halves":
        net.heal()
        net.halves()
    elif choice == "groups":
        order = list(range(n))
        rng.shuffle(order)
        net.heal()
        net.split([order[: n // 3], order[n // 3 : 2 * n // 3], order[2 * n // 3 :]])
    elif choice == "ring":
        net.heal()
        net.ring()
    elif choice == "isolate":
        net.isolate(rng.randrange(n))
    elif choice == "one-way":
        for _ in range(max(1, n // 4) if n > 1 else 0):
            a, b = rng.sample(range(n), 2)
            net.cut(a, b, one_way=True)
    elif choice == "heal":
        net.heal()
    elif choice == "crash":
        up = [i for i in range(n) if cluster.nodes[i].up]
        if len(up) > 1:
            victim = rng.choice(up)
            cluster.crash(victim)
            down[victim] = now + rng.uniform(3.0, 15.0)
            choice = f"crash {victim}"
    elif choice.startswith("wipe"):
        # Empty store and a new id; or the old id, reusing its sequence numbers from 1,
        # which only the backstop can untangle.
        wiped.add(choice)
        victim = rng.randrange(n)
        cluster.replace(victim, keep_id=choice == "wipe keeping id")
        down.pop(victim, None)
        choice = f"{choice} {victim}"
    events.append(f"{now:7.2f} {choice}")


def run(
    nodes: int = 20,
    seed: int = 1,
    chaos: float = 60.0,
    rate: float = 0.5,
    chaos_period: float = 4.0,
    max_after: float = 120.0,
    *,
    burst: int = 4,
    skew: float = 3.0,
    sync: SyncConfig = DEFAULT_CONFIG,
    disk: Path | None = None,
) -> Result:
    """Run the scenario; all times are virtual seconds. ``disk``: an empty (or new) folder
    (a run reopens the stores it finds there, and is not the run its seed names)."""
    if disk is not None and disk.exists() and not disk.is_dir():
        raise ValueError(f"--disk {disk} is a file; pass an empty or new folder")
    if disk is not None and disk.is_dir() and any(disk.iterdir()):
        raise ValueError(
            f"--disk {disk} is not empty: a run would reopen the stores there and replay"
            " another run; pass an empty or new folder"
        )
    config = ClusterConfig(nodes=nodes, link=CHAOS_LINK, sync=sync, burst=burst, skew=skew)
    cluster = Cluster(config, seed, None if disk is None else _on_disk(disk))
    cluster.start()
    cluster.schedule_writes(rate, until=chaos)
    clock = cluster.clock
    events: list[str] = []
    down: dict[int, float] = {}
    wiped: set[str] = set()
    t = 0.0
    while t < chaos:
        t = min(chaos, t + cluster.rng.uniform(0.5, 1.5) * chaos_period)
        clock.run_until(t)
        for index, until in sorted(down.items()):
            if until <= clock.now:
                cluster.restart(index)
                del down[index]
        if t < chaos:
            _chaos_step(cluster, events, down, wiped)
    cluster.network.heal()
    for index in sorted(down):
        cluster.restart(index)
    cluster.writing = False
    healed = clock.now
    events.append(f"{healed:7.2f} heal all, restart all, stop writing")
    clock.run_until(healed + max_after, stop=cluster.converged)
    converged = cluster.converged()
    elapsed = clock.now - healed
    cluster.network.note("final", [d.hex() for d in cluster.digests()])
    written = len(cluster.written)
    return Result(
        nodes=nodes,
        seed=seed,
        written=written,
        lost=cluster.lost(),
        invented=cluster.invented(),
        destroyed=len(cluster.destroyed),
        converged=converged,
        seconds_to_converge=elapsed,
        rounds_to_converge=math.ceil(elapsed / config.gossip_period),
        bytes_per_record=cluster.network.bytes_sent / max(1, written),
        sessions=cluster.totals.sessions,
        backstop_sessions=cluster.totals.backstop,
        events=events,
        trace=cluster.network.trace_digest(),
    )


def _on_disk(root: Path) -> Callable[[int, int], Store]:
    """Each node's store in LevelDB under root, one directory per node and incarnation."""
    return lambda index, incarnation: LevelDBStore(root / f"node{index}-{incarnation}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--chaos", type=float, default=60.0, help="virtual seconds of faults")
    parser.add_argument("--rate", type=float, default=0.5, help="records per node per second")
    parser.add_argument("--tight", action="store_true", help="every message limit small")
    parser.add_argument("--disk", type=Path, help="keep the stores in LevelDB under this directory")
    parser.add_argument("--events", action="store_true", help="also print the fault timeline")
    parser.add_argument("--trace-digest", action="store_true", help="print only the trace digest")
    args = parser.parse_args(argv)
    sync = TIGHT_SYNC if args.tight else SyncConfig()
    try:
        result = run(args.nodes, args.seed, args.chaos, args.rate, sync=sync, disk=args.disk)
    except ValueError as exc:
        parser.error(str(exc))
    if args.trace_digest:
        print(result.trace)
        return
    if args.events:
        print("\n".join(result.events))
        print()
    rows = [
        ("nodes", str(result.nodes)),
        ("seed", str(result.seed)),
        ("records added", str(result.written)),
        ("records lost", str(result.lost)),
        ("records invented", str(result.invented)),
        ("destroyed with the wiped disk", str(result.destroyed)),
        ("converged", "yes" if result.converged else "NO"),
        ("virtual seconds to converge after heal", f"{result.seconds_to_converge:.2f}"),
        ("gossip rounds to converge after heal", str(result.rounds_to_converge)),
        ("bytes sent per record", f"{result.bytes_per_record:,.0f}"),
        (
            "sessions (of which needed the backstop)",
            f"{result.sessions} ({result.backstop_sessions})",
        ),
        ("trace digest", result.trace),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    if not result.converged or result.lost or result.invented:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
