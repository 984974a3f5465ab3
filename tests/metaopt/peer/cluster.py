"""A harness for real peers on 127.0.0.1: real processes, real HTTP, real LevelDB.

Every process started here is stopped by its pid in ``close()``; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAST = (
    "anti_entropy=0.3,gossip=0.5,schedule=0.1,monitor=0.3,heartbeat=0.5,"
    "lost_after=3,peer_timeout=2,stop_grace=1,request_timeout=3"
)
ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("METAOPT_DATA_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "metaopt", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
        env=env,
    )


@dataclass
class Peer:
    name: str
    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        if args[:1] == ("submit",):  # before any `--`, after which words are the program's
            return run_cli("submit", "--data-dir", str(self.data_dir), *args[1:], timeout=timeout)
        return run_cli(*args, "--data-dir", str(self.data_dir), timeout=timeout)

    def json(self, *args: str) -> Any:
        out = self.cli(*args, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


class Cluster:
    """Peers sharing one key, the later ones joining the first."""

    def __init__(self, root: Path, timing: str = FAST) -> None:
        self.root = root
        self.timing = timing
        self.peers: list[Peer] = []
        self.key: str | None = None

    def start_peer(
        self,
        name: str,
        *,
        join: bool = True,
        slots: int = 1,
        mdns: bool = False,
        key: str | None = None,
        port: int | None = None,
        data_dir: Path | None = None,
        wait: bool = True,
    ) -> Peer:
        peer = Peer(name, data_dir or self.root / name, port or free_port())
        peer.data_dir.mkdir(parents=True, exist_ok=True)
        self._launch(peer, join=join, slots=slots, mdns=mdns, key=key, wait=wait)
        self.peers.append(peer)
        return peer

    def _launch(
        self, peer: Peer, *, join: bool, slots: int, mdns: bool, key: str | None, wait: bool
    ) -> None:
        cmd = [sys.executable, "-m", "metaopt", "peer", "start", "--host", "127.0.0.1"]
        cmd += ["--port", str(peer.port), "--data-dir", str(peer.data_dir), "--name", peer.name]
        cmd += ["--slots", str(slots), "--timing", self.timing, "--log-level", "DEBUG"]
        if not mdns:
            cmd.append("--no-mdns")
        env = dict(os.environ)
        use_key = self.key if key is None else key
        if use_key:
            env["METAOPT_KEY"] = use_key
        if join and self.peers:
            cmd += ["--join", self.peers[0].addr]
        peer.extra = cmd
        peer.log_path = self.root / f"{peer.name}.log"
        address = peer.data_dir / "peer.address"
        if address.exists():
            address.unlink()
        with peer.log_path.open("ab") as log:
            peer.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=ROOT)
        if not wait:
            return
        wait_for(lambda: address.exists() or peer.proc.poll() is not None, 30, peer.log)
        assert peer.proc.poll() is None, f"{peer.name} died at start:\n{peer.log()}"
        if self.key is None:
            self.key = (peer.data_dir / "cluster.key").read_text().strip()

    def restart(self, peer: Peer) -> None:
        assert peer.proc is not None and peer.proc.poll() is not None
        self._launch(peer, join=True, slots=1, mdns=False, key=None, wait=True)

    def kill(self, peer: Peer, sig: int = signal.SIGKILL) -> None:
        assert peer.proc is not None
        peer.proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            peer.proc.wait(timeout=30)

    def close(self) -> None:
        for peer in self.peers:
            proc = peer.proc
            if proc is None or proc.poll() is not None:
                continue
            with_suppress(lambda p=proc: p.send_signal(signal.SIGCONT))
            proc.send_signal(signal.SIGTERM)
        for peer in self.peers:
            proc = peer.proc
            if proc is None:
                continue
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        # Trials run in their own process groups; make sure none outlives its test.
        for trial_pidfile in self.root.glob("**/trials/*/pid"):
            with_suppress(lambda f=trial_pidfile: os.killpg(int(f.read_text()), signal.SIGKILL))


def with_suppress(fn: Callable[[], object]) -> None:
    with contextlib.suppress(OSError, ValueError):
        fn()


def wait_for(
    cond: Callable[[], bool], timeout: float, explain: Callable[[], str] | None = None
) -> None:
    """Poll ``cond`` until true; fail with ``explain()`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s" + (f":\n{explain()}" if explain else ""))
