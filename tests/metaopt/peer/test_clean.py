"""`metaopt clean`: the folders of ended trials (but the best) and unneeded code bundles go."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from crdt import LevelDBStore, Record
from metaopt._records import (
    CONTROL,
    EVENT,
    TRIAL,
    EventBody,
    ExperimentSpec,
    experiment_record,
    parse_experiment,
)
from metaopt._state import ExperimentState
from metaopt.cli import main
from metaopt.peer import _clean
from metaopt.peer._clean import CleanPlan, _freed, carry_out, list_folders, plan_clean
from metaopt.peer._identity import DataDir, trial_dir
from tests.metaopt.peer.cluster import Cluster, wait_for

ME = b"m" * 16


class _History:
    """An experiment's records, built trial by trial, and each trial's folder on disk."""

    def __init__(self, dirs: DataDir, max_trials: int | None = 10, objectives: int = 1) -> None:
        names = ("loss", "latency")[:objectives]
        spec = ExperimentSpec(
            "sweep",
            {"x": "uniform(0, 1)"},
            command=("t.py",),
            max_trials=max_trials,
            objectives=names,
            directions=("minimize",) * objectives,
        )
        self.dirs = dirs
        self.records = [experiment_record(spec)]
        self.key = self.records[0].key
        self.seq = 0

    def trial(self, *events: str, value: float | tuple[float, ...] = 0.5) -> bytes:
        """A trial that went through the events (its values on a completion), with a folder
        holding a checkpoint, a code copy, its log and pid file."""
        self.seq += 1
        body = {"params": {"x": self.seq / 100}, "node": ME, "counter": self.seq}
        trial = Record.create(TRIAL, ME, self.seq, self.seq * 10, body, [self.key])
        self.records.append(trial)
        values = value if isinstance(value, tuple) else (value,)
        metrics = dict(zip(("loss", "latency"), values, strict=False))
        for i, kind in enumerate(events):
            self.seq += 1
            event = EventBody(
                trial.key, self.key, kind, ME, 3, metrics if kind == "completed" else {}
            )
            rec = Record.create(
                EVENT, ME, self.seq, self.seq * 10 + i, event.to_body(), [trial.key, self.key]
            )
            self.records.append(rec)
        folder = trial_dir(self.dirs, trial.key)
        (folder / "checkpoint").mkdir(parents=True)
        (folder / "checkpoint" / "model.pt").write_bytes(b"w" * 50_000)
        (folder / "output.log").write_text("step 3\n")
        (folder / "pid").write_text("1\n")
        (folder / "results.txt").write_text("written by the trial in its working directory\n")
        return trial.key

    def state(self) -> ExperimentState:
        spec = parse_experiment(self.records[0])
        assert spec is not None
        state = ExperimentState(self.key, spec)
        for rec in self.records[1:]:
            state.apply(rec)
        return state


def _left(dirs: DataDir, trial: bytes) -> set[str]:
    folder = trial_dir(dirs, trial)
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def test_ended_trials_lose_their_folders_but_the_best_and_the_live_ones_keep_theirs(
    tmp_path: Path,
) -> None:
    dirs = DataDir(tmp_path)
    h = _History(dirs)
    best = h.trial("started", "completed", value=0.1)
    second = h.trial("started", "completed", value=0.2)
    worse = h.trial("started", "completed", value=0.9)
    failed = h.trial("started", "failed")
    killed = h.trial("started", "killed")
    running = h.trial("started")
    frozen = h.trial("started", "frozen")
    lost = h.trial("started", "lost")
    ended_but_stopping_here = h.trial("started", "killed")
    plan = list_folders(plan_clean([h.state()], dirs, {running, ended_but_stopping_here}, keep=2))
    assert sorted(plan.kept) == sorted([best.hex(), second.hex()])
    assert plan.trials == 3 and plan.bundles == 0
    # Three checkpoints and three results files, counted by blocks on disk.
    assert carry_out(plan, dirs.clean_lock, dry_run=True).freed >= 3 * 50_000
    carry_out(plan, dirs.clean_lock)
    whole = {"checkpoint", "output.log", "pid", "results.txt"}
    for trial in (best, second, running, frozen, lost, ended_but_stopping_here):
        assert _left(dirs, trial) == whole
    for trial in (worse, failed, killed):
        assert _left(dirs, trial) == {"output.log", "pid"}
    # Nothing more to free while the killed trial is still stopping; then it goes, and keep 0
    # lets the best go too.
    again = plan_clean([h.state()], dirs, {running, ended_but_stopping_here}, keep=2)
    assert carry_out(again, dirs.clean_lock, dry_run=True).freed == 0
    carry_out(plan_clean([h.state()], dirs, {running}, keep=0), dirs.clean_lock)
    for trial in (best, ended_but_stopping_here):
        assert _left(dirs, trial) == {"output.log", "pid"}


def test_a_stopped_experiments_trials_that_were_to_run_again_are_ended_for_good(
    tmp_path: Path,
) -> None:
    # Stopped, an interrupted trial never runs again, yet clean kept its folder for good (and
    # kill refused it, and the status list counted it in no column).
    dirs = DataDir(tmp_path)
    h = _History(dirs)
    waiting = [h.trial("started", "interrupted"), h.trial("started", "lost"), h.trial()]
    frozen, running = h.trial("started", "frozen"), h.trial("started")
    # (They may run again.)
    assert list_folders(plan_clean([h.state()], dirs, set(), keep=0)).trials == 0
    h.seq += 1
    h.records.append(Record.create(CONTROL, ME, h.seq, 10_000, {"action": "stop"}, [h.key]))
    state = h.state()
    assert [state.ended_for_good(t) for t in state.trials()] == [True, True, True, False, False]
    carry_out(plan_clean([state], dirs, {running}, keep=0), dirs.clean_lock)
    for trial in waiting:
        assert _left(dirs, trial) == {"output.log", "pid"}
    assert _left(dirs, frozen) == _left(dirs, running) == {"checkpoint", "output.log", "pid",
                                                           "results.txt"}  # fmt: skip


def test_several_objectives_keep_the_pareto_front(tmp_path: Path) -> None:
    dirs = DataDir(tmp_path)
    h = _History(dirs, objectives=2)
    fast = h.trial("started", "completed", value=(0.5, 1.0))
    accurate = h.trial("started", "completed", value=(0.1, 3.0))
    dominated = h.trial("started", "completed", value=(0.6, 3.5))
    plan = list_folders(plan_clean([h.state()], dirs, set(), keep=1))
    assert sorted(plan.kept) == sorted([fast.hex(), accurate.hex()])
    carry_out(plan, dirs.clean_lock)
    assert _left(dirs, dominated) == {"output.log", "pid"}


def test_a_bundle_goes_once_no_trial_can_start_or_thaw_and_hard_links_count_once(
    tmp_path: Path,
) -> None:
    dirs = DataDir(tmp_path)
    h = _History(dirs, max_trials=2)
    first = h.trial("started", "completed", value=0.1)
    bundle = dirs.bundles / h.key.hex()[:16]
    bundle.mkdir(parents=True)
    (bundle / "train.py").write_bytes(b"#" * 40_000)
    code = trial_dir(dirs, first) / "code"
    code.mkdir()
    os.link(bundle / "train.py", code / "train.py")
    # Budget not spent: new trials need the code.
    assert plan_clean([h.state()], dirs, set(), keep=1).bundles == 0
    frozen = h.trial("started")
    # Budget spent, but a running trial may be frozen and thawed (by hand, refused until
    # the code was laid out again: a review, 3 of 3), and a frozen one thawed.
    assert plan_clean([h.state()], dirs, set(), keep=1).bundles == 0
    h.records.append(
        Record.create(
            EVENT,
            ME,
            98,
            9998,
            EventBody(frozen, h.key, "frozen", ME, 3).to_body(),
            [frozen, h.key],
        )
    )
    assert h.state().trial(frozen).state == "frozen"  # type: ignore[union-attr]
    assert plan_clean([h.state()], dirs, set(), keep=1).bundles == 0
    h.records.append(
        Record.create(
            EVENT,
            ME,
            99,
            9999,
            EventBody(frozen, h.key, "killed", ME).to_body(),
            [frozen, h.key],
        )
    )
    kept_code = list_folders(plan_clean([h.state()], dirs, set(), keep=1))
    assert kept_code.bundles == 1 and kept_code.kept == [first.hex()]
    # The bundle's file is still linked from the best trial's code: deleting it frees nothing
    # of it (the frozen trial's checkpoint is what it frees).
    assert 50_000 <= carry_out(kept_code, dirs.clean_lock, dry_run=True).freed < 90_000
    all_code = plan_clean([h.state()], dirs, set(), keep=0)
    assert carry_out(all_code, dirs.clean_lock, dry_run=True).freed >= 50_000 * 2 + 40_000
    carry_out(kept_code, dirs.clean_lock)
    assert not bundle.exists() and (code / "train.py").read_bytes() == b"#" * 40_000


def test_clean_works_on_a_stopped_peers_data_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dirs = DataDir(tmp_path)
    dirs.ensure()
    dirs.node_id()  # (as a peer that ran here leaves it)
    h = _History(dirs)
    best = h.trial("started", "completed", value=0.1)
    worse = h.trial("started", "completed", value=0.5)
    store = LevelDBStore(dirs.replica)
    store.add(h.records)
    store.close()
    assert main(["clean", "--dry-run", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (
        "would free" in out and "the folders of 1 ended trial\n" in out and best.hex()[:12] in out
    )
    assert "checkpoint" in _left(dirs, worse)
    assert main(["clean", "sweep", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("freed ")
    assert _left(dirs, worse) == {"output.log", "pid"}
    assert main(["clean", "nope", "--data-dir", str(tmp_path)]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err


def test_an_experiment_named_twice_is_cleaned_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`clean sweep sweep`, or its name and its id, planned it once per mention: its trials,
    its kept trials and the bytes freed were counted twice."""
    dirs = DataDir(tmp_path)
    dirs.ensure()
    dirs.node_id()
    h = _History(dirs)
    h.trial("started", "completed", value=0.1)
    h.trial("started", "completed", value=0.5)
    store = LevelDBStore(dirs.replica)
    store.add(h.records)
    store.close()
    said = []
    for named in (["sweep"], ["sweep", "sweep"], ["sweep", h.key.hex()[:8]]):
        assert main(["clean", *named, "--dry-run", "--data-dir", str(tmp_path)]) == 0
        said.append(capsys.readouterr().out)
    assert said[1] == said[0] and said[2] == said[0]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_running_peer_cleans_its_ended_trials_and_their_logs_stay_readable(
    tmp_path: Path,
) -> None:
    from tests.metaopt.peer.test_cluster import experiment, submit

    cluster = Cluster(tmp_path)
    try:
        peer = cluster.start_peer("a")
        key = submit(peer, trials=3)
        wait_for(lambda: experiment(peer).get("finished", False), 90, peer.log)
        info = experiment(peer)
        [best] = [t["id"] for t in info["best"]]
        others = [t["id"] for t in info["trial_list"] if t["id"] != best]
        dirs = DataDir(peer.data_dir)
        bundle = dirs.bundles / key[:16]
        assert bundle.is_dir()
        out = peer.cli("clean")
        assert out.returncode == 0, out.stderr
        assert (
            "the folders of 2 ended trials, 1 code bundle no trial" in out.stdout
            and best[:12] in out.stdout
        )
        assert not bundle.exists()
        assert {"checkpoint", "code"} <= _left(dirs, bytes.fromhex(best))
        for trial in others:
            assert _left(dirs, bytes.fromhex(trial)) <= {"output.log", "pid"}
            logs = peer.cli("logs", trial)
            assert logs.returncode == 0 and logs.stdout, logs.stderr
    finally:
        cluster.close()


