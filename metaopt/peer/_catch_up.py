"""Whether a peer's replica is caught up: may it judge other peers' trials and claim free ones.

A peer that just started, or listens again after a hold (its loop stalled, its disk refused
writes), holds a partial history: a trial whose completion has not arrived yet looks lost, a
trial another peer already re-runs looks free (both were run twice), and a budgeted
experiment's count of trials is short (a finished 8/8 went to 9/8). Until it is caught up it
judges and claims none of them; each change is said in the log, so that a peer that starts
nothing for a while says why it waits.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from crdt import Record
from metaopt._records import EVENT, TRIAL

if TYPE_CHECKING:
    from metaopt.peer._config import Timing
    from metaopt.peer._membership import Membership
    from metaopt.peer._replication import Replicator

__all__ = ["HISTORY_MARGIN", "CatchUp"]

log = logging.getLogger("metaopt.peer")

# Seconds before this peer began listening that a record's stamp must be to count as history
# it is catching up on (see CatchUp.caught_up): frames carry clocks up to 2 minutes apart
# (crdt's max_skew) between two peers, more along a chain; a new record is never stamped that
# early.
HISTORY_MARGIN = 600.0

# What a peer alone is caught up by (see CatchUp._because), and how many changes of its being
# caught up are said at INFO after a start or a rejoin (the rest at DEBUG: one whose sessions
# fail while records keep coming flips every few seconds for up to ten timeouts).
_ALONE = "no seed, and no other peer heard of"
_CAUGHT_UP_LINES = 4


class CatchUp:
    """One peer's judgement of its replica as caught up, since its start or its last rejoin.

    Its inputs are read at each call (the node's clock, start and parts), not copied when
    the node is built: tests move them.
    """

    def __init__(
        self,
        timing: Timing,
        replicator: Replicator,
        membership: Membership,
        *,
        monotonic: Callable[[], float],
        started_at: Callable[[], float],
        loading: Callable[[], bool],
        stopping: asyncio.Event,
        receiving: Callable[[], bool] = lambda: False,
        offset_ms: Callable[[bytes], int] = lambda node: 0,
        named: Callable[[bytes], str] = lambda experiment: experiment.hex()[:12],
    ) -> None:
        self._timing = timing
        self._replicator = replicator
        self._membership = membership
        self._monotonic = monotonic
        self._started_at = started_at
        self._loading = loading
        self._stopping = stopping
        # Whether another peer's records are on their way here now: a large body (a request
        # or an answer) being read (see _transport.LARGE_BODY), or a session's message read
        # and not yet stored (between its last byte and its records, a joiner holding none
        # yet said it was caught up: 1 of 2 runs at 1 Mbit/s, a review).
        self._receiving = receiving
        # What to add to a node's stamps to read them by this clock, and an experiment's name.
        self._offset_ms = offset_ms
        self._named = named
        # Experiment key -> when (monotonic) a history of it last arrived (see
        # history_arriving): one experiment catching up, in a peer caught up.
        self._history_at: dict[bytes, float] = {}
        # The end of the latest hold for a disk that refused writes, when it had heard nobody,
        # and the anti-entropy sessions it had converged by then (see rejoin).
        self._rejoined_at = -math.inf
        self._sessions_before = 0
        self.others_arrived_at = -math.inf  # when records of other origins last arrived
        self._history_arrived_at = -math.inf  # ... and ones stamped well before it listened
        # Why it was last found caught up (None: not caught up), and how often that changed,
        # since its start or its last rejoin (see caught_up).
        self._why: str | None = None
        self._changes = 0

    def rejoin(self) -> None:
        """After a hold for a disk that refused writes (or a stalled loop), judge others'
        trials as a peer that has just started does: it heard nobody meanwhile, so their
        trials looked lost ("no news for 141 s") and completed ones ran again, before it had
        caught up."""
        self._rejoined_at = self._monotonic()
        self._sessions_before = self._replicator.sessions
        self._why, self._changes = None, 0

    def note_arrived(self, others: list[Record], now_ms: int) -> None:
        """Records of other origins (not a submission's) arrived at ``now_ms`` (wall clock)."""
        if not others:
            return
        now = self._monotonic()
        self.others_arrived_at = now
        listened_ms = now_ms - 1000 * (now - self.listening_since())
        if min(r.time for r in others) < listened_ms - 1000 * HISTORY_MARGIN:
            self._history_arrived_at = now
        self._note_history(others, now_ms)

    def _note_history(self, others: list[Record], now_ms: int) -> None:
        """Note the experiments whose history arrives among these records of other peers: a
        trial or event stamped over a peer timeout before it arrived, by its writer's clock as
        this peer reads it. Pushed, a record arrives within milliseconds of its stamp, and one
        an anti-entropy session brings instead within seconds.

        By age, not by how many came at once: a history is sent in write order, in slices of
        2,048 records, so a slice of trials with over 128 reports each held fewer than 16 of
        them, and a count per slice missed the histories it was for (a review).
        """
        oldest_ms = now_ms - int(self._timing.peer_timeout * 1000)
        offsets: dict[bytes, int] = {}
        ages: dict[bytes, int] = {}
        for record in others:
            if record.kind not in (TRIAL, EVENT) or not record.links:
                continue
            offset = offsets.get(record.origin)
            if offset is None:
                offset = offsets[record.origin] = self._offset_ms(record.origin)
            stamp = record.time + offset
            if stamp < oldest_ms:
                experiment = record.links[-1]  # (a trial's only link, an event's last)
                ages[experiment] = max(ages.get(experiment, 0), now_ms - stamp)
        for experiment, age_ms in ages.items():
            if not self.history_arriving(experiment):
                log.info(
                    "experiment %s: records of it up to %.0f s old arrive from other peers (its"
                    " history: a peer that ran alone, or a partition healing); no new trial of"
                    " it here until they stop coming",
                    self._named(experiment),
                    age_ms / 1000,
                )
            self._history_at[experiment] = self._monotonic()

    def history_arriving(self, experiment: bytes) -> bool:
        """Whether a history of the experiment is still arriving here (see _note_history):
        its count of trials is short, so no new trial of it starts (the node's ``may_suggest``).

        A caught-up peer folds an experiment new to it as its records come, a message at a
        time: taking its count then for the whole, peers that had run beside each other for
        minutes started trials of one a peer that ran alone brought, its budget spent (2044
        and 2051 of 2000, 1005 of 1000: real peers, a review). Held until none of its history
        has come for two anti-entropy periods, or a peer timeout while a message is crossing.
        """
        at = self._history_at.get(experiment)
        if at is None:
            return False
        quiet = self._monotonic() - at
        timing = self._timing
        if quiet < 2 * timing.anti_entropy:
            return True
        if quiet < timing.peer_timeout and self._receiving():
            return True
        del self._history_at[experiment]
        return False

    @property
    def judged_caught_up(self) -> bool:
        """The last judgement of caught_up, read without judging (or logging) again."""
        return self._why is not None

    def listened(self) -> bool:
        """Whether this node may presume another gone: it has listened for the peer timeout.

        Another node unheard of since this one started may just not have called yet (a
        --join seed is known by address until it does). A peer that joined took a live peer's
        trial frozen a minute before for lost and re-ran it from step 0, away from its
        checkpoint.
        """
        return self._monotonic() - self.listening_since() >= self._timing.peer_timeout

    def listening_since(self) -> float:
        """Since when this peer has listened to the others: its start, or its rejoin."""
        return max(self._started_at(), self._rejoined_at)

    def caught_up(self) -> bool:
        """Whether this replica may judge other peers' trials and claim free ones (see
        _because); each change said in the log (at INFO the first few after a start or a
        rejoin), so that a peer that starts nothing for a while says why it waits."""
        why = self._because()
        was = self._why
        if (why is None) != (was is None) and not self._stopping.is_set():
            self._changes += 1
            level = logging.INFO if self._changes <= _CAUGHT_UP_LINES else logging.DEBUG
            if why is not None:
                since = "started" if self._rejoined_at <= self._started_at() else "listened again"
                waited = self._monotonic() - self.listening_since()
                log.log(level, "caught up %.1f s after it %s: %s", waited, since, why)
            else:
                # Found so without a session of its own (see _because), it is not any more: a
                # peer heard of, or other peers' records arriving again.
                log.log(
                    level,
                    "not caught up any more: %s; it judges and claims no other peer's trial"
                    " until an anti-entropy session of its own brings a partner's history (or"
                    " the records stop coming)",
                    "a peer was heard of"
                    if was == _ALONE
                    else "other peers' records arrive again (a catch-up may be under way)",
                )
        self._why = why
        return why is not None

    def _because(self) -> str | None:
        """Why this replica may judge other peers' trials and claim free ones; None if not yet.

        Only after one anti-entropy session that brought all its partner held when it began
        (converged, or gave up with that here: see Replicator; and with no twin unheard of, see
        Membership.no_twin_unheard), or once peer_timeout has passed with none and no other
        peer's records arrive (nobody to catch up with), or two anti-entropy periods after
        start for a peer that has no seed and has heard of no other peer.
        """
        if self._loading():  # (part of its own history, even)
            return None
        timing = self._timing
        now = self._monotonic()
        waited = now - self.listening_since()
        synced = self._replicator.sessions > self._sessions_before
        if synced and self._membership.no_twin_unheard(now, waited):
            return (
                f"an anti-entropy session with {self._replicator.last_covered} brought all"
                " that peer held"
            )
        if waited >= timing.peer_timeout:
            # Nobody to catch up with, unless others' records are still arriving: a catch-up
            # of a long history outlasts the timeout (43-54 s for 600,000-900,000 records on
            # 2 cores), and a peer that took its partial history for whole started trials of
            # experiments whose budget was spent (3005/3000, 8/4). At most ten timeouts, should
            # no session complete while records keep coming (new ones, without end), unless
            # the history is still coming: records stamped before this peer listened, a
            # finite set (2,060,000 took 73 s, and past the ten timeouts a peer spent budgets
            # again: 1005/1000).
            arriving = 2 * timing.anti_entropy
            # Nor while a message of records is still crossing: over a slow link one of 4 MiB
            # takes seconds (10 Mbit/s), or tens of seconds, and a joiner took the silence
            # between two for the end of its catch-up, at 16-83% of the history, or at none
            # (3-10 Mbit/s in network namespaces), and ran trials of spent budgets.
            # Nor within a peer timeout of its history's last records (stamped well before it
            # listened): over 1 Mbit/s the gaps between two messages (a session given up, a
            # partner busy with one of its own, the next round) passed 4 s, and a joiner went
            # on at 74% of the history, running trials of spent budgets (2 of 5 runs).
            history = now - self._history_arrived_at < timing.peer_timeout
            if now - self.others_arrived_at >= arriving and not history and not self._receiving():
                return (
                    f"it waited a peer timeout ({timing.peer_timeout:g} s), and no other"
                    f" peer's records arrived in the last {arriving:g} s (nor any of its"
                    f" history in the last {timing.peer_timeout:g} s)"
                )
            # A message of records still crossing is history too, most likely (a busy
            # cluster's new records come in small pushes): over 1 Mbit/s one of 4 MiB takes
            # 34 s, and past the ten timeouts a joiner holding 16,392 of 88,603 records ran 20
            # trials, one to five over the budget of each of 10 experiments (namespaces).
            history = history or self._receiving()
            if waited >= 10 * timing.peer_timeout and not history:
                return (
                    f"it waited ten peer timeouts ({10 * timing.peer_timeout:g} s) while other"
                    " peers' new records kept arriving"
                )
            return None
        # No seed and nobody heard of since two anti-entropy periods (mDNS answers come
        # sooner): a peer alone need not wait peer_timeout before its budgeted experiments.
        if self._membership.knows_nobody() and waited >= 2 * timing.anti_entropy:
            return _ALONE
        return None
