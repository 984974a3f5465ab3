"""A data directory's small files: unreadable or unwritable ones are one line, not a traceback."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path
from typing import Any

import pytest

from crdt import ClusterKey
from metaopt._errors import MetaoptError
from metaopt.peer import _identity
from metaopt.peer._identity import DataDir
from metaopt.peer._local import LocalPeer


@pytest.mark.parametrize("name", ["cluster.key", "peer.address", "node_id"])
@pytest.mark.parametrize("damage", ["bytes", "directory"])
def test_a_small_file_that_is_not_text_is_one_line(tmp_path: Path, name: str, damage: str) -> None:
    # '\xff\xfe' in cluster.key or peer.address, or a directory in their place, was a
    # UnicodeDecodeError or IsADirectoryError traceback from `peer start`, `status`, `stop`.
    dirs = DataDir(tmp_path)
    dirs.ensure()
    dirs.node_id()
    dirs.write_key(ClusterKey.generate(os.urandom(32)).to_text())
    dirs.write_started("127.0.0.1:1")
    path = tmp_path / name
    path.unlink()
    if damage == "bytes":
        path.write_bytes(b"\xff\xfe\x00")
    else:
        path.mkdir()
    read = {"cluster.key": dirs.read_key, "peer.address": dirs.read_address}
    with pytest.raises(MetaoptError, match=rf"cannot read .*{name} .*it is not what a peer writes"):
        read.get(name, dirs.read_node_id)()
    with pytest.raises(MetaoptError) as caught:
        LocalPeer(tmp_path)
    assert "\n" not in str(caught.value)


def test_a_file_that_cannot_be_written_is_one_line_and_leaves_no_partial_file(
    tmp_path: Path,
) -> None:
    # A new peer on a full disk: an OSError traceback from node_id(), and a node_id.tmp left.
    dirs = DataDir(tmp_path)
    dirs.ensure()
    (tmp_path / "peer.pid").mkdir()  # the rename over it fails as a full disk's write does
    with pytest.raises(MetaoptError, match=r"cannot write .*peer.pid: it is a directory"):
        dirs.write_started("127.0.0.1:1")
    assert not dirs.address_file.exists()  # (it says the peer is up: never before the pid)
    assert sorted(os.listdir(tmp_path)) == ["bundles", "peer.pid", "trials"]
    dirs.write_peers(["127.0.0.1:2"])  # a cache: never an error
    (tmp_path / "peers").unlink()
    (tmp_path / "peers").mkdir()
    dirs.write_peers(["127.0.0.1:3"])


def test_node_id_and_key_reach_the_disk_before_their_names(
    tmp_path: Path, fsynced: list[str]
) -> None:
    # Unsynced, a crash (an ext4 abort, as a power cut) left node_id and cluster.key 0 bytes
    # long, 4 of 4: a lone peer's key was lost for good. Each is synced under its temporary
    # name, and its folder once the name is in place.
    synced = fsynced
    dirs = DataDir(tmp_path)
    dirs.ensure()
    _identity.keep_node_id(tmp_path / "node_id", secrets.token_bytes(16))
    dirs.write_key("a key")
    for name in ("node_id", "cluster.key"):
        written = [i for i, p in enumerate(synced) if p.startswith(f"{tmp_path}/{name}.")]
        assert written and written[0] < synced.index(str(tmp_path)), (name, synced)
        synced.remove(str(tmp_path))  # (each name's folder synced once it is in place)
    assert (tmp_path / "cluster.key").read_text() == "a key\n"


def test_a_file_system_that_cannot_sync_a_folder_still_takes_a_node_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Some file systems refuse fsync on a folder (EINVAL): a peer must still start there.
    fsync = os.fsync

    def no_folders(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", no_folders)
    new = secrets.token_bytes(16)
    assert _identity.keep_node_id(tmp_path / "node_id", new) == new
    DataDir(tmp_path).write_key("a key")


def test_a_node_id_made_a_directory_is_a_damaged_peer_not_none(tmp_path: Path) -> None:
    # `status` said "no peer is running on D, nor has one run there" beside its history.
    (tmp_path / "node_id").mkdir()
    (tmp_path / "replica").mkdir()
    assert DataDir.holds_peer(tmp_path)
    with pytest.raises(MetaoptError, match=r"cannot read .*node_id"):
        DataDir(tmp_path).read_node_id()


@pytest.mark.parametrize("name", ["trials", "bundles"])
def test_a_file_where_a_data_directory_needs_a_folder_is_named(tmp_path: Path, name: str) -> None:
    # A file `trials` said "cannot create the data directory <root>: File exists".
    (tmp_path / name).write_text("")
    with pytest.raises(MetaoptError) as info:
        DataDir(tmp_path).ensure()
    assert str(info.value) == (
        f"cannot create {tmp_path / name}: it is a file, not a directory; move it aside, or"
        " choose another --data-dir"
    )


def test_a_study_s_directory_is_no_peer_s_data_directory(tmp_path: Path) -> None:
    # `metaopt peer start --data-dir` on a Study's path= started: the peer took the Study's
    # node id and replica, sent its experiment (no command) to every peer as an active one
    # for good, and the Study then refused its own directory (a README walkthrough).
    import metaopt

    path = tmp_path / "study"
    with metaopt.Study({"lr": "loguniform(1e-5, 1)"}, path=path, name="mine") as study:
        study.tell(study.ask(), 0.3)
    assert DataDir.holds_study(path)
    with pytest.raises(MetaoptError, match=r"is a Study's directory \(its path=\), not a peer's"):
        DataDir(path).ensure()
    assert not (path / "trials").exists()
    with metaopt.Study({"lr": "loguniform(1e-5, 1)"}, path=path, name="mine") as study:
        assert len(study.trials) == 1
    # A peer's own directory is none, from its first start on.
    peer = DataDir(tmp_path / "peer")
    peer.ensure()
    peer.node_id()
    (peer.root / "replica").mkdir()
    assert DataDir.holds_peer(peer.root) and not DataDir.holds_study(peer.root)
    peer.ensure()


def test_two_starts_on_one_fresh_directory_take_one_node_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = DataDir(tmp_path / "d"), DataDir(tmp_path / "d")
    first.ensure()
    draw = secrets.token_bytes
    got: dict[str, bytes] = {}
    raced = []

    def racing(n: int) -> bytes:
        value = draw(n)
        if n == 16 and not raced:
            raced.append(True)
            # The other start, between this one's read (no node_id yet) and its write.
            got["second"] = second.node_id()
        return value

    monkeypatch.setattr(_identity.secrets, "token_bytes", racing)
    got["first"] = first.node_id()
    on_disk = DataDir(tmp_path / "d").read_node_id()
    # Whichever of the two gets the replica's lock, the directory must name its id.
    assert got["first"] == got["second"] == on_disk, (
        f"first start took {got['first'].hex()[:8]}, second {got['second'].hex()[:8]},"
        f" node_id names {on_disk.hex()[:8] if on_disk else None}"
    )


def _node_id_on_start(root: Path) -> bytes:
    """The node id a peer takes when it starts on root (its store closed again)."""
    from metaopt.peer._config import PeerConfig
    from metaopt.peer._node import Node

    node = Node(PeerConfig(data_dir=root, port=0, mdns=False))
    node.store.close()
    return node.node_id


def _replica_moved_aside(tmp_path: Path) -> tuple[Path, bytes]:
    """A data directory a peer started on once, its replica then moved aside; and the node
    id it had."""
    root = tmp_path / "d"
    first = _node_id_on_start(root)
    os.rename(root / "replica", tmp_path / "aside")
    return root, first


def test_a_node_id_is_renewed_only_when_the_replica_it_wrote_is_gone(tmp_path: Path) -> None:
    # A fresh directory given a node_id (provisioning, tests) has no replica either, and
    # keeps its id: only replica.owner tells a replica that was made and lost.
    given = secrets.token_bytes(16)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "node_id").write_text(given.hex() + "\n")
    assert _node_id_on_start(fresh) == given
    assert (fresh / "replica.owner").read_text() == given.hex() + "\n"
    assert _node_id_on_start(fresh) == given  # a restart keeps it

    # One whose replica an older release made has no replica.owner: it is claimed, not lost.
    (fresh / "replica.owner").unlink()
    assert _node_id_on_start(fresh) == given
    assert DataDir(fresh).owner_file.read_text() == given.hex() + "\n"

    os.rename(fresh / "replica", tmp_path / "aside")
    renewed = _node_id_on_start(fresh)
    assert renewed != given
    assert DataDir(fresh).read_node_id() == renewed
    assert (fresh / "replica.owner").read_text() == renewed.hex() + "\n"
    assert _node_id_on_start(fresh) == renewed

    # replica.owner naming another node (a node_id deleted as its corrupt error says, or
    # replaced by hand) says nothing of this one's replica.
    (fresh / "node_id").unlink()
    os.rename(fresh / "replica", tmp_path / "aside2")
    other = _node_id_on_start(fresh)
    assert other not in (given, renewed)
    assert DataDir(fresh).read_node_id() == other


def test_a_replica_owner_that_is_not_a_file_is_one_line(tmp_path: Path) -> None:
    data = DataDir(tmp_path / "d")
    data.ensure()
    data.owner_file.mkdir()
    assert not data.lost_noted(data.node_id())
    with pytest.raises(MetaoptError, match=r"replica.owner: it is a directory.*remove it"):
        _node_id_on_start(data.root)


@pytest.mark.parametrize(
    "damage",
    ["not utf-8", "empty", "NULs", "not hex", "cut short", "upper case", "removed"],
)
def test_a_replica_owner_that_names_no_node_still_tells_a_lost_replica(
    tmp_path: Path, damage: str
) -> None:
    # Unreadable, replica.owner was taken for none, and damaged to text that names no node
    # (NULs, as a power cut leaves a file) for another node's: a replica moved aside kept
    # its node id (reviews: 26 and 22 numbers taken twice). It says a replica was made here;
    # and once removed (as its error says of a directory there), the peers it talked to do.
    root, first = _replica_moved_aside(tmp_path)
    owner = root / "replica.owner"
    written = {
        "not utf-8": b"\xff\xfe not text",
        "empty": b"",
        "NULs": b"\0" * 33,
        "not hex": b"hello\n",
        "cut short": first.hex()[:16].encode(),
        "upper case": first.hex().upper().encode(),
    }
    if damage == "removed":
        owner.unlink()
        (root / "peers").write_text("127.0.0.1:9\n")  # (as a peer that talked to one keeps)
    else:
        owner.write_bytes(written[damage])
    renewed = _node_id_on_start(root)
    assert renewed != first
    assert (root / "replica.owner").read_text() == renewed.hex() + "\n"


def test_a_start_that_crashed_after_making_the_new_replica_still_takes_a_new_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The open makes the new replica (its CURRENT) before the id is renewed: a crash between
    # the two left the old id beside an empty replica, which the next start took for its own.
    root, first = _replica_moved_aside(tmp_path)

    def crash(self: DataDir) -> bytes:
        raise KeyboardInterrupt  # (as a kill would, once the open made the replica)

    with monkeypatch.context() as patched:
        patched.setattr(DataDir, "renew_node_id", crash)
        with pytest.raises(KeyboardInterrupt):
            _node_id_on_start(root)
    assert (root / "replica" / "CURRENT").exists() and DataDir(root).read_node_id() == first
    assert _node_id_on_start(root) != first


def test_a_start_that_waited_for_the_lock_takes_the_id_the_first_start_renewed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two starts on a lost replica: the second read node_id before the first renewed it,
    # then waited for the replica's lock; it went on under the old id, with the new
    # replica the first had made (numbering from 1 again).
    from metaopt.peer import _node

    root, old = _replica_moved_aside(tmp_path)
    real_open = _node._open_store
    taken: list[bytes] = []

    def first_start_meanwhile(dirs: DataDir, *args: Any) -> object:
        if not taken:  # (the first start's own open is the real one)
            taken.append(b"")
            taken[0] = _node_id_on_start(root)  # it held the lock, renewed, and stopped
        return real_open(dirs, *args)

    with monkeypatch.context() as patched:
        patched.setattr(_node, "_open_store", first_start_meanwhile)
        second = _node_id_on_start(root)
    assert taken[0] != old and second == taken[0] == DataDir(root).read_node_id()


def test_a_replica_put_back_after_a_start_noted_it_lost_keeps_the_node_id(
    tmp_path: Path,
) -> None:
    # A start found the replica gone and noted it, then failed before its open; the replica
    # was put back. It holds the node's own records: it is that node's replica, and the id
    # stays (only Study tests covered it: a mutation audit).
    from metaopt._records import CONTROL, ExperimentSpec, experiment_record
    from metaopt.peer._config import PeerConfig
    from metaopt.peer._node import Node

    root = tmp_path / "d"
    node = Node(PeerConfig(data_dir=root, port=0, mdns=False))
    exp = experiment_record(ExperimentSpec("e", {"x": "uniform(0, 1)"}, command=("t",)))
    node.store.add([exp])
    node.writer.write(CONTROL, {"action": "stop"}, [exp.key])
    node.store.close()
    os.rename(root / "replica", tmp_path / "aside")
    DataDir(root).note_if_lost(node.node_id)
    assert DataDir(root).lost_noted(node.node_id)
    os.rename(tmp_path / "aside", root / "replica")
    assert _node_id_on_start(root) == node.node_id == DataDir(root).read_node_id()
    assert not DataDir(root).lost_noted(node.node_id)


@pytest.mark.parametrize("ran", ["never", "a trial", "talked to a peer", "started"])
def test_without_replica_owner_only_what_a_peer_leaves_says_its_replica_was_made(
    tmp_path: Path, ran: str
) -> None:
    # A directory of the last release (no replica.owner) whose replica was moved kept its id
    # (18 numbers taken twice), and one given a node_id and a cluster key by provisioning
    # took a new one, saying its replica was gone (4 of 4): a key says neither, nor beside
    # the folders a start makes, which `peer start --detach` makes before the peer starts,
    # and a failed start too (counted so, the given id was lost 4 of 4: a fourth check).
    given = secrets.token_bytes(16)
    root = tmp_path / "d"
    root.mkdir()
    (root / "node_id").write_text(given.hex())
    DataDir(root).write_key(ClusterKey.generate(os.urandom(32)).to_text())
    if ran == "a trial":
        (root / "trials" / "0123456789abcdef").mkdir(parents=True)
    elif ran == "talked to a peer":
        (root / "peers").write_text("127.0.0.1:9\n")
    elif ran == "started":
        DataDir(root).ensure()  # (trials/ and bundles/, empty)
    taken = _node_id_on_start(root)
    assert (taken == given) is (ran in ("never", "started"))


def test_a_replica_moved_aside_while_a_start_waits_for_its_lock_is_noted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A start waits while a read holds the replica; moved aside meanwhile, the next try made
    # an empty replica, and the start, having looked before, kept its id (a review's worry).
    from crdt import StoreLocked
    from metaopt.peer import _node

    root = tmp_path / "d"
    first = _node_id_on_start(root)
    real = _node.LevelDBStore
    tries: list[Path] = []

    def held_once(path: Path) -> object:
        if not tries:
            tries.append(path)
            os.rename(root / "replica", tmp_path / "aside")  # (by the reader's user)
            raise StoreLocked("in use by another process")
        return real(path)

    monkeypatch.setattr(_node, "LevelDBStore", held_once)
    assert _node_id_on_start(root) != first
