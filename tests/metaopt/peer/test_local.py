"""The CLI's way to its own peer (LocalPeer): through the data directory, to that peer only."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from crdt import ClusterKey, FrameCodec
from metaopt._errors import MetaoptError
from metaopt.peer._config import PeerConfig
from metaopt.peer._identity import DataDir
from metaopt.peer._local import LocalPeer
from metaopt.peer._node import Node
from metaopt.peer._transport import PATH
from metaopt.peer._wire import Reply

pytestmark = pytest.mark.integration


_HOLD = """
import sys, time
from crdt import LevelDBStore
store = LevelDBStore(sys.argv[1])
print("held", flush=True)
time.sleep(60)
"""


def _a_metaopt_process(holding: Path | None = None) -> subprocess.Popen[bytes]:
    """A live process whose command line names metaopt, as a running peer's does (holding
    a replica, if given, as a running peer holds its own).

    Just started, its /proc cmdline reads empty for a moment (195 times in 200 read at once):
    a check then took it for no metaopt process, one test run in three.
    """
    if holding is None:
        argv = [sys.executable, "-c", "import time; time.sleep(60)", "metaopt"]
        process = subprocess.Popen(argv)
    else:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
        argv = [sys.executable, "-c", _HOLD, str(holding), "metaopt"]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
        assert process.stdout is not None and process.stdout.readline() == b"held\n"
        process.stdout.close()
    cmdline = Path(f"/proc/{process.pid}/cmdline")
    for _ in range(500):
        if b"metaopt" in cmdline.read_bytes():
            return process
        time.sleep(0.01)
    process.kill()
    raise AssertionError("the process never showed its command line")


def _peer_dir(root: Path) -> DataDir:
    """A peer's data directory: its node id and a cluster key."""
    dirs = DataDir(root)
    dirs.ensure()
    dirs.key_file.write_text(ClusterKey.generate(os.urandom(32)).to_text())
    dirs.node_id()
    return dirs


async def _said_of_a_live_peer(dirs: DataDir, op: str, *, timeout: float) -> tuple[str, int]:
    """What a call says of a peer whose process lives (its pid file names a live metaopt
    process) while its address answers as the test serves it; and that pid."""
    alive = _a_metaopt_process()
    try:
        dirs.pid_file.write_text(f"{alive.pid}\n")
        with pytest.raises(MetaoptError) as caught:
            await LocalPeer(dirs.root, timeout=timeout).acall(op)
        return str(caught.value), alive.pid
    finally:
        alive.kill()
        alive.wait()


