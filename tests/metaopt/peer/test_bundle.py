"""Bundling a script's folder and materialising it elsewhere."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metaopt.peer._bundle import (
    HARD_MAX_BYTES,
    BundleError,
    collect_bundle,
    manifest_paths,
    materialize_bundle,
)
from metaopt.peer._identity import DataDir


def _tree(root: Path) -> dict[str, tuple[bytes, bool]]:
    out = {}
    for path in root.rglob("*"):
        if path.is_file():
            out[path.relative_to(root).as_posix()] = (
                path.read_bytes(),
                bool(path.stat().st_mode & 0o100),
            )
    return out


def _folder(root: Path) -> None:
    (root / "pkg").mkdir(parents=True)
    (root / "train.py").write_text("print('hi')\n")
    (root / "pkg" / "model.py").write_bytes(os.urandom(3000))
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    for skipped in (".git", ".venv", "__pycache__", ".hidden"):
        (root / skipped).mkdir()
        (root / skipped / "x.py").write_text("skip")
    (root / "pkg" / "model.pyc").write_bytes(b"\0")  # compiled beside its source: not sent


def test_a_plain_folder_round_trips(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _folder(src)
    manifest, chunks = collect_bundle(src, chunk_bytes=1000)
    assert manifest_paths(manifest) == ["pkg/model.py", "run.sh", "train.py"]
    assert all(len(c) <= 1000 for c in chunks.values())
    assert all(hashlib.blake2b(c, digest_size=32).digest() == k for k, c in chunks.items())
    assert len(manifest["chunks"]) == 4
    materialize_bundle(manifest, chunks, tmp_path / "dest")
    expected = {k: v for k, v in _tree(src).items() if k in manifest_paths(manifest)}
    assert _tree(tmp_path / "dest") == expected
    assert expected["run.sh"][1] is True


def test_empty_folders_and_sourceless_modules_go_too(tmp_path: Path) -> None:
    # An empty outputs/ the script writes into, and a module shipped compiled only, were
    # left out outside git: the trials failed on "Directory nonexistent" and
    # ModuleNotFoundError, the script ran by hand (a review of README's promises).
    src = tmp_path / "src"
    _folder(src)
    (src / "outputs").mkdir()
    (src / "runs" / "a" / "b").mkdir(parents=True)
    (src / "only_hidden" / ".cache").mkdir(parents=True)
    (src / "helper.pyc").write_bytes(b"compiled")
    manifest, chunks = collect_bundle(src)
    assert manifest["dirs"] == ["only_hidden", "outputs", "runs/a/b"]
    assert "helper.pyc" in manifest_paths(manifest)
    assert "pkg/model.pyc" not in manifest_paths(manifest)
    materialize_bundle(manifest, chunks, tmp_path / "dest")
    assert all((tmp_path / "dest" / d).is_dir() for d in manifest["dirs"])
    assert (tmp_path / "dest" / "helper.pyc").read_bytes() == b"compiled"
    # A folder with none keeps the manifest it had: no "dirs" key.
    assert "dirs" not in collect_bundle(tmp_path / "src" / "pkg")[0]


@pytest.mark.parametrize(
    ("dirs", "why"),
    [
        (["../up"], "leaves the folder"),
        (["/abs"], "leaves the folder"),
        (["train.py"], "is at or inside 'train.py', a file"),
        (["train.py/x"], "is at or inside 'train.py', a file"),
        ("outputs", "malformed"),
        (["d"] * 1001, "over 1000"),
        ([f"{i:04}" + "d" * 200 for i in range(400)], "over 65536 bytes"),
    ],
)
def test_a_manifests_bad_folders_are_refused(tmp_path: Path, dirs: Any, why: str) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("print('hi')\n")
    manifest, chunks = collect_bundle(tmp_path / "src")
    with pytest.raises(BundleError, match=re.escape(why)):
        materialize_bundle({**manifest, "dirs": dirs}, chunks, tmp_path / "dest")


@pytest.mark.parametrize("a_file", [True, False])
def test_a_path_too_long_to_lay_out_is_refused_not_left_out(tmp_path: Path, a_file: bool) -> None:
    # Left out without a word, the trials did not find the file, or the empty folder (README:
    # refused).
    src = tmp_path / "src"
    deep = src.joinpath(*["d" * 200] * 11)
    deep.mkdir(parents=True)
    if a_file:
        (deep / "f.txt").write_text("data")
    with pytest.raises(BundleError, match="is over 2048 bytes, more than peers lay out"):
        collect_bundle(src)


def test_too_many_empty_folders_are_left_out_with_word_not_refused(tmp_path: Path) -> None:
    # 9,500 leftover run folders took 1.35 MB of the manifest, and a folder that was submitted
    # the day before was refused; each trial's folder made them all again (a review).
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("print('hi')\n")
    for i in range(1001):
        (src / "runs" / f"{i:04}").mkdir(parents=True)
    empty: list[str] = []
    manifest, _ = collect_bundle(src, empty_left_out=empty)
    assert "dirs" not in manifest and len(empty) == 1001 and empty[0] == "runs/0000"
    manifest, _ = collect_bundle(src)  # (no one asking: left out all the same)
    assert "dirs" not in manifest and manifest_paths(manifest) == ["train.py"]


def test_the_same_folder_gives_the_same_bundle(tmp_path: Path) -> None:
    _folder(tmp_path / "a")
    assert collect_bundle(tmp_path / "a") == collect_bundle(tmp_path / "a")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_in_a_git_work_tree_only_files_git_knows_go(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    src = repo / "exp"
    _folder(src)
    (src / "big.bin").write_bytes(b"x" * 100)
    (repo / ".gitignore").write_text("*.bin\n")
    (repo / "outside.py").write_text("not under exp")
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "add", "exp/train.py"], check=True, env=env)
    manifest, _ = collect_bundle(src)
    # Tracked, plus untracked but not ignored; never ignored files or files outside the folder.
    paths = manifest_paths(manifest)
    assert "train.py" in paths and "pkg/model.py" in paths and "run.sh" in paths
    assert "big.bin" not in paths and "outside.py" not in paths


@pytest.mark.parametrize("git", [False, True])
def test_a_peers_data_directory_inside_the_folder_is_left_out(tmp_path: Path, git: bool) -> None:
    # With --data-dir inside the script's folder each submission bundled the replica and every
    # trial's copy of the code so far, nesting deeper with each one.
    src = tmp_path / "src"
    _folder(src)
    data = DataDir(src / "runs" / "peer-data")
    data.ensure()
    data.node_id()
    data.replica.mkdir()
    (data.replica / "000005.ldb").write_bytes(b"x")
    (data.trials / "t1" / "code").mkdir(parents=True)
    (data.trials / "t1" / "code" / "train.py").write_text("print('hi')\n")
    (src / "runs" / "notes.txt").write_text("kept")
    (src / "replica").mkdir()  # named like a replica, in no data directory: kept
    (src / "replica" / "r.py").write_text("kept")
    if git:
        if shutil.which("git") is None:
            pytest.skip("needs git")
        env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
        subprocess.run(["git", "init", "-q", str(src)], check=True, env=env)
    paths = manifest_paths(collect_bundle(src)[0])
    assert not [p for p in paths if p.startswith("runs/peer-data/")]
    kept = ["pkg/model.py", "replica/r.py", "run.sh", "runs/notes.txt", "train.py"]
    assert set(kept) <= set(paths) and (git or paths == kept)


def test_symlinks_inside_go_as_copies_and_outside_are_left_out(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("a")
    (tmp_path / "secret").write_text("s")
    (src / "link.py").symlink_to(src / "a.py")
    (src / "out").symlink_to(tmp_path / "secret")
    (src / "data").symlink_to(tmp_path)  # a folder: not walked into
    left_out: list[str] = []
    manifest, chunks = collect_bundle(src, left_out=left_out)
    assert manifest_paths(manifest) == ["a.py", "link.py"]
    # Said at submit: left out silently, they were missing on other machines' trials.
    assert sorted(left_out) == ["data", "out"]
    materialize_bundle(manifest, chunks, tmp_path / "d")
    assert not (tmp_path / "d" / "link.py").is_symlink()
    assert (tmp_path / "d" / "link.py").read_text() == "a"


def test_over_the_cap_is_a_one_line_error_naming_no_bundle(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_bytes(b"1" * 5000)
    (tmp_path / "train.py").write_text("x")
    with pytest.raises(BundleError) as info:
        collect_bundle(tmp_path, max_bytes=4096)
    message = str(info.value)
    assert "--no-bundle" in message and "data.csv" in message and "\n" not in message


@pytest.mark.skipif(
    shutil.which("git") is None or os.geteuid() != 0, reason="needs git, and root to chown"
)
def test_a_repository_of_another_user_is_refused_not_bundled_whole(tmp_path: Path) -> None:
    # git refused a repository owned by another user ("dubious ownership") and the whole
    # folder was bundled, the files .gitignore keeps out (secrets, data) with it, into every
    # replica for good. A folder merely named .git (not a repository) is bundled as before.
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("secret.env\n")
    (repo / "train.py").write_text("print(1)\n")
    (repo / "secret.env").write_text("KEY=1\n")
    for path in (repo, *repo.rglob("*")):
        os.chown(path, 65534, 65534, follow_symlinks=False)  # nobody's
    with pytest.raises(BundleError, match=r"dubious ownership.*--no-bundle") as info:
        collect_bundle(repo)
    assert "\n" not in str(info.value)


def test_a_file_name_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    # It said only "strings must be valid Unicode (no lone surrogates)".
    (tmp_path / "train.py").write_text("print(1)\n")
    (tmp_path / os.fsdecode(b"bad\xffname.txt")).write_text("x")
    with pytest.raises(BundleError, match=r"the file name 'bad\\udcffname.txt' is not valid UTF-8"):
        collect_bundle(tmp_path)


def test_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a folder"):
        collect_bundle(tmp_path / "missing")


def test_empty_folder_is_an_empty_bundle(tmp_path: Path) -> None:
    manifest, chunks = collect_bundle(tmp_path)
    assert manifest["files"] == [] and chunks == {}
    materialize_bundle(manifest, chunks, tmp_path / "d")
    assert list((tmp_path / "d").iterdir()) == []


def _one_file(tmp_path: Path) -> tuple[dict[str, Any], dict[bytes, bytes]]:
    src = tmp_path / "one"
    src.mkdir()
    (src / "f.py").write_text("content")
    return collect_bundle(src)


@pytest.mark.parametrize("path", ["/etc/passwd", "../up.py", "a/../../b", "a//b", "./a", ""])
def test_unsafe_paths_are_refused(tmp_path: Path, path: str) -> None:
    manifest, chunks = _one_file(tmp_path)
    manifest["files"][0][0] = path
    with pytest.raises(BundleError):
        materialize_bundle(manifest, chunks, tmp_path / "d")
    assert not (tmp_path / "up.py").exists()


def test_corrupt_chunks_and_files_are_refused(tmp_path: Path) -> None:
    manifest, chunks = _one_file(tmp_path)
    key = manifest["chunks"][0]
    with pytest.raises(BundleError, match="digest"):
        materialize_bundle(manifest, {key: b"tampered"}, tmp_path / "d1")
    manifest["files"][0][3] = b"\0" * 32
    with pytest.raises(BundleError, match="digest"):
        materialize_bundle(manifest, chunks, tmp_path / "d2")


def test_missing_chunks_propagate_the_fetchers_error(tmp_path: Path) -> None:
    manifest, _ = _one_file(tmp_path)

    def fetch(digest: bytes) -> bytes:
        raise LookupError(digest.hex())

    with pytest.raises(LookupError):
        materialize_bundle(manifest, fetch, tmp_path / "d")


@pytest.mark.parametrize(
    "manifest",
    [
        None,
        {},
        {"version": 2},
        {"version": 1, "files": "x", "chunks": []},
        {"version": 1, "files": [["a", 0o777, 1, b"\0" * 32]], "chunks": []},
        {"version": 1, "files": [["a", 0o644, -1, b"\0" * 32]], "chunks": []},
        {"version": 1, "files": [], "chunks": ["nothex"]},
    ],
)
def test_malformed_manifests_are_refused(tmp_path: Path, manifest: Any) -> None:
    with pytest.raises(BundleError):
        materialize_bundle(manifest, {}, tmp_path / "d")


def test_a_manifest_naming_one_chunk_many_times_is_capped(tmp_path: Path) -> None:
    # A 1 MiB record holds ~30,000 digests: one chunk named that often would be ~30 GiB.
    chunk = os.urandom(1 << 20)
    key = hashlib.blake2b(chunk, digest_size=32).digest()
    files = [["big", 0o644, HARD_MAX_BYTES + 1, b"\0" * 32]]
    manifest = {"version": 1, "files": files, "chunks": [key] * 1025}
    with pytest.raises(BundleError, match="over the 1024 MiB"):
        materialize_bundle(manifest, {key: chunk}, tmp_path / "d")
    assert not (tmp_path / "d" / "big").exists()


def test_a_file_is_written_piece_by_piece_and_checked_whole(tmp_path: Path) -> None:
    # Six chunks of one file: the stream hands out at most one chunk at a time, and a file
    # whose chunks are sound but whose whole digest is not is still refused.
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.bin").write_bytes(os.urandom(6000))
    manifest, chunks = collect_bundle(src, chunk_bytes=1000)
    materialize_bundle(manifest, chunks, tmp_path / "ok")
    assert (tmp_path / "ok" / "f.bin").read_bytes() == (src / "f.bin").read_bytes()
    manifest["chunks"] = [manifest["chunks"][i] for i in (1, 0, 2, 3, 4, 5)]
    with pytest.raises(BundleError, match="does not match its digest"):
        materialize_bundle(manifest, chunks, tmp_path / "swapped")


def test_a_non_empty_destination_is_refused(tmp_path: Path) -> None:
    manifest, chunks = _one_file(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    with pytest.raises(BundleError, match="not empty"):
        materialize_bundle(manifest, chunks, tmp_path / "d")


_files = st.dictionaries(
    st.lists(st.from_regex(r"[a-z]{1,6}", fullmatch=True), min_size=1, max_size=3).map("/".join),
    st.binary(max_size=300),
    max_size=6,
)


@settings(max_examples=25)
@given(_files, st.integers(1, 257))
def test_any_folder_round_trips(
    tmp_path_factory: pytest.TempPathFactory, files: dict[str, bytes], chunk: int
) -> None:
    src = tmp_path_factory.mktemp("src")
    written = {}
    for rel, data in files.items():
        path = src / rel
        if any(p.is_file() for p in path.parents) or path.is_dir():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written[rel] = data
    manifest, chunks = collect_bundle(src, chunk_bytes=chunk)
    dest = tmp_path_factory.mktemp("dest")
    materialize_bundle(manifest, chunks, dest)
    assert {k: v[0] for k, v in _tree(dest).items()} == written


def test_a_folder_that_is_a_peers_data_directory_sends_the_code_not_the_peers_files(
    tmp_path: Path,
) -> None:
    # `metaopt peer start --data-dir .` in the project folder, then a submit from it: the
    # replica, the cluster key and every trial's copy of earlier code went with the code.
    dirs = DataDir(tmp_path)
    dirs.ensure()
    dirs.node_id()
    dirs.replica.mkdir(exist_ok=True)
    (dirs.replica / "000005.ldb").write_bytes(b"x")
    dirs.key_file.write_text("mo1-secret\n")
    (tmp_path / "cluster.key.123.ab12cd34.tmp").write_text("mo1-secret\n")
    (dirs.trials / "ab" / "code").mkdir(parents=True)
    (dirs.trials / "ab" / "code" / "train.py").write_text("old\n")
    (tmp_path / "peer.log").write_text("log\n")
    dirs.write_started("127.0.0.1:9")  # (peer.pid, peer.started, peer.address)
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "peers").write_text("code named like a peer's file\n")
    assert manifest_paths(collect_bundle(tmp_path)[0]) == ["lib/peers", "train.py"]
