"""The `metaopt peer` command's decisions, pinned where a mutation audit of cli/_peer found them
unpinned: timings, numbers at their bounds, the key's sources, the detached start's command
line, `peer stop`, `peer status`, the join command and the foreground run's signals (no peer
runs: stand-ins answer)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crdt import ClusterKey
from metaopt._errors import MetaoptError
from metaopt.cli import main
from metaopt.cli._peer import _config, _parse_timing, _read_key_file, _run, _stop, join_command
from metaopt.peer._identity import DataDir


def _args(tmp_path: Path, **given: object) -> argparse.Namespace:
    args = argparse.Namespace(
        key=None, key_file=None, join=None, host="127.0.0.1", port="0", slots="1",
        data_dir=str(tmp_path / "d"), gpus="none", name="", no_mdns=True, timing="",
    )  # fmt: skip
    for name, value in given.items():
        setattr(args, name, value)
    return args


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("METAOPT_")]:
        monkeypatch.delenv(name)


def test_push_fanout_is_a_whole_number_and_an_unknown_timing_is_refused_by_name() -> None:
    """push_fanout counts peers: 2.5 is no count. A mistyped timing is one line listing the
    known ones, not a TypeError from the dataclass."""
    fanout = _parse_timing("push_fanout=2").push_fanout
    assert fanout == 2 and isinstance(fanout, int)
    with pytest.raises(MetaoptError, match=r"^timing push_fanout needs a number, got '2.5'$"):
        _parse_timing("push_fanout=2.5")
    with pytest.raises(MetaoptError, match=r"^unknown timing 'gosip'; known: .*\bgossip\b"):
        _parse_timing("gosip=1")


def test_a_report_age_fraction_of_zero_is_no_thinning_not_refused() -> None:
    """0 is a meaningful value for each timing that may be 0, this one included."""
    assert _parse_timing("report_age_fraction=0").report_age_fraction == 0.0


@pytest.mark.usefixtures("no_env")
@pytest.mark.parametrize(
    ("field", "ok", "refused"),
    [("port", ["0", "65535"], ["-1", "65536"]), ("slots", ["1", "1024"], ["0", "1025"])],
)
def test_port_and_slots_are_taken_up_to_their_bounds_and_refused_past_them(
    tmp_path: Path, field: str, ok: list[str], refused: list[str]
) -> None:
    """Port 0 (any free port) and 65535, 1 and 1024 slots are valid; one past is one line."""
    for value in ok:
        assert getattr(_config(_args(tmp_path, **{field: value})), field) == int(value)
    for value in refused:
        with pytest.raises(MetaoptError, match=f"must be between .* got {value}$"):
            _config(_args(tmp_path, **{field: value}))


@pytest.mark.usefixtures("no_env")
@pytest.mark.parametrize("text", ["7_787", "+7787", "\u0667\u0667\u0668\u0667", "7787.0", ""])
def test_a_port_is_plain_digits_not_whatever_int_takes(tmp_path: Path, text: str) -> None:
    """int() reads "7_787" and Arabic-Indic digits as 7787; a firewall rule or another tool
    reading the same METAOPT_PORT would not, so the peer refuses it in one line."""
    with pytest.raises(MetaoptError, match=r"^--port \(or METAOPT_PORT\) needs a whole number"):
        _config(_args(tmp_path, port=text))
    assert _config(_args(tmp_path, port=" 7787 ")).port == 7787  # spaces around are fine


@pytest.mark.usefixtures("no_env")
def test_a_key_file_on_the_command_line_beats_the_environments_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """METAOPT_KEY left in a shell must not replace a --key-file typed now (the peer would join
    the other cluster)."""
    (tmp_path / "b.key").write_text("key-of-b\n")
    monkeypatch.setenv("METAOPT_KEY", "key-of-a")
    assert _config(_args(tmp_path, key_file=str(tmp_path / "b.key"))).key_text == "key-of-b"


def test_a_key_file_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    """The limit refuses what is past 4096 bytes, not a file of 4096."""
    key_file = tmp_path / "key"
    key_file.write_bytes(b"mo1-" + b"a" * 4092)
    assert _read_key_file(str(key_file), "--key-file") == "mo1-" + "a" * 4092


class _Child:
    """subprocess.Popen's stand-in for a detached start: the peer comes up at once."""

    pid = 4_000_000  # (above any pid_max: no real process)
    seen: dict[str, Any] = {}  # noqa: RUF012 - one test at a time

    def __init__(self, argv: list[str], **options: Any) -> None:
        _Child.seen = {"argv": argv, "env": options["env"]}
        data_dir = Path(argv[argv.index("--data-dir") + 1])
        DataDir(data_dir).pid_file.write_text(f"{self.pid}\n")
        DataDir(data_dir).address_file.write_text("127.0.0.1:9\n")

    def poll(self) -> None:
        return None


