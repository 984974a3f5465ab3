"""Say a thing once per sender, in bounded memory.

A peer logs a refusal or a foreign announcement once per sender, then quietly: the set of
senders already told of is keyed by what the network says (an address, a node id from an
unauthenticated announcement), so anyone could grow it without end. Past a cap it starts
afresh: at worst a line is logged again.
"""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["OnceEach"]


class OnceEach:
    """Remembers up to ``cap`` keys; ``first(key)`` is True the first time it sees one."""

    def __init__(self, cap: int = 4096) -> None:
        self._seen: set[Hashable] = set()
        self._cap = cap

    def first(self, key: Hashable) -> bool:
        if key in self._seen:
            return False
        if len(self._seen) >= self._cap:
            self._seen.clear()
        self._seen.add(key)
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._seen

    def __len__(self) -> int:
        return len(self._seen)
