"""api.experiment's trial list in pages: every trial once, in order, each reply bounded."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest

from crdt import FrameConfig, MemoryStore, Record
from metaopt._errors import MetaoptError
from metaopt._records import EVENT, EXPERIMENT, TRIAL, EventBody, ExperimentSpec
from metaopt.peer._api import LocalApi
from metaopt.peer._local import fetch_experiment, fetch_experiments
from metaopt.peer._pages import PAGE_BYTES
from metaopt.peer._replica import Replica
from metaopt.peer._wire import Request

NODE = b"n" * 16
EXP = Record.create(
    EXPERIMENT, NODE, 1, 1000, ExperimentSpec("wide", {"x": "uniform(0, 1)"}).to_body(), []
)


def _trial(i: int, stamp: int, *, completed: bool) -> list[Record]:
    """A trial (with a wide report, as a trial with many metrics has) and its end, maybe."""
    body = {"params": {"x": i / 1000}, "node": NODE, "counter": i + 1}
    trial = Record.create(TRIAL, NODE, 10 * i + 2, stamp, body, [EXP.key])
    metrics = {f"metric_{m}": float(m) for m in range(20)}
    kind = "completed" if completed else "progress"
    event = EventBody(trial.key, EXP.key, kind, NODE, step=1, metrics={**metrics, "objective": 0.5})
    return [trial, Record.create(EVENT, NODE, 10 * i + 3, stamp + 1, event.to_body(),
                                 [trial.key, EXP.key])]  # fmt: skip


class _Peer:
    """The CLI's view of a peer: call(op, body), answered by the local API; records every reply."""

    def __init__(self, store: MemoryStore) -> None:
        node = SimpleNamespace(
            node_id=NODE,
            replica=Replica(store),
            blocked_here=lambda key: None,
            config=SimpleNamespace(timing=SimpleNamespace(lost_after=60.0)),
            is_alive=lambda node_id: True,
            runner=SimpleNamespace(stopping_as=lambda key: None),
        )
        self.api = LocalApi(node)  # type: ignore[arg-type]
        self.replies: list[dict[str, Any]] = []
        self.row_bytes: list[list[int]] = []  # each reply's rows, msgpack bytes
        self.before_page: list[Any] = []  # run before each call after the first

    def call(self, op: str, body: Any = None) -> Any:
        if self.replies and self.before_page:
            self.before_page.pop(0)()
        if isinstance(body, dict) and "page_bytes" not in body:
            body = {**body, "page_bytes": 4000}  # a few trials a page
        reply = asyncio.run(self.api.experiment(Request(op, NODE, "", body)))
        self.replies.append(reply)
        self.row_bytes.append([len(msgpack.packb(r)) for r in reply.get("trial_list", [])])
        return reply


def _store(n: int) -> MemoryStore:
    store = MemoryStore()
    store.add([EXP])
    for i in range(n):
        store.add(_trial(i, 2000 + 10 * i, completed=i % 3 != 0))
    return store


def test_the_pages_hold_every_trial_once_in_order_each_within_its_bytes() -> None:
    # 60,000 trials with wide parameters made one reply past the 64 MiB frame limit: `metaopt
    # status NAME`, best and export failed for the whole experiment.
    store = _store(60)
    peer = _Peer(store)
    info = fetch_experiment(peer, "wide")
    expected = [t.id for t in peer.api.node.replica.find_experiment("wide").trials()]
    assert [t["id"] for t in info["trial_list"]] == expected and len(expected) == 60
    assert len(peer.replies) > 5 and "next" not in info
    for sizes in peer.row_bytes:
        # At most one row past the budget (a page holds at least one trial).
        assert sizes and sum(sizes[:-1]) <= 4000
    # The default page is far under a frame (a row is at most a few records of 1 MiB).
    assert FrameConfig().max_frame_bytes > PAGE_BYTES + (4 << 20)


def test_a_trial_arriving_between_pages_older_than_the_cursor_waits_for_the_next_listing() -> None:
    # An older-stamped trial from another peer lands before the cursor: an offset would have
    # sent the last trial of the previous page again; none is sent twice, none later skipped.
    store = _store(30)
    peer = _Peer(store)
    peer.before_page = [lambda: store.add(_trial(500, 1500, completed=True))]
    info = fetch_experiment(peer, "wide")
    ids = [t["id"] for t in info["trial_list"]]
    assert len(ids) == len(set(ids)) == 30  # the newcomer sorts first: the next listing has it
    assert len(fetch_experiment(_Peer(store), "wide")["trial_list"]) == 31


def test_trials_of_one_millisecond_are_paged_once_each_in_their_nodes_order() -> None:
    # A node asking faster than its clock ticks: listed by key they came in no order the node
    # asked them in. The cursor names a trial by (created, key); the page after it resumes
    # at that trial's node and counter.
    store = MemoryStore()
    store.add([EXP])
    for i in range(40):
        store.add(_trial(i, 2000, completed=True))
    info = fetch_experiment(_Peer(store), "wide")
    xs = [t["params"]["x"] for t in info["trial_list"]]
    assert xs == [i / 1000 for i in range(40)]
    assert len(info["trial_list"]) == 40


def test_open_lists_only_trials_not_ended_and_none_lists_none() -> None:
    peer = _Peer(_store(30))
    shown = fetch_experiment(peer, "wide", trials="open")["trial_list"]
    assert len(shown) == 10 and {t["state"] for t in shown} == {"running"}
    summary = fetch_experiment(_Peer(_store(30)), "wide", trials="none")
    assert "trial_list" not in summary and summary["counts"] == {"completed": 20, "running": 10}


