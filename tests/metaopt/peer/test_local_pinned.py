"""The CLI's client of its peer (metaopt.peer._local): paging joins, waiting, addressing."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from crdt import ClusterKey, MemoryStore, Record
from metaopt._errors import MetaoptError
from metaopt._records import EVENT, EXPERIMENT, TRIAL, EventBody, ExperimentSpec
from metaopt.peer import _local
from metaopt.peer._api import LocalApi
from metaopt.peer._identity import DataDir
from metaopt.peer._local import LocalPeer, fetch_experiment, resolve_data_dir
from metaopt.peer._replica import Replica
from metaopt.peer._transport import PeerUnreachable, StillLoading
from metaopt.peer._wire import Request

NODE = b"n" * 16


def _exp(nonce: str, stamp: int) -> Record:
    spec = ExperimentSpec("wide", {"x": "uniform(0, 1)"}, nonce=nonce)
    return Record.create(EXPERIMENT, NODE, stamp, stamp, spec.to_body(), [])


def _trials(exp: Record, n: int, *, ended_every: int = 0) -> list[Record]:
    out = []
    for i in range(n):
        body = {"params": {"x": i / 100}, "node": NODE, "counter": i + 1}
        trial = Record.create(TRIAL, NODE, 1000 + 10 * i, 5000 + 10 * i, body, [exp.key])
        kinds = ["started"] + (["completed"] if ended_every and i % ended_every == 0 else [])
        out += [trial] + [
            Record.create(EVENT, NODE, 1001 + 10 * i + j, 5001 + 10 * i + j,
                          EventBody(trial.key, exp.key, kind, NODE, 1,
                                    {"objective": 0.5} if kind == "completed" else {}).to_body(),
                          [trial.key, exp.key])
            for j, kind in enumerate(kinds)
        ]  # fmt: skip
    return out


class _Peer:
    """The CLI's view of a peer answered by the local API, a few trials a page; records each
    query, and runs before_page before each call after the first."""

    def __init__(self, store: MemoryStore) -> None:
        node = SimpleNamespace(
            node_id=NODE, replica=Replica(store), blocked_here=lambda key: None,
            config=SimpleNamespace(timing=SimpleNamespace(lost_after=60.0)),
            is_alive=lambda node_id: True, runner=SimpleNamespace(stopping_as=lambda key: None),
        )  # fmt: skip
        self.api = LocalApi(node)  # type: ignore[arg-type]
        self.queries: list[Any] = []
        self.before_page: list[Any] = []

    def call(self, op: str, body: Any = None) -> Any:
        if self.queries and self.before_page:
            self.before_page.pop(0)()
        self.queries.append(body)
        return asyncio.run(self.api.experiment(Request(op, NODE, "", {**body, "page_bytes": 300})))


def test_later_pages_follow_the_experiment_by_id_when_a_namesake_takes_its_name() -> None:
    """A resubmission under the same name between two pages must not splice the new
    experiment's trials (or none) into the listing of the one the user asked for."""
    old = _exp("1", 100)
    store = MemoryStore()
    store.add([old, *_trials(old, 12)])
    peer = _Peer(store)
    newer = _exp("2", 200)
    peer.before_page = [lambda: store.add([newer])]
    info = fetch_experiment(peer, "wide")
    assert info["id"] == old.key.hex() and len(peer.queries) > 2
    assert len(info["trial_list"]) == 12 and {t["experiment"] for t in info["trial_list"]} == {
        "wide"
    }
    assert all(q["experiment"] == old.key.hex() for q in peer.queries[1:])


def test_later_pages_keep_to_the_trials_asked_for() -> None:
    """`submit --wait` asks for the open trials only: every page of them, not the first alone."""
    exp = _exp("1", 100)
    store = MemoryStore()
    store.add([exp, *_trials(exp, 12, ended_every=2)])
    peer = _Peer(store)
    info = fetch_experiment(peer, "wide", trials="open")
    assert len(peer.queries) > 2 and {q["trials"] for q in peer.queries} == {"open"}
    assert len(info["trial_list"]) == 6 and {t["state"] for t in info["trial_list"]} == {"running"}


def _peer_dir(root: Path) -> DataDir:
    dirs = DataDir(root)
    dirs.ensure()
    dirs.key_file.write_text(ClusterKey.generate(os.urandom(32)).to_text())
    dirs.node_id()
    dirs.address_file.write_text("127.0.0.1:9\n")  # (never reached: Client is replaced)
    return dirs


class _LoadingClient:
    """A transport client whose peer says it is loading `loading` times, then answers; it
    records whom each call was for."""

    loading = 0
    then_gone = False  # after loading: no answer (the peer stopped or hung) instead of one
    to: list[Any] = []  # noqa: RUF012 - replaced by each test

    def __init__(self, *args: Any, **kw: Any) -> None: ...

    async def call(self, addr: str, op: str, body: Any, to: Any = None) -> Any:
        type(self).to.append(to)
        if type(self).loading > 0:
            type(self).loading -= 1
            raise StillLoading("the peer is still loading its history (1 of about 9 records)")
        if type(self).then_gone:
            raise PeerUnreachable(f"no answer from {addr} (ClientConnectorError)")
        return "answered"

    async def close(self) -> None: ...


