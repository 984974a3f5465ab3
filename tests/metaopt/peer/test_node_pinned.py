"""The peer's shell (peer/_node.py): what a mutation audit found unpinned. The starts it refuses
and the locks it waits for, what an orderly stop does, what it says to and takes from other
peers, and the bounds on its retries."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from crdt import ClusterKey, LevelDBStore, Record, StoreWriteFailed
from metaopt._errors import MetaoptError
from metaopt._records import (
    EVENT,
    EXPERIMENT,
    MAX_STDERR,
    TRIAL,
    EventBody,
    ExperimentSpec,
    experiment_record,
    parse_event,
)
from metaopt.peer import _node as node_module
from metaopt.peer._config import PeerConfig, Timing
from metaopt.peer._identity import MAX_REMEMBERED, DataDir
from metaopt.peer._node import Node
from metaopt.peer._scheduler import BACKOFF_AFTER
from metaopt.peer._storage import StorageTrouble
from metaopt.peer._wire import Request
from tests.metaopt.peer.test_node_claims import _lost_trial
from tests.metaopt.peer.test_node_schedule import OTHER, _experiment, _lone_node, _ran_to_step_3
from tests.metaopt.peer.test_node_sync import quiet_node
from tests.metaopt.peer.test_orphans import SLEEPER, _end, _seen, _spawn

pytestmark = pytest.mark.integration


def _key() -> str:
    return ClusterKey.generate(os.urandom(32)).to_text()


def _node(data: Path, **kw: object) -> Node:
    return Node(PeerConfig(data_dir=data, port=0, mdns=False, **kw))  # type: ignore[arg-type]


class _VirtualTime:
    """time.monotonic and time.sleep for _open_store: a sleep moves the clock, no real wait.
    Gives up (AssertionError) after ``limit`` virtual seconds, so a wait that never ends
    fails instead of hanging."""

    def __init__(self, limit: float = 300.0) -> None:
        self.now = 0.0
        self.limit = limit

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.now > self.limit:
            raise AssertionError(f"still waiting for the lock after {self.now:.0f} s")


def _held_by_a_reader(root: Path) -> tuple[DataDir, LevelDBStore]:
    """A data directory whose replica another process holds, with no peer running there (as
    a long `metaopt status` read of a stopped peer's replica holds it)."""
    dirs = DataDir(root)
    dirs.ensure()
    return dirs, LevelDBStore(dirs.replica)


# ------------------------------------------------------------------------ start: the store


def test_a_start_beside_a_reader_that_never_lets_go_gives_up_after_the_read_patience(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica held by a reader (a Study, a stuck `status`) is waited for as long as a read
    may take, then refused with what to do: not waited on for good, a `peer start` that never
    starts and never says why."""
    clock = _VirtualTime()
    monkeypatch.setattr(
        node_module, "time", SimpleNamespace(monotonic=clock.monotonic, sleep=clock.sleep)
    )
    dirs, held = _held_by_a_reader(tmp_path)
    try:
        with pytest.raises(MetaoptError, match="is in use by another process") as caught:
            node_module._open_store(dirs, patience=5.0, read_patience=120.0)
        assert "\n" not in str(caught.value) and "--data-dir" in str(caught.value)
        assert 120.0 < clock.now <= 120.2  # the read patience, not the running peer's 5 s
    finally:
        held.close()


def test_a_start_waiting_for_a_reader_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The wait for a reader's lock is said once, after the running peer's patience: not a
    line every tenth of a second for up to two minutes."""
    clock = _VirtualTime()
    monkeypatch.setattr(
        node_module, "time", SimpleNamespace(monotonic=clock.monotonic, sleep=clock.sleep)
    )
    dirs, held = _held_by_a_reader(tmp_path)
    try:
        with caplog.at_level("WARNING", logger="metaopt.peer"), pytest.raises(MetaoptError):
            node_module._open_store(dirs, patience=5.0, read_patience=120.0)
    finally:
        held.close()
    said = [r.getMessage() for r in caplog.records if "waiting for another" in r.getMessage()]
    assert said == [f"waiting for another process reading {dirs.replica} to finish"]


@pytest.mark.parametrize(
    ("said", "advice"),
    [
        ("IO error: /d/replica/000003.log: No space left on device", True),
        ("IO error: /d/replica/LOCK: Read-only file system", True),
        ("Invalid argument: /d/replica: does not exist", False),
    ],
)
def test_a_replica_its_disk_will_not_let_open_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, said: str, advice: bool
) -> None:
    """`peer start` on a full disk said "cannot open the store ...: No space left on device",
    no more (a review)."""
    import plyvel

    def refused(path: object) -> None:
        raise plyvel.IOError(said.encode())

    monkeypatch.setattr("crdt._leveldb.plyvel.DB", lambda *a, **kw: refused(a))
    with pytest.raises(MetaoptError) as caught:
        node_module._open_store(DataDir(tmp_path / "d"))
    text = str(caught.value)
    assert text.startswith("cannot open the store at") and "\n" not in text
    wanted = "; free space on its disk (or make it writable), or choose another --data-dir"
    assert text.endswith(wanted) is advice


# -------------------------------------------------------------------------- start: the key


@pytest.mark.asyncio
async def test_a_replica_whose_key_file_was_removed_starts_with_the_key_given(
    tmp_path: Path,
) -> None:
    """A data directory that holds a replica but no cluster.key (removed, or the replica
    copied in alone) starts with the --key given and keeps it: nothing says it belongs to
    another cluster, and refusing it as "key unreadable" would leave no way to start it."""
    key = _key()
    first = _node(tmp_path / "d", key_text=key)
    spec = ExperimentSpec("e", {"x": "uniform(0, 1)"}).to_body()
    first.store.add([Record.create(EXPERIMENT, first.node_id, 1, 1000, spec, [])])
    await first.stop()
    (tmp_path / "d" / "cluster.key").unlink()
    again = _node(tmp_path / "d", key_text=key)
    try:
        assert again.key == ClusterKey.from_text(key) and len(again.store) == 1
        assert (tmp_path / "d" / "cluster.key").read_text().strip() == key
    finally:
        await again.stop()


# ------------------------------------------------------------------- start: what it finds


@pytest.mark.asyncio
async def test_a_started_peer_stops_the_trial_processes_its_last_life_left_running(
    tmp_path: Path,
) -> None:
    """A peer killed -9 leaves its trials running (holding their GPU, writing beside their
    re-run): started again on its data directory it stops them before anything else."""
    node = _node(tmp_path / "d")
    env = {"METAOPT_TRIAL_ID": "ab" * 16, "METAOPT_DATA_DIR": str(node.dirs.root)}
    left = _spawn(SLEEPER, env)
    try:
        _seen(str(node.dirs.root), 1)
        await node.start()
        assert left.wait(timeout=20) == -9
    finally:
        _end(left)
        await node.stop()


@pytest.mark.asyncio
async def test_a_trial_stamped_ahead_in_the_replica_held_counts_turns_from_the_opening(
    tmp_path: Path,
) -> None:
    """A trial held in the replica and stamped by a clock running ahead counts (once the
    replica is loaded) as arrived when the peer opened it, as it does arriving live: the turns
    at the next point stay put rather than move with this peer's clock, so peers with the same
    trials agree on them."""
    exp = _experiment("e", {"x": "uniform(0, 1)"})
    now = [exp.time / 1000 + 10.0]
    body = {"params": {"x": 0.5}, "node": OTHER, "counter": 1}
    ahead = Record.create(TRIAL, OTHER, 1, exp.time + 3_600_000, body, [exp.key])

    def node() -> Node:
        config = PeerConfig(data_dir=tmp_path / "d", port=0, mdns=False, slots=1)
        return Node(config, clock=lambda: now[0], monotonic=lambda: now[0])

    first = node()
    first.store.add([exp, ahead])
    await first.stop()
    restarted = node()
    try:
        opened = restarted._opened_ms
        await restarted.load()
        now[0] += 20.0  # later looks at the turns
        state = restarted.replica.experiments[exp.key]
        assert restarted._turns_since(state, int(now[0] * 1000)) == opened
    finally:
        await restarted.stop()


# --------------------------------------------------------------------- its periodic tasks

FULL = StoreWriteFailed("cannot write the store at /d/replica: No space left", "No space left")


@pytest.mark.asyncio
async def test_a_periodic_task_the_disk_refuses_is_said_as_the_disks_not_as_a_bug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A round that fails because the disk refuses writes is the disk's trouble, said once a
    minute with what to do: not a "periodic task failed" traceback, which reads as a bug and
    fills the log on the full disk."""
    now = [1000.0]
    node = Node(
        PeerConfig(data_dir=tmp_path / "d", port=0, mdns=False),
        clock=lambda: now[0],
        monotonic=lambda: now[0],
    )
    node.storage = StorageTrouble(clock=lambda: now[0])
    rounds = 0

    async def refused() -> None:
        nonlocal rounds
        rounds += 1
        now[0] += 1.0
        if rounds == 5:
            node.request_stop()
        raise FULL

    try:
        with caplog.at_level("INFO", logger="metaopt.peer"):
            await node._every(0.0, refused)
    finally:
        await node.stop()
    assert rounds == 5
    assert not [r for r in caplog.records if "periodic task" in r.getMessage()]
    said = [r for r in caplog.records if "cannot write the replica" in r.getMessage()]
    assert len(said) == 1 and said[0].exc_info is None


# ------------------------------------------------------------------------------ its stop


@pytest.mark.asyncio
async def test_a_stop_interrupts_a_trial_whose_launch_was_under_way_after_the_launch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop during a scheduling pass's launch waits for the pass: interrupted before the
    launch ended, the trial would start after the interrupt, miss it, die with the peer
    without an end event and show as running until it is found lost."""
    exp = _experiment("e", {"x": "uniform(0, 1)"})
    node = _lone_node(tmp_path, caught_up=True)
    order: list[str] = []
    go_on = asyncio.Event()

    async def launch(state: object, view: object) -> None:
        order.append("launch")
        await go_on.wait()
        order.append("launched")

    async def interrupt_all(reason: str) -> None:
        order.append("interrupt")

    monkeypatch.setattr(node.runner, "launch", launch)
    monkeypatch.setattr(node.runner, "interrupt_all", interrupt_all)
    node.store.add([exp])
    passing = asyncio.ensure_future(node._schedule())
    stopping = None
    try:
        for _ in range(500):
            if order:
                break
            await asyncio.sleep(0.01)
        assert order == ["launch"]
        stopping = asyncio.ensure_future(node.stop())
        for _ in range(20):
            await asyncio.sleep(0)
        go_on.set()
        await asyncio.wait_for(passing, timeout=30)
        await asyncio.wait_for(stopping, timeout=30)
    finally:
        go_on.set()
        if stopping is None:
            await node.stop()
    assert order == ["launch", "launched", "interrupt"]


@pytest.mark.asyncio
async def test_a_stop_records_a_run_end_the_disk_refused_once_it_takes_writes(
    tmp_path: Path,
) -> None:
    """A run whose end the disk refused is tried once more as the peer stops: with room again
    by then, its completion is kept, not lost with the process (the trial then shows as
    running, is taken for lost and runs again)."""
    from types import SimpleNamespace as Outcome

    from metaopt.peer._runner import Running

    exp = _experiment("good", {"x": "uniform(0, 1)"}, max_trials=1)
    node = _lone_node(tmp_path)
    me, now_ms = node.node_id, int(time.time() * 1000)
    body = {"params": {"x": 0.5}, "node": me, "counter": 1}
    trial = Record.create(TRIAL, me, 1, now_ms - 5_000, body, [exp.key])
    outcome = Outcome(
        status="completed", metrics={"objective": 0.16}, objectives={"objective": 0.16},
        exit_code=0, diverged=False,
    )  # fmt: skip
    node.store.add([exp, trial, *_ran_to_step_3(me, exp, trial, now_ms)])
    node.runner._unrecorded[trial.key] = (
        Running(node.runner.slots[0], exp.key, trial.key),
        outcome,
    )
    await node.stop()
    store = LevelDBStore(DataDir(tmp_path / "peer").replica)
    try:
        kinds = [
            e.kind for r in store.linked(trial.key) if r.kind == EVENT if (e := parse_event(r))
        ]
    finally:
        store.close()
    assert kinds.count("completed") == 1


@pytest.mark.asyncio
async def test_a_stopping_peer_hands_what_its_pushes_missed_to_a_live_peer(
    tmp_path: Path,
) -> None:
    """The last records of a stopping peer (its trials' interrupted events) reach a live peer
    even when no push carried them: one last reconciliation before it goes, or the others
    learn of them only when it comes back."""

    a = quiet_node(tmp_path / "a")
    b = quiet_node(tmp_path / "b", a.key.to_text())
    running = [a, b]
    try:
        for peer in running:
            await peer.start()
        await asyncio.sleep(0.2)  # their first periodic rounds ran, knowing no peer
        written = a.writer.write("control", {"action": "note"}, [b"e" * 32])
        for _ in range(5):  # its push goes out, to nobody
            await asyncio.sleep(0)
        a.peers.add(b.node_id, b.addr, time.monotonic(), contacted=True)
        assert b.store.get(written.key) is None
        running.remove(a)
        await asyncio.wait_for(a.stop(), timeout=60)
        assert b.store.get(written.key) is not None
    finally:
        for peer in running:
            await peer.stop()


@pytest.mark.asyncio
async def test_a_stop_waits_no_longer_than_leave_wait_for_a_peer_that_never_answers_its_leave(
    tmp_path: Path,
) -> None:
    """A live peer that accepts the leave and never answers (stopped with SIGSTOP, a hung
    host) holds the stop for leave_wait at most, its call then cancelled: `peer stop` must not
    hang on another machine."""
    config = PeerConfig(data_dir=tmp_path / "d", port=0, mdns=False, timing=Timing(leave_wait=0.05))
    node = Node(config)
    hung = asyncio.Event()
    cancelled: list[str] = []

    class _HungClient:
        async def call(self, addr: str, op: str, body: object = None, **kw: object) -> object:
            try:
                await hung.wait()
            except asyncio.CancelledError:
                cancelled.append(op)
                raise
            return True

        async def close(self) -> None:
            pass

    with socket.socket() as probe:  # a live peer's address nobody listens on (its sessions fail)
        probe.bind(("127.0.0.1", 0))
        addr = f"127.0.0.1:{probe.getsockname()[1]}"
    node.peers.add(b"\x01" * 16, addr, node.monotonic(), contacted=True)
    real, node.membership.client = node.membership.client, _HungClient()  # type: ignore[assignment]
    try:
        await asyncio.wait_for(node.stop(), timeout=30)
    finally:
        hung.set()
        await real.close()
    assert cancelled == ["leave"]


# ------------------------------------------------------------------- what peers tell it


@pytest.mark.asyncio
async def test_a_request_naming_this_peer_as_its_sender_does_not_enter_its_peer_table(
    tmp_path: Path,
) -> None:
    """A request under this peer's own node id (itself, reached through an address it does
    not know as its own) is no other peer: in its table it would count itself twice among the
    live nodes and the turns at new points."""
    node = _node(tmp_path / "d")
    try:
        await node._on_gossip(Request("gossip", node.node_id, "127.0.0.1:9", []))
        assert len(node.peers) == 0 and node.membership.live_nodes() == [node.node_id]
        other = b"\x01" * 16  # (what another peer's request does)
        await node._on_gossip(Request("gossip", other, "127.0.0.1:9", []))
        assert node.membership.live_nodes() == [node.node_id, other]
    finally:
        await node.stop()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("named", "remote", "kept"),
    [
        ("0.0.0.0:7787", "10.1.2.3", "10.1.2.3:7787"),
        ("[::]:7787", "fd00::5", "[fd00::5]:7787"),
        ("[::]:7787", "::1", "[::1]:7787"),
        ("10.9.9.9:7787", "10.1.2.3", "10.9.9.9:7787"),  # a name it gives is kept
    ],
)
async def test_a_peer_bound_to_every_interface_is_called_back_where_its_request_came_from(
    tmp_path: Path, named: str, remote: str, kept: str
) -> None:
    """A peer started with --host 0.0.0.0 (or ::) names itself by an address nobody can call:
    it is kept under the address its request came from, an IPv6 one in brackets, so that
    this peer can call it back (a URL of "fd00::5:7787" cannot be made, and it was dropped)."""
    node = _node(tmp_path / "d")
    other = b"\x01" * 16
    try:
        await node._on_gossip(Request("gossip", other, named, [], remote=remote))
        known = node.peers.get(other)
        assert known is not None and known.addr == kept
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_of_two_crossing_sessions_only_the_peer_of_the_lower_id_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which side refuses a session crossing its own is part of what peers agree on: peers of
    two releases that picked different sides would both refuse (and neither sync) or both go
    on (a catch-up carried twice). The lower node id refuses."""
    node = _node(tmp_path / "d")
    monkeypatch.setattr(node.replicator, "in_session_with", lambda addr: addr == "127.0.0.1:9")
    low, high = b"\x00" * 16, b"\xff" * 16
    try:
        assert low < node.node_id < high
        assert node._busy_with(Request("sync", high, "127.0.0.1:9", b""))
        assert not node._busy_with(Request("sync", low, "127.0.0.1:9", b""))
        assert not node._busy_with(Request("sync", high, "127.0.0.1:10", b""))  # another peer
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_sync_request_whose_body_is_not_bytes_is_refused_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A sync request of the wrong shape (a peer's bug, a fuzzer with the key) is refused with
    a line that says so, not handed to the reconciliation as if it were a message."""
    node = _node(tmp_path / "d")
    try:
        for body in (None, 5, [b"x"], {"p": b"x"}, "text"):
            with pytest.raises(MetaoptError, match=r"^a sync request carries bytes$"):
                await node._on_sync(Request("sync", b"\x01" * 16, "127.0.0.1:9", body))
    finally:
        await node.stop()


