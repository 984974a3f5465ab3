"""The `metaopt peer` command's own behaviour, without a peer running."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from metaopt._errors import MetaoptError
from metaopt.cli._peer import _parse_timing, _printable_lines, _read_key_file, _stop
from metaopt.peer._identity import DataDir, pid_gone


def test_a_log_line_cannot_be_forged_by_a_name_from_another_peer() -> None:
    # Experiment names come from any peer's records, and earlier versions wrote any string: a
    # newline or a terminal escape in one forged lines in every peer's log.
    name = "sweep\n12:00:00 INFO peer stopped\x1b[2J"
    record = logging.LogRecord("metaopt.peer", logging.INFO, __file__, 1, "experiment %s: %s",
                               (name, "its search failed"), None)  # fmt: skip
    assert _printable_lines(record)
    shown = record.getMessage()
    assert shown.isprintable()
    assert shown == "experiment sweep\\n12:00:00 INFO peer stopped\\x1b[2J: its search failed"
    plain = logging.LogRecord("metaopt.peer", logging.INFO, __file__, 1, "slot %d runs %s",
                              (0, "x"), None)  # fmt: skip
    assert _printable_lines(plain) and plain.getMessage() == "slot 0 runs x" and plain.args


@pytest.mark.parametrize("how", ["graceful", "killed", "read-only", "immutable"])
def test_peer_stop_says_stopped_once_the_process_is_gone_and_only_if_its_stop_completed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    how: str,
) -> None:
    # The peer removes its pid file before its interpreter exits; "peer stopped" came while
    # `ps` still showed it. Killed -9 during its stop, it left its pid file and recorded no
    # trial interrupted, and `peer stop` said "peer stopped" all the same. On a read-only
    # disk its stop cannot remove the pid file: that stop was called killed (exit 2).
    graceful = how == "graceful"
    dirs = DataDir(tmp_path)
    dirs.address_file.write_text("127.0.0.1:9\n")
    exiting = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    dirs.pid_file.write_text(f"{exiting.pid}\n")

    class _Peer:
        def __init__(self, data_dir: Path) -> None:
            pass

        def call(self, op: str, body: object = None) -> object:
            if graceful:
                dirs.pid_file.unlink()  # what the peer's stop does, before it exits
            return {"running": 2 if graceful else 0, "grace": 10.0}

    monkeypatch.setattr("metaopt.cli._peer.LocalPeer", _Peer)
    mkstemp = tempfile.mkstemp

    def read_only(*args: Any, dir: Any = None, **kwargs: Any) -> Any:
        # (What ext4 made read-only by its errors does: its mount flags still say rw. A
        # folder made immutable, chattr +i, refuses with EPERM: a review, 2 of 2.)
        if dir is not None and Path(dir) == tmp_path:
            if how == "immutable":
                raise OSError(errno.EPERM, "Operation not permitted")
            raise OSError(errno.EROFS, "Read-only file system")
        return mkstemp(*args, dir=dir, **kwargs)

    if how in ("read-only", "immutable"):
        monkeypatch.setattr(tempfile, "mkstemp", read_only)
    args = argparse.Namespace(data_dir=str(tmp_path), timeout=30.0)
    try:
        if how in ("read-only", "immutable"):
            assert _stop(args) == 0 and exiting.poll() is not None
            said = capsys.readouterr().out.splitlines()[-1]
            why = {"read-only": "is on a read-only disk",
                   "immutable": "refuses changes (Operation not permitted)"}[how]  # fmt: skip
            assert said == f"peer stopped (its pid file stays: {tmp_path} {why})"
        elif graceful:
            assert _stop(args) == 0
            assert exiting.poll() is not None  # exited (a zombie until this reaped it)
            # Its trials' stop may take twice the grace: said first, not waited out in silence.
            assert capsys.readouterr().out == (
                "stopping 2 trials running here (recorded interrupted, run again elsewhere while"
                " their experiment goes on); one that ignores its stop is killed within 20 s\n"
                "peer stopped\n"
            )
        else:
            with pytest.raises(MetaoptError, match="ended before its stop completed") as info:
                _stop(args)
            assert "\n" not in str(info.value) and capsys.readouterr().out == ""
    finally:
        exiting.kill()
        exiting.wait()


@pytest.mark.parametrize("free", [0, 10 << 30])
def test_a_detached_peer_that_exits_leaving_its_log_empty_says_what_it_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free: int
) -> None:
    # On a full disk the child's one-line error could not reach peer.log: "the peer exited
    # at once: see .../peer.log", an empty file (4 of 4).
    from metaopt.cli._peer import _wait_until_up

    log_path = tmp_path / "peer.log"
    log_path.write_bytes(b"")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(2)"])
    proc.wait()
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=free))
    with pytest.raises(MetaoptError) as info:
        _wait_until_up(proc, DataDir(tmp_path), log_path, None)
    said = str(info.value)
    assert said.startswith(f"the peer exited at once: exit status 2, and {log_path} holds nothing")
    if free:
        assert said.endswith("; start it without --detach to see why"), said
    else:
        assert said.endswith(": its disk is full (0 bytes free); free space on it and start again")


@pytest.mark.integration
def test_a_detached_peer_that_cannot_start_says_why_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It said "metaopt: the peer exited at once: metaopt: --join needs ...".
    from metaopt.cli import main

    argv = ["peer", "start", "--data-dir", str(tmp_path), "--host", "127.0.0.1", "--port", "0",
            "--no-mdns", "--join", "127.0.0.1:9", "--detach"]  # fmt: skip
    try:
        assert main(argv) == 2
    finally:  # (a start that wrongly succeeds must not leave a peer running)
        pid_file = DataDir(tmp_path).pid_file
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
    said = capsys.readouterr().err
    assert said.startswith("metaopt: the peer exited at once: --join needs the cluster's key")
    assert said.count("\n") == 1


@pytest.mark.integration
# (The detached peer outlives its Popen, as it is meant to: Popen warns when collected.)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ctrl_c_while_a_detached_peer_starts_says_it_goes_on_and_how_to_stop_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # It exited 130 without a word, the peer starting on in the background (a review of
    # signals).
    from metaopt.cli import main

    def interrupted(*args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("metaopt.cli._peer._wait_until_up", interrupted)
    argv = ["peer", "start", "--data-dir", str(tmp_path), "--host", "127.0.0.1", "--port", "0",
            "--no-mdns", "--detach"]  # fmt: skip
    assert main(argv) == 130
    said = capsys.readouterr().err
    pid = int(said.split("`kill ", 1)[1].split("`", 1)[0])
    try:
        # (Not `peer stop`, which needs the peer up: one waiting for its replica is not yet.)
        assert said == (
            f"\nthe peer goes on starting in the background, log in {tmp_path / 'peer.log'};"
            f" `kill {pid}` stops it\n"
        )
        assert not pid_gone(pid)
    finally:
        os.kill(pid, signal.SIGTERM)
        for _ in range(300):  # (bounded: 30 s)
            if pid_gone(pid):
                break
            time.sleep(0.1)


def test_the_release_is_one_flag_away(capsys: pytest.CaptureFixture[str]) -> None:
    # The README says to run one release on every peer; nothing said which one was installed,
    # and releases whose peers refuse each other bore one number (an upgrade review).
    from metaopt import __version__
    from metaopt.cli import main
    from metaopt.peer._wire import PROTOCOL_VERSION

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"metaopt {__version__} (protocol {PROTOCOL_VERSION})\n"


@pytest.mark.parametrize(
    "content", [bytes(range(128, 228)), b"mo1-\xff\xfe"], ids=["random", "mo1"]
)
@pytest.mark.parametrize("via_env", [False, True])
def test_a_key_file_that_is_not_text_is_one_line_naming_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    content: bytes,
    via_env: bool,
) -> None:
    # Random bytes in --key-file (or METAOPT_KEY_FILE) were a 20-line UnicodeDecodeError.
    from metaopt.cli import main

    key_file = tmp_path / "key"
    key_file.write_bytes(content)
    argv = ["peer", "start", "--data-dir", str(tmp_path / "d"), "--port", "0", "--no-mdns"]
    monkeypatch.delenv("METAOPT_KEY", raising=False)
    if via_env:
        monkeypatch.setenv("METAOPT_KEY_FILE", str(key_file))
    else:
        monkeypatch.delenv("METAOPT_KEY_FILE", raising=False)
        argv += ["--key-file", str(key_file)]
    given = "METAOPT_KEY_FILE" if via_env else "--key-file"
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"metaopt: {given} {key_file} is not text, so it holds no cluster key; put the key"
        " that `metaopt peer key` prints on a member in it\n"
    )
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    "content", [b"mo1-\x00\x01abc", b"mo1-" + b"a" * 5000], ids=["nul", "huge"]
)
def test_a_key_file_that_cannot_hold_a_key_is_refused_unread(
    tmp_path: Path, content: bytes
) -> None:
    # A NUL byte went on to the detached peer's environment (a Popen traceback); /dev/zero was
    # read until memory ran out.
    key_file = tmp_path / "key"
    key_file.write_bytes(content)
    with pytest.raises(MetaoptError) as info:
        _read_key_file(str(key_file), "--key-file")
    assert str(info.value) == (
        f"--key-file {key_file} is not a cluster key file; put the key that `metaopt peer"
        " key` prints on a member in it"
    )


def test_a_key_file_saved_with_a_byte_order_mark_holds_its_key(tmp_path: Path) -> None:
    # Notepad's BOM was read as part of the key: "a cluster key starts with 'mo1-'".
    key_file = tmp_path / "key"
    key_file.write_bytes(b"\xef\xbb\xbfmo1-abc\r\n")
    assert _read_key_file(str(key_file), "--key-file") == "mo1-abc"


@pytest.mark.parametrize("content", ["", " \n\t\n", None], ids=["empty", "blank", "devnull"])
@pytest.mark.parametrize("join", [False, True])
def test_an_empty_key_file_is_refused_not_taken_for_no_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    join: bool,
) -> None:
    # Empty, it was no key: "--join needs the cluster's key: pass --key or --key-file" to a
    # user who had passed one, or a peer of a new cluster.
    from metaopt.cli import main

    key_file = Path("/dev/null") if content is None else tmp_path / "key"
    if content is not None:
        key_file.write_text(content)
    monkeypatch.delenv("METAOPT_KEY", raising=False)
    monkeypatch.delenv("METAOPT_KEY_FILE", raising=False)
    argv = ["peer", "start", "--data-dir", str(tmp_path / "d"), "--port", "0", "--no-mdns",
            "--host", "127.0.0.1", "--key-file", str(key_file)]  # fmt: skip
    argv += ["--join", "127.0.0.1:9"] if join else []
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"metaopt: --key-file {key_file} is empty; put the key that `metaopt peer key` prints"
        " on a member in it\n"
    )
    assert not (tmp_path / "d").exists()


def _processes_naming(path: Path) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and str(path).encode() in cmdline.split(b"\0"):
            found.add(int(entry.name))
    return found


@pytest.mark.integration
def test_two_detached_starts_at_once_on_one_data_dir_start_one_peer_and_the_other_says_so(
    tmp_path: Path,
) -> None:
    # Both said "peer started" and exited 0: the second counted the first's peer.address as
    # its own, and its peer lingered 5-7 s (taking over if the first stopped meanwhile).
    data_dir = tmp_path / "d"
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAOPT_")}
    argv = [sys.executable, "-m", "metaopt", "peer", "start", "--data-dir", str(data_dir),
            "--host", "127.0.0.1", "--port", "0", "--no-mdns", "--detach"]  # fmt: skip
    starts = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    said = [start.communicate(timeout=60) for start in starts]
    try:
        codes = sorted(start.returncode for start in starts)
        assert codes == [0, 2], said
        (out, _), (_, err) = sorted(said, key=lambda s: s[1])
        pid = int(out.split("(pid ", 1)[1].split(")", 1)[0])
        assert err == (
            f"metaopt: a peer is already running on {data_dir} (pid {pid}); use it, or run"
            f" `metaopt peer stop --data-dir {data_dir}` first\n"
        )
        assert DataDir(data_dir).read_pid() == pid
        assert _processes_naming(data_dir) == {pid}  # the other's peer is gone already
    finally:
        for pid in _processes_naming(data_dir):
            os.kill(pid, signal.SIGTERM)
        for pid in _processes_naming(data_dir):
            for _ in range(300):  # (bounded: 30 s)
                if pid_gone(pid):
                    break
                time.sleep(0.1)


@pytest.mark.parametrize("level", ["LOUD", "", "ERROR2"])
def test_a_log_level_other_than_those_listed_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    level: str,
) -> None:
    # --log-level LOUD ran the peer at INFO without a word.
    from metaopt.cli import main

    started = []

    async def run(*args: object) -> int:
        started.append(args)
        return 0

    monkeypatch.setattr("metaopt.cli._peer._run", run)
    monkeypatch.setattr("metaopt.cli._peer._detach", lambda *args: started.append(args) or 0)
    start = ["peer", "start", "--no-mdns", "--data-dir", str(tmp_path)]
    for detach in ([], ["--detach"]):
        assert main([*start, "--log-level", level, *detach]) == 2
        assert capsys.readouterr().err == (
            f"metaopt: --log-level (or METAOPT_LOG_LEVEL) {level!r}: choose one of DEBUG, INFO,"
            " WARNING, WARN, ERROR, CRITICAL\n"
        )
    assert main([*start, "--log-level", "debug", "--detach"]) == 0
    assert main([*start, "--log-level", "error", "--detach"]) == 0  # (logging's names all work)
    assert [args[1] for args in started] == ["DEBUG", "ERROR"]


@pytest.mark.parametrize("timeout", ["-5", "nan"])
def test_peer_stop_refuses_a_negative_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], timeout: str
) -> None:
    from metaopt.cli import main

    assert main(["peer", "stop", "--data-dir", str(tmp_path), "--timeout", timeout]) == 2
    shown = f"{float(timeout):g}"
    assert capsys.readouterr().err == (
        f"metaopt: --timeout must be 0 or more seconds, got {shown}\n"
    )


@pytest.mark.parametrize(
    ("item", "least"),
    [("gossip=-1", "more than 0"), ("schedule=0", "more than 0"), ("monitor=nan", "more than 0"),
     ("push_fanout=-1", "0 or more"), ("settle=nan", "0 or more"),
     ("gossip=inf", "a finite number"), ("leave_wait=inf", "a finite number")],
)  # fmt: skip
def test_a_timing_of_zero_or_less_or_infinite_is_refused_where_zero_is_no_period(
    item: str, least: str
) -> None:
    name, _, value = item.partition("=")
    with pytest.raises(MetaoptError) as info:
        _parse_timing(f"anti_entropy=0.3,{item}")
    assert str(info.value) == f"timing {name} must be {least}, got {value!r}"
    assert _parse_timing("gossip=0.5,push_fanout=2").gossip == 0.5
    # 0 means none for these: no eager push, no thinning, no settling, no waiting to leave.
    nothing = _parse_timing("push_fanout=0,report_interval=0,settle=0,leave_wait=0")
    assert (nothing.push_fanout, nothing.report_interval, nothing.settle) == (0, 0.0, 0.0)


@pytest.mark.integration
def test_ctrl_c_stops_a_peer_start_waiting_for_its_replica(tmp_path: Path) -> None:
    # `peer start` on a replica another process holds (a long `status` read, a Study) waits
    # up to 2 minutes, saying so; it waited inside asyncio.run, whose Ctrl-C only cancels the
    # main task, which never ran meanwhile: still running 30 s after Ctrl-C (2 of 2; a review
    # of signals).
    data_dir = tmp_path / "d"
    (data_dir / "replica").mkdir(parents=True)
    hold = "import plyvel, sys, time; db = plyvel.DB(sys.argv[1], create_if_missing=True);"
    holder = subprocess.Popen(
        [sys.executable, "-c", hold + " print('held', flush=True); time.sleep(60)",
         str(data_dir / "replica")],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    peer = None
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAOPT_")}
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        log = tmp_path / "peer.log"
        with log.open("wb") as out:
            peer = subprocess.Popen(
                [sys.executable, "-m", "metaopt", "peer", "start", "--data-dir", str(data_dir),
                 "--host", "127.0.0.1", "--port", "0", "--no-mdns"],
                stdout=out, stderr=out, env=env,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )  # fmt: skip
        for _ in range(300):  # (bounded: 30 s)
            if b"waiting for another process" in log.read_bytes() or peer.poll() is not None:
                break
            time.sleep(0.1)
        assert b"waiting for another process" in log.read_bytes(), log.read_text()
        peer.send_signal(signal.SIGINT)  # Ctrl-C, once
        try:
            code: object = peer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = "still running 10 s after Ctrl-C"
        assert code == 130 and b"Traceback" not in log.read_bytes(), log.read_text()
    finally:
        for proc in (peer, holder):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