def test_a_command_gives_up_waiting_for_a_load_after_its_patience(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A peer loading for longer than LOAD_PATIENCE: the command stops waiting, in one line
    naming the log, rather than wait for good."""
    dirs = _peer_dir(tmp_path)
    clock = iter(range(0, 10_000, 400))  # each reading of the clock 400 s later
    monkeypatch.setattr(_local, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    _client(monkeypatch, loading=5)
    with pytest.raises(MetaoptError) as caught:
        LocalPeer(dirs.root).call("api.experiments")
    said = str(caught.value)
    assert "still loading its history" in said and f"after {_local.LOAD_PATIENCE:.0f} s" in said
    assert "peer.log" in said and "\n" not in said
    assert capsys.readouterr().err.count("waiting for it") == 1


def _client(monkeypatch: pytest.MonkeyPatch, loading: int, then_gone: bool = False) -> None:
    monkeypatch.setattr(_LoadingClient, "loading", loading)
    monkeypatch.setattr(_LoadingClient, "then_gone", then_gone)
    monkeypatch.setattr(_LoadingClient, "to", [])
    monkeypatch.setattr(_local, "Client", _LoadingClient)


def test_a_command_is_addressed_to_its_own_peers_node_and_says_once_that_it_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every call names the node of the data directory, so a peer that took a dead one's port
    refuses it (Misaddressed) instead of acting on it (a `peer stop` stopped the wrong one);
    a wait through several "still loading" answers is said once, not a line each 0.5 s."""
    dirs = _peer_dir(tmp_path)
    _client(monkeypatch, loading=3)
    assert LocalPeer(dirs.root).call("api.shutdown") == "answered"
    assert _LoadingClient.to == [dirs.read_node_id()] * 4
    assert capsys.readouterr().err.count("waiting for it") == 1


def test_an_unanswering_peer_with_no_live_process_is_said_to_be_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing answers and no metaopt process runs: the peer.address is stale, and the user is
    sent to `peer start` (not told of a "pid None" that "runs but does not answer")."""
    dirs = _peer_dir(tmp_path)
    _client(monkeypatch, loading=0, then_gone=True)
    with pytest.raises(MetaoptError) as caught:
        LocalPeer(dirs.root).call("api.experiments")
    said = str(caught.value)
    assert "no peer is running on" in said and "nothing answers at 127.0.0.1:9" in said
    assert "(pid" not in said and "metaopt peer start --data-dir" in said


def test_a_peer_whose_process_lives_but_stops_answering_mid_load_is_said_to_be_hung(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It answered "loading", then nothing, while its process still runs: paused or hung
    (kill it), not "stopped while this command waited" (it has not)."""
    dirs = _peer_dir(tmp_path)
    _client(monkeypatch, loading=1, then_gone=True)
    peer = LocalPeer(dirs.root)
    monkeypatch.setattr(peer.dirs, "running_pid", lambda: 4242)
    with pytest.raises(MetaoptError) as caught:
        peer.call("api.experiments")
    said = str(caught.value)
    assert "(pid 4242) runs but does not answer" in said and "stopped while" not in said


def test_data_dir_given_on_the_command_line_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--data-dir names the peer a command talks to even where METAOPT_DATA_DIR is set; an
    empty one (`--data-dir "$DIR"` with DIR unset) is refused, not read as the environment's
    or the default peer, which may be another peer than the one meant."""
    monkeypatch.setenv("METAOPT_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(str(tmp_path / "flag")) == tmp_path / "flag"
    assert resolve_data_dir(None) == tmp_path / "env"
    with pytest.raises(MetaoptError, match=r"^--data-dir is empty; give a directory"):
        resolve_data_dir("")
    monkeypatch.setenv("METAOPT_DATA_DIR", "")  # an empty variable is an unset one
    assert resolve_data_dir(None) != tmp_path / "env"


def test_a_data_directory_without_its_cluster_key_is_one_line(tmp_path: Path) -> None:
    """The key is what lets the CLI talk to its peer: its absence is named, not a traceback."""
    dirs = _peer_dir(tmp_path)
    dirs.key_file.unlink()
    with pytest.raises(MetaoptError, match=r"cluster.key is missing; restart the peer"):
        LocalPeer(dirs.root)


def test_a_data_directory_with_an_address_but_no_node_id_is_not_taken_for_a_peers(
    tmp_path: Path,
) -> None:
    """A folder holding a peer.address and a key but no node_id is not a peer's data
    directory: the user is told to choose the right one, not sent calls addressed to nobody."""
    dirs = _peer_dir(tmp_path)
    (tmp_path / "node_id").unlink()
    with pytest.raises(MetaoptError, match=r"has a peer.address but no node_id"):
        LocalPeer(dirs.root)