# ------------------------------------------------------------------- a disk refusing writes


def _refusing(node: Node, now: list[float]) -> None:
    """node's disk refused a write at now[0]."""
    node.storage = StorageTrouble(clock=lambda: now[0])
    assert node.storage.note(FULL, "a test")


@pytest.mark.asyncio
async def test_a_probe_of_the_store_that_fails_for_another_reason_is_raised_as_a_bug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the disk refuses writes the store is probed; a probe failing for a reason that is
    not the disk's (a bug) is raised, for the periodic task to report, not swallowed: the
    peer would hold back for good and say only that its disk is full."""
    now = [0.0]
    node = _node(tmp_path / "d")
    _refusing(node, now)
    now[0] = 11.0  # a probe is due

    def broken() -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(node.store, "probe", broken)
    try:
        with pytest.raises(KeyError):
            node._probe_storage()
    finally:
        monkeypatch.undo()
        await node.stop()


@pytest.mark.asyncio
async def test_a_peer_whose_disk_refuses_writes_starts_no_session_and_no_gossip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Holding back while it can record nothing, a peer calls nobody: a reconciliation's
    records could not be stored, and any call of its makes the others count it live (and its
    trials running) while nothing it does is recorded."""
    now = [0.0]
    node = _node(tmp_path / "d")
    _refusing(node, now)
    node.peers.add(b"\x01" * 16, "127.0.0.1:9", node.monotonic(), contacted=True)
    node.peers.add_seed("127.0.0.1:10")
    called: list[str] = []

    async def anti_entropy_once() -> None:
        called.append("anti-entropy")

    async def call(addr: str, op: str, body: object = None, **kw: object) -> object:
        called.append(op)
        return []

    monkeypatch.setattr(node.replicator, "anti_entropy_once", anti_entropy_once)
    real, node.membership.client = node.membership.client, SimpleNamespace(call=call)  # type: ignore[assignment]
    try:
        await node._anti_entropy()
        await node._gossip()
        assert called == []
    finally:
        node.membership.client = real
        monkeypatch.undo()
        await node.stop()


