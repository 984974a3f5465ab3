"""A Study's arguments checked, each with a one-line error saying what to pass instead.

The experiment its arguments define (``checked_spec``), its clock, the values told and
reported (``checked_metric``), and how a namesake experiment's settings differ from them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from crdt import Store
from metaopt._curves import STOPPERS
from metaopt._errors import MetaoptError, WorkerError
from metaopt._records import ExperimentSpec, name_problem
from metaopt._state import list_experiments
from metaopt.space import Space
from metaopt.worker import MAX_METRICS, MetricValue, check_metric, check_name

__all__ = ["checked_clock", "checked_metric", "checked_spec", "other_settings", "settings_differ"]


def checked_spec(
    space: Mapping[str, str],
    *,
    name: str,
    objective: str | Sequence[str],
    directions: str | Sequence[str] | None,
    minimize: bool | None,
    algorithm: str,
    max_trials: int | None,
    early_stopping: str | None,
    max_step: int | None,
    fidelity: str | None = None,
) -> ExperimentSpec:
    """The experiment a Study's arguments define, each argument checked with a one-line error."""
    if not isinstance(space, Mapping) or not space or not all(map(_is_str, space.values())):
        raise MetaoptError(
            "space must be a non-empty dict of parameter name -> prior string, "
            "e.g. {'lr': 'loguniform(1e-5, 1)'}"
        )
    if fidelity is not None:
        space = _with_fidelity(space, fidelity)
    parsed = Space.from_dict(dict(space))  # SpaceError names a bad prior's parameter
    if parsed.d == 0:
        raise MetaoptError("space has no parameter to search besides its fidelity; add one")
    if (problem := name_problem(name)) is not None:
        raise MetaoptError(f"name: {problem}")
    objectives = (objective,) if isinstance(objective, str) else tuple(objective)
    if not objectives or not all(isinstance(o, str) and o for o in objectives):
        raise MetaoptError(f"objective must be a name or a list of names, got {objective!r}")
    if len(set(objectives)) != len(objectives):
        raise MetaoptError(f"objective names repeat in {list(objectives)}; give each once")
    for each in objectives:  # the rule every metric name follows, here and in metaopt.report
        try:
            check_name(each)
        except WorkerError as exc:
            raise MetaoptError(f"objective: {exc}") from None
    if "step" in objectives:
        raise MetaoptError("objective 'step' is the step of a report; name the objective otherwise")
    if len(objectives) > MAX_METRICS:  # (no tell() could hold them all)
        raise MetaoptError(f"objective names {len(objectives)}; at most {MAX_METRICS}")
    if minimize is not None and not isinstance(minimize, bool | np.bool_):
        raise MetaoptError(f"minimize must be True or False, got {minimize!r}")
    if directions is None:
        maximize = minimize is not None and not minimize
        directions = ["maximize" if maximize else "minimize"] * len(objectives)
    elif minimize is not None:
        raise MetaoptError("give minimize= or directions=, not both (directions= is per objective)")
    directions = (directions,) if isinstance(directions, str) else tuple(directions)
    if len(directions) != len(objectives):
        raise MetaoptError(
            f"{len(objectives)} objectives but {len(directions)} directions; give one each"
        )
    if not all(d in ("minimize", "maximize") for d in directions):
        raise MetaoptError(f"directions must be 'minimize' or 'maximize', got {list(directions)}")
    max_trials, max_step = _whole("max_trials", max_trials), _whole("max_step", max_step)
    if (conflict := parsed.max_step_conflict(max_step)) is not None:
        raise MetaoptError(f"max_step={conflict}")
    if early_stopping is None:  # (off, as the Study has it; "auto" is the default)
        early_stopping = "none"
    elif early_stopping == "auto":
        early_stopping = None  # (the experiment's default, as `submit` without the option)
    elif early_stopping not in STOPPERS:
        raise MetaoptError(
            f"early_stopping={early_stopping!r}: choose one of"
            f" {', '.join(STOPPERS)}, 'auto' (the default) or None (none)"
        )
    return ExperimentSpec(
        name=name,
        space=dict(space),
        objectives=objectives,
        directions=directions,
        algorithm=algorithm,
        max_trials=max_trials,
        early_stopping=early_stopping,
        max_step=max_step,
    )


def _with_fidelity(space: Mapping[str, str], fidelity: object) -> dict[str, str]:
    """space with fidelity= added as its fidelity prior, named ``fidelity``; or a one-line
    MetaoptError if it is no fidelity prior, or space has a fidelity or a parameter of that
    name already."""
    if not isinstance(fidelity, str) or not fidelity.replace(" ", "").startswith("fidelity("):
        raise MetaoptError(
            f"fidelity= must be a fidelity prior, e.g. 'fidelity(1, 100, base=3)', got {fidelity!r}"
        )
    for name, prior in space.items():
        if prior.replace(" ", "").startswith("fidelity("):
            raise MetaoptError(
                f"space has a fidelity already ({name!r}); give it there or as fidelity=, once"
            )
    if "fidelity" in space:
        raise MetaoptError(
            "fidelity= is named 'fidelity' in a trial's params, and space has a parameter of"
            " that name; put the fidelity prior in space under a name of your own instead"
        )
    return {**space, "fidelity": fidelity}


