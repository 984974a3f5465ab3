"""What a user meets when the disk is full (ENOSPC, EDQUOT) or read-only (a review of every write).

Each test fails on the current code; each simulates the disk's refusal by monkeypatching
(as the real kernel does it: a file is created, then its write is refused), never by filling
a real disk.
"""

from __future__ import annotations

import errno
import pathlib
from pathlib import Path
from typing import Any

import plyvel
import pytest

import crdt._leveldb
from metaopt import Study
from metaopt._errors import MetaoptError

SPACE = {"x": "uniform(0, 1)"}


def _enospc(path: object) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


def test_study_node_id_cut_short_by_a_full_disk_is_not_garbage_once_space_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # _study_replica.node_id_for writes node_id with Path.write_text: on a full disk the file is
    # created and its write refused, leaving it empty. Once space returns the Study still
    # refuses the directory for good: "node_id holds 0 bytes, not 16" (real tmpfs: 1 of 1).
    real = pathlib.Path.write_text

    def full(self: Path, *args: Any, **kwargs: Any) -> int:
        if "node_id" in self.name:  # (its temporary file too)
            self.open("w").close()  # created, as the kernel does, then the write refused
            raise _enospc(self)
        return real(self, *args, **kwargs)

    path = tmp_path / "study"
    monkeypatch.setattr(pathlib.Path, "write_text", full)
    with pytest.raises(MetaoptError):
        Study(SPACE, path=path)
    monkeypatch.undo()  # space is back
    Study(SPACE, path=path).close()


def test_a_study_reopened_on_a_full_disk_raises_a_metaopt_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Opening LevelDB writes a new log and table: on a full disk Study(path=) raised crdt's
    # raw StoreError (not a MetaoptError, nothing to do said) (real tmpfs: 3 of 3).
    path = tmp_path / "study"
    Study(SPACE, path=path).close()

    def full(*args: Any, **kwargs: Any) -> Any:
        raise plyvel.IOError(
            f"IO error: {path}/replica/000005.ldb: No space left on device".encode()
        )

    monkeypatch.setattr(crdt._leveldb.plyvel, "DB", full)
    with pytest.raises(MetaoptError, match="free"):
        Study(SPACE, path=path)
