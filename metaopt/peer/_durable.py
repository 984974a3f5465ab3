"""Files this peer writes once and trusts on every later start, made durable before they count.

A rename is atomic, but without fsync a crash or power cut can leave the new name pointing at
files whose data never reached the disk: ext4 came back with an experiment's code laid out as
0-byte files (every later trial of it failed here, 4 of 4) and node_id and cluster.key empty.
The data is synced before the rename that makes it count, and the folder after it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["sync_file", "sync_folder", "sync_tree"]


def sync_file(path: Path) -> None:
    """Flush a written file's data to the disk. Raises OSError."""
    _sync(path, os.O_NOFOLLOW)


def sync_folder(path: Path) -> None:
    """Flush a folder's entries (the names renamed or linked into it) to the disk, where its
    file system can (some refuse fsync on a folder: a peer must still start there)."""
    try:
        _sync(path, os.O_DIRECTORY)
    except OSError as exc:
        if exc.errno not in _NO_FOLDER_SYNC:
            raise


# What a file system that cannot sync a folder says when asked to.
_NO_FOLDER_SYNC = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF})


def _sync(path: Path, flags: int) -> None:
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(root: Path) -> None:
    """Flush every file and folder under root, and root itself. Raises OSError."""
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            if not path.is_symlink():  # (a bundle holds none; a link's target is not ours)
                sync_file(path)
        sync_folder(Path(folder))
