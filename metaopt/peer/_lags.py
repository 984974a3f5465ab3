"""How long a peer's request waited in this peer's sockets before it was read.

A request handled right after this peer's event loop was held (SIGSTOP, a long computation)
may have been sent long before: read as news of now, gossip sent during an 8 s pause brought
a peer that died meanwhile back to life, here and in every peer told. Its frame carries the
time it was sealed, by the sender's clock; this peer's clock at opening less that time is the
request's lag: the clocks' offset (up to minutes) and the time in flight, plus any wait. The
offset alone cannot be told from a wait, but it hardly moves: a sender's usual lag is the
least seen from it in the last ``window`` seconds, and a request waited for what its lag
exceeds that by. Not a mean that creeps up: a pause's burst of queued requests, handled
oldest first, raised it until the later ones read as fresh.

A sender with no lag in the window (heard for the first time, or not since before a pause
longer than the window) is judged by the hold itself: a request read just after a hold may
have waited that long, and its usual lag is taken as its lag less the hold, so that the
requests queued behind it are judged by their own waits; for the moments the queue takes to
drain only (``provisional``), as the sender may have sent it well into the hold (its later
requests read as that much older for the whole window).
"""

from __future__ import annotations

from collections import deque

__all__ = ["RequestLags"]


class RequestLags:
    """Each sender's least lag of the last ``window`` seconds, bounded in memory."""

    def __init__(
        self, window: float, jitter: float, max_senders: int, provisional: float = 0.5
    ) -> None:
        self._window = window
        self._jitter = jitter  # a wait under this is scheduling noise, not a pause
        self._provisional = provisional  # seconds a usual lag guessed from a hold is kept
        self._max_senders = max_senders
        # Per sender, (when, lag) with lags increasing: the least is first, and a lag is
        # dropped once a later one is as small (it can never be the least again).
        self._seen: dict[bytes, deque[tuple[float, float]]] = {}

    def waited(self, sender: bytes, lag: float, now: float, hold: float) -> float:
        """Seconds a request of ``sender`` with ``lag`` read ``now`` waited (0 if none to
        speak of); ``hold``: how long this peer's loop was held just before (0 if it was not)."""
        seen = self._recent(sender, now)
        if seen is None:
            if len(self._seen) >= self._max_senders:
                self._seen.clear()  # (senders are this many only if forged: start afresh)
            seen = self._seen[sender] = deque()
        if not seen and hold > 0:  # (see the module's docstring)
            seen.append((now - self._window + self._provisional, lag - hold))
            seen.append((now, lag))  # (its least, as far as it is known, once that goes)
            return hold if hold >= self._jitter else 0.0
        wait = lag - seen[0][1] if seen else 0.0
        while seen and seen[-1][1] >= lag:
            seen.pop()
        if len(seen) < 64:  # (lags rising without end: a clock running slow; the least stays)
            seen.append((now, lag))
        return wait if wait >= self._jitter else 0.0

    def offset(self, sender: bytes, now: float) -> float | None:
        """``sender``'s usual lag (its least of the last ``window`` seconds): what to add to
        its clock's readings to read them by this peer's (plus the least time in flight);
        None when it has none in the window."""
        seen = self._recent(sender, now)
        return seen[0][1] if seen else None

    def _recent(self, sender: bytes, now: float) -> deque[tuple[float, float]] | None:
        """``sender``'s lags of the last ``window`` seconds (those before, dropped)."""
        seen = self._seen.get(sender)
        while seen and seen[0][0] < now - self._window:
            seen.popleft()
        return seen
