"""A data directory's files, as a mutation audit found unpinned: where it is by default, the
peers it remembers (at most 16), the key file's permissions, what the pid file may name, when
a process counts as gone, and small files rewritten over a leftover temporary one."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from pathlib import Path

import pytest

from metaopt._errors import MetaoptError
from metaopt.peer import _identity
from metaopt.peer._identity import (
    MAX_REMEMBERED,
    DataDir,
    create_once,
    default_data_dir,
    pid_gone,
    trial_dir,
    trial_log_path,
)


def test_the_default_data_directory_follows_xdg_data_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: the default is $XDG_DATA_HOME/metaopt, else ~/.local/share/metaopt (an empty
    XDG_DATA_HOME counts as unset, as the XDG spec says)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "metaopt"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for unset in (lambda: monkeypatch.setenv("XDG_DATA_HOME", ""),
                  lambda: monkeypatch.delenv("XDG_DATA_HOME")):  # fmt: skip
        unset()
        assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "metaopt"


def test_a_trials_folder_is_named_by_the_first_16_hex_digits_of_its_key(tmp_path: Path) -> None:
    """Folders of trials run by an earlier release must still be found (logs, checkpoints,
    `metaopt clean`): the name is part of the data directory's format."""
    dirs = DataDir(tmp_path)
    key = bytes(range(32))
    assert trial_dir(dirs, key) == tmp_path.resolve() / "trials" / "0001020304050607"
    assert trial_log_path(dirs, key) == trial_dir(dirs, key) / "output.log"


def test_at_most_16_peers_are_remembered_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    """The peers file is called all at once each gossip round while none answers: 16 at most
    whichever way it got longer (written by us, or edited), and blank lines are not peers."""
    assert MAX_REMEMBERED == 16
    dirs = DataDir(tmp_path)
    dirs.ensure()
    addrs = [f"10.0.0.{i}:7787" for i in range(20)]
    dirs.write_peers(addrs)
    assert dirs.peers_file.read_text().splitlines() == addrs[:16]
    dirs.peers_file.write_text("\n  \n" + "".join(f" {a} \n\n" for a in addrs))
    assert dirs.read_peers() == addrs[:16]


def test_a_peers_file_that_is_not_text_is_read_not_refused(tmp_path: Path) -> None:
    """The peers file is a cache: bytes that are not UTF-8 are replaced (the addresses are
    checked one by one later), never an error that stops a peer from starting."""
    dirs = DataDir(tmp_path)
    dirs.ensure()
    dirs.peers_file.write_bytes(b"10.0.0.1:7787\n\xff\xfe:1\n")
    assert dirs.read_peers()[0] == "10.0.0.1:7787" and len(dirs.read_peers()) == 2


def test_a_folder_with_a_node_id_but_no_replica_holds_no_peer(tmp_path: Path) -> None:
    """holds_peer needs both: a node_id alone (a folder a user made, or one cut short) is not
    a stopped peer to read results from."""
    (tmp_path / "node_id").write_text("00" * 16 + "\n")
    assert not DataDir.holds_peer(tmp_path)
    (tmp_path / "replica").mkdir()
    assert DataDir.holds_peer(tmp_path)


def test_a_data_directory_that_is_a_file_is_named_so(tmp_path: Path) -> None:
    """--data-dir naming a file says so, not "cannot create the data directory: File exists"."""
    (tmp_path / "file").write_text("")
    with pytest.raises(MetaoptError) as info:
        DataDir(tmp_path / "file").ensure()
    assert str(info.value) == (
        f"{tmp_path / 'file'} is a file, not a directory; choose another --data-dir"
    )


def test_the_node_id_is_made_once_and_kept(tmp_path: Path) -> None:
    """A data directory keeps its node id: a new one each start would mean a new node whose
    sequence numbers and trials are not the old one's."""
    dirs = DataDir(tmp_path)
    dirs.ensure()
    first = dirs.node_id()
    assert dirs.node_id() == first == DataDir(tmp_path).read_node_id()
    assert (tmp_path / "node_id").read_text() == first.hex() + "\n"


