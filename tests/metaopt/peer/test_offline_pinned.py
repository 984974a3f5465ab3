"""A stopped peer's replica read in place, as a mutation audit found unpinned: one call answers
with every trial and every experiment (each call opens and folds the whole replica), and a
snapshot claims nothing about what is blocked or being stopped."""

from __future__ import annotations

from pathlib import Path

from crdt import LevelDBStore, Record
from metaopt._records import EVENT, TRIAL, EventBody, ExperimentSpec, experiment_record
from metaopt.peer._identity import DataDir
from metaopt.peer._offline import OfflinePeer
from tests.metaopt.peer.test_offline import _stopped_peer


def _more(root: Path) -> None:
    """Adds to a stopped peer's replica a second experiment and, in it, two running trials."""
    dirs = DataDir(root)
    me = dirs.node_id()
    exp = experiment_record(ExperimentSpec("other", {"x": "uniform(0, 1)"}, command=("t.py",)))
    records = [exp]
    for i in range(2):
        body = {"params": {"x": 0.1 + i / 10}, "node": me, "counter": 10 + i}
        trial = Record.create(TRIAL, me, 100 + 2 * i, 2000 + 2 * i, body, [exp.key])
        started = EventBody(trial.key, exp.key, "started", me)
        records += [
            trial,
            Record.create(EVENT, me, 101 + 2 * i, 2001 + 2 * i, started.to_body(),
                          [trial.key, exp.key]),
        ]  # fmt: skip
    store = LevelDBStore(dirs.replica)
    store.add(records)
    store.close()


def test_offline_reads_answer_in_one_page_whatever_page_size_is_asked(tmp_path: Path) -> None:
    """Without a peer each call reopens and refolds the replica: a page size asked for (as
    by a CLI paging a peer) is ignored and everything comes in one reply, with no next page."""
    _stopped_peer(tmp_path)
    _more(tmp_path)
    peer = OfflinePeer(tmp_path)
    info = peer.call("api.experiment", {"experiment": "other", "trials": "all", "page_bytes": 1})
    assert len(info["trial_list"]) == 2 and info["next"] is None
    listing = peer.call("api.experiments", {"after": None, "page_bytes": 1})
    assert sorted(e["name"] for e in listing["experiments"]) == ["other", "sweep"]
    assert listing["next"] is None


def test_a_stopped_peer_blocks_nothing_and_stops_nothing(tmp_path: Path) -> None:
    """A snapshot read with no peer must not tell the user "this peer starts no new trial"
    nor show a running trial as being stopped: nothing runs there to block or stop."""
    _stopped_peer(tmp_path)
    _more(tmp_path)
    info = OfflinePeer(tmp_path).call("api.experiment", "other")
    assert info["blocked_here"] is None
    assert [t["state"] for t in info["trial_list"]] == ["running", "running"]
    assert not any("stopping" in t or "quiet" in t for t in info["trial_list"])
