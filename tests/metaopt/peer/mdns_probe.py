"""A tiny peer for the network-namespace test: announce, browse, print what is found as JSON.

Run as ``python tests/metaopt/peer/mdns_probe.py --host ADDR --port N --fingerprint FP`` inside a
namespace. Prints ``{"event": "ready"}`` once announced, then one ``{"event": "found", ...}`` line
per peer found. Exits when stdin closes or after ``--seconds``, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from metaopt.peer._discovery import Discovery, DiscoveryConfig, PeerInfo


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    config = DiscoveryConfig(
        host=args.host,
        port=args.port,
        node_id=args.node_id or os.urandom(16).hex(),
        cluster_fingerprint=args.fingerprint,
        protocol_version=1,
        name=args.name,
    )

    def found(peer: PeerInfo) -> None:
        emit("found", **dataclasses.asdict(peer))

    def foreign(peer: PeerInfo) -> None:
        emit("foreign", **dataclasses.asdict(peer))

    discovery = Discovery(config, on_found=found, on_foreign=foreign)
    await discovery.start()
    devices = sorted({s.getsockopt(1, 25, 16).rstrip(b"\0").decode() for s in discovery.sockets})
    emit("ready", node_id=config.node_id, devices=devices)
    stdin_closed = asyncio.Event()

    def wait_stdin() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stdin_closed.set)

    threading.Thread(target=wait_stdin, daemon=True).start()
    try:
        await asyncio.wait_for(stdin_closed.wait(), timeout=args.seconds)
    except TimeoutError:
        pass
    finally:
        await discovery.stop()
    emit("stopped")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fingerprint", required=True)
    parser.add_argument("--name", default="probe")
    parser.add_argument("--node-id", default="")
    parser.add_argument("--seconds", type=float, default=30.0)
    asyncio.run(main(parser.parse_args()))
