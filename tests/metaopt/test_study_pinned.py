"""metaopt.Study: behaviour the mutation audit found unpinned (arguments, reopening, tell and
report refusals, sync, thawing at the budget's end)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import pytest

from metaopt import MetaoptError, Study
from metaopt.freezethaw import Action, CurveView, Decision
from tests.metaopt.stoppers import RuleStopper
from tests.metaopt.test_study import A, B, _freeze_then

X = {"x": "uniform(0, 1)"}


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"objective": ["a", "b"], "directions": ["minimize"]}, "2 objectives but 1 directions"),
        ({"directions": ["minimize", "maximize"]}, "1 objectives but 2 directions"),
        ({"max_trials": True}, "max_trials must be"),
        ({"max_step": True}, "max_step must be"),
        ({"max_trials": 2**53 + 1}, "max_trials must be a whole number in 1..2"),
        ({"seed": True}, "seed must be an integer"),
        ({"node_id": "aabb"}, "node_id must be 16 bytes"),
        ({"node_id": b"12345678"}, "node_id must be 16 bytes"),
    ],
)
def test_more_bad_study_arguments_are_refused_before_anything_is_written(
    tmp_path: Path, kwargs: dict[str, object], expected: str
) -> None:
    """Each was accepted by a mutant: a short directions list, True as a count or seed (a bool
    is no number a user meant), a count past 2**53 (no float holds it), an 8-byte node id."""
    with pytest.raises(MetaoptError, match=expected) as info:
        Study(X, path=tmp_path / "s", **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    with Study(X, path=tmp_path / "s") as study:
        assert len(study.store) == 1


def test_a_budget_of_2_53_is_accepted() -> None:
    """The bound is inclusive: the largest budget the error names is one a Study takes."""
    assert Study(X, max_trials=2**53).state.spec.max_trials == 2**53


def test_reopening_a_path_leaves_another_nodes_trial_alone(tmp_path: Path) -> None:
    """Only this node's trials asked but not told are orphans on reopening: another node's
    trial, seen through sync and still pending there, must not be freed and handed out here."""
    b = Study(X, algorithm="random", node_id=B)
    theirs = b.ask()
    with Study(X, algorithm="random", path=tmp_path / "a", node_id=A) as a:
        a.sync(b)
    with Study(X, algorithm="random", path=tmp_path / "a", node_id=A) as a:
        assert {t.key: t.state for t in a.trials} == {theirs.key: "pending"}
        assert a.ask().key != theirs.key


def test_orphans_filling_the_whole_budget_are_handed_back_not_killed(tmp_path: Path) -> None:
    """Asked up to the budget, closed before any tell: the budget is spent (every slot
    asked), not used up (none ended), so reopening hands each orphan back to run."""
    with Study(X, algorithm="random", path=tmp_path / "s", max_trials=2) as study:
        asked = {study.ask().key, study.ask().key}
    with Study(X, algorithm="random", path=tmp_path / "s", max_trials=2) as study:
        again = [study.ask(), study.ask()]
        assert {t.key for t in again} == asked
        for trial in again:
            assert study.tell(trial, 0.5).state == "completed"
        with pytest.raises(MetaoptError, match="budget of 2 trials is spent"):
            study.ask()


def test_a_frozen_trial_is_not_told() -> None:
    """A tell() of a trial should_stop() froze is refused (it would end a run a thaw may
    resume), and the trial stays frozen."""
    study = Study(X, algorithm="random", seed=0, max_step=10)
    study._stopper = _freeze_then(Action.THAW)
    trial = study.ask()
    study.report(trial, 1, 0.5)
    assert study.should_stop(trial)
    with pytest.raises(MetaoptError, match="was frozen by should_stop"):
        study.tell(trial, 0.4)
    assert [t.state for t in study.trials] == ["frozen"]


def test_an_empty_failure_reason_reads_reported_as_failed() -> None:
    """reason='' (an exception with no message) still leaves a reason a reader can see."""
    study = Study(X, algorithm="random")
    told = study.tell(study.ask(), failed=True, reason="")
    assert (told.state, told.reason) == ("failed", "reported as failed")


def test_a_missing_objective_beside_a_named_one_gets_no_misnamed_hint() -> None:
    """The 'no objective of this Study' hint is for a dict naming none of the objectives; when
    one is named the caller only forgot the other, and the hint would mislead."""
    study = Study(X, objective=["loss", "latency"], algorithm="random")
    with pytest.raises(MetaoptError) as info:
        study.tell(study.ask(), {"loss": 1.0, "note": 2.0})
    assert str(info.value) == (
        "tell() is missing objective(s) 'latency'; pass a dict with 'loss', 'latency', or a"
        " list in that order"
    )


def test_report_records_the_first_objective_of_several() -> None:
    """With several objectives report() is a curve of the first, the one the stoppers read."""
    study = Study(X, objective=["loss", "latency"], algorithm="random")
    trial = study.ask()
    study.report(trial, 1, 0.5)
    study.report(trial, 2, 0.25)
    assert study.trials[0].curve == ((1, 0.5), (2, 0.25))


@pytest.mark.parametrize("call", ["tell", "report", "should_stop"])
def test_an_unknown_trial_key_is_refused_and_nothing_is_recorded(call: str) -> None:
    """A key of no trial here (a typo, another experiment's) is refused, not written as an
    event about a trial that does not exist."""
    study = Study(X, algorithm="random")
    study.ask()
    before = len(study.store)
    unknown = bytes(range(32))
    calls: dict[str, Callable[[], object]] = {
        "tell": lambda: study.tell(unknown, 0.5),
        "report": lambda: study.report(unknown, 1, 0.5),
        "should_stop": lambda: study.should_stop(unknown),
    }
    with pytest.raises(MetaoptError, match="unknown trial 000102030405; pass a trial from ask"):
        calls[call]()
    assert len(study.store) == before


def test_sync_with_itself_is_a_no_op() -> None:
    """study.sync(study) (a loop over a list of Studies that includes itself) does nothing,
    rather than refusing as if two Studies shared a node id."""
    study = Study(X, algorithm="random")
    study.tell(study.ask(), 0.5)
    assert study.sync(study) == 0
    assert len(study.trials) == 1


def test_sync_with_a_closed_study_is_refused_either_way() -> None:
    """A closed Study takes part in no sync, whichever side it is on."""
    a = Study(X, algorithm="random", node_id=A)
    b = Study(X, algorithm="random", node_id=B)
    b.tell(b.ask(), 0.5)
    b.close()
    for first, second in ((a, b), (b, a)):
        with pytest.raises(MetaoptError, match="sync\\(\\): a Study is closed"):
            first.sync(second)
    assert a.trials == []


def _two_frozen(study: Study) -> set[bytes]:
    """Two running trials of study, each reported once, then frozen by should_stop()."""
    trials = [study.ask(), study.ask()]
    for trial in trials:
        study.report(trial, 1, 0.5)
    for trial in trials:
        assert study.should_stop(trial)
    return {t.key for t in trials}


def test_should_stop_again_on_a_trial_it_stopped_says_stop_and_records_nothing() -> None:
    """A second should_stop() of a trial it froze (or killed) says True and writes no event:
    it said False, "carry on", and the caller's next report() was refused; a stopper that
    judges frozen trials recorded a kill of it meanwhile."""
    study = Study(X, algorithm="random", seed=0, max_step=10)
    study._stopper = RuleStopper(_thaw_up_to_slots)
    first = study.ask()
    study.report(first, 1, 0.5)
    assert study.should_stop(first)
    kinds = [t.state for t in study.trials]
    events = len(study.store)
    assert study.should_stop(first) and study.should_stop(first.id)
    assert [t.state for t in study.trials] == kinds == ["frozen"] and len(study.store) == events


def test_ask_thaws_one_frozen_trial_at_a_time() -> None:
    """A stopper that would thaw two frozen trials gets one resumed per ask(): the other stays
    frozen (a thaw recorded for it would read running with nobody running it)."""
    study = Study(X, algorithm="random", seed=0, max_step=10)
    study._stopper = _freeze_then(Action.THAW)
    frozen = _two_frozen(study)
    first = study.ask()
    assert first.key in frozen
    assert {t.key: t.state for t in study.trials} == {
        first.key: "running",
        **{k: "frozen" for k in frozen - {first.key}},
    }
    second = study.ask()
    assert {first.key, second.key} == frozen


def _thaw_up_to_slots(
    curves: Sequence[CurveView], own: Collection[str], free_slots: int
) -> list[Decision]:
    """Freezes every running trial; thaws as many frozen ones as there are free slots."""
    mine = sorted((c for c in curves if c.trial_id in own), key=lambda c: c.trial_id)
    running = [Decision(c.trial_id, Action.FREEZE, "t") for c in mine if c.state == "running"]
    frozen = [c for c in mine if c.state == "frozen"][:free_slots]
    return running + [Decision(c.trial_id, Action.THAW, "test") for c in frozen]


def test_once_the_budget_is_spent_every_frozen_trial_worth_resuming_is_resumed() -> None:
    """At the budget's end the stopper is offered a slot per frozen trial: those it would all
    resume are handed back in turn, not killed as 'not worth resuming' for want of a slot."""
    study = Study(X, algorithm="random", seed=0, max_step=10, max_trials=2)
    study._stopper = RuleStopper(_thaw_up_to_slots)
    frozen = _two_frozen(study)
    resumed = {study.ask().key, study.ask().key}
    assert resumed == frozen
    assert [t.state for t in study.trials] == ["running", "running"]


def test_an_asha_kill_records_its_rung_so_a_reopened_study_does_not_count_later_values(
    tmp_path: Path,
) -> None:
    """A run killed at rung 1 that had reported past it (should_stop() called every few
    steps) counts only up to rung 1, for the Study that killed it and for any Study that reads
    its record later (reopened, or synced): a peer records the rung, a Study did not, and its
    later values then outranked the best run at rung 3."""
    space = {"x": "uniform(0, 1)", "e": "fidelity(1, 27, base=3)"}
    args: dict[str, object] = {"early_stopping": "asha", "algorithm": "random", "seed": 0}
    with Study(space, path=tmp_path / "s", **args) as study:  # type: ignore[arg-type]
        full = study.ask()
        for step in range(1, 28):
            study.report(full, step, 0.5)
        study.tell(full, 0.5)
        killed = study.ask()
        for step, value in ((1, 0.9), (2, 0.01), (3, 0.01)):
            study.report(killed, step, value)
        assert study.should_stop(killed) is True
    with Study(space, path=tmp_path / "s", **args) as study:  # type: ignore[arg-type]
        assert next(t for t in study.trials if t.key == killed.key).stopped_rung == 1
        best = study.ask()
        for step in range(1, 4):
            study.report(best, step, 0.3)  # the best value at rungs 1 and 3
        assert study.should_stop(best) is False


# ----------------------------------------------------------- a Study kept in a directory


def test_node_id_given_does_not_open_a_peers_data_directory(tmp_path: Path) -> None:
    """Refused without node_id=, a peer's data directory was opened with it: the Study wrote
    its experiment into the peer's replica, and so to every peer."""
    data_dir = tmp_path / "peer"
    data_dir.mkdir()
    (data_dir / "cluster.key").write_text("mo1-key\n")
    for node_id in (None, A):
        with pytest.raises(MetaoptError, match="is a metaopt peer's data directory"):
            Study(X, path=data_dir, node_id=node_id)
    assert sorted(p.name for p in data_dir.iterdir()) == ["cluster.key"]


def test_a_directory_keeps_the_node_id_given_and_refuses_another(tmp_path: Path) -> None:
    """Given node_id= the directory kept none: reopened as the README has it (the node id is
    the directory's), the Study took a new one, and the trial asked and never told was never
    handed back, its budget spent for good."""
    path = tmp_path / "s"
    with Study(X, path=path, node_id=A, max_trials=1) as study:
        orphan = study.ask()  # (the script died before tell())
    with Study(X, path=path, max_trials=1) as study:
        assert study.node_id == A and study.ask().key == orphan.key
    with pytest.raises(MetaoptError, match=f"is the Study of node {A.hex()}; reopen it without"):
        Study(X, path=path, node_id=B)


def test_a_parameter_name_with_a_nul_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """Every reader refuses the record (a NUL can be no argument): the Study wrote it, then
    said "the experiment definition does not round-trip; report a bug"."""
    with pytest.raises(MetaoptError, match=r"a parameter name must be .* without .* NUL bytes"):
        Study({"a\x00b": "uniform(0, 1)"}, path=tmp_path / "s")
    assert not (tmp_path / "s" / "replica").exists()


def test_reopening_on_a_full_disk_is_one_line_and_leaves_no_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reopened with a trial asked and never told, the Study records it interrupted: on a
    full disk that was a raw StoreWriteFailed, and the store stayed open (its lock held), so
    with room again the directory was "held by another Study" until the process ended."""
    from crdt import LevelDBStore, StoreWriteFailed
    from metaopt._records import EVENT

    path = tmp_path / "s"
    with Study(X, path=path) as study:
        study.ask()
    add = LevelDBStore.add

    def full(self: LevelDBStore, records: object) -> object:
        records = list(records)  # type: ignore[call-overload]
        if any(r.kind == EVENT for r in records):
            raise StoreWriteFailed("cannot write the store: No space left on device", "full")
        return add(self, records)

    monkeypatch.setattr(LevelDBStore, "add", full)
    with pytest.raises(MetaoptError, match=r"^Study\(\): cannot write the Study's store \(full\)"):
        Study(X, path=path)
    monkeypatch.setattr(LevelDBStore, "add", add)
    Study(X, path=path).close()  # room again: it opens


def test_a_discrete_loguniform_space_is_tried_whole_before_it_is_exhausted() -> None:
    """Its last resort listed the space by cell centres, which name a log scale's integers
    unevenly: "the space is exhausted" came with 31 of 1000 points untried."""
    from metaopt._errors import SearchError

    study = Study({"n": "loguniform(1, 300, discrete=True)"}, algorithm="random", seed=0)
    asked = set()
    for _ in range(300):
        trial = study.ask()
        asked.add(trial.params["n"])
        study.tell(trial, 0.0)
    assert asked == set(range(1, 301))
    with pytest.raises(SearchError, match="all 300 points of the space are already tried"):
        study.ask()


@pytest.mark.parametrize("algorithm", ["random", "gp", "evolution"])
def test_a_precision_space_is_tried_whole_then_said_to_be_used_up(algorithm: str) -> None:
    """Taken as endless, it ended with "found no untried point; the space is nearly
    exhausted", now and then with a point left (13 of 14, 89 of 90)."""
    from metaopt._errors import SearchError

    study = Study({"x": "uniform(0.05, 0.95, precision=1)"}, algorithm=algorithm, seed=1)
    asked = set()
    for _ in range(14):
        trial = study.ask()
        asked.add(trial.params["x"])
        study.tell(trial, abs(trial.params["x"] - 0.3))
    assert len(asked) == 14
    with pytest.raises(SearchError, match="all 14 points of the space are already tried"):
        study.ask()


@pytest.mark.parametrize("algorithm", ["random", "gp", "evolution"])
def test_a_default_finer_than_its_precision_leaves_its_rounded_neighbour_to_try(
    algorithm: str,
) -> None:
    """The default 1.5 of uniform(1, 2, precision=1), tried first as given, was taken for the
    value 2 it rounds to: (2, 1) was never tried, and the space said used up (a review)."""
    from metaopt._errors import SearchError

    space = {"c": "uniform(1, 2, precision=1, default_value=1.5)", "b": "randint(1, 3)"}
    study = Study(space, algorithm=algorithm, seed=0)
    asked = []
    for _ in range(5):
        trial = study.ask()
        asked.append((trial.params["c"], trial.params["b"]))
        study.tell(trial, 1.0)
    assert asked[0][0] == 1.5  # the default, as given
    assert sorted(asked[1:]) == [(1.0, 1), (1.0, 2), (2.0, 1), (2.0, 2)]
    with pytest.raises(SearchError, match="all 4 points of the space are already tried"):
        study.ask()
