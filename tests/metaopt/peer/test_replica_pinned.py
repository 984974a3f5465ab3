"""Replica behaviour a mutation audit found unpinned: quiet times of trials that arrive late
or with their experiment, submission stamps capped at arrival, folding without a loop or
after a failed fold, load's bookkeeping, and id lookups."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from crdt import MemoryStore, Record
from crdt._store import notify
from metaopt._records import EVENT, EXPERIMENT, TRIAL, EventBody, ExperimentSpec
from metaopt.peer._replica import Replica

NODE = b"n" * 16
OTHER = b"o" * 16


def _experiment(name: str = "e", seq: int = 1, time: int = 1000, nonce: str = "") -> Record:
    spec = ExperimentSpec(name, {"x": "uniform(0, 1)"}, nonce=nonce)
    return Record.create(EXPERIMENT, NODE, seq, time, spec.to_body(), [])


def _trial(exp: Record, seq: int, node: bytes = NODE) -> Record:
    body = {"params": {"x": seq / 1000}, "node": node, "counter": seq}
    return Record.create(TRIAL, node, seq, 1001, body, [exp.key])


def _event(exp: Record, trial: Record, seq: int, kind: str = "heartbeat") -> Record:
    body = EventBody(trial.key, exp.key, kind, OTHER).to_body()
    return Record.create(EVENT, OTHER, seq, 2000 + seq, body, [trial.key, exp.key])


class _Redelivering(MemoryStore):
    """A MemoryStore that can tell its subscribers of records again."""

    def redeliver(self, records: list[Record]) -> None:
        notify(self._subscribers, records)


def test_a_trial_arriving_long_after_the_opening_is_quiet_from_its_arrival() -> None:
    """A new trial record (another peer just created it) is news: counted quiet since the
    peer opened, a trial created an hour later read as an hour silent and was taken over."""
    mono = [5.0]
    store = MemoryStore()
    exp = _experiment()
    store.add([exp])
    replica = Replica(store, monotonic=lambda: mono[0])
    mono[0] += 3600.0
    trial = _trial(exp, 2, OTHER)
    store.add([trial])
    view = replica.experiments[exp.key].trial(trial.key)
    assert view is not None and replica.quiet_ms(view) == 0


def test_the_trials_of_an_experiment_arriving_after_them_are_quiet_from_its_arrival() -> None:
    """A catching-up peer may get an experiment after its trials: they are news when the
    experiment arrives, not silent since this peer opened (all taken for lost at once)."""
    mono = [5.0]
    store = MemoryStore()
    replica = Replica(store, monotonic=lambda: mono[0])
    exp = _experiment()
    trial = _trial(exp, 2, OTHER)
    mono[0] += 600.0
    store.add([trial, _event(exp, trial, 3)])
    mono[0] += 10.0
    store.add([exp])
    view = replica.experiments[exp.key].trial(trial.key)
    assert view is not None and replica.quiet_ms(view) == 0


def test_a_malformed_event_does_not_count_as_news_of_its_trial() -> None:
    """Only a record the fold takes refreshes a trial's quiet time: garbage linked to a trial
    (a broken or hostile peer's) must not keep a dead runner's trial from being taken over."""
    mono = [5.0]
    store = MemoryStore()
    exp = _experiment()
    trial = _trial(exp, 2, OTHER)
    store.add([exp, trial])
    replica = Replica(store, monotonic=lambda: mono[0])
    mono[0] += 100.0
    junk = Record.create(EVENT, OTHER, 9, 3000, {"junk": 1}, [trial.key, exp.key])
    store.add([junk])
    view = replica.experiments[exp.key].trial(trial.key)
    assert view is not None and replica.quiet_ms(view) == 100_000


def test_an_experiment_heard_of_again_is_not_folded_again() -> None:
    """A store may tell of a record again: the experiment's fold stays the same object, and its
    trials' quiet times are not reset (a dead runner's trial would never be taken over)."""
    mono = [5.0]
    store = _Redelivering()
    exp = _experiment()
    trial = _trial(exp, 2, OTHER)
    store.add([exp, trial])
    replica = Replica(store, monotonic=lambda: mono[0])
    state = replica.experiments[exp.key]
    mono[0] += 100.0
    store.redeliver([exp])
    assert replica.experiments[exp.key] is state
    view = state.trial(trial.key)
    assert view is not None and replica.quiet_ms(view) == 100_000


def test_a_submission_stamp_is_capped_at_its_arrival_and_at_the_opening() -> None:
    """The turns count from an experiment's submission: a stamp from a clock running ahead is
    capped at its arrival here (or this node's opening, for one held then)."""
    now = [100.0]
    store = MemoryStore()
    ahead = _experiment("a", 1, 500_000)
    store.add([ahead])
    replica = Replica(store, lambda: now[0])
    assert replica.submitted_ms(ahead.key) == 100_000
    now[0] = 200.0
    later = _experiment("b", 2, 900_000)
    store.add([later])
    assert replica.submitted_ms(later.key) == 200_000
    honest = _experiment("c", 3, 150_000)
    store.add([honest])
    assert replica.submitted_ms(honest.key) == 150_000
    assert replica.submitted_ms(b"\0" * 32) == 0


@pytest.mark.asyncio
async def test_a_deferred_replica_knows_its_experiments_stamps_once_loaded() -> None:
    """Loaded a step at a time, the experiments held at opening keep their submission times
    (capped at the opening) and their order among namesakes."""
    store = MemoryStore()
    first = _experiment("sweep", 1, 1000, nonce="1")
    second = _experiment("sweep", 2, 9_000_000, nonce="2")  # stamped ahead of the opening
    store.add([first, second])
    replica = Replica(store, lambda: 100.0, defer=True)
    await replica.load()
    assert replica.submitted_ms(first.key) == 1000
    assert replica.submitted_ms(second.key) == 100_000
    assert [s.key for s in replica.named("sweep")] == [second.key, first.key]
    replica.close()


def test_namesakes_stamped_alike_are_ordered_by_key_on_every_peer() -> None:
    """Two submissions of a name in the same millisecond: which one the name means is decided
    by key, the same on every peer whatever order they arrived in."""
    twins = [_experiment("sweep", 1 + i, 5000, nonce=str(i)) for i in range(4)]
    expected = sorted((r.key for r in twins), reverse=True)
    for order in (twins, twins[::-1], twins[1::2] + twins[::2]):
        store = MemoryStore()
        replica = Replica(store)
        for record in order:
            store.add([record])
        assert [s.key for s in replica.named("sweep")] == expected
        assert replica.find_experiment("sweep").key == expected[0]  # type: ignore[union-attr]


def test_ids_are_found_whatever_their_case_and_surrounding_spaces() -> None:
    """Ids are shown in lower-case hex; one typed in upper case or pasted with spaces finds
    the same experiment or trial."""
    store = MemoryStore()
    exp = _experiment()
    trial = _trial(exp, 2)
    store.add([exp, trial])
    replica = Replica(store)
    for text in (exp.key.hex()[:8].upper(), f" {exp.key.hex()[:8]} \n"):
        assert replica.find_experiment(text).key == exp.key  # type: ignore[union-attr]
    assert replica.find_experiment(" e ").key == exp.key  # type: ignore[union-attr]
    for text in (trial.key.hex()[:8].upper(), f" {trial.key.hex()[:8]} "):
        found = replica.find_trial(text)
        assert found is not None and found[1] == trial.key


def test_an_experiment_with_a_long_history_is_folded_at_once_without_an_event_loop() -> None:
    """With no event loop (the offline commands), a fold longer than fold_step cannot go on in
    a task: it is done at once and the experiment listed."""
    store = MemoryStore()
    replica = Replica(store, fold_step=3)
    exp = _experiment()
    trials = [_trial(exp, 2 + i) for i in range(10)]
    store.add(trials)
    store.add([exp])
    assert len(replica.experiments[exp.key]) == 10


@pytest.mark.asyncio
async def test_an_experiment_whose_fold_failed_is_folded_when_heard_of_again() -> None:
    """A late fold that failed (the store's fault) leaves the experiment as if it had not
    arrived: heard of again, it is folded and listed."""

    class _Flaky(_Redelivering):
        fail = True

        def linked(self, key: bytes) -> Iterator[Record]:
            for i, record in enumerate(super().linked(key)):
                if self.fail and i == 5:
                    raise OSError("a read failed")
                yield record

    store = _Flaky()
    replica = Replica(store, fold_step=2)
    exp = _experiment()
    store.add([_trial(exp, 2 + i) for i in range(10)])
    store.add([exp])
    for _ in range(20):
        await asyncio.sleep(0)
    assert exp.key not in replica.experiments
    store.fail = False
    told: list[bytes] = []
    replica.listen(lambda new: told.extend(r.key for r in new))
    store.redeliver([exp])
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(replica.experiments[exp.key]) == 10 and told == [exp.key]
    replica.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("held", [200, 210])
async def test_load_counts_each_record_it_folded_once(held: int) -> None:
    """`peer status` shows load's progress as records folded of the store's: exactly the
    records held, whether or not they fill the last step."""
    store = MemoryStore()
    exp = _experiment()
    store.add([exp, *(_trial(exp, 2 + i) for i in range(held))])
    replica = Replica(store, fold_step=40, defer=True)
    await replica.load()
    assert replica.folded_records == held
    replica.close()


def test_an_experiment_id_needs_four_characters_to_be_looked_up() -> None:
    """Three hex digits are refused (the API says how long an id must be), not matched: a
    short prefix would find some other experiment the user did not mean."""
    store = MemoryStore()
    exp = _experiment()
    store.add([exp])
    replica = Replica(store)
    assert replica.find_experiment(exp.key.hex()[:3]) is None
    assert replica.find_experiment(exp.key.hex()[:4]).key == exp.key  # type: ignore[union-attr]


def test_a_replica_told_never_to_freeze_never_does_as_records_arrive() -> None:
    """freeze_every=0 means never: records folded on arrival do not freeze the collector's
    objects either (only the opening's fold was covered)."""
    store = MemoryStore()
    exp = _experiment()
    store.add([exp])
    replica = Replica(store, freeze_every=0)
    gc.unfreeze()
    try:
        store.add([_trial(exp, 2 + i) for i in range(50)])
        store.add([_trial(exp, 100)])
        assert gc.get_freeze_count() == 0 and len(replica.experiments[exp.key]) == 51
    finally:
        gc.unfreeze()


@pytest.mark.asyncio
async def test_closing_a_replica_stops_its_folds_under_way() -> None:
    """A peer stopping mid-fold cancels the fold: left running, it read a closed store and
    logged a failure (or folded on into a replica no longer served)."""
    store = MemoryStore()
    replica = Replica(store, fold_step=2)
    exp = _experiment()
    store.add([_trial(exp, 2 + i) for i in range(40)])
    store.add([exp])
    await asyncio.sleep(0)
    replica.close()
    for _ in range(40):
        await asyncio.sleep(0)
    assert exp.key not in replica.experiments
