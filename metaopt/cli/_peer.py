"""`metaopt peer start|stop|status|key`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import ipaddress
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metaopt._errors import MetaoptError
from metaopt.cli._format import command, json_text, printable, table
from metaopt.peer._config import PeerConfig, Timing
from metaopt.peer._gossip import valid_addr
from metaopt.peer._identity import DataDir, pid_gone
from metaopt.peer._local import LocalPeer, resolve_data_dir
from metaopt.peer._storage import disk_advice

if TYPE_CHECKING:
    from metaopt.peer._node import Node

__all__ = ["add_peer_commands"]


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"METAOPT_{name}", default)


def add_peer_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    peer = sub.add_parser("peer", help="run and inspect this machine's peer")
    psub = peer.add_subparsers(dest="peer_command", required=True)

    start = psub.add_parser("start", help="start this machine's peer (foreground)")
    start.add_argument("--host", default=_env("HOST", "127.0.0.1"), help="address to bind")
    # Numbers are checked in _config, not by argparse: a bad METAOPT_PORT in the environment
    # must be one line for `peer start`, not a traceback for every command.
    start.add_argument("--port", default=_env("PORT", "7787"))
    start.add_argument("--data-dir", default=None, help="replica and node id (METAOPT_DATA_DIR)")
    # --join, --key and --key-file read the environment in _config, so that one given on the
    # command line replaces the environment's rather than mixing with it.
    start.add_argument(
        "--join",
        action="append",
        default=None,
        metavar="HOST:PORT",
        help="a peer to contact (repeatable, or comma-separated); one is enough (METAOPT_JOIN)",
    )
    start.add_argument("--gpus", default=_env("GPUS", "auto"), help="auto, none, or 0,1,...")
    start.add_argument("--slots", default=_env("SLOTS", "1"))
    start.add_argument("--key", default=None, help="the cluster key (METAOPT_KEY)")
    start.add_argument("--key-file", default=None, help="a file holding the key (METAOPT_KEY_FILE)")
    start.add_argument(
        "--name",
        default=_env("NAME", ""),
        help="this peer's name in its `peer status` and mDNS announcement (default: host name)",
    )
    start.add_argument("--no-mdns", action="store_true", help="do not use mDNS discovery")
    start.add_argument("--detach", action="store_true", help="run in the background")
    start.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    start.add_argument("--timing", default=_env("TIMING", ""), help=argparse.SUPPRESS)
    start.set_defaults(func=_start)

    stop = psub.add_parser("stop", help="stop this machine's peer gracefully")
    stop.add_argument("--data-dir", default=None)
    stop.add_argument("--timeout", type=float, default=60.0)
    stop.set_defaults(func=_stop)

    status = psub.add_parser("status", help="this peer: id, address, peers, records, slots")
    status.add_argument("--data-dir", default=None)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)

    key = psub.add_parser("key", help="print the command that joins another machine")
    key.add_argument("--data-dir", default=None)
    key.set_defaults(func=_key)


# Timings where 0 means "none" rather than a period that would spin a loop.
_MAY_BE_ZERO = frozenset(
    {"push_fanout", "report_interval", "report_age_fraction", "settle", "leave_wait"}
)


def _parse_timing(text: str) -> Timing:
    timing = Timing()
    if not text:
        return timing
    fields = {f.name: f.type for f in dataclasses.fields(Timing)}
    changes: dict[str, Any] = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in fields:
            raise MetaoptError(f"unknown timing {name!r}; known: {', '.join(fields)}")
        try:
            changes[name] = int(value) if name == "push_fanout" else float(value)
        except ValueError:
            raise MetaoptError(f"timing {name} needs a number, got {value!r}") from None
        if name in _MAY_BE_ZERO:  # no eager push, no thinning, no settling, no waiting
            if not changes[name] >= 0:
                raise MetaoptError(f"timing {name} must be 0 or more, got {value.strip()!r}")
        elif not changes[name] > 0:  # (nan too) a period of 0 spun a loop, a negative one raised
            raise MetaoptError(f"timing {name} must be more than 0, got {value.strip()!r}")
        if not math.isfinite(changes[name]):  # inf: a loop that never runs, a wait never ends
            raise MetaoptError(f"timing {name} must be a finite number, got {value.strip()!r}")
    return dataclasses.replace(timing, **changes)


def _whole(what: str, text: object, low: int, high: int) -> int:
    digits = str(text).strip()
    # Plain ASCII digits only: int() also takes "7_787", "+7787" and other scripts' digits,
    # which no other tool reading the same setting would take as that number.
    if not re.fullmatch(r"-?[0-9]+", digits):
        raise MetaoptError(f"{what} needs a whole number, got {text!r}")
    value = int(digits)
    if not low <= value <= high:
        raise MetaoptError(f"{what} must be between {low} and {high}, got {value}")
    return value


_KEY_FILE_MAX = 4096  # a key is under 100 bytes


def _read_key_file(key_file: str, given: str) -> str:
    """The key the file ``given`` (--key-file or METAOPT_KEY_FILE) names holds."""
    try:
        with open(key_file, "rb") as f:
            raw = f.read(_KEY_FILE_MAX + 1)  # (bounded: /dev/zero was read until memory ran out)
    except OSError as exc:
        raise MetaoptError(f"cannot read {given} {key_file}: {exc.strerror}") from None
    if len(raw) > _KEY_FILE_MAX or b"\0" in raw:
        raise MetaoptError(
            f"{given} {key_file} is not a cluster key file; put the key that `metaopt peer"
            " key` prints on a member in it"
        )
    try:
        # (utf-8-sig: a BOM, as Notepad saves a file, was taken for part of the key)
        text = raw.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        # Random bytes, or a binary file named by mistake: a traceback said only "codec".
        raise MetaoptError(
            f"{given} {key_file} is not text, so it holds no cluster key; put the key that"
            " `metaopt peer key` prints on a member in it"
        ) from None
    if not text:
        # It was taken for no key at all: a new cluster, or "--join needs the cluster's key".
        raise MetaoptError(
            f"{given} {key_file} is empty; put the key that `metaopt peer key` prints on a"
            " member in it"
        )
    return text


def _config(args: argparse.Namespace) -> PeerConfig:
    # The command line first, then the environment: METAOPT_KEY_FILE left in a shell must not
    # override a --key typed now (the peer joined the other cluster).
    key_text, key_file = args.key, args.key_file
    if key_text is not None and key_file is not None:
        raise MetaoptError("give --key or --key-file, not both")
    given = "--key-file"
    for option, value in (("--key", key_text), ("--key-file", key_file)):
        if value is not None and not value.strip():
            # (--key fell back to the data directory's key, or on a new one "a cluster key
            # starts with 'mo1-'"; an empty --key-file, an unset "$KEYFILE", made a new
            # cluster instead of joining one.)
            raise MetaoptError(
                f"{option} is empty; give the key (or its file) that `metaopt peer key` prints"
                f" on a member, or leave out {option}"
            )
    if key_text is None and key_file is None:
        # An empty variable (unset in a unit file) is none: METAOPT_KEY= hid METAOPT_KEY_FILE.
        key_text, key_file = (_env("KEY") or "").strip() or None, _env("KEY_FILE") or None
        given = "METAOPT_KEY_FILE"
    if key_text is None and key_file:
        key_text = _read_key_file(key_file, given)

    # Comma-separated in METAOPT_JOIN and in each --join: "a:1, b:2" is two seeds, spaces and
    # all (`--join a:1,b:2`, as the README reads, was refused as not HOST:PORT). An empty
    # --join stays refused; the variable may end in a comma.
    env_join = _env("JOIN") or ""
    typed = [("METAOPT_JOIN", env_join, j.strip()) for j in env_join.split(",") if j.strip()]
    if args.join is not None:
        typed = [("--join", j, s.strip()) for j in args.join for s in j.split(",")]
    port = _whole("--port (or METAOPT_PORT)", args.port, 0, 65535)
    slots = _whole("--slots (or METAOPT_SLOTS)", args.slots, 1, 1024)
    for given, whole, seed in typed:
        if not seed:
            raise MetaoptError(
                f"{given} {whole!r}: an empty seed (a stray comma, or an unset variable); give"
                " HOST:PORT of another peer, e.g. 192.168.1.20:7787"
            )
        if not valid_addr(seed, 262):
            raise MetaoptError(
                f"{given} {seed!r}: expected HOST:PORT of another peer, e.g. 192.168.1.20:7787"
            )
    join = [seed for _, _, seed in typed]
    return PeerConfig(
        host=args.host,
        port=port,
        data_dir=resolve_data_dir(args.data_dir),
        join=tuple(join),
        gpus=args.gpus,
        slots=slots,
        key_text=key_text,
        name=args.name,
        mdns=not args.no_mdns,
        timing=_parse_timing(args.timing),
    )


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL")


def _start(args: argparse.Namespace) -> int:
    level = str(args.log_level).upper()
    if level not in _LOG_LEVELS:
        # It was INFO, without a word.
        raise MetaoptError(
            f"--log-level (or METAOPT_LOG_LEVEL) {args.log_level!r}: choose one of"
            f" {', '.join(_LOG_LEVELS)}"
        )
    config = _config(args)
    if args.detach:
        return _detach(config, level, args.timing, args.data_dir)
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(_printable_lines)
    from metaopt.peer._node import Node

    # Made before the event loop runs: it may wait up to 2 minutes for another process to let
    # go of the replica, and under asyncio.run a Ctrl-C only cancels the main task, which
    # never ran while it waited (the peer started once the lock came free, Ctrl-C or not).
    node = Node(config)
    return asyncio.run(_run(config, args.data_dir, node))


def _printable_lines(record: logging.LogRecord) -> bool:
    """Escape what a log line cannot show: a name from another peer's record with a newline or
    a terminal escape in it forged lines in every peer's log."""
    message = record.getMessage()
    if not message.isprintable():
        record.msg = printable(message)
        record.args = ()
    return True


