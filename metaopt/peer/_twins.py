"""Two peers under one node id: a data directory copied (a cloned disk) and started twice.

Unnoticed, each took the other's running trials for its own cut short by a restart, re-ran
them, and spent budgets twice (5 trials of a budget of 4). Each request carries a token of its
sending process (``Request.run``) and that process's age (``Request.age``, seconds on its
monotonic clock): a request under this node's own id with another token comes from a twin.
Of the two, the younger stops, so both pick the same one: under a supervisor that restarts
what exits, stopping the one that heard the other made them take turns (22 stops in 40 s),
since a restarted twin always called first. Ages, not start times: a start time read by the
wall clock picked the original when clocks differed or NTP stepped one after its start, and a
request's lag, by which one might read it across clocks, holds any wait in the sockets. The
elder calls the younger, which hears it and stops.

Twins that reach each other only through a third peer, or by mDNS, never call each other on
their own: a peer told of its own id at another address calls there (see ``should_call``).
"""

from __future__ import annotations

import math

__all__ = ["TwinWatch"]

RECALL_AFTER = 10.0  # seconds before one address (and process) is called again
_MAX_CALLED = 64  # addresses remembered; more only if forged


class TwinWatch:
    """This process's token and age, and what to do on hearing of this node's id elsewhere."""

    def __init__(self, started: float, token: bytes) -> None:
        """started: this process's monotonic clock at its start; token: random bytes."""
        self.token = token
        self._started = started
        self.stopped_for: bytes | None = None  # the twin this process stops for, once
        self._called: dict[tuple[str, bytes | None], float] = {}
        self._heard: set[bytes] = set()  # twins' tokens (see first_heard)
        self._stopped: set[bytes] = set()  # those said to have stopped (see first_stopped)

    def age(self, now: float) -> float:
        """This process's age at ``now`` (monotonic), as its requests carry it."""
        return now - self._started

    def is_twin(self, run: bytes | None) -> bool:
        """Whether a request under this node's id with token ``run`` comes from a twin (None:
        a peer of a release before tokens, or the CLI, which sends none)."""
        return run is not None and run != self.token

    def stops_for(self, run: bytes, age: float | None, waited: float, now: float) -> bool:
        """Whether this process stops for the twin of token ``run`` (that one is the elder),
        the first time only. (When not, the peer calls that twin, which then stops.)

        ``age``: the twin's when it sent the request (None from a twin that sent none: then
        the tokens decide); ``waited``: how long the request waited in this peer's sockets
        (see peer/_lags), by which the twin is that much older now.
        """
        if self.stopped_for is not None:
            return False
        theirs = -math.inf if age is None else age + waited
        if (theirs, run) < (self.age(now), self.token):
            return False  # it is the younger
        self.stopped_for = run
        return True

    def first_heard(self, run: bytes) -> bool:
        """Whether the twin of token ``run`` is heard of here for the first time."""
        return _first(self._heard, run)

    def first_stopped(self, run: bytes) -> bool:
        """Whether the twin of token ``run`` is told here for the first time to have stopped."""
        return _first(self._stopped, run)

    def should_call(self, addr: str, token: bytes | None, now: float) -> bool:
        """Whether to call ``addr``, where this node's id was heard of (of a twin's process
        ``token`` when known), at ``now`` (monotonic): once per RECALL_AFTER per address and
        process (a call that waited in the twin's sockets is made again soon after)."""
        if now - self._called.get((addr, token), -math.inf) < RECALL_AFTER:
            return False
        if len(self._called) >= _MAX_CALLED:
            self._called.clear()
        self._called[addr, token] = now
        return True


def _first(seen: set[bytes], run: bytes) -> bool:
    """Whether ``run`` is new to ``seen`` (which it joins; kept to _MAX_CALLED tokens)."""
    if run in seen:
        return False
    if len(seen) >= _MAX_CALLED:
        seen.clear()
    seen.add(run)
    return True