@pytest.mark.parametrize("text", ["00" * 17, "00" * 15, "zz" * 16, ""])
def test_a_node_id_of_the_wrong_length_or_not_hex_is_corrupt(tmp_path: Path, text: str) -> None:
    """A node id longer than 16 bytes is as corrupt as a shorter one: taking a prefix or the
    whole would sign records under an id no peer knew this node by."""
    (tmp_path / "node_id").write_text(text + "\n")
    with pytest.raises(MetaoptError, match="node_id is corrupt; delete it"):
        DataDir(tmp_path).read_node_id()
    (tmp_path / "node_id").unlink()  # as it says: a new id, the directory kept
    assert len(DataDir(tmp_path).node_id()) == 16


def test_the_cluster_key_file_is_readable_by_its_owner_alone(tmp_path: Path) -> None:
    """The key authenticates every frame of the cluster: another user on the machine must not
    be able to read it (and so join, or forge records)."""
    dirs = DataDir(tmp_path)
    dirs.ensure()
    old = os.umask(0o022)
    try:
        dirs.write_key("mo1-secret")
    finally:
        os.umask(old)
    assert stat.S_IMODE(dirs.key_file.stat().st_mode) == 0o600
    assert dirs.read_key() == "mo1-secret"


def test_a_leftover_temporary_key_file_does_not_lend_the_key_its_mode(tmp_path: Path) -> None:
    """A crash between writing and renaming can leave cluster.key.tmp behind, readable by all:
    the key written next through it must still be its owner's alone."""
    dirs = DataDir(tmp_path)
    dirs.ensure()
    leftover = tmp_path / "cluster.key.tmp"
    leftover.write_text("old")
    leftover.chmod(0o644)
    dirs.write_key("mo1-secret")
    assert stat.S_IMODE(dirs.key_file.stat().st_mode) == 0o600
    assert dirs.read_key() == "mo1-secret" and not leftover.exists()


def test_each_small_file_has_its_own_temporary_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """peer.pid and peer.address were both written through peer.tmp: two writers (a peer and a
    stale second start) could rename each other's content into place."""
    renamed: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        renamed.append((Path(src).name, Path(dst).name))
        real_replace(src, dst)

    dirs = DataDir(tmp_path)
    dirs.ensure()
    monkeypatch.setattr(os, "replace", spy)
    dirs.write_started("127.0.0.1:7787")
    written = [dirs.pid_file.name, dirs.started_file.name, dirs.address_file.name]
    assert [dst for _, dst in renamed] == written  # (the address last: it says the peer is up)
    assert all(src.startswith(f"{dst}.{os.getpid()}.") for src, dst in renamed)


def test_two_writers_of_one_file_keep_out_of_each_others_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `peer start` on a fresh directory both write node_id: with one temporary name per
    file, the second writer removed the first's temporary file between its write and its
    rename, and the first failed ("No such file or directory; free some space")."""
    dirs = DataDir(tmp_path)
    dirs.ensure()
    real_replace = os.replace
    cut_in: list[str] = []

    def second_writer_first(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if not cut_in:  # the other writer runs whole between this one's write and rename
            cut_in.append(Path(src).name)
            dirs._replace(Path(dst), "b\n")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", second_writer_first)
    dirs._replace(tmp_path / "node_id", "a\n")
    assert (tmp_path / "node_id").read_text() == "a\n"
    assert sorted(os.listdir(tmp_path)) == ["bundles", "node_id", "trials"]


def test_a_live_writers_temporary_file_is_left_and_a_dead_ones_removed(tmp_path: Path) -> None:
    """Leftovers of a crash are removed (a process gone, or the one name an earlier release
    used), never the temporary file of a writer still running."""
    dirs = DataDir(tmp_path)
    dirs.ensure()
    live = tmp_path / f"peer.pid.{os.getppid()}.0a0b0c0d.tmp"
    gone = tmp_path / "peer.pid.999999999.0a0b0c0d.tmp"
    earlier = tmp_path / "peer.pid.tmp"
    for leftover in (live, gone, earlier):
        leftover.write_text("x")
    dirs.write_started("127.0.0.1:7787")
    assert live.exists() and not gone.exists() and not earlier.exists()


def test_small_files_are_whole_over_a_longer_leftover_temporary_file(tmp_path: Path) -> None:
    """A crash can leave the temporary of peer.pid or peer.address behind, longer than what is
    written next: the new pid file must not end in the old one's bytes."""
    dirs = DataDir(tmp_path)
    dirs.ensure()
    for name in ("peer.pid.tmp", "peer.address.tmp"):
        (tmp_path / name).write_text("9" * 64 + "\n" + "x" * 64)
    dirs.write_started("127.0.0.1:7787")
    assert dirs.read_pid() == os.getpid()
    assert dirs.read_address() == "127.0.0.1:7787"
    assert dirs.address_file.read_text() == "127.0.0.1:7787\n"


