"""Real peers on loopback: slot overhead, replication delay, wire bytes, idle cost, demo time.

Every figure comes from real ``metaopt peer start`` processes on 127.0.0.1 (default timings
unless a table says otherwise), so on a shared machine they move with its load: the load
average is printed beside each table.

- slot overhead: one peer, one slot, a trivial trial (reports once, exits) run back to back;
  from the trial records and events (``started_at``, ``ended_at``, ``suggest_ms``) and the
  trial's own clock (it reports ``t0`` when it starts and ``t1`` just before it exits).
- replication delay: a record written on one peer of a 3- and a 10-peer cluster, every peer's
  API polled until it holds it. Two kinds: a control record (``metaopt stop``; written by the
  peer, so eagerly pushed) and an experiment added through the API (``metaopt submit``).
- wire bytes: an experiment of N trials on 3 peers; the peers' own frame counters summed (the
  server side counts each exchange once), this benchmark's own API calls subtracted, and an
  idle window of the same length to show what anti-entropy costs by itself.
- idle cost: % of one core (utime + stime from /proc) and resident memory of idle peers.
- demo: ``examples/run_demo.py`` end to end.

    python -m simulations.bench_peer [--quick] [--skip-demo] [--trials 30] [--reps 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaopt._records import ExperimentSpec, experiment_record
from metaopt.cli._format import table
from metaopt.cli._submit import build_submission
from metaopt.peer._transport import RemoteError
from simulations._peers import (
    ROOT,
    ApiClient,
    LoopbackCluster,
    PeerProcess,
    proc_sample,
)

TARGET_SLOT_MS = 100.0
TARGET_SPREAD_S = 1.0
TARGET_IDLE_CPU = 1.0
POLL = 0.02  # seconds between two looks at one peer while timing replication

SH_TRIAL = """\
t0=$(date +%s.%N)
[ -n "$2" ] && sleep "$2"
echo "METAOPT {\\"loss\\": $1, \\"t0\\": $t0, \\"t1\\": $(date +%s.%N)}"
"""
PY_TRIAL = """\
import time

t0 = time.time()
import json
import sys

print("METAOPT " + json.dumps({"loss": float(sys.argv[1]), "t0": t0, "t1": time.time()}))
"""


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def ms(value: float) -> str:
    return f"{value:.1f}"


def section(title: str) -> None:
    print(f"\n== {title}  ({load()})", flush=True)


# ------------------------------------------------------------------------------- helpers


async def wait_finished(
    api: ApiClient, peers: Sequence[PeerProcess], exp: str, trials: int, timeout: float
) -> list[dict[str, Any]]:
    """Poll until every peer holds ``trials`` finished trials of ``exp``; its trial list."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            infos = await asyncio.gather(*(api.call(p, "api.experiment", exp) for p in peers))
        except RemoteError:
            infos = []  # not on every peer yet
        done = [
            sum(t["ended_at"] is not None for t in info["trial_list"]) >= trials
            and info["finished"]
            for info in infos
        ]
        if infos and all(done):
            return list(infos[0]["trial_list"])
        await asyncio.sleep(0.5)
    raise TimeoutError(f"experiment {exp} did not finish {trials} trials within {timeout:.0f} s")


async def wait_joined(api: ApiClient, peers: Sequence[PeerProcess], timeout: float) -> float:
    """Until every peer counts all the others as live; the seconds it took."""
    began = time.monotonic()
    want = len(peers) - 1
    while time.monotonic() - began < timeout:
        statuses = await asyncio.gather(*(api.call(p, "api.status") for p in peers))
        if all(sum(q["live"] for q in s["peers"]) >= want for s in statuses):
            return time.monotonic() - began
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{len(peers)} peers did not all meet within {timeout:.0f} s")


async def submit(
    api: ApiClient, peer: PeerProcess, workdir: Path, options: dict[str, Any], words: list[str]
) -> str:
    """What `metaopt submit` does, through this client so its bytes are counted here."""
    experiment, blobs = build_submission(options, words, workdir)
    if blobs:
        await api.call(peer, "api.add", [b.data for b in blobs])
    await api.call(peer, "api.add", [experiment.data])
    return experiment.key.hex()


