"""Real peers on 127.0.0.1: discovery by --join, replication, execution, crashes, partitions."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from crdt import ClusterKey
from metaopt.peer._orphans import find_orphans, kill_orphans
from tests.metaopt.peer.cluster import Cluster, Peer, run_cli, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

SCRIPT = Path(__file__).parent / "scripts" / "quad.py"
SPAWNER = Path(__file__).parent / "scripts" / "spawner.py"


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    c = Cluster(tmp_path)
    yield c
    c.close()


def submit(
    peer: Peer,
    *extra: str,
    trials: int = 6,
    steps: int = 3,
    sleep: float = 0.05,
    early_stopping: str = "none",
) -> str:
    # No early stopping unless asked: these tests count completed trials to check budgets,
    # crashes and replication, and a trial frozen or killed on its merits is none of that.
    out = peer.cli(
        "submit",
        "--name",
        "quad",
        "--max-trials",
        str(trials),
        "--early-stopping",
        early_stopping,
        "--json",
        str(SCRIPT),
        "--x~uniform(-1, 1)",
        "--y~uniform(-1, 1)",
        "--steps",
        str(steps),
        "--sleep",
        str(sleep),
        *extra,
    )
    assert out.returncode == 0, out.stderr
    return str(__import__("json").loads(out.stdout)["id"])


def experiment(peer: Peer, name: str = "quad") -> dict[str, Any]:
    out = peer.cli("status", name, "--json")
    if out.returncode != 0:
        return {"trial_list": [], "finished": False, "best": [], "counts": {}}
    return dict(__import__("json").loads(out.stdout))


def summary(peer: Peer) -> tuple[list[tuple[str, str]], list[str]]:
    info = experiment(peer)
    trials = sorted((t["id"], t["state"]) for t in info["trial_list"])
    return trials, [b["id"] for b in info["best"]]


def only_trial(peer: Peer, name: str) -> dict[str, Any]:
    """The first (in a one-trial experiment, the only) trial of an experiment; {} before it."""
    trials = experiment(peer, name)["trial_list"]
    return dict(trials[0]) if trials else {}


def all_agree(peers: list[Peer]) -> bool:
    views = [summary(p) for p in peers]
    return all(v == views[0] for v in views) and bool(views[0][0])


def test_three_peers_share_one_experiment_and_agree(cluster: Cluster) -> None:
    peers = [cluster.start_peer(f"p{i}") for i in range(3)]
    # 1.2 s a trial: a peer's search loads in a thread after it listens (2-3 s on a loaded
    # machine), and two peers could run 9 short trials before the third had loaded.
    submit(peers[0], trials=9, steps=8, sleep=0.15)
    wait_for(lambda: experiment(peers[0])["finished"], 120, peers[0].log)
    wait_for(lambda: all_agree(peers), 30, lambda: str([summary(p) for p in peers]))
    info = experiment(peers[2])
    # The budget is global but lock-free: peers starting at the same instant can overshoot it
    # by at most one trial per other peer (README, "The budget during a partition").
    assert 9 <= info["counts"].get("completed", 0) <= 9 + 2
    assert set(info["counts"]) == {"completed"}
    runners = {t["runner"] for t in info["trial_list"]}
    assert len(runners) == 3, f"trials ran on {len(runners)} peers, not all three"
    best = peers[1].json("best", "quad")
    assert best["id"] == info["best"][0]["id"]
    params = [tuple(sorted(t["params"].items())) for t in info["trial_list"]]
    assert len(set(params)) == len(params), "two trials share the same parameters"


def test_kill_9_mid_trial_is_lost_rerun_and_the_peer_catches_up(cluster: Cluster) -> None:
    peers = [cluster.start_peer(f"p{i}") for i in range(3)]
    victim = peers[2]
    # 5 s a trial: on a loaded machine a 2 s trial could end between the look that found it
    # running and the kill (the experiment then finished with nothing lost, the test red).
    submit(peers[0], trials=8, steps=10, sleep=0.5)

    def victim_running() -> bool:
        return any(
            t["state"] == "running" and t["runner"] == victim_id(victim)
            for t in experiment(peers[0])["trial_list"]
        )

    wait_for(victim_running, 60, peers[0].log)
    cluster.kill(victim, signal.SIGKILL)
    wait_for(lambda: experiment(peers[0])["finished"], 180, peers[0].log)
    info = experiment(peers[0])
    lost = [t for t in info["trial_list"] if t["attempts"] >= 2 or t["state"] == "lost"]
    assert lost, "the killed peer's trial was neither marked lost nor re-run"
    ended = [(t["state"], t["attempts"], t["reason"]) for t in info["trial_list"]]
    assert 8 <= info["counts"].get("completed", 0) <= 8 + 2, ended
    cluster.restart(victim)
    wait_for(lambda: all_agree(peers), 60, lambda: str([summary(p) for p in peers]))


_ids: dict[Path, str] = {}


def victim_id(peer: Peer) -> str:
    if peer.data_dir not in _ids:
        _ids[peer.data_dir] = (peer.data_dir / "node_id").read_text().strip()
    return _ids[peer.data_dir]


def test_a_stopped_peer_heals_and_converges(cluster: Cluster) -> None:
    peers = [cluster.start_peer(f"p{i}") for i in range(3)]
    frozen = peers[1]
    cluster.kill(frozen, signal.SIGSTOP)
    submit(peers[0], trials=6)
    wait_for(lambda: experiment(peers[0])["finished"], 120, peers[0].log)
    cluster.kill(frozen, signal.SIGCONT)
    wait_for(lambda: all_agree(peers), 60, lambda: str([summary(p) for p in peers]))


def test_failures_are_recorded_with_reasons(cluster: Cluster) -> None:
    peer = cluster.start_peer("solo")
    submit(peer, "--fail", trials=2)
    wait_for(lambda: experiment(peer)["finished"], 60, peer.log)
    trials = experiment(peer)["trial_list"]
    assert {t["state"] for t in trials} == {"failed"}
    assert all(t["exit_code"] == 3 for t in trials)
    assert all("something went wrong" in (t["reason"] or "") for t in trials)


def test_regex_objective_and_a_regex_that_never_matches(cluster: Cluster) -> None:
    peer = cluster.start_peer("solo")
    out = peer.cli(
        "submit",
        "--name",
        "rx",
        "--max-trials",
        "2",
        "--objective-regex",
        r"value ([0-9.]+)",
        "--",
        "python",
        str(SCRIPT),
        "--x~uniform(0, 1)",
        "--quiet",
    )
    assert out.returncode == 0, out.stderr
    out = peer.cli(
        "submit",
        "--name",
        "never",
        "--max-trials",
        "1",
        "--objective-regex",
        r"accuracy = ([0-9.]+)",
        "--",
        "python",
        str(SCRIPT),
        "--x~uniform(0, 1)",
        "--quiet",
    )
    assert out.returncode == 0, out.stderr
    wait_for(
        lambda: experiment(peer, "rx")["finished"] and experiment(peer, "never")["finished"],
        60,
        peer.log,
    )
    rx = experiment(peer, "rx")["trial_list"]
    assert {t["state"] for t in rx} == {"completed"}
    for t in rx:  # the last "value ..." line printed: loss + 1/steps with y = 0
        expected = (t["params"]["x"] - 0.3) ** 2 + 0.2**2 + 1 / 3
        assert t["value"] == pytest.approx(expected, abs=1e-5)
    never = experiment(peer, "never")["trial_list"]
    assert never[0]["state"] == "failed" and "objective" in never[0]["reason"]


def test_bad_input_is_one_line(cluster: Cluster, tmp_path: Path) -> None:
    peer = cluster.start_peer("solo")
    bad_prior = peer.cli("submit", str(SCRIPT), "--x~loguniform(0, 1)")
    assert bad_prior.returncode == 2
    assert bad_prior.stderr.count("\n") == 1 and "x" in bad_prior.stderr
    missing = peer.cli("submit", str(tmp_path / "nope.py"), "--x~uniform(0, 1)")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "nope.py" in missing.stderr
    # A second peer on a data directory already in use (with another key, which it wrote
    # over the running peer's before failing: the CLI then could not reach it), and a port
    # already in use.
    key_before = peer.cli("peer", "key").stdout
    other_key = ClusterKey.generate(os.urandom(32)).to_text()
    same_dir = run_cli(
        "peer", "start", "--no-mdns", "--port", "0", "--data-dir", str(peer.data_dir),
        "--key", other_key, timeout=30,
    )  # fmt: skip
    assert same_dir.returncode == 2 and "a peer is already running on" in same_dir.stderr
    assert peer.cli("peer", "key").stdout == key_before
    assert peer.cli("peer", "status").returncode == 0
    busy_port = run_cli(
        "peer",
        "start",
        "--no-mdns",
        "--port",
        str(peer.port),
        "--data-dir",
        str(tmp_path / "other"),
        timeout=30,
    )
    assert busy_port.returncode == 2 and "cannot listen" in busy_port.stderr
    # Asking a peer that is not running.
    nobody = run_cli("status", "--data-dir", str(tmp_path / "nobody"))
    assert nobody.returncode == 2 and "no peer is running" in nobody.stderr
    assert peer.proc is not None and peer.proc.poll() is None


def test_a_peer_with_the_wrong_key_is_refused(cluster: Cluster) -> None:
    first = cluster.start_peer("p0")
    other_key = ClusterKey.generate(os.urandom(32)).to_text()
    stranger = cluster.start_peer("p1", key=other_key)  # another cluster's key
    assert (stranger.data_dir / "cluster.key").read_text() != (
        first.data_dir / "cluster.key"
    ).read_text()
    wait_for(
        lambda: "refused" in stranger.log() or "Unknown" in first.log(),
        20,
        lambda: first.log()[-2000:],
    )
    status = first.json("peer", "status")
    assert all(not p["live"] for p in status["peers"])
    assert first.proc is not None and first.proc.poll() is None


EPOCHS = Path(__file__).parent / "scripts" / "epochs.py"


def submit_epochs(
    peer: Peer, name: str, *, trials: int, steps: int, sleep: float, early_stopping: str
) -> None:
    """Submit the checkpointing epochs script: loss x + 1/step for ``steps`` steps."""
    out = peer.cli(
        "submit",
        "--name",
        name,
        "--max-trials",
        str(trials),
        "--early-stopping",
        early_stopping,
        "--max-step",
        str(steps),
        str(EPOCHS),
        "--x~uniform(0, 1)",
        "--steps",
        str(steps),
        "--sleep",
        str(sleep),
    )
    assert out.returncode == 0, out.stderr


def test_freeze_and_thaw_a_real_process_resumes_from_its_checkpoint(cluster: Cluster) -> None:
    peer = cluster.start_peer("solo")
    submit_epochs(peer, "ep", trials=1, steps=60, sleep=0.5, early_stopping="none")

    def trial() -> dict[str, Any]:
        return only_trial(peer, "ep")

    wait_for(lambda: trial().get("last_step", 0) >= 3, 60, peer.log)
    frozen = peer.cli("freeze", trial()["id"])
    assert frozen.returncode == 0, frozen.stderr
    wait_for(lambda: trial().get("state") == "frozen", 30, peer.log)
    step = trial()["last_step"]
    assert 3 <= step < 60
    listed = peer.cli("status").stdout.splitlines()
    assert listed[0].split()[4:8] == ["done", "running", "frozen", "killed"]
    assert listed[2].split()[4:8] == ["0", "0", "1", "0"]
    assert "1 frozen" in peer.cli("status", "ep").stdout
    thawed = peer.cli("thaw", trial()["id"])
    assert thawed.returncode == 0, thawed.stderr
    wait_for(lambda: trial().get("state") == "completed", 90, peer.log)
    t = trial()
    assert t["last_step"] == 60 and t["steps"] == 60
    assert t["thaws"] == 1 and t["attempts"] == 1
    assert experiment(peer, "ep")["thawed"] == 1
    shown = peer.cli("status", "ep").stdout
    assert "1 thawed at least once" in shown and "completed, thawed 1x" in shown
    log = peer.cli("logs", t["id"]).stdout
    assert "starting at step 1 " in log
    assert f"starting at step {step + 1} (METAOPT_RESUME_STEP={step})" in log


def test_three_peers_find_each_other_by_mdns_on_loopback(cluster: Cluster) -> None:
    first = cluster.start_peer("m0", mdns=True, join=False)
    peers = [first] + [cluster.start_peer(f"m{i}", mdns=True, join=False) for i in (1, 2)]

    def all_live() -> bool:
        return all(
            sum(p["live"] for p in peer.json("peer", "status")["peers"]) == 2 for peer in peers
        )

    wait_for(all_live, 60, lambda: "\n".join(p.log()[-1500:] for p in peers))
    submit(first, trials=6, steps=3, sleep=0.3)
    wait_for(lambda: experiment(first)["finished"], 120, first.log)
    wait_for(lambda: all_agree(peers), 30, lambda: str([summary(p) for p in peers]))
    runners = {t["runner"] for t in experiment(peers[1])["trial_list"]}
    assert len(runners) >= 2, "the experiment did not spread beyond the peer it was submitted on"


def test_mdns_peers_that_all_went_quiet_find_each_other_again(cluster: Cluster) -> None:
    # Stopped past the peer timeout, each counts the other dead, and peers found by mDNS are
    # no seeds: only a call to a silent peer can bring them back together.
    peers = [cluster.start_peer(f"q{i}", mdns=True, join=False) for i in range(2)]

    def live_counts() -> list[int]:
        return [sum(p["live"] for p in peer.json("peer", "status")["peers"]) for peer in peers]

    wait_for(lambda: live_counts() == [1, 1], 60, lambda: "\n".join(p.log() for p in peers))
    for peer in peers:
        cluster.kill(peer, signal.SIGSTOP)
    time.sleep(6.0)  # past peer_timeout (2 s) and request_timeout (3 s) of the FAST timings
    for peer in peers:
        cluster.kill(peer, signal.SIGCONT)
    submit(peers[1], trials=1, steps=1)
    wait_for(lambda: bool(experiment(peers[0])["trial_list"]), 60, peers[0].log)


def test_config_file_export_stop_key_and_detach(cluster: Cluster, tmp_path: Path) -> None:
    peer = cluster.start_peer("solo")
    config = tmp_path / "sweep.yaml"
    config.write_text(
        "name: fromconfig\nmax-trials: 3\nobjective: loss\n"
        f"command: [{json.dumps(str(SCRIPT))}, '--x~uniform(-1, 1)', '--steps', '2']\n"
    )
    out = peer.cli("submit", "--config", str(config))
    assert out.returncode == 0, out.stderr
    wait_for(lambda: experiment(peer, "fromconfig")["finished"], 60, peer.log)
    as_json = json.loads(peer.cli("export", "fromconfig", "--format", "json").stdout)
    assert len(as_json) == 3 and {t["state"] for t in as_json} == {"completed"}
    rows = list(csv.DictReader(io.StringIO(peer.cli("export", "fromconfig").stdout)))
    assert sorted(r["trial"] for r in rows) == sorted(t["id"] for t in as_json)
    assert all(
        float(r["loss"]) == t["value"]
        for r, t in zip(
            sorted(rows, key=lambda r: r["trial"]),
            sorted(as_json, key=lambda t: t["id"]),
            strict=True,
        )
    )
    # A stopped experiment starts nothing more, on any peer.
    out = peer.cli("submit", "--name", "stopme", str(SCRIPT), "--x~uniform(-1, 1)", "--sleep", "1")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: len(experiment(peer, "stopme")["trial_list"]) >= 1, 30, peer.log)
    first = experiment(peer, "stopme")["id"]
    # Resubmitted under the same name: stopping the name stops the new one and points at the
    # first, which would otherwise go on unnoticed.
    out = peer.cli("submit", "--name", "stopme", str(SCRIPT), "--x~uniform(-1, 1)", "--sleep", "1")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: experiment(peer, "stopme")["id"] != first, 30, peer.log)
    out = peer.cli("stop", "stopme")
    assert out.returncode == 0, out.stderr
    hint = f"an earlier stopme ({first[:12]}) still runs; `metaopt stop {first[:12]} --data-dir"
    assert hint in out.stdout
    assert peer.cli("stop", first[:12]).returncode == 0
    wait_for(lambda: experiment(peer, first)["finished"], 60, peer.log)
    at_stop = len(experiment(peer, "stopme")["trial_list"])
    wait_for(lambda: experiment(peer, "stopme")["finished"], 60, peer.log)
    assert experiment(peer, "stopme")["stopped"]
    assert len(experiment(peer, "stopme")["trial_list"]) == at_stop
    # `peer key` prints the exact command that joins another machine.
    key_line = peer.cli("peer", "key").stdout.strip()
    assert key_line == (
        f"metaopt peer start --key {cluster.key} --join {peer.addr}"
        " --port 0 --data-dir ./metaopt-peer2"
    )
    # --detach: a background peer with a pid file, stopped by `peer stop`.
    ddir = tmp_path / "detached"
    started = run_cli(
        "peer",
        "start",
        "--detach",
        "--no-mdns",
        "--port",
        "0",
        "--data-dir",
        str(ddir),
        "--log-level",
        "DEBUG",
        timeout=60,
    )
    assert started.returncode == 0, started.stderr
    pid = int((ddir / "peer.pid").read_text())
    try:
        assert Path(f"/proc/{pid}").exists()
        # The background peer got the options of the command that started it.
        wait_for(lambda: " DEBUG " in (ddir / "peer.log").read_text(), 30)
        assert run_cli("peer", "stop", "--data-dir", str(ddir)).returncode == 0
        wait_for(lambda: not (ddir / "peer.pid").exists(), 30)
    finally:
        if (ddir / "peer.pid").exists():
            os.kill(pid, signal.SIGKILL)


def test_the_freeze_thaw_monitor_runs_an_experiment_to_its_end(cluster: Cluster) -> None:
    # The monitor decides in a worker thread on snapshots; whatever it freezes on the way, a
    # spent budget ends with every trial completed or killed, none left frozen or running.
    peer = cluster.start_peer("solo")
    submit_epochs(peer, "ft", trials=8, steps=15, sleep=0.05, early_stopping="freeze-thaw")
    wait_for(lambda: experiment(peer, "ft").get("finished") is True, 150, peer.log)
    states = [t["state"] for t in experiment(peer, "ft")["trial_list"]]
    assert len(states) == 8
    assert set(states) <= {"completed", "killed"}, states
    assert "Traceback" not in peer.log()


def test_no_trial_process_outlives_its_peer_killed_or_hung_up(cluster: Cluster) -> None:
    # A trial's silent child used to survive a kill -9 of the peer and run beside the re-run
    # of its trial (elsewhere, or here after a restart); a SIGHUP (closed terminal) killed the
    # peer the same way.
    peer = cluster.start_peer("solo")
    try:
        _outlive(cluster, peer)
    finally:  # whatever failed, none of this test's trial processes may outlive it
        kill_orphans(peer.data_dir)


def _parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _watchdog_of(pid: int) -> int:
    """The pid of the peer's trial watchdog (a child of the peer running its source).

    Looked for over a few seconds: the peer starts it as the trial's start is recorded, and a
    process just started shows an empty /proc cmdline for a moment (the test failed so).
    """
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"metaopt-watchdog" in cmdline:
                    return int(entry.name)
        time.sleep(0.05)
    raise AssertionError(f"peer {pid} has no watchdog")


def _watched(peer: Peer) -> bool:
    """Whether the peer has told its watchdog of the running trial's group: it writes the
    trial's pid file as it does so. A trial and its child show in /proc before the peer's
    loop has taken the trial's start in; killed then (a loaded CI machine), the watchdog
    knew no group to stop, and the test failed."""
    groups = set(find_orphans(peer.data_dir).values())
    for pid_file in (peer.data_dir / "trials").glob("*/pid"):
        with contextlib.suppress(OSError, ValueError):
            if int(pid_file.read_text()) in groups:
                return True
    return False


def _outlive(cluster: Cluster, peer: Peer) -> None:
    out = peer.cli("submit", "--max-trials", "1", "--early-stopping", "none",
                   str(SPAWNER), "--x~uniform(0, 1)")  # fmt: skip
    assert out.returncode == 0, out.stderr
    wait_for(lambda: len(find_orphans(peer.data_dir)) >= 2 and _watched(peer), 60, peer.log)
    # Killed -9, the peer's watchdog stops the trial and the child it started.
    cluster.kill(peer, signal.SIGKILL)
    wait_for(lambda: not find_orphans(peer.data_dir), 30, peer.log)
    # With its watchdog killed as well, the restart stops them.
    cluster.restart(peer)
    wait_for(lambda: len(find_orphans(peer.data_dir)) >= 2, 60, peer.log)
    first = set(find_orphans(peer.data_dir))
    assert peer.proc is not None
    # With its watchdog and the trial's subreaper (which kills the silent child once the trial
    # dies of its closed pipe) killed as well, the restart stops them. The peer is held still
    # meanwhile: seeing its subreaper die, it would kill the trial's group itself.
    peer.proc.send_signal(signal.SIGSTOP)
    os.kill(_watchdog_of(peer.proc.pid), signal.SIGKILL)
    subreapers = {_parent_of(pid) for pid in first} - first
    assert len(subreapers) == 1
    # The trial's silent child: the trial itself prints every 0.2 s into a pipe only the peer
    # reads, and dies of it at its next line once the peer is gone (a check made later than
    # that found it gone: a race of the test's, not a fault).
    silent = {pid for pid in first if _parent_of(pid) in first}
    assert silent
    os.kill(subreapers.pop(), signal.SIGKILL)
    cluster.kill(peer, signal.SIGKILL)
    assert silent <= set(find_orphans(peer.data_dir))  # the peer is gone, its trial's child not
    cluster.restart(peer)
    wait_for(lambda: not first & set(find_orphans(peer.data_dir)), 30, peer.log)
    # (Said just after the kill, and peer.address is written before it: waited for too.)
    wait_for(lambda: "left running when this peer last died" in peer.log(), 30, peer.log)
    # Once caught up, the orphaned trial is lost and re-run; hang up on the peer meanwhile.
    wait_for(lambda: len(find_orphans(peer.data_dir)) >= 2, 60, peer.log)
    assert peer.proc is not None
    peer.proc.send_signal(signal.SIGHUP)
    assert peer.proc.wait(timeout=30) == 0
    assert find_orphans(peer.data_dir) == {}
    assert not (peer.data_dir / "peer.pid").exists()


def test_a_trial_interrupted_by_a_graceful_stop_resumes_from_its_checkpoint(
    cluster: Cluster,
) -> None:
    # It saved a checkpoint when asked to stop; re-run from step 0 after the restart, that
    # work was thrown away.
    peer = cluster.start_peer("solo")
    # 30 steps, 9 s: with 12 (3.6 s) a loaded machine let the run finish before the stop.
    submit_epochs(peer, "ep", trials=1, steps=30, sleep=0.3, early_stopping="none")

    def trial() -> dict[str, Any]:
        return only_trial(peer, "ep")

    wait_for(lambda: trial().get("last_step", 0) >= 3, 60, peer.log)
    cluster.kill(peer, signal.SIGTERM)  # graceful: the trial is recorded interrupted
    cluster.restart(peer)
    wait_for(lambda: trial().get("state") == "completed", 90, peer.log)
    t = trial()
    assert t["attempts"] == 2 and t["last_step"] == 30
    log = peer.cli("logs", t["id"]).stdout
    resumed = [line for line in log.splitlines() if "METAOPT_RESUME_STEP=" in line][-1]
    assert "METAOPT_RESUME_STEP=None" not in resumed, log
    step = int(resumed.split("METAOPT_RESUME_STEP=")[1].rstrip(")"))
    assert step >= 3 and f"starting at step {step + 1} " in resumed


def test_a_stop_as_systemd_sends_it_records_the_running_trial_interrupted(
    cluster: Cluster,
) -> None:
    # systemd stopping a peer (KillMode=control-group) and a machine shutting down send
    # SIGTERM to the peer and its trials at the same moment: the peer stopped gracefully,
    # but its trial, ended by that SIGTERM, was recorded failed ("crashed when asked to
    # stop"), never to run again (5 of 5; a review of signals).
    peer = cluster.start_peer("solo")
    submit_epochs(peer, "sd", trials=1, steps=30, sleep=0.3, early_stopping="none")
    wait_for(lambda: only_trial(peer, "sd").get("last_step", 0) >= 2, 60, peer.log)
    pid_file = peer.data_dir / "trials" / only_trial(peer, "sd")["id"][:16] / "pid"
    wait_for(pid_file.exists, 10)
    assert peer.proc is not None
    os.kill(peer.proc.pid, signal.SIGTERM)
    os.killpg(int(pid_file.read_text()), signal.SIGTERM)  # (its own process group)
    assert peer.proc.wait(timeout=60) == 0, peer.log()
    trial = only_trial(peer, "sd")
    assert trial["state"] == "interrupted", (trial["state"], trial.get("reason"))


def test_submit_wait_json_keeps_stdout_to_the_json_line(cluster: Cluster) -> None:
    peer = cluster.start_peer("solo")
    flags = ("--name", "wj", "--max-trials", "2", "--wait", "--json")
    out = peer.cli("submit", *flags, str(SCRIPT), "--x~uniform(-1, 1)", "--y~uniform(-1, 1)")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["name"] == "wj"  # one JSON document, nothing else
    assert "2/2 trials" in out.stderr and "best " in out.stderr
