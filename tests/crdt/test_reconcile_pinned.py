"""Reconciliation rules a mutation audit of crdt/_reconcile.py found unpinned by the other tests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgpack
import pytest

from crdt import (
    CrdtError,
    Initiator,
    MemoryStore,
    ProtocolError,
    Record,
    SessionBusy,
    SyncConfig,
    VersionVector,
    push_message,
    respond,
    respond_steps,
)
from tests.crdt.test_reconcile import ORIGINS, POOL, TIGHT, keys, make_pool, store_of, sync


def _request(**fields: object) -> bytes:
    message: dict[str, object] = {"k": "sync", "f": bytes(16)}
    message.update(fields)
    return bytes(msgpack.packb(message, use_bin_type=True))


DEFAULT = SyncConfig()


def _reply(store: MemoryStore, config: SyncConfig = DEFAULT, **fields: object) -> Any:
    return msgpack.unpackb(respond(store, _request(**fields), config), raw=False)


def _equivocating_pair() -> tuple[MemoryStore, MemoryStore]:
    """Two replicas with equal version vectors but different sets (an origin reused its seqs)."""
    origin = b"\x0e" * 16
    old = [Record.create("event", origin, s, 1000 + s, {"life": 1}) for s in range(1, 6)]
    new = [Record.create("event", origin, s, 5000 + s, {"life": 2}) for s in range(1, 6)]
    a, b = store_of(old + POOL[:10]), store_of(new + POOL[:10])
    assert a.version_vector() == b.version_vector() and keys(a) != keys(b)
    return a, b


def test_config_refuses_fewer_ranges_than_a_split_needs() -> None:
    """Pins max_ranges >= 2 * fanout + 2 (not just 2 * fanout): with fanout 2, 4 or 5 ranges
    a message are refused, 6 accepted."""
    for max_ranges in (4, 5):
        with pytest.raises(ValueError, match="max_ranges"):
            SyncConfig(fanout=2, initial_fanout=2, leaf_size=1, max_ranges=max_ranges)
    assert SyncConfig(fanout=2, initial_fanout=2, leaf_size=1, max_ranges=6).max_ranges == 6


def test_a_request_holding_a_map_in_a_field_is_refused() -> None:
    """Pins the map count (the message is the only map): one nested map is already refused,
    so no field can smuggle containers past the list and item counts."""
    store = store_of(POOL[:3])
    with pytest.raises(ProtocolError, match="undecodable"):
        respond(store, _request(x={}))
    with pytest.raises(ProtocolError, match="undecodable"):
        respond(store, _request(x={"a": 1}))


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "backstop"])
@pytest.mark.parametrize("direction", ["pull", "push"])
def test_a_record_bigger_than_max_message_bytes_still_travels_alone(
    fast_path: bool, direction: str
) -> None:
    """Pins "a bigger record goes alone" (the empty-batch exception in _Batch.take and in
    _serve_runs): a 1 KB record under a 300-byte message cap is sent by run, by push and by
    key; without it the record never moved and the session gave up, every time."""
    big = Record.create("blob", b"\x0b" * 16, 1, 1000, {"pad": b"x" * 1000})
    config = replace(TIGHT, fast_path=fast_path)
    assert len(big.data) > config.max_message_bytes
    holder, empty = store_of([big, *POOL[:3]]), store_of(POOL[:3])
    stats = sync(empty, holder, config) if direction == "pull" else sync(holder, empty, config)
    assert stats.converged
    assert big.key in keys(empty)
    if fast_path:  # by run or by push, not left for a later round's backstop to find
        assert stats.phase == "fast" and stats.rounds == 1


def test_records_filling_max_message_bytes_exactly_go_in_one_message() -> None:
    """Pins the byte cap as inclusive (a record is refused only past it): two asked-for
    records whose sizes add up to max_message_bytes both go now, none is deferred to "h"."""
    r1, r2 = POOL[0], POOL[1]
    cap = len(r1.data) + len(r2.data)
    store = store_of(POOL[:5])
    reply = _reply(store, SyncConfig(max_message_bytes=cap), w=r1.key + r2.key)
    assert sorted(reply["d"]) == sorted([r1.data, r2.data]) and "h" not in reply
    reply = _reply(store, SyncConfig(max_message_bytes=cap - 1), w=r1.key + r2.key)
    assert reply["d"] == [r1.data] and reply["h"] == r2.key


def test_runs_and_a_vector_asked_together_share_one_message_cap() -> None:
    """Pins _serve_runs writing back the bytes it used: records served for asked runs and
    then for the vector's gaps stay within max_message_bytes together (the second pass saw
    an empty batch and filled a second message's worth)."""
    a_runs = [
        Record.create("event", ORIGINS[0], s, 1000 + s, {"pad": b"a" * 80}) for s in range(1, 11)
    ]
    b_runs = [
        Record.create("event", ORIGINS[1], s, 1000 + s, {"pad": b"b" * 80}) for s in range(1, 11)
    ]
    store = store_of(a_runs + b_runs)
    cap = 5 * len(a_runs[0].data)
    theirs = VersionVector()
    theirs.add_run(ORIGINS[0], 1, 10)  # they hold all of origin 0, none of origin 1
    reply = _reply(
        store, SyncConfig(max_message_bytes=cap), g=[[ORIGINS[0], 1, 10]], v=theirs.to_wire()
    )
    assert sum(map(len, reply["d"])) <= cap and reply["m"] is True


