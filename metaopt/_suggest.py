"""Choosing a node's next point for one experiment from the replicated history, with no locks.

Each call draws from its own random stream, seeded from (seed, node id, experiment key,
counter): two nodes never share a stream, and one node never repeats its own. Every node's
pending trials are in the replica, so the algorithm sees them (GP fantasies, occupied
individuals), and a point equal to any known trial — completed, pending, failed or free — is
never suggested: the suggester retries, then falls back to the prior.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from metaopt._errors import SearchError
from metaopt._state import ACTIVE_STATES, FREE_STATES, ExperimentState, TrialView
from metaopt.search import Algorithm, Observations, make_algorithm
from metaopt.space import Space

__all__ = ["NEAR", "Draw", "Suggester", "params_key", "stream"]

FloatArray = npt.NDArray[np.float64]

_RETRIES = 8
_PRIOR_DRAWS = 64
# Two points closer than this in the unit cube (Euclidean) are the same trial in effect; the
# parallel benchmark counts such pairs as near duplicates.
NEAR = 1e-3


ParamsKey = tuple[tuple[str, Any], ...]


def params_key(params: Mapping[str, Any]) -> ParamsKey:
    """A hashable identity of a point; floats compared exactly, as stored."""
    return tuple(sorted((k, (type(v).__name__, v)) for k, v in params.items()))


def _words(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 4], "little") for i in range(0, len(data), 4)]


_OUT_OF_RANGE = 0x5EED  # marks the words of a seed outside [0, 2**32)


def stream(
    seed: int, node_id: bytes, experiment: bytes, counter: int, look: int = 0
) -> np.random.Generator:
    """The random stream of one suggestion: one per (seed, node, experiment, counter, look)."""
    entropy = [seed & 0xFFFFFFFF, *_words(node_id), *_words(experiment[:16]), counter]
    if not 0 <= seed <= 0xFFFFFFFF:
        # The whole seed: its low word alone gave seeds 0, 2**32 and -2**32 one stream (a
        # Study with path= keeps its directory's node id whatever the seed). Seeds in range
        # keep the streams they always had; these lists are longer than any of theirs.
        entropy += [look, _OUT_OF_RANGE, int(seed < 0), abs(seed)]  # (numpy takes its words)
    elif look:  # a second look at the same counter draws afresh; the first keeps its old stream
        entropy.append(look)
    return np.random.default_rng(np.random.SeedSequence(entropy))


# What a trial adds to the history (Suggester._row): its view, which rows (an index into
# observations' lists), its point and its signed values.
_Row = tuple[TrialView, int, "FloatArray | None", "tuple[float, ...] | None"]
_COMPLETED, _PENDING, _FAILED, _SKIPPED = 0, 2, 3, -1

# No node records 2**52 trials of one experiment: a counter from here up is one forged.
COUNTER_CEILING = 1 << 52


@dataclass(frozen=True)
class Draw:
    """What one suggestion needs, taken from the replica at one moment.

    ``Suggester.compute`` reads only this (never the live state), so it may run in a worker
    thread while the event loop goes on changing the replica.
    """

    counter: int
    rng: np.random.Generator
    known: frozenset[ParamsKey]
    obs: Observations
    # The experiment's first point takes these (its default_value= options), see prepare.
    defaults: Mapping[str, Any] = field(default_factory=dict)
    trial_keys: frozenset[bytes] = frozenset()  # the trials it was taken from

    def arrived_since(self, trials: list[TrialView]) -> list[TrialView]:
        """Those of trials that reached the replica after this draw was taken."""
        return [t for t in trials if t.key not in self.trial_keys]


class Suggester:
    """One node's search over one experiment; keeps the algorithm for its warm starts.

    ``suggest()`` is ``compute(prepare())``. Only one ``compute`` may run at a time: the
    algorithm keeps warm-start state between calls.
    """

    def __init__(
        self,
        state: ExperimentState,
        node_id: bytes,
        *,
        seed: int = 0,
        algorithm: Algorithm | None = None,
    ) -> None:
        self.state = state
        self.node_id = node_id
        self.seed = seed
        self.space = Space.from_dict(state.spec.space)
        self.algorithm = algorithm or make_algorithm(state.spec.algorithm)
        # Each trial's point in the unit cube (None: not a point of the space), as its params
        # never change: mapping 50,000 trials took 3.5 s of every suggestion's snapshot.
        self._units: dict[bytes, FloatArray | None] = {}
        # Each trial's params_key, and all of them, grown as trials arrive (they only do):
        # made afresh at every snapshot they were a third of a Study's ask at 6,000 trials.
        self._params_keys: dict[bytes, ParamsKey] = {}
        self._known: set[ParamsKey] = set()
        self._defaults_taken = False  # a trial carries every default_value= (it stays so)
        # Each trial's part of the history, kept while its view stays the same object (a
        # trial's view is made anew when it changes), and every trial in history order:
        # sorted, mapped and signed afresh, they were half of a Study's ask at 6,000 trials.
        self._rows: dict[bytes, _Row] = {}
        self._ordered: list[tuple[bytes, int, bytes]] = []

    def next_counter(self, trials: list[TrialView] | None = None) -> int:
        """The counter of this node's next trial: after its highest below COUNTER_CEILING.

        A trial any key holder forged under this node's id with the last counter a record
        may carry left none to write with: every trial this node wrote then was refused by
        every reader (a peer's search failed on it at every restart). As NodeWriter does with
        sequence numbers, those from the ceiling up are not followed.
        """
        listed = self.state.trials() if trials is None else trials
        mine = (t.counter for t in listed if t.node == self.node_id and t.counter < COUNTER_CEILING)
        return max(mine, default=0) + 1

    def observations(self, trials: list[TrialView] | None = None) -> Observations:
        """The history in the unit cube; trials whose params no longer fit the space are skipped."""
        # In (node, counter) order, not creation time: two trials written in the same
        # millisecond are ordered by their keys, which hash the time, so a time-ordered history
        # made the same seed give other suggestions under another clock.
        listed = self.state.trials() if trials is None else trials
        rows = self._rows
        for trial in listed:
            row = rows.get(trial.key)
            if row is None or row[0] is not trial:  # (a trial's view is new once it changes)
                if row is None:
                    bisect.insort(self._ordered, (trial.node, trial.counter, trial.key))
                rows[trial.key] = self._row(trial)
        if len(self._ordered) == len(listed):  # (then they are these trials, in order)
            ordered = [rows[key] for _, _, key in self._ordered]
        else:  # (a part of the history)
            listed = sorted(listed, key=lambda t: (t.node, t.counter, t.key))
            ordered = [rows[t.key] for t in listed]
        picked: tuple[list[Any], ...] = ([], [], [], [])  # X, Y, pending, failed
        for _, kind, u, y in ordered:
            if kind == _COMPLETED:
                picked[0].append(u)
                picked[1].append(y)
            elif kind >= 0:
                picked[kind].append(u)
        d, m = self.space.d, len(self.state.spec.objectives)

        def arr(rows: list[Any], width: int) -> np.ndarray:
            return np.asarray(rows, dtype=np.float64).reshape(len(rows), width)

        X, Y, pending, failed = picked
        return Observations(arr(X, d), arr(Y, m), arr(pending, d), arr(failed, d))

    def _row(self, trial: TrialView) -> _Row:
        """What a trial adds to the history as it stands: which rows, its point and values."""
        u = self.unit(trial)
        if u is None:
            return trial, _SKIPPED, None, None
        if trial.state == "completed" and trial.values is not None:
            return trial, _COMPLETED, u, self.state.signed(trial.values)
        if trial.state in ACTIVE_STATES or trial.state in FREE_STATES:
            # A lost or interrupted trial is run again: its point is taken as much as a
            # running one's (a restarted peer drew x = 0.5179 beside a lost 0.5153).
            return trial, _PENDING, u, None
        if trial.state in ("failed", "killed"):
            return trial, _FAILED, u, None
        return trial, _SKIPPED, None, None

    def unit(self, trial: TrialView) -> FloatArray | None:
        """The trial's point in the unit cube; None if its params are not a point of the space
        (a peer's malformed params must not stop the search). Kept: params never change.
        (Its cache is shared by the suggestion's and the stopper's threads: each entry is the
        same whoever writes it.)"""
        if trial.key not in self._units:
            try:
                self._units[trial.key] = self.space.to_unit(trial.params)
            except Exception:
                self._units[trial.key] = None
        return self._units[trial.key]

    def suggest(self) -> tuple[dict[str, Any], int]:
        """(params, counter) of a new point no known trial has."""
        return self.compute(self.prepare())

    def prepare(
        self, look: int = 0, *, lead: bool = True, trials: list[TrialView] | None = None
    ) -> Draw:
        """A snapshot of the history for the next suggestion.

        Given ``trials`` (``state.trials()``, taken on the event loop) it reads nothing else
        that changes, so it may run in a worker thread: at 50,000 trials it takes seconds.

        ``look`` > 0 is another try at the same trial after ``crowded`` (below) said yes: the
        history now holds the trial that crowded it, and the stream is a fresh one.

        Until a trial carries every default_value= given, the next point takes them (the rest
        as the search draws them), so the configuration a user trusts is measured first. It is
        the same point on every peer, and peers that start an experiment together asked from
        an empty history within milliseconds, before any heard of the other's: both recorded
        it. So from an empty history only the ``lead`` (the first peer in turn) takes them;
        once any trial exists, whoever asks next does (the lead may have had no free slot).
        """
        if trials is None:
            trials = self.state.trials()
        counter = self.next_counter(trials)
        defaults = self.space.defaults
        # Equal and of one type: the space keeps 1, 1.0 and True apart as three choices, and
        # another's trial of 1 made a default of 1.0 count as measured when it was not.
        wanted = set(params_key(defaults))
        if not self._defaults_taken:
            self._defaults_taken = any(wanted <= set(self._key_of(t)) for t in trials)
        if self._defaults_taken or not (lead or trials):
            defaults = {}
        return Draw(
            counter,
            stream(self.seed, self.node_id, self.state.key, counter, look),
            self._known_of(trials),
            self.observations(trials),
            defaults,
            frozenset(t.key for t in trials),
        )

    def _key_of(self, trial: TrialView) -> ParamsKey:
        key = self._params_keys.get(trial.key)
        if key is None:
            key = self._params_keys[trial.key] = params_key(trial.params)
            self._known.add(key)
        return key

    def _known_of(self, trials: list[TrialView]) -> frozenset[ParamsKey]:
        """The params_key of every one of ``trials``."""
        for trial in trials:
            self._key_of(trial)
        if len(self._params_keys) == len(trials):  # (then they are these trials' keys)
            return frozenset(self._known)
        return frozenset(self._params_keys[t.key] for t in trials)  # (a part of the history)

    def compute(self, draw: Draw) -> tuple[dict[str, Any], int]:
        """(params, counter) of a new point not in the draw's history (the costly part)."""
        counter, rng, known, obs = draw.counter, draw.rng, draw.known, draw.obs
        space = self.space
        for _ in range(_RETRIES):
            points = self.algorithm.suggest(space, obs, rng, 1)
            params = self._with_fidelity(space.from_unit(self._nudge(points[0], rng)))
            params.update(draw.defaults)
            if params_key(params) not in known:
                return params, counter
        for u in space.sample(rng, _PRIOR_DRAWS):
            params = self._with_fidelity(space.from_unit(u))
            if params_key(params) not in known:
                return params, counter
        raise SearchError(
            f"experiment {self.state.spec.name!r}: every point drawn is already a trial;"
            " the space is exhausted — widen it or lower the budget (--max-trials, or a Study's"
            " max_trials=)"
        )

    def crowded(self, draw: Draw, params: Mapping[str, Any]) -> bool:
        """Whether a trial that reached the replica after ``draw`` was taken lies within NEAR
        of ``params``.

        Two peers that ask at the same moment from the same history, before either hears of
        the other's new trial, get the same optimum of the same acquisition (a real 2-peer run
        drew x = 0.28072450930 and 0.28072450936, 40 ms apart): the peer that finds the other's
        point next to its own asks again, with that point pending.
        """
        u = self.space.to_unit(dict(params))
        for trial in draw.arrived_since(self.state.trials()):
            try:
                v = self.space.to_unit(trial.params)
            except Exception:  # a peer's malformed params crowd nothing
                continue
            if float(np.linalg.norm(u - v)) < NEAR:
                return True
        return False

    def _nudge(self, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Move real coordinates by ~1e-9 of their range, inward, from this node's stream.

        Peers that have not yet heard of each other's pending trials can run the same
        deterministic optimiser on the same history and land on the same point (often a face
        of the cube). The nudge costs nothing in quality but makes two nodes' points differ
        exactly; how close they still come is what the parallel benchmark's near-duplicate
        count measures.
        """
        real = np.array([k == "real" for k in self.space.kinds], dtype=bool)
        if not real.any():
            return u
        out = np.array(u, dtype=np.float64, copy=True)
        step = rng.uniform(1e-10, 1e-9, size=out.shape)
        inward = np.where(out >= 0.5, -step, step)
        out[real] = np.clip(out[real] + inward[real], 0.0, 1.0)
        return out

    def _with_fidelity(self, params: dict[str, Any]) -> dict[str, Any]:
        # Without a scheduler choosing budgets, a trial runs to the fidelity's full budget; the
        # early-stopping monitor then cuts it short from its learning curve.
        fidelity = self.space.fidelity
        if fidelity is not None:
            high = fidelity.args[1]
            params[fidelity.name] = int(high) if float(high).is_integer() else high
        return params
