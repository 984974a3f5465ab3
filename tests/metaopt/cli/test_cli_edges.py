"""Command-line edges a second review of the CLI found (each test failed on the code then)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from crdt import LevelDBStore, MemoryStore, Record, StoreWriteFailed
from metaopt._errors import MetaoptError
from metaopt._records import (
    EVENT,
    EXPERIMENT,
    TRIAL,
    EventBody,
    ExperimentSpec,
    experiment_record,
)
from metaopt.cli import main
from metaopt.peer._identity import DataDir, trial_dir, trial_log_path

CODE_ROOT = Path(__file__).resolve().parents[3]
OTHER = b"A" * 16


def _replica(root: Path, trials: list[tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]]
             ) -> tuple[Record, list[Record]]:  # fmt: skip
    """A stopped peer's data directory at root holding one experiment and its trials, each
    (params, [(event kind, event fields)]), run by this directory's node."""
    dirs = DataDir(root)
    dirs.ensure()
    me = dirs.node_id()
    exp = experiment_record(ExperimentSpec("sweep", {"x": "uniform(0, 1)"}, command=("t.py",)))
    records: list[Record] = [exp]
    made: list[Record] = []
    seq = 1
    for params, events in trials:
        trial = Record.create(TRIAL, me, seq, 1000 + seq, {"params": params, "node": me,
                                                          "counter": seq}, [exp.key])  # fmt: skip
        seq += 1
        records.append(trial)
        made.append(trial)
        for kind, fields in events:
            body = EventBody(trial.key, exp.key, kind, me, **fields).to_body()
            records.append(Record.create(EVENT, me, seq, 1000 + seq, body, [trial.key, exp.key]))
            seq += 1
    store = LevelDBStore(dirs.replica)
    store.add(records)
    store.close()
    return exp, made


# --- 1. `metaopt clean` with the peer stopped, on the full disk it is there to free -----------


