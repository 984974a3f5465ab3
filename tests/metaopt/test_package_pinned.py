"""The metaopt package's lazy names (metaopt/__init__.py): what a mutation audit found
unpinned by the other tests, which reach only report and params through the package."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import metaopt

HOMES = {
    "MetaoptError": "metaopt._errors",
    "SearchError": "metaopt._errors",
    "SpaceError": "metaopt._errors",
    "WorkerError": "metaopt._errors",
    "Study": "metaopt._study",
    "Trial": "metaopt._study",
    "TrialView": "metaopt._state",
    "checkpoint_dir": "metaopt.worker",
    "params": "metaopt.worker",
    "report": "metaopt.worker",
    "resume_step": "metaopt.worker",
    "should_stop": "metaopt.worker",
    "trial_id": "metaopt.worker",
}


def test_every_public_name_is_the_object_from_its_home_module() -> None:
    """Pins _LAZY and the eager error imports: a training script's metaopt.trial_id() or
    metaopt.checkpoint_dir(), an `except metaopt.SpaceError`, a TrialView type check, each
    must reach the real object (a name dropped raises AttributeError in the user's script)."""
    for name, home in HOMES.items():
        assert getattr(metaopt, name) is getattr(importlib.import_module(home), name), name
    # A star import is the worker API (see test_worker's older Python): the Study by name.
    in_process = {"Study", "Trial", "TrialView"}
    assert sorted(metaopt.__all__) == sorted(set(HOMES) - in_process)
    star: dict[str, object] = {}
    exec("from metaopt import *", star)
    assert set(HOMES) - in_process <= set(star) and not in_process & set(star)


def test_an_unknown_name_is_an_attribute_error() -> None:
    """hasattr, getattr with a default and `from metaopt import x` rely on AttributeError."""
    assert not hasattr(metaopt, "suggest")
    assert getattr(metaopt, "suggest", "absent") == "absent"
    with pytest.raises(AttributeError, match="no attribute 'suggest'"):
        metaopt.suggest  # noqa: B018


def test_the_worker_api_imports_nothing_heavy() -> None:
    """Pins the lazy loading the package docstring promises: a training script's
    `import metaopt; metaopt.report(...)` loads neither numpy nor the Study and its store
    (the older-Python test that also catches this is skipped where no such Python exists)."""
    root = Path(metaopt.__file__).resolve().parents[1]
    probe = (
        "import sys, metaopt\n"
        "metaopt.report, metaopt.params, metaopt.should_stop, metaopt.checkpoint_dir\n"
        "print(sorted(m for m in ('numpy', 'crdt', 'metaopt._study', 'metaopt.search')"
        " if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    ran = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "[]"
