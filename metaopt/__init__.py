"""metaopt: hyperparameter search with no master.

Training scripts use the worker API (``metaopt.report``, ``metaopt.params``,
``metaopt.should_stop``, ``metaopt.checkpoint_dir``), which imports nothing heavy; the in-process
``metaopt.Study`` and the rest load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from metaopt._errors import MetaoptError, SearchError, SpaceError, WorkerError

if TYPE_CHECKING:
    from metaopt._state import TrialView as TrialView  # (re-exported by name, see __all__)
    from metaopt._study import Study as Study
    from metaopt._study import Trial as Trial
    from metaopt.worker import (
        checkpoint_dir,
        params,
        report,
        resume_step,
        should_stop,
        trial_id,
    )

# What `from metaopt import *` gives: the worker API, which a trial's own Python 3.8+ without
# numpy can load. Study, Trial and TrialView are imported by name: listed here, a star import
# in a training script loaded the Study and failed there ("No module named 'numpy'").
__all__ = [
    "MetaoptError",
    "SearchError",
    "SpaceError",
    "WorkerError",
    "checkpoint_dir",
    "params",
    "report",
    "resume_step",
    "should_stop",
    "trial_id",
]

__version__ = "0.1.0"

_LAZY = {
    "Study": "metaopt._study",
    "Trial": "metaopt._study",
    "TrialView": "metaopt._state",
    **{
        name: "metaopt.worker"
        for name in ("checkpoint_dir", "params", "report", "resume_step", "should_stop", "trial_id")
    },
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'metaopt' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
