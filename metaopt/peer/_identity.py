"""A peer's data directory: its node id, its cluster key and its replica.

The node id is random and lives only here, so a data directory that is lost means a new node
id: sequence numbers are never reused under an old id by a node that forgot what it wrote. So
too a replica that is lost (moved aside, as a damaged one's error advises, or deleted) while
node_id stays: `replica.owner` names the node id that made the replica, and a peer that finds
it naming its id with no replica beside it takes a new id (DataDir.note_if_lost).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import secrets
from pathlib import Path

from crdt import ORIGIN_SIZE
from metaopt._errors import MetaoptError
from metaopt.peer._durable import sync_file, sync_folder

# Peers' addresses kept in a data directory (DataDir.peers_file): enough to find a cluster of
# any size again (one live peer's gossip names the rest), few enough to call them all at once
# each gossip round while none answers.
MAX_REMEMBERED = 16

__all__ = ["DataDir", "default_data_dir", "trial_dir", "trial_log_path"]


def default_data_dir() -> Path:
    """The user's data directory (XDG_DATA_HOME), where a peer keeps its replica by default."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "metaopt"


def trial_dir(dirs: DataDir, trial: bytes) -> Path:
    """The directory of a trial's runs on this peer (checkpoint, output log)."""
    return dirs.trials / trial.hex()[:16]


def trial_log_path(dirs: DataDir, trial: bytes) -> Path:
    """Where a trial's output on this peer is kept (its latest run's)."""
    return trial_dir(dirs, trial) / "output.log"


def _has_open(pid: int, path: Path) -> bool | None:
    """Whether process pid has the file open, as LevelDB keeps its LOCK open while it holds
    it; None where that cannot be told (another user's process, no /proc).

    By the paths its descriptors lead to, not by /proc/locks, whose device numbers are not
    stat()'s on a btrfs subvolume or an overlay (a container's).
    """
    target = os.path.realpath(path)
    try:
        fds = os.listdir(f"/proc/{pid}/fd") if os.path.exists(target) else None
    except OSError:
        fds = None
    if fds is None:  # (no replica yet: nothing to tell by)
        return None
    for fd in fds:
        with contextlib.suppress(OSError):  # (closed meanwhile)
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
    return False


def pid_gone(pid: int) -> bool:
    """Whether no process pid runs (none, or a zombie not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def process_start(pid: int) -> str | None:
    """What tells process pid's life from another's under a reused pid: the boot's id and the
    clock tick since boot at which it started (/proc/PID/stat's field 22); None where that
    cannot be read (no /proc, or no such process)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # (after the name: field 3, the state, on)
    return f"{boot} {fields[19]}" if len(fields) > 19 else None


def _remove_leftovers(path: Path) -> None:
    """Remove the temporary files of path that a crash left: those of a process now gone, and
    the one name an earlier release used for all (``path.tmp``), which may hold a key 0644."""
    for tmp in path.parent.glob(glob.escape(path.name) + ".*tmp"):
        pid = tmp.name[len(path.name) + 1 :].split(".")[0]
        if tmp.name == path.name + ".tmp" or (pid.isdigit() and pid_gone(int(pid))):
            with contextlib.suppress(OSError):
                tmp.unlink()


def create_once(path: Path, text: str) -> bool:
    """Write a small file whole, only if none is there yet; False if one was (kept as it is).

    Linked into place, not renamed over: of two processes creating one file at once (two
    `peer start`, or two Studies, on a new directory each drawing a node id), the one whose
    rename came second overwrote the first's, which went on under an id its directory no
    longer named. Raises OSError.
    """
    _remove_leftovers(path)  # (of a writer killed between its write and its link)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")  # (a name of this write's own)
        sync_file(tmp)  # (unsynced, a crash left node_id and cluster.key empty: see _durable)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
            os.replace(tmp, path)  # no hard links there (FAT, some FUSE): renamed, as before
        sync_folder(path.parent)
        return True
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def parse_node_id(path: Path, text: str) -> bytes:
    """The node id a node_id file's text holds. Raises ValueError saying what it holds."""
    try:
        value = bytes.fromhex(text.strip())
    except ValueError:  # ("non-hexadecimal number found in fromhex() arg at position 0")
        raise ValueError(f"{path} holds no node id (not hexadecimal)") from None
    if len(value) != ORIGIN_SIZE:
        raise ValueError(f"{path} holds {len(value)} bytes, not {ORIGIN_SIZE}")
    return value


def keep_node_id(path: Path, new: bytes) -> bytes:
    """The node id a node_id file holds, else ``new``, written there whole first (of two
    processes at once, the second takes the first's: see create_once). Raises OSError, and
    ValueError for a file that holds no node id."""
    if not path.exists() and create_once(path, new.hex() + "\n"):
        return new
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} holds no node id (not text)") from None
    return parse_node_id(path, text)


