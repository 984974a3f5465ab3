"""A stopped peer's replica read in place: `status`, `best`, `export` and `logs` need no peer."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from crdt import ClusterKey, LevelDBStore, Record
from metaopt._errors import MetaoptError
from metaopt._records import EVENT, TRIAL, EventBody, ExperimentSpec, experiment_record
from metaopt.peer import _identity, _offline
from metaopt.peer._config import PeerConfig
from metaopt.peer._identity import DataDir, trial_log_path
from metaopt.peer._node import Node
from metaopt.peer._offline import OfflinePeer
from metaopt.peer._replica import Replica


def _stopped_peer(root: Path, running: bool = False) -> Record:
    """A data directory as a peer leaves it: a node id, its cluster's key, a replica with one
    completed trial that ran here (still running: as a peer killed -9 leaves it), and its
    output log; returns the trial."""
    dirs = DataDir(root)
    dirs.ensure()
    me = dirs.node_id()
    dirs.write_key(ClusterKey.generate(os.urandom(32)).to_text())
    exp = experiment_record(ExperimentSpec("sweep", {"x": "uniform(0, 1)"}, command=("t.py",)))
    trial = Record.create(TRIAL, me, 1, 1000, {"params": {"x": 0.5}, "node": me, "counter": 1},
                          [exp.key])  # fmt: skip
    events = [
        Record.create(EVENT, me, 2 + i, 1001 + i, body.to_body(), [trial.key, exp.key])
        for i, body in enumerate((
            EventBody(trial.key, exp.key, "started", me),
            EventBody(trial.key, exp.key, "completed", me, 3, {"objective": 0.25}),
        )[: 1 if running else 2])
    ]  # fmt: skip
    store = LevelDBStore(dirs.replica)
    store.add([exp, trial, *events])
    store.close()
    log = trial_log_path(dirs, trial.key)
    log.parent.mkdir(parents=True)
    log.write_text("epoch 3 loss 0.25\n")
    return trial


def test_a_stopped_peers_results_are_read_from_its_replica(tmp_path: Path) -> None:
    # `metaopt status` said "no peer is running" with every result on disk beside it.
    trial = _stopped_peer(tmp_path)
    peer = OfflinePeer(tmp_path)
    [listed] = peer.call("api.experiments")
    assert listed["name"] == "sweep" and listed["counts"] == {"completed": 1}
    info = peer.call("api.experiment", "sweep")
    assert [t["id"] for t in info["trial_list"]] == [trial.key.hex()]
    assert info["best"][0]["value"] == 0.25
    logs = peer.call("api.logs", trial.key.hex()[:8])
    assert logs == {
        "here": True,
        "text": "epoch 3 loss 0.25\n",
        "state": "completed",
        "reason": None,
    }
    # The store is closed after each call: a peer starting now finds it free.
    LevelDBStore(DataDir(tmp_path).replica).close()


def test_reading_one_experiment_offline_folds_only_that_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An offline `status NAME`, `best` or `export` folded every experiment in the replica (3 s
    for a 200-trial one beside one of 50,000); it folds the one named, while the listing
    still folds them all. So does `logs TRIAL` (34 s at 2 million records; a scale review),
    with the trial's experiment."""
    trial = _stopped_peer(tmp_path)
    other = experiment_record(ExperimentSpec("other", {"x": "uniform(0, 1)"}, command=("t.py",)))
    store = LevelDBStore(DataDir(tmp_path).replica)
    store.add([other])
    store.close()
    opened: list[Replica] = []

    class Recording(Replica):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(_offline, "Replica", Recording)
    peer = OfflinePeer(tmp_path)
    assert peer.call("api.experiment", {"experiment": "sweep", "trials": "all"})["best"]
    assert [s.spec.name for s in opened[-1].experiments.values()] == ["sweep"]
    assert peer.call("api.experiment", other.key.hex()[:8])["name"] == "other"
    assert [s.spec.name for s in opened[-1].experiments.values()] == ["other"]
    assert len(peer.call("api.experiments")) == 2
    assert sorted(s.spec.name for s in opened[-1].experiments.values()) == ["other", "sweep"]
    assert peer.call("api.logs", trial.key.hex()[:8])["text"] == "epoch 3 loss 0.25\n"
    assert [s.spec.name for s in opened[-1].experiments.values()] == ["sweep"]
    with pytest.raises(MetaoptError, match="no trial 'ffffffff'"):
        peer.call("api.logs", "ffffffff")


