"""What a peer should do next with its slots, and which trials have been lost (pure).

No locks: each peer decides for its own slots from its replica. Free trials (lost or
interrupted) are claimed in an order every peer computes alike (see ``claim_rank``): the node
that ran the trial last first while it is live, then the other live nodes by rendezvous
hashing (BLAKE2b(node id + trial key)); the k-th in line waits k claim delays before taking
it, and of the free trials it may take, a peer takes the one it is earliest in line for (see
plan_work for how experiments take turns). So usually exactly one peer re-runs a freed
point, and if that one is gone too, the next does; two that take one up at the same moment
are told apart by the peer's runner (the run that is not the trial's gives way). New points
are recorded in turns the same way (``settle_wait``), so that each peer has heard of the
points recorded before its own.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from metaopt._state import FREE_STATES, ExperimentState, TrialView

__all__ = [
    "Lost",
    "Work",
    "backing_off",
    "claim_rank",
    "ended_here",
    "failure_streak",
    "find_lost",
    "made_here",
    "plan_work",
    "rendezvous_rank",
    "settle_rank",
    "settle_wait",
    "work_left",
]

# After this many trials in a row failed (anywhere, with no completion since), new trials of
# the experiment wait 1 s after the last failure, doubling with each further one up to a
# minute: a script that fails at once ran ~35 trials a second on 2 peers, each a record every
# replica keeps for good, and spent a budget of 20 in 2 s. A completion ends the wait.
BACKOFF_AFTER = 3
BACKOFF_MAX_MS = 60_000


@dataclass(frozen=True)
class Work:
    """Run a trial of ``experiment``: the free trial ``trial``, or a new point when None."""

    experiment: bytes
    trial: bytes | None


@dataclass(frozen=True)
class Lost:
    experiment: bytes
    trial: bytes
    reason: str
    after: bytes | None = None  # the trial's latest event this node had seen (EventBody.after)


def rendezvous_rank(me: bytes, others: Iterable[bytes], trial: bytes) -> int:
    """How many live nodes come before this one in the claim order for ``trial``."""

    def score(node: bytes) -> bytes:
        return hashlib.blake2b(node + trial, digest_size=8).digest()

    mine = score(me)
    return sum(1 for node in set(others) if node != me and score(node) < mine)


def claim_rank(me: bytes, live_nodes: Collection[bytes], trial: TrialView) -> int:
    """This node's place in line to re-run a free trial.

    Its last runner comes first while it is live: only there can the re-run resume from the
    trial's checkpoint directory, which other peers cannot see. A peer killed -9 and
    restarted within seconds marked its own trial lost and a peer ranked before it by the
    hash alone re-ran it from step 0 beside the idle holder of its checkpoint. The others
    follow by rendezvous, one claim delay later, in case the runner has no free slot.
    """
    runner = trial.runner
    if runner == me:
        return 0
    if runner is None or runner not in live_nodes:
        return rendezvous_rank(me, live_nodes, trial.key)
    return 1 + rendezvous_rank(me, [n for n in live_nodes if n != runner], trial.key)


def settle_rank(me: bytes, live_nodes: Iterable[bytes], experiment: bytes, known: int) -> int:
    """This node's turn, among the live ones, to record a new point of ``experiment`` whose
    replica holds ``known`` trials.

    Peers with the same history rank alike, so of two that ask from it at once one records
    first and the other, waiting its turn, hears of that point before it records its own; the
    order changes with each new trial, so no peer always waits longest.
    """
    return rendezvous_rank(me, live_nodes, experiment + known.to_bytes(8, "little"))


def settle_wait(
    me: bytes,
    nodes: Collection[bytes],
    experiment: bytes,
    known: int,
    since_ms: int,
    now_ms: int,
    turn_ms: int,
    max_turns: int,
) -> int:
    """How long (ms) this node waits before it records a new point of ``experiment``: until
    the start of its turn among ``nodes``, the turns counted from ``since_ms``, when the
    replica came to hold the ``known`` trials it holds, and coming round again every
    ``len(nodes)`` turns (at most ``max_turns``). No wait for a node alone, nor for one
    less than half a turn past the start of its turn.

    The turns are times, the same on every peer that holds those trials, not delays from
    whenever a peer asked: with delays, a peer that recorded at its turn and asked again for
    its second slot at once (a new count, so a new rank) woke with the ones still waiting on
    the old count, 1 ms apart, each to record before hearing of the other's point. Recording
    only near the start of its own turn, two peers that agree on the nodes record at least
    half a turn apart, and the later one has heard of the earlier one's trial by then.
    """
    everyone = set(nodes) | {me}
    if len(everyone) == 1 or turn_ms <= 0:
        return 0
    cycle = min(len(everyone), max_turns)
    start = since_ms + settle_rank(me, everyone, experiment, known) % cycle * turn_ms
    if now_ms < start:
        return min(start - now_ms, cycle * turn_ms)  # (a clock stepped back: at most a round)
    late = (now_ms - start) % (cycle * turn_ms)
    # A wake is a millisecond or two late; one later than half a turn (a busy event loop)
    # would record in the next node's turn.
    return 0 if late <= turn_ms // 2 else cycle * turn_ms - late


def find_lost(
    experiments: Iterable[ExperimentState],
    me: bytes,
    quiet_ms: Callable[[TrialView], int],
    lost_after_ms: int,
    is_alive: Callable[[bytes], bool],
    running_here: Collection[bytes],
) -> list[Lost]:
    """Trials that claim to run but whose node has gone quiet, and this node's own orphans.

    A trial of another node is lost when nothing was heard of it for ``lost_after_ms`` (by
    ``quiet_ms``, the peer's Replica.quiet_ms: since its latest record arrived there, never by
    the writers' stamps) and its node is not live either (a live peer with a slow trial is
    only slow). A trial this node was running but no longer runs — it was killed -9 and
    restarted — is lost at once. A trial frozen on another node that has been gone as long is
    lost too: only its own node may thaw it, so it would otherwise hold its point and its
    experiment open for ever; but not one frozen by hand, a pause only the user ends
    (`metaopt thaw` on any peer takes it over once its node is gone).

    The caller must hold a caught-up replica (see ``CatchUp.caught_up``): on a stale one a trial
    that completed, or that another peer already re-runs, would look lost.
    """
    out: list[Lost] = []
    for state in experiments:
        for trial in state.open_trials():
            if trial.state not in ("running", "pending", "frozen"):
                continue
            owner = trial.runner or trial.node
            if owner == me:
                if trial.state != "frozen" and trial.key not in running_here:
                    # (A pending one never started: its slot went to a thaw while its point
                    # was recorded, or its peer restarted in between.)
                    why = (
                        "recorded here but never started"
                        if trial.state == "pending"
                        else "its peer restarted while it ran"
                    )
                    out.append(Lost(state.key, trial.key, why, trial.latest))
                continue
            if trial.frozen_by_hand:
                continue
            quiet = quiet_ms(trial)
            if quiet > lost_after_ms and not is_alive(owner):
                # A frozen trial is quiet since its freeze, however long its node has been gone.
                # (Worded to stay true once the node is back: the reason outlives the loss.)
                why = (
                    f"frozen on node {owner.hex()[:8]}, which went away"
                    if trial.state == "frozen"
                    else f"no news from node {owner.hex()[:8]} for {quiet // 1000} s"
                )
                out.append(Lost(state.key, trial.key, why, trial.latest))
    return out


def ended_here(
    now_ms: int,
    quiet_ms: Callable[[TrialView], int],
    offset_ms: Callable[[bytes], int] = lambda node: 0,
) -> Callable[[TrialView], int]:
    """When an ended trial's end counts by this node's clock: its stamp moved by its writer's
    clock offset from this node's (``offset_ms``: what to add to that node's stamps; see
    RequestLags.offset), or its arrival here (by ``quiet_ms``, see find_lost) if earlier.

    By stamps alone, failures stamped by a clock 30 s ahead came after every later completion
    elsewhere, and held every peer back as a streak the completions never broke (A ran 6-13
    trials in 45 s, not 85), and the peer ahead held itself back the same way, by its own
    stamps; by arrival alone, failures delivered late by a partition's heal came after a
    completion made after them.
    """

    offset = _asked_once(offset_ms)  # (a sort asks per trial)

    def end(t: TrialView) -> int:
        assert t.ended_at is not None
        return min(t.ended_at + offset(t.runner or t.node), now_ms - quiet_ms(t))

    return end


def failure_streak(
    state: ExperimentState, end_ms: Callable[[TrialView], int] | None = None
) -> tuple[int, int]:
    """How many of the experiment's latest ended runs failed in a row, and when the last ended
    (by ``end_ms``, see ended_here; else by stamp).

    Runs ended by completing or failing count; a kill (early stopping) neither breaks nor
    extends the streak. Ends at one time go in the order the trials were made (a clock
    stepped back holds a node's stamps still: its failures came after its later completions).
    """
    streak, last = _streak(state, end_ms)
    return streak, (last[0] if last else 0)


def _streak(
    state: ExperimentState, end_ms: Callable[[TrialView], int] | None
) -> tuple[int, tuple[int, int, int] | None]:
    """failure_streak, with the latest failure as (end, created, counter)."""
    # The failures after the latest completion, in one pass (a sort of every ended trial,
    # at each scheduling pass of each experiment, was most of a pass at 3,000 trials).
    last_completed: tuple[int, int, int] | None = None
    failures: list[tuple[int, int, int]] = []
    for t in state.trials():
        if t.ended_at is None or t.state not in ("completed", "failed"):
            continue
        key = (t.ended_at if end_ms is None else end_ms(t), t.created, t.counter)
        if t.state == "failed":
            failures.append(key)
        elif last_completed is None or key > last_completed:
            last_completed = key
    after = [f for f in failures if last_completed is None or f >= last_completed]
    return len(after), (max(after) if after else None)


def made_here(offset_ms: Callable[[bytes], int] = lambda node: 0) -> Callable[[TrialView], int]:
    """When a trial was made by this node's clock: its stamp moved by its maker's clock offset
    (see ended_here)."""
    offset = _asked_once(offset_ms)

    def made(t: TrialView) -> int:
        return t.created + offset(t.node)

    return made


def _asked_once(offset_ms: Callable[[bytes], int]) -> Callable[[bytes], int]:
    """offset_ms, asked once per node."""
    offsets: dict[bytes, int] = {}

    def offset(node: bytes) -> int:
        if node not in offsets:
            offsets[node] = offset_ms(node)
        return offsets[node]

    return offset


def backing_off(
    state: ExperimentState,
    now_ms: int,
    end_ms: Callable[[TrialView], int],
    made_ms: Callable[[TrialView], int] | None = None,
) -> bool:
    """Whether the experiment's latest trials all failed and its next waits (the backoff):
    for the wait after the latest failure, then while the one trial started after it runs,
    for as long again at most (``made_ms``: see made_here)."""
    return _backoff(state, now_ms, end_ms, made_ms or made_here()) is True


def _backoff(
    state: ExperimentState,
    now_ms: int,
    end_ms: Callable[[TrialView], int],
    made_ms: Callable[[TrialView], int],
) -> bool | None:
    """backing_off, or None when not backing off and its latest runs are no failure streak
    (False: a streak, and one trial may try again now)."""
    streak, last = _streak(state, end_ms)
    if streak < BACKOFF_AFTER or last is None:
        return None
    wait = min(1000 << min(streak - BACKOFF_AFTER, 16), BACKOFF_MAX_MS)
    # Since the last failure, as its end counts here (see ended_here): measured by stamps
    # alone, a failure stamped by a clock 100 s ahead held every other peer back 100 s more,
    # and only the peer ahead started trials.
    if now_ms - last[0] < wait:
        return True
    # The wait over, one trial tries again, and the next waits for its end or for the wait
    # again, whichever comes first: every free slot of every peer started one at once (2 of
    # 2 slots, 3 peers alike). One made after the latest failure: a run made before it, or
    # one that outlived the wait (a good one that runs for an hour), must not hold the other
    # slots idle that long. By this node's clock (see made_here): by the stamps of a peer 90 s
    # ahead, its retry held the others 69 s. (Made a wait after the failure, give or take the
    # offsets' error: half a wait tells it from a run made before.)
    return any(
        t.state in _TRYING and made_ms(t) >= last[0] + wait // 2 and now_ms - made_ms(t) < wait
        for t in state.open_trials()
    )


_TRYING = frozenset({"pending", "running"})


def work_left(state: ExperimentState) -> bool:
    """Whether a trial of the experiment may still start: a new one, or a free one again."""
    if state.stopped:
        return False
    return not state.budget_spent or any(t.state in FREE_STATES for t in state.open_trials())


def plan_work(
    experiments: Iterable[ExperimentState],
    me: bytes,
    free_slots: int,
    running_here: Collection[bytes],
    live_nodes: Collection[bytes],
    now_ms: int,
    claim_delay_ms: int,
    runnable: Callable[[ExperimentState], bool],
    *,
    claim_free: bool = True,
    may_suggest: Callable[[ExperimentState], bool] = lambda state: True,
    quiet_ms: Callable[[TrialView], int],
    thawable: Collection[bytes] = frozenset(),
    offset_ms: Callable[[bytes], int] = lambda node: 0,
) -> list[Work]:
    """Work for up to ``free_slots`` slots: free trials this node may claim, then new points.

    The k-th in line for a free trial claims it once ``quiet_ms`` (see find_lost) reaches k
    claim delays; ``now_ms`` (the wall clock) is compared with ends read by this node's
    clock (see ended_here, with ``offset_ms``): a new trial of an experiment whose last runs
    all failed waits (BACKOFF_AFTER, above).
    Experiments take turns: the one with the fewest trials running here first, then the one
    with the fewest running anywhere, then the one this node ran a trial of longest ago, then
    an order of this node's own (a hash of node and experiment), so several experiments share
    the cluster's slots and each peer's. With
    ``claim_free`` False (a replica not yet caught up) nothing is planned: a free trial may
    already be re-running on another peer, a budget's count may be stale (a restarted peer
    took a finished 8/8 experiment to 9/8), an experiment may have been stopped (a peer that
    joined started trials of one stopped 16 minutes before, 3 of 13 joins), and this peer's
    own trials that its last life ran wait to be found lost and resumed here first (new
    trials took their slots, and another peer ran them again from step 0). An experiment
    ``may_suggest`` refuses (its space is exhausted) gets free trials only. An experiment in
    ``thawable`` (this node has frozen trials of it to thaw) takes its turns as one with new
    points does, its budget spent or not: a thaw stands in for a new point (Work(key, None)).
    """
    # A spent budget still lets free trials run again: they are part of it, not beyond it.
    # Asked only of experiments with work left: runnable() materialises an experiment's code
    # (a peer that joined late wrote the bundles of 25 finished experiments, 1.4 GB); and
    # asked with no slot free, so a new experiment's code is laid out by the time one frees
    # (laid out only then, the first free slot of every peer went to an older experiment).
    experiments = list(experiments)
    if free_slots <= 0 or not claim_free:
        # Asked all the same of experiments that may start new trials (a scan of every spent
        # one's trials for free ones, at each pass of a busy peer, would cost more).
        for state in experiments:
            if not state.stopped and not state.budget_spent:
                runnable(state)
        return []
    candidates = [s for s in experiments if (work_left(s) or s.key in thawable) and runnable(s)]
    running_count = {s.key: 0 for s in candidates}
    # Ties on the count here went to the lowest key on every peer alike: with 3 experiments
    # on 2 peers of 2 slots, the slot a trial freed went back to its own experiment (now at 0
    # here, as the starved one) and the highest key ran nothing while both others ran.
    running_anywhere = {s.key: 0 for s in candidates}
    # Then the one this node ran a trial of longest ago: a free slot found both counts at 0
    # each time, and on a peer of one slot the same experiment (by the hash below) took every
    # trial, one submitted beside it none (0 in 40 s, against 110).
    # Its latest news, not its first start: a re-run of a lost or interrupted trial (or a
    # thaw) kept the start of long ago, and took every turn. By when that news arrived (this
    # node's monotonic clock; as -quiet), then by stamp (the trials held at opening arrived
    # together): by stamps alone, a clock stepped back 2 h left every new trial's stamps
    # below an old one's, and one slot took one experiment only, for 2 h.
    served_here: dict[bytes, tuple[float, int]] = {s.key: (-math.inf, -1) for s in candidates}
    own_order = {s.key: hashlib.blake2b(me + s.key, digest_size=8).digest() for s in candidates}
    # Each experiment's free trials with their order in the replica, listed once: each round
    # below looked through every trial of every experiment for them.
    free_trials: dict[bytes, list[tuple[int, TrialView]]] = {s.key: [] for s in candidates}
    for s in candidates:
        for order, t in enumerate(s.trials()):
            if t.state in FREE_STATES:
                free_trials[s.key].append((order, t))
            if t.key in running_here:
                running_count[s.key] += 1
            if t.state in ("running", "pending"):
                running_anywhere[s.key] += 1
            if (t.runner or t.node) == me:
                news = (-quiet_ms(t), max(t.last_seen, t.created))
                served_here[s.key] = max(served_here[s.key], news)
    out: list[Work] = []
    claimed: set[bytes] = set()
    planned_new: dict[bytes, int] = {}
    end_ms = ended_here(now_ms, quiet_ms, offset_ms)
    made_ms = made_here(offset_ms)
    held: dict[bytes, bool | None] = {}  # experiment -> _backoff (a pass changes nothing)

    def backing(state: ExperimentState) -> bool:
        if state.key not in held:
            held[state.key] = _backoff(state, now_ms, end_ms, made_ms)
        # In a failure streak, one new trial a pass at most (see backing_off).
        return held[state.key] is True or (
            held[state.key] is False and planned_new.get(state.key, 0) > 0
        )

    while len(out) < free_slots and candidates:
        # The free trial of each experiment this node is earliest in line for: of experiments
        # whose turn is equal but for this node's own order of them, the one with a free
        # trial it is earlier in line for goes first (by the own order alone, two peers freed
        # at once re-ran one trial of the experiment both put first, while the one first in
        # line for a trial of the other waited).
        free = {
            s.key: _claimable(
                free_trials[s.key], me, running_here, claimed, live_nodes, claim_delay_ms, quiet_ms
            )
            for s in candidates
        }
        # A trial whose checkpoint is here (this node ran it last) before any turn while
        # another live node is next in line for it: a peer restarted after a crash gave one
        # of its two slots to another experiment's new point, and the other peer re-ran its
        # trial from step 0 a claim delay later. (Alone, it keeps the turns: no one else
        # takes its trials, and a new experiment waited for all of them.)
        candidates.sort(
            key=lambda s: (
                1 if (f := free[s.key]) is None else f.not_ours,
                running_count[s.key],
                running_anywhere[s.key],
                served_here[s.key],
                _UNCLAIMABLE if f is None else f.rank,
                own_order[s.key],
            )
        )
        progressed = False
        for state in candidates:
            found = free[state.key]
            if found is not None:
                work: Work | None = Work(state.key, found.trial)
            else:
                work = _new_for(state, planned_new, may_suggest(state), backing)
                if work is None and state.key in thawable:
                    work = Work(state.key, None)
            if work is None:
                continue
            out.append(work)
            running_count[state.key] += 1
            running_anywhere[state.key] += 1
            if work.trial is not None:
                claimed.add(work.trial)
            else:
                planned_new[state.key] = planned_new.get(state.key, 0) + 1
            progressed = True
            break
        if not progressed:
            break
    return out


_UNCLAIMABLE = 1 << 62  # the place in line of an experiment with no free trial to claim now


class _Claim(NamedTuple):
    """A free trial this node may claim now, compared by its first three fields."""

    not_ours: int  # 0 if its checkpoint is here and another live node is in line for it, else 1
    rank: int  # this node's place in line for it (see claim_rank)
    order: int  # its order in the experiment's replica
    trial: bytes


def _claimable(
    free_trials: list[tuple[int, TrialView]],
    me: bytes,
    running_here: Collection[bytes],
    claimed: set[bytes],
    live_nodes: Collection[bytes],
    claim_delay_ms: int,
    quiet_ms: Callable[[TrialView], int],
) -> _Claim | None:
    """Of an experiment's free trials (with their order in its replica) this node may claim
    now (none in claimed), the one it is earliest in line for (its own checkpoints first
    where another live node is in line: see _Claim).

    Taken in the replica's order, every peer whose slot freed after all claim delays had
    passed (its slots busy meanwhile) took the same first one, and two peers re-ran one
    trial side by side while others waited (1 of 25 re-claims in a soak of 3 peers).
    """
    best: _Claim | None = None
    contested = any(node != me for node in live_nodes)
    for order, trial in free_trials:
        if trial.key in running_here or trial.key in claimed:
            continue
        rank = claim_rank(me, live_nodes, trial)
        found = _Claim(0 if contested and trial.runner == me else 1, rank, order, trial.key)
        if (rank == 0 or quiet_ms(trial) >= rank * claim_delay_ms) and (
            best is None or found[:3] < best[:3]
        ):
            best = found
    return best


def _new_for(
    state: ExperimentState,
    planned_new: dict[bytes, int],
    may_suggest: bool,
    backing: Callable[[ExperimentState], bool],
) -> Work | None:
    """A new point of the experiment, if it may have one now (``backing``: whether it backs
    off, asked once per experiment and pass: each answer scans its ended trials)."""
    if not may_suggest:
        return None
    max_trials = state.spec.max_trials
    if max_trials is not None and len(state) + planned_new.get(state.key, 0) >= max_trials:
        return None
    if backing(state):
        return None
    return Work(state.key, None)