def write_trial(workdir: Path, kind: str, sleep: float = 0.0) -> list[str]:
    """The trial program in ``workdir``; the template words that run it."""
    workdir.mkdir(parents=True, exist_ok=True)
    if kind == "sh":
        (workdir / "trial.sh").write_text(SH_TRIAL)
        return ["sh", "trial.sh", "~uniform(0, 1)"] + ([str(sleep)] if sleep else [])
    (workdir / "trial.py").write_text(PY_TRIAL)
    return ["trial.py", "~uniform(0, 1)"]


@dataclass
class CpuResult:
    scenario: str
    peers: int
    window: float
    cpu_pct: list[float]
    rss_mib: list[float]


def measure_idle(scenario: str, peers: Sequence[PeerProcess], window: float) -> CpuResult:
    """% of one core and RSS of each peer over ``window`` seconds of doing nothing here."""
    first = [proc_sample(p.pid) for p in peers]
    time.sleep(window)
    last = [proc_sample(p.pid) for p in peers]
    cpu = [100 * (b.cpu - a.cpu) / (b.at - a.at) for a, b in zip(first, last, strict=True)]
    rss = [b.rss_kib / 1024 for b in last]
    return CpuResult(scenario, len(peers), window, cpu, rss)


def settle(started: float, seconds: float = 5.0) -> None:
    """Let peers finish starting up before their idle cost is sampled."""
    time.sleep(max(0.0, started + seconds - time.monotonic()))


# ------------------------------------------------------------------------- slot overhead


@dataclass
class SlotResult:
    kind: str
    trials: int
    wall: float
    gaps: dict[str, list[float]]
    direct_start: list[float]  # ms from exec to the program's first line, run without a peer
    direct_exit: list[float]  # ms from its last line to its exit being seen, without a peer


SLOT_ROWS = [
    ("suggest", "suggestion itself (suggest_ms)"),
    ("end_to_created", "ended event -> next trial record, minus suggestion"),
    ("created_to_started", "next trial record -> its started event"),
    ("peer", "ended event -> next started event, minus suggestion"),
    ("exit", "trial's last line (t1) -> its ended event"),
    ("spawn", "started event -> next trial's first line (t0)"),
    ("script", "t1 -> next t0 (as the trial sees it), minus suggestion"),
]