@pytest.mark.usefixtures("no_env")
@pytest.mark.parametrize("mdns", [False, True])
def test_a_detached_start_passes_every_option_to_its_peer_and_the_key_only_by_environment(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    mdns: bool,
) -> None:
    """The background peer must run as asked: no mDNS where --no-mdns was given (a peer must
    not announce itself on a network it was told to keep quiet on), its seeds, name and
    timings; its key in its environment, never on its command line, which `ps` shows."""
    monkeypatch.setattr("metaopt.cli._peer.subprocess.Popen", _Child)
    argv = ["peer", "start", "--detach", "--data-dir", str(tmp_path), "--host", "127.0.0.1",
            "--port", "0", "--join", "127.0.0.1:7788", "--name", "lab1", "--key", "mo1-secret",
            "--timing", "gossip=1"] + ([] if mdns else ["--no-mdns"])  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith(f"peer started (pid {_Child.pid}), log in ")
    child = _Child.seen["argv"]
    assert ("--no-mdns" in child) is (not mdns)
    assert child[child.index("--join") + 1] == "127.0.0.1:7788"
    assert child[child.index("--name") + 1] == "lab1"
    assert child[child.index("--timing") + 1] == "gossip=1"
    assert not any("mo1-secret" in word for word in child)
    assert _Child.seen["env"]["METAOPT_KEY"] == "mo1-secret"


def test_peer_stop_of_one_running_trial_says_trial_not_trials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    DataDir(tmp_path).address_file.write_text("127.0.0.1:9\n")

    class _Peer:
        def __init__(self, data_dir: Path) -> None: ...

        def call(self, op: str, body: object = None) -> object:
            return {"running": 1, "grace": 3.0}

    monkeypatch.setattr("metaopt.cli._peer.LocalPeer", _Peer)
    assert _stop(argparse.Namespace(data_dir=str(tmp_path), timeout=1.0)) == 0
    assert capsys.readouterr().out.startswith("stopping 1 trial running here (recorded")


def test_peer_stop_that_outlasts_its_timeout_says_the_peer_is_still_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`peer stop --timeout 1` beside a trial that ignores its stop: "is still running after
    1 s" read as a failed stop, while the peer went on and stopped seconds later."""
    dirs = DataDir(tmp_path)
    dirs.address_file.write_text("127.0.0.1:9\n")
    dirs.pid_file.write_text(f"{os.getpid()}\n")  # a process that will not be gone

    class _Peer:
        def __init__(self, data_dir: Path) -> None: ...

        def call(self, op: str, body: object = None) -> object:
            return None

    monkeypatch.setattr("metaopt.cli._peer.LocalPeer", _Peer)
    with pytest.raises(MetaoptError) as refused:
        _stop(argparse.Namespace(data_dir=str(tmp_path), timeout=0.0))
    assert str(refused.value) == (
        f"peer pid {os.getpid()} is still stopping after 0 s (its trials get their grace);"
        " `metaopt peer status` says when it is gone"
    )


def _status(**fields: Any) -> dict[str, Any]:
    return {
        "node_id": "ab" * 16, "name": "lab1", "address": "127.0.0.1:7777", "pid": 1,
        "data_dir": "/d", "records": 9, "experiments": 1, "fingerprint": "f", "peers": [],
        "slots": [{"index": 0, "gpu": None, "trial": None, "experiment": None}], **fields,
    }  # fmt: skip


