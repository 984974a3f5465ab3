"""Real peers on 127.0.0.1 for the benchmarks: real processes, real HTTP, real LevelDB.

Every peer is ``python -m metaopt peer start`` in its own process, port and data directory, as
on separate machines. Every process started here is stopped by its pid in ``close()``, every
wait is bounded, and nothing binds anything but 127.0.0.1 (mDNS is off: peers meet by --join).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crdt import ClusterKey, FrameCodec
from metaopt.peer._identity import DataDir
from metaopt.peer._orphans import kill_orphans
from metaopt.peer._transport import Client

__all__ = [
    "ApiClient",
    "LoopbackCluster",
    "PeerProcess",
    "ProcSample",
    "free_port",
    "proc_sample",
    "run_cli",
    "wait_for",
]

ROOT = Path(__file__).resolve().parents[1]
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("METAOPT_DATA_DIR", None)
    return env


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``metaopt ARGS`` and return what it did (never raises on a non-zero exit)."""
    return subprocess.run(
        [sys.executable, "-m", "metaopt", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
        env=_env(),
    )


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``cond`` every 50 ms; return the seconds it took, or raise after ``timeout``."""
    began = time.monotonic()
    deadline = began + timeout
    while time.monotonic() < deadline:
        if cond():
            return time.monotonic() - began
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class PeerProcess:
    """One peer process and where it keeps things."""

    name: str
    data_dir: Path
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def up(self) -> bool:
        return (self.data_dir / "peer.address").exists()

    def node_id(self) -> bytes:
        """The peer's node id (its data directory's), which its API requests must name."""
        return DataDir(self.data_dir).node_id()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cli(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """``metaopt ARGS --data-dir THIS`` (for submit, the option goes before the template)."""
        if args[:1] == ("submit",):
            return run_cli("submit", "--data-dir", str(self.data_dir), *args[1:], cwd=cwd)
        return run_cli(*args, "--data-dir", str(self.data_dir), cwd=cwd)

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class LoopbackCluster:
    """Peers sharing one cluster key, each later one joining the first by --join."""

    def __init__(self, root: Path, *, timing: str = "", log_level: str = "INFO") -> None:
        self.root = root
        self.timing = timing
        self.log_level = log_level
        self.peers: list[PeerProcess] = []
        self.key: str | None = None

    def __enter__(self) -> LoopbackCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, count: int, *, slots: int = 1, timeout: float = 90) -> list[PeerProcess]:
        """Start ``count`` peers: the first alone (it makes the key), the rest at once."""
        started: list[PeerProcess] = []
        if not self.peers:
            started.append(self._launch(slots))
            self._wait_up(started, timeout)
            self.key = (started[0].data_dir / "cluster.key").read_text().strip()
        rest = [self._launch(slots) for _ in range(count - len(started))]
        self._wait_up(rest, timeout)
        return started + rest

    def _launch(self, slots: int) -> PeerProcess:
        name = f"peer{len(self.peers) + 1}"
        peer = PeerProcess(name, self.root / name, free_port(), self.root / f"{name}.log")
        peer.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "metaopt", "peer", "start", "--host", "127.0.0.1"]
        cmd += ["--port", str(peer.port), "--data-dir", str(peer.data_dir), "--name", name]
        cmd += ["--slots", str(slots), "--gpus", "none", "--no-mdns"]
        cmd += ["--log-level", self.log_level]
        if self.timing:
            cmd += ["--timing", self.timing]
        env = _env()
        if self.key is not None:
            env["METAOPT_KEY"] = self.key
        if self.peers:
            cmd += ["--join", self.peers[0].addr]
        with peer.log_path.open("ab") as log:
            peer.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=ROOT)
        self.peers.append(peer)
        return peer

    def _wait_up(self, peers: Sequence[PeerProcess], timeout: float) -> None:
        def ready() -> bool:
            for peer in peers:
                if not peer.alive():
                    raise RuntimeError(f"{peer.name} died at start:\n{peer.log_tail()}")
            return all(p.up() for p in peers)

        wait_for(ready, timeout, "peers to start")

    def close(self) -> None:
        """SIGTERM every peer by pid (graceful), SIGKILL stragglers, then any trial left."""
        for peer in self.peers:
            if peer.alive():
                assert peer.proc is not None
                peer.proc.send_signal(signal.SIGTERM)
        for peer in self.peers:
            if peer.proc is None:
                continue
            try:
                peer.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                peer.proc.kill()
                peer.proc.wait(timeout=10)
        # Trials run in their own process groups; none may outlive the benchmark. Found by
        # their environment, as a restarted peer finds its orphans: a finished trial's pid
        # file is kept, and killing the group it names killed whatever reused that pid.
        for peer in self.peers:
            kill_orphans(DataDir(peer.data_dir).root)


class ApiClient:
    """The peers' local API over loopback, one kept-alive client each, counting its own bytes.

    The peers count every frame they receive and send (``wire`` in their status), this client's
    included; ``sent`` and ``received`` let a benchmark subtract its own share.
    """

    def __init__(self, peers: Sequence[PeerProcess], key_text: str, timeout: float = 10) -> None:
        codec = FrameCodec([ClusterKey.from_text(key_text)])
        # An empty address: the peers do not enter this client in their peer tables.
        self._clients = {p.addr: Client(codec, os.urandom(16), "", timeout=timeout) for p in peers}

    async def call(self, peer: PeerProcess, op: str, body: Any = None) -> Any:
        return await self._clients[peer.addr].call(peer.addr, op, body, to=peer.node_id())

    @property
    def sent(self) -> int:
        return sum(c.bytes_out for c in self._clients.values())

    @property
    def received(self) -> int:
        return sum(c.bytes_in for c in self._clients.values())

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._clients.values()))


@dataclass(frozen=True)
class ProcSample:
    """CPU seconds (user + system) and resident memory of one process at one moment."""

    at: float
    cpu: float
    rss_kib: int


def proc_sample(pid: int) -> ProcSample:
    """Read /proc/PID/stat and /proc/PID/status (Linux)."""
    at = time.monotonic()
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses; the fields after its last ")" do not.
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return ProcSample(at, cpu, rss)
