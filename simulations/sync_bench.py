"""Reconciliation benchmark: what two replicas exchange to reach their union.

``python -m simulations.sync_bench [--big] [--seed S]`` prints three tables.

The first crosses replica sizes n with the differences between them: d scattered records (half
missing on each side, anywhere in the set) and a partition's worth (1,000 fresh records written
on each side). "vv+ranges" is the protocol as peers run it; "ranges only" switches the fast path
off, as if every difference were invisible to version vectors (a node that lost its disk but
kept its id), to show what the backstop costs alone. "extra" is every byte both ways minus the
bytes of the records that had to move; round trips count every request/response pair.

The second shows why a session past a few hundred origins opens with its vector's digest: with
every experiment an origin, a whole vector in every idle session grew to hundreds of KB.

The third has an empty LevelDB replica catch up on 10^5 event-sized records from another
LevelDB replica through the same sessions (chunked at ``max_message_bytes``/``max_records``,
each chunk one round trip), and reports records/s and wire bytes over the records' raw bytes;
beside it, the same reading, decoding and storing without the protocol, in the same chunks.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from crdt import Initiator, LevelDBStore, MemoryStore, Record, Store, SyncConfig, SyncStats, respond

ORIGINS = 20
T0 = 1_760_000_000_000


def make_records(rng: random.Random, n: int, origins: Sequence[bytes], t0: int) -> list[Record]:
    """n event-like records (about 200 bytes each) from the given origins, in time order."""
    seqs = dict.fromkeys(origins, 0)
    trials = [rng.randbytes(32) for _ in range(max(1, n // 50))]
    out = []
    t = t0
    for i in range(n):
        origin = origins[rng.randrange(len(origins))]
        seqs[origin] += 1
        t += rng.randrange(1, 400)
        trial = trials[rng.randrange(len(trials))]
        body = {
            "event": "progress",
            "step": i % 200,
            "metrics": {"loss": rng.random(), "accuracy": rng.random()},
            "node": origin,
            "trial": trial,
        }
        out.append(Record.create("event", origin, seqs[origin], t, body, links=[trial]))
    return out


@dataclass
class Outcome:
    stats: SyncStats
    seconds: float
    moved_bytes: int


def sync(a: Store, b: Store, config: SyncConfig) -> tuple[SyncStats, float]:
    """One session, a initiating against b; returns its stats and wall seconds."""
    started = time.perf_counter()
    session = Initiator(a, config)
    message: bytes | None = session.start()
    while message is not None:
        message = session.receive(respond(b, message, config))
    return session.stats, time.perf_counter() - started


def _pair(
    base: list[Record], only_a: list[Record], only_b: list[Record]
) -> tuple[MemoryStore, MemoryStore]:
    a, b = MemoryStore(), MemoryStore()
    a.add(base)
    b.add(base)
    a.add(only_a)
    b.add(only_b)
    return a, b


def bench_case(
    base: list[Record], only_a: list[Record], only_b: list[Record], config: SyncConfig
) -> Outcome:
    a, b = _pair(base, only_a, only_b)
    stats, seconds = sync(a, b, config)
    if not (a.fingerprint().digest() == b.fingerprint().digest() and stats.converged):
        raise SystemExit("replicas did not converge; the benchmark is invalid")
    moved = sum(len(r.data) for r in only_a) + sum(len(r.data) for r in only_b)
    return Outcome(stats, seconds, moved)


def differences(
    rng: random.Random, records: list[Record], d: int
) -> tuple[list[Record], list[Record], list[Record]]:
    n = len(records)
    picked = sorted(rng.sample(range(n), d))
    gone = set(picked)
    only_a = [records[i] for i in picked[::2]]
    only_b = [records[i] for i in picked[1::2]]
    base = [r for i, r in enumerate(records) if i not in gone]
    return base, only_a, only_b


def partition(
    rng: random.Random, base: list[Record], per_side: int, origins: list[bytes]
) -> tuple[list[Record], list[Record], list[Record]]:
    t1 = base[-1].time if base else T0
    half = len(origins) // 2
    # Fresh records continue each origin's numbering, as a real partition would.
    last: dict[bytes, int] = {}
    for r in base:
        last[r.origin] = max(last.get(r.origin, 0), r.seq)
    side_a = _continue(rng, per_side, origins[:half], last, t1)
    side_b = _continue(rng, per_side, origins[half:], last, t1)
    return base, side_a, side_b


def _continue(
    rng: random.Random, n: int, origins: list[bytes], last: dict[bytes, int], t1: int
) -> list[Record]:
    fresh = make_records(rng, n, origins, t1)
    seq = dict(last)
    out = []
    for r in fresh:
        seq[r.origin] = seq.get(r.origin, 0) + 1
        out.append(Record.create(r.kind, r.origin, seq[r.origin], r.time, r.body, r.links))
    return out


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _kb(n: int) -> str:
    return f"{n / 1024:.1f} KB"


def reconcile_table(sizes: list[int], seed: int) -> str:
    rng = random.Random(seed)
    origins = sorted(rng.randbytes(16) for _ in range(ORIGINS))
    modes = [("vv+ranges", SyncConfig()), ("ranges only", SyncConfig(fast_path=False))]
    rows = []
    for n in sizes:
        records = make_records(rng, n, origins, T0)
        cases: list[tuple[str, tuple[list[Record], list[Record], list[Record]]]] = []
        for d in (0, 1, 10, 100, 1000):
            cases.append((f"d={d} scattered", differences(rng, records, d)))
        cases.append(("partition 1000+1000", partition(rng, records, 1000, origins)))
        for label, (base, only_a, only_b) in cases:
            for mode, config in modes:
                out = bench_case(base, only_a, only_b, config)
                s = out.stats
                total = s.bytes_sent + s.bytes_received
                extra = total - out.moved_bytes
                pct = f"{100 * extra / out.moved_bytes:.1f}%" if out.moved_bytes else "-"
                rows.append(
                    [
                        f"{n:,}",
                        label,
                        mode,
                        str(s.round_trips),
                        _kb(extra),
                        pct,
                        s.phase,
                        f"{out.seconds:.3f}",
                    ]
                )
    headers = ["n", "difference", "protocol", "RTs", "extra", "extra/moved", "phase", "seconds"]
    return _table(headers, rows)


def origins_table(seed: int, counts: tuple[int, ...] = (20, 2_000, 20_000)) -> str:
    """Sessions between replicas with many origins (every experiment is one), opened with the
    whole version vector or with its digest: idle, and with a few records new on one side."""
    rng = random.Random(seed)
    nodes = sorted(rng.randbytes(16) for _ in range(ORIGINS))
    events = make_records(rng, 1_000, nodes, T0)
    modes = [("vector", SyncConfig(open_vector_origins=1 << 30)), ("digest", SyncConfig())]
    rows = []
    for count in counts:
        experiments = [
            Record.create("experiment", rng.randbytes(16), 1, T0, {"i": i}) for i in range(count)
        ]
        fresh = _continue(rng, 10, nodes, {r.origin: r.seq for r in events}, events[-1].time)
        for mode, config in modes:
            a, b = _pair(experiments + events, [], [])
            # The second idle session is the steady state: a vector's digest is kept until
            # the vector changes.
            idle = [sync(a, b, config), sync(a, b, config)]
            b.add(fresh)
            catch_up = sync(a, b, config)
            if a.fingerprint().digest() != b.fingerprint().digest():
                raise SystemExit("replicas did not converge; the benchmark is invalid")
            labels = ("idle, first", "idle, again", "10 new at responder")
            for label, (stats, seconds) in zip(labels, [*idle, catch_up], strict=True):
                total = stats.bytes_sent + stats.bytes_received
                rows.append(
                    [
                        f"{count:,}",
                        label,
                        mode,
                        str(stats.round_trips),
                        _kb(total),
                        f"{1000 * seconds:.2f}",
                    ]
                )
    headers = ["origins", "difference", "opening", "RTs", "bytes", "ms"]
    return _table(headers, rows)


def catch_up_table(n: int, seed: int, repeats: int = 3) -> str:
    """The catch-up through the protocol and, beside it, the same store work without it.

    Both are run ``repeats`` times, alternating, each into a fresh empty store; the best run of
    each is shown (other processes share the machine: the fastest run is the least disturbed).
    """
    rng = random.Random(seed)
    origins = sorted(rng.randbytes(16) for _ in range(ORIGINS))
    records = make_records(rng, n, origins, T0)
    raw = sum(len(r.data) for r in records)
    config = SyncConfig()
    through: list[tuple[float, float, SyncStats]] = []
    alone: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        source = LevelDBStore(f"{tmp}/source")
        try:
            for i in range(0, n, 10_000):
                source.add(records[i : i + 10_000])
            for attempt in range(repeats):
                target = LevelDBStore(f"{tmp}/target{attempt}")
                try:
                    cpu = time.thread_time()
                    stats, seconds = sync(target, source, config)
                    cpu = time.thread_time() - cpu
                    if target.fingerprint().digest() != source.fingerprint().digest():
                        raise SystemExit("the catch-up did not converge; the benchmark is invalid")
                finally:
                    target.close()
                through.append((seconds, cpu, stats))
                alone.append(_without_protocol(source, f"{tmp}/alone{attempt}", config, n))
        finally:
            source.close()
    seconds, cpu, stats = min(through, key=lambda run: run[0])
    floor_seconds, floor_cpu = min(alone)
    wire = stats.bytes_sent + stats.bytes_received
    headers = ["path", "records", "raw bytes", "wire bytes", "wire/raw", "RTs", "seconds"]
    headers += ["cpu s", "records/s"]
    rows = [
        [
            "through the protocol",
            f"{n:,}",
            f"{raw:,}",
            f"{wire:,}",
            f"{wire / raw:.3f}",
            str(stats.round_trips),
            f"{seconds:.2f}",
            f"{cpu:.2f}",
            f"{n / seconds:,.0f}",
        ],
        [
            "without the protocol",
            f"{n:,}",
            f"{raw:,}",
            "-",
            "-",
            "-",
            f"{floor_seconds:.2f}",
            f"{floor_cpu:.2f}",
            f"{n / floor_seconds:,.0f}",
        ],
    ]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    notes = [
        f"Best of {repeats} runs each, alternating. 'Without the protocol' is the same store work"
        " in the same chunks, with no messages: raw_by_origin, Record.decode_many and"
        " LevelDBStore.add.",
        f"Load average {load} (1, 5, 15 min) on {os.cpu_count()} cores. 'cpu s' is the CPU"
        " time of the thread that ran it (LevelDB compacts on a thread of its own): seconds"
        " well above it were spent waiting for a core.",
    ]
    return _table(headers, rows) + "\n" + "\n".join(notes)


def _without_protocol(source: Store, path: str, config: SyncConfig, n: int) -> tuple[float, float]:
    """Wall and CPU seconds to read, decode and store the records in the protocol's chunks."""
    target = LevelDBStore(path)
    try:
        cpu = time.thread_time()
        started = time.perf_counter()
        chunk: list[bytes] = []
        size = 0
        for origin in source.version_vector().origins():
            for _, data in source.raw_by_origin(origin, 1, 2**63 - 1):
                if chunk and (
                    size + len(data) > config.max_message_bytes or len(chunk) >= config.max_records
                ):
                    target.add(Record.decode_many(chunk))
                    chunk, size = [], 0
                chunk.append(data)
                size += len(data)
        target.add(Record.decode_many(chunk))
        seconds = time.perf_counter() - started
        cpu = time.thread_time() - cpu
        if len(target) != n:
            raise SystemExit("the store work alone lost records; the benchmark is invalid")
    finally:
        target.close()
    return seconds, cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--big", action="store_true", help="also run n = 10^6 (minutes)")
    args = parser.parse_args(argv)
    sizes = [10_000, 100_000] + ([1_000_000] if args.big else [])
    print(f"Two in-memory replicas, {ORIGINS} origins, ~200-byte event records (seed {args.seed})")
    print(reconcile_table(sizes, args.seed))
    if not args.big:
        print("n = 10^6 skipped: building its replicas takes minutes here; run with --big")
    print()
    print(
        f"Replicas of 1,000 events from {ORIGINS} nodes plus one record per experiment origin;"
        " the opening carries the whole vector or, past open_vector_origins"
        f" ({SyncConfig().open_vector_origins}), its digest"
    )
    print(origins_table(args.seed))
    print()
    print("An empty LevelDB replica catching up from another LevelDB replica")
    print(catch_up_table(100_000, args.seed))


if __name__ == "__main__":
    main()