async def _serve(
    dirs: DataDir, handler: Callable[[web.Request], Awaitable[web.Response]]
) -> web.AppRunner:
    """A stand-in peer on loopback answering with handler, at the data directory's address."""
    app = web.Application()
    app.router.add_post(PATH, handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    dirs.address_file.write_text(f"127.0.0.1:{port}\n")
    return runner


@pytest.mark.asyncio
@pytest.mark.parametrize("cluster", ["the same", "another"])
async def test_a_stale_peer_address_does_not_reach_the_peer_that_took_the_port(
    tmp_path: Path, cluster: str
) -> None:
    # A peer killed with -9 leaves peer.address behind; another (of the same cluster) started
    # on that port later, and `metaopt peer stop` on the dead one's data directory stopped it;
    # one of another cluster was told to use "the cluster's key".
    alive = Node(PeerConfig(data_dir=tmp_path / "alive", port=0, mdns=False))
    dead = Node(PeerConfig(data_dir=tmp_path / "dead", port=0, mdns=False, key_text=None))
    try:
        await alive.start()
        if cluster == "the same":
            dead.dirs.key_file.write_text(alive.key.to_text())
        dead.dirs.address_file.write_text(alive.addr)  # what the killed peer left behind
        assert (await LocalPeer(tmp_path / "alive").acall("api.status"))["pid"]
        stale = r"no peer is running on .*dead \(its peer.address is left from one that stopped"
        with pytest.raises(MetaoptError, match=stale) as caught:
            await LocalPeer(tmp_path / "dead").acall("api.shutdown")
        assert "\n" not in str(caught.value) and "key" not in str(caught.value).split(";")[-1]
        assert not alive._stopping.is_set()
        # While a metaopt process the pid file names runs (holding the replica, as a peer
        # does), it says which peer answered.
        dead.store.close()
        alive_pid = _a_metaopt_process(holding=dead.dirs.replica)
        try:
            dead.dirs.pid_file.write_text(f"{alive_pid.pid}\n")
            with pytest.raises(MetaoptError, match=r"the peer at .* is not the peer of .*dead"):
                await LocalPeer(tmp_path / "dead").acall("api.shutdown")
        finally:
            alive_pid.kill()
            alive_pid.wait()
    finally:
        await alive.stop()
        dead.store.close()


@pytest.mark.asyncio
async def test_a_peer_of_another_release_is_named_with_how_to_stop_it(tmp_path: Path) -> None:
    # Upgraded while its peer ran, `metaopt peer stop` said only "run the same metaopt
    # release on every peer", and could not stop it.
    dirs = DataDir(tmp_path)
    dirs.ensure()
    key = ClusterKey.generate(os.urandom(32))
    dirs.key_file.write_text(key.to_text())
    dirs.node_id()

    async def refuse(request: web.Request) -> web.Response:
        await request.read()
        reply = Reply(False, error="refused, metaopt protocol version 4 against 3", protocol=3)
        sealed = FrameCodec([key]).seal(reply.encode(), now=time.time(), nonce=os.urandom(16))
        return web.Response(body=sealed)

    runner = await _serve(dirs, refuse)
    # A live metaopt process is named with how to stop it; a pid file naming none is not (an
    # older peer does not check whom a request is for: the one answering may be another's).
    alive = _a_metaopt_process()
    try:
        dirs.pid_file.write_text(f"{alive.pid}\n")
        with pytest.raises(MetaoptError, match=rf"another metaopt release.*kill {alive.pid}"):
            await LocalPeer(tmp_path).acall("api.shutdown")
        alive.kill()
        alive.wait()
        with pytest.raises(MetaoptError, match=r"no peer of .* is running") as caught:
            await LocalPeer(tmp_path).acall("api.shutdown")
        assert "kill" not in str(caught.value)
    finally:
        alive.kill()
        alive.wait()
        await runner.cleanup()


async def _never_answer(request: web.Request) -> web.Response:
    await request.read()
    await asyncio.sleep(30)
    return web.Response()


async def _unavailable(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=503)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("handler", "timeout", "why"),
    [(_never_answer, 0.5, "TimeoutError"), (_unavailable, 5.0, "answered HTTP 503")],
    ids=["paused", "http-error"],
)
async def test_a_peer_that_runs_but_does_not_answer_is_not_sent_to_peer_start(
    tmp_path: Path,
    handler: Callable[[web.Request], Awaitable[web.Response]],
    timeout: float,
    why: str,
) -> None:
    # A peer paused with SIGSTOP: `peer stop` said "is it running? `metaopt peer start`
    # starts it", and `peer start` refused, since it runs. (An HTTP error was said, for a
    # while, to be a connection closed at once.)
    dirs = _peer_dir(tmp_path)
    runner = await _serve(dirs, handler)
    try:
        said, pid = await _said_of_a_live_peer(dirs, "api.shutdown", timeout=timeout)
    finally:
        await runner.cleanup()
    assert f"(pid {pid}) runs but does not answer" in said and why in said
    assert f"`kill {pid}`" in said and "peer start" not in said and "\n" not in said


@pytest.mark.asyncio
async def test_a_peer_that_closes_the_connection_at_once_is_not_sent_to_kill(
    tmp_path: Path,
) -> None:
    # A peer holding the 4096 connections it takes closes new ones at once: the CLI said it was
    # "paused, hung or overloaded" and to stop it with kill.
    dirs = _peer_dir(tmp_path)

    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    dirs.address_file.write_text(f"127.0.0.1:{port}\n")
    try:
        said, pid = await _said_of_a_live_peer(dirs, "api.status", timeout=5)
    finally:
        server.close()
        await server.wait_closed()
    assert f"(pid {pid}) runs but closed the connection at 127.0.0.1:{port}" in said
    assert "holding all the connections it takes" in said
    assert "kill" not in said and "\n" not in said
