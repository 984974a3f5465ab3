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
from metaopt._suggest import NEAR, Suggester, _words, params_key, stream
from metaopt.space import Space

ME = b"m" * 16
OTHER = b"o" * 16
# Two defaults: the point a user trusts is lr=0.001, act='b' (depth searched).
DEFAULTS = {"lr": "loguniform(1e-5, 1, default_value=0.001)", "act": "choices(['a', 'b'],"
            " default_value='b')", "depth": "randint(1, 10)"}  # fmt: skip


def _state(space: dict[str, str] | None = None, **spec: Any) -> ExperimentState:
    record = experiment_record(
        ExperimentSpec("e", space or {"x": "uniform(0, 1)"}, command=("t.py",), **spec)
    )
    parsed = parse_experiment(record)
    assert parsed is not None
    return ExperimentState(record.key, parsed)


def _trial(state: ExperimentState, x: float | dict[str, Any], seq: int, *events: str) -> None:
    """A trial of OTHER at ``x`` (or at these params), and its events."""
    body = {"params": {"x": x} if isinstance(x, float) else x, "node": OTHER, "counter": seq}
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
    state = _state(DEFAULTS)
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


class _Fixed:
    """An algorithm that always proposes the same unit point (a deterministic optimiser that
    lands on a face of the cube, or keeps returning a known point)."""

    name = "fixed"

    def __init__(self, u: list[float]) -> None:
        self.u = np.asarray([u], dtype=np.float64)

    def suggest(self, space: Any, obs: Any, rng: np.random.Generator, n: int = 1) -> np.ndarray:
        return self.u.copy()


def test_a_points_identity_does_not_depend_on_the_order_of_its_params() -> None:
    # A trial submitted by hand as y=..., x=... is the same point as x=..., y=...: else the
    # search could record it again as new.
    assert params_key({"x": 1, "y": "a"}) == params_key({"y": "a", "x": 1})


def test_two_nodes_never_share_a_stream_and_a_second_look_draws_afresh() -> None:
    # Sharing a stream, two peers would draw the same points; a second look after crowding
    # on the first's stream would draw the crowded point again.
    e = b"e" * 32
    first = stream(0, ME, e, 1).random(4)
    assert not np.array_equal(first, stream(0, OTHER, e, 1).random(4))
    assert not np.array_equal(first, stream(0, ME, e, 1, look=1).random(4))
    # The first look keeps the stream it had before looks existed (same seed, same points).
    legacy = np.random.default_rng(np.random.SeedSequence([0, *_words(ME), *_words(e[:16]), 1]))
    assert np.array_equal(first, legacy.random(4))


def test_two_nodes_asking_from_one_history_draw_different_points() -> None:
    # With one stream for all, two peers asking at once would record the same point.
    state = _state(algorithm="random")
    points = {Suggester(state, node).suggest()[0]["x"] for node in (ME, OTHER)}
    assert len(points) == 2


def test_a_second_look_after_crowding_draws_another_point() -> None:
    state = _state(algorithm="random")
    s = Suggester(state, ME)
    assert s.compute(s.prepare())[0] != s.compute(s.prepare(look=1))[0]


def test_points_on_a_face_of_the_cube_are_nudged_inward_and_apart_per_node() -> None:
    # Two peers running the same deterministic optimiser on one history land on the same
    # face point: unnudged they record it twice, nudged outward it leaves the space.
    state = _state()
    for face in (0.0, 1.0):
        xs = [Suggester(state, n, algorithm=_Fixed([face])).suggest()[0]["x"] for n in (ME, OTHER)]
        assert xs[0] != xs[1]
        assert all(0.0 < x < 1.0 and abs(x - face) < 1e-8 for x in xs)


def test_a_killed_trials_point_is_a_failed_one_to_the_search() -> None:
    # Not among the failed, an early-stopped point would be drawn again and again.
    state = _state()
    _trial(state, 0.25, 1, "started", "killed")
    obs = Suggester(state, ME).prepare().obs
    assert obs.failed.shape[0] == 1 and obs.pending.shape[0] == 0


def test_the_history_follows_a_trial_whose_state_changes_after_it_was_drawn() -> None:
    # Each trial's row is kept while its view stays the same object: a trial killed here
    # whose result arrives later (a result outranks a verdict) moves to the completed rows.
    state = _state()
    _trial(state, 0.25, 1, "started")
    body = {"params": {"x": 0.75}, "node": OTHER, "counter": 2}
    trial = Record.create(TRIAL, OTHER, 200, 1000, body, [state.key])
    state.apply(trial)
    suggester = Suggester(state, ME)
    obs = suggester.prepare().obs
    assert (len(obs.X), len(obs.pending)) == (0, 2)

    def event(seq: int, stamp: int, kind: str, **kw: Any) -> None:
        body = EventBody(trial.key, state.key, kind, OTHER, **kw).to_body()
        state.apply(Record.create(EVENT, OTHER, seq, stamp, body, [trial.key, state.key]))

    event(201, 1001, "started")
    event(203, 1005, "killed")
    obs = suggester.prepare().obs
    assert (len(obs.X), len(obs.pending), obs.failed.tolist()) == (0, 1, [[0.75]])
    event(202, 1003, "completed", metrics={"objective": 0.5})
    obs = suggester.prepare().obs
    assert obs.X.tolist() == [[0.75]] and obs.Y.tolist() == [[0.5]] and len(obs.failed) == 0
    _trial(state, 0.5, 3, "started")  # and a new trial joins the history
    assert len(suggester.prepare().obs.pending) == 2
    assert suggester.prepare().known == {params_key({"x": x}) for x in (0.25, 0.75, 0.5)}