def test_what_cannot_be_deleted_is_named_and_not_counted_and_the_logs_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An undeletable file was reported freed (and again at every clean), with exit 0; and the
    # log's older half (output.log.1) went with the checkpoints.
    dirs = DataDir(tmp_path)
    h = _History(dirs)
    stuck = h.trial("started", "completed", value=0.5)
    other = h.trial("started", "completed", value=0.6)
    (trial_dir(dirs, other) / "output.log.1").write_text("the log's older half\n")
    real_unlink = os.unlink

    def refuse(path: Any, *args: Any, **kw: Any) -> None:
        if str(path) == "model.pt" and kw.get("dir_fd") is not None and not refused:
            refused.append(path)
            raise PermissionError(1, "Operation not permitted")
        real_unlink(path, *args, **kw)

    refused: list[Any] = []
    monkeypatch.setattr(os, "unlink", refuse)
    plan = carry_out(plan_clean([h.state()], dirs, set(), keep=0), dirs.clean_lock)
    assert any(f.endswith("model.pt: Operation not permitted") for f in plan.failed)
    # Two checkpoints and results planned; one checkpoint stayed, and is not counted.
    assert 50_000 <= plan.freed < 2 * 50_000 + 8192
    assert {"output.log", "output.log.1", "pid"} <= _left(dirs, other)
    # What could not go was set aside whole, out of the trial's way.
    aside = f".checkpoint.deleting-{os.getpid()}"
    assert _left(dirs, stuck) == {"output.log", "pid", aside}