@pytest.mark.parametrize("how", ["emptied", "moved aside", "moved aside, an older release's"])
def test_a_read_makes_no_replica_where_the_peers_is_gone(tmp_path: Path, how: str) -> None:
    # `rm -rf replica/*`, then `metaopt status`: the read made a new, empty replica there,
    # and the peer started next kept its node id, numbering its records from 1 again (2
    # records under each of 28 numbers once its peers sent the old ones back: a review).
    # Moved aside, the read said that no peer had ever run there.
    data = tmp_path / "d"
    Node(PeerConfig(data_dir=data, port=0, mdns=False)).store.close()
    me = DataDir(data).read_node_id()
    replica = DataDir(data).replica
    if how == "emptied":
        for name in os.listdir(replica):
            os.unlink(replica / name)
    else:
        os.rename(replica, tmp_path / "aside")
    if how.endswith("older release's"):
        DataDir(data).owner_file.unlink()  # (it said no peer had ever run there)
        (data / "peers").write_text("127.0.0.1:9\n")  # (and it had talked to one)
    for _ in range(2):
        with pytest.raises(MetaoptError) as said:
            OfflinePeer(data).call("api.experiments")
        assert str(said.value).startswith(f"the replica of the peer that ran on {data} is gone")
    assert not (replica / "CURRENT").exists()
    node = Node(PeerConfig(data_dir=data, port=0, mdns=False))
    node.store.close()
    assert node.node_id != me


def test_a_provisioned_directory_is_not_told_its_replica_is_gone(tmp_path: Path) -> None:
    # A node id and a cluster key put there before any start (provisioning): `metaopt
    # status` said the replica "of the peer that ran" there was gone (a mutation audit).
    dirs = DataDir(tmp_path / "d")
    dirs.root.mkdir()
    (dirs.root / "node_id").write_text("ab" * 16 + "\n")
    dirs.write_key(ClusterKey.generate(os.urandom(32)).to_text())
    with pytest.raises(MetaoptError, match="nor has one run there"):
        OfflinePeer(dirs.root).call("api.experiments")
    assert not dirs.replica.exists()
    dirs.replica.mkdir()  # (and an empty folder for the replica: as none)
    with pytest.raises(MetaoptError, match="nor has one run there"):
        OfflinePeer(dirs.root).call("api.experiments")
    assert os.listdir(dirs.replica) == []


def test_the_replica_of_a_peer_that_wrote_nothing_is_read(tmp_path: Path) -> None:
    # Started and stopped before any record: its replica is empty, not gone.
    data = tmp_path / "d"
    Node(PeerConfig(data_dir=data, port=0, mdns=False)).store.close()
    assert OfflinePeer(data).call("api.experiments") == []


@pytest.mark.parametrize("suffix", [".log", ".ldb", ".sst"])
def test_a_replica_folder_is_gone_only_if_no_file_of_it_holds_records(
    tmp_path: Path, suffix: str
) -> None:
    # No CURRENT and only empty files is what a crash while making a replica leaves: gone,
    # and a read refuses it rather than make a replica there. Records in any of its files
    # (its CURRENT lost) are a damaged replica, not a gone one: said so when it is opened.
    data = tmp_path / "d"
    Node(PeerConfig(data_dir=data, port=0, mdns=False)).store.close()
    replica = DataDir(data).replica
    for name in os.listdir(replica):
        os.unlink(replica / name)
    (replica / f"000003{suffix}").write_bytes(b"")
    assert DataDir(data).replica_gone()
    with pytest.raises(MetaoptError, match="is gone"):
        OfflinePeer(data).call("api.experiments")
    assert sorted(os.listdir(replica)) == [f"000003{suffix}"]
    (replica / f"000003{suffix}").write_bytes(b"\x01" * 64)
    assert not DataDir(data).replica_gone()