def test_defaults_count_as_measured_only_when_one_trial_carries_them_all() -> None:
    # A trial with one of two defaults is not the configuration the user trusts: taken for
    # it, that configuration would never be measured.
    state = _state(DEFAULTS)
    _trial(state, {"lr": 0.5, "act": "b", "depth": 3}, 1, "started")
    s = Suggester(state, OTHER)
    params = s.compute(s.prepare(lead=False))[0]
    assert (params["lr"], params["act"]) == (0.001, "b")


@pytest.mark.parametrize("other", [1, True])
def test_a_trial_of_an_equal_choice_of_another_type_does_not_carry_the_default(
    other: object,
) -> None:
    # 1, 1.0 and True are three choices of choices([1, 1.0, True]), yet a trial of 1 (or
    # True) made the default 1.0 count as measured: it never was.
    state = _state({"c": "choices([1, 1.0, True], default_value=1.0)", "y": "uniform(0, 1)"})
    _trial(state, {"c": other, "y": 0.5}, 1, "started")
    s = Suggester(state, OTHER)
    params = s.compute(s.prepare(lead=False))[0]
    assert params["c"] == 1.0 and type(params["c"]) is float


def test_a_counter_forged_under_this_node_at_the_last_value_is_not_followed() -> None:
    # A trial any key holder wrote under this node's id with counter 2**53 - 1 left none to
    # write with: each trial this node wrote next was refused by every reader, and a peer's
    # search failed on it at every restart. One forged lower is followed (numbers skipped,
    # never one reused).
    from metaopt._records import MAX_COUNTER

    state = _state()
    for seq, counter in ((1, MAX_COUNTER - 1), (2, 7)):
        body = {"params": {"x": seq / 4}, "node": ME, "counter": counter}
        state.apply(Record.create(TRIAL, ME, seq, 1000, body, [state.key]))
    assert Suggester(state, ME).next_counter() == 8


def test_counters_are_followed_up_to_the_ceiling_and_not_from_it() -> None:
    # "From the ceiling up" (COUNTER_CEILING, half the last value a record may carry): one
    # just under it is still followed, one at it is not.
    from metaopt._suggest import COUNTER_CEILING

    for forged, expected in ((COUNTER_CEILING - 1, COUNTER_CEILING), (COUNTER_CEILING, 8)):
        state = _state()
        for seq, counter in ((1, forged), (2, 7)):
            body = {"params": {"x": seq / 4}, "node": ME, "counter": counter}
            state.apply(Record.create(TRIAL, ME, seq, 1000, body, [state.key]))
        assert Suggester(state, ME).next_counter() == expected


def test_an_algorithm_stuck_on_a_known_point_falls_back_to_the_prior_at_full_budget() -> None:
    # The space is far from exhausted: it must not say so because the algorithm repeats
    # itself, and the fallback point still runs the fidelity's full budget.
    state = _state({"x": "uniform(0, 1)", "epochs": "fidelity(1, 81, base=3)"})
    s = Suggester(state, ME, algorithm=_Fixed([0.5]))
    known, _ = s.suggest()
    _trial(state, known, 1, "started")
    again = Suggester(state, ME, algorithm=_Fixed([0.5]))
    # (the nudge is drawn per stream: make the algorithm hit the known point exactly)
    again.algorithm = _Fixed(list(again.space.to_unit(known)))
    again._nudge = lambda u, rng: u  # type: ignore[method-assign]
    params, _ = again.suggest()
    assert params["x"] != known["x"] and params["epochs"] == 81


def test_a_suggestion_runs_at_the_fidelitys_full_budget() -> None:
    # Without a scheduler choosing budgets, a trial at the fidelity's low end would stop at
    # its first step.
    state = _state({"x": "uniform(0, 1)", "epochs": "fidelity(1, 81, base=3)"})
    for node in (ME, OTHER):
        assert Suggester(state, node).suggest()[0]["epochs"] == 81


def test_a_trial_that_arrived_within_near_crowds_and_one_twice_as_far_does_not() -> None:
    # NEAR is 1e-3 of the cube: two peers' points 0.9e-3 apart are one trial run twice.
    state = _state()
    s = Suggester(state, ME)
    draw = s.prepare()
    _trial(state, 0.5, 1, "started")
    assert s.crowded(draw, {"x": 0.5 + 0.9e-3})
    assert not s.crowded(draw, {"x": 0.5 + 2.1e-3})


def test_seeds_equal_in_their_low_word_draw_apart_and_seeds_in_range_keep_their_streams() -> None:
    # The seed's low word alone gave 0, 2**32 and -2**32 one stream: a Study with path= keeps
    # its directory's node id whatever its seed, so those seeds drew the same points.
    e = b"e" * 32
    draws = [stream(seed, ME, e, 1).random(4) for seed in (0, 2**32, -(2**32), 2**64)]
    assert len({d.tobytes() for d in draws}) == 4
    for seed in (1, 0xFFFFFFFF):
        legacy = [seed, *_words(ME), *_words(e[:16]), 1]
        assert np.array_equal(
            stream(seed, ME, e, 1).random(4),
            np.random.default_rng(np.random.SeedSequence(legacy)).random(4),
        )