# ----------------------------------------------------------------------------- its gossip


def _calls(node: Node) -> list[str]:
    """Replace node's client by one that answers every call with an empty gossip; the list
    fills with the addresses called."""
    called: list[str] = []

    async def call(addr: str, op: str, body: object = None, **kw: object) -> object:
        called.append(addr)
        return []

    # (the real one is closed with the node)
    node.membership.client = SimpleNamespace(  # type: ignore[assignment]
        call=call, close=node.membership.client.close, bytes_in=0, bytes_out=0
    )
    return called


def _clocked(root: Path, now: list[float]) -> Node:
    config = PeerConfig(data_dir=root, port=0, mdns=False)
    return Node(config, clock=lambda: now[0], monotonic=lambda: now[0])


@pytest.mark.asyncio
async def test_a_gossip_round_also_calls_a_silent_peer(tmp_path: Path) -> None:
    """A peer silent past the timeout (not a seed) is still called, one a round: a cluster
    whose peers all went quiet at once (a switch rebooting, a stall) finds itself again, where
    mDNS found them and no --join names them."""
    now = [1000.0]
    node = _clocked(tmp_path / "d", now)
    node.peers.add(b"\x01" * 16, "127.0.0.1:9", now[0], contacted=True)
    now[0] += node.config.timing.peer_timeout + 1
    called = _calls(node)
    try:
        await node._gossip()
        assert called == ["127.0.0.1:9"]
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_the_remembered_peers_are_called_only_while_no_peer_is_live(tmp_path: Path) -> None:
    """The addresses kept from its last life (up to 16 machines that may be gone for good)
    are called while it hears of nobody; once a peer is live, gossip spreads the cluster and
    they are not called every round."""
    now = [1000.0]
    node = _clocked(tmp_path / "d", now)
    node.membership._recalled = ["127.0.0.1:20"]
    called = _calls(node)
    try:
        await node._gossip()
        assert called == ["127.0.0.1:20"]
        called.clear()
        node.peers.add(b"\x01" * 16, "127.0.0.1:9", now[0], contacted=True)
        await node._gossip()
        assert called == ["127.0.0.1:9"]
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_join_seed_that_answers_is_not_shown_silent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`peer status` lists the --join addresses that have not answered: one that answers
    after failing first leaves the list, and its answering is said."""
    from metaopt.peer._transport import PeerUnreachable

    now = [1000.0]
    node = _clocked(tmp_path / "d", now)
    node.peers.add_seed("127.0.0.1:9")
    answers = iter([False, True])

    async def call(addr: str, op: str, body: object = None, **kw: object) -> object:
        if not next(answers):
            raise PeerUnreachable(f"no answer from {addr} (ClientConnectorError)")
        return []

    real, node.membership.client = (
        node.membership.client,
        SimpleNamespace(  # type: ignore[assignment]
            call=call, close=_nothing, bytes_in=0, bytes_out=0
        ),
    )
    try:
        with caplog.at_level("INFO", logger="metaopt.peer"):
            await node._gossip()
            assert node.status()["silent_seeds"] == ["127.0.0.1:9"]
            await node._gossip()
        assert node.status()["silent_seeds"] == []
        assert "--join 127.0.0.1:9 answers now" in caplog.messages
    finally:
        node.membership.client = real
        await node.stop()


async def _nothing() -> None:
    pass


def test_the_addresses_remembered_from_a_last_life_leave_out_its_own_and_malformed_ones(
    tmp_path: Path,
) -> None:
    """A peer restarted on the address it had kept for another (a port reused) would call
    itself; an address the peers file holds that no URL can be made of is not called."""
    dirs = DataDir(tmp_path / "d")
    dirs.ensure()
    dirs.write_peers(["127.0.0.1:5000", "127.0.0.1:5001", "no port", "127.0.0.1:99999"])
    node = _node(tmp_path / "d")
    node.peers.own_addrs = frozenset({"127.0.0.1:5000"})
    try:
        node.membership.recall_peers()
        assert node.membership._recalled == ["127.0.0.1:5001"]
    finally:
        asyncio.run(node.stop())


@pytest.mark.asyncio
async def test_only_peers_this_one_talked_to_are_remembered(tmp_path: Path) -> None:
    """The peers file keeps the addresses of the peers this one talked to (which answered):
    not one it only heard of by gossip, perhaps a stale or unreachable address, which would
    push the working ones out."""
    now = [1000.0]
    node = _clocked(tmp_path / "d", now)
    node.peers.add(b"\x01" * 16, "127.0.0.1:9", now[0], contacted=False)
    try:
        node.membership._remember_peers()
        assert node.dirs.read_peers() == []
        node.peers.add(b"\x02" * 16, "127.0.0.1:10", now[0], contacted=True)
        node.membership._remember_peers()
        assert node.dirs.read_peers() == ["127.0.0.1:10"]
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_the_peers_talked_to_now_come_first_in_a_full_peers_file(tmp_path: Path) -> None:
    """A peers file full of the last life's addresses makes room for the peers this one
    talks to now: they are kept first, and the oldest addresses drop out."""
    now = [1000.0]
    node = _clocked(tmp_path / "d", now)
    old = [f"127.0.0.1:{6000 + i}" for i in range(MAX_REMEMBERED)]
    node.membership._recalled = list(old)
    node.peers.add(b"\x01" * 16, "127.0.0.1:9", now[0], contacted=True)
    try:
        node.membership._remember_peers()
        assert node.dirs.read_peers() == ["127.0.0.1:9", *old[: MAX_REMEMBERED - 1]]
    finally:
        await node.stop()


# ---------------------------------------------------------------------------- its records


@pytest.mark.asyncio
async def test_an_events_stderr_too_long_keeps_its_end(tmp_path: Path) -> None:
    """A failed trial's stderr over the record limit is cut from the front: the end holds the
    traceback and the error that says why it failed."""
    node = _node(tmp_path / "d")
    stderr = "noise\n" * (MAX_STDERR // 6) + "ValueError: the reason it failed\n"
    try:
        record = node.write_event(b"e" * 32, b"t" * 32, "failed", exit_code=1, stderr=stderr)
        event = parse_event(record)
        assert event is not None and event.stderr is not None
        assert len(event.stderr) == MAX_STDERR and event.stderr == stderr[-MAX_STDERR:]
        assert event.stderr.endswith("ValueError: the reason it failed\n")
    finally:
        await node.stop()


# ---------------------------------------------------------------------- when it may judge


def _judging(tmp_path: Path, now: list[float]) -> Node:
    """A node on the clock now, listening since now[0], knowing no other peer."""
    node = _clocked(tmp_path / "d", now)
    node.started_at = now[0]
    return node


@pytest.mark.asyncio
async def test_its_own_records_do_not_hold_back_a_peer_that_has_nobody_to_catch_up_with(
    tmp_path: Path,
) -> None:
    """A peer that has listened for the peer timeout with no session waits for others'
    records to stop arriving: its own (its trials' progress) are no catch-up, and counted as
    one it would judge nothing (claim no free trial) while its trials run."""
    now = [1000.0]
    node = _judging(tmp_path, now)
    node.membership._recalled = ["127.0.0.1:9"]  # (not alone: it waits the timeout)
    try:
        now[0] += node.config.timing.peer_timeout
        assert node.caught_up()
        node.writer.write("control", {"action": "note"}, [b"e" * 32])
        assert node.caught_up()
        other = Record.create("control", b"\x01" * 16, 1, 1, {"action": "note"}, [b"e" * 32])
        node.store.add([other])
        assert not node.caught_up()  # others' records still arriving: a catch-up under way
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_peer_says_when_and_why_it_caught_up_and_again_after_a_rejoin(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A restarted peer starts nothing until it has caught up; its log says when that was and
    what settled it, so a user whose peer sat idle after a restart can tell why."""
    now = [1000.0]
    node = _judging(tmp_path, now)
    node.membership._recalled = ["127.0.0.1:9"]
    timeout = node.config.timing.peer_timeout

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("caught up")]

    try:
        with caplog.at_level(logging.INFO, logger="metaopt.peer"):
            assert not node.caught_up() and not said()
            node.membership._gossip_answered_at = now[0]  # (a peer answered: no twin there)
            now[0] += 5
            node.replicator.sessions += 1
            node.replicator.last_covered = "127.0.0.1:9"
            assert node.caught_up() and node.caught_up()
            assert said() == [
                "caught up 5.0 s after it started: an anti-entropy session with 127.0.0.1:9"
                " brought all that peer held"
            ]
            node.catch_up.rejoin()  # (after a hold: it listens again, and judges nothing meanwhile)
            assert not node.caught_up()
            now[0] += timeout
            assert node.caught_up()
            assert said()[1:] == [
                f"caught up {timeout:.1f} s after it listened again: it waited a peer timeout"
                f" ({timeout:g} s), and no other peer's records arrived in the last"
                f" {2 * node.config.timing.anti_entropy:g} s (nor any of its history in the last"
                f" {timeout:g} s)"
            ]
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_peer_caught_up_by_waiting_says_so_when_records_arriving_hold_it_back_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Caught up by a peer timeout with nothing arriving, a peer whose own sessions fail is not
    caught up again once others' records arrive: its line said "caught up" once, and nothing
    when it held back again (a review). Each change is said, at INFO the first few."""
    now = [1000.0]
    node = _judging(tmp_path, now)
    node.membership._recalled = ["127.0.0.1:9"]
    arriving = 2 * node.config.timing.anti_entropy
    other = b"\x01" * 16

    def arrive(seq: int) -> None:
        node.store.add([Record.create("control", other, seq, int(now[0] * 1000), {"n": seq})])

    try:
        with caplog.at_level(logging.DEBUG, logger="metaopt.peer"):
            now[0] += node.config.timing.peer_timeout
            assert node.caught_up()
            for seq in range(1, 4):  # (three flips back and forth: six changes)
                arrive(seq)
                assert not node.caught_up() and not node.caught_up()
                now[0] += arriving
                assert node.caught_up()
        said = [
            (r.levelname, r.getMessage().split(":")[0])
            for r in caplog.records
            if "caught up" in r.getMessage()
        ]
        back = "not caught up any more"
        assert said[:2] == [("INFO", said[0][1]), ("INFO", back)]
        assert said[0][1].startswith("caught up") and len(said) == 7
        assert [level for level, _ in said] == ["INFO"] * 4 + ["DEBUG"] * 3
        assert any(
            "other peers' records arrive again (a catch-up may be under way)" in r.getMessage()
            for r in caplog.records
        )
    finally:
        await node.stop()


@pytest.mark.parametrize("alone", [True, False])
@pytest.mark.asyncio
async def test_a_submission_made_here_is_no_catch_up(tmp_path: Path, alone: bool) -> None:
    """A submission's records carry the experiment's origin, not this node's: taken for
    others' records arriving, they held the first trial of every submission made on a peer
    up for 30 s back two anti-entropy periods (4.5 s on a real peer alone, 6 of 6)."""
    from metaopt.peer._api import LocalApi

    now = [1000.0]
    node = _judging(tmp_path, now)
    if not alone:
        node.membership._recalled = ["127.0.0.1:9"]
    try:
        now[0] += node.config.timing.peer_timeout
        assert node.caught_up()
        exp = experiment_record(ExperimentSpec("new", {"x": "uniform(0, 1)"}), 1_000_000)
        await LocalApi(node).add(Request("api.add", node.node_id, "", [exp.data]))
        assert exp.key in node.replica.experiments
        assert node.caught_up()
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_catch_up_that_never_goes_quiet_is_waited_for_ten_timeouts_at_most(
    tmp_path: Path,
) -> None:
    """Others' records arriving without end (and no session completing) hold a peer back
    for ten peer timeouts, no longer: then it judges and claims as a caught-up peer does."""
    now = [1000.0]
    node = _judging(tmp_path, now)
    node.membership._recalled = ["127.0.0.1:9"]
    timeout = node.config.timing.peer_timeout
    try:
        now[0] += 10 * timeout - 1
        node.catch_up.others_arrived_at = now[0]
        assert not node.caught_up()
        now[0] += 1
        node.catch_up.others_arrived_at = now[0]
        assert node.caught_up()
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_peer_that_remembers_peers_is_not_alone_and_waits_to_catch_up(
    tmp_path: Path,
) -> None:
    """A peer restarted with addresses from its last life is not alone (they may answer any
    moment with the history it missed): it waits a session or the timeout, not the two
    anti-entropy periods of a peer that knows of no other."""
    now = [1000.0]
    node = _judging(tmp_path, now)
    try:
        now[0] += 2 * node.config.timing.anti_entropy
        assert node.caught_up()  # alone
        node.membership._recalled = ["127.0.0.1:9"]
        assert not node.caught_up()
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_peer_has_listened_once_exactly_the_peer_timeout_has_passed(
    tmp_path: Path,
) -> None:
    """It presumes another peer gone after listening for the peer timeout: the bound is the
    timeout itself, as for the liveness it is compared with."""
    now = [1000.0]
    node = _judging(tmp_path, now)
    try:
        now[0] += node.config.timing.peer_timeout - 0.5
        assert not node.listened()
        now[0] += 0.5
        assert node.listened()
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_short_hold_of_the_loop_is_no_reason_to_listen_again(tmp_path: Path) -> None:
    """A hold of the event loop under half the peer timeout (a slow fold, a GC pause) leaves
    the peer judging as before; from half the timeout it listens again first."""
    now = [1000.0]
    node = _judging(tmp_path, now)
    timeout = node.config.timing.peer_timeout
    try:
        now[0] += timeout
        assert node.listened()
        node._loop_held(timeout / 4)
        assert node.listened()
        node._loop_held(timeout / 2)
        assert not node.listened()
    finally:
        await node.stop()


# ------------------------------------------------------------------------ its scheduling


@pytest.mark.asyncio
async def test_a_new_point_whose_turn_keeps_moving_gives_up_after_max_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each wait for a turn after the first means the cluster is busy: after _MAX_WAITS the
    point is given up (nothing recorded) and the pass runs again at once, not waited on
    without bound while the schedule lock holds every other slot."""
    exp = _experiment("e", {"x": "uniform(0, 1)"})
    node = _lone_node(tmp_path, caught_up=True)
    waits: list[float] = []

    async def sleep(delay: float) -> None:
        waits.append(delay)

    monkeypatch.setattr(node, "_turn_wait", lambda state: 7)
    monkeypatch.setattr("metaopt.peer._node.asyncio.sleep", sleep)
    try:
        node.store.add([exp])
        state = node.replica.experiments[exp.key]
        assert await node.new_trial(state) is None
        assert waits == [0.007] * node_module._MAX_WAITS
        assert node._schedule_again and len(state) == 0
    finally:
        monkeypatch.undo()
        await node.stop()


