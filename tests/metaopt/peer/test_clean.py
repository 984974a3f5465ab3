"""`metaopt clean`: the folders of ended trials (but the best) and unneeded code bundles go."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crdt import LevelDBStore, Record
from metaopt._records import (
    EVENT,
    TRIAL,
    EventBody,
    ExperimentSpec,
    experiment_record,
    parse_experiment,
)
from metaopt._state import ExperimentState
from metaopt.cli import main
from metaopt.peer._clean import carry_out, plan_clean
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
    plan = plan_clean([h.state()], dirs, {running, ended_but_stopping_here}, keep=2)
    assert sorted(plan.kept) == sorted([best.hex(), second.hex()])
    assert plan.trials == 3 and plan.bundles == 0
    # Three checkpoints and three results files, counted by blocks on disk.
    assert carry_out(plan, dry_run=True).freed >= 3 * 50_000
    carry_out(plan)
    whole = {"checkpoint", "output.log", "pid", "results.txt"}
    for trial in (best, second, running, frozen, lost, ended_but_stopping_here):
        assert _left(dirs, trial) == whole
    for trial in (worse, failed, killed):
        assert _left(dirs, trial) == {"output.log", "pid"}
    # Nothing more to free while the killed trial is still stopping; then it goes, and keep 0
    # lets the best go too.
    again = plan_clean([h.state()], dirs, {running, ended_but_stopping_here}, keep=2)
    assert carry_out(again, dry_run=True).freed == 0
    carry_out(plan_clean([h.state()], dirs, {running}, keep=0))
    for trial in (best, ended_but_stopping_here):
        assert _left(dirs, trial) == {"output.log", "pid"}


def test_several_objectives_keep_the_pareto_front(tmp_path: Path) -> None:
    dirs = DataDir(tmp_path)
    h = _History(dirs, objectives=2)
    fast = h.trial("started", "completed", value=(0.5, 1.0))
    accurate = h.trial("started", "completed", value=(0.1, 3.0))
    dominated = h.trial("started", "completed", value=(0.6, 3.5))
    plan = plan_clean([h.state()], dirs, set(), keep=1)
    assert sorted(plan.kept) == sorted([fast.hex(), accurate.hex()])
    carry_out(plan)
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
    frozen = h.trial("started", "frozen")
    # Budget spent, but a frozen trial may be thawed by hand.
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
    kept_code = plan_clean([h.state()], dirs, set(), keep=1)
    assert kept_code.bundles == 1 and kept_code.kept == [first.hex()]
    # The bundle's file is still linked from the best trial's code: deleting it frees nothing
    # of it (the frozen trial's checkpoint is what it frees).
    assert 50_000 <= carry_out(kept_code, dry_run=True).freed < 90_000
    all_code = plan_clean([h.state()], dirs, set(), keep=0)
    assert carry_out(all_code, dry_run=True).freed >= 50_000 * 2 + 40_000
    carry_out(kept_code)
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