def test_last_lists_the_newest_trials_in_order_across_pages() -> None:
    # `metaopt status NAME` of 20,000 trials printed 20,003 lines: it asks for the newest.
    peer = _Peer(_store(30))
    everything = [t["id"] for t in fetch_experiment(peer, "wide")["trial_list"]]
    newest = fetch_experiment(peer, "wide", last=12)
    assert [t["id"] for t in newest["trial_list"]] == everything[-12:]
    assert newest["trials"] == 30 and len(peer.row_bytes[-1]) < 12  # it took several pages
    assert len(fetch_experiment(peer, "wide", last=100)["trial_list"]) == 30
    assert fetch_experiment(peer, "wide", last=0)["trial_list"] == []
    open_ = fetch_experiment(peer, "wide", trials="open", last=3)["trial_list"]
    assert [t["state"] for t in open_] == ["running"] * 3


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"experiment": "wide", "last": -1}, "last is a number of trials"),
        ({"experiment": "wide", "last": "5"}, "last is a number of trials"),
        ({"experiment": "wide", "last": True}, "last is a number of trials"),
        ({"trials": "all"}, "name an experiment"),
        ({"experiment": "wide", "trials": "some"}, "trials is one of all, open, none"),
        ({"experiment": "wide", "page_bytes": 0}, "page_bytes is a number of bytes"),
        ({"experiment": "wide", "after": [1, "zz"]}, "after is the previous page's next"),
        ({"experiment": "wide", "after": "x"}, "after is the previous page's next"),
    ],
)
def test_a_malformed_query_is_one_line(body: dict[str, Any], said: str) -> None:
    with pytest.raises(MetaoptError, match=said):
        _Peer(_store(1)).call("api.experiment", body)


def test_the_summary_names_the_trial_that_failed_last_and_why() -> None:
    store = _store(0)
    for i, (stamp, why) in enumerate(((5000, "early\nmore"), (9000, "late\ntraceback"))):
        trial = _trial(i, stamp, completed=False)[0]
        failed = EventBody(trial.key, EXP.key, "failed", NODE, reason=why).to_body()
        store.add([trial, Record.create(EVENT, NODE, 100 + i, stamp + 1, failed,
                                        [trial.key, EXP.key])])  # fmt: skip
    summary = fetch_experiment(_Peer(store), "wide", trials="none")
    assert summary["last_failed"]["reason"] == "late" and summary["counts"] == {"failed": 2}
    assert fetch_experiment(_Peer(_store(3)), "wide")["last_failed"] is None


class _Lister(_Peer):
    """A peer whose api.experiments answers pages of page_bytes (a few experiments each)."""

    def __init__(self, store: MemoryStore, page_bytes: int) -> None:
        super().__init__(store)
        self.page_bytes = page_bytes

    def call(self, op: str, body: Any = None) -> Any:
        assert op == "api.experiments"
        if self.replies and self.before_page:
            self.before_page.pop(0)()
        if isinstance(body, dict):
            body = {**body, "page_bytes": self.page_bytes}
        reply = asyncio.run(self.api.experiments(Request(op, NODE, "", body)))
        self.replies.append(reply)
        return reply


def _experiments(names: list[str], command_bytes: int = 10) -> list[Record]:
    return [
        Record.create(EXPERIMENT, NODE, 100 + i, 1000 + i,
                      ExperimentSpec(name, {"x": "uniform(0, 1)"},
                                     command=("run", "y" * command_bytes)).to_body(), [])
        for i, name in enumerate(names)
    ]  # fmt: skip


def test_the_listing_comes_in_pages_that_hold_every_experiment_once_in_order() -> None:
    # 70 experiments with commands of 1 MB made one reply past the 64 MiB frame limit, and
    # `metaopt status` and `submit` failed on every peer, for good (records are never deleted).
    store = MemoryStore()
    store.add(_experiments(["b", "a", "c10", "c9", "a"], command_bytes=3000))
    whole = asyncio.run(
        _Lister(store, 0).api.experiments(Request("api.experiments", NODE, "", None))
    )
    assert [(e["name"], e["latest"]) for e in whole] == [
        ("a", False), ("a", True), ("b", True), ("c9", True), ("c10", True)
    ]  # fmt: skip
    peer = _Lister(store, 7000)  # two rows of about 3 KB a page
    assert fetch_experiments(peer) == whole
    assert [len(r["experiments"]) for r in peer.replies] == [2, 2, 1]
    assert [r["next"] for r in peer.replies] == [whole[1]["id"], whole[3]["id"], None]
    # A row bigger than a page still goes, alone; an experiment arriving between two pages
    # after the cursor is listed too.
    small = _Lister(store, 1)
    small.before_page = [lambda: store.add(_experiments(["z"]))]
    assert [e["name"] for e in fetch_experiments(small)] == ["a", "a", "b", "c9", "c10", "z"]


def test_a_listing_cursor_of_no_experiment_and_bad_ones_are_refused() -> None:
    store = MemoryStore()
    store.add(_experiments(["a", "b"]))
    api = _Lister(store, PAGE_BYTES).api

    def page(body: Any) -> Any:
        return asyncio.run(api.experiments(Request("api.experiments", NODE, "", body)))

    # (It restarted from the top: the joined listing held rows twice.)
    for bad, said in (([], "takes nothing, or"), ({"after": 3}, "an experiment id"),
                      ({"after": "00" * 32}, "after names no experiment of this peer"),
                      ({"page_bytes": 0}, "page_bytes is a number")):  # fmt: skip
        with pytest.raises(MetaoptError, match=said):
            page(bad)