def lost_replica_refusal(root: Path, node_id: bytes) -> str:
    """Why a Study given node_id= is not opened where the replica of that node is gone."""
    return (
        f"the replica of node {node_id.hex()} in {root} is gone (moved aside or deleted); go on"
        " without node_id= (under a new node id: sync brings the old trials back), or put the"
        " replica back"
    )


def _corrupt(path: Path) -> MetaoptError:
    # Deleting the file is enough (the README says so of a copied directory): the peer takes
    # a new node id and keeps its replica. Moving the whole directory aside, as it said, lost
    # a lone peer's history.
    return MetaoptError(
        f"{path} is corrupt; delete it (the peer takes a new node id and keeps its replica)"
    )


def _unwritable(path: Path, exc: OSError) -> MetaoptError:
    if path.is_dir():
        return MetaoptError(
            f"cannot write {path}: it is a directory, not what a peer writes there; remove it"
        )
    return MetaoptError(
        f"cannot write {path}: {exc.strerror}; free some space on its disk (or fix its"
        " permissions), or choose another --data-dir"
    )


class DataDir:
    """Paths and small files inside one peer's data directory."""

    # Every name a peer keeps at the top of its data directory (and their writers' temporary
    # files, name.<pid>.<random>.tmp): what a folder that is one holds beside a user's code.
    OWN = frozenset(
        ("replica", "replica.owner", "trials", "bundles", "node_id", "cluster.key", "peers",
         "peer.pid", "peer.address", "peer.started", "peer.log", "clean.lock")
    )  # fmt: skip

    @classmethod
    def is_own(cls, name: str) -> bool:
        """Whether a name at the top of a data directory is the peer's."""
        return name in cls.OWN or (
            name.endswith(".tmp") and any(name.startswith(own + ".") for own in cls.OWN)
        )

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()

    @property
    def replica(self) -> Path:
        return self.root / "replica"

    @property
    def trials(self) -> Path:
        return self.root / "trials"

    @property
    def bundles(self) -> Path:
        return self.root / "bundles"

    @property
    def clean_lock(self) -> Path:
        """Held while `metaopt clean` counts and deletes (by the peer, or with it stopped)."""
        return self.root / "clean.lock"

    @property
    def pid_file(self) -> Path:
        return self.root / "peer.pid"

    @property
    def address_file(self) -> Path:
        return self.root / "peer.address"

    @property
    def started_file(self) -> Path:
        """Which process the pid file names (see process_start), beside it."""
        return self.root / "peer.started"

    @property
    def key_file(self) -> Path:
        return self.root / "cluster.key"

    @property
    def peers_file(self) -> Path:
        return self.root / "peers"

    def read_peers(self) -> list[str]:
        """The addresses of the peers this one last talked to, one a line (write_peers); none
        if the file is missing or unreadable. Unchecked: callers validate each address."""
        try:
            text = self.peers_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return [line.strip() for line in text.splitlines() if line.strip()][:MAX_REMEMBERED]

    def write_peers(self, addrs: list[str]) -> None:
        """Remember these addresses (best effort: a full disk leaves the last list)."""
        with contextlib.suppress(MetaoptError):
            self._replace(self.peers_file, "".join(f"{a}\n" for a in addrs[:MAX_REMEMBERED]))

    @staticmethod
    def holds_peer(path: Path) -> bool:
        """Whether ``path`` is a peer's data directory (it has a node id and a replica)."""
        # (exists, not is_file: a node_id made a directory is a damaged peer's, said so by
        # read_node_id, not "no peer has run there")
        return (path / "node_id").exists() and (path / "replica").is_dir()

    @classmethod
    def holds_study(cls, path: Path) -> bool:
        """Whether ``path`` is a Study's directory: a node id and a replica, and none of what
        a peer makes there before anything else (its trials, bundles and cluster key)."""
        return cls.holds_peer(path) and not any(
            (path / name).exists() for name in ("trials", "bundles", "cluster.key")
        )

    def ensure(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise MetaoptError(f"{self.root} is a file, not a directory; choose another --data-dir")
        if self.holds_study(self.root):
            # A peer took over the Study's node id and replica: the Study then refused its
            # own directory, and its experiment (no command) went to every peer for good.
            raise MetaoptError(
                f"{self.root} is a Study's directory (its path=), not a peer's; choose another"
                " --data-dir"
            )
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MetaoptError(
                f"cannot create the data directory {self.root}: {exc.strerror};"
                " choose another with --data-dir"
            ) from None
        for path in (self.trials, self.bundles):
            # Named, not the data directory: a file `trials` there read as the directory's
            # fault ("cannot create the data directory ...: File exists").
            try:
                path.mkdir(exist_ok=True)
            except OSError as exc:
                what = (
                    "it is a file, not a directory; move it aside"
                    if path.exists()
                    else f"{exc.strerror}; fix the data directory's permissions"
                )
                raise MetaoptError(
                    f"cannot create {path}: {what}, or choose another --data-dir"
                ) from None

    def node_id(self) -> bytes:
        """This directory's node id, created on first use."""
        value = self.read_node_id()
        if value is not None:
            return value
        path = self.root / "node_id"
        try:  # (another start's, made a moment before, is the one the directory names)
            return keep_node_id(path, secrets.token_bytes(ORIGIN_SIZE))
        except OSError as exc:
            raise _unwritable(path, exc) from None
        except ValueError:
            raise _corrupt(path) from None

    @property
    def owner_file(self) -> Path:
        return self.root / "replica.owner"

    def _owner(self) -> list[str] | None:
        """replica.owner's words (the node id that made the replica, in lower-case hex, then
        "lost" once that replica is found gone); None if there is no such file, [] if it
        holds no node id (unreadable, or damaged: NULs, as a power cut can leave it)."""
        try:
            owner = self._read(self.owner_file)
        except MetaoptError:
            return []
        if owner is None:
            return None
        words = owner.split()
        try:
            named = parse_node_id(self.owner_file, words[0]) if words else None
        except ValueError:
            named = None
        return [] if named is None else [named.hex(), *words[1:]]

    def note_if_lost(self, node_id: bytes) -> None:
        """Before the replica is opened (which makes an empty one): if node_id made the replica
        and it is gone (moved aside or deleted), say so in replica.owner (see replica_claimed).

        Then node_id's next record would take the number 1 again, a number its old records
        hold, and every peer would keep both records of each such number (an equivocation).
        Told by replica.owner (claim_replica), not by the replica alone: a fresh directory
        given a node_id file (by provisioning, or by a test) has no replica yet either. Kept
        in the file, not in memory, so that a start that crashed once the open had made the
        new replica, before it took a new id, still knows; and any start may write it (it
        says only what is so), while renewing the id waits for the replica's lock.
        """
        owner = self._owner()
        # A damaged file says a replica was made here, not whose: counted as this id's, as a
        # new id costs little and a number taken twice lasts for good. With none there (a
        # fresh directory, or one whose replica a release before replica.owner made, or
        # whose replica.owner was removed), what a peer leaves once its replica is open says
        # so: the peers it talked to, a trial's folder. (Not the cluster key: provisioning
        # may put one beside a node_id it gives.)
        made = self._ran_here() if owner is None else not owner or owner[0] == node_id.hex()
        if made and not (self.replica / "CURRENT").is_file() and owner != [node_id.hex(), "lost"]:
            self._replace(self.owner_file, f"{node_id.hex()} lost\n")

    def _ran_here(self) -> bool:
        """Whether a peer ran here past the opening of its replica: it kept the addresses of
        the peers it talked to, or a trial's folder."""
        if self.peers_file.exists():
            return True
        try:
            with os.scandir(self.trials) as entries:
                return next(entries, None) is not None
        except OSError:
            return False

    def lost_noted(self, node_id: bytes) -> bool:
        """Whether note_if_lost found the replica node_id made gone, and no start has taken a
        new id for it since."""
        return self._owner() == [node_id.hex(), "lost"]

    def replica_claimed(self, node_id: bytes, holds_own: bool, renewable: bool = True) -> bytes:
        """The node id to write under in the replica just opened, its lock held: a new one if
        note_if_lost found the replica node_id made gone and the one open holds none of its
        records (one put back, as a refusal advises, holds them: it is that replica); else
        node_id. Noted in replica.owner. Raises MetaoptError if a note cannot be written, or,
        for a node id that may not be renewed (one a Study was given), if it would have been."""
        if self.lost_noted(node_id) and not holds_own:
            if not renewable:
                raise MetaoptError(lost_replica_refusal(self.root, node_id))
            node_id = self.renew_node_id()
        self.claim_replica(node_id)
        return node_id

    def renew_node_id(self) -> bytes:
        """A new node id for this directory, written over the old one. Only with the replica's
        lock held, so no other process is reading or writing node_id meanwhile."""
        new = secrets.token_bytes(ORIGIN_SIZE)
        self._replace(self.root / "node_id", new.hex() + "\n")
        return new

    def claim_replica(self, node_id: bytes) -> None:
        """Note the replica as node_id's (see note_if_lost), once it is open. Raises
        MetaoptError if the note cannot be written."""
        if self._owner() != [node_id.hex()]:
            self._replace(self.owner_file, node_id.hex() + "\n")

    def replica_gone(self) -> bool:
        """Whether there is no database in the replica's folder to read: it is missing, or
        emptied, or holds what a crash while making one left (no CURRENT, no records). Such
        a folder is not opened by a read: the open would make a replica there, which a
        peer would then take for the one its node id wrote into (see note_if_lost)."""
        try:
            names = os.listdir(self.replica)
        except OSError:
            return True
        if "CURRENT" in names:
            return False
        for name in names:
            if name.endswith((".ldb", ".sst", ".log")):
                with contextlib.suppress(OSError):  # (removed meanwhile)
                    if (self.replica / name).stat().st_size:
                        return False
        return True

    def made_replica(self) -> bool:
        """Whether a peer's replica was made here (and may be gone since): replica.owner is
        there, or (by a release before it) what a peer leaves once its replica is open. As
        note_if_lost: not the cluster key, nor an empty replica folder beside node_id (a
        directory provisioned with them, where no peer has run, was told its replica was
        gone: two reviews)."""
        return self.owner_file.exists() or self._ran_here()

    def read_node_id(self) -> bytes | None:
        """This directory's node id, or None if it has none yet (never created here: a reader
        such as the CLI must not give a data directory a new identity)."""
        path = self.root / "node_id"
        text = self._read(path)
        if text is None:
            return None
        try:
            return parse_node_id(path, text)
        except ValueError:
            raise _corrupt(path) from None

    def read_address(self) -> str | None:
        """The address its running peer listens on (peer.address), None if there is none."""
        text = self._read(self.address_file)
        return None if text is None else text.strip()

    def write_started(self, addr: str) -> None:
        """Say where this directory's peer listens, and its pid (for the CLI). The address
        comes last: it says the peer is up (a pid file that could not be written left one
        behind, and `peer start --detach` said the peer had started)."""
        self._replace(self.pid_file, f"{os.getpid()}\n")
        started = process_start(os.getpid())  # (a pid file alone is read as before it)
        if started is not None:
            self._replace(self.started_file, started + "\n")
        else:  # (one a crash left would name another life: this peer taken for none)
            with contextlib.suppress(OSError):  # (if it stays, older than the pid file: stale)
                self.started_file.unlink()
        self._replace(self.address_file, addr + "\n")

    def _read(self, path: Path) -> str | None:
        """A small file of this directory as text; None if it does not exist.

        A file made unreadable (a directory in its place, bytes that are not text) is one line
        saying so: it was a traceback from every command that read it.
        """
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not text"
            raise MetaoptError(
                f"cannot read {path} ({why}); it is not what a peer writes there: remove it, or"
                " move the data directory aside to start anew"
            ) from None

    def _replace(self, path: Path, text: str, mode: int = 0o644) -> None:
        """Write a small file whole (through a temporary file and a rename) or not at all."""
        # A name of this write's own: two processes writing one file (two `peer start` on a
        # fresh directory both write node_id) each removed or renamed the other's temporary
        # file when it was one per file, and a leftover one kept its own mode through O_TRUNC
        # (a key could land 0644). O_EXCL with ``mode`` keeps the umask, as open() does.
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        _remove_leftovers(path)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())  # (see _durable)
            os.replace(tmp, path)
            sync_folder(path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise _unwritable(path, exc) from None

    def read_pid(self) -> int | None:
        """The pid the pid file names; None if there is none, or no pid in it (a file cut
        short by a full disk, or edited: `peer stop` failed on it with a traceback)."""
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if pid > 0 else None

    def running_pid(self) -> int | None:
        """The pid of this directory's live peer the pid file names, if there is one: a pid
        file left by a crash may name a pid reused since by something else."""
        pid = self.read_pid()
        if pid is None or pid_gone(pid):
            return None
        recorded = self._recorded_life()
        if recorded is not None and recorded != process_start(pid):
            # Another process's life under a reused pid: after a crash, a `metaopt status` of
            # this directory that got the dead peer's pid holds the replica's LOCK as a peer
            # does, and was told to kill itself (`peer start` refused: a review; routine
            # where pids start from 1 again, as in a container started again).
            return None
        # It holds this replica, as a running peer does: after a crash, a pid reused by
        # `tail -f ~/.local/share/metaopt/peer.log`, a trial run by a Python under a path
        # naming metaopt, or another data directory's peer, was this one's: reads did not go
        # to the replica, the user was told to kill that process, and peer start refused.
        holds = _has_open(pid, self.replica / "LOCK")
        if holds is not None:
            # (Whatever its command line: a peer started by a launcher of the user's, whose
            # name has no "metaopt" in it, was taken for none, and reads found its replica
            # in use: a soak.)
            return pid if holds else None
        # Where that cannot be told (no replica yet, another user's process), its command line.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if b"metaopt" in cmdline else None

    def _recorded_life(self) -> str | None:
        """What peer.started says of the pid file's process (see process_start); None if it
        says nothing: there is none (a release before it), it is unreadable or damaged to
        other text (a live peer was taken for none: a review), or it is older than the pid
        file, written before it (stale: a release before it wrote the pid file since)."""
        try:
            if self.started_file.stat().st_mtime_ns < self.pid_file.stat().st_mtime_ns:
                return None
            text = self._read(self.started_file)
        except (MetaoptError, OSError):
            return None
        words = [] if text is None else text.split()
        return " ".join(words) if len(words) == 2 and words[1].isdigit() else None

    def read_key(self) -> str | None:
        text = self._read(self.key_file)
        return None if text is None else text.strip()

    def write_key(self, text: str) -> None:
        self._replace(self.key_file, text + "\n", mode=0o600)