def test_a_read_waiting_for_a_replica_moved_aside_meanwhile_makes_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A read waits while another holds the replica; moved aside meanwhile, its next try
    # would make an empty replica there, for the peer to take for its own.
    from crdt import StoreLocked

    _stopped_peer(tmp_path)
    replica = DataDir(tmp_path).replica
    real = _offline.LevelDBStore
    tries: list[Path] = []

    def held_once(path: Path) -> LevelDBStore:
        if not tries:
            tries.append(path)
            os.rename(replica, tmp_path / "aside")
            raise StoreLocked("in use by another process")
        return real(path)

    monkeypatch.setattr(_offline, "LevelDBStore", held_once)
    with pytest.raises(MetaoptError, match="is gone"):
        OfflinePeer(tmp_path).call("api.experiments")
    assert not replica.exists()


def test_a_replica_on_a_read_only_disk_says_to_read_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "cannot open the store at ...: IO error: .../LOCK: Read-only file system", with
    # nothing to do about it (LevelDB takes a lock file even to read).
    from crdt import StoreError

    _stopped_peer(tmp_path)

    def read_only(path: Path) -> LevelDBStore:
        raise StoreError(
            f"cannot open the store at {path}: IO error: {path}/LOCK: Read-only file system"
        )

    monkeypatch.setattr("metaopt.peer._offline.LevelDBStore", read_only)
    with pytest.raises(MetaoptError) as said:
        OfflinePeer(tmp_path).call("api.experiments")
    assert str(said.value).endswith(
        f"Read-only file system; reading it takes a lock file there: copy {tmp_path}"
        " somewhere writable and read the copy with --data-dir"
    )


def test_a_peer_starting_while_a_read_holds_its_replica_waits_for_it(tmp_path: Path) -> None:
    # It failed with "the data directory is in use by another process" with no peer running.
    _stopped_peer(tmp_path)
    held = LevelDBStore(DataDir(tmp_path).replica)  # as an offline read holds it
    release = threading.Timer(0.3, held.close)
    release.start()
    try:
        node = Node(PeerConfig(data_dir=tmp_path, port=0, mdns=False))
        asyncio.run(node.stop())
    finally:
        release.join()


def test_a_stopped_replica_makes_no_claim_about_other_peers(tmp_path: Path) -> None:
    # Read a day later, a trial running elsewhere showed "node silent 86400 s; re-run
    # elsewhere at 60 s": a snapshot cannot know that.
    trial = _stopped_peer(tmp_path, running=True)
    info = OfflinePeer(tmp_path).call("api.experiment", "sweep")
    [shown] = [t for t in info["trial_list"] if t["id"] == trial.key.hex()]
    assert shown["state"] == "running" and "quiet" not in shown


def test_without_a_peer_what_would_change_the_replica_says_to_start_one(tmp_path: Path) -> None:
    trial = _stopped_peer(tmp_path)
    peer = OfflinePeer(tmp_path)
    for op, body in (("api.stop", "sweep"), ("api.kill", trial.key.hex()), ("api.add", [])):
        with pytest.raises(MetaoptError) as info:
            peer.call(op, body)
        assert "no peer is running" in str(info.value) and "metaopt peer start" in str(info.value)
    held = LevelDBStore(DataDir(tmp_path).replica)  # as a Study holds it
    try:
        with pytest.raises(MetaoptError) as info:
            OfflinePeer(tmp_path, patience=0.2).call("api.experiments")
        assert (
            "is in use (its peer is starting, a Study holds it, or another read has for long);"
            " try again in a moment"
        ) in str(info.value)
    finally:
        held.close()


