"""An experiment's trials through the local API a page at a time, each reply far under the
64 MiB frame limit (60,000 trials with wide parameters passed it in one)."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import msgpack

from metaopt._errors import MetaoptError
from metaopt._state import TERMINAL_STATES, ExperimentState, TrialView

__all__ = ["PAGE_BYTES", "TrialPages"]

PAGE_BYTES = 8 << 20
Which = Literal["all", "open", "none"]
_WHICH = ("all", "open", "none")


def _order(trial: TrialView) -> tuple[int, bytes]:
    return trial.created, trial.key  # ExperimentState.trials()'s order


@dataclass(frozen=True)
class TrialPages:
    """What an api.experiment call asks for: which trials, from where, and how many bytes.

    The cursor (``after``) is the last trial sent, as [created, key hex], not a position: a
    trial arriving meanwhile from another peer with an older stamp shifts the positions, and
    an offset would then send a trial twice (or skip one).
    """

    experiment: str
    trials: Which = "all"
    after: tuple[int, bytes] | None = None
    page_bytes: int | None = PAGE_BYTES  # None: every trial in one page

    @classmethod
    def parse(cls, body: Any) -> TrialPages:
        if isinstance(body, str):
            return cls(body)
        if not isinstance(body, dict) or not isinstance(body.get("experiment"), str):
            raise MetaoptError("name an experiment (its name or id)")
        which = body.get("trials", "all")
        if which not in _WHICH:
            raise MetaoptError(f"trials is one of {', '.join(_WHICH)}, not {which!r}")
        page_bytes = body.get("page_bytes", PAGE_BYTES)
        if page_bytes is not None and (type(page_bytes) is not int or page_bytes < 1):
            raise MetaoptError("page_bytes is a number of bytes, 1 or more, or null")
        return cls(body["experiment"], cast(Which, which), _cursor(body.get("after")), page_bytes)

    def page(
        self, state: ExperimentState, row: Callable[[TrialView], dict[str, Any]]
    ) -> tuple[list[TrialView], list[dict[str, Any]], list[Any] | None]:
        """The next page's trials, their rows, and the cursor of the page after (None: done).

        A page holds at least one trial, and more while their rows (msgpack) fit page_bytes.
        """
        trials = state.trials()
        if self.trials == "open":
            trials = [t for t in trials if t.state not in TERMINAL_STATES]
        start = 0 if self.after is None else bisect.bisect_right(trials, self.after, key=_order)
        taken: list[TrialView] = []
        rows: list[dict[str, Any]] = []
        size = 0
        for trial in trials[start:]:
            shown = row(trial)
            if self.page_bytes is not None:
                size += len(msgpack.packb(shown, use_bin_type=True))
                if rows and size > self.page_bytes:
                    last = taken[-1]
                    return taken, rows, [last.created, last.key.hex()]
            taken.append(trial)
            rows.append(shown)
        return taken, rows, None


def _cursor(value: Any) -> tuple[int, bytes] | None:
    if value is None:
        return None
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and type(value[0]) is int
        and isinstance(value[1], str)
    ):
        try:
            return value[0], bytes.fromhex(value[1])
        except ValueError:
            pass
    raise MetaoptError("after is the previous page's next: [created, trial id]")
