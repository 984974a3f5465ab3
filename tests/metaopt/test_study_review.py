"""What a review of Study as a user found (each test failed before its fix)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest

import metaopt
from metaopt import MetaoptError

SPACE = {"x": "uniform(0, 1)"}


def test_one_directory_spelt_two_ways_is_refused_like_a_second_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Relative and absolute, the second Study opened the held directory in the same process
    # under the same node id: both wrote the same (origin, seq) numbers and drew the same
    # points, and a reopened Study held 3 of the 6 trials told.
    monkeypatch.chdir(tmp_path)
    held = pytest.raises(MetaoptError, match="held by another Study")
    with metaopt.Study(space=SPACE, path="s", seed=0), held:
        metaopt.Study(space=SPACE, path=str(tmp_path / "s"), seed=0)


def test_one_directory_through_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    held = pytest.raises(MetaoptError, match="held by another Study")
    with metaopt.Study(space=SPACE, path=tmp_path / "real"), held:
        metaopt.Study(space=SPACE, path=tmp_path / "link")


def test_a_space_too_large_for_a_record_is_a_one_line_metaopt_error() -> None:
    # choices over 200,000 values made an experiment record over 1 MiB: crdt's
    # OversizedRecord ("split it into smaller records") came out of Study().
    with pytest.raises(MetaoptError, match="the space is too large to record"):
        metaopt.Study(space={"i": f"choices({list(range(200_000))!r})"})


def test_a_prior_with_a_lone_surrogate_is_a_space_error() -> None:
    # A choice from os.listdir() of an undecodable file name: ast.parse's UnicodeEncodeError
    # came out of Study() with a traceback.
    with pytest.raises(MetaoptError, match="lone surrogate"):
        metaopt.Study(space={"f": "choices(['ok', 'bad\udcff'])"})


def test_a_parameter_name_with_a_lone_surrogate_is_a_metaopt_error() -> None:
    with pytest.raises(MetaoptError, match="cannot be recorded"):
        metaopt.Study(space={"x\udcff": "uniform(0, 1)"})


def test_trials_are_listed_oldest_first_in_ask_order() -> None:
    # Trials asked within one millisecond were listed by key hash: 28 of 50 positions out of
    # ask order, and study.trials[-1] was not the trial just asked.
    study = metaopt.Study(space=SPACE, seed=0, algorithm="random", clock=lambda: 1.0)
    asked = []
    for i in range(50):
        trial = study.ask()
        study.tell(trial, float(i % 3))
        asked.append(trial.key)
    assert [view.key for view in study.trials] == asked
    best = study.best
    assert best is not None and best.key == asked[0]  # the first of the ties


_SHARED: list[metaopt.Study] = []  # inherited by a fork()ed child, as a global is


def _ask_and_tell_in_child() -> object:
    try:
        trial = _SHARED[0].ask()
        _SHARED[0].tell(trial, 10.0)
        return trial.params
    except MetaoptError as exc:  # one line, nothing written
        return str(exc)


@pytest.mark.parametrize("where", ["memory", "path"])
def test_a_study_used_in_a_forked_child_is_refused(tmp_path: Path, where: str) -> None:
    # (multiprocessing's default on Linux, as an Optuna user shares a global study with a
    # Pool.) The child wrote under the parent's node id and record numbers, unseen by the
    # parent, whose next ask() drew the very same point; under path=, into its own LevelDB.
    path = tmp_path / "s" if where == "path" else None
    study = metaopt.Study(space=SPACE, path=path, seed=0, algorithm="random")
    _SHARED[:] = [study]
    try:
        with multiprocessing.get_context("fork").Pool(1) as pool:
            said = pool.apply(_ask_and_tell_in_child)
    finally:
        _SHARED.clear()
    assert isinstance(said, str) and "forked" in said and "\n" not in said, said
    mine = study.ask()
    study.tell(mine, 1.0)
    assert len(study.trials) == 1
    study.close()
    assert os.getpid() == study._pid


# The review's nits.


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        ({"path": ""}, "path is empty"),  # (it was the working directory)
        ({"clock": lambda: float("nan")}, "clock\\(\\) returned nan"),  # (a raw ValueError)
        ({"clock": lambda: "now"}, "clock\\(\\) returned 'now'"),
    ],
)
def test_an_empty_path_or_a_clock_of_no_number_is_one_line(
    kwargs: dict[str, object], said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MetaoptError, match=said):
        study = metaopt.Study(space=SPACE, **kwargs)  # type: ignore[arg-type]
        study.tell(study.ask(), 1.0)
    assert list(tmp_path.iterdir()) == []


def test_a_file_as_path_is_said_to_be_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(MetaoptError, match="it is a file, not a directory"):
        metaopt.Study(space=SPACE, path=tmp_path / "f")  # (it said: free space on its disk)
    with pytest.raises(MetaoptError, match="a part of the path is a file, not a directory;"):
        metaopt.Study(space=SPACE, path=tmp_path / "f" / "sub")  # (and so here)


def test_an_objective_of_no_number_is_said_so_and_a_one_value_array_is_one() -> None:
    # report() said "report a float, int or str" of None (a text is refused), and refused
    # np.array(0.3), which tell() took.
    study = metaopt.Study(space=SPACE)
    trial = study.ask()
    for value, said in ((None, "a NoneType"), ([0.3], "a list"), ("a", "'a'")):
        with pytest.raises(
            MetaoptError, match=f"^report\\(\\): objective 'objective' is {said}, not a number"
        ):
            study.report(trial, 1, value)  # type: ignore[arg-type]
    study.report(trial, 1, np.array(0.3))  # type: ignore[arg-type]
    assert study.tell(trial, np.array([[0.25]])).values == (0.25,)


def test_tell_with_an_empty_dict_names_the_missing_objective_alone() -> None:
    study = metaopt.Study(space=SPACE)
    with pytest.raises(MetaoptError) as info:
        study.tell(study.ask(), {})
    assert "(:" not in str(info.value) and "missing objective(s) 'objective'" in str(info.value)


def test_a_trial_is_hashable_by_its_key() -> None:
    study = metaopt.Study(space=SPACE)
    trial = study.ask()
    assert {trial: 1}[trial] == 1 and hash(trial) == hash(trial.key)


def test_a_study_sent_to_another_process_is_one_line() -> None:
    # (A spawn pool pickles it: a raw "Can't pickle local object '_weakly.<locals>.call'".)
    import pickle

    with pytest.raises(MetaoptError, match="cannot be sent to another process"):
        pickle.dumps(metaopt.Study(space=SPACE))
