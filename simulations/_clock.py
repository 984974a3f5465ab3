"""A virtual clock with an event queue: simulated time advances only from event to event."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["VirtualClock"]


@dataclass(order=True, slots=True)
class _Event:
    when: float
    order: int
    action: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class VirtualClock:
    """Seconds of simulated time; events at equal times run in the order they were scheduled."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._queue: list[_Event] = []
        self._order = 0
        self.executed = 0

    @property
    def now(self) -> float:
        return self._now

    def now_ms(self) -> int:
        return round(self._now * 1000)

    def call_at(self, when: float, action: Callable[[], None]) -> _Event:
        """Run action at simulated time ``when`` (never in the past)."""
        self._order += 1
        event = _Event(max(when, self._now), self._order, action)
        heapq.heappush(self._queue, event)
        return event

    def call_later(self, delay: float, action: Callable[[], None]) -> _Event:
        return self.call_at(self._now + delay, action)

    @staticmethod
    def cancel(event: _Event) -> None:
        event.cancelled = True

    def step(self) -> bool:
        """Run the next event; False when none is left."""
        while self._queue:
            event = heapq.heappop(self._queue)
            if event.cancelled:
                continue
            self._now = event.when
            self.executed += 1
            event.action()
            return True
        return False

    def run_until(self, when: float, stop: Callable[[], bool] | None = None) -> None:
        """Run events up to time ``when`` (or until ``stop()`` turns true), then set now there."""
        while self._queue and self._queue[0].when <= when:
            self.step()
            if stop is not None and stop():
                return
        self._now = max(self._now, when)

    def pending(self) -> int:
        return sum(1 for e in self._queue if not e.cancelled)