async def _run(config: PeerConfig, data_dir: str | None = None, node: Node | None = None) -> int:
    """Run the peer (``node``, else a new one) until it is stopped; ``data_dir`` is the
    --data-dir the user gave, for the commands it prints."""
    if node is None:
        from metaopt.peer._node import Node

        node = Node(config)
    await node.start()
    if node.new_cluster:
        print(
            "This is a new cluster. To add another machine, run there:\n"
            f"  {join_command(node.key.to_text(), node.addr)}\n"
            f"(`{command('peer', 'key', data_dir=data_dir)}` prints this again.)",
            flush=True,
        )
    loop = asyncio.get_running_loop()
    # SIGHUP too: a closed terminal or a dropped ssh session must stop the peer the graceful
    # way (its trials recorded as interrupted and stopped), not kill it and orphan them.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, node.request_stop)
    try:
        await node.run_until_stopped()
    finally:
        await node.stop()
        # So a clean stop and a kill -9 can be told apart in the peer's log.
        logging.getLogger("metaopt.peer").info("peer stopped")
    if node.failed:  # (a supervisor restarting on failure must see one)
        raise MetaoptError(node.failed)
    return 0


def _detach(config: PeerConfig, log_level: str, timing: str, data_dir: str | None = None) -> int:
    dirs = DataDir(config.data_dir)
    dirs.ensure()
    # -P: not the current folder first on sys.path, as -m puts it; a project's random.py
    # there was imported by the peer in its place, and the detached start failed at once.
    argv = [sys.executable, "-P", "-m", "metaopt", "peer", "start"]
    argv += ["--host", config.host, "--port", str(config.port), "--data-dir", str(dirs.root)]
    for seed in config.join:
        argv += ["--join", seed]
    argv += ["--gpus", config.gpus, "--slots", str(config.slots)]
    if config.name:
        argv += ["--name", config.name]
    if not config.mdns:
        argv.append("--no-mdns")
    argv += ["--log-level", log_level] + (["--timing", timing] if timing else [])
    env = dict(os.environ)
    if config.key_text:
        env["METAOPT_KEY"] = config.key_text  # not on the command line, where ps shows it
    running = dirs.running_pid()
    if running is not None:
        # (At once; a start at the same moment on this directory is told apart below.)
        raise _already_running(dirs, running, data_dir)
    log_path = dirs.root / "peer.log"
    # Owner-only, as cluster.key: a new cluster's first start writes its join command, key
    # and all, here.
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise MetaoptError(f"cannot write {log_path}: {exc.strerror}") from None
    os.chmod(log_path, 0o600)
    with os.fdopen(fd, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            env=env,
        )
    try:
        return _wait_until_up(proc, dirs, log_path, data_dir)
    except KeyboardInterrupt:
        if proc.poll() is None:  # (it exited 130 without a word, the peer starting on)
            print(
                f"\nthe peer goes on starting in the background, log in {log_path};"
                f" `kill {proc.pid}` stops it",  # (`peer stop` needs it up: not yet)
                file=sys.stderr,
            )
        raise


