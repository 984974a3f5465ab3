"""Which cluster key a peer starts with, and the starts it refuses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crdt import ClusterKey, Record
from metaopt._errors import MetaoptError
from metaopt._records import EXPERIMENT, ExperimentSpec
from metaopt.peer._config import PeerConfig
from metaopt.peer._node import Node

pytestmark = pytest.mark.integration


def _key() -> str:
    return ClusterKey.generate(os.urandom(32)).to_text()


def _node(data: Path, **kw: object) -> Node:
    return Node(PeerConfig(data_dir=data, port=0, mdns=False, **kw))  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_a_replica_of_one_cluster_is_not_started_with_another_clusters_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Restarted with cluster B's key, a member of cluster A poured A's whole history (code,
    # experiments, trials) into B, which then ran A's open experiments.
    first = _node(tmp_path / "d", key_text=_key())
    spec = ExperimentSpec("e", {"x": "uniform(0, 1)"}).to_body()
    first.store.add([Record.create(EXPERIMENT, first.node_id, 1, 1000, spec, [])])
    stored = (tmp_path / "d" / "cluster.key").read_text()
    await first.stop()
    with pytest.raises(MetaoptError, match="holds the replica of another cluster") as caught:
        _node(tmp_path / "d", key_text=_key())
    assert "\n" not in str(caught.value)
    assert (tmp_path / "d" / "cluster.key").read_text() == stored  # not overwritten
    again = _node(tmp_path / "d", key_text=stored.strip())  # its own key still starts it
    await again.stop()
    # Written by hand in another case and spacing, it is still this cluster's key (and no
    # word of another cluster: it said "it now belongs to cluster X" of its own cluster).
    (tmp_path / "d" / "cluster.key").write_text(" " + stored.strip().upper() + " \n")
    caplog.clear()
    again = _node(tmp_path / "d", key_text=stored.strip())
    await again.stop()
    assert not [r for r in caplog.records if "now belongs to" in r.getMessage()]
    # An empty replica takes a new key: nothing of the old cluster would travel. It says so
    # (a mistyped --key made a one-peer cluster without a word).
    old_key, new_key = _key(), _key()
    empty = _node(tmp_path / "e", key_text=old_key)
    await empty.stop()
    caplog.clear()
    fresh = _node(tmp_path / "e", key_text=new_key)
    await fresh.stop()
    old_print, new_print = (ClusterKey.from_text(k).fingerprint for k in (old_key, new_key))
    said = [r.getMessage() for r in caplog.records if "now belongs to" in r.getMessage()]
    assert said == [
        f"{(tmp_path / 'e').resolve()} held the key of cluster {old_print}, with an empty"
        f" replica: it now belongs to cluster {new_print}"
    ]


@pytest.mark.asyncio
async def test_joining_without_a_key_is_refused_and_a_new_cluster_says_so_until_used(
    tmp_path: Path,
) -> None:
    # --join without --key made a new cluster's key, which the seed refused: the peer sat
    # alone, its only word "This is a new cluster".
    with pytest.raises(MetaoptError, match="--join needs the cluster's key"):
        _node(tmp_path / "j", join=("127.0.0.1:9",))
    assert not (tmp_path / "j" / "cluster.key").exists()
    # A first start that failed after writing the key still leaves the join command to print.
    node = _node(tmp_path / "n")
    assert node.new_cluster
    await node.stop()
    node = _node(tmp_path / "n")
    assert node.new_cluster  # nothing happened in it yet
    spec = ExperimentSpec("e", {"x": "uniform(0, 1)"}).to_body()
    node.store.add([Record.create(EXPERIMENT, node.node_id, 1, 1000, spec, [])])
    await node.stop()
    node = _node(tmp_path / "n")
    assert not node.new_cluster
    await node.stop()
    joining = _node(tmp_path / "k", key_text=_key())
    assert not joining.new_cluster
    await joining.stop()
    # Started again without --join or --key, before any experiment: it is no new cluster if
    # it talked to peers when it last ran (a review met "This is a new cluster" there).
    (tmp_path / "k" / "peers").write_text("127.0.0.1:9\n")
    joining = _node(tmp_path / "k")
    assert not joining.new_cluster
    await joining.stop()


@pytest.mark.asyncio
async def test_a_join_seed_that_does_not_answer_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A mistyped --join port was silent: nothing at INFO, nothing in peer status.
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    node = _node(tmp_path / "s", key_text=_key(), join=(f"127.0.0.1:{port}",))
    node.peers.add_seed(f"127.0.0.1:{port}")
    try:
        with caplog.at_level("INFO", logger="metaopt.peer"):
            await node._gossip()
            await node._gossip()
        said = [r.getMessage() for r in caplog.records if "does not answer" in r.getMessage()]
        assert len(said) == 1 and f"--join 127.0.0.1:{port}" in said[0]
        assert node.status()["silent_seeds"] == [f"127.0.0.1:{port}"]  # `peer status` too
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_join_seed_that_refuses_this_peer_is_not_said_not_to_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Joined with the wrong key, a peer logged the seed's refusal (with what to do), then
    # "--join ... does not answer (... refused us: UnknownKey)": twice, contradicting itself.
    from metaopt.peer._transport import Refused

    node = _node(tmp_path / "s", key_text=_key(), join=("127.0.0.1:9",))
    node.peers.add_seed("127.0.0.1:9")

    async def refused(addr: str, op: str, body: object, to: object = None) -> object:
        raise Refused(f"{addr} refused us: UnknownKey")

    node.client.call = refused  # type: ignore[method-assign]
    try:
        with caplog.at_level("INFO", logger="metaopt.peer"):
            await node._gossip()
        assert not [r for r in caplog.records if "does not answer" in r.getMessage()]
        assert node.status()["silent_seeds"] == ["127.0.0.1:9"]
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_a_peer_that_knows_no_other_says_so_once_and_how_to_join(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Started without --join where mDNS finds nobody, a peer ran alone, its log saying only
    # that it listened and `peer status` "0 live of 0".
    now = [100.0]
    node = Node(
        PeerConfig(data_dir=tmp_path / "n", port=0, mdns=False, key_text=_key()),
        clock=lambda: now[0],
        monotonic=lambda: now[0],
    )
    try:
        assert "start with --join HOST:PORT" in node.status()["alone"]
        with caplog.at_level("INFO", logger="metaopt.peer"):
            await node._gossip()  # just started: others may yet be found
            now[0] += node.config.timing.peer_timeout
            for _ in range(3):
                await node._gossip()
        said = [r.getMessage() for r in caplog.records if "no other peer known" in r.getMessage()]
        assert said == [
            "no other peer known (mDNS is off); to join a cluster, start with --join HOST:PORT;"
            " this peer runs alone, every trial here"
        ]
        node.peers.add(b"\x01" * 16, "127.0.0.1:9", now[0], contacted=True)
        assert node.status()["alone"] is None
    finally:
        await node.stop()


@pytest.mark.asyncio
async def test_gossip_after_a_hung_peer_times_out_tells_its_true_age(tmp_path: Path) -> None:
    # A peer stopped with SIGSTOP accepts connections and never answers: each call to it
    # takes the request timeout, and the gossip sent next carried ages as of before that
    # call, 10 s too young, so peers kept it live for 73 s instead of the 30 s timeout.
    from metaopt.peer._transport import PeerUnreachable

    now = [100.0]
    node = Node(
        PeerConfig(data_dir=tmp_path / "n", port=0, mdns=False, key_text=_key()),
        clock=lambda: now[0],
        monotonic=lambda: now[0],
    )
    hung, others = "127.0.0.1:9", ["127.0.0.1:10", "127.0.0.1:11"]
    for i, addr in enumerate([hung, *others]):
        node.peers.add(bytes([i + 1]) * 16, addr, now[0], contacted=True)
        node.peers.add_seed(addr)
    sent: list[tuple[str, float, list[list[object]]]] = []

    class _Client:
        async def call(
            self, addr: str, op: str, body: list[list[object]], to: object = None
        ) -> object:
            sent.append((addr, now[0], body))
            if addr == hung:
                now[0] += 10.0  # the request timeout
                raise PeerUnreachable("timed out")
            return []

    real, node.membership.client = node.membership.client, _Client()  # type: ignore[assignment]
    try:
        now[0] = 105.0
        await node._gossip()
        after = sent[[addr for addr, *_ in sent].index(hung) + 1 :]
        assert after  # some peer was told about the hung one after the timeout
        for _addr, at, body in after:
            ages = {addr: age for _node_id, addr, age in body}
            assert ages[hung] == pytest.approx(at - 100.0)
    finally:
        node.membership.client = real
        await node.stop()


async def _member(data: Path, key: str) -> None:
    """A data directory of the cluster of ``key`` whose replica holds an experiment."""
    node = _node(data, key_text=key)
    spec = ExperimentSpec("e", {"x": "uniform(0, 1)"}).to_body()
    node.store.add([Record.create(EXPERIMENT, node.node_id, 1, 1000, spec, [])])
    await node.stop()


@pytest.mark.asyncio
async def test_a_replica_without_its_key_file_is_not_given_a_new_cluster(tmp_path: Path) -> None:
    # cluster.key lost (a restore that leaves secrets out, a user's rm): a plain restart made
    # up a new cluster key for cluster A's replica, without a word; the peer then ran alone,
    # and refused A's own key for good ("holds the replica of another cluster").
    key_a = _key()
    await _member(tmp_path / "d", key_a)
    (tmp_path / "d" / "cluster.key").unlink()
    with pytest.raises(MetaoptError) as caught:
        _node(tmp_path / "d")
    said = str(caught.value)
    assert "cluster.key is missing" in said and "--key" in said and "\n" not in said
    assert not (tmp_path / "d" / "cluster.key").exists()
    again = _node(tmp_path / "d", key_text=key_a)  # its cluster's key starts it
    await again.stop()
    assert (tmp_path / "d" / "cluster.key").read_text().strip() == key_a


@pytest.mark.asyncio
async def test_a_damaged_key_file_is_named_and_the_way_back_is_said(tmp_path: Path) -> None:
    # cluster.key cut short (a full disk, an edit): with no --key the error told the user to
    # copy "the cluster key" again, not naming the file they never typed; given the right
    # key, it was refused as "the replica of another cluster (key fingerprint unreadable)".
    key_a = _key()
    await _member(tmp_path / "d", key_a)
    key_file = tmp_path / "d" / "cluster.key"
    key_file.write_text(key_a[:40] + "\n")
    with pytest.raises(MetaoptError, match=r"cluster\.key is damaged") as caught:
        _node(tmp_path / "d")
    assert "--key" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(MetaoptError, match=r"move cluster\.key aside and start again"):
        _node(tmp_path / "d", key_text=key_a)
    key_file.rename(tmp_path / "cluster.key.damaged")  # as it says
    again = _node(tmp_path / "d", key_text=key_a)
    await again.stop()
