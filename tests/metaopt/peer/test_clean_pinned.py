"""`metaopt clean`, where the clean tests left behaviour unpinned: keep 0 with several
objectives, ties among the best, counts of a second clean, symlinks in a trial's folder,
the reply's cap on failures, and the lock that keeps two cleans apart."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

import pytest

import metaopt.peer._clean as clean
from metaopt.peer._clean import (
    CleanPlan,
    carry_out,
    clean_reply,
    kept_trials,
    list_folders,
    plan_clean,
    set_bundles_aside,
)
from metaopt.peer._identity import DataDir, trial_dir
from tests.metaopt.peer.test_clean import _History, _left

LOG_AND_PID = {"output.log", "pid"}


def test_keep_0_lets_the_pareto_front_go_too(tmp_path: Path) -> None:
    """Pins that ``--keep 0`` keeps nothing with several objectives as with one: a user who
    asks for every checkpoint to go must not find the Pareto front's still on disk."""
    dirs = DataDir(tmp_path)
    h = _History(dirs, objectives=2)
    front = [h.trial("started", "completed", value=(0.5, 1.0)),
             h.trial("started", "completed", value=(0.1, 3.0))]  # fmt: skip
    assert kept_trials(h.state(), 0) == []
    plan = carry_out(plan_clean([h.state()], dirs, set(), keep=0), dirs.clean_lock)
    assert plan.kept == [] and plan.trials == 2
    for trial in front:
        assert _left(dirs, trial) == LOG_AND_PID


def test_among_equally_good_trials_the_earliest_is_kept(tmp_path: Path) -> None:
    """Pins the tie-break of the trials kept: equal values keep the earliest created (as
    ``metaopt best`` names it), not the one whose key sorts first, so clean never deletes
    the checkpoint of the trial the user was shown as the best."""
    dirs = DataDir(tmp_path)
    h = _History(dirs)
    h.trial("started", "completed", value=0.9)  # (shifts the keys: see the assert below)
    trials = [h.trial("started", "completed", value=0.25) for _ in range(4)]
    state = h.state()
    assert min(trials) != trials[0]  # (else the key alone would pick it too)
    assert [t.key for t in kept_trials(state, 1)] == [trials[0]]
    assert [t.key for t in state.best()] == [trials[0]]
    plan = carry_out(plan_clean([state], dirs, set(), keep=1), dirs.clean_lock)
    assert plan.kept == [trials[0].hex()]
    assert "checkpoint" in _left(dirs, trials[0])


def test_a_bundle_that_is_not_on_disk_is_not_counted(tmp_path: Path) -> None:
    """Pins that a spent experiment whose bundle was never laid out here (or is gone) is
    not reported as "1 code bundle" freed at every clean."""
    dirs = DataDir(tmp_path)
    h = _History(dirs, max_trials=1)
    h.trial("started", "completed", value=0.1)
    plan = carry_out(plan_clean([h.state()], dirs, set(), keep=1), dirs.clean_lock)
    assert plan.bundles == 0 and plan.failed == []
    assert clean_reply(plan)["bundles"] == 0


def test_a_second_clean_counts_no_trial_folder_again(tmp_path: Path) -> None:
    """Pins that folders already emptied (only the log and pid left) are not counted: a
    second ``metaopt clean`` must say it freed nothing, not "the folders of 2 ended trials"."""
    dirs = DataDir(tmp_path)
    h = _History(dirs)
    h.trial("started", "failed")
    h.trial("started", "killed")
    first = carry_out(plan_clean([h.state()], dirs, set(), keep=0), dirs.clean_lock)
    assert first.trials == 2
    again = carry_out(plan_clean([h.state()], dirs, set(), keep=0), dirs.clean_lock)
    assert (again.trials, again.paths, again.freed) == (0, [], 0)


def test_a_plan_listed_before_it_is_carried_out_is_not_counted_twice(tmp_path: Path) -> None:
    """Pins that list_folders consumes what it lists: a plan listed (to show) and then
    carried out counts each trial and each kept trial once."""
    dirs = DataDir(tmp_path)
    h = _History(dirs)
    best = h.trial("started", "completed", value=0.1)
    h.trial("started", "completed", value=0.9)
    plan = list_folders(plan_clean([h.state()], dirs, set(), keep=1))
    assert (plan.trials, plan.kept) == (1, [best.hex()])
    carry_out(plan, dirs.clean_lock)
    assert (plan.trials, plan.kept) == (1, [best.hex()])
    assert len(plan.paths) == len(set(plan.paths))


