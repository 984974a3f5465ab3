"""The script's folder as content-addressed chunks, so machines without a shared disk run it.

Which files: inside a git work tree, the files git knows of under the folder (tracked, plus
untracked ones that are not ignored, so a new ``train.py`` not yet added still goes); elsewhere,
every file under the folder except in hidden folders, ``__pycache__``, ``venv`` and
``node_modules`` (and compiled ``.pyc`` files beside their source), and its empty folders (a
script writing into an empty ``outputs/`` failed on the peers). Either way a peer's data
directory inside the folder is left out: its replica, and its trials' copies of earlier
bundles, which each new bundle would nest again.
Symlinks go as copies of their target when it is a file inside the folder, and are left out
otherwise. The files, in path order, are one byte stream cut into chunks of at most
1 MiB, each keyed by its BLAKE2b-256 digest. The manifest is plain data (msgpack-ready)::

    {"version": 1, "size": total bytes,
     "files": [[path, mode, size, blake2b-256 digest], ...],   # posix paths, sorted
     "chunks": [digest, ...],                                  # in stream order
     "dirs": [path, ...]}                # empty folders, sorted; only when there are any

``materialize_bundle`` reverses it into a fresh folder, checking every digest and refusing paths
that are absolute or climb out with ``..``.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from crdt import MAX_RECORD_SIZE
from metaopt._errors import MetaoptError
from metaopt.peer._identity import DataDir

__all__ = [
    "CHUNK_BYTES",
    "DEFAULT_MAX_BYTES",
    "HARD_MAX_BYTES",
    "BundleError",
    "BundleWriteError",
    "bundle_damage",
    "collect_bundle",
    "content_digest",
    "manifest_paths",
    "materialize_bundle",
]

DEFAULT_MAX_BYTES = 50 << 20
# The most any bundle may hold, on either side: a manifest may name one chunk thousands of
# times, so without a cap a 1 MiB record could ask a peer to write tens of GiB. Every peer
# stores every bundle's chunks, so anything near this is data, not code, and belongs elsewhere.
HARD_MAX_BYTES = 1 << 30
# A chunk travels as one blob record, whose kind, origin, times, link and msgpack framing
# must fit beside it: chunks of a whole MiB made every bundle over 1 MiB fail to submit.
CHUNK_BYTES = MAX_RECORD_SIZE - (16 << 10)
_SKIP_DIRS = frozenset({"__pycache__", "venv", "node_modules"})
# Empty folders a bundle holds at most, and the bytes of their paths: each trial's folder
# makes them again, and the manifest must stay a small part of its record (9,500 leftover run
# folders took 1.35 MB, and the folder could no longer be submitted). Past either, none is
# sent (submit says so); a manifest from another machine past either is refused.
MAX_EMPTY_DIRS = 1000
MAX_EMPTY_DIR_BYTES = 64 << 10
_MiB = float(1 << 20)


class BundleError(MetaoptError):
    """A folder that cannot be bundled, or a bundle that cannot be materialised."""


class BundleWriteError(BundleError):
    """A sound bundle this machine could not write (disk full, permissions): may pass later."""


def content_digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def collect_bundle(
    root: Path | str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    chunk_bytes: int = CHUNK_BYTES,
    left_out: list[str] | None = None,
    empty_left_out: list[str] | None = None,
) -> tuple[dict[str, Any], dict[bytes, bytes]]:
    """Bundle a folder.

    Args:
        root: the folder (usually the script's).
        max_bytes: refuse folders holding more than this many bytes of files.
        chunk_bytes: the largest chunk.
        left_out: gets the symlinks not bundled (to a folder, or out of the folder), which
            the trials on other machines will not find.
        empty_left_out: gets the empty folders not bundled, past MAX_EMPTY_DIRS or
            MAX_EMPTY_DIR_BYTES.

    Returns:
        ``(manifest, chunks)`` where ``chunks`` maps each digest named in the manifest to its
        bytes.

    Raises:
        BundleError: ``root`` is not a folder, or its files exceed ``max_bytes``.
    """
    if chunk_bytes < 1:
        raise BundleError(f"chunk size must be positive, got {chunk_bytes}")
    base = Path(root)
    if not base.is_dir():
        raise BundleError(f"{base}: not a folder; bundle the folder that holds the script")
    base = base.resolve()
    names = _git_files(base)
    empty: list[str] = []  # (git lists no folder: a work tree sends none empty)
    listed = set(names) if names is not None else _walk(base, empty)
    paths = sorted(_outside_data_dirs(base, listed))
    chosen: list[tuple[str, Path, int, int]] = []
    total = 0
    for rel in paths:
        _check_path(base, rel)
        found = _regular(base, rel)
        if found is None:
            if left_out is not None and (base / rel).is_symlink():
                left_out.append(rel)
            continue
        path, mode, size = found
        chosen.append((rel, path, mode, size))
        total += size
    _check_cap(base, total, max_bytes, chosen)
    files: list[list[Any]] = []
    chunks: dict[bytes, bytes] = {}
    order: list[bytes] = []
    pending = bytearray()
    total = 0
    for rel, path, mode, _ in chosen:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BundleError(f"cannot read {rel} in {base}: {exc.strerror}") from None
        total += len(data)
        _check_cap(base, total, max_bytes, chosen)
        files.append([rel, mode, len(data), content_digest(data)])
        pending += data
        while len(pending) >= chunk_bytes:
            _cut(pending, chunk_bytes, chunks, order)
    if pending:
        _cut(pending, len(pending), chunks, order)
    manifest: dict[str, Any] = {"version": 1, "size": total, "files": files, "chunks": order}
    dirs = sorted(_outside_data_dirs(base, empty))
    for rel in dirs:  # (refused as a file's path would be)
        _check_path(base, rel, "folder")
    if len(dirs) > MAX_EMPTY_DIRS or sum(len(d.encode()) for d in dirs) > MAX_EMPTY_DIR_BYTES:
        if empty_left_out is not None:
            empty_left_out.extend(dirs)
    elif dirs:  # (only then: the manifests of every other folder stay as they were)
        manifest["dirs"] = dirs
    return manifest, chunks


def _check_path(base: Path, rel: str, what: str = "file") -> None:
    """Refuse a path under base that peers could not store or lay out."""
    if not _utf8(rel):
        raise BundleError(
            f"{base}: the {what} name {rel!r} is not valid UTF-8 (peers could not store it);"
            " rename it, or move it out of the folder"
        )
    if len(rel.encode()) > _MAX_PATH_BYTES:
        # (Left out without a word, the trials did not find it.)
        raise BundleError(
            f"{base}: the path {rel[:60]}... is over {_MAX_PATH_BYTES} bytes, more than"
            " peers lay out; shorten it, or move it out of the folder"
        )


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a byte os.fsdecode kept as a lone surrogate
        return False
    return True


def manifest_paths(manifest: Mapping[str, Any]) -> list[str]:
    """The relative paths a manifest holds, sorted.

    Raises:
        BundleError: the manifest is malformed.
    """
    return [entry[0] for entry in _check_manifest(manifest)[0]]


def materialize_bundle(
    manifest: Mapping[str, Any],
    chunk: Callable[[bytes], bytes] | Mapping[bytes, bytes],
    dest: Path | str,
) -> None:
    """Write a bundle's files into ``dest`` (created; it must be empty if it exists).

    Args:
        manifest: as made by :func:`collect_bundle`, possibly from another machine.
        chunk: the bytes of a chunk by digest; whatever it raises for a missing chunk
            propagates, so the caller can retry later.
        dest: the folder to fill.

    Raises:
        BundleError: a malformed manifest, an unsafe path, or a chunk or file whose digest does
            not match.
    """
    files, order, dirs = _check_manifest(manifest)
    fetch = chunk.__getitem__ if isinstance(chunk, Mapping) else chunk
    target = Path(dest)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BundleWriteError(f"cannot create {target} for a bundle: {exc}") from None
    if any(target.iterdir()):
        raise BundleError(f"{target} is not empty; a bundle is materialised into a fresh folder")
    stream = _Stream(fetch, order)
    for rel, mode, size, digest in files:
        path = target.joinpath(*PurePosixPath(rel).parts)
        check = hashlib.blake2b(digest_size=32)
        left = size
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            with os.fdopen(fd, "wb") as out:
                # Piece by piece: memory stays at one chunk whatever size a manifest claims.
                while left and (piece := stream.read(left)):
                    check.update(piece)
                    out.write(piece)
                    left -= len(piece)
            os.chmod(path, mode)
        except OSError as exc:
            raise BundleWriteError(f"cannot write bundle file {rel} in {target}: {exc}") from None
        if left or check.digest() != digest:
            raise BundleError(f"bundle file {rel} does not match its digest; the bundle is corrupt")
    if stream.read(1):
        raise BundleError("bundle chunks hold more bytes than its files; the bundle is corrupt")
    for rel in dirs:
        try:
            target.joinpath(*PurePosixPath(rel).parts).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BundleWriteError(
                f"cannot create bundle folder {rel} in {target}: {exc}"
            ) from None


def bundle_damage(manifest: Mapping[str, Any], dest: Path) -> str | None:
    """What in a laid-out bundle does not match its manifest (a file missing, or of another
    size: a crash before its data reached the disk left 0-byte files), or None.

    Sizes, not digests: cheap enough for every start, and what a crash changes.
    Raises BundleError for a malformed manifest."""
    files, _, _ = _check_manifest(manifest)
    for rel, _, size, _ in files:
        path = dest.joinpath(*PurePosixPath(rel).parts)
        try:
            held = path.lstat().st_size
        except OSError:
            return f"{rel} is missing"
        if held != size:
            return f"{rel} holds {held:,} bytes, not {size:,}"
    return None


class _Stream:
    """The concatenated chunks, fetched and checked one at a time as files need them."""

    def __init__(self, fetch: Callable[[bytes], bytes], order: list[bytes]) -> None:
        self._fetch = fetch
        self._order: Iterator[bytes] = iter(order)
        self._buf = memoryview(b"")

    def read(self, n: int) -> bytes:
        """Up to n next bytes (fewer at a chunk boundary); b"" once the chunks are used up."""
        if not self._buf:
            digest = next(self._order, None)
            if digest is None:
                return b""
            data = self._fetch(digest)
            if not isinstance(data, bytes) or content_digest(data) != digest:
                raise BundleError(f"bundle chunk {digest.hex()[:16]} does not match its digest")
            self._buf = memoryview(data)
        out = bytes(self._buf[:n])
        self._buf = self._buf[n:]
        return out


def _cut(pending: bytearray, n: int, chunks: dict[bytes, bytes], order: list[bytes]) -> None:
    piece = bytes(pending[:n])
    del pending[:n]
    key = content_digest(piece)
    chunks[key] = piece
    order.append(key)


def _check_cap(
    base: Path, total: int, max_bytes: int, chosen: list[tuple[str, Path, int, int]]
) -> None:
    if total <= max_bytes:
        return
    largest = max(chosen, key=lambda c: c[3])
    raise BundleError(
        f"{base} holds {total / _MiB:.1f} MiB of files, over the {max_bytes / _MiB:.1f} MiB "
        f"bundle cap (largest: {largest[0]}, {largest[3] / _MiB:.1f} MiB); move data out of the "
        "folder, raise --max-bundle-mb, or use --no-bundle on a shared file system"
    )


def _git_files(base: Path) -> list[str] | None:
    """Paths git knows of under ``base`` (relative to it), or None outside a work tree.

    Raises:
        BundleError: ``base`` is in a work tree git refuses to read, a repository owned by
            another user ("dubious ownership"). Bundled whole, its ignored files (secrets,
            data) went into every replica, for good.
    """
    try:
        inside = subprocess.run(
            ["git", "-C", str(base), "rev-parse", "--is-inside-work-tree"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        said = inside.stderr.decode(errors="replace").strip().splitlines()
        if inside.returncode != 0 and any("dubious ownership" in line for line in said):
            why = said[0].removeprefix("fatal: ")
            raise BundleError(
                f"git cannot read the work tree of {base} ({why}), so its .gitignore cannot"
                " keep files out of the bundle; fix that (for another user's repository:"
                " `git config --global --add safe.directory DIR`), or submit with --no-bundle"
            )
        if inside.returncode != 0 or inside.stdout.strip() != b"true":
            return None
        listed = subprocess.run(
            [
                "git",
                "-C",
                str(base),
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None  # no git on this machine: bundle the folder as it is
    if listed.returncode != 0:
        return None
    return [os.fsdecode(p) for p in listed.stdout.split(b"\0") if p]


def _outside_data_dirs(base: Path, paths: Iterable[str]) -> list[str]:
    """The paths not inside a peer's data directory under ``base``.

    With ``--data-dir`` inside the script's folder, every submission bundled the replica and
    every trial's copy of the code so far: three loopback peers' folder went from 470 files to
    16,240 in one 30-trial run, and the next submission's manifest alone was 7.5 MB.
    """
    verdict: dict[PurePosixPath, bool] = {PurePosixPath("."): False}

    def inside(folder: PurePosixPath) -> bool:
        if folder not in verdict:
            verdict[folder] = inside(folder.parent) or DataDir.holds_peer(base / folder)
        return verdict[folder]

    # The folder itself one (`peer start --data-dir .` in the project): the code beside the
    # peer's own files goes, they do not (its replica and cluster key went whole).
    own = DataDir.is_own if DataDir.holds_peer(base) else lambda name: False
    return [
        rel
        for rel in paths
        if not own(PurePosixPath(rel).parts[0]) and not inside(PurePosixPath(rel).parent)
    ]


def _walk(base: Path, empty: list[str]) -> Iterator[str]:
    """The files under base to bundle (see the module docstring); ``empty`` gets the folders
    that hold none of them and no folder walked into."""
    for folder, dirs, names in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS)
        rel_folder = Path(folder).relative_to(base)
        # A .pyc with no source beside it is the module (shipped compiled): sent.
        kept = [n for n in names if not n.endswith(".pyc") or n[:-1] not in names]
        if not kept and not dirs and rel_folder.parts:
            empty.append(rel_folder.as_posix())
        for name in kept:
            yield (rel_folder / name).as_posix()
        for name in dirs:  # (links to folders are not walked into: said left out)
            if os.path.islink(os.path.join(folder, name)):
                yield (rel_folder / name).as_posix()


def _regular(base: Path, rel: str) -> tuple[Path, int, int] | None:
    """The file to read for ``rel``, its mode and size, or None when it is not bundled."""
    if not _safe(rel):
        return None
    path = base / rel
    try:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            real = path.resolve()
            if not real.is_relative_to(base):
                return None
            path, info = real, real.stat()
    except (OSError, RuntimeError):
        return None  # deleted since git listed it, or a symlink loop
    if not stat.S_ISREG(info.st_mode):
        return None  # submodules, sockets, folders
    mode = 0o755 if info.st_mode & 0o111 else 0o644
    return path, mode, info.st_size


# Bytes a bundled file's path may take, within the folder: the rest of PATH_MAX (4096) is
# for the trial folder it is laid out in. A path of 4,095 (16 parts of 255) was taken, could
# be laid out nowhere, and a peer tried again twice a second for good.
_MAX_PATH_BYTES = 2048


def _safe(rel: object) -> bool:
    if not isinstance(rel, str) or not rel or "\0" in rel:
        return False
    if len(rel.encode(errors="surrogateescape")) > _MAX_PATH_BYTES:
        return False
    pure = PurePosixPath(rel)
    if pure.is_absolute() or rel != pure.as_posix():
        return False
    # (No parts: "." is the folder itself. A part over 255 bytes no file system takes.)
    return bool(pure.parts) and all(
        part not in ("", ".", "..") and len(part.encode()) <= 255 for part in pure.parts
    )


def _check_manifest(
    manifest: Any,
) -> tuple[list[tuple[str, int, int, bytes]], list[bytes], list[str]]:
    if not isinstance(manifest, Mapping) or manifest.get("version") != 1:
        raise BundleError("bundle manifest is malformed or from a newer metaopt; upgrade")
    raw_files, raw_chunks = manifest.get("files"), manifest.get("chunks")
    if not isinstance(raw_files, list | tuple) or not isinstance(raw_chunks, list | tuple):
        raise BundleError("bundle manifest lacks its file or chunk list")
    files: list[tuple[str, int, int, bytes]] = []
    seen: set[str] = set()
    for entry in raw_files:
        if not isinstance(entry, list | tuple) or len(entry) != 4:
            raise BundleError("bundle manifest has a malformed file entry")
        rel, mode, size, digest = entry
        if not _safe(rel):
            raise BundleError(
                f"bundle path {rel!r} is absolute, leaves the folder or has a name over 255"
                " bytes; refused"
            )
        if rel in seen:
            raise BundleError(f"bundle path {rel!r} appears twice; refused")
        if type(mode) is not int or mode not in (0o644, 0o755):  # (420.0 == 0o644)
            raise BundleError(f"bundle file {rel!r} has mode {mode!r}; only 0644 and 0755")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BundleError(f"bundle file {rel!r} has a bad size {size!r}")
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise BundleError(f"bundle file {rel!r} has a bad digest")
        seen.add(rel)
        files.append((rel, mode, size, digest))
    # A file where another's folder must go (a beside a/b) cannot be laid out: refused here,
    # it failed as a write error, which the runner retries for ever.
    for rel in seen:
        parent = next((str(p) for p in PurePosixPath(rel).parents if str(p) in seen), None)
        if parent is not None:
            raise BundleError(f"bundle path {rel!r} is inside {parent!r}, a file; refused")
    dirs = _check_dirs(manifest.get("dirs", ()), seen)
    chunks = list(raw_chunks)
    if not all(isinstance(c, bytes) and len(c) == 32 for c in chunks):
        raise BundleError("bundle manifest has a malformed chunk digest")
    total = sum(f[2] for f in files)
    if total > HARD_MAX_BYTES:
        raise BundleError(
            f"bundle holds {total / _MiB:.0f} MiB, over the {HARD_MAX_BYTES / _MiB:.0f} MiB any "
            "peer accepts; refused"
        )
    return files, chunks, dirs


def _check_dirs(raw: Any, files: set[str]) -> list[str]:
    """A manifest's empty folders, checked as its files' paths are; none may be a file or lie
    inside one."""
    if not isinstance(raw, list | tuple) or len(raw) > MAX_EMPTY_DIRS:
        raise BundleError(f"bundle manifest's folder list is malformed or over {MAX_EMPTY_DIRS}")
    for rel in raw:
        if not _safe(rel):
            raise BundleError(f"bundle folder {rel!r} is absolute or leaves the folder; refused")
        inside = next((p for p in [rel, *map(str, PurePosixPath(rel).parents)] if p in files), None)
        if inside is not None:
            raise BundleError(f"bundle folder {rel!r} is at or inside {inside!r}, a file; refused")
    if sum(len(rel.encode()) for rel in raw) > MAX_EMPTY_DIR_BYTES:
        raise BundleError(f"bundle manifest's folder list is over {MAX_EMPTY_DIR_BYTES} bytes")
    return list(raw)