@pytest.mark.parametrize("full", ["No space left on device", "Disk quota exceeded"])
def test_clean_frees_a_full_disk_with_the_peer_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], full: str
) -> None:
    """README: `metaopt clean` frees this machine's disk, "It works with the peer stopped too".
    On a full disk (a 3 MB tmpfs filled up, the peer stopped: 4 of 4 tries) it said only
    `metaopt: cannot open the store at D/replica: IO error: D/replica/MANIFEST-000010: No
    space left on device` and freed nothing (`clean --dry-run` had said 888 KiB), because
    LevelDB writes a new manifest and log to open the replica. The peer cannot start there
    either (same error), so no metaopt command frees the disk. Modelled here: the data
    directory's disk refuses the writes an opening makes (as plyvel says it), nothing else."""
    import plyvel

    _, (_, failed) = _replica(
        tmp_path,
        [
            (
                {"x": 0.5},
                [("started", {}), ("completed", {"step": 3, "metrics": {"objective": 0.25}})],
            ),
            ({"x": 0.9}, [("started", {}), ("failed", {"reason": "exited with code 1"})]),
        ],
    )
    dirs = DataDir(tmp_path)
    checkpoint = trial_dir(dirs, failed.key) / "checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.bin").write_bytes(os.urandom(300_000))
    trial_log_path(dirs, failed.key).write_text("epoch 1\n")

    real_db = plyvel.DB

    def full_disk(name: bytes, *args: Any, **kwargs: Any) -> Any:  # (the store's path, bytes)
        if Path(os.fsdecode(name)).resolve() == dirs.replica:
            raise plyvel.IOError(f"IO error: {dirs.replica}/MANIFEST-000010: {full}".encode())
        return real_db(name, *args, **kwargs)

    monkeypatch.setattr("crdt._leveldb.plyvel.DB", full_disk)
    code = main(["clean", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert not checkpoint.exists()
    assert trial_log_path(dirs, failed.key).exists()  # (its log stays)


# --- 2. `metaopt peer start --detach` from a project folder -----------------------------------


@pytest.mark.integration
def test_a_detached_start_is_not_broken_by_a_file_of_the_folder_it_is_started_from(
    tmp_path: Path,
) -> None:
    """`metaopt peer start --detach` run from a folder holding random.py (any file named as a
    module the peer imports: random, logging, yaml, ...) started `python -m metaopt`, which
    puts the folder first on sys.path: the peer imported the user's random.py and exited
    ("the peer exited at once: ..."; 1 of 1), while a start in the foreground, the same
    command without --detach, runs."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "random.py").write_text('raise SystemExit("the project\'s own random.py")\n')
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(CODE_ROOT)}
    env.pop("METAOPT_DATA_DIR", None)
    base = [sys.executable, "-P", "-m", "metaopt"]
    try:
        started = subprocess.run(
            [*base, "peer", "start", "--detach", "--host", "127.0.0.1", "--no-mdns",
             "--port", "0", "--data-dir", str(data), "--timing", "stop_grace=3"],
            cwd=project, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
    finally:
        pid = DataDir(data).running_pid()
        if pid is not None:
            subprocess.run([*base, "peer", "stop", "--data-dir", str(data)], env=env,
                           capture_output=True, timeout=60)  # fmt: skip


# --- 3. the join command of a peer bound to every IPv6 interface --------------------------------


def test_the_join_command_of_a_peer_bound_to_every_ipv6_interface_names_a_reachable_address() -> (
    None
):
    """A peer started with `--host ::` (every interface, as 0.0.0.0 for IPv4) printed, as its
    new cluster's join command and in `metaopt peer key`, `metaopt peer start --host 0.0.0.0
    --key K --join [::]:7787`: [::] on the other machine is that machine itself. 0.0.0.0 is
    replaced by one of this machine's addresses; :: was taken for a LAN address."""
    from metaopt.cli._peer import join_command
    from metaopt.peer._config import host_port

    said = join_command("mo1-key", host_port("::", 7787))
    assert "--join [::]:" not in said, said
    # Nor an IPv4 address of this machine: a socket bound to :: takes IPv6 only.
    assert said.endswith("--join [THIS-MACHINE'S-IPv6-ADDRESS]:7787"), said


# --- 4. `metaopt submit` to a peer whose disk is full ---------------------------------------------


def test_a_submit_the_disk_refuses_is_a_one_line_error_not_an_internal_one() -> None:
    """Submitted to a peer on a full disk (a tmpfs filled up), submit said `metaopt:
    127.0.0.1:P: internal error in api.add: cannot write the store at D/replica: IO error:
    ...: No space left on device` (2 of 2), and the peer logged a traceback for it: api.add
    let the store's StoreWriteFailed out, which the transport reports as a bug in a handler.
    Every other refusal of the API is a MetaoptError, shown as the one line it is."""
    from metaopt.peer._api import LocalApi
    from metaopt.peer._replica import Replica
    from metaopt.peer._wire import Request

    class _FullStore(MemoryStore):
        def add(self, records: Any) -> Any:
            raise StoreWriteFailed(
                "cannot write the store at /d/replica: IO error: /d/replica/000003.log: No"
                " space left on device",
                "No space left on device",
            )

    store = _FullStore()
    node = SimpleNamespace(
        node_id=b"n" * 16,
        replica=Replica(MemoryStore()),
        store=store,
        add_submitted=store.add,
        loading_progress=lambda: None,
    )
    api = LocalApi(node)  # type: ignore[arg-type]
    exp = Record.create(
        EXPERIMENT, b"n" * 16, 1, 1000,
        ExperimentSpec("e", {"x": "uniform(0, 1)"}, command=("t.py",)).to_body(), [],
    )  # fmt: skip
    with pytest.raises(MetaoptError) as caught:
        asyncio.run(api.handlers()["api.add"](Request("api.add", b"n" * 16, "", [exp.data])))
    assert "No space left on device" in str(caught.value)


# --- 5. `metaopt logs` of a trial that ended without ever starting -----------------------------


def test_logs_of_a_trial_that_failed_before_any_peer_ran_it_says_how_it_ended(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: `metaopt logs TRIAL` gives its output, or where it ran, "then how it ended and
    why". A trial whose params are not a point of its space (a record no metaopt peer writes,
    shown failed, saying why, by status) has no runner: logs said `metaopt: trial de43a51b has
    not started on any peer yet` and exited 2 (1 of 1), though it has ended for good, failed,
    with its reason on every replica."""
    _, (trial,) = _replica(tmp_path, [({"x": 5.0}, [])])
    assert main(["status", "sweep", "--data-dir", str(tmp_path)]) == 0
    assert "failed" in capsys.readouterr().out
    code = main(["logs", trial.key.hex()[:8], "--data-dir", str(tmp_path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    said = out.out + out.err
    assert "failed" in said and "not a point of the experiment's space" in said
    assert "has not started" not in said


# --- 6. --config=~/FILE ------------------------------------------------------------------------


def test_a_config_file_under_home_given_with_an_equals_sign_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--config=~/sweep.yaml`: the shell leaves a ~ after = as it is, and submit read a file
    named "~/sweep.yaml" in the current folder: `cannot read --config ~/sweep.yaml: No such
    file or directory`. `--data-dir=~/peers`, split the same way, finds the home folder's (the
    submit parser keeps a ~ in an option's value for it)."""
    from metaopt.cli._submit import merge_config, split_submit_args

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "sweep.yaml").write_text("max_trials: 7\n")
    options, _ = split_submit_args(["--config=~/sweep.yaml", "train.py", "--x~uniform(0, 1)"])
    assert merge_config(options)["max_trials"] == 7


def test_the_start_command_given_as_advice_is_quoted_for_a_shell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `metaopt peer start --data-dir /tmp/my peers` broke at the space when pasted.
    root = tmp_path / "my peers"
    root.mkdir()
    assert main(["status", "--data-dir", str(root)]) == 2
    assert f"--data-dir '{DataDir(root).root}'`" in capsys.readouterr().err
