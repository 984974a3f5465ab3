"""Say a thing once per sender, in bounded memory.

A peer logs a refusal or a foreign announcement once per sender, then quietly: the set of
senders already told of is keyed by what the network says (an address, a node id from an
unauthenticated announcement), so anyone could grow it without end. Past a cap it starts
afresh: at worst a line is logged again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

__all__ = ["OnceEach"]


class OnceEach:
    """Remembers up to ``cap`` keys; ``first(key)`` is True the first time it sees one and,
    given ``quiet``, again once the key has not been seen for that many seconds: a new
    incident, not the same one retried (a peer's clock stepped off twice was named once, the
    second time leaving peers gone and trials re-run with no word why)."""

    def __init__(
        self,
        cap: int = 4096,
        quiet: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._seen: dict[Hashable, float] = {}  # key -> when last seen
        self._cap = cap
        self._quiet = quiet
        self._clock = clock

    def first(self, key: Hashable) -> bool:
        now = self._clock()
        last = self._seen.get(key)
        self._seen[key] = now
        if last is not None and (self._quiet is None or now - last < self._quiet):
            return False
        if last is None and len(self._seen) > self._cap:
            self._seen = {key: now}
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._seen

    def __len__(self) -> int:
        return len(self._seen)