def test_a_response_that_leaves_asked_for_runs_out_says_more() -> None:
    """Pins the wire's "m" (more): records of asked-for runs, or of the requester's gaps,
    that did not fit are announced, and a response that fitted them all says nothing."""
    run = [Record.create("event", ORIGINS[0], s, 1000 + s, {"s": s}) for s in range(1, 11)]
    store = store_of(run)
    config = SyncConfig(max_records=3)
    by_run = _reply(store, config, g=[[ORIGINS[0], 1, 10]])
    assert len(by_run["d"]) == 3 and by_run["m"] is True
    by_vector = _reply(store, config, v=VersionVector().to_wire())
    assert len(by_vector["d"]) == 3 and by_vector["m"] is True
    fitted = _reply(store, config, g=[[ORIGINS[0], 1, 3]])
    assert len(fitted["d"]) == 3 and "m" not in fitted


def test_a_digest_opening_that_finds_equal_vectors_gets_the_backstop_not_the_vector() -> None:
    """Pins send_vector = not same_vectors for a digest opening: vectors equal and sets apart
    (an equivocation) start the backstop at once, without shipping a vector (70 KB for 3,000
    experiments) the initiator already holds."""
    a, b = _equivocating_pair()
    reply = _reply(b, f=a.fingerprint().digest(), vh=a.version_vector().digest(), b=True)
    assert "r" in reply and "v" not in reply


def test_a_vector_too_long_for_the_peer_starts_the_backstop_in_the_first_reply() -> None:
    """Pins "unlistable or ..." in backstop_now: a responder whose vector the peer would refuse
    (past max_origins) starts the backstop in its first reply instead of spending a round."""
    config = SyncConfig(max_origins=3)
    store = store_of(POOL)  # 4 origins
    reply = _reply(store, config, vh=bytes(16), b=True)
    assert "r" in reply and "v" not in reply


def test_the_backstop_waits_while_asked_for_records_are_under_way() -> None:
    """Pins "and not batch.data": equal vectors and records going out in this reply do not
    start the backstop yet (its ranges would count those records as differences again)."""
    store = store_of(POOL[:10])
    reply = _reply(store, w=POOL[0].key, vh=store.version_vector().digest(), b=True)
    assert reply["d"] == [POOL[0].data] and "r" not in reply


def test_the_backstop_starts_only_when_the_request_asks_for_it() -> None:
    """Pins the "b" flag: a request without it (one asking by run, or a peer that does not
    speak the backstop) gets no ranges however the sets differ."""
    store = store_of(POOL[:10])
    digest = store.version_vector().digest()
    assert "r" not in _reply(store, vh=digest)
    assert "r" in _reply(store, vh=digest, b=True)


def test_a_session_opens_with_the_whole_vector_up_to_open_vector_origins_inclusive() -> None:
    """Pins len(vector) <= open_vector_origins: at exactly that many origins the opening still
    carries the vector (the responder can answer with records at once), one more the digest."""
    store = store_of(POOL)  # 4 origins
    at_limit = msgpack.unpackb(Initiator(store, SyncConfig(open_vector_origins=4)).start())
    assert "v" in at_limit and "vh" not in at_limit
    past = msgpack.unpackb(Initiator(store, SyncConfig(open_vector_origins=3)).start())
    assert "vh" in past and "v" not in past


