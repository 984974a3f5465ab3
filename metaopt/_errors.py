"""The one root of every error metaopt raises on purpose."""

from __future__ import annotations

__all__ = ["MetaoptError", "SearchError", "SpaceError", "WorkerError"]


class MetaoptError(Exception):
    """Root of metaopt's errors; its message is one line saying what was wrong and what to do."""


class SpaceError(MetaoptError, ValueError):
    """A search space or prior that cannot be parsed or used."""


class SearchError(MetaoptError):
    """A search algorithm misused or unable to suggest."""


class WorkerError(MetaoptError):
    """A training script used the worker API wrongly."""