def test_a_clean_with_the_peer_stopped_frees_the_replica_before_deleting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # It held the replica's lock for the whole deletion: a peer started meanwhile gave up.
    import metaopt.peer._offline as offline

    dirs = DataDir(tmp_path)
    dirs.ensure()
    dirs.node_id()
    h = _History(dirs)
    h.trial("started", "completed", value=0.1)
    h.trial("started", "failed")
    store = LevelDBStore(dirs.replica)
    store.add(h.records)
    store.close()
    real = offline.carry_out
    opened: list[bool] = []

    def deleting(plan: Any, lock: Path, *, dry_run: bool = False) -> Any:
        LevelDBStore(dirs.replica).close()  # as a peer starting now opens it
        opened.append(True)
        return real(plan, lock, dry_run=dry_run)

    monkeypatch.setattr(offline, "carry_out", deleting)
    assert main(["clean", "--data-dir", str(tmp_path)]) == 0
    assert opened == [True] and "the folders of 1 ended trial" in capsys.readouterr().out
    # And --keep past what a record holds is one line, not msgpack's traceback.
    assert main(["clean", "--keep", str(2**64), "--data-dir", str(tmp_path)]) == 2
    assert "--keep 18446744073709551616: keep between 0 and 2**31" in capsys.readouterr().err


