"""A stub early stopper for tests: its decisions come from a rule, and each call is recorded."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import numpy as np

from metaopt.freezethaw import CurveView, Decision

Rule = Callable[[Sequence[CurveView], Collection[str], int], list[Decision]]


class RuleStopper:
    """Returns ``rule(curves, own, free_slots)``'s decisions and records each call as (own,
    free slots, fresh_available); ``during`` runs in the call, as if the replica moved on
    while the stopper thought."""

    def __init__(self, rule: Rule, during: Callable[[], None] | None = None) -> None:
        self.calls: list[tuple[set[str], int, bool]] = []
        self._rule, self._during = rule, during

    def decide(
        self,
        curves: Sequence[CurveView],
        own: Collection[str],
        free_slots: int,
        rng: np.random.Generator,
        *,
        fresh_available: bool = True,
    ) -> list[Decision]:
        self.calls.append((set(own), free_slots, fresh_available))
        if self._during is not None:
            self._during()
        return self._rule(curves, own, free_slots)