@pytest.mark.asyncio
async def test_free_trials_are_claimed_in_line_two_anti_entropy_periods_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The k-th peer in line for a free trial claims it k claim delays after it was freed;
    a delay of two anti-entropy periods lets the claim of the peer before it arrive first, so
    that two peers do not both re-run it."""
    node = _lone_node(tmp_path, caught_up=True)
    seen: list[int] = []

    def plan_work(*args: object, **kwargs: object) -> list[object]:
        seen.append(args[6])  # type: ignore[arg-type]
        return []

    monkeypatch.setattr(node_module, "plan_work", plan_work)
    try:
        await node._schedule_once()
        assert seen == [int(node.config.timing.anti_entropy * 2000)]
    finally:
        monkeypatch.undo()
        await node.stop()


@pytest.mark.asyncio
async def test_a_free_trial_already_running_here_is_not_free_to_claim_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lost trial this peer has meanwhile started again (its run's events not yet folded)
    is not free any more: claimed again, it would run twice in this peer's slots."""
    exp = _experiment("e", {"x": "uniform(0, 1)"}, max_trials=4)
    trial, events = _lost_trial(exp)
    node = _lone_node(tmp_path, caught_up=True)
    try:
        node.store.add([exp, trial, *events])
        state = node.replica.experiments[exp.key]
        view = state.trial(trial.key)
        assert view is not None and view.state == "lost"
        assert node._still_free(state, view) is not None
        monkeypatch.setattr(node.runner, "running_keys", lambda: {trial.key})
        assert node._still_free(state, view) is None
    finally:
        monkeypatch.undo()
        await node.stop()


