"""k asynchronous peers in virtual time: how much sooner they reach a target, and duplicates.

Each peer is its own metaopt.Study (its own node id and replica) running one evaluation at a
time; evaluation durations are drawn at random; every ``--sync`` virtual seconds each peer
reconciles with one random other peer through the crdt protocol (anti-entropy). With
``--push L`` every record a peer writes (a new trial, a result) also reaches every other peer L
virtual seconds later, as the real peer pushes each new record to every live peer at once
(peer/_replication.py); ``--push off`` leaves anti-entropy alone. Both modes print by default.
Time to target is the virtual time of the first completed evaluation whose regret is below the
target; the speed-up is the median time at k = 1 over the median at k, with a 90% interval from
resampling the seeds (the median of 10 runs moves by 10-20% from one set of seeds to another).

``--algorithm auto,auto-ei,clairvoyant`` measures several side by side. ``auto-ei`` is auto with
log-EI instead of the bound (``GPConfig(pending_beta=None)``), the rule before GP-BUCB, pending
trials or not.
``clairvoyant`` is a reference, not a search algorithm: auto told the true value of every
pending trial, i.e. sequential information at parallel speed. No treatment of pending points
can know more than it does, so its speed-up shows what is left to gain by changing how pending
points are handled; what it still loses to k = 1 is the blind first round (k points chosen
before any result exists) and the evaluation time itself. Both report themselves as auto, so
their Studies draw auto's random streams: at k = 1, where nothing is pending when a peer asks,
clairvoyant is auto exactly.

    python -m simulations.bench_parallel [--seeds 5] [--problems branin,hartmann6]
        [--push 0.02,off] [--algorithm auto,auto-ei,clairvoyant] [--first-seed 0] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from metaopt import Study
from metaopt.search import Algorithm, AutoAlgorithm, Observations
from metaopt.space import Space
from simulations._problems import Problem, get_problem

TARGETS = {"branin": 0.05, "hartmann6": 0.25, "ackley5": 1.0, "rosenbrock4": 5.0}


@dataclass
class RunResult:
    time_to_target: float
    evaluations: int
    exact_duplicates: int
    near_duplicates: int
    wall_seconds: float


REFERENCES = ("auto-ei", "clairvoyant")


class Clairvoyant:
    """auto shown every pending trial as completed, with its true value: a ceiling, not a method."""

    name = "auto"

    def __init__(self, problem: Problem) -> None:
        self._problem = problem
        self._auto = AutoAlgorithm()

    def suggest(
        self, space: Space, obs: Observations, rng: np.random.Generator, n: int = 1
    ) -> npt.NDArray[np.float64]:
        if obs.pending.shape[0]:
            y = [[self._problem.objective(space.from_unit(u))] for u in obs.pending]
            obs = Observations(
                np.vstack([obs.X, obs.pending]),
                np.vstack([obs.Y, np.asarray(y, dtype=np.float64)]),
                np.zeros((0, space.d)),
                obs.failed,
            )
        return self._auto.suggest(space, obs, rng, n)


def _node(seed: int, i: int) -> bytes:
    return hashlib.blake2b(f"bench-{seed}-{i}".encode(), digest_size=16).digest()


def _algorithm(name: str, problem: Problem) -> str | Algorithm:
    if name == "clairvoyant":
        return Clairvoyant(problem)
    if name == "auto-ei":
        from metaopt.search.gp import GPAlgorithm, GPConfig

        return AutoAlgorithm(gp=GPAlgorithm(GPConfig(pending_beta=None)))
    return name


def speedup_interval(
    base: Sequence[float], times: Sequence[float], level: float = 0.9, draws: int = 2000
) -> tuple[float, float]:
    """A bootstrap interval of median(base) / median(times), each resampled over its seeds."""
    rng = np.random.default_rng(0)
    b = rng.choice(np.asarray(base, dtype=np.float64), size=(draws, len(base)))
    t = rng.choice(np.asarray(times, dtype=np.float64), size=(draws, len(times)))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.median(b, axis=1) / np.median(t, axis=1)
    ratio = np.where(np.isnan(ratio), 0.0, ratio)  # inf / inf: neither reached the target
    q = [(1 - level) / 2, (1 + level) / 2]
    with np.errstate(invalid="ignore"):
        lo, hi = np.quantile(ratio, q)
    if math.isnan(lo) or math.isnan(hi):  # (interpolated between two infinities)
        lo, hi = np.quantile(ratio, q, method="nearest")
    return float(lo), float(hi)


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
    if not (sync_every > 0 and max_time > 0):
        # (A sync every 0 s came round again at the same virtual time: it never ended.)
        raise ValueError("sync_every and max_time must be positive virtual seconds")
    problem = get_problem(problem_name)
    assert problem.optimum is not None
    rng = np.random.default_rng([seed, k])  # syncs: when, and with whom
    # Peer i's evaluation durations are its own stream, the same whatever k: peer 0 of k = 8
    # waits what the lone peer of k = 1 waits (one stream for all, drawn with the syncs, gave
    # each k other durations, noise in every speed-up).
    durations = [np.random.default_rng([seed, 2**32, i]) for i in range(k)]
    studies = [
        Study(
            dict(problem.priors),
            algorithm=_algorithm(algorithm, problem),
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
        duration = float(durations[i].uniform(0.5, 1.5))
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
    parser.add_argument(
        "--first-seed",
        type=int,
        default=1000,
        help="seeds run from here up (below 1000: looked at while choosing the rule)",
    )
    parser.add_argument("--problems", default="branin,hartmann6")
    parser.add_argument("--peers", default="1,2,4,8")
    parser.add_argument("--sync", type=float, default=0.5, help="virtual seconds between syncs")
    parser.add_argument(
        "--push",
        default="0.02,off",
        help="comma-separated push latencies in virtual s, 'off' for anti-entropy only",
    )
    parser.add_argument("--max-time", type=float, default=120.0)
    parser.add_argument(
        "--algorithm",
        default="auto",
        help=f"comma-separated metaopt algorithms, or the reference {', '.join(REFERENCES)}",
    )
    parser.add_argument("--quick", action="store_true", help="2 seeds, branin only")
    args = parser.parse_args()
    seeds = range(args.first_seed, args.first_seed + (2 if args.quick else args.seeds))
    problems = ["branin"] if args.quick else args.problems.split(",")
    try:
        # k = 1 first, whatever the order given: every speed-up is against it.
        ks = sorted({int(k) for k in args.peers.split(",")})
    except ValueError:
        parser.error(f"--peers {args.peers}: give numbers of peers, e.g. 1,2,4,8")
    if ks[0] != 1:
        parser.error(f"--peers {args.peers}: include 1, the speed-ups are against one peer")
    if not (args.sync > 0 and args.max_time > 0 and len(seeds) > 0):
        parser.error("--sync and --max-time take positive virtual seconds, --seeds 1 or more")
    pushes = [None if p == "off" else float(p) for p in args.push.split(",")]
    algorithms = args.algorithm.split(",")
    print(
        f"bench_parallel: algorithm={args.algorithm}, seeds {seeds.start}-{seeds.stop - 1},"
        f" durations U(0.5, 1.5), anti-entropy with a random peer every {args.sync} virtual s,"
        f" cap {args.max_time} virtual s; push = latency of the push of each new record to every"
        " peer; speed-up 90% = bootstrap interval over the seeds"
    )
    header = (
        f"{'problem':<11} {'target':>7} {'push':>5} {'k':>2} {'median t':>9} {'speed-up':>9}"
        f" {'reached':>8} {'evals':>6} {'exact dup':>9} {'near dup':>8} {'wall s':>7}"
        f" {'speed-up 90%':>13}  algorithm"
    )
    print(header)
    print("-" * len(header))
    blocks = ((n, p, a) for n in problems for p in pushes for a in algorithms)
    for name, push, algorithm in blocks:
        target = TARGETS.get(name, 0.1)
        base: list[float] = []
        for k in ks:
            results = [
                run(
                    name,
                    k,
                    seed,
                    target=target,
                    sync_every=args.sync,
                    max_time=args.max_time,
                    algorithm=algorithm,
                    push=push,
                )
                for seed in seeds
            ]
            times = [r.time_to_target for r in results]
            med = statistics.median(times)
            if k == ks[0]:
                base = times
            base_med = statistics.median(base)
            speedup = base_med / med if math.isfinite(med) else float("nan")
            interval = "-"
            if k != ks[0]:
                lo, hi = speedup_interval(base, times)
                interval = f"{lo:.2f}-{hi:.2f}x"
            reached = sum(math.isfinite(t) for t in times)
            evals = statistics.median(r.evaluations for r in results)
            print(
                f"{name:<11} {target:>7.3g} {'off' if push is None else push:>5} {k:>2}"
                f" {med:>9.2f} {speedup:>8.2f}x"
                f" {reached:>4}/{len(seeds):<3} {evals:>6.0f}"
                f" {sum(r.exact_duplicates for r in results):>9}"
                f" {sum(r.near_duplicates for r in results):>8}"
                f" {statistics.median(r.wall_seconds for r in results):>7.1f}"
                f" {interval:>13}  {algorithm}",
                flush=True,
            )
    # (The table's times are virtual; wall s alone depends on the machine's load.)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average {load} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