def test_receive_refuses_a_session_not_started_or_already_done() -> None:
    """Pins the started check: a response fed to a session before start() is a local error,
    not taken as the answer to a request that was never sent."""
    in_sync = msgpack.packb({"s": True, "f": bytes(16)})
    session = Initiator(MemoryStore())
    with pytest.raises(CrdtError, match="started"):
        session.receive(in_sync)
    session.start()
    assert session.receive(in_sync) is None and session.done
    with pytest.raises(CrdtError, match="not done"):
        session.receive(in_sync)


@pytest.mark.parametrize("s", [None, 1, "yes"], ids=["missing", "int", "str"])
def test_a_response_that_does_not_say_whether_in_sync_is_refused(s: object) -> None:
    """Pins the "s" check: a response without a boolean "s" is a ProtocolError and stores
    nothing, rather than read as "not in sync" and acted on."""
    store = MemoryStore()
    session = Initiator(store)
    session.start()
    response: dict[str, object] = {"f": bytes(16), "d": [POOL[0].data]}
    if s is not None:
        response["s"] = s
    with pytest.raises(ProtocolError, match="in sync"):
        session.receive(msgpack.packb(response, use_bin_type=True))
    assert len(store) == 0


def test_a_busy_responder_refuses_a_sessions_request_but_takes_a_push() -> None:
    """Pins busy=True: a sync request is refused with SessionBusy and nothing it carried is
    stored (one session between two peers at a time); an eager push is still stored."""
    store = MemoryStore()
    request = _request(p=[POOL[0].data])
    with pytest.raises(SessionBusy):
        for _ in respond_steps(store, request, busy=True):
            pass
    assert len(store) == 0
    steps = respond_steps(store, push_message(POOL[:2]), busy=True)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            assert msgpack.unpackb(done.value) == {"k": "ack", "n": 2}
            break
    assert keys(store) == {POOL[0].key, POOL[1].key}


def test_max_round_trips_stops_a_session_that_keeps_reopening() -> None:
    """Pins the hard stop at a fresh round: with max_rounds out of the way, a peer that never
    agrees gets exactly max_round_trips responses read, not one more."""
    store = store_of(POOL[:5])
    session = Initiator(store, SyncConfig(max_rounds=100, max_round_trips=2))
    message: bytes | None = session.start()
    stubborn = msgpack.packb({"s": False, "f": b"\x07" * 16})
    count = 0
    while message is not None and count < 50:
        count += 1
        message = session.receive(stubborn)
    assert count == 2 and session.stats.phase == "gave-up" and not session.stats.converged


def _answered_alike(session: Initiator, reply: dict[str, Any]) -> list[dict[str, Any]]:
    """The requests of a session whose peer answers each with reply, until it ends (at most
    1,000 round trips)."""
    requests: list[dict[str, Any]] = []
    message: bytes | None = session.start()
    while message is not None and len(requests) < 1000:
        requests.append(msgpack.unpackb(message))
        message = session.receive(msgpack.packb(reply))
    return requests


@pytest.mark.parametrize("max_idle", [0, 3])
def test_max_idle_round_trips_allows_exactly_that_many_idle_round_trips(max_idle: int) -> None:
    """Pins idle > max_idle_round_trips: a peer that lists a key it has ("h") but never sends
    it is asked max_idle + 1 times, then the session gives up."""
    session = Initiator(MemoryStore(), SyncConfig(max_idle_round_trips=max_idle))
    teasing = {"s": False, "f": b"\x07" * 16, "h": POOL[0].key}
    assert len(_answered_alike(session, teasing)) == max_idle + 1
    assert session.stats.phase == "gave-up"


def test_a_peer_that_never_takes_what_it_is_pushed_is_given_up_on_when_idle() -> None:
    """A peer whose vector never lists the records pushed to it (a lie, or a store that
    drops them): each answer queued the same runs again, and a push of the same records
    counted as moving, so the session went to max_round_trips (65,536 round trips, each record
    pushed again every time; one such peer held every caller's anti-entropy for minutes)."""
    session = Initiator(store_of(POOL[:5]), SyncConfig(max_idle_round_trips=3))
    requests = _answered_alike(session, {"s": False, "f": b"\x07" * 16, "v": []})
    pushes = sum(bool(request.get("p")) for request in requests)
    assert session.done and session.stats.phase == "gave-up", f"{pushes} pushes and on"
    assert pushes == 1  # (a push it did not take, it never takes: each record went once)


