"""A node's suggester over a replicated experiment: what it counts as taken, and crowding."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from crdt import Record
from metaopt._curves import curve_views
from metaopt._records import (
    EVENT,
    TRIAL,
    EventBody,
    ExperimentSpec,
    experiment_record,
    parse_experiment,
)
from metaopt._state import ExperimentState
from metaopt._suggest import NEAR, Suggester
from metaopt.space import Space

ME = b"m" * 16
OTHER = b"o" * 16


def _state(**spec: Any) -> ExperimentState:
    record = experiment_record(
        ExperimentSpec("e", {"x": "uniform(0, 1)"}, command=("t.py",), **spec)
    )
    spec = parse_experiment(record)
    assert spec is not None
    return ExperimentState(record.key, spec)


def _trial(state: ExperimentState, x: float, seq: int, *events: str) -> None:
    body = {"params": {"x": x}, "node": OTHER, "counter": seq}
    trial = Record.create(TRIAL, OTHER, 100 * seq, 1000, body, [state.key])
    state.apply(trial)
    for i, kind in enumerate(events, start=1):
        event = EventBody(trial.key, state.key, kind, OTHER).to_body()
        state.apply(
            Record.create(EVENT, OTHER, 100 * seq + i, 1000 + i, event, [trial.key, state.key])
        )


@pytest.mark.parametrize(("events", "taken"), [
    (("started",), True),
    (("started", "lost"), True),  # run again by whoever claims it: still taken
    (("started", "interrupted"), True),
    (("started", "failed"), False),
])  # fmt: skip
def test_a_trial_that_will_run_again_holds_its_point(events: tuple[str, ...], taken: bool) -> None:
    state = _state()
    _trial(state, 0.25, 1, *events)
    obs = Suggester(state, ME).prepare().obs
    assert obs.pending.shape[0] == (1 if taken else 0)
    assert obs.failed.shape[0] == (0 if taken else 1)


def test_only_a_trial_that_arrived_after_the_draw_and_lies_within_near_crowds_a_point() -> None:
    state = _state()
    _trial(state, 0.5, 1, "started")
    suggester = Suggester(state, ME)
    draw = suggester.prepare()
    assert not suggester.crowded(draw, {"x": 0.5 + NEAR / 2})  # seen: the search avoided it
    _trial(state, 0.8, 2, "started")
    assert not suggester.crowded(draw, {"x": 0.8 + 2 * NEAR})  # arrived, but not next to it
    assert suggester.crowded(draw, {"x": 0.8 + NEAR / 2})
    assert not suggester.crowded(suggester.prepare(), {"x": 0.8 + NEAR / 2})


def test_the_first_point_takes_the_default_values_and_later_ones_are_searched() -> None:
    # default_value= was parsed and then used by nothing: the configuration a user trusts
    # was never measured unless the search happened on it.
    space = {"lr": "loguniform(1e-5, 1, default_value=0.001)", "act": "choices(['a', 'b'],"
             " default_value='b')", "depth": "randint(1, 10)"}  # fmt: skip
    record = experiment_record(ExperimentSpec("e", space, command=("t.py",)))
    spec = parse_experiment(record)
    assert spec is not None
    state = ExperimentState(record.key, spec)
    first, counter = Suggester(state, ME).suggest()
    assert (first["lr"], first["act"], counter) == (0.001, "b", 1)
    # From an empty history only the lead takes them: two peers starting it together took
    # them both, within milliseconds. Once a trial exists, a peer that is not the lead does
    # (the lead had no free slot, say).
    other = Suggester(state, OTHER)
    assert other.compute(other.prepare(lead=False))[0]["lr"] != 0.001
    searched = Record.create(TRIAL, OTHER, 1, 999, {"params": {"lr": 0.5, "act": "a", "depth": 3},
                             "node": OTHER, "counter": 1}, [state.key])  # fmt: skip
    state.apply(searched)
    assert other.compute(other.prepare(lead=False))[0]["lr"] == 0.001
    trial = Record.create(TRIAL, ME, 1, 1000, {"params": first, "node": ME, "counter": 1},
                          [state.key])  # fmt: skip
    state.apply(trial)
    later = [Suggester(state, node).suggest()[0] for node in (ME, OTHER)]
    assert all((p["lr"], p["act"]) != (0.001, "b") for p in later)


def test_each_trial_is_mapped_into_the_unit_cube_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Mapped again at every suggestion and every freeze-thaw decision: 3.5 s of a suggestion's
    # snapshot at 50,000 trials.
    state = _state(max_step=10)
    for i in range(5):
        _trial(state, i / 10, i + 1, "started")
    suggester = Suggester(state, ME)
    mapped: list[object] = []
    to_unit = Space.to_unit

    def counted(space: Space, params: Any) -> Any:
        mapped.append(params)
        return to_unit(space, params)

    monkeypatch.setattr(Space, "to_unit", counted)
    first = suggester.prepare().obs
    _trial(state, 0.9, 6, "started")
    second = suggester.prepare().obs
    assert len(mapped) == 6 and second.pending.shape[0] == 6
    assert np.array_equal(second.pending[:5], first.pending)
    views = curve_views(state, suggester, state.trials())
    assert len(mapped) == 6 and len(views) == 6  # the stopper's curves: from the same points
