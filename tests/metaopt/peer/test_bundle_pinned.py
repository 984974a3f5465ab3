"""Bundle behaviour a mutation audit found unpinned: the caps at their edges and before any file
is read, what left_out names, files that are not regular, manifests that lie about sizes or
chunks, malformed entries refused as malformed (not as a disk's trouble, retried for ever), and
git failing after it said the folder is a work tree."""

from __future__ import annotations

import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from metaopt.peer._bundle import (
    HARD_MAX_BYTES,
    BundleError,
    BundleWriteError,
    collect_bundle,
    content_digest,
    manifest_paths,
    materialize_bundle,
)
from metaopt.peer._wire import needs_addressee
from tests.metaopt.peer.test_bundle import _one_file

DIGEST = b"\0" * 32


def _manifest(*files: list[Any], chunks: list[bytes] | None = None) -> dict[str, Any]:
    return {"version": 1, "size": 0, "files": list(files), "chunks": chunks or []}


def _refused_as_malformed(manifest: Any, chunks: Any, dest: Path, match: str | None = None) -> None:
    """Refused with a BundleError that is not a BundleWriteError: the runner marks such an
    experiment unrunnable here, where a write error is retried at every pass for ever."""
    with pytest.raises(BundleError, match=match) as info:
        materialize_bundle(manifest, chunks, dest)
    assert not isinstance(info.value, BundleWriteError), info.value


def test_a_chunk_size_below_one_is_refused(tmp_path: Path) -> None:
    """A chunk size of 0 would cut empty chunks for ever (a hang and unbounded memory)."""
    with pytest.raises(BundleError, match="chunk size must be positive"):
        collect_bundle(tmp_path, chunk_bytes=0)


def test_a_folder_exactly_at_the_cap_is_bundled(tmp_path: Path) -> None:
    """--max-bundle-mb N allows N MiB: only more is refused."""
    (tmp_path / "a.bin").write_bytes(b"a" * 3000)
    (tmp_path / "b.py").write_bytes(b"b" * 1096)
    manifest, _ = collect_bundle(tmp_path, max_bytes=4096)
    assert manifest["size"] == 4096
    with pytest.raises(BundleError, match="bundle cap"):
        collect_bundle(tmp_path, max_bytes=4095)


def test_a_folder_over_the_cap_is_refused_before_any_file_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sizes git or the walk found are summed first: a folder holding a 30 GB data set is
    refused at once, not after reading it into memory."""
    (tmp_path / "data.csv").write_bytes(b"1" * 5000)
    (tmp_path / "train.py").write_text("x")
    read: list[Path] = []
    real = Path.read_bytes

    def reading(self: Path) -> bytes:
        read.append(self)
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", reading)
    with pytest.raises(BundleError, match=r"data\.csv"):
        collect_bundle(tmp_path, max_bytes=4096)
    assert read == []


def test_a_file_that_grew_past_the_cap_while_bundled_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log the script's last run still writes can grow between its size and its read: the
    bytes read count against the cap too."""
    (tmp_path / "train.py").write_text("x")
    (tmp_path / "run.log").write_bytes(b"l" * 100)
    real = Path.read_bytes

    def growing(self: Path) -> bytes:
        data = real(self)
        return data * 100 if self.name == "run.log" else data

    monkeypatch.setattr(Path, "read_bytes", growing)
    with pytest.raises(BundleError, match="bundle cap"):
        collect_bundle(tmp_path, max_bytes=4096)


def test_the_manifest_size_is_the_sum_of_its_files(tmp_path: Path) -> None:
    """The manifest's "size" (its documented format) is the total of its files' bytes."""
    (tmp_path / "a.py").write_bytes(b"a" * 10)
    (tmp_path / "b.py").write_bytes(b"b" * 25)
    manifest, _ = collect_bundle(tmp_path, chunk_bytes=7)
    assert manifest["size"] == 35 == sum(f[2] for f in manifest["files"])