def test_peer_status_says_a_live_peer_not_yet_called_here_is_heard_of_through_others(
    peer_status: Callable[[dict[str, Any]], None], capsys: pytest.CaptureFixture[str]
) -> None:
    """Live by a third peer's news, with no contact of its own: the row said "-" and "yes"."""
    peers = [
        {"node_id": "cd" * 16, "address": "10.0.0.6:7787", "last_contact": None, "live": True},
        {"node_id": "ef" * 16, "address": "10.0.0.7:7787", "last_contact": 1.5, "live": True},
        {"node_id": "12" * 16, "address": "10.0.0.8:7787", "last_contact": None, "live": False},
    ]
    peer_status(_status(peers=peers))
    assert main(["peer", "status"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if "10.0.0." in line]
    assert rows == [
        ["cdcdcdcdcdcd", "10.0.0.6:7787", "-", "yes", "(heard", "of", "through", "other", "peers)"],
        ["efefefefefef", "10.0.0.7:7787", "1.5", "yes"],
        ["121212121212", "10.0.0.8:7787", "-", "no"],
    ]


def test_peer_status_of_a_peer_alone_says_so_and_not_that_it_is_cut_off(
    peer_status: Callable[[dict[str, Any]], None], capsys: pytest.CaptureFixture[str]
) -> None:
    """A first start knows no other peer: it runs alone, it is not cut off from anyone; while a
    --join seed has not answered, that is what it says (the seed's line, not "alone")."""
    alone = "no other peer known: it runs alone (give --join HOST:PORT, or mDNS)"
    peer_status(_status(alone=alone))
    assert main(["peer", "status"]) == 0
    out = capsys.readouterr().out
    assert "peers (0 live of 0)" in out and alone in out and "hears none" not in out
    peer_status(_status(alone=alone, silent_seeds=["10.0.0.5:7787"]))
    assert main(["peer", "status"]) == 0
    out = capsys.readouterr().out
    assert "--join 10.0.0.5:7787: no answer yet (see this peer's log)" in out
    assert alone not in out
    # A seed, or a peer, refusing this one is no silence (a clock off, another release).
    clock = "StaleFrame: the sender's clock is +300.0 s off the receiver's"
    refusals = {"10.0.0.5:7787": clock, "10.0.0.6:7787": "metaopt protocol version 7"}
    peer_status(_status(alone=alone, silent_seeds=["10.0.0.5:7787"], refusals=refusals))
    assert main(["peer", "status"]) == 0
    out = capsys.readouterr().out
    assert f"--join 10.0.0.5:7787: refuses this peer: {clock}\n" in out
    assert "10.0.0.6:7787 refuses this peer: metaopt protocol version 7\n" in out
    assert "no answer yet" not in out
    silent = [{"node_id": "cd" * 16, "address": "10.0.0.6:7787", "last_contact": 40, "live": False}]
    peer_status(_status(peers=silent, refusals=refusals))
    assert main(["peer", "status"]) == 0
    assert "hears none of the others (cut off, they stopped, or they refuse it: below)" in (
        capsys.readouterr().out
    )


def test_peer_status_names_the_release_and_protocol_a_peer_runs(
    peer_status: Callable[[dict[str, Any]], None], capsys: pytest.CaptureFixture[str]
) -> None:
    # Releases between which peers refuse each other bore one number (an upgrade review).
    peer_status(_status(release="0.1.0", protocol=8))
    assert main(["peer", "status"]) == 0
    assert "pid 1  metaopt 0.1.0 (protocol 8)\n" in capsys.readouterr().out


def test_peer_status_shows_a_cpu_slot_idle_and_how_far_loading_has_got(
    peer_status: Callable[[dict[str, Any]], None], capsys: pytest.CaptureFixture[str]
) -> None:
    peer_status(_status(loading=[1500, 20000]))
    assert main(["peer", "status"]) == 0
    out = capsys.readouterr().out
    assert "loading   its history: 1,500 of about 20,000 records folded;" in out
    assert out.splitlines()[-1].split() == ["0", "cpu", "idle"]


def test_the_join_command_of_a_peer_bound_to_localhost_stays_on_this_machine() -> None:
    """localhost is loopback as 127.0.0.1 is: the command is for a second local peer."""
    assert join_command("K", "localhost:7787") == (
        "metaopt peer start --key K --join localhost:7787 --port 0 --data-dir ./metaopt-peer2"
    )


class _Node:
    """metaopt.peer._node.Node's stand-in for _run: runs until asked to stop."""

    failed: str | None = None
    hup_handled = False

    def __init__(self, config: object) -> None:
        self.stopped = asyncio.Event()
        self.new_cluster = False

    async def start(self) -> None: ...

    def request_stop(self) -> None:
        self.stopped.set()

    async def run_until_stopped(self) -> None:
        # A SIGHUP without a handler would end the test run itself: sent only if handled.
        _Node.hup_handled = signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL
        if _Node.hup_handled:
            os.kill(os.getpid(), signal.SIGHUP)
            await asyncio.wait_for(self.stopped.wait(), 10)

    async def stop(self) -> None: ...


@pytest.mark.usefixtures("no_env")
def test_a_hangup_stops_the_peer_gracefully_and_a_failed_peer_exits_with_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A closed terminal (SIGHUP) must stop the peer the graceful way, its trials recorded
    interrupted, not kill it; a peer that failed must not exit 0 (a supervisor restarts it)."""
    monkeypatch.setattr("metaopt.peer._node.Node", _Node)
    config = _config(_args(tmp_path))
    assert asyncio.run(_run(config)) == 0
    assert _Node.hup_handled
    monkeypatch.setattr(_Node, "failed", "its replica is damaged")
    with pytest.raises(MetaoptError, match=r"^its replica is damaged$"):
        asyncio.run(_run(config))


@pytest.mark.usefixtures("no_env")
def test_metaopt_join_takes_spaces_after_its_commas_and_is_named_when_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """METAOPT_JOIN is comma-separated, as the README says: "a:1, b:2" is two seeds, where the
    space made the second one "not HOST:PORT"; a wrong seed from it names METAOPT_JOIN, not a
    --join the user never typed."""
    monkeypatch.setenv("METAOPT_JOIN", "127.0.0.1:1, 127.0.0.1:2 ,")
    config = _config(_args(tmp_path, key="k"))
    assert list(config.join) == ["127.0.0.1:1", "127.0.0.1:2"]
    monkeypatch.setenv("METAOPT_JOIN", "127.0.0.1:1, nowhere")
    with pytest.raises(MetaoptError, match=r"^METAOPT_JOIN 'nowhere': expected HOST:PORT"):
        _config(_args(tmp_path, key="k"))
    with pytest.raises(MetaoptError, match=r"^--join 'nowhere': expected HOST:PORT"):
        _config(_args(tmp_path, key="k", join=["nowhere"]))


@pytest.mark.usefixtures("no_env")
def test_a_join_option_takes_commas_as_its_variable_does(tmp_path: Path) -> None:
    """The README lists `--join` (METAOPT_JOIN, comma-separated): `--join a:1,b:2` was refused
    as "not HOST:PORT". Commas and repeats mix; an empty seed is still refused, not dropped."""
    config = _config(_args(tmp_path, key="k", join=["127.0.0.1:1, 127.0.0.1:2", "127.0.0.1:3"]))
    assert list(config.join) == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    for empty in ([""], ["127.0.0.1:1,"], ["127.0.0.1:1", ",127.0.0.1:2"]):
        # Named as typed: "--join '': expected HOST:PORT" quoted a seed the user never wrote.
        with pytest.raises(MetaoptError) as refused:
            _config(_args(tmp_path, key="k", join=empty))
        assert str(refused.value) == (
            f"--join {empty[-1]!r}: an empty seed (a stray comma, or an unset variable); give"
            " HOST:PORT of another peer, e.g. 192.168.1.20:7787"
        )


@pytest.mark.parametrize(
    "key", ["garbage", "mo1-abc", "mo1-iucynmf7ub6olfo666xt2y2yrlvswiugxusi2kwqzrhjz373nw4wthkbnm"]
)
@pytest.mark.usefixtures("no_env")
def test_a_malformed_key_writes_no_data_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    """A malformed --key is refused before the data directory is made: it made it, with a
    node id, an empty replica, trials/ and bundles/."""
    argv = ["peer", "start", "--data-dir", str(tmp_path / "d"), "--port", "0", "--no-mdns",
            "--host", "127.0.0.1", "--key", key, "--join", "127.0.0.1:9"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cluster key" in err
    assert not (tmp_path / "d").exists(), f"refused ({err.strip()}), but it made the directory"


@pytest.mark.parametrize("gpus", ["x", "0,0", ""])
@pytest.mark.usefixtures("no_env")
def test_a_malformed_gpus_writes_no_data_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], gpus: str
) -> None:
    """A malformed --gpus is refused before the data directory is made (as a --key is)."""
    argv = ["peer", "start", "--data-dir", str(tmp_path / "d"), "--port", "0", "--no-mdns",
            "--host", "127.0.0.1", "--gpus", gpus]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"metaopt: --gpus (or METAOPT_GPUS) {gpus!r}: use auto, none, or distinct GPU" \
        " indices such as 0,1\n"  # fmt: skip
    assert not (tmp_path / "d").exists(), f"refused ({err.strip()}), but it made the directory"


@pytest.mark.usefixtures("no_env")
def test_an_empty_metaopt_key_does_not_hide_metaopt_key_file_and_an_empty_key_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`METAOPT_KEY=` (an unset variable in a unit file) beside METAOPT_KEY_FILE: the file was
    never read, and the empty key was then "a cluster key starts with 'mo1-'" on a fresh
    directory, or no key at all (the directory's old one) on an existing one; so was
    --key ""."""
    key = ClusterKey.generate(os.urandom(32)).to_text()
    (tmp_path / "key").write_text(key + "\n")
    monkeypatch.setenv("METAOPT_KEY_FILE", str(tmp_path / "key"))
    for empty in ("", " "):
        monkeypatch.setenv("METAOPT_KEY", empty)
        assert _config(_args(tmp_path, join=["127.0.0.1:9"])).key_text == key
    with pytest.raises(MetaoptError, match=r"^--key is empty; give the key"):
        _config(_args(tmp_path, key=" "))
    # An unset "$KEYFILE" made a new cluster instead of joining one (a review of the
    # session's fixes).
    with pytest.raises(MetaoptError, match=r"^--key-file is empty; give the key"):
        _config(_args(tmp_path, key_file=""))