def test_a_symlink_in_a_trial_folder_goes_but_not_what_it_points_to(tmp_path: Path) -> None:
    """Pins that a link to a shared folder (a dataset linked into the working directory) is
    deleted as a link: its target is neither deleted, nor counted as freed, nor reported as a
    failure."""
    dirs = DataDir(tmp_path)
    h = _History(dirs)
    trial = h.trial("started", "failed")
    data = tmp_path / "dataset"
    data.mkdir()
    (data / "big.bin").write_bytes(b"d" * 200_000)
    (trial_dir(dirs, trial) / "data").symlink_to(data, target_is_directory=True)
    dry = carry_out(plan_clean([h.state()], dirs, set(), keep=0), dirs.clean_lock, dry_run=True)
    assert dry.freed < 200_000  # the checkpoint (50 kB) and the link, not the dataset
    plan = carry_out(plan_clean([h.state()], dirs, set(), keep=0), dirs.clean_lock)
    assert plan.failed == [] and plan.trials == 1
    assert _left(dirs, trial) == LOG_AND_PID
    assert (data / "big.bin").stat().st_size == 200_000


def test_a_path_already_gone_is_no_failure(tmp_path: Path) -> None:
    """Pins that what disappeared between the plan and the deletion (deleted by hand, by the
    trial's own cleanup) is not reported as a failure, which makes ``metaopt clean`` exit 1."""
    gone_file, gone_folder = tmp_path / "gone.pt", tmp_path / "gone"
    plan = CleanPlan(paths=[gone_file, gone_folder])
    assert carry_out(plan, tmp_path / "lock").failed == []


def test_a_trial_folder_that_cannot_be_listed_is_skipped_not_a_crash(tmp_path: Path) -> None:
    """Pins that a trial "folder" that cannot be listed (here a file in its place) is passed
    over: one odd entry must not stop the whole clean with a traceback."""
    dirs = DataDir(tmp_path)
    h = _History(dirs)
    odd = h.trial("started", "failed")
    other = h.trial("started", "failed")
    folder = trial_dir(dirs, odd)
    for p in sorted(folder.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    folder.rmdir()
    folder.write_text("not a folder\n")
    plan = carry_out(plan_clean([h.state()], dirs, set(), keep=0), dirs.clean_lock)
    assert plan.trials == 1 and _left(dirs, other) == LOG_AND_PID


def test_the_reply_names_at_most_20_failures_and_counts_them_all() -> None:
    """Pins the reply's cap: 20 paths named (the CLI's message stays readable, the reply
    small) and the count of every failure (so the CLI can say how many more)."""
    plan = CleanPlan(failed=[f"/d/{i}: Operation not permitted" for i in range(25)])
    reply = clean_reply(plan)
    assert reply["failed"] == plan.failed[:20] and reply["failures"] == 25


def test_a_leftover_set_aside_earlier_is_not_renamed_again(tmp_path: Path) -> None:
    """Pins that a bundle already set aside (a dot name) keeps its name: renamed at every
    clean, a leftover that cannot be deleted would grow a suffix each time."""
    bundles = tmp_path / "bundles"
    leftover = bundles / ".0123456789abcdef.deleting-1"
    leftover.mkdir(parents=True)
    plan = CleanPlan(paths=[leftover])
    set_bundles_aside(plan, bundles)
    assert plan.paths == [leftover] and leftover.is_dir()


def test_carry_out_holds_the_clean_lock_while_it_counts_and_deletes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pins the exclusive locks around a clean (the peer's and an offline one must not count
    the same files twice): the data directory's and the lock file's, taken before the folders
    are listed, released after."""
    dirs = DataDir(tmp_path)
    h = _History(dirs)
    h.trial("started", "failed")
    calls: list[Any] = []
    real_flock, real_list = fcntl.flock, clean.list_folders

    def flock(f: Any, op: int) -> None:
        calls.append(op)
        real_flock(f, op)

    def listing(plan: CleanPlan) -> CleanPlan:
        calls.append("list")
        return real_list(plan)

    monkeypatch.setattr(clean.fcntl, "flock", flock)
    monkeypatch.setattr(clean, "list_folders", listing)
    carry_out(plan_clean([h.state()], dirs, set(), keep=0), dirs.clean_lock)
    assert calls == [fcntl.LOCK_EX, fcntl.LOCK_EX, "list", fcntl.LOCK_UN, fcntl.LOCK_UN]
    assert os.path.exists(dirs.clean_lock)
