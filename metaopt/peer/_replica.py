"""The peer's replica and the live folds over it: every experiment's state, kept current.

Records reach the store from three places — this node's own writes, eager pushes and
anti-entropy — and in any order (an event may arrive before its trial, a trial before its
experiment). Folding is idempotent and order-free (metaopt._state), so every record is simply
applied to the experiment it links to, and an experiment that arrives late is folded from its
link index when it does.

That late fold is the whole history of the experiment when it arrives after its trials and
events (a peer catching up from one that sends it last): folded in one go, a million records
held the event loop for 23 s. Past its first ``fold_step`` records it goes on in a task,
``fold_step`` records at a time, while records arriving meanwhile are folded into it too (the
fold is idempotent and order-free, so a record met twice is harmless); the experiment is listed
only once it is folded whole, as one that had not arrived yet.

The folds hold a few objects a record, for as long as the peer runs, and Python's collector of
cycles walks every object it tracks at each full pass, which comes each time their number grew
by a quarter: a catch-up of 3 million records held the loop up to 2.6 s in such passes (27 s in
all). Every ``freeze_every`` records folded, what is tracked then is moved out of its sight
(``gc.freeze``), after a full pass (which skips what is frozen) so that no garbage goes with it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator

from crdt import Record, Store
from metaopt._errors import MetaoptError
from metaopt._records import EVENT, EXPERIMENT, TRIAL, ExperimentSpec, parse_experiment
from metaopt._state import ExperimentState, TrialView, list_experiments

__all__ = ["Replica"]

log = logging.getLogger("metaopt.peer")


class Replica:
    """A store plus the ExperimentState of each experiment in it."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        *,
        fold_step: int = 2000,
        freeze_every: int = 1 << 16,
        defer: bool = False,
        only: Callable[[bytes, ExperimentSpec], bool] | None = None,
    ) -> None:
        self.store = store
        self._clock = clock
        self._monotonic = monotonic
        self._opened_ms = int(clock() * 1000)
        self._opened_mono_ms = int(monotonic() * 1000)
        # trial key -> when (this node's monotonic clock, ms) a record of it last arrived: how
        # long a trial has been quiet is measured from here alone. Not by its writers' stamps:
        # a clock running ahead (or a hostile peer) puts them in the future, one running behind
        # made a heartbeat that had just arrived read as that much silence; and not on the wall
        # clock, which NTP may step forward past lost_after, every live peer's trial at once.
        self._heard: dict[bytes, int] = {}
        self.experiments: dict[bytes, ExperimentState] = {}
        # experiment key -> (when it was submitted, its stamp) in ms: the stamp capped at its
        # arrival here, by the wall clock (at this node's opening for one held then), for the
        # turns (Node._turns_since); and the stamp itself, which alone orders namesakes.
        self._created: dict[bytes, tuple[int, int]] = {}
        self._listeners: list[Callable[[list[Record]], None]] = []
        # Experiments that arrived after more than fold_step records of theirs: folded in a
        # task, a step at a time (see the module's docstring), and listed once folded whole.
        self._fold_step = fold_step
        self._folding: dict[bytes, ExperimentState] = {}
        self._fold_tasks: set[asyncio.Task[None]] = set()
        # Records folded since the collector was last told to leave the folds alone (0: never).
        self._freeze_every = freeze_every
        self._unfrozen = 0
        # With defer, the experiments held at opening are folded by load() (see its
        # docstring); records arriving meanwhile are folded into them as for a late one.
        self._held: deque[tuple[ExperimentState, tuple[int, int]]] = deque()
        # Records read from the store and folded since opening (by load() and late folds; not
        # those folded on arrival, which a fold may read again): how far load() has gone.
        self.folded_records = 0
        for key, spec in list_experiments(store):
            if only is not None and not only(key, spec):
                continue  # (a read of a few experiments: the rest is as if not here yet)
            record = store.get(key)
            if record is not None:
                state = ExperimentState(key, spec)
                created = (min(record.time, self._opened_ms), record.time)
                if defer:
                    self._folding[key] = state
                    self._held.append((state, created))
                    continue
                for _ in self._fold_steps(state):
                    pass
                self.experiments[key] = state
                self._created[key] = created
        self._unsubscribe = store.subscribe(self._on_records)

    @property
    def loading(self) -> bool:
        """Whether experiments held at opening are still being folded (see load)."""
        return bool(self._held)

    async def load(self) -> None:
        """Fold the experiments held at opening, a step at a time, each listed once whole.

        A peer folded its whole replica before it listened: 21 s for a million records, 33-51 s
        for three million, while `peer start --detach` gave up after 30 s, `peer status` said
        no peer ran, and the other peers counted it gone. Listeners are not told of these
        experiments, as they were not of those folded at opening.
        """
        while self._held:
            state, created = self._held[0]
            for _ in self._fold_steps(state):
                await asyncio.sleep(0)
            # Its trials' views too, a step at a time: the peer's first scheduling pass lists
            # every trial (to find lost ones), and folded there, 100,000 trials held the loop
            # 2 s, a time that grows with the history.
            for count, key in enumerate(state.trial_keys(), 1):
                state.trial(key)
                if count % self._fold_step == 0:
                    await asyncio.sleep(0)
            # And between experiments: a replica of 4,000 experiments of 240 records each
            # (none a step long) was folded in one go, the peer deaf for 20-27 s.
            await asyncio.sleep(0)
            del self._folding[state.key]
            # Not _publish: a trial held at opening counts its quiet time from the opening.
            self.experiments[state.key] = state
            self._created[state.key] = created
            self._held.popleft()

    def submitted_ms(self, key: bytes) -> int:
        """An experiment's submission stamp (ms), capped at its arrival here (or this node's
        opening for one held then)."""
        return self._created.get(key, (0, 0))[0]

    def listen(self, callback: Callable[[list[Record]], None]) -> None:
        """Hear of new records after they are durable and folded."""
        self._listeners.append(callback)

    def _on_records(self, records: list[Record]) -> None:
        arrived_ms = int(self._monotonic() * 1000)
        touched: set[ExperimentState] = set()
        for record in records:
            if record.kind == EXPERIMENT:
                if record.key not in self.experiments and record.key not in self._folding:
                    self._fold(record)
                continue
            for link in record.links:
                state = self.experiments.get(link)
                if state is None:
                    state = self._folding.get(link)
                if state is not None:
                    if state.apply(record) and record.kind in (TRIAL, EVENT):
                        trial = record.key if record.kind == TRIAL else record.links[0]
                        self._heard[trial] = arrived_ms
                        touched.add(state)
                    break
        for state in touched:  # (the batch's ended trials, sealed: see ExperimentState.settle)
            state.settle()
        self._folded(len(records))
        if self._folding:  # told of an experiment once it is folded (_publish)
            records = [r for r in records if r.key not in self._folding]
        self._tell(records)

    def _tell(self, records: list[Record]) -> None:
        for callback in list(self._listeners):
            callback(records)

    def _fold(self, record: Record) -> None:
        """Fold an experiment that has just arrived: at once if its history here is short
        (or no event loop runs), else the rest of it in a task."""
        spec = parse_experiment(record)
        if spec is None:
            return
        state = ExperimentState(record.key, spec)
        created = (min(record.time, int(self._clock() * 1000)), record.time)
        steps = self._fold_steps(state)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or next(steps, True):  # (True: exhausted)
            for _ in steps:
                pass
            self._publish(state, created)
            return
        self._folding[record.key] = state
        task = loop.create_task(self._fold_rest(record, state, steps, created))
        self._fold_tasks.add(task)
        task.add_done_callback(self._fold_tasks.discard)

    def _fold_steps(self, state: ExperimentState) -> Iterator[None]:
        """Apply the experiment's records held here, pausing after every fold_step of them."""
        count = 0
        for count, record in enumerate(self.store.linked(state.key), 1):
            state.apply(record)
            if count % self._fold_step == 0:
                self.folded_records += self._fold_step
                self._folded(self._fold_step)
                yield None
        self.folded_records += count % self._fold_step
        # Its ended trials sealed now, a step at a time (an experiment that came after its
        # history, as a join brings many, held all its events decoded until a view was read).
        while state.settle(self._fold_step):
            yield None

    def _folded(self, count: int) -> None:
        """Note count records folded; past freeze_every, freeze (see the module's docstring)."""
        self._unfrozen += count
        if self._freeze_every and self._unfrozen >= self._freeze_every:
            self._unfrozen = 0
            # A full pass first: cyclic garbage already old would be frozen with the folds and
            # never freed. It walks only what was made since the last freeze.
            gc.collect()
            gc.freeze()

    async def _fold_rest(
        self,
        record: Record,
        state: ExperimentState,
        steps: Iterator[None],
        created: tuple[int, int],
    ) -> None:
        try:
            for _ in steps:
                await asyncio.sleep(0)
        except Exception:  # (the store's own fault) a restart folds it from the store again
            del self._folding[record.key]
            log.exception(
                "folding experiment %s failed; restart this peer to fold it again",
                record.key.hex()[:12],
            )
            return
        del self._folding[record.key]
        self._publish(state, created)
        self._tell([record])

    def _publish(self, state: ExperimentState, created: tuple[int, int]) -> None:
        self.experiments[state.key] = state
        self._created[state.key] = created
        self._heard.update(dict.fromkeys(state.trial_keys(), int(self._monotonic() * 1000)))

    def arriving(self, experiment: bytes) -> ExperimentState | None:
        """The experiment's state, published or still being folded (see _fold)."""
        state = self.experiments.get(experiment)  # (not `or`: one of no trials is falsy)
        return self._folding.get(experiment) if state is None else state

    def quiet_ms(self, trial: TrialView) -> int:
        """How long (ms, this node's monotonic clock) since the latest record of a trial arrived
        here (for trials it held when it opened, since its opening).

        An old record first delivered late (a partition healing, a restarted peer catching up)
        counts as news, so such a trial is taken over up to lost_after later than its stamps
        would say: taking a live peer's trial for lost, and running it twice, costs more.
        """
        since = self._heard.get(trial.key, self._opened_mono_ms)
        return max(0, int(self._monotonic() * 1000) - since)

    @staticmethod
    def _id_prefix(text: str) -> str | None:
        """The id prefix a name-or-id text stands for, if it is long enough to be one."""
        return text.lower() if len(text) >= 4 else None

    @staticmethod
    def findable(text: str) -> Callable[[bytes, ExperimentSpec], bool]:
        """Whether find_experiment(text) looks at an experiment: a replica opened with only
        these (``only``) finds what the whole one would, or says the same why not."""
        text = text.strip()
        prefix = Replica._id_prefix(text)
        return lambda key, spec: (
            spec.name == text or (prefix is not None and key.hex().startswith(prefix))
        )

    def find_experiment(self, text: str) -> ExperimentState | None:
        """By name (the latest submitted of that name wins) or by key hex prefix.

        Raises:
            MetaoptError: text is an id prefix of more than one experiment.
        """
        text = text.strip()
        by_name = self.named(text)
        if by_name:
            return by_name[0]
        prefix = self._id_prefix(text)
        if prefix is None:
            return None
        matches = [s for k, s in self.experiments.items() if k.hex().startswith(prefix)]
        if len(matches) > 1:
            shown = ", ".join(f"{s.spec.name} {s.key.hex()[:12]}" for s in matches[:5])
            raise MetaoptError(
                f"experiment id {text!r} matches {len(matches)} experiments ({shown});"
                " give more characters"
            )
        return matches[0] if matches else None

    def named(self, name: str) -> list[ExperimentState]:
        """The experiments submitted under name, the latest first.

        Latest by their submission stamps alone (then by key): the same on every peer, and
        across restarts. Capped at their arrival here, as once, an experiment stamped by a
        clock running ahead lost the name to a later one, until a restart capped it at the
        opening, by then past its stamp: `stop NAME` stopped another experiment after the
        restart, and on other peers. Peers refuse each other's frames past 120 s of skew, so
        an honest stamp runs ahead by less than that; `metaopt submit` says when its new
        experiment does not take the name.
        """
        found = [s for s in self.experiments.values() if s.spec.name == name]
        return sorted(
            found, key=lambda s: (self._created.get(s.key, (0, 0))[1], s.key), reverse=True
        )

    def find_trial(self, text: str) -> tuple[ExperimentState, bytes] | None:
        """The trial whose id starts with text (at least 4 hex digits), None if there is none.

        Raises:
            MetaoptError: text is shorter than 4 characters, or more than one trial matches.
        """
        text = text.strip().lower()
        if len(text) < 4:
            raise MetaoptError(f"trial id {text!r} is too short; give at least 4 characters")
        found = [
            (state, trial.key)
            for state in self.experiments.values()
            for trial in state.trials()
            if trial.key.hex().startswith(text)
        ]
        if len(found) > 1:
            shown = ", ".join(key.hex()[:12] for _, key in found[:5])
            raise MetaoptError(
                f"trial id {text!r} matches {len(found)} trials ({shown}); give more characters"
            )
        return found[0] if found else None

    def close(self) -> None:
        self._unsubscribe()
        for task in self._fold_tasks:  # (before the store closes under their iterators)
            task.cancel()
