"""A peer's data directory: its node id, its cluster key and its replica.

The node id is random and lives only here, so a data directory that is lost means a new node
id: sequence numbers are never reused under an old id by a node that forgot what it wrote.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from crdt import ORIGIN_SIZE
from metaopt._errors import MetaoptError

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


def pid_gone(pid: int) -> bool:
    """Whether no process pid runs (none, or a zombie not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


class DataDir:
    """Paths and small files inside one peer's data directory."""

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
    def pid_file(self) -> Path:
        return self.root / "peer.pid"

    @property
    def address_file(self) -> Path:
        return self.root / "peer.address"

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
        tmp = self.peers_file.with_suffix(".tmp")
        tmp.write_text("".join(f"{a}\n" for a in addrs[:MAX_REMEMBERED]), encoding="utf-8")
        os.replace(tmp, self.peers_file)

    @staticmethod
    def holds_peer(path: Path) -> bool:
        """Whether ``path`` is a peer's data directory (it has a node id and a replica)."""
        return (path / "node_id").is_file() and (path / "replica").is_dir()

    def ensure(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise MetaoptError(f"{self.root} is a file, not a directory; choose another --data-dir")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.trials.mkdir(exist_ok=True)
            self.bundles.mkdir(exist_ok=True)
        except OSError as exc:
            raise MetaoptError(
                f"cannot create the data directory {self.root}: {exc.strerror};"
                " choose another with --data-dir"
            ) from None

    def node_id(self) -> bytes:
        """This directory's node id, created on first use."""
        value = self.read_node_id()
        if value is not None:
            return value
        path = self.root / "node_id"
        value = secrets.token_bytes(ORIGIN_SIZE)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(value.hex() + "\n")
        os.replace(tmp, path)
        return value

    def read_node_id(self) -> bytes | None:
        """This directory's node id, or None if it has none yet (never created here: a reader
        such as the CLI must not give a data directory a new identity)."""
        path = self.root / "node_id"
        if not path.exists():
            return None
        try:
            value = bytes.fromhex(path.read_text().strip())
        except ValueError:
            value = b""
        if len(value) != ORIGIN_SIZE:
            raise MetaoptError(f"{path} is corrupt; move the data directory aside to start anew")
        return value

    def read_pid(self) -> int | None:
        """The pid the pid file names; None if there is none, or no pid in it (a file cut
        short by a full disk, or edited: `peer stop` failed on it with a traceback)."""
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if pid > 0 else None

    def running_pid(self) -> int | None:
        """The pid of a live metaopt process the pid file names, if there is one: a pid file
        left by a crash may name a pid reused since by something else."""
        pid = self.read_pid()
        if pid is None:
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if b"metaopt" in cmdline and not pid_gone(pid) else None

    def read_key(self) -> str | None:
        return self.key_file.read_text().strip() if self.key_file.exists() else None

    def write_key(self, text: str) -> None:
        tmp = self.key_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, self.key_file)