def test_a_symlink_out_of_the_folder_is_left_out_when_no_list_is_asked_for(tmp_path: Path) -> None:
    """left_out is optional: without it a symlink out of the folder is still skipped quietly."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("a")
    (tmp_path / "secret").write_text("s")
    (src / "out").symlink_to(tmp_path / "secret")
    assert manifest_paths(collect_bundle(src)[0]) == ["a.py"]


def test_a_socket_in_the_folder_is_left_out_unread_and_not_called_a_symlink(
    tmp_path: Path,
) -> None:
    """Sockets, FIFOs and the like are not files to copy (reading one fails or blocks), and
    left_out names symlinks alone: submit says those are missing on other machines."""
    src = tmp_path / "s"
    src.mkdir()
    (src / "train.py").write_text("x")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(src / "ctl.sock"))
        left_out: list[str] = []
        manifest, _ = collect_bundle(src, left_out=left_out)
    finally:
        sock.close()
    assert manifest_paths(manifest) == ["train.py"] and left_out == []


def test_a_file_executable_by_its_group_alone_stays_executable(tmp_path: Path) -> None:
    """Any execute bit makes a file go as 0755: a script run as ./run.sh on another machine."""
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "run.sh").chmod(0o650)
    (tmp_path / "data.txt").write_text("d")
    (tmp_path / "data.txt").chmod(0o640)
    modes = {f[0]: f[1] for f in collect_bundle(tmp_path)[0]["files"]}
    assert modes == {"data.txt": 0o644, "run.sh": 0o755}


def test_when_git_cannot_list_the_work_tree_the_folder_is_walked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """git saying "a work tree" and then failing to list it must not make an empty bundle (a
    submission whose trials find no script): the folder is bundled as it is."""
    (tmp_path / "train.py").write_text("x")
    calls: list[list[str]] = []

    def run(args: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
        calls.append(args)
        if "rev-parse" in args:
            return subprocess.CompletedProcess(args, 0, b"true\n", b"")
        return subprocess.CompletedProcess(args, 128, b"", b"fatal: index file corrupt\n")

    monkeypatch.setattr("metaopt.peer._bundle.subprocess.run", run)
    assert manifest_paths(collect_bundle(tmp_path)[0]) == ["train.py"]
    assert len(calls) == 2


def test_a_manifest_claiming_more_bytes_than_its_file_holds_is_refused(tmp_path: Path) -> None:
    """A file's size is part of what the digest vouches for: a manifest saying 100 bytes over
    chunks holding 7 is corrupt even though those 7 match the file digest."""
    manifest, chunks = _one_file(tmp_path)
    manifest["files"][0][2] += 93
    _refused_as_malformed(manifest, chunks, tmp_path / "d", "does not match its digest")


def test_chunks_holding_more_than_the_files_are_refused(tmp_path: Path) -> None:
    """Bytes past the last file mean the manifest and its chunks disagree: corrupt."""
    manifest, chunks = _one_file(tmp_path)
    extra = b"trailing"
    chunks = {**chunks, content_digest(extra): extra}
    manifest["chunks"].append(content_digest(extra))
    _refused_as_malformed(manifest, chunks, tmp_path / "d", "more bytes than its files")


def test_a_chunk_that_is_not_bytes_is_a_bundle_error(tmp_path: Path) -> None:
    """A fetcher handing back something else (None for a record without data) is a corrupt
    bundle, said as one, not a TypeError out of the hash."""
    manifest, _ = _one_file(tmp_path)
    _refused_as_malformed(manifest, lambda digest: None, tmp_path / "d", "does not match")


def test_a_forged_chunk_is_refused_before_any_of_its_bytes_are_written(tmp_path: Path) -> None:
    """Each chunk is checked against its digest as it is fetched, before its bytes reach the
    trial's folder: a forged chunk is never laid out, not even until the file's check."""
    manifest, _ = _one_file(tmp_path)
    key = manifest["chunks"][0]
    _refused_as_malformed(
        manifest, {key: b"forged!"}, tmp_path / "d", f"chunk {key.hex()[:16]} does not match"
    )
    written = tmp_path / "d" / "f.py"
    assert not written.exists() or written.read_bytes() == b""


@pytest.mark.parametrize("path", ["a\0b", "x/" * 2100 + "y", "/".join(["d" * 255] * 16)])
def test_a_path_no_file_system_takes_is_refused_as_malformed(tmp_path: Path, path: str) -> None:
    """A NUL byte or a path over 2048 bytes is malformed: refused as such (the runner marks
    the experiment unrunnable), not a ValueError or a write error retried for ever. (16 names
    of 255 bytes, 4,095 in all, were taken, and laid out nowhere: past PATH_MAX once in the
    trial's folder, a write error a peer retried twice a second for good.)"""
    manifest, chunks = _one_file(tmp_path)
    manifest["files"][0][0] = path
    _refused_as_malformed(manifest, chunks, tmp_path / "d", "refused")


def test_a_path_named_twice_is_refused_as_malformed(tmp_path: Path) -> None:
    """Two entries for one path: refused before any writing, not a "file exists" write error
    retried at every pass."""
    manifest, chunks = _one_file(tmp_path)
    manifest["files"].append(list(manifest["files"][0]))
    _refused_as_malformed(manifest, chunks, tmp_path / "d", "appears twice")


@pytest.mark.parametrize(
    "manifest",
    [
        {"version": 1, "files": [], "chunks": None},
        _manifest(["a", 0o644, 1]),
        _manifest(["a", 0o644, True, DIGEST]),
        _manifest(["a", 0o644, 1, b"\0" * 31]),
    ],
    ids=["chunks-not-a-list", "entry-of-three", "size-a-boolean", "digest-of-31-bytes"],
)
def test_more_malformed_manifests_are_refused_before_anything_is_written(
    tmp_path: Path, manifest: dict[str, Any]
) -> None:
    """Each is refused by the manifest check itself (manifest_paths too), with a BundleError
    and not a TypeError or ValueError from deeper in."""
    with pytest.raises(BundleError):
        manifest_paths(manifest)
    _refused_as_malformed(manifest, {}, tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_a_bundle_of_exactly_the_hard_cap_is_accepted() -> None:
    """HARD_MAX_BYTES is the most a bundle may hold; one byte more is refused."""
    half = HARD_MAX_BYTES // 2
    exact = _manifest(["a", 0o644, half, DIGEST], ["b", 0o644, half, DIGEST])
    assert manifest_paths(exact) == ["a", "b"]
    with pytest.raises(BundleError, match="over the 1024 MiB"):
        manifest_paths(_manifest(["a", 0o644, half, DIGEST], ["b", 0o644, half + 1, DIGEST]))


def test_the_hard_cap_counts_all_files_together() -> None:
    """Two files of 600 MiB each make 1.2 GiB: over the cap though neither is alone."""
    half = 600 << 20
    with pytest.raises(BundleError, match="over the 1024 MiB"):
        manifest_paths(_manifest(["a", 0o644, half, DIGEST], ["b", 0o644, half, DIGEST]))


def test_a_path_of_a_single_dot_is_refused_as_malformed(tmp_path: Path) -> None:
    """ "." names the destination folder itself: it passed _safe (no part is "." once
    PurePosixPath normalises it) and failed as "File exists", a write error retried for ever."""
    manifest, chunks = _one_file(tmp_path)
    manifest["files"][0][0] = "."
    _refused_as_malformed(manifest, chunks, tmp_path / "d", "refused")


def test_a_mode_that_is_a_float_is_refused_as_malformed(tmp_path: Path) -> None:
    """420.0 == 0o644 passed the mode check and os.open raised TypeError (the runner retried
    it at every pass as "laying out its code failed")."""
    manifest, chunks = _one_file(tmp_path)
    manifest["files"][0][1] = 420.0
    _refused_as_malformed(manifest, chunks, tmp_path / "d", "mode")


@pytest.mark.parametrize(
    ("paths", "match"),
    [
        (["a", "a/b"], "inside 'a', a file"),
        (["x/y", "x/y/z/w"], "inside 'x/y', a file"),
        (["d/" + "n" * 256], "name over 255 bytes"),
    ],
)
def test_paths_no_folder_can_hold_are_refused_as_malformed(
    tmp_path: Path, paths: list[str], match: str
) -> None:
    """A file where another file's folder must go, or a name over 255 bytes, cannot be laid
    out on any disk: they failed as write errors, retried at every pass for ever on every
    peer, where a refusal marks the experiment unrunnable here once."""
    manifest = _manifest(*([p, 0o644, 0, DIGEST] for p in paths))
    _refused_as_malformed(manifest, [], tmp_path / "d", match)


def test_a_long_name_and_a_deep_path_of_short_names_are_kept() -> None:
    """255 bytes is a name any file system takes, and a deep path of such names is fine."""
    name = "n" * 255
    assert manifest_paths(_manifest([f"d/{name}", 0o644, 0, DIGEST], ["d/e/f", 0o644, 0, DIGEST]))


def test_a_leave_must_name_the_peer_it_is_for() -> None:
    """A leave recorded on its way to one peer and played to another would mark its sender
    gone there too (its running trials taken as lost and re-run)."""
    assert needs_addressee("leave")
    assert needs_addressee("api.stop")
    assert not needs_addressee("gossip") and not needs_addressee("sync")


@pytest.mark.parametrize("mode", [0o4755, 0o777, 0o600])
def test_a_bundle_file_mode_other_than_0644_or_0755_is_refused(tmp_path: Path, mode: int) -> None:
    manifest, chunks = _one_file(tmp_path)
    manifest["files"][0][1] = mode
    _refused_as_malformed(manifest, chunks, tmp_path / "d", "mode")


def test_no_setuid_file_is_laid_out(tmp_path: Path) -> None:
    manifest, chunks = _one_file(tmp_path)
    manifest["files"][0][1] = 0o4755
    try:
        materialize_bundle(manifest, chunks, tmp_path / "out")
    except Exception:
        return
    for p in (tmp_path / "out").rglob("*"):
        assert not p.stat().st_mode & stat.S_ISUID