def _wait_until_up(
    proc: subprocess.Popen[bytes], dirs: DataDir, log_path: Path, data_dir: str | None
) -> int:
    """Wait for a detached peer to say it is up (its pid and address files); 0 once it is."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        # Up once the files name this child: another start at the same moment on this data
        # directory writes them too (and this child then waits for the replica's lock).
        pid = dirs.read_pid()
        if dirs.address_file.exists() and pid is not None:
            if pid == proc.pid:
                print(f"peer started (pid {proc.pid}), log in {log_path}")
                print(f"pid file: {dirs.pid_file}")
                return 0
            if dirs.running_pid() == pid:
                # Stopped now, not left to take over should that other peer stop meanwhile.
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                raise _already_running(dirs, pid, data_dir)
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
            # Its last line is its own one-line error, "metaopt: ..." as this one will be.
            why = " ".join(tail).removeprefix("metaopt: ")
            raise MetaoptError(f"the peer exited at once: {why or _unsaid(proc, log_path)}")
        time.sleep(0.1)
    raise MetaoptError(
        f"the peer did not come up within 30 s; see {log_path} (it may still be starting:"
        f" `kill {proc.pid}` stops it)"
    )


def _already_running(dirs: DataDir, pid: int, data_dir: str | None) -> MetaoptError:
    return MetaoptError(
        f"a peer is already running on {dirs.root} (pid {pid});"
        f" use it, or run `{command('peer', 'stop', data_dir=data_dir)}` first"
    )


def _unsaid(proc: subprocess.Popen[bytes], log_path: Path) -> str:
    """Why a detached peer that left nothing in its log may have exited: on a full disk its
    one-line error could not be written there, and this said "see peer.log" of an empty
    file (4 of 4)."""
    said = f"exit status {proc.returncode}, and {log_path} holds nothing"
    try:
        free = shutil.disk_usage(log_path.parent).free
    except OSError:
        free = None
    if free is not None and free < 1 << 20:
        return f"{said}: its disk is full ({free:,} bytes free); free space on it and start again"
    return f"{said}; start it without --detach to see why"


def _stop(args: argparse.Namespace) -> int:
    if not args.timeout >= 0:  # (nan too)
        raise MetaoptError(f"--timeout must be 0 or more seconds, got {args.timeout:g}")
    data_dir = resolve_data_dir(args.data_dir)
    dirs = DataDir(data_dir)
    pid = dirs.read_pid()
    if not dirs.address_file.exists():
        raise MetaoptError(f"no peer is running on {dirs.root}; nothing to stop")
    reply = LocalPeer(data_dir).call("api.shutdown")
    if isinstance(reply, dict) and reply.get("running"):
        # A trial that ignores the stop file held the stop 20 s without a word. (Not run
        # again once their experiment is stopped or spent: "run again elsewhere" said so.)
        n, grace = reply["running"], reply.get("grace", 10)
        print(
            f"stopping {n} trial{'s' if n > 1 else ''} running here (recorded interrupted, run"
            " again elsewhere while their experiment goes on); one that ignores its stop is"
            f" killed within {2 * grace:g} s",
            flush=True,
        )
    deadline = time.monotonic() + args.timeout
    # Until the process is gone, not only its pid file (which its stop removes before the
    # interpreter exits: "peer stopped" was printed with the peer still there for seconds); a
    # zombie (a peer whose parent has not reaped it yet) has stopped.
    while pid is not None and not pid_gone(pid):
        if time.monotonic() > deadline:
            # Asked, it goes on stopping: the line said only that it ran, read as a failure.
            raise MetaoptError(
                f"peer pid {pid} is still stopping after {args.timeout:g} s (its trials get"
                " their grace); `metaopt peer status` says when it is gone"
            )
        time.sleep(0.1)
    unwritable = _unwritable(dirs.root) if pid is not None and dirs.read_pid() == pid else None
    if unwritable is not None:
        # (Its stop could not remove the pid file: "ended before its stop completed", exit 2,
        # while its log said "peer stopped", 4 of 4; on a read-only disk, then a folder whose
        # permissions or immutable flag refuse it, 2 of 2: a review.)
        print(f"peer stopped (its pid file stays: {dirs.root} {unwritable})")
        return 0
    if pid is not None and dirs.read_pid() == pid:
        # A stop that completes removes the pid file: this one died on the way (killed).
        raise MetaoptError(
            f"peer pid {pid} ended before its stop completed (killed, or it failed: see its"
            " log); trials it ran may not be recorded interrupted: other peers then take"
            " them over as lost"
        )
    print("peer stopped")
    return 0


def _unwritable(path: Path) -> str | None:
    """Why the folder path refuses changes (a read-only disk, or permissions: the immutable
    flag too), or None. Tried, not read from the mount flags: ext4 made read-only by its
    errors (errors=remount-ro, the way a disk goes read-only under a running peer) still
    says read-write there."""
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".metaopt-probe-")
    except OSError as exc:
        if exc.errno == errno.EROFS:
            return "is on a read-only disk"
        if exc.errno in (errno.EPERM, errno.EACCES):
            return f"refuses changes ({exc.strerror})"
        return None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


def _status(args: argparse.Namespace) -> int:
    status = LocalPeer(resolve_data_dir(args.data_dir)).call("api.status")
    if args.json:
        print(json_text(status, indent=2))
        return 0
    print(f"node      {status['node_id']}  ({printable(str(status['name']))})")
    release = f"  metaopt {status['release']}" if "release" in status else ""
    if "protocol" in status:
        release += f" (protocol {status['protocol']})"
    print(f"address   {status['address']}  pid {status['pid']}{release}")
    print(f"data dir  {status['data_dir']}")
    print(f"records   {status['records']}   experiments {status['experiments']}")
    if status.get("loading"):
        done, held = status["loading"]
        print(
            f"loading   its history: {done:,} of about {held:,} records folded; it starts"
            " trials once loaded"
        )
    print(f"cluster   {status['fingerprint']}")
    peers = status["peers"]
    print(f"\npeers ({sum(p['live'] for p in peers)} live of {len(peers)})")
    if peers:
        rows = [
            [
                p["node_id"][:12],
                p["address"],
                p["last_contact"],
                # Live by news through other peers, not yet called here: "-" and "yes" side by
                # side read as a contradiction.
                "no"
                if not p["live"]
                else "yes"
                if p["last_contact"] is not None
                else "yes (heard of through other peers)",
            ]
            for p in peers
        ]
        print(table(["node", "address", "last contact (s)", "live"], rows))
    # (Not while its disk refuses writes: it does not answer its peers then, and said "it
    # runs on alone, and takes their running trials for lost" of a peer that records nothing.)
    if peers and not any(p["live"] for p in peers) and not status.get("storage"):
        # A peer cut off from the rest showed only "0 live of 3": say what it means.
        why = (
            "cut off, they stopped, or they refuse it: below"
            if status.get("refusals")
            else ("cut off, or they stopped")
        )
        print(
            f"this peer hears none of the others ({why}): it runs on alone,"
            " and takes their running trials for lost once they have been silent"
            f" {status.get('lost_after', 60):g} s"
        )
    if status.get("storage"):
        print(
            f"this peer {status['storage']}: it records nothing, starts no trial and does not"
            f" answer its peers until it can; {disk_advice(status['storage'])}"
        )
    refusals = status.get("refusals") or {}
    for seed in status.get("silent_seeds", []):
        if seed in refusals:  # (it answers: to refuse this peer, which is not silence)
            print(f"--join {seed}: refuses this peer: {refusals[seed]}")
        else:
            print(f"--join {seed}: no answer yet (see this peer's log)")
    told = set(status.get("silent_seeds", []))
    for addr, why in sorted(refusals.items()):
        if addr not in told:  # (a clock off, another key or release: the peer looks silent)
            print(f"{addr} refuses this peer: {why}")
    if status.get("alone") and not status.get("silent_seeds"):
        print(status["alone"])
    print("\nslots")
    rows = [
        [s["index"], s.get("gpu") or "cpu", s.get("trial") or "idle", s.get("experiment") or ""]
        for s in status["slots"]
    ]
    print(table(["slot", "device", "trial", "experiment"], rows))
    return 0


def _key(args: argparse.Namespace) -> int:
    dirs = DataDir(resolve_data_dir(args.data_dir))
    key = dirs.read_key()
    if key is None:
        start = command("peer", "start", data_dir=args.data_dir)
        raise MetaoptError(f"no cluster key in {dirs.root} yet; `{start}` creates one")
    addr = dirs.read_address()
    if addr is None:
        # Its address (hence the command's --join and --host) is known once it runs.
        print(f"metaopt peer start --key {key} --join HOST:PORT")
        print(
            f"(no peer runs on {dirs.root} now: HOST:PORT is a running peer's; start this one"
            f" and `{command('peer', 'key', data_dir=args.data_dir)}` names its address)",
            file=sys.stderr,
        )
        return 0
    print(join_command(key, addr))
    return 0


def join_command(key: str, addr: str) -> str:
    """The command that adds another machine to the cluster of the peer bound at addr.

    A peer on a LAN address is joined there, and the new peer binds every interface so that
    the others can reach it too (its own default, 127.0.0.1, would not do); a peer bound to
    every IPv4 interface (0.0.0.0) is joined at one of this machine's other addresses, one
    bound to every IPv6 interface (::) at one the user fills in. A peer on
    loopback is a local trial: its command stays on loopback, with a data directory and port
    of its own.
    """
    host, _, port = addr.rpartition(":")
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        # Another peer on this machine needs its own data directory and port, or it stops at
        # "in use" (the same default data dir, the same default port).
        return f"metaopt peer start --key {key} --join {addr} --port 0 --data-dir ./metaopt-peer2"
    if host.strip("[]") == "::":
        # Every IPv6 interface, and only those (the socket is IPv6 only): [::] on the other
        # machine is that machine, and an IPv4 address of this one is refused.
        addr = f"[THIS-MACHINE'S-IPv6-ADDRESS]:{port}"
    elif host == "0.0.0.0":
        from metaopt.peer._discovery import local_adapters

        outside = [a for _, a, _ in local_adapters() if not ipaddress.IPv4Address(a).is_loopback]
        addr = f"{outside[0] if outside else 'THIS-MACHINE'}:{port}"
    return f"metaopt peer start --host 0.0.0.0 --key {key} --join {addr}"