def _whole(what: str, number: object) -> int | None:
    """A count argument as an int (numpy integers too), or a one-line MetaoptError."""
    if number is None:
        return None
    if isinstance(number, np.integer):
        number = int(number)
    if type(number) is not int or not 1 <= number <= 2**53:
        raise MetaoptError(f"{what} must be a whole number in 1..2**53 or None, got {number!r}")
    return number


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def checked_clock(clock: Callable[[], float]) -> Callable[[], float]:
    """The clock, checked at each reading: a nan was a ValueError from the record's stamp."""

    def now() -> float:
        seconds = clock()
        if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real):
            raise MetaoptError(f"clock() returned {seconds!r}; it must return seconds, a number")
        if not math.isfinite(seconds):
            raise MetaoptError(f"clock() returned {seconds!r}; it must return finite seconds")
        return seconds

    return now


def checked_metric(call: str, name: str, value: object, objective: bool) -> MetricValue:
    """A told or reported value as recorded, or a one-line MetaoptError saying why not.

    A nan or inf of a metric that is no objective is recorded as its text ("nan"), as a peer
    records a training's last report of it; an objective's means the run failed.
    """
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()  # (tell() took np.array(0.3) and report() refused it)
    if objective and not isinstance(value, numbers.Real | str):
        # (check_metric's "report a float, int or str" said a text would do: it does not)
        raise MetaoptError(
            f"{call}: objective {name!r} is a {type(value).__name__}, not a number; pass a"
            " float (e.g. loss.item())"
        )
    real = float(value) if isinstance(value, float | np.floating) else 0.0
    non_finite = not math.isfinite(real)
    if non_finite and not objective and name != "step":
        value = str(real)
    try:
        checked = check_metric(name, value)
    except WorkerError as exc:
        # Only a nan or inf usually means the run itself failed; a misspelt metric name or a
        # fractional step is the caller's to fix, and pointing at failed=True would mislead.
        hint = "; tell(trial, failed=True) records a failed run" if non_finite else ""
        raise MetaoptError(f"{call}: {exc}{hint}") from None
    if objective and isinstance(checked, str):
        raise MetaoptError(f"{call}: objective {name!r} is {value!r}, not a number")
    return checked


# The settings that, with the name, make an experiment: a Study reopened with other values of
# them would be another experiment, and find none of the first one's trials.
_SETTINGS = ("space", "objectives", "directions", "algorithm", "max_trials", "early_stopping",
             "max_step")  # fmt: skip


def other_settings(store: Store, key: bytes, spec: ExperimentSpec) -> str | None:
    """How an experiment of spec's name already in store differs from spec, or None.

    None when store holds this very experiment: it is being reopened as made, and a namesake
    of other settings that another Study's sync brought is no typo of this caller's.
    """
    if key in store:
        return None
    for _, other in list_experiments(store):
        if other.name == spec.name:  # (not this very experiment: see above)
            return _differences(other, spec, _SETTINGS) or "other settings"
    return None


def settings_differ(kept: ExperimentSpec, given: ExperimentSpec) -> str:
    """How two experiments differ, name included ("" if they do not), the kept one's first."""
    return _differences(kept, given, ("name", *_SETTINGS))


def _differences(kept: ExperimentSpec, given: ExperimentSpec, fields: Sequence[str]) -> str:
    """How two experiments' settings differ, e.g. "max_trials 3, not 5"."""
    return "; ".join(
        _difference(f, getattr(kept, f), getattr(given, f))
        for f in fields
        if getattr(kept, f) != getattr(given, f)
    )


def _difference(field: str, kept: Any, given: Any) -> str:
    """How one setting differs, naming the parameters whose priors do: two spaces printed
    whole differed by a space inside one prior, which the eye does not find."""
    if field == "early_stopping":
        # As the argument that gives it: "None, not 'none'" read backwards (the stored None
        # is 'auto'), and a Study made with early_stopping=None before None meant none
        # was told to reopen with the arguments it had been given.
        meant = {None: "'auto' (the default; None meant it before)", "none": "None"}
        return f"early_stopping {meant.get(kept, repr(kept))}, not {meant.get(given, repr(given))}"
    if field != "space":
        return f"{field} {kept!r}, not {given!r}"
    said = [
        f"{name!r} {kept[name]!r}, not {given[name]!r}"
        if name in kept and name in given
        else f"{name!r} {'only there' if name in kept else 'only here'}"
        for name in sorted(kept.keys() | given.keys())
        if kept.get(name) != given.get(name)
    ]
    return f"space: {', '.join(said)} (priors must match as text, spaces too)"
