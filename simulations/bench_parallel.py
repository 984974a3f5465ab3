"""k asynchronous peers in virtual time: how much sooner they reach a target, and duplicates.

Each peer is its own metaopt.Study (its own node id and replica) running one evaluation at a
time; evaluation durations are drawn at random; every ``--sync`` virtual seconds each peer
reconciles with one random other peer through the crdt protocol (anti-entropy). With
``--push L`` every record a peer writes (a new trial, a result) also reaches every other peer L
virtual seconds later, as the real peer pushes each new record to every live peer at once
(peer/_replication.py); ``--push off`` leaves anti-entropy alone. Both modes print by default.
Time to target is the virtual time of the first completed evaluation whose regret is below the
target.

    python -m simulations.bench_parallel [--seeds 5] [--problems branin,hartmann6]
        [--push 0.02,off] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import math
import statistics
import time
from dataclasses import dataclass

import numpy as np

from metaopt import Study
from simulations._problems import get_problem

TARGETS = {"branin": 0.05, "hartmann6": 0.25, "ackley5": 1.0, "rosenbrock4": 5.0}


@dataclass
class RunResult:
    time_to_target: float
    evaluations: int
    exact_duplicates: int
    near_duplicates: int
    wall_seconds: float


def _node(seed: int, i: int) -> bytes:
    return hashlib.blake2b(f"bench-{seed}-{i}".encode(), digest_size=16).digest()


def run(
    problem_name: str,
    k: int,
    seed: int,
    *,
    target: float,
    sync_every: float,
    max_time: float,
    algorithm: str,
    push: float | None = None,
) -> RunResult:
    problem = get_problem(problem_name)
    assert problem.optimum is not None
    rng = np.random.default_rng([seed, k])
    studies = [
        Study(
            dict(problem.priors),
            algorithm=algorithm,
            seed=seed,
            node_id=_node(seed, i),
            name=f"parallel-{problem_name}",
            clock=lambda: 0.0,
        )
        for i in range(k)
    ]
    began = time.perf_counter()
    queue: list[tuple[float, int, str, int, object, float]] = []
    counter = 0
    pushed = [0] * k  # the highest own seq each peer has pushed so far

    def push_new(i: int, now: float) -> None:
        """Send peer i's records written since its last push to every other peer."""
        nonlocal counter
        if push is None or k == 1:
            return
        own = studies[i].node_id
        high = studies[i].store.version_vector().high(own)
        records = list(studies[i].store.by_origin(own, pushed[i] + 1, high))
        pushed[i] = high
        for j in range(k):
            if j != i:
                counter += 1
                heapq.heappush(queue, (now + push, counter, "push", j, records, 0.0))

    def start(i: int, now: float) -> None:
        nonlocal counter
        trial = studies[i].ask()
        push_new(i, now)
        value = problem.objective(trial.params)
        duration = float(rng.uniform(0.5, 1.5))
        counter += 1
        heapq.heappush(queue, (now + duration, counter, "done", i, trial, value))

    for i in range(k):
        start(i, 0.0)
    if k > 1:
        for i in range(k):
            counter += 1
            offset = float(rng.uniform(0, sync_every))
            heapq.heappush(queue, (offset, counter, "sync", i, None, 0.0))
    reached = math.inf
    evaluations = 0
    while queue:
        now, _, kind, i, trial, value = heapq.heappop(queue)
        if now > max_time:
            break
        if kind == "sync":
            j = int(rng.integers(k - 1))
            studies[i].sync(studies[j if j < i else j + 1])
            counter += 1
            heapq.heappush(queue, (now + sync_every, counter, "sync", i, None, 0.0))
            continue
        if kind == "push":
            studies[i].store.add(trial)  # type: ignore[arg-type]
            continue
        studies[i].tell(trial, value)  # type: ignore[arg-type]
        push_new(i, now)
        evaluations += 1
        if value - problem.optimum <= target:
            reached = now
            break
        start(i, now)
    # Everyone's trials, for duplicate counting: bring all replicas to their union.
    for s in studies[1:]:
        studies[0].sync(s)
    trials = studies[0].trials
    space = studies[0].space
    keys = [tuple(sorted(t.params.items())) for t in trials]
    exact = len(keys) - len(set(keys))
    U = np.array([space.to_unit(t.params) for t in trials])
    near = 0
    if len(U) > 1:
        d = np.sqrt(((U[:, None, :] - U[None, :, :]) ** 2).sum(-1))
        near = int((d[np.triu_indices(len(U), 1)] < 1e-3).sum())
    for s in studies:
        s.close()
    return RunResult(reached, evaluations, exact, near, time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--problems", default="branin,hartmann6")
    parser.add_argument("--peers", default="1,2,4,8")
    parser.add_argument("--sync", type=float, default=0.5, help="virtual seconds between syncs")
    parser.add_argument(
        "--push",
        default="0.02,off",
        help="comma-separated push latencies in virtual s, 'off' for anti-entropy only",
    )
    parser.add_argument("--max-time", type=float, default=120.0)
    parser.add_argument("--algorithm", default="auto")
    parser.add_argument("--quick", action="store_true", help="2 seeds, branin only")
    args = parser.parse_args()
    seeds = 2 if args.quick else args.seeds
    problems = ["branin"] if args.quick else args.problems.split(",")
    ks = [int(k) for k in args.peers.split(",")]
    pushes = [None if p == "off" else float(p) for p in args.push.split(",")]
    print(
        f"bench_parallel: algorithm={args.algorithm}, {seeds} seeds, durations U(0.5, 1.5),"
        f" anti-entropy with a random peer every {args.sync} virtual s, cap {args.max_time}"
        " virtual s; push = latency of the push of each new record to every peer"
    )
    header = (
        f"{'problem':<11} {'target':>7} {'push':>5} {'k':>2} {'median t':>9} {'speed-up':>9}"
        f" {'reached':>8} {'evals':>6} {'exact dup':>9} {'near dup':>8} {'wall s':>7}"
    )
    print(header)
    print("-" * len(header))
    for name, push in ((n, p) for n in problems for p in pushes):
        target = TARGETS.get(name, 0.1)
        base: float | None = None
        for k in ks:
            results = [
                run(
                    name,
                    k,
                    seed,
                    target=target,
                    sync_every=args.sync,
                    max_time=args.max_time,
                    algorithm=args.algorithm,
                    push=push,
                )
                for seed in range(seeds)
            ]
            times = [r.time_to_target for r in results]
            med = statistics.median(times)
            if k == ks[0]:
                base = med
            speedup = (base / med) if base is not None and math.isfinite(med) else float("nan")
            reached = sum(math.isfinite(t) for t in times)
            evals = statistics.median(r.evaluations for r in results)
            print(
                f"{name:<11} {target:>7.3g} {'off' if push is None else push:>5} {k:>2}"
                f" {med:>9.2f} {speedup:>8.2f}x"
                f" {reached:>4}/{seeds:<3} {evals:>6.0f}"
                f" {sum(r.exact_duplicates for r in results):>9}"
                f" {sum(r.near_duplicates for r in results):>8}"
                f" {statistics.median(r.wall_seconds for r in results):>7.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
