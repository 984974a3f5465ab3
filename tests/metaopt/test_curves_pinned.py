"""metaopt._curves: the curves, horizon and stopper the early stoppers get from a replica
(pinned by a mutation audit: the suite exercised them only through a few Study scenarios)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from crdt import Record
from metaopt import Study
from metaopt._curves import curve_views, max_step_of, stopper_for
from metaopt._records import EVENT, TRIAL, EventBody
from metaopt.freezethaw import Action, CurveView
from tests.metaopt.test_study import _freeze_then

X = {"x": "uniform(0, 1)"}
OTHER = b"o" * 16


class _Foreign:
    """Records another node wrote, added to a Study's store as a sync would bring them."""

    def __init__(self, study: Study) -> None:
        self.study, self.seq, self.ms = study, 0, 1_000_000

    def _add(self, kind: str, body: Mapping[str, Any], links: list[bytes]) -> Record:
        self.seq += 1
        self.ms += 1_000
        record = Record.create(kind, OTHER, self.seq, self.ms, dict(body), links)
        self.study.store.add([record])
        return record

    def trial(self, params: Mapping[str, Any], *events: tuple[str, dict[str, Any]]) -> str:
        """A trial of params, then its events: (kind, EventBody keyword arguments)."""
        exp = self.study.experiment_key
        body = {"params": dict(params), "node": OTHER, "counter": self.seq + 1}
        key = self._add(TRIAL, body, [exp]).key
        for kind, fields in events:
            event = EventBody(key, exp, kind, OTHER, **fields)
            self._add(EVENT, event.to_body(), [key, exp])
        return key.hex()


def _progress(*steps: int) -> list[tuple[str, dict[str, Any]]]:
    return [("progress", {"step": s, "metrics": {"objective": 1.0 / s}}) for s in steps]


def _views(study: Study) -> dict[str, CurveView]:
    return {c.trial_id: c for c in curve_views(study.state, study._suggester)}


def test_lost_and_interrupted_trials_look_frozen_and_a_pending_one_running() -> None:
    """Lost and interrupted trials may resume, so the stoppers see them frozen (not running
    trials to judge now); a pending trial with no report yet is running, and one that ended
    with no report is no curve at all."""
    study = Study(X, algorithm="random", max_step=10)
    other = _Foreign(study)
    lost = other.trial({"x": 0.1}, ("started", {}), *_progress(1, 2), ("lost", {}))
    interrupted = other.trial({"x": 0.2}, ("started", {}), *_progress(1), ("interrupted", {}))
    pending = other.trial({"x": 0.3})
    ended = other.trial({"x": 0.4}, ("completed", {"metrics": {"objective": 0.5}}))
    states = {t.id: t.state for t in study.trials}
    assert [states[k] for k in (lost, interrupted, pending)] == ["lost", "interrupted", "pending"]
    views = _views(study)
    assert {k: v.state for k, v in views.items()} == {
        lost: "frozen",
        interrupted: "frozen",
        pending: "running",
    }
    assert ended not in views and views[pending].steps.size == 0


def test_a_trial_whose_params_are_no_point_of_the_space_is_left_out() -> None:
    """A peer's malformed params (here a string for a uniform prior) must not reach the
    stoppers as a curve with no point, nor stop the judging of this node's trials."""
    study = Study(X, algorithm="random", max_step=10, early_stopping="median")
    bad = _Foreign(study).trial({"x": "abc"}, ("started", {}), *_progress(1, 2, 3))
    assert bad in {t.id for t in study.trials}
    mine = study.ask()
    study.report(mine, 1, 0.5)
    assert set(_views(study)) == {mine.id}
    assert study.should_stop(mine) is False


def test_a_curve_reported_past_the_horizon_keeps_its_own_end() -> None:
    """A trial that reported past max_step is seen up to its last step, not cut at max_step;
    the others keep the experiment's horizon."""
    study = Study(X, algorithm="random", max_step=9)
    long, short = study.ask(), study.ask()
    for step in range(1, 13):
        study.report(long, step, 1.0 / step)
    for step in range(1, 4):
        study.report(short, step, 1.0 / step)
    views = _views(study)
    assert (views[long.id].max_step, views[short.id].max_step) == (12, 9)


def test_a_resumed_trial_carries_the_step_it_resumed_after(tmp_path: Path) -> None:
    """A stopper does not judge a resumed run again at the rungs it had passed: the curve
    tells it where the run resumed."""
    with Study(X, algorithm="random", max_step=20, path=tmp_path / "s") as study:
        trial = study.ask()
        for step in range(1, 4):
            study.report(trial, step, 1.0 / step)
    with Study(X, algorithm="random", max_step=20, path=tmp_path / "s") as study:
        again = study.ask()
        assert again.key == trial.key and again.resume_step == 3
        assert _views(study)[trial.id].resumed_step == 3


def test_a_kill_at_a_rung_recorded_by_another_node_reaches_the_stopper() -> None:
    """ASHA counts a trial killed at a rung only up to that rung, whichever node killed it."""
    study = Study(X, algorithm="random", max_step=27)
    killed = _Foreign(study).trial(
        {"x": 0.5}, ("started", {}), *_progress(1, 2, 3), ("killed", {"step": 3, "rung": 1})
    )
    view = _views(study)[killed]
    assert (view.state, view.stopped_rung) == ("killed", 1)