@pytest.mark.parametrize("text", ["0\n", "-5\n", "", "12ab\n"])
def test_a_pid_file_naming_no_process_is_none(tmp_path: Path, text: str) -> None:
    """pid 0 or a negative one names a process group, not a peer (a signal to it reaches the
    caller's own group): such a pid file names no peer."""
    (tmp_path / "peer.pid").write_text(text)
    assert DataDir(tmp_path).read_pid() is None


def _spawn(tmp_path: Path, name: str) -> subprocess.Popen[bytes]:
    """A process that waits on stdin (no timer), its executable linked under name; returned
    once it runs that executable (it echoed a line), not while it is still a fork of ours."""
    link = tmp_path / name
    link.symlink_to("/bin/cat")
    # (argv[0] is the bare name: the cmdline must not hold the test folder's path)
    proc = subprocess.Popen(
        [name], executable=str(link), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"up\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == b"up\n"
    return proc


def _end(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    proc.stdout.close()


def test_a_pid_file_naming_another_program_names_no_running_peer(tmp_path: Path) -> None:
    """A pid left by a crash and reused by another program is not the peer: `peer stop` must
    not signal it, and `peer start` must not say a peer runs there."""
    dirs = DataDir(tmp_path)
    other = _spawn(tmp_path, "not-ours")
    peer = _spawn(tmp_path, "metaopt-peer")
    try:
        dirs.pid_file.write_text(f"{other.pid}\n")
        assert not pid_gone(other.pid) and dirs.running_pid() is None
        dirs.pid_file.write_text(f"{peer.pid}\n")
        assert dirs.running_pid() == peer.pid
    finally:
        _end(other)
        _end(peer)
    assert pid_gone(peer.pid) and dirs.running_pid() is None


def test_a_process_whose_name_holds_a_parenthesis_is_not_taken_for_a_zombie(
    tmp_path: Path,
) -> None:
    """/proc/PID/stat puts the name in parentheses, and a name may hold ") Z (": its state is
    read after the last parenthesis, or a live process counts as gone."""
    proc = _spawn(tmp_path, "x) Z (y")
    try:
        assert not pid_gone(proc.pid)
    finally:
        _end(proc)


def test_an_exited_child_not_yet_reaped_is_gone(tmp_path: Path) -> None:
    """A zombie runs nothing: a peer that died as a child not yet reaped is not running."""
    proc = _spawn(tmp_path, "metaopt-zombie")
    try:
        proc.kill()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, left unreaped
        assert pid_gone(proc.pid)
        (tmp_path / "peer.pid").write_text(f"{proc.pid}\n")
        assert DataDir(tmp_path).running_pid() is None
    finally:
        _end(proc)


# A second audit (create_once, node_id, the pid and key files): what it found unpinned.


def _link_fails(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """os.link fails with errno ``code`` (EPERM: a file system with no hard links)."""

    def refuse(src: object, dst: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "link", refuse)


@pytest.mark.parametrize("code", [errno.EPERM, errno.EOPNOTSUPP])
def test_without_hard_links_a_small_file_is_created_by_a_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """FAT and some FUSE file systems refuse hard links (EPERM, EOPNOTSUPP): a data directory
    there still gets its node id, written whole, and no temporary file is left beside it."""
    _link_fails(monkeypatch, code)
    path = tmp_path / "node_id"
    assert create_once(path, "abc\n") is True
    assert path.read_text() == "abc\n"
    assert os.listdir(tmp_path) == ["node_id"]
    dirs = DataDir(tmp_path / "d")
    dirs.ensure()
    node = dirs.node_id()
    assert DataDir(tmp_path / "d").read_node_id() == node


def test_creating_a_file_that_is_there_keeps_it_and_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    """create_once says False and changes nothing when the file exists; either way its
    temporary file is gone (a node_id.<pid>.<random>.tmp at every start would pile up)."""
    path = tmp_path / "node_id"
    assert create_once(path, "first\n") is True
    assert create_once(path, "second\n") is False
    assert path.read_text() == "first\n"
    assert os.listdir(tmp_path) == ["node_id"]


def test_two_creators_at_once_each_write_their_own_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `peer start` (or two Studies) creating one node_id at once: the one that links
    second is told so and the first's content stays. With one temporary name for both, the
    second could not even write its own (the first's was there), and failed."""
    path = tmp_path / "node_id"
    real_link = os.link
    other: list[bool] = []

    def other_first(src: str, dst: str) -> None:
        if not other:  # the other creator runs whole between this one's write and link
            monkeypatch.setattr(os, "link", real_link)
            other.append(create_once(path, "other\n"))
        real_link(src, dst)

    monkeypatch.setattr(os, "link", other_first)
    assert create_once(path, "mine\n") is False
    assert other == [True] and path.read_text() == "other\n"
    assert os.listdir(tmp_path) == ["node_id"]


def test_a_node_id_that_cannot_be_written_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new peer on a full disk: one line naming the file and what to do, not an OSError
    traceback, nor an AssertionError from taking the failure for another start's file."""
    dirs = DataDir(tmp_path)
    dirs.ensure()
    _link_fails(monkeypatch, errno.ENOSPC)
    with pytest.raises(MetaoptError) as info:
        dirs.node_id()
    assert str(info.value).startswith(f"cannot write {tmp_path / 'node_id'}: ")
    assert "free some space" in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["bundles", "trials"]


def test_a_node_id_already_there_is_read_without_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data directory that has its node id is only read (offline reads open a stopped
    peer's directory with node_id(), which may sit on a full disk or a read-only copy):
    writing a new one there first failed with "cannot write ...node_id"."""
    dirs = DataDir(tmp_path)
    dirs.ensure()
    node = dirs.node_id()

    def no_write(path: Path, text: str) -> bool:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(_identity, "create_once", no_write)
    assert DataDir(tmp_path).node_id() == node


def test_a_dead_starts_leftover_node_id_temporary_file_is_removed(tmp_path: Path) -> None:
    """A start killed between writing its node id's temporary file and linking it left it
    behind (or the earlier release's node_id.tmp): the next start removes it."""
    dirs = DataDir(tmp_path)
    dirs.ensure()
    dead = tmp_path / "node_id.999999999.0a0b0c0d.tmp"
    earlier = tmp_path / "node_id.tmp"
    for leftover in (dead, earlier):
        leftover.write_text("00" * 16 + "\n")
    dirs.node_id()
    assert sorted(os.listdir(tmp_path)) == ["bundles", "node_id", "trials"]


def _hold(tmp_path: Path, name: str, lock: Path) -> subprocess.Popen[bytes]:
    """A process named ``name`` holding ``lock`` open, as a peer holds its replica's LOCK;
    returned once it holds it (it echoed a line)."""
    link = tmp_path / name
    link.symlink_to("/bin/sh")
    proc = subprocess.Popen(
        [name, "-c", 'exec 3<"$1"; echo up; read _', name, str(lock)],
        executable=str(link), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
    return proc


def test_a_pid_reused_by_a_read_holding_the_replica_after_a_crash_is_not_the_peer(
    tmp_path: Path,
) -> None:
    """After a crash, a `metaopt status` of the directory that got the dead peer's pid holds
    the replica's LOCK, as the peer did, and its command line names metaopt: it was taken for
    the peer, told to kill itself, and `peer start` refused (a review). The peer's own life
    is written beside its pid (peer.started)."""
    from metaopt.peer._identity import process_start

    dirs = DataDir(tmp_path / "d")
    dirs.replica.mkdir(parents=True)
    (dirs.replica / "LOCK").write_text("")
    reader = _hold(tmp_path, "metaopt-status", dirs.replica / "LOCK")
    try:
        dirs.pid_file.write_text(f"{reader.pid}\n")
        dirs.started_file.write_text(f"{process_start(os.getpid())}\n")  # (the dead peer's)
        assert dirs.running_pid() is None
        dirs.started_file.write_text(f"{process_start(reader.pid)}\n")  # (its own life)
        assert dirs.running_pid() == reader.pid
        for damaged in (b"\xff\n", b"", b"garbage\n", b"a b c\n"):  # (as none: as before it)
            dirs.started_file.write_bytes(damaged)
            assert dirs.running_pid() == reader.pid, damaged
        # Older than the pid file: left by a crash, and a release before it wrote the pid
        # file since (its peer would be taken for none): as none too.
        dirs.started_file.write_text(f"{process_start(os.getpid())}\n")
        os.utime(dirs.started_file, ns=(1, 1))
        assert dirs.running_pid() == reader.pid
    finally:
        _end(reader)


def test_a_start_that_cannot_tell_its_life_leaves_no_stale_one_beside_its_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One a crash left (another life) beside the new pid file: the peer taken for none.
    from metaopt.peer import _identity

    dirs = DataDir(tmp_path)
    dirs.ensure()
    dirs.started_file.write_text("some-boot 1\n")
    monkeypatch.setattr(_identity, "process_start", lambda pid: None)
    dirs.write_started("127.0.0.1:7787")
    assert not dirs.started_file.exists()


def test_a_peer_writes_its_life_beside_its_pid_and_removes_both(tmp_path: Path) -> None:
    import asyncio

    from metaopt.peer._config import PeerConfig
    from metaopt.peer._identity import process_start
    from metaopt.peer._node import Node

    async def run() -> None:
        node = Node(PeerConfig(data_dir=tmp_path / "d", port=0, mdns=False))
        await node.start()
        try:
            dirs = node.dirs
            assert dirs.started_file.read_text() == f"{process_start(os.getpid())}\n"
            assert dirs.running_pid() == os.getpid()
        finally:
            await node.stop()
        assert not any(p.exists() for p in (dirs.pid_file, dirs.started_file))

    asyncio.run(run())


def test_a_pid_file_naming_a_process_holding_this_replica_names_the_running_peer(
    tmp_path: Path,
) -> None:
    """The pid file's process is this directory's peer when it holds this replica's LOCK, and
    not when it holds another's (another data directory's peer: `peer stop` would stop it)."""
    dirs, elsewhere = DataDir(tmp_path / "d"), DataDir(tmp_path / "e")
    for d in (dirs, elsewhere):
        d.replica.mkdir(parents=True)
        (d.replica / "LOCK").write_text("")
    ours = _hold(tmp_path, "metaopt-ours", dirs.replica / "LOCK")
    theirs = _hold(tmp_path, "metaopt-theirs", elsewhere.replica / "LOCK")
    # A peer started by a launcher not named metaopt (a soak's wrapper, a systemd unit's
    # script) was taken for no peer, and reads found its replica in use.
    launched = _hold(tmp_path, "lab-launcher", dirs.replica / "LOCK")
    try:
        dirs.pid_file.write_text(f"{ours.pid}\n")
        assert dirs.running_pid() == ours.pid
        dirs.pid_file.write_text(f"{theirs.pid}\n")
        assert dirs.running_pid() is None
        dirs.pid_file.write_text(f"{launched.pid}\n")
        assert dirs.running_pid() == launched.pid
    finally:
        for proc in (ours, theirs, launched):
            _end(proc)