def test_a_peer_that_asks_again_and_again_for_a_record_it_never_takes_is_given_up_on() -> None:
    """Asked for by key, a record is pushed each time; a push counted as moving however
    often the same one went, so a peer asking for it for good held the session to
    max_round_trips. Only a push the peer took (its fingerprint moved) is progress."""
    session = Initiator(store_of(POOL[:1]), SyncConfig(max_idle_round_trips=3))
    asking = {"s": False, "f": b"\x07" * 16, "w": POOL[0].key}
    assert len(_answered_alike(session, asking)) == 3 + 1
    assert session.stats.phase == "gave-up"


@pytest.mark.parametrize("seed", [30, 106])
def test_a_push_taken_as_a_round_ends_is_progress(seed: int) -> None:
    """A session under churn (a record written to one side before half the round trips)
    needs several rounds; a push the peer took in a round's last round trip was not counted,
    and such sessions gave up on max_idle_round_trips one round trip short (a review: these
    seeds of 200 with max_idle_round_trips=3; 12 of 200 in a fuzz)."""
    import random

    rng = random.Random(seed)
    origins = [bytes([i]) * 16 for i in range(1, 7)]
    seqs = dict.fromkeys(origins, 0)
    pool = []
    for i in range(80):
        origin = rng.choice(origins)
        seqs[origin] += 1
        pool.append(
            Record.create("event", origin, seqs[origin], 1000 + rng.randrange(30), {"i": i})
        )
    stores = [MemoryStore(), MemoryStore()]
    for record in pool:
        for store in stores:
            if rng.random() < 0.5:
                store.add([record])
    twin = rng.choice(pool)  # (and one equivocation)
    stores[rng.randrange(2)].add(
        [Record.create("event", twin.origin, twin.seq, twin.time, {"i": -1})]
    )
    a, b = rng.sample(range(2), 2)
    config = SyncConfig(max_idle_round_trips=3)
    session = Initiator(stores[a], config)
    message: bytes | None = session.start()
    n = 80
    while message is not None and session.stats.round_trips < 1000:
        if rng.random() < 0.5:
            side = rng.randrange(2)
            seqs[origins[side]] += 1
            n += 1
            stamp = 1000 + rng.randrange(30)
            written = Record.create("event", origins[side], seqs[origins[side]], stamp, {"i": n})
            stores[side].add([written])
        message = session.receive(respond(stores[b], message, config))
    assert session.stats.converged, (session.stats.phase, session.stats.round_trips)


@pytest.mark.parametrize("seed", range(3))
def test_a_catch_up_that_another_session_delivers_faster_still_converges(seed: int) -> None:
    """A restarted peer pulls its history from B while C's session pushes it the same
    history, 1-3 round trips to each of its own: B's answers then bring records C delivered
    meanwhile. Counted as no progress (only records new here counted), 65 such round trips
    in a row made the session give up half done, not covering B, and the peer waited on
    (a review: 21 of 21; scaled down here from ~2M records of 16,384 a message)."""
    import random

    rng = random.Random(seed)
    config = SyncConfig(max_records=100)
    pool = make_pool(20_000, seed=5)
    a, b, c = MemoryStore(), store_of(pool), store_of(pool)
    mine, theirs = Initiator(a, config), Initiator(c, config)
    request: bytes | None = mine.start()
    their_request: bytes | None = theirs.start()
    for _ in range(5_000):
        if request is None:
            break
        for _ in range(rng.randint(1, 3)):
            if their_request is not None:
                their_request = theirs.receive(respond(a, their_request, config))
        request = mine.receive(respond(b, request, config))
    assert mine.done and mine.stats.converged, (mine.stats.phase, mine.stats.round_trips)


def test_a_push_the_peer_takes_is_progress_however_long_the_catch_up() -> None:
    """Measured by the peer's answer: a push it stored moved its fingerprint, so a long
    catch-up of one record a round trip (pushed, nothing received) never goes idle."""
    full, empty = store_of(POOL[:40]), MemoryStore()
    stats = sync(full, empty, SyncConfig(max_records=1, max_idle_round_trips=1))
    assert stats.converged and stats.round_trips >= 40 and keys(empty) == keys(full)


def test_requests_in_the_backstop_phase_carry_no_vector_digest() -> None:
    """Pins "not self._backstop": once the ranges are under way, requests stop offering the
    vector's digest (which made the responder ship its whole vector every round trip)."""
    a, b = _equivocating_pair()
    session = Initiator(a, TIGHT)
    message: bytes | None = session.start()
    backstop = False
    while message is not None:
        request = msgpack.unpackb(message)
        if backstop:
            assert "vh" not in request and "v" not in request
        reply = respond(b, message, TIGHT)
        backstop = backstop or "r" in msgpack.unpackb(reply)
        message = session.receive(reply)
    assert backstop and session.stats.converged and keys(a) == keys(b)