def test_a_read_waits_for_another_read_of_the_replica(tmp_path: Path) -> None:
    """Two offline reads at once (`best` and `export` of a stopped peer): LevelDB lets one in,
    and the other failed at once with "in use (its peer is starting, or a Study holds it)",
    though neither was there (1 of 30 reads). It waits for the other to end."""
    _stopped_peer(tmp_path)
    held = LevelDBStore(DataDir(tmp_path).replica)  # as the other read holds it
    release = threading.Timer(1.3, held.close)
    release.start()
    told: list[str] = []
    try:
        [listed] = OfflinePeer(tmp_path, on_wait=told.append).call("api.experiments")
        assert listed["name"] == "sweep"
    finally:
        release.join()
    # A second past, the wait is said once (a Study holding it made `status` silent for 30 s).
    assert told == [f"waiting for another process reading {DataDir(tmp_path).replica} (up to 30 s)"]


def test_a_read_does_not_wait_for_a_peer_starting_on_the_replica(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer that is starting holds the replica for good (and will answer the next try):
    the read says so at once rather than waiting out its patience."""
    _stopped_peer(tmp_path)
    monkeypatch.setattr(DataDir, "running_pid", lambda self: 4242)  # a peer starting there

    def no_wait(delay: float) -> None:
        raise AssertionError("waited for a peer that keeps the replica")

    monkeypatch.setattr(_offline.time, "sleep", no_wait)
    held = LevelDBStore(DataDir(tmp_path).replica)
    try:
        with pytest.raises(MetaoptError, match="is in use"):
            OfflinePeer(tmp_path, patience=60.0).call("api.experiments")
    finally:
        held.close()
    with pytest.raises(MetaoptError) as info:
        OfflinePeer(tmp_path / "elsewhere")
    assert "nor has one run there" in str(info.value)


def test_a_long_log_is_shown_from_a_line_start_and_says_it_was_cut(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A 2.9 MB log printed its last 1 MiB, mid-line, without a word.
    from metaopt.cli import main

    trial = _stopped_peer(tmp_path)
    log = trial_log_path(DataDir(tmp_path), trial.key)
    log.write_text("".join(f"line {i:07d} {'y' * 40}\n" for i in range(60_000)))
    assert main(["logs", trial.key.hex()[:8], "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("line ") and out.out.endswith("line 0059999 " + "y" * 40 + "\n")
    assert len(out.out) <= 1 << 20
    size = log.stat().st_size / (1 << 20)
    assert f"the whole log: {log}" in out.err and f"of {size:.1f} MiB" in out.err


@pytest.mark.integration  # (it opens sockets on 127.0.0.1)
def test_a_second_peer_on_a_data_directory_names_the_one_running_there(tmp_path: Path) -> None:
    # In the foreground it said "the data directory .../replica is in use by another process",
    # with --detach "a peer is already running on ... (pid N)": the same, said alike.
    from metaopt.peer._node import _open_store
    from tests.metaopt.peer.cluster import Cluster

    cluster = Cluster(tmp_path)
    try:
        peer = cluster.start_peer("a")
        assert peer.proc is not None
        with pytest.raises(MetaoptError) as info:
            _open_store(DataDir(peer.data_dir), patience=0.2)
        said = str(info.value)
        assert f"a peer is already running on {peer.data_dir} (pid {peer.proc.pid})" in said
        assert "metaopt peer stop --data-dir" in said and "\n" not in said
    finally:
        cluster.close()


def test_a_peer_starting_beside_a_long_read_of_its_replica_waits_for_it(tmp_path: Path) -> None:
    # A read of a million records holds the replica's lock 12-20 s: a peer started meanwhile
    # gave up after 5 s ("... in use by another process (or a `metaopt status` read held it)").
    from metaopt.peer._node import _open_store

    dirs = DataDir(tmp_path)
    dirs.ensure()
    reader = LevelDBStore(dirs.replica)  # (no peer runs here: a read holds it)
    threading.Timer(1.0, reader.close).start()
    store = _open_store(dirs, patience=0.2, read_patience=30)
    store.close()


@pytest.mark.parametrize("damaged", ["output.log", "clean.lock"])
def test_a_damaged_data_directory_read_offline_is_one_line(tmp_path: Path, damaged: str) -> None:
    """The live peer says one line when its handler meets a damaged directory (a log that is
    a directory, EIO on a failing disk); with the peer stopped, `logs` and `clean` were a
    traceback."""
    trial = _stopped_peer(tmp_path)
    dirs = DataDir(tmp_path)
    if damaged == "output.log":
        log = trial_log_path(dirs, trial.key)
        log.unlink()
        log.mkdir()
        op, body, path = "api.logs", trial.key.hex()[:8], log
    else:
        dirs.clean_lock.mkdir()
        op, body, path = "api.clean", {"dry_run": True}, dirs.clean_lock
    with pytest.raises(MetaoptError) as refused:
        OfflinePeer(tmp_path).call(op, body)
    assert str(refused.value) == (f"{path}: Is a directory; check the disk and the data directory")


def test_a_crashed_peers_pid_reused_by_a_process_naming_metaopt_is_not_the_peer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pid file left by a crash names a pid reused since: by `tail -f` of the default data
    directory's log (~/.local/share/metaopt), say, whose command line names metaopt. It was
    taken for the peer: `status` did not read the replica and told the user to kill it, and
    `peer start` refused to start."""
    import subprocess
    import sys

    from metaopt.cli import main

    root = tmp_path / "share" / "metaopt"
    _stopped_peer(root)
    dirs = DataDir(root)
    (root / "peer.address").write_text("127.0.0.1:1\n")  # (left by the crash)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(root)])
    try:
        dirs.pid_file.write_text(f"{other.pid}\n")
        assert dirs.running_pid() is None
        assert main(["status", "--data-dir", str(root)]) == 0
        out = capsys.readouterr()
        assert "sweep" in out.out and f"kill {other.pid}" not in out.err
        # A peer holds its replica (here a Node of this process): it is told by that.
        node = Node(PeerConfig(data_dir=root, port=0, mdns=False))
        try:
            assert _identity._has_open(os.getpid(), dirs.replica / "LOCK") is True
        finally:
            asyncio.run(node.stop())
        assert _identity._has_open(os.getpid(), dirs.replica / "LOCK") is False
    finally:
        other.kill()
        other.wait()


def test_a_peer_of_another_data_directory_is_not_this_ones(tmp_path: Path) -> None:
    """A crashed peer's pid reused by a peer of another data directory (holding that one's
    replica, `metaopt peer start` in its command line) was this directory's running peer:
    status said to kill it, and peer start refused."""
    import subprocess
    import sys

    a, b = DataDir(tmp_path / "A"), DataDir(tmp_path / "B")
    LevelDBStore(a.replica).close()  # (A's peer crashed: no one holds its replica)
    hold = (
        "import sys, time; from crdt import LevelDBStore; s = LevelDBStore(sys.argv[1]);"
        " print('held', flush=True); time.sleep(60)"
    )
    argv = [sys.executable, "-c", hold, str(b.replica), "-m", "metaopt", "peer", "start"]
    repo = str(Path(__file__).resolve().parents[3])
    other = subprocess.Popen(argv, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": repo})
    try:
        assert other.stdout is not None and other.stdout.readline() == b"held\n"
        a.pid_file.write_text(f"{other.pid}\n")
        b.pid_file.write_text(f"{other.pid}\n")
        assert (a.running_pid(), b.running_pid()) == (None, other.pid)
    finally:
        other.kill()
        other.wait()
        if other.stdout is not None:
            other.stdout.close()
