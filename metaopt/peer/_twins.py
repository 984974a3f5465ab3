"""Two peers under one node id: a data directory copied (a cloned disk) and started twice.

Unnoticed, each took the other's running trials for its own cut short by a restart, re-ran
them, and spent budgets twice (5 trials of a budget of 4). Each request carries a token of its
sending process (``Request.run``): a request under this node's own id with another token comes
from a twin. Of the two, the one started later stops (tokens begin with their process's start
time, read by this peer's clock through the request's lag, so both twins pick the same one
even when their clocks differ; by the tokens' own clocks alone, a copy started later on a
clock 60 s behind stopped the original): under a supervisor that restarts what exits, stopping
the one that heard the other made them take turns (22 stops in 40 s), since a restarted twin
always called first. The earlier one calls the later, which hears it and stops.

Twins that reach each other only through a third peer, or by mDNS, never call each other on
their own: a peer told of its own id at another address calls there (see ``should_call``).
"""

from __future__ import annotations

import math

__all__ = ["TwinWatch"]

RECALL_AFTER = 60.0  # seconds before one address (and process) is called again
_MAX_CALLED = 64  # addresses remembered; more only if forged


class TwinWatch:
    """This process's token, and what to do on hearing of this node's id elsewhere."""

    def __init__(self, started: float, chance: bytes) -> None:
        """started: the wall clock at the process's start; chance: random bytes."""
        self.token = int(started * 1000).to_bytes(8, "big") + chance
        self.stopped_for: bytes | None = None  # the twin this process stops for, once
        self._called: dict[tuple[str, bytes | None], float] = {}

    def is_twin(self, run: bytes | None) -> bool:
        """Whether a request under this node's id with token ``run`` comes from a twin (None:
        a peer of a release before tokens, or the CLI, which sends none)."""
        return run is not None and run != self.token

    def stops_for(self, run: bytes, lag: float | None) -> bool:
        """Whether this process stops for the twin of token ``run`` (that one started earlier),
        the first time only. (When not, the peer calls that twin, which then stops.)

        ``lag``: the request's (this peer's clock at opening less the twin's at sealing, see
        peer/_lags), which moves the twin's start time onto this peer's clock.
        """
        theirs = (_started_ms(run) + 1000 * (lag or 0.0), run)
        if theirs > (_started_ms(self.token), self.token) or self.stopped_for is not None:
            return False
        self.stopped_for = run
        return True

    def should_call(self, addr: str, token: bytes | None, now: float) -> bool:
        """Whether to call ``addr``, where this node's id was heard of (of a twin's process
        ``token`` when known), at ``now`` (monotonic): once a minute per address and process."""
        if now - self._called.get((addr, token), -math.inf) < RECALL_AFTER:
            return False
        if len(self._called) >= _MAX_CALLED:
            self._called.clear()
        self._called[addr, token] = now
        return True


def _started_ms(token: bytes) -> float:
    return float(int.from_bytes(token[:8], "big"))