def test_clean_exits_1_naming_what_it_could_not_delete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import metaopt.cli._read as read

    class _Peer:
        def call(self, op: str, body: Any = None) -> Any:
            failed = ["/d/trials/ab/checkpoint/model.pt: Operation not permitted"]
            return {"trials": 1, "bundles": 0, "kept": [], "freed": 4096, "failed": failed,
                    "failures": 3}  # fmt: skip

    monkeypatch.setattr(read, "_peer", lambda args, read=False, timeout=None: _Peer())
    assert main(["clean"]) == 1
    out = capsys.readouterr()
    assert out.out == "freed 4.0 KiB: the folders of 1 ended trial\n"
    assert "could not delete /d/trials/ab/checkpoint/model.pt: Operation not permitted" in out.err
    assert "3 paths could not be deleted (2 more not shown); fix their permissions" in out.err


def test_a_bundle_is_set_aside_at_once_and_a_leftover_is_deleted_later(tmp_path: Path) -> None:
    # Deleted from a thread, a bundle half gone was still one to link a starting trial's code
    # from; set aside on the loop it is gone at once, and laid out again if work comes back.
    from metaopt.peer._clean import set_bundles_aside

    dirs = DataDir(tmp_path)
    h = _History(dirs, max_trials=1)
    h.trial("started", "completed", value=0.1)
    bundle = dirs.bundles / h.key.hex()[:16]
    bundle.mkdir(parents=True)
    (bundle / "train.py").write_text("print(1)\n")
    plan = plan_clean([h.state()], dirs, set(), keep=1)
    set_bundles_aside(plan, dirs.bundles)
    assert not bundle.exists() and plan.paths[-1].name.startswith(f".{bundle.name}.deleting-")
    leftover = dirs.bundles / ".0123456789abcdef.deleting-1"  # an earlier clean's, stuck
    leftover.mkdir()
    again = plan_clean([h.state()], dirs, set(), keep=1)
    assert leftover in again.paths
    carry_out(plan, dirs.clean_lock)
    carry_out(again, dirs.clean_lock)
    assert list(dirs.bundles.iterdir()) == []


def test_the_plan_reads_no_trial_folder_so_a_peer_makes_it_on_its_loop_without_a_stall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A peer plans on its event loop (between two launches); reading a folder per trial there
    # held the loop 0.4-0.8 s at 20,000 trials. carry_out, off the loop, reads them.
    import metaopt.peer._clean as clean

    dirs = DataDir(tmp_path)
    h = _History(dirs)
    best = h.trial("started", "completed", value=0.1)
    h.trial("started", "completed", value=0.9)
    read: list[Path] = []
    entries = clean._entries
    monkeypatch.setattr(clean, "_entries", lambda folder: read.append(folder) or entries(folder))
    plan = plan_clean([h.state()], dirs, set(), keep=1)
    assert read == [] and plan.trials == 0 and plan.kept == []
    assert carry_out(plan, dirs.clean_lock).trials == 1 and plan.kept == [best.hex()]
    assert len(read) == 2