def test_without_a_horizon_early_stopping_waits_for_a_completed_curve() -> None:
    """No max_step and no fidelity: the final step is the longest completed curve's, so
    nothing is judged before one exists; neither a running curve nor a run told without
    reports sets it."""
    study = Study(X, algorithm="random", seed=0)
    study._stopper = _freeze_then(Action.KILL)
    study.tell(study.ask(), 0.5)  # completed, no curve
    running = study.ask()
    for step in range(1, 4):
        study.report(running, step, 1.0 / step)
    assert max_step_of(study.state, study.space, study.state.trials()) is None
    assert _views(study) == {}
    assert study.should_stop(running) is False
    done = study.ask()
    for step in range(1, 6):
        study.report(done, step, 1.0 / step)
    study.tell(done, 0.2)
    assert study.should_stop(running) is True


def test_without_a_horizon_the_final_step_is_the_longest_completed_curve() -> None:
    """The horizon is the longest completed run, not the shortest."""
    study = Study(X, algorithm="random", seed=0)
    for last in (5, 9):
        trial = study.ask()
        for step in range(1, last + 1):
            study.report(trial, step, 1.0 / step)
        study.tell(trial, 1.0 / last)
    running = study.ask()
    study.report(running, 1, 1.0)
    assert max_step_of(study.state, study.space, study.state.trials()) == 9
    assert _views(study)[running.id].max_step == 9


def test_max_step_outranks_a_fractional_fidelity() -> None:
    """A fidelity up to 1 (a share of the data) is no step count: max_step=50 sets the horizon,
    and a trial at step 5 is still judged rather than taken as having run its course."""
    study = Study({"x": "uniform(0, 1)", "frac": "fidelity(0.1, 1)"}, algorithm="random",
                  max_step=50)  # fmt: skip
    study._stopper = _freeze_then(Action.KILL)
    assert max_step_of(study.state, study.space, []) == 50
    trial = study.ask()
    for step in range(1, 6):
        study.report(trial, step, 1.0 / step)
    assert study.should_stop(trial) is True


@pytest.mark.parametrize("fidelity", ["fidelity(0.1, 1)", "fidelity(0.1, 0.8)", "fidelity(1, 7.5)"])
def test_a_fidelity_that_is_no_step_sets_no_horizon_and_no_rungs(fidelity: str) -> None:
    """Without max_step, a fidelity of a share of the data gave its high end, int()-ed, as
    the last step (1, or 0): every run past step 1 was "at its budget" and never stopped, and
    on a peer a kill or freeze of it was recorded completed. The horizon is then the longest
    completed curve's, as with no fidelity, and the rungs are the stoppers' own."""
    study = Study({"x": "uniform(0, 1)", "frac": fidelity}, algorithm="random", seed=0,
                  early_stopping="asha")  # fmt: skip
    assert study.space.fidelity_steps is None
    assert study.space.max_step_conflict(50) is None
    done = study.ask()
    for step in range(1, 10):
        study.report(done, step, 1.0 / step)
    assert max_step_of(study.state, study.space, study.state.trials()) is None
    study.tell(done, 1.0 / 9)
    assert max_step_of(study.state, study.space, study.state.trials()) == 9
    assert stopper_for(study.state, study.space).config.min_resource == 1  # type: ignore[union-attr]
    worse = study.ask()
    for step in range(1, 4):
        study.report(worse, step, 10.0 + 1.0 / step)
    assert study.should_stop(worse) is True  # below the best at rung 3


def test_early_stopping_maximises_when_the_direction_says_so() -> None:
    """With directions='maximize' the stopper keeps the high curve and stops the low one; with
    the sign lost it stopped the best trial."""
    space = {"x": "uniform(0, 1)", "e": "fidelity(1, 27, base=3)"}
    study = Study(space, early_stopping="asha", algorithm="random", seed=2, directions="maximize")
    good, bad = study.ask(), study.ask()
    study.report(good, 1, 0.9)
    study.report(bad, 1, 0.1)
    assert study.should_stop(good) is False
    assert study.should_stop(bad) is True
    views = _views(study)
    assert views[good.id].values[0] < views[bad.id].values[0]  # turned into values to minimise


def test_asha_rungs_follow_the_fidelity_base() -> None:
    """fidelity(1, 16, base=2) has rungs 1, 2, 4, 8: a run promoted at step 1 and worse at
    step 2 is stopped at 2, not at a rung 3 of another base."""
    space = {"x": "uniform(0, 1)", "e": "fidelity(1, 16, base=2)"}
    study = Study(space, early_stopping="asha", algorithm="random", seed=0)
    good = study.ask()
    for step in range(1, 5):
        study.report(good, step, 1.0 / step)
    late = study.ask()
    stopped_at = None
    for step, value in ((1, 0.5), (2, 5.0), (3, 5.0), (4, 5.0)):
        study.report(late, step, value)
        if study.should_stop(late):
            stopped_at = step
            break
    assert stopped_at == 2


def test_the_default_stopper_starts_with_a_horizon_and_none_means_none() -> None:
    """By default freeze-thaw once the space has a fidelity or a max_step is given (before any
    report), else once a report exists; early_stopping='none' builds no stopper at all."""
    fidelity = Study({"x": "uniform(0, 1)", "e": "fidelity(1, 9)"}, algorithm="random")
    assert stopper_for(fidelity.state, fidelity.space) is not None
    bounded = Study(X, algorithm="random", max_step=10)
    assert stopper_for(bounded.state, bounded.space) is not None
    open_ended = Study(X, algorithm="random")
    assert stopper_for(open_ended.state, open_ended.space) is None
    open_ended.report(open_ended.ask(), 1, 0.5)
    assert stopper_for(open_ended.state, open_ended.space) is not None
    none = Study({"x": "uniform(0, 1)", "e": "fidelity(1, 9)"}, early_stopping="none")
    none.report(none.ask(), 1, 0.5)
    assert stopper_for(none.state, none.space) is None