def slot_gaps(trials: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per consecutive pair of trials on the one slot, each part of the gap in ms."""
    ran = [t for t in trials if t["started_at"] is not None and t["ended_at"] is not None]
    ran.sort(key=lambda t: t["started_at"])
    gaps: dict[str, list[float]] = {key: [] for key, _ in SLOT_ROWS}
    for a, b in itertools.pairwise(ran):
        suggest = float(b["suggest_ms"] or 0.0)
        t1, t0 = a["metrics"].get("t1"), b["metrics"].get("t0")
        gaps["suggest"].append(suggest)
        gaps["end_to_created"].append((b["created"] - a["ended_at"]) * 1000 - suggest)
        gaps["created_to_started"].append((b["started_at"] - b["created"]) * 1000)
        gaps["peer"].append((b["started_at"] - a["ended_at"]) * 1000 - suggest)
        if isinstance(t1, float) and isinstance(t0, float):
            gaps["exit"].append((a["ended_at"] - t1) * 1000)
            gaps["spawn"].append((t0 - b["started_at"]) * 1000)
            gaps["script"].append((t0 - t1) * 1000 - suggest)
    return gaps


def run_directly(workdir: Path, kind: str, times: int) -> tuple[list[float], list[float]]:
    """The trial program run by hand, for what it costs without any peer: (start, exit) ms."""
    argv = ["sh", "trial.sh", "0.5"] if kind == "sh" else [sys.executable, "trial.py", "0.5"]
    starts, exits = [], []
    for _ in range(times):
        before = time.time()
        proc = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=60)
        after = time.time()
        line = proc.stdout.strip().splitlines()[-1]
        report = json.loads(line.removeprefix("METAOPT "))
        starts.append((report["t0"] - before) * 1000)
        exits.append((after - report["t1"]) * 1000)
    return starts, exits


def bench_slot(
    root: Path, trials: int, kinds: Sequence[str], idle_window: float
) -> tuple[list[SlotResult], CpuResult]:
    with LoopbackCluster(root / "slot") as cluster:
        began = time.monotonic()
        (peer,) = cluster.start(1)
        settle(began)
        idle = measure_idle("1 peer, alone, empty replica", [peer], idle_window)
        assert cluster.key is not None
        key = cluster.key

        async def go() -> list[SlotResult]:
            api = ApiClient([peer], key)
            results = []
            try:
                for kind in kinds:
                    workdir = root / f"trial-{kind}"
                    words = write_trial(workdir, kind)
                    options = {"name": f"slot-{kind}", "max_trials": trials, "algorithm": "random"}
                    t = time.monotonic()
                    exp = await submit(api, peer, workdir, options, words)
                    ran = await wait_finished(api, [peer], exp, trials, 60 + 10 * trials)
                    wall = time.monotonic() - t
                    bad = [x for x in ran if x["state"] != "completed"]
                    if bad:
                        raise RuntimeError(f"{len(bad)} trial(s) did not complete: {bad[0]}")
                    direct = run_directly(workdir, kind, max(5, trials // 3))
                    results.append(SlotResult(kind, len(ran), wall, slot_gaps(ran), *direct))
            finally:
                await api.close()
            return results

        return asyncio.run(go()), idle


def print_slot(results: Sequence[SlotResult]) -> None:
    for r in results:
        program = "sh trial.sh" if r.kind == "sh" else "python trial.py"
        print(
            f"\n{r.trials} trials of `{program}` back to back on 1 slot"
            f" ({r.wall:.1f} s, {r.wall / r.trials * 1000:.0f} ms per trial); ms per gap:"
        )
        rows = []
        for key, label in SLOT_ROWS:
            values = r.gaps[key]
            if values:
                rows.append(
                    [
                        label,
                        ms(quantile(values, 0.5)),
                        ms(quantile(values, 0.9)),
                        ms(max(values)),
                    ]
                )
        for label, values in (
            ("the same program run by hand: exec -> t0", r.direct_start),
            ("the same program run by hand: t1 -> exit seen", r.direct_exit),
        ):
            rows.append(
                [label, ms(quantile(values, 0.5)), ms(quantile(values, 0.9)), ms(max(values))]
            )
        rows.append(["the peer's share: t1 -> next t0, minus suggestion and", "", "", ""])
        rows.append(["  the program's own start and exit (medians)", ms(peer_share(r)), "", ""])
        print(table(["part of the gap between two trials", "median", "p90", "max"], rows))
    for r in results:
        if r.gaps["script"]:
            median = quantile(r.gaps["script"], 0.5)
            verdict = "met" if median <= TARGET_SLOT_MS else "MISSED"
            share = peer_share(r)
            share_verdict = "met" if share <= TARGET_SLOT_MS else "MISSED"
            print(
                f"target: slot overhead beyond the suggestion <= {TARGET_SLOT_MS:.0f} ms"
                f" ({r.kind}): t1 -> next t0 median {median:.1f} ms -> {verdict};"
                f" the peer's share {share:.1f} ms -> {share_verdict}"
            )


def peer_share(r: SlotResult) -> float:
    """What the peer adds to the gap: the gap less what the program costs run by hand."""
    own = quantile(r.direct_start, 0.5) + quantile(r.direct_exit, 0.5)
    return quantile(r.gaps["script"], 0.5) - own


# --------------------------------------------------------------------- replication delay


@dataclass
class SpreadResult:
    peers: int
    kind: str
    to_all: list[float]  # seconds until the last peer held it, per repetition
    each: list[float]  # seconds until each other peer held it, all repetitions
    missing: int  # peers that did not hold it within the time limit


async def _arrival(
    api: ApiClient, peer: PeerProcess, exp: str, check: Callable[[Any], bool], t0: float
) -> float | None:
    deadline = t0 + 30
    while time.perf_counter() < deadline:
        try:
            info = await api.call(peer, "api.experiment", exp)
        except RemoteError:
            info = None  # not there yet
        if info is not None and check(info):
            return time.perf_counter() - t0
        await asyncio.sleep(POLL)
    return None


async def _spread_once(
    api: ApiClient,
    peers: Sequence[PeerProcess],
    source: PeerProcess,
    write: Callable[[], Any],
    exp: str,
    check: Callable[[Any], bool],
) -> list[float | None]:
    t0 = time.perf_counter()
    await write()
    others = [p for p in peers if p is not source]
    return list(await asyncio.gather(*(_arrival(api, p, exp, check, t0) for p in others)))


async def _nothing() -> None:
    return None


def bench_spread(
    root: Path, n: int, reps: int, idle_window: float | None, timing: str = "", adds: bool = True
) -> tuple[list[SpreadResult], CpuResult | None, float]:
    with LoopbackCluster(root / f"spread{n}-{timing or 'default'}", timing=timing) as cluster:
        began = time.monotonic()
        peers = cluster.start(n)
        assert cluster.key is not None
        key = cluster.key

        async def meet() -> float:
            api = ApiClient(peers, key)
            try:
                return await wait_joined(api, peers, 120)
            finally:
                await api.close()

        joined = asyncio.run(meet())
        idle = None
        if idle_window:
            settle(began)
            idle = measure_idle(f"{n} peers, cluster, empty replica", peers, idle_window)

        async def go() -> list[SpreadResult]:
            api = ApiClient(peers, key)
            note = f" [{timing}]" if timing else ""
            added = SpreadResult(n, "experiment via api.add (submit)" + note, [], [], 0)
            stopped = SpreadResult(n, "control record (metaopt stop)" + note, [], [], 0)
            try:
                for rep in range(reps):
                    source = peers[rep % n]
                    spec = ExperimentSpec(
                        name=f"spread-{rep}",
                        space={"x": "uniform(0, 1)"},
                        objectives=("loss",),
                        nonce=os.urandom(8).hex(),
                    )
                    record = experiment_record(spec)  # no command: no peer runs it
                    exp = record.key.hex()
                    if not adds:  # only the stop is timed: add the experiment and let it settle
                        await api.call(source, "api.add", [record.data])
                        await _spread_once(api, peers, source, _nothing, exp, lambda info: True)
                    for result, write, check in (
                        (
                            added,
                            lambda s=source, r=record: api.call(s, "api.add", [r.data]),
                            lambda info: True,
                        ),
                        (
                            stopped,
                            lambda s=source, e=exp: api.call(s, "api.stop", e),
                            lambda info: bool(info["stopped"]),
                        ),
                    ):
                        if result is added and not adds:
                            continue
                        times = await _spread_once(api, peers, source, write, exp, check)
                        got = [t for t in times if t is not None]
                        result.missing += len(times) - len(got)
                        result.each.extend(got)
                        if len(got) == len(times):
                            result.to_all.append(max(got))
                        await asyncio.sleep(0.2)
            finally:
                await api.close()
            return [stopped, added] if adds else [stopped]

        return asyncio.run(go()), idle, joined


def print_spread(results: Sequence[SpreadResult]) -> None:
    rows = []
    for r in results:
        rows.append(
            [
                r.peers,
                r.kind,
                len(r.to_all),
                ms(quantile(r.to_all, 0.5) * 1000),
                ms(max(r.to_all, default=float("nan")) * 1000),
                ms(quantile(r.each, 0.5) * 1000),
                f"{sum(t <= TARGET_SPREAD_S for t in r.to_all)}/{len(r.to_all)}",
                r.missing,
            ]
        )
    print(
        table(
            [
                "peers",
                "record",
                "reps",
                "all: median ms",
                "all: max ms",
                "each peer: median ms",
                "<= 1 s",
                "missing",
            ],
            rows,
        )
    )
    print(
        f"(time from the write call until every other peer's API lists the record; polled every"
        f" {POLL * 1000:.0f} ms, so each figure is late by up to that plus one API round trip)"
    )
    for r in results:
        if r.peers >= 10 and r.to_all:
            worst = max(r.to_all)
            verdict = "met" if worst <= TARGET_SPREAD_S and not r.missing else "MISSED"
            print(
                f"target: a record reaches {r.peers} peers in <= {TARGET_SPREAD_S:.0f} s"
                f" ({r.kind}): max {worst * 1000:.0f} ms -> {verdict}"
            )


# ----------------------------------------------------------------------------- wire bytes


@dataclass
class WireWindow:
    label: str
    seconds: float
    peer_bytes: int  # frames between peers (the servers' counts, this client's removed)
    own_bytes: int
    sessions: int
    records: int


@dataclass
class WireResult:
    budget: int
    trials: int  # what ran: concurrent starts may overshoot the budget by a few
    busy: WireWindow
    idle: WireWindow
    cpu: CpuResult


@dataclass(frozen=True)
class _Snapshot:
    at: float
    server: int
    sessions: int
    records: int
    request_bytes: int  # this client's requests of the snapshot itself
    reply_bytes: int


async def _snapshot(api: ApiClient, peers: Sequence[PeerProcess]) -> _Snapshot:
    sent, received = api.sent, api.received
    statuses = await asyncio.gather(*(api.call(p, "api.status") for p in peers))
    server = sum(s["wire"]["server_received"] + s["wire"]["server_sent"] for s in statuses)
    return _Snapshot(
        time.monotonic(),
        server,
        sum(s["sync_sessions"] for s in statuses),
        max(s["records"] for s in statuses),
        api.sent - sent,
        api.received - received,
    )


def _window(label: str, a: _Snapshot, b: _Snapshot, own_between: int) -> WireWindow:
    # The servers counted a's requests before answering them and b's requests but not b's
    # replies; everything else this client sent or got in between is in their counts too.
    own = a.reply_bytes + own_between + b.request_bytes
    return WireWindow(
        label,
        b.at - a.at,
        b.server - a.server - own,
        own,
        b.sessions - a.sessions,
        b.records - a.records,
    )


def bench_wire(root: Path, trials: int, idle_floor: float) -> WireResult:
    with LoopbackCluster(root / "wire") as cluster:
        peers = cluster.start(3)
        assert cluster.key is not None
        key = cluster.key
        workdir = root / "trial-wire"
        # Trials of a second each, so that all three peers take part as in real use.
        words = write_trial(workdir, "sh", sleep=1.0)

        async def busy() -> tuple[WireWindow, _Snapshot, int]:
            api = ApiClient(peers, key)
            try:
                await wait_joined(api, peers, 120)
                s0 = await _snapshot(api, peers)
                mark = api.sent + api.received
                options = {"name": "wire", "max_trials": trials, "algorithm": "random"}
                exp = await submit(api, peers[0], workdir, options, words)
                ran = await wait_finished(api, peers, exp, trials, 60 + 10 * trials)
                between = api.sent + api.received - mark
                s1 = await _snapshot(api, peers)
                return _window("experiment", s0, s1, between), s1, len(ran)
            finally:
                await api.close()

        window, s1, ran = asyncio.run(busy())
        # An idle window as long as the experiment's, but long enough for a steady rate.
        idle_seconds = max(window.seconds, idle_floor)
        cpu = measure_idle("3 peers, cluster, after the experiment", peers, idle_seconds)

        async def after() -> _Snapshot:
            api = ApiClient(peers, key)
            try:
                return await _snapshot(api, peers)
            finally:
                await api.close()

        s2 = asyncio.run(after())
        # s1's replies went to another client; its bytes are in s1.reply_bytes all the same.
        idle = _window("idle", s1, s2, 0)
        return WireResult(trials, ran, window, idle, cpu)


def print_wire(r: WireResult) -> None:
    rows = []
    for w in (r.busy, r.idle):
        rows.append(
            [
                w.label,
                f"{w.seconds:.1f}",
                w.peer_bytes,
                f"{w.peer_bytes / w.seconds / 1024:.2f}",
                w.sessions,
                w.records,
                w.own_bytes,
            ]
        )
    print(
        table(
            [
                "window (3 peers)",
                "s",
                "bytes between peers",
                "KiB/s",
                "anti-entropy sessions",
                "new records",
                "API bytes removed",
            ],
            rows,
        )
    )
    idle_rate = r.idle.peer_bytes / r.idle.seconds
    anti_entropy = idle_rate * r.busy.seconds
    per_trial = r.busy.peer_bytes / r.trials
    rows = [
        ["all bytes between peers", f"{per_trial:.0f}"],
        ["  of which idle anti-entropy (idle rate x window)", f"{anti_entropy / r.trials:.0f}"],
        [
            "  the rest: the trial's records moving",
            f"{(r.busy.peer_bytes - anti_entropy) / r.trials:.0f}",
        ],
        ["records per trial", f"{r.busy.records / r.trials:.1f}"],
        [
            "bytes per record copy (the rest / records / 2 other peers)",
            f"{(r.busy.peer_bytes - anti_entropy) / max(1, r.busy.records) / 2:.0f}",
        ],
    ]
    title = f"per trial ({r.trials} trials ran, budget {r.budget}, `sh trial.sh X 1`)"
    print(table([title, "bytes"], rows))
    print("(frame bytes as the peers count them: HTTP and TCP headers are not included)")


# ------------------------------------------------------------------------------- idle CPU


def print_idle(results: Sequence[CpuResult]) -> None:
    rows = []
    for r in results:
        rows.append(
            [
                r.scenario,
                f"{r.window:.0f}",
                f"{statistics.fmean(r.cpu_pct):.2f}",
                f"{max(r.cpu_pct):.2f}",
                f"{statistics.fmean(r.rss_mib):.1f}",
                f"{max(r.rss_mib):.1f}",
            ]
        )
    print(
        table(
            ["idle peers", "window s", "% core mean", "% core max", "RSS MiB mean", "RSS MiB max"],
            rows,
        )
    )
    worst = max(max(r.cpu_pct) for r in results)
    verdict = "met" if worst <= TARGET_IDLE_CPU else "MISSED"
    print(
        f"target: an idle peer <= {TARGET_IDLE_CPU:.0f}% of a core: worst {worst:.2f}% -> {verdict}"
    )


# ----------------------------------------------------------------------------------- demo


def stop_leftovers(data: Path) -> None:
    """Peers the demo started and failed to stop: SIGTERM, then SIGKILL, each by its pid."""
    pids = []
    for pid_file in data.glob("*/peer.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            # Only a peer of this data directory: the pid may have been reused since.
            if str(pid_file.parent) in Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
    deadline = time.monotonic() + 20
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if Path(f"/proc/{p}").exists()]
        time.sleep(0.2)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if pids:
        print(f"(killed {len(pids)} demo peer(s) that did not stop)")


def bench_demo(root: Path, timeout: float) -> None:
    data = root / "demo-data"
    began = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "examples/run_demo.py", "--data", str(data)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        print(f"the demo did not finish within {timeout:.0f} s")
        return
    finally:
        stop_leftovers(data)
    wall = time.monotonic() - began
    output = proc.stdout + proc.stderr
    (root / "demo-output.txt").write_text(output)
    lines = output.strip().splitlines()
    print("\n".join("  | " + line for line in lines[-(7 if proc.returncode == 0 else 40) :]))
    # The demo's own figure: from its first peer's start to its verdict, before it stops them.
    own = [line.split(":")[1].strip() for line in lines if line.startswith("demo wall time:")]
    print(
        table(
            ["demo", "wall s (whole run)", "to its verdict", "exit status"],
            [
                [
                    "python examples/run_demo.py (3 peers, 18 trials)",
                    f"{wall:.1f}",
                    own[-1] if own else "-",
                    proc.returncode,
                ]
            ],
        )
    )


# ----------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials and repetitions")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--trials", type=int, default=None, help="slot trials (default 30)")
    parser.add_argument("--reps", type=int, default=None, help="replication repetitions (10)")
    parser.add_argument("--keep", action="store_true", help="keep the peers' data and logs")
    args = parser.parse_args()
    trials = args.trials or (12 if args.quick else 30)
    reps = args.reps or (4 if args.quick else 10)
    idle_window = 10.0 if args.quick else 30.0
    wire_trials = 10 if args.quick else 30

    root = Path(tempfile.mkdtemp(prefix="bench_peer-"))
    started = time.monotonic()
    print(f"bench_peer: real peers on 127.0.0.1, data in {root}; {load()}")
    idle: list[CpuResult] = []
    try:
        section("slot overhead: 1 peer, 1 slot, default timings")
        slot, cpu = bench_slot(root, trials, ("sh", "py"), idle_window)
        idle.append(cpu)
        print_slot(slot)

        spread: list[SpreadResult] = []
        for n, timing in ((3, ""), (10, ""), (10, "push_fanout=9")):
            what = f"--timing {timing}" if timing else "default timings"
            section(f"replication delay: {n} peers joined by --join, {what}")
            results, cpu_n, joined = bench_spread(
                root, n, reps, idle_window if n == 3 else None, timing, adds=not timing
            )
            print(f"(all {n} peers counted each other live after {joined:.1f} s)")
            if cpu_n is not None:
                idle.append(cpu_n)
            print_spread(results)
            spread.extend(results)

        section(f"wire bytes: {wire_trials} trials on 3 peers, default timings")
        wire = bench_wire(root, wire_trials, idle_window)
        idle.append(wire.cpu)
        print_wire(wire)

        section("idle peers")
        print_idle(idle)

        if not args.skip_demo:
            section("demo: python examples/run_demo.py")
            bench_demo(root, 420.0)
    finally:
        if args.keep:
            print(f"data and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\nbench_peer done in {time.monotonic() - started:.0f} s; {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
