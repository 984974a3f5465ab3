"""`metaopt clean --keep 1` keeps the trial `metaopt best` names (ties of one ms)."""

from __future__ import annotations

from crdt import MemoryStore, Record
from metaopt._records import EVENT, EXPERIMENT, TRIAL, EventBody, ExperimentSpec
from metaopt._state import ExperimentState
from metaopt.peer._clean import kept_trials

EXP = Record.create(
    EXPERIMENT, b"n" * 16, 1, 1000, ExperimentSpec("tie", {"x": "uniform(0, 1)"}).to_body(), []
)


def _completed(node: bytes, counter: int, stamp: int, x: float, value: float) -> list[Record]:
    body = {"params": {"x": x}, "node": node, "counter": counter}
    trial = Record.create(TRIAL, node, 10 * counter, stamp, body, [EXP.key])
    event = EventBody(trial.key, EXP.key, "completed", node, step=1, metrics={"objective": value})
    done = Record.create(EVENT, node, 10 * counter + 1, stamp + 5, event.to_body(),
                         [trial.key, EXP.key])  # fmt: skip
    return [trial, done]


def _disagreements(same_node: bool) -> int:
    disagreed = 0
    for i in range(20):
        store = MemoryStore()
        store.add([EXP])
        # Two trials stamped in one millisecond with one value (a discrete metric): one peer
        # starting two slots at once, or two peers.
        a, b = bytes([1 + i]) * 16, bytes([100 + i]) * 16
        store.add(_completed(a, 1, 5000, 0.1 + i / 100, 0.5))
        store.add(_completed(a if same_node else b, 2, 5000, 0.6 + i / 100, 0.5))
        state = ExperimentState.from_store(store, EXP.key)
        assert state is not None and len(state.trials()) == 2
        disagreed += state.best()[0].key != kept_trials(state, 1)[0].key
    return disagreed


def test_clean_keeps_the_trial_best_names_two_nodes_one_millisecond() -> None:
    # `metaopt best` names one trial; `metaopt clean` (default --keep 1) empties its folder.
    assert _disagreements(same_node=False) == 0, "of 20"


def test_clean_keeps_the_trial_best_names_one_node_two_slots_one_millisecond() -> None:
    assert _disagreements(same_node=True) == 0, "of 20"
