"""An experiment's trials, and the list of experiments, through the local API a page at a
time, each reply far under the 64 MiB frame limit (60,000 trials with wide parameters passed
it in one; 70 experiments with commands of 1 MB did, and `status` and `submit` failed on every
peer for good)."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, cast

import msgpack

from metaopt._collector import collector_paused
from metaopt._errors import MetaoptError
from metaopt._state import TERMINAL_STATES, ExperimentState, TrialView, age

__all__ = ["PAGE_BYTES", "ListingPages", "TrialPages"]

PAGE_BYTES = 8 << 20
Which = Literal["all", "open", "none"]
_WHICH = ("all", "open", "none")


def _resumed_after(state: ExperimentState, after: tuple[int, bytes]) -> tuple[Any, ...]:
    """Where the page after the cursor's trial starts, in ExperimentState.trials()'s order.

    The cursor names the trial by (created, key); the node and counter that order trials
    of one millisecond are the trial's own. One this replica does not know (it cannot have
    sent it) starts at that millisecond's first: a trial sent twice, none skipped.
    """
    created, key = after
    view = state.trial(key)
    if view is not None and view.created == created:
        return age(view)
    return created, b"", -1, key


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
    last: int | None = None  # only the newest this many (from the first page on); None: all

    @classmethod
    def parse(cls, body: Any) -> TrialPages:
        if isinstance(body, str):
            return cls(body)
        if not isinstance(body, dict) or not isinstance(body.get("experiment"), str):
            raise MetaoptError("name an experiment (its name or id)")
        which = body.get("trials", "all")
        if which not in _WHICH:
            raise MetaoptError(f"trials is one of {', '.join(_WHICH)}, not {which!r}")
        page_bytes = _page_bytes(body)
        last = body.get("last")
        if last is not None and (type(last) is not int or last < 0):
            raise MetaoptError("last is a number of trials, 0 or more, or null")
        after = _cursor(body.get("after"))
        return cls(body["experiment"], cast(Which, which), after, page_bytes, last)

    def page(
        self, state: ExperimentState, row: Callable[[TrialView], dict[str, Any]]
    ) -> tuple[list[TrialView], list[dict[str, Any]], list[Any] | None]:
        """The next page's trials, their rows, and the cursor of the page after (None: done).

        A page holds at least one trial, and more while their rows (msgpack) fit page_bytes.
        """
        trials = state.trials()
        if self.trials == "open":
            trials = [t for t in trials if t.state not in TERMINAL_STATES]
        start = 0
        if self.after is not None:
            start = bisect.bisect_right(trials, _resumed_after(state, self.after), key=age)
        elif self.last is not None:
            # The newest: `metaopt status NAME` of 20,000 trials printed 20,003 lines.
            start = max(len(trials) - self.last, 0)
            if not self.last:
                return [], [], None
        taken: list[TrialView] = []
        rows: list[dict[str, Any]] = []
        fits = _Fits(self.page_bytes)
        # A page's rows are kept until it is sent: the collector's passes walked the rows
        # built so far again and again, a fifth of building 60,000 (no await in between).
        with collector_paused():
            for trial in trials[start:]:
                shown = row(trial)
                if not fits(shown):
                    last = taken[-1]
                    return taken, rows, [last.created, last.key.hex()]
                taken.append(trial)
                rows.append(shown)
        return taken, rows, None


@dataclass(frozen=True)
class ListingPages:
    """What an api.experiments call asks for: the listing after an experiment (by id, not a
    position, for the reason TrialPages gives), page_bytes at a time."""

    after: str | None = None
    page_bytes: int | None = PAGE_BYTES  # None: every experiment in one page

    @classmethod
    def parse(cls, body: Any) -> ListingPages:
        if not isinstance(body, dict):
            raise MetaoptError("api.experiments takes nothing, or {after, page_bytes}")
        after = body.get("after")
        if after is not None and not isinstance(after, str):
            raise MetaoptError("after is the previous page's next: an experiment id")
        return cls(after, _page_bytes(body))

    def page(
        self, listing: Iterable[tuple[str, Callable[[], dict[str, Any]]]]
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The next page's rows of listing's (id, row) pairs, and the next cursor (None: done).

        A page starts after the cursor's experiment and holds at least one row, and more while
        they fit page_bytes. Experiments are never deleted, so a cursor this peer does not
        know is refused (restarting from the top listed rows twice).
        """
        pairs = list(listing)
        ids = [key for key, _ in pairs]
        if self.after is not None and self.after not in ids:
            raise MetaoptError(f"after names no experiment of this peer: {self.after[:64]!r}")
        start = 0 if self.after is None else ids.index(self.after) + 1
        rows: list[dict[str, Any]] = []
        fits = _Fits(self.page_bytes)
        for i, (_, row) in enumerate(pairs[start:], start):
            shown = row()
            if not fits(shown):
                return rows, ids[i - 1]
            rows.append(shown)
        return rows, None


class _Fits:
    """Whether each next row still fits the page (the first always does)."""

    def __init__(self, page_bytes: int | None) -> None:
        self._left = page_bytes
        self._first = True
        # One Packer for the page's rows (packb builds one a call: a fifth of the sizing).
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def __call__(self, row: dict[str, Any]) -> bool:
        if self._left is None:
            return True
        self._left -= len(self._pack(row))
        first, self._first = self._first, False
        return first or self._left >= 0


def _page_bytes(body: dict[str, Any]) -> int | None:
    page_bytes = body.get("page_bytes", PAGE_BYTES)
    if page_bytes is not None and (type(page_bytes) is not int or page_bytes < 1):
        raise MetaoptError("page_bytes is a number of bytes, 1 or more, or null")
    return page_bytes


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