def test_a_record_carried_over_to_the_next_request_is_sent_there() -> None:
    """Pins the carry in Initiator._fill: records asked for by key that did not fit one request
    go in the next ones, none skipped (the carried one was dropped, and only a later round's
    backstop found it again)."""
    wanted = POOL[:3]
    store = store_of(POOL[:10])
    session = Initiator(store, SyncConfig(max_records=1))
    session.start()
    asked = msgpack.packb({"s": False, "f": b"\x07" * 16, "w": b"".join(r.key for r in wanted)})
    nothing = msgpack.packb({"s": False, "f": b"\x07" * 16})
    pushed: list[bytes] = []
    message = session.receive(asked)
    for _ in range(3):
        assert message is not None
        pushed += msgpack.unpackb(message).get("p", [])
        message = session.receive(nothing)
    assert pushed == [r.data for r in wanted]


def test_a_round_cut_short_for_room_frees_only_itself_from_max_rounds() -> None:
    """Pins the reset of "left out" and "moved" at each fresh round: after one round that moved
    a record and said "t", a peer that then never agrees is still given up on after
    max_rounds counted rounds (the flags stuck, and every later round went uncounted)."""
    session = Initiator(MemoryStore(), SyncConfig(max_rounds=3))
    message: bytes | None = session.start()
    honest = msgpack.packb({"s": False, "f": b"\x07" * 16, "d": [POOL[0].data], "t": True})
    stubborn = msgpack.packb({"s": False, "f": b"\x07" * 16})
    count = 0
    while message is not None and count < 100:
        count += 1
        message = session.receive(honest if count == 1 else stubborn)
    assert count == 3 + 1 and session.stats.phase == "gave-up"


def test_a_round_that_moved_records_early_stays_free_after_idle_round_trips() -> None:
    """Pins "moved" as sticky within a round: records received at its start, then a round trip
    moving nothing, then the end of a round cut short ("t") is still a free round (with
    max_rounds=1 the session reopens once more instead of giving up)."""
    session = Initiator(MemoryStore(), SyncConfig(max_rounds=1))
    message: bytes | None = session.start()
    replies: list[dict[str, object]] = [
        {"d": [POOL[0].data], "h": POOL[1].key, "t": True},  # moves one, lists one more
        {"h": POOL[2].key},  # moves nothing
    ]
    count = 0
    while message is not None and count < 20:
        reply: dict[str, object] = replies[count] if count < len(replies) else {}
        count += 1
        message = session.receive(msgpack.packb({"s": False, "f": b"\x07" * 16, **reply}))
    assert session.stats.rounds == 2 and count == 4 and session.stats.phase == "gave-up"


def test_a_session_that_received_records_is_not_called_equal() -> None:
    """Pins the "equal" phase as "nothing moved": a catch-up finished in its first round trip
    (the responder's records made the sets equal) reports "fast"."""
    empty = MemoryStore()
    stats = sync(empty, store_of(POOL[:5]))
    assert stats.round_trips == 1 and stats.records_received == 5
    assert stats.phase == "fast"


def test_a_request_with_a_non_string_field_name_is_refused() -> None:
    """Pins strict_map_key: an integer field name is a ProtocolError, not a field silently
    ignored (msgpack's strict_map_key lets str and bytes names through)."""
    store = store_of(POOL[:3])
    for key in (1, -1, None):
        request = msgpack.packb({"k": "sync", "f": bytes(16), key: 2}, use_bin_type=True)
        with pytest.raises(ProtocolError, match="undecodable"):
            respond(store, request)


def test_a_want_for_a_key_this_replica_does_not_hold_is_skipped() -> None:
    """Pins the "data is not None" guard in Initiator._pending: a peer asking for a key this
    replica lacks (a confused or stale peer) gets the records that exist, and the session
    goes on, rather than failing on a missing record."""
    store = store_of(POOL[:3])
    session = Initiator(store)
    session.start()
    unknown = POOL[50].key
    asked = msgpack.packb(
        {"s": False, "f": b"\x07" * 16, "w": unknown + POOL[0].key}, use_bin_type=True
    )
    request = session.receive(asked)
    assert request is not None and msgpack.unpackb(request)["p"] == [POOL[0].data]