def _failed_runs(exp: Record, n: int) -> list[Record]:
    """n trials of OTHER's that started and failed, one after another."""
    records: list[Record] = []
    for i in range(n):
        base = exp.time + 1000 * (i + 1)
        body = {"params": {"x": i / 10}, "node": OTHER, "counter": i + 1}
        trial = Record.create(TRIAL, OTHER, 3 * i + 1, base, body, [exp.key])
        links = [trial.key, exp.key]
        for j, event in enumerate((
            EventBody(trial.key, exp.key, "started", OTHER),
            EventBody(trial.key, exp.key, "failed", OTHER, exit_code=1, reason=f"boom {i}"),
        )):  # fmt: skip
            records.append(
                Record.create(EVENT, OTHER, 3 * i + 2 + j, base + j + 1, event.to_body(), links)
            )
        records.append(trial)
    return records


@pytest.mark.asyncio
async def test_an_experiment_is_warned_of_as_failing_from_backoff_after_failures_in_a_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning that an experiment's runs fail one after another comes with the back-off
    it announces (BACKOFF_AFTER failures in a row), not a failure earlier or later."""
    exp = _experiment("e", {"x": "uniform(0, 1)"})
    node = _lone_node(tmp_path)
    runs = _failed_runs(exp, BACKOFF_AFTER)
    try:
        node.store.add([exp, *runs[: 3 * (BACKOFF_AFTER - 1)]])
        state = node.replica.experiments[exp.key]
        with caplog.at_level("WARNING", logger="metaopt.peer"):
            node._warn_failing([state])
            assert not [m for m in caplog.messages if "trials failed" in m]
            node.store.add(runs[3 * (BACKOFF_AFTER - 1) :])
            node._warn_failing([state])
        said = [m for m in caplog.messages if "trials failed" in m]
        assert len(said) == 1 and f"its last {BACKOFF_AFTER} trials failed" in said[0]
        assert f"boom {BACKOFF_AFTER - 1}" in said[0]
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_failure_that_arrives_while_a_new_point_waits_for_its_turn_holds_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A point planned before the failures that start the back-off was recorded after them:
    the 4th and 5th trials of a crashing script started at once on a cluster (4 of 4 runs),
    not 1 s and 2 s after. Checked again just before it is recorded, it is given up."""
    spec = ExperimentSpec("e", {"x": "uniform(0, 1)"}, algorithm="random", command=("t.py",))
    exp = experiment_record(spec, int(time.time() * 1000))  # (the failures follow it: now)
    node = _lone_node(tmp_path, caught_up=True)
    runs = _failed_runs(exp, BACKOFF_AFTER)
    before, last = runs[: 3 * (BACKOFF_AFTER - 1)], runs[3 * (BACKOFF_AFTER - 1) :]
    turns = iter([7])

    async def sleep(delay: float) -> None:  # the turn's wait, during which the failure lands
        node.store.add(last)

    monkeypatch.setattr(node, "_turn_wait", lambda state: next(turns, 0))
    monkeypatch.setattr("metaopt.peer._node.asyncio.sleep", sleep)
    try:
        node.store.add([exp, *before])
        state = node.replica.experiments[exp.key]
        assert await node.new_trial(state) is None
        assert len(state) == BACKOFF_AFTER and all(t.state == "failed" for t in state.trials())
    finally:
        monkeypatch.undo()
        await node.stop()


@pytest.mark.asyncio
async def test_a_peer_whose_remembered_peers_never_answer_says_it_runs_alone(
    tmp_path: Path,
) -> None:
    """Restarted alone, its remembered peers all gone: its log warned, but `peer status` said
    only "peers (0 live of 0)". Once it has listened the peer timeout it says why it is alone
    and what to do; before that, and once a peer is known, nothing."""
    now = [1000.0]
    node = _judging(tmp_path, now)
    node.membership._recalled = ["127.0.0.1:9"]
    try:
        assert node.membership.alone_hint() is None  # still calling them
        now[0] += node.config.timing.peer_timeout
        hint = node.membership.alone_hint()
        assert hint is not None and hint.startswith(
            "none of the peers this one knew (127.0.0.1:9) answers: it runs alone"
        )
        assert node.status()["alone"] == hint
        node.peers.add(b"\x01" * 16, "127.0.0.1:9", now[0], contacted=True)
        assert node.membership.alone_hint() is None
    finally:
        await node.stop()
