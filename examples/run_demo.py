"""`make demo`: three real peers on 127.0.0.1 tune a real training together, then stop.

Each peer is its own process with its own port and data directory (under ./demo-data), exactly
as on three machines; the second and third join the first with --join. The experiment is
submitted on one peer only, every peer runs trials of it, and at the end every peer's replica is
asked for the same answer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metaopt(*args: str, check: bool = True, capture: bool = True) -> str:
    proc = subprocess.run(
        [PY, "-m", "metaopt", *args], capture_output=capture, text=True, cwd=ROOT, timeout=600
    )
    if check and proc.returncode != 0:
        raise SystemExit(f"metaopt {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout if capture else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peers", type=int, default=3)
    parser.add_argument("--trials", type=int, default=18)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--data", default=str(ROOT / "demo-data"))
    args = parser.parse_args()

    data = Path(args.data)
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    peers: list[tuple[subprocess.Popen[bytes], Path, str]] = []
    started = time.monotonic()
    timing = "anti_entropy=1,gossip=1,schedule=0.2,monitor=1,stop_grace=3"
    try:
        for i in range(args.peers):
            port = free_port()
            ddir = data / f"peer{i + 1}"
            cmd = [PY, "-m", "metaopt", "peer", "start", "--host", "127.0.0.1"]
            cmd += ["--port", str(port), "--data-dir", str(ddir), "--name", f"peer{i + 1}"]
            cmd += ["--no-mdns", "--slots", "1", "--timing", timing]
            env = dict(os.environ)
            if peers:
                first_dir = peers[0][1]
                env["METAOPT_KEY"] = (first_dir / "cluster.key").read_text().strip()
                cmd += ["--join", peers[0][2]]
            log = (data / f"peer{i + 1}.log").open("wb")
            proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=ROOT)
            addr = f"127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while not (ddir / "peer.address").exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"peer{i + 1} did not start; see {log.name}")
                time.sleep(0.1)
            peers.append((proc, ddir, addr))
            print(f"peer{i + 1}: pid {proc.pid}, {addr}, data in {ddir}")

        print(f"\nsubmitting examples/digits/train.py on peer1 ({args.trials} trials)\n")
        metaopt(
            "submit",
            "--data-dir",
            str(peers[0][1]),
            "--name",
            "digits",
            "--max-trials",
            str(args.trials),
            "--wait",
            "examples/digits/train.py",
            "--lr~loguniform(1e-4, 1)",
            "--alpha~loguniform(1e-6, 1e-1)",
            "--penalty~choices(['l2', 'l1', 'elasticnet'])",
            "--epochs",
            str(args.epochs),
            capture=False,
        )
        # Let the last events reach every replica, then ask each peer for its view.
        time.sleep(3)
        views = [
            json.loads(metaopt("status", "digits", "--json", "--data-dir", str(d)))
            for _, d, _ in peers
        ]
        names = {}
        for _, d, _ in peers:
            status = json.loads(metaopt("peer", "status", "--json", "--data-dir", str(d)))
            names[status["node_id"]] = status["name"]
        info = views[0]
        where: dict[str, int] = {}
        for t in info["trial_list"]:
            runner = names.get(t["runner"] or "", (t["runner"] or "?")[:8])
            where[runner] = where.get(runner, 0) + 1
        print("\ntrials per peer:", ", ".join(f"{k}: {v}" for k, v in sorted(where.items())))
        best = info["best"][0] if info["best"] else None
        if best:
            print(
                f"best loss {best['value']:.4f} (accuracy {best['metrics'].get('accuracy', 0):.3f})"
                f" on {names.get(best['runner'] or '', '?')} with {json.dumps(best['params'])}"
            )
        same = all(
            sorted((t["id"], t["state"]) for t in v["trial_list"])
            == sorted((t["id"], t["state"]) for t in info["trial_list"])
            and [b["id"] for b in v["best"]] == [b["id"] for b in info["best"]]
            for v in views
        )
        print(
            f"all {len(peers)} peers agree on every trial and the best: {'yes' if same else 'NO'}"
        )
        print(f"demo wall time: {time.monotonic() - started:.1f} s")
        return 0 if same and best else 1
    finally:
        # Graceful stop of every peer we started (running trials become "interrupted"), by pid.
        for proc, _, _ in peers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _, _ in peers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        print("peers stopped")


if __name__ == "__main__":
    sys.exit(main())