def test_what_deleting_folders_frees_counts_the_folders_blocks(tmp_path: Path) -> None:
    # Folders were left out: the empty folders of 16 ended trials were said to free 0 bytes,
    # and 28 KiB where df saw 60 KB go.
    if tmp_path.lstat().st_blocks == 0:
        pytest.skip("this filesystem gives folders no blocks")
    empty = tmp_path / "trial" / "checkpoint"
    (empty / "inner").mkdir(parents=True)
    (empty / "weights.pt").write_bytes(b"w" * 10_000)
    folders = sum(p.lstat().st_blocks * 512 for p in (empty, empty / "inner"))
    file = (empty / "weights.pt").lstat().st_blocks * 512
    assert _freed([empty]) == folders + file
    # A file with another name outside still frees nothing; its folder does.
    os.link(empty / "weights.pt", tmp_path / "kept.pt")
    assert _freed([empty]) == folders


def test_clean_frees_space_on_a_disk_too_full_for_its_lock_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # clean.lock could not be created on a disk with no inode (or file quota) left, and
    # `metaopt clean`, the command to free that disk, failed: "internal error in api.clean:
    # [Errno 28] ... clean.lock" with the peer up, "clean.lock: No space left on device" with
    # it stopped (2 of 2 each on a real tmpfs; a review of every write on a full disk).
    folder = tmp_path / "trials" / "0123456789abcdef"
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "checkpoint" / "big.pt").write_bytes(b"x" * 10_000)
    lock = tmp_path / "clean.lock"
    full = _refusing_to_create(lock, monkeypatch)
    plan = carry_out(CleanPlan(to_empty=[folder]), lock)
    assert not (folder / "checkpoint").exists() and plan.freed > 0
    assert full.is_set() and not lock.exists()  # (refused: the test saw the disk full)


def _refusing_to_create(lock: Path, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Make clean's os.open refuse to create ``lock`` (no space) while the event is set."""
    real = os.open
    full = threading.Event()
    full.set()

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if full.is_set() and Path(path) == lock and flags & os.O_CREAT:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(_clean.os, "open", open_)
    return full


def test_a_clean_that_could_not_make_its_lock_file_keeps_out_one_that_could(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clean on a disk with no inode left locked the data directory instead of clean.lock;
    # it frees inodes as it deletes, and a second clean (the restarted peer's, or another
    # `metaopt clean` with the peer stopped, both reading a copy of the replica) made the
    # file and locked that: both counted and deleted the same files at once (a review of the
    # day's fixes).
    lock = tmp_path / "clean.lock"
    full = _refusing_to_create(lock, monkeypatch)
    a_in, a_out, b_in = threading.Event(), threading.Event(), threading.Event()

    def clean_a() -> None:
        with _clean._locked(lock):
            a_in.set()
            a_out.wait(5)

    def clean_b() -> None:
        with _clean._locked(lock):
            b_in.set()

    first = threading.Thread(target=clean_a)
    first.start()
    assert a_in.wait(5)
    full.clear()  # the first clean freed some inodes
    second = threading.Thread(target=clean_b)
    second.start()
    inside_together = b_in.wait(1.0)
    a_out.set()
    first.join(5)
    second.join(5)
    assert not inside_together, "two cleans held the clean lock at once"
    assert b_in.is_set() and lock.exists()  # the second went in once the first was done


def test_clean_locks_its_file_alone_where_a_folder_cannot_be_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NFS takes flock for a POSIX lock, which a descriptor opened read-only (as a folder is)
    # cannot hold: clean locks its lock file alone there, as older releases did.
    import fcntl
    import stat

    real = fcntl.flock
    refused: list[int] = []

    def flock(fd: int, op: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode) and op == fcntl.LOCK_EX:
            refused.append(fd)
            raise OSError(errno.EBADF, "Bad file descriptor")
        real(fd, op)

    monkeypatch.setattr(_clean.fcntl, "flock", flock)
    folder = tmp_path / "trials" / "0123456789abcdef"
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "checkpoint" / "big.pt").write_bytes(b"x" * 10_000)
    plan = carry_out(CleanPlan(to_empty=[folder]), tmp_path / "clean.lock")
    assert refused and not (folder / "checkpoint").exists() and plan.freed > 0
    assert (tmp_path / "clean.lock").exists()
