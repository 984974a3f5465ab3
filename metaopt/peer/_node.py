"""The peer: one asyncio process per machine tying replica, network, discovery and slots together.

Everything here is shell: decisions live in pure modules (_scheduler, metaopt._suggest,
metaopt.freezethaw, crdt's reconciliation) and this class only feeds them the clock, the
network and child processes, on a handful of periodic loops:

- anti-entropy: reconcile with a random live peer every ``timing.anti_entropy`` seconds;
- gossip: swap peer tables so one contact is enough to learn the whole cluster;
- schedule: mark lost trials, then fill free slots (free trials first, then new points);
- monitor: early-stopping decisions for this node's own running trials.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import math
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Callable, Collection, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crdt import (
    ClusterKey,
    FrameCodec,
    LevelDBStore,
    Record,
    SessionBusy,
    StoreError,
    StoreLocked,
    respond_steps,
)
from metaopt import __version__
from metaopt._errors import MetaoptError, SearchError
from metaopt._records import CONTROL, EVENT, MAX_REASON, MAX_STDERR, TRIAL, EventBody, is_metric
from metaopt._state import ACTIVE_STATES, FREE_STATES, ExperimentState, TrialView
from metaopt._writer import NodeWriter
from metaopt.peer._api import LocalApi
from metaopt.peer._catch_up import CatchUp
from metaopt.peer._config import PeerConfig, host_port
from metaopt.peer._gossip import PeerTable, own_addresses
from metaopt.peer._gpus import named_gpus
from metaopt.peer._identity import DataDir
from metaopt.peer._lags import RequestLags
from metaopt.peer._limits import LoopGuard, raise_fd_limit
from metaopt.peer._membership import Membership
from metaopt.peer._orphans import kill_orphans
from metaopt.peer._replica import Replica
from metaopt.peer._replication import Replicator, stepped
from metaopt.peer._runner import TrialRunner
from metaopt.peer._scheduler import (
    BACKOFF_AFTER,
    Work,
    backing_off,
    ended_here,
    failure_streak,
    find_lost,
    made_here,
    plan_work,
    settle_rank,
    settle_wait,
)
from metaopt.peer._storage import StorageTrouble, with_disk_advice
from metaopt.peer._transport import Client, Server
from metaopt.peer._twins import TwinWatch
from metaopt.peer._wire import PROTOCOL_VERSION, Request

if TYPE_CHECKING:
    from metaopt._suggest import Suggester

__all__ = ["PROTOCOL_VERSION", "Node"]

log = logging.getLogger("metaopt.peer")

# Tries at a new point that no trial arriving meanwhile lies next to (Node.new_trial); after
# the last the point is recorded anyway: a near one, never an equal one.
_LOOKS = 3
# At most this many turns of Timing.settle in a round of turns: peers ranked past it share
# turns (the crowding check still sees every point recorded before them). Without a cap, 20
# peers waited up to 0.95 s a trial, holding the schedule lock.
_MAX_SETTLE_TURNS = 8
# At most this many waits for a turn before a new point gives up and the pass runs again: each
# wait after the first means another peer's trial arrived (the cluster is not idle), or this
# peer's loop was too busy to wake in time.
_MAX_WAITS = 4
# Seconds between two tracebacks of a periodic task that keeps failing.
_FAILURE_LOG_EVERY = 60.0
# Seconds between two looks of the stall watcher (see Node._loop_held).
_STALL_TICK = 1.0
# Seconds a request's lag may exceed its sender's usual before it counts as having waited
# (see peer._lags): scheduling jitter and a busy loop are not a pause.
_JITTER = 0.5
# Seconds a sender's least request lag is remembered (see peer._lags): its clock stepped back
# makes its requests read that much older until then. Twice crdt's max_skew.
_LAG_WINDOW = 240.0
# Seconds after a hold of the event loop during which a request of a sender with no lag on
# record is taken as having waited through it (see peer._lags).
_AFTER_HOLD = 2.0


def _identity_of(path: Path) -> tuple[int, int]:
    """Which file system object path names (device and inode). Raises OSError."""
    info = os.stat(path)
    return info.st_dev, info.st_ino


def _import_search_stack() -> None:
    for module in ("metaopt._suggest", "metaopt.search.gp", "metaopt.freezethaw"):
        importlib.import_module(module)


def _open_store(
    dirs: DataDir,
    node_id: bytes | None = None,
    patience: float = 5.0,
    read_patience: float = 120.0,
) -> LevelDBStore:
    """The replica's store. A read of a stopped peer's replica (`metaopt status`, `best`,
    `export`, `logs`) holds its lock while it folds the replica, so a locked store is tried
    again: for a few seconds if a peer runs there (it holds it for good, and a start beside
    it fails with the error), else for as long as such a read may take. (A read of a million
    records holds it 12-20 s: a peer started meanwhile gave up after 5 s.)"""
    began = time.monotonic()
    said = False
    while True:
        if node_id is not None:  # (at each try: a replica moved aside while this one waited)
            dirs.note_if_lost(node_id)
        try:
            return LevelDBStore(dirs.replica)
        except StoreLocked:
            waited = time.monotonic() - began
            pid = dirs.running_pid()
            if pid is not None and waited > patience:  # as `peer start --detach` says it
                raise MetaoptError(
                    f"a peer is already running on {dirs.root} (pid {pid}); stop it with"
                    f" `metaopt peer stop --data-dir {dirs.root}` or choose another"
                    " --data-dir"
                ) from None
            if waited > read_patience:
                raise MetaoptError(
                    f"{dirs.replica} is in use by another process (a Study, or a long"
                    " `metaopt status` read); stop it, or choose another --data-dir"
                ) from None
            if pid is None and waited > patience and not said:
                log.warning("waiting for another process reading %s to finish", dirs.replica)
                said = True
            time.sleep(0.1)
        except StoreError as exc:
            raise MetaoptError(with_disk_advice(str(exc), "choose another --data-dir")) from None


def _key_of(text: str) -> ClusterKey:
    """A key the user gave, or a one-line MetaoptError saying what is wrong with it."""
    try:
        return ClusterKey.from_text(text)
    except Exception as exc:
        raise MetaoptError(str(exc)) from None  # (it says what is wrong with the key)


def _parsed(key_text: str | None) -> tuple[ClusterKey | None, str | None]:
    """The key a data directory's key file holds and what is wrong with it: (None, None)
    with no file, (None, why) if damaged. Compared as keys, hand-written case and spacing do
    not make a cluster's own key look like another's."""
    if key_text is None:
        return None, None
    try:
        return ClusterKey.from_text(key_text), None
    except Exception as exc:
        return None, str(exc)


class Node:
    """A running peer. ``await start()``, then ``await run_until_stopped()``."""

    def __init__(
        self,
        config: PeerConfig,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        # Two clocks: the wall clock stamps records and is compared with their stamps (turns,
        # the failure back-off); liveness and a trial's quiet time are measured on the
        # monotonic one, which NTP does not step: a step forward past lost_after made every
        # live peer's running trial look lost here, and run again.
        self.clock = clock
        self.monotonic = monotonic
        if config.key_text is not None:
            # Read before the data directory is made: a mistyped --key was refused only once
            # it had written a node id, an empty replica, trials/ and bundles/.
            _key_of(config.key_text)
        if config.gpus.strip().lower() not in ("auto", "none"):
            named_gpus(config.gpus)  # (so too a --gpus that names no GPU: see named_gpus)
        self.dirs = DataDir(config.data_dir)
        self.dirs.ensure()
        self.node_id = self.dirs.node_id()
        self.twins = TwinWatch(monotonic(), os.urandom(8))  # (Request.run and .age)
        self.store = _open_store(self.dirs, self.node_id)  # (see DataDir.note_if_lost)
        # Only with the data directory's lock held: a second start that fails on it wrote its
        # --key over the running peer's, which the CLI then could not reach or stop (and
        # two starts on a lost replica would each have written a new node id).
        try:
            # Read again: a start on a lost replica that held the lock while this one waited
            # for it took a new id, and this one's would be the old one, with no replica.
            old = self.dirs.node_id()
            holds_own = self.store.version_vector().high(old) > 0
            self.node_id = self.dirs.replica_claimed(old, holds_own)
            if self.node_id != old:
                log.warning(
                    "the replica node %s wrote is gone from %s (moved aside or deleted); this"
                    " peer is node %s from now on, so that none of its records takes a number"
                    " an old one holds (the old ones come back from its peers)",
                    old.hex()[:8], self.dirs.root, self.node_id.hex()[:8],
                )  # fmt: skip
            self.key = self._load_key()
        except BaseException:
            self.store.close()
            raise
        self.codec = FrameCodec([self.key])
        self.rng = random.Random(int.from_bytes(self.node_id, "big") ^ time.time_ns())
        # Folded once the server listens (start(), load()): see Replica.load.
        self.replica = Replica(self.store, clock, monotonic, defer=True)
        self._opened_dirs: dict[Path, tuple[int, int]] = {}  # (see start, _watch_data_dir)
        self.writer = NodeWriter(self.store, self.node_id, clock)
        self.peers = PeerTable()
        self.port = config.port
        self.addr = config.address
        self.client = self._new_client()
        self.replicator = Replicator(
            self.store,
            self.node_id,
            self.peers,
            self.client,
            clock=monotonic,  # (it reads the clock for the peer table only)
            rng=self.rng,
            push_fanout=config.timing.push_fanout,
            peer_timeout=config.timing.peer_timeout,
        )
        self.store.subscribe(self.replicator.on_new)
        self.runner = TrialRunner(self, config)
        self.api = LocalApi(self)
        self._suggesters: dict[bytes, Suggester] = {}
        # Experiments whose spec cannot be searched (a bad space from another peer or an older
        # metaopt): the spec never changes, so they are skipped, not retried on every pass.
        self._unsearchable: dict[bytes, str] = {}  # experiment key -> why
        # Experiment key -> (its trial count, why) when every point drawn was already a trial:
        # no new suggestion is tried until a trial arrives (a finite space stays exhausted; it
        # was searched again, and warned of, on every scheduling pass).
        self._exhausted: dict[bytes, tuple[int, str]] = {}
        # What was said of each exhausted experiment, until a trial of it is made here again:
        # each trial that arrived (the last points' runs, a catch-up after a restart) had it
        # searched and said again, twice within 2 s in a README walk.
        self._said_exhausted: dict[bytes, str] = {}
        self._failing: set[bytes] = set()  # experiments warned of as failing run after run
        # Each periodic task's failure: when last logged, and how often it failed since.
        self._failures: dict[str, tuple[float, int]] = {}
        # Experiment key -> (its trial count, when (ms, this clock) the replica came to hold
        # that many): where the turns to record its next point are counted from (settle_wait).
        self._count_since: dict[bytes, tuple[int, int]] = {}
        # Experiment key -> its latest trial's stamp, each capped at the trial's arrival here
        # (at this opening for those held, noted once loaded): where those turns count from
        # (_turns_since).
        self._opened_ms = int(self.clock() * 1000)
        self._latest_stamp: dict[bytes, int] = {}
        self._load_lock = asyncio.Lock()
        self.failed: str | None = None  # why the peer stopped by itself, if it did
        self._submitting = False  # records a user submits here are being stored (add_submitted)
        self.replica.listen(self._on_records)
        self._loop_guard = LoopGuard()
        self.storage = StorageTrouble()  # a disk refusing writes (see _storage)
        self._tasks: list[asyncio.Task[None]] = []
        self._search_imported: asyncio.Future[None] | None = None  # see start()
        self._stopping = asyncio.Event()
        self._schedule_lock = asyncio.Lock()
        self._schedule_again = False
        self._discovery: Any = None
        self.started_at = monotonic()
        # The stall watcher's last look, and whether it runs (see _watch_for_stalls).
        self._last_tick = self.monotonic()
        self._watching = False
        self._lags = RequestLags(_LAG_WINDOW, _JITTER, 4 * self.peers.config.max_peers)
        # The last hold of the loop, its end and length (see Membership._waited).
        self._hold_ended_at, self._hold_length = -math.inf, 0.0
        self.membership = Membership(
            config,
            self.node_id,
            self.dirs,
            self.peers,
            self.client,
            self.twins,
            self._lags,
            # Read at each call, as the runner's: both are the node's, and tests move them.
            monotonic=lambda: self.monotonic(),
            rng=self.rng,
            started_at=lambda: self.started_at,
            stopping=self._stopping,
            listened=self.listened,
            hold_just_ended=self._hold_just_ended,
            last_hold_ended=self._last_hold_ended,
            spawn=self._spawn,
            stop_itself=self._stop_itself,
        )
        self.replicator.on_refusal = self.membership.note_refusal
        self.catch_up = CatchUp(
            config.timing,
            self.replicator,
            self.membership,
            monotonic=lambda: self.monotonic(),
            started_at=lambda: self.started_at,
            loading=lambda: self.replica.loading,
            stopping=self._stopping,
            receiving=lambda: self._receiving(),
            offset_ms=self._clock_offset_ms,
            named=self._named,
        )
        # Last: its handlers include the membership's, made just above.
        self.server = Server(
            self.codec,
            self._handlers(),
            node_id=self.node_id,
            receiving_elsewhere=lambda: self.client.receiving + self.replicator.in_session(),
            catching_up=lambda: not self.catch_up.judged_caught_up,
        )
        self.server.stall_timeout = config.timing.request_timeout

    def _new_client(self) -> Client:
        return Client(
            self.codec,
            self.node_id,
            self.addr,
            timeout=max(self.config.timing.transfer_timeout, self.config.timing.request_timeout),
            read_timeout=self.config.timing.request_timeout,
            warn_refusals=True,
            run=self.twins.token,
            age=lambda: self.twins.age(self.monotonic()),
            connect_timeout=min(
                self.config.timing.connect_timeout, self.config.timing.request_timeout
            ),
        )

    def _load_key(self) -> ClusterKey:
        """The cluster key: the one given, else the data directory's, else a new cluster's.

        Sets ``new_cluster`` when nothing says this peer joins an existing cluster (no key
        given, no seed, an empty replica, no peer it talked to when it last ran), so the CLI
        prints the join command, also on the first start that succeeds after a failed one had
        already written the key.
        """
        given, stored = self.config.key_text, self.dirs.read_key()
        # (Remembered peers: a peer that had joined a cluster with no experiment yet, started
        # again without --join, said "This is a new cluster".)
        self.new_cluster = (
            given is None
            and not self.config.join
            and len(self.store) == 0
            and not self.dirs.read_peers()
        )
        ask = "(`metaopt peer key` on another of its peers prints it)"
        if given is None and stored is None:
            if self.config.join:
                # A new key would be refused by every seed: the peer would sit alone, saying
                # only "this is a new cluster".
                raise MetaoptError(
                    "--join needs the cluster's key: pass --key or --key-file (`metaopt peer"
                    " key` on a peer of that cluster prints them)"
                )
            if len(self.store):
                # A new key made the replica's cluster another one, without a word, and the
                # peer then refused that cluster's own key as another cluster's.
                raise MetaoptError(
                    f"{self.dirs.key_file} is missing, and {self.dirs.root} holds a cluster's"
                    f" replica: start it with that cluster's --key or --key-file {ask}, or use"
                    " a fresh --data-dir"
                )
            key = ClusterKey.generate(os.urandom(32))
            self.dirs.write_key(key.to_text())
            return key
        own, damage = _parsed(stored)
        if given is not None:
            key = _key_of(given)
        elif own is not None:
            key = own
        else:  # the file's fault, not a key the user typed
            raise MetaoptError(
                f"{self.dirs.key_file} is damaged ({damage}); start with the cluster's --key"
                f" or --key-file {ask}"
            )
        if damage is not None and len(self.store):
            raise MetaoptError(
                f"{self.dirs.key_file} is damaged, so whether {self.dirs.root} holds the"
                f" replica of cluster {key.fingerprint} cannot be told: if it does, move"
                f" {self.dirs.key_file.name} aside and start again with this key; else use a"
                " fresh --data-dir"
            )
        if own is not None and own != key and len(self.store):
            # Its replica would flow into the other cluster (code, history and all, and its
            # open experiments would run there).
            raise MetaoptError(
                f"{self.dirs.root} holds the replica of another cluster (key fingerprint"
                f" {own.fingerprint}, not {key.fingerprint}); start it with that cluster's key,"
                " or use a fresh --data-dir for this one"
            )
        if stored != key.to_text():
            if own is not None and own != key:
                # Its replica is empty, so nothing leaves the old cluster; but say so, or a
                # mistyped --key makes a peer of a new, one-peer cluster without a word.
                log.warning(
                    "%s held the key of cluster %s, with an empty replica: it now belongs to"
                    " cluster %s",
                    self.dirs.root,
                    own.fingerprint,
                    key.fingerprint,
                )
            self.dirs.write_key(key.to_text())
        return key

    # ----------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        raise_fd_limit()
        self.port = await self.server.start(self.config.host, self.config.port)
        self._loop_guard.install(asyncio.get_running_loop())
        self.addr = host_port(self.config.host, self.port)
        self.client = self._new_client()  # it names the bound address to its peers
        self.replicator.client = self.client
        self.membership.client = self.client
        local: list[str] = []
        if self.config.host == "0.0.0.0":  # others know us by this machine's addresses
            from metaopt.peer._discovery import local_adapters

            local = [ip for _, ip, _ in local_adapters()]
        self.peers.own_addrs = own_addresses(self.config.host, self.port, local)
        self.dirs.write_started(self.addr)
        for seed in self.config.join:
            self.peers.add_seed(seed)
        self.membership.recall_peers()
        # What the data directory and replica were when opened (see _watch_data_dir).
        self._opened_dirs = {p: _identity_of(p) for p in (self.dirs.root, self.dirs.replica)}
        orphans = kill_orphans(self.dirs.root)  # we hold the data directory's lock by now
        if orphans:
            log.warning(
                "stopped %d process(es) of trials left running when this peer last died: %s",
                len(orphans),
                ", ".join(map(str, orphans)),
            )
        if self.config.mdns:
            await self._start_discovery()
        timing = self.config.timing
        # The search and early-stopping stacks (scipy) take seconds to import; imported on the
        # loop at the first suggestion, they stalled replies, heartbeats and the turns to
        # record new points (a trial taken in 68 ms late). A thread imports them now, and the
        # first suggestion waits for it rather than import on the loop meanwhile.
        self._search_imported = asyncio.ensure_future(asyncio.to_thread(_import_search_stack))
        self._tasks = [
            asyncio.ensure_future(self._every(timing.anti_entropy, self._anti_entropy)),
            asyncio.ensure_future(self._every(timing.gossip, self._gossip)),
            asyncio.ensure_future(self._every(timing.gossip, self._watch_data_dir)),
            asyncio.ensure_future(self._watch_for_stalls()),
            self._search_imported,
            asyncio.ensure_future(self._load_and_run()),
        ]
        log.info(
            "peer %s (%s) listening on %s, %d slot(s), data in %s",
            self.node_id.hex()[:8],
            self.config.name or socket.gethostname(),
            self.addr,
            len(self.runner.slots),
            self.dirs.root,
        )

    async def load(self) -> None:
        """Fold the replica held here (Replica.load) and note its experiments' turns.

        start() does it after the server listens: meanwhile the peer replicates, gossips and
        answers `peer status`; the API's other calls say it is loading (LocalApi), and nothing
        is scheduled or judged lost on part of the history.
        """
        began = self.monotonic()
        async with self._load_lock:  # (a second call waits for the first's fold)
            if not self.replica.loading:
                return
            await self.replica.load()
            for key, state in self.replica.experiments.items():
                latest = max((min(t, self._opened_ms) for t in state.trial_stamps()), default=0)
                self._latest_stamp[key] = max(self._latest_stamp.get(key, 0), latest)
        if self.monotonic() - began >= 1:
            log.info(
                "loaded %d experiment(s), %d records, in %.1f s",
                len(self.replica.experiments),
                len(self.store),
                self.monotonic() - began,
            )

    async def _load_and_run(self) -> None:
        # A replica it cannot load stops the peer: refusing every call for good helps nobody.
        try:
            await self.load()
        except StoreError as exc:  # (it says what is wrong and what to do)
            self.failed = str(exc)
            log.error("%s; the peer stops", exc)
        except Exception as exc:
            self.failed = f"cannot load the replica in {self.dirs.replica}: {exc}"
            log.exception("loading this peer's replica failed; the peer stops")
        if self.failed:
            self.request_stop()
        elif not self._stopping.is_set():
            timing = self.config.timing
            self._tasks += [
                asyncio.ensure_future(self._every(timing.schedule, self._schedule)),
                asyncio.ensure_future(self._every(timing.monitor, self._monitor)),
            ]

    async def _start_discovery(self) -> None:
        try:
            from metaopt.peer._discovery import Discovery, DiscoveryConfig
        except ImportError:  # pragma: no cover - the module ships with metaopt
            return
        config = DiscoveryConfig(
            host=self.config.host,
            port=self.port,
            node_id=self.node_id.hex(),
            cluster_fingerprint=self.key.fingerprint,
            protocol_version=PROTOCOL_VERSION,
            name=self.config.name or socket.gethostname(),
        )
        twin_at = self.membership.maybe_twin_at
        self._discovery = Discovery(
            config,
            on_found=self._on_found,
            on_foreign=self._on_foreign,
            on_self=lambda info: twin_at(host_port(info.host, info.port), 0.0),
        )
        try:
            await self._discovery.start()
        except Exception as exc:  # no multicast here: --join seeds still work
            log.warning("mDNS discovery is off (%s); use --join HOST:PORT", exc)
            self._discovery = None
        else:
            self.membership.mdns_ignored = self._discovery.ignored

    def _on_found(self, info: Any) -> None:
        try:
            node = bytes.fromhex(info.node_id)
        except ValueError:
            return
        self.peers.add(node, f"{info.host}:{info.port}", self.monotonic(), contacted=False)

    def _on_foreign(self, info: Any) -> None:
        log.info(
            "ignoring peer %s at %s:%s of another cluster (fingerprint %s); to join it, restart"
            " this peer with that cluster's key: metaopt peer start --key <key from"
            " `metaopt peer key` there>",
            getattr(info, "name", "?"),
            info.host,
            info.port,
            info.fingerprint,
        )

    async def _every(self, interval: float, step: Callable[[], Any]) -> None:
        while not self._stopping.is_set():
            await self._round(step)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=interval)

    async def _round(self, step: Callable[[], Any]) -> None:
        """One round of a periodic task: its failure is noted, not raised (one failed round
        must not end the loop, nor a pass that kick() started be a task's lost traceback)."""
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            name = getattr(step, "__name__", str(step))
            if self.storage.note(exc, name):
                return
            # A fault met at every round logged its traceback twice a second, for good: once
            # a minute, with how often it failed meanwhile.
            said_at, unsaid = self._failures.get(name, (-math.inf, 0))
            unsaid += 1
            if self.monotonic() - said_at >= _FAILURE_LOG_EVERY:
                more = f" ({unsaid - 1} more times since it was last logged)"
                log.exception("periodic task %s failed%s", name, more if unsaid > 1 else "")
                said_at, unsaid = self.monotonic(), 0
            self._failures[name] = (said_at, unsaid)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` beside the periodic tasks, stopped with them."""
        task = asyncio.ensure_future(work)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def run_until_stopped(self) -> None:
        await self._stopping.wait()

    def request_stop(self) -> None:
        self._stopping.set()

    def _stop_itself(self, why: str) -> None:
        """Stop this peer by itself (see failed), saying why."""
        self.failed = why
        log.error("%s; this peer stops", self.failed)
        self.request_stop()

    @property
    def stopping(self) -> bool:
        """Whether this peer is stopping: it starts no trial any more."""
        return self._stopping.is_set()

    async def _monitor(self) -> None:
        # Its stopper judges on everyone's curves: not on part of them (a restarted peer's
        # stopper killed frozen trials by a partial history), nor before an experiment's stop
        # may have arrived.
        await self.runner.monitor(judge=self.caught_up())

    async def stop(self) -> None:
        """Graceful: running trials are recorded as interrupted, pushed, then everything closes."""
        self._stopping.set()
        # A scheduling pass in flight (waiting on a suggestion) may still launch a trial: let
        # it end first, or that trial would miss the interrupt and be killed with the loop,
        # with no end event, and show as running until it is found lost.
        async with self._schedule_lock:
            await self.runner.interrupt_all("its peer was stopped")
            self.runner.record_unrecorded(last=True)  # (kept in memory only)
        self.runner.watchdog.close()
        await self.replicator.drain(timeout=2.0)
        # One last reconciliation so the interrupted events reach someone even if pushes failed.
        live = self.peers.random_live(
            self.rng, 2, self.monotonic(), self.config.timing.peer_timeout
        )
        for peer in live:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.replicator.reconcile(peer.addr), timeout=3.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._discovery is not None:
            with contextlib.suppress(Exception):
                await self._discovery.stop()
        # Told after the server has stopped: a call of theirs answered after the leave would
        # have counted as word from this peer and made it live again.
        await self.server.stop()
        await self.membership.leave()
        await self.client.close()
        await self.runner.settle_layouts()  # (their threads read the store through the loop)
        self.replica.close()
        self.store.close()
        for path in (self.dirs.pid_file, self.dirs.address_file, self.dirs.started_file):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                # A disk gone read-only: the stop went on, not a traceback ("ended before its
                # stop completed"); the file left names no peer (see DataDir.running_pid).
                log.warning("cannot remove %s (%s); it names no running peer", path, exc.strerror)
        self._loop_guard.uninstall()

    # ------------------------------------------------------------------------------ network

    def _handlers(self) -> dict[str, Callable[[Request], Any]]:
        handlers: dict[str, Callable[[Request], Any]] = {
            "sync": self._on_sync,
            "gossip": self._on_gossip,
            "leave": self.membership.on_leave,
        }
        handlers.update(self.api.handlers())
        return handlers

    def _last_hold_ended(self) -> float:
        """When the latest hold of this peer's loop ended (-inf: none), one just ended too."""
        self._check_stall()
        return self._hold_ended_at

    def _hold_just_ended(self, now: float) -> float:
        """The length of a hold of this peer's loop that ended just before ``now`` (0 if none):
        what a request read now may have waited in the sockets."""
        self._check_stall()  # (a hold just ended is measured before its queue is read)
        return self._hold_length if now - self._hold_ended_at <= _AFTER_HOLD else 0.0

    def _busy_with(self, request: Request) -> bool:
        """Whether to refuse a peer's session: this peer has one of its own with it under way.

        Two sessions between the same two peers, one each way, carried a joining peer's whole
        catch-up twice: each side worked out from the same vectors what the joiner lacked, and
        sent it. Only the peer of the lower node id refuses, so of two sessions started at
        once, one goes on.
        """
        addr = self.membership.sender_addr(request)
        if addr is None or self.node_id > request.sender:
            return False
        known = self.peers.get(request.sender)
        return self.replicator.in_session_with(addr) or (
            known is not None and self.replicator.in_session_with(known.addr)
        )

    async def _on_sync(self, request: Request) -> bytes:
        self._hold_back_while_storage_fails()
        self.membership.contact(request)
        self.membership.refuse_if_stopped_by(request)
        if not isinstance(request.body, bytes):
            raise MetaoptError("a sync request carries bytes")
        busy = self._busy_with(request)
        self.replicator.storing += 1
        try:
            return await stepped(respond_steps(self.store, request.body, busy=busy))
        except SessionBusy:
            raise MetaoptError(
                "busy: this peer has a session with yours under way; it will sync from there"
            ) from None
        except Exception as exc:
            if self.storage.note(exc, "a sync"):
                self._hold_back_while_storage_fails()
            raise
        finally:
            self.replicator.storing -= 1

    def _probe_storage(self) -> None:
        """Try the store again, now and then, while its writes fail (see _storage)."""
        probe = getattr(self.store, "probe", None)  # (an in-memory store never fails)
        if not self.storage.probe_due() or probe is None:
            return
        try:
            probe()
        except Exception as exc:
            if not self.storage.note(exc, "a probe"):
                raise
            return
        if self.storage.recovered():
            self.catch_up.rejoin()

    async def _watch_for_stalls(self, tick: float = _STALL_TICK) -> None:
        """Notice when this peer's event loop did not run for a while (see _loop_held)."""
        self._last_tick = self.monotonic()
        self._watching = True
        while not self._stopping.is_set():
            await asyncio.sleep(tick)
            self._check_stall(tick)
            self._last_tick = self.monotonic()

    def _check_stall(self, tick: float = _STALL_TICK) -> None:
        """Report a hold since the watcher's last tick (beyond the tick), once: the
        scheduling pass looks too, as the watcher may not have run since a hold ended."""
        if not self._watching:
            return
        now = self.monotonic()
        held = now - self._last_tick - tick
        if held > 0:
            self._last_tick = now - tick  # (measured: not measured again)
        if held > tick:
            self._hold_ended_at, self._hold_length = now, held + tick  # (see Membership._waited)
        self._loop_held(held)

    def _loop_held(self, held: float) -> None:
        """After the event loop was held ``held`` seconds, listen again before judging others.

        Held, this peer heard nobody: the trials of every other peer looked quiet for that
        long, so after a 77 s fold of a large history (or the process stopped with SIGSTOP, a
        VM paused) their running trials were taken for lost and run again. Past half the peer
        timeout it judges other peers' trials as a peer just started does.
        """
        if held < self.config.timing.peer_timeout / 2:
            return
        log.warning(
            "this peer did not run for %.0f s (a long computation on its event loop, or the"
            " process was paused); it takes no other peer's trial for lost until it has heard"
            " from them again",
            held,
        )
        self.catch_up.rejoin()

    def _hold_back_while_storage_fails(self) -> None:
        """Refuse a peer's call while this replica cannot be written: answered, the caller
        counts this peer live, and its trials showed running for as long as its disk was full."""
        problem = self.storage.problem()
        if problem is not None:
            raise MetaoptError(f"this peer {problem}")

    async def _on_gossip(self, request: Request) -> Any:
        self._hold_back_while_storage_fails()
        return self.membership.on_gossip(request)

    async def _anti_entropy(self) -> None:
        if self.storage.problem():  # (see _hold_back_while_storage_fails)
            return
        if self.server.receiving and not self.catch_up.judged_caught_up:
            # Catching up, it reads another peer's message of records: its own session's
            # answers would share the link with it (see Server._put_off). Next round.
            return
        await self.replicator.anti_entropy_once()  # (which counts the partner live)

    async def _watch_data_dir(self) -> None:
        """Stop if the data directory was deleted or replaced under this peer: it went on
        writing its replica into deleted files, silently, and `peer status` and `peer stop`
        said no peer ran there (3 of 3); a lone peer lost all it recorded after."""
        for path, opened in self._opened_dirs.items():
            try:
                now = _identity_of(path)
            except FileNotFoundError:
                now = None
            except OSError:  # (a disk failing to answer: said by the writes that fail)
                continue
            if now != opened and not self.stopping:
                # (Deleted, it may be back already: a layout of code recreates the folders.)
                self._stop_itself(
                    f"{path} was deleted or replaced while this peer ran (its replica with"
                    " it); start the peer again (a new replica, filled from its peers)"
                )
                return

    async def _gossip(self) -> None:
        if self.storage.problem():  # (see _hold_back_while_storage_fails)
            return
        await self.membership.gossip_round()

    def is_alive(self, node: bytes) -> bool:
        """Whether ``node`` is live (see Membership.is_alive): what LocalApi asks its node."""
        return self.membership.is_alive(node)

    # ----------------------------------------------------------------------------- records

    def write_event(
        self,
        experiment: bytes,
        trial: bytes,
        kind: str,
        *,
        step: int | None = None,
        metrics: dict[str, Any] | None = None,
        exit_code: int | None = None,
        reason: str | None = None,
        stderr: str | None = None,
        supersedes: tuple[bytes, ...] = (),
        after: bytes | None = None,
        rung: int | None = None,
    ) -> Record:
        clean = {k: v for k, v in (metrics or {}).items() if is_metric(v)}
        if reason is not None and len(reason) > MAX_REASON:
            reason = reason[:2000] + " … " + reason[-1900:]
        if stderr is not None and len(stderr) > MAX_STDERR:
            stderr = stderr[-MAX_STDERR:]
        body = EventBody(
            trial,
            experiment,
            kind,
            self.node_id,
            step,
            clean,
            exit_code,
            reason,
            stderr,
            supersedes,
            after,
            rung,
        )
        return self.writer.write(EVENT, body.to_body(), [trial, experiment])

    def _on_records(self, records: list[Record]) -> None:
        """Note each experiment's latest trial stamp and when its count changed here."""
        if self.storage.recovered():  # (they were written)
            self.catch_up.rejoin()
        now_ms = int(self.clock() * 1000)
        # (A submission's records carry the experiment's origin, not this node's, yet are no
        # news from other peers.)
        others = [] if self._submitting else [r for r in records if r.origin != self.node_id]
        self.catch_up.note_arrived(others, now_ms)
        for record in records:
            if record.kind == TRIAL:
                for key in record.links:  # its experiment, known here yet or not
                    stamp = min(record.time, now_ms)
                    self._latest_stamp[key] = max(self._latest_stamp.get(key, 0), stamp)
        for key in {k for r in records if r.kind != EVENT for k in (r.key, *r.links)}:
            state = self.replica.experiments.get(key)  # an experiment, or one a trial is of
            if state is not None and self._count_since.get(key, (-1, 0))[0] != len(state):
                self._count_since[key] = (len(state), now_ms)

    def add_submitted(self, records: list[Record]) -> None:
        """Store the records of a submission made here (an experiment and its code blobs) and
        push them to the other peers: they carry the experiment's origin, not this node's, so
        they are pushed explicitly rather than as this node's, and are not taken for others'
        records arriving (caught_up then waited two anti-entropy periods for quiet: a peer
        alone for 30 s started each new submission's first trial 4.5 s late)."""
        self._submitting = True
        try:
            added = self.store.add(records)
        finally:
            self._submitting = False
        self.replicator.push(added)

    def _turns_since(self, state: ExperimentState, now_ms: int) -> int:
        """When (ms) the turns at the experiment's next point count from: its latest trial's
        stamp (its submission's before any), the same on every peer that holds the same trials
        whatever order they arrived in; each stamp capped at its arrival (a writer's clock
        running ahead moves the turns of that count alone), and the whole at when this count
        arrived here, or now for a clock stepped back since (once, so the turns stay put). Not
        the arrival alone: a peer whose loop was busy took a trial in 68 ms late, counted its
        turns late, and recorded a point 14 ms after another peer had, in that one's turn."""
        known = self._count_since.get(state.key)
        if known is None or known[0] != len(state) or known[1] > now_ms:
            known = self._count_since[state.key] = (len(state), now_ms)
        if not len(state):
            return min(self.replica.submitted_ms(state.key), known[1])
        return min(self._latest_stamp.get(state.key, 0), known[1])

    def _turn_wait(self, state: ExperimentState) -> int:
        """How long (ms) this node waits for its turn to record the experiment's next point."""
        now_ms = int(self.clock() * 1000)
        return settle_wait(
            self.node_id,
            self.membership.turn_nodes(),
            state.key,
            len(state),
            self._turns_since(state, now_ms),
            now_ms,
            int(self.config.timing.settle * 1000),
            _MAX_SETTLE_TURNS,
        )

    def stop_experiment(self, state: ExperimentState) -> Record:
        return self.writer.write(CONTROL, {"action": "stop"}, [state.key])

    def suggester(self, state: ExperimentState) -> Suggester:
        # Imported on first use: the search stack (scipy) costs seconds to import, and a peer
        # should answer its peers before it has anything to suggest.
        from metaopt._suggest import Suggester

        suggester = self._suggesters.get(state.key)
        if suggester is None:
            seed = int.from_bytes(self.node_id[:4], "little")
            try:
                suggester = Suggester(state, self.node_id, seed=seed)
            except MetaoptError as exc:
                self._unsearchable[state.key] = str(exc)
                raise
            self._suggesters[state.key] = suggester
        return suggester

    def _forget_finished(self) -> None:
        """Drop the search and early stopper of experiments that have finished: nothing asks
        them again (one that comes back to life gets new ones). Kept, a freeze-thaw stopper
        held its last fit, 3.4 MB over 600 curves, for every experiment it ever judged, until
        the peer restarted."""
        for key in self._suggesters.keys() | self.runner.early_stopping.stopper_keys():
            state = self.replica.experiments.get(key)
            # (Not while frozen trials of it here are judged: a stopped experiment's, made again
            # at every monitor pass and dropped at the next scheduling pass.)
            if (
                state is not None
                and state.finished
                and not self.runner.early_stopping.own_frozen(state)
            ):
                self._suggesters.pop(key, None)
                self.runner.early_stopping.forget_stopper(key)

    def blocked_here(self, experiment: bytes) -> str | None:
        """Why this peer starts no trial of the experiment, or None if it may."""
        return (
            self._unsearchable.get(experiment)
            or self.runner.unrunnable.get(experiment)
            or self.exhausted_now(experiment)
            or (
                "its history is still arriving from other peers: no new trial of it here until"
                " it has"
                if self.history_arriving(experiment)
                else None
            )
        )

    def _named(self, experiment: bytes) -> str:
        """The experiment's name (of one still being folded too), else its key's digits."""
        state = self.replica.arriving(experiment)
        return experiment.hex()[:12] if state is None else state.spec.name

    def _receiving(self) -> bool:
        """Whether another peer's records are on their way here (see CatchUp)."""
        return self.server.receiving + self.client.receiving + self.replicator.storing > 0

    def history_arriving(self, experiment: bytes) -> bool:
        """Whether a history of the experiment still arrives here (see CatchUp)."""
        return self.catch_up.history_arriving(experiment)

    def exhausted_now(self, experiment: bytes) -> str | None:
        """Why no new point of the experiment is searched for: every point drawn was already a
        trial, and no trial has arrived since (lost ones are still run again)."""
        exhausted = self._exhausted.get(experiment)
        state = self.replica.experiments.get(experiment)
        if exhausted is None or state is None or exhausted[0] != len(state):
            return None
        return exhausted[1]

    async def new_trial(self, state: ExperimentState) -> TrialView | None:
        """Suggest and record a new trial; None if the budget ran out meanwhile, or the turn
        to record it kept moving (the next pass asks again).

        The suggestion (a GP fit and acquisition search: up to a few hundred milliseconds on a
        long history) runs in a worker thread on a snapshot, so replication, heartbeats and the
        API go on meanwhile. Calls are serialised by the schedule lock.

        Peers asking at the same moment from the same history get the same point, so a peer
        records only at the start of its turn (``settle_wait``: turns of ``Timing.settle``
        counted from the latest trial; none for a peer alone), by when it has heard of the
        points recorded in the turns before; if one of them lies next to its own, it asks
        again with that trial pending (up to ``_LOOKS`` times).
        """
        if self._search_imported is not None and not self._search_imported.done():
            await asyncio.wait([self._search_imported])  # (its failure is the import's below)
        from metaopt._suggest import params_key  # imported with the suggester, see suggester()

        suggester = self.suggester(state)
        suggest_ms = 0.0
        # The first in turn from an empty history takes the experiment's defaults (prepare).
        lead = settle_rank(self.node_id, self.membership.turn_nodes(), state.key, 0) == 0
        look = waits = 0
        while True:
            if state.budget_spent or state.stopped:
                # An earlier slot of this pass, or other peers, spent it: a space whose last
                # point went that way has none left, and was taken for exhausted for good.
                return None
            # Off the loop too, from a snapshot: seconds for 50,000 trials.
            trials = state.trials()
            draw = await asyncio.to_thread(suggester.prepare, look, lead=lead, trials=trials)
            began = time.perf_counter()
            params, counter = await asyncio.to_thread(suggester.compute, draw)
            suggest_ms += (time.perf_counter() - began) * 1000
            last = look + 1 == _LOOKS
            while True:
                if state.budget_spent or state.stopped or self._stopping.is_set():
                    return None  # other peers' trials or a stop arrived while this one was chosen
                crowded = suggester.crowded(draw, params)
                if crowded and not last:
                    break
                arrived = draw.arrived_since(state.trials())
                if crowded and params_key(params) in {params_key(t.params) for t in arrived}:
                    return None  # after the last look a near point, but never an equal one
                # Asked again after each wait: a trial that arrived meanwhile moved the turns
                # (they count from it), and a wake too late is in the next peer's turn.
                wait_ms = self._turn_wait(state)
                if not wait_ms:
                    break
                if waits == _MAX_WAITS:
                    # The slot is still free: one more pass at once rather than at the next
                    # tick, which left it idle up to half a second on a busy cluster.
                    self._schedule_again = True
                    return None
                waits += 1
                await asyncio.sleep(wait_ms / 1000)
            if not crowded or last:
                break
            look += 1
            log.info(
                "experiment %s: another peer's new trial lies next to the point chosen here;"
                " choosing again",
                state.spec.name,
            )
        now_ms = int(self.clock() * 1000)
        made_ms = made_here(self._clock_offset_ms)
        if backing_off(state, now_ms, self._ended_here(now_ms), made_ms):
            # Failures that arrived while this one was chosen or waited for its turn: planned
            # before them, the 4th and 5th trials of a crashing script started at once instead
            # of 1 s and 2 s after. (Once, here: it reads every ended trial.)
            return None
        body = {
            "params": params,
            "node": self.node_id,
            "counter": counter,
            "suggest_ms": round(suggest_ms, 3),
        }
        record = self.writer.write(TRIAL, body, [state.key])
        self._said_exhausted.pop(state.key, None)  # (room again: running out later is news)
        view = state.trial(record.key)
        assert view is not None
        return view

    # --------------------------------------------------------------------------- scheduling

    def listened(self) -> bool:
        """Whether this node may presume another gone (see CatchUp.listened)."""
        return self.catch_up.listened()

    def caught_up(self) -> bool:
        """Whether this replica may judge other peers' trials and claim free ones (see
        CatchUp.caught_up)."""
        return self.catch_up.caught_up()

    def kick(self) -> None:
        """Schedule now rather than at the next tick: a slot just came free."""
        if not self._stopping.is_set() and not self.replica.loading:
            self._spawn(self._round(self._schedule))

    async def _schedule(self) -> None:
        # A request during a pass is not dropped: the pass planned before the slot came free,
        # so it runs once more.
        self._schedule_again = True
        if self._schedule_lock.locked():
            return
        async with self._schedule_lock:
            while self._schedule_again:
                self._schedule_again = False
                await self._schedule_once()

    def _warn_failing(self, experiments: list[ExperimentState]) -> None:
        """One warning when an experiment's runs start failing one after another (the
        scheduler then slows its new trials down), and none again until one completes."""
        end = self._ended_here(int(self.clock() * 1000))
        for state in experiments:
            if not state.active:  # (and no scan of a finished one's trials at every pass)
                self._failing.discard(state.key)
                continue
            streak, _ = failure_streak(state, end)
            if streak < BACKOFF_AFTER:
                self._failing.discard(state.key)
            elif state.key not in self._failing:
                self._failing.add(state.key)
                # (Those with an end, as failure_streak counts them: a stamp of 0 is a stamp,
                # and an empty list here stopped every scheduling pass of this peer.)
                failed = [
                    t for t in state.trials() if t.state == "failed" and t.ended_at is not None
                ]
                latest = max(failed, key=end)
                log.warning(
                    "experiment %s: its last %d trials failed (latest: %s); new ones now wait"
                    " a while after each failure; `metaopt status %s` and `metaopt logs TRIAL`",
                    state.spec.name,
                    streak,
                    (latest.reason or "no reason recorded").splitlines()[0][:200],
                    state.spec.name,
                )

    def _plan(
        self,
        runnable: list[ExperimentState],
        now_ms: int,
        caught_up: bool,
        thawable: Collection[bytes] = frozenset(),
    ) -> list[Work]:
        """What this peer's free slots take now, in the experiments' turns (see plan_work)."""
        return plan_work(
            runnable,
            self.node_id,
            self.runner.free_slots(),
            self.runner.running_keys(),
            self.membership.live_nodes(),
            now_ms,
            int(self.config.timing.anti_entropy * 2000),
            # (A thaw needs no search: an experiment whose search failed here still thaws.)
            lambda state: (
                (state.key in thawable or state.key not in self._unsearchable)
                and self.runner.can_run(state)
            ),
            claim_free=caught_up,
            may_suggest=lambda state: (
                self.exhausted_now(state.key) is None and not self.history_arriving(state.key)
            ),
            quiet_ms=self.replica.quiet_ms,
            thawable=thawable,
            offset_ms=self._clock_offset_ms,
        )

    def _clock_offset_ms(self, node: bytes) -> int:
        """What to add to ``node``'s stamps to read them by this peer's clock, as far as its
        requests tell (0 for this node, or one not heard from lately)."""
        if node == self.node_id:
            return 0
        lag = self._lags.offset(node, self.monotonic())
        return 0 if lag is None or not math.isfinite(lag) else int(lag * 1000)

    def _ended_here(self, now_ms: int) -> Callable[[TrialView], int]:
        return ended_here(now_ms, self.replica.quiet_ms, self._clock_offset_ms)

    def _with_command(self) -> list[ExperimentState]:
        """The experiments a peer runs trials of (not a Study's, which has no command)."""
        return [s for s in self.replica.experiments.values() if s.spec.command is not None]

    def _thaw_turns(self) -> tuple[dict[bytes, int], int]:
        """The free slots a thaw may take, in the experiments' turns: of each experiment, the
        slots planned for its new points (a thaw stands in for one), and the slots no
        experiment's turn takes. A thaw took the slot first, ahead of every turn: on a peer of
        one slot, an experiment that ran nothing waited while another's trials were thawed,
        frozen at the next rung and thawed again."""
        runnable = self._with_command()
        thawable = {
            s.key for s in runnable if not s.stopped and self.runner.early_stopping.own_frozen(s)
        }
        work = self._plan(runnable, int(self.clock() * 1000), True, thawable)
        turns = Counter(item.experiment for item in work if item.trial is None)
        return dict(turns), self.runner.free_slots() - len(work)

    async def _schedule_once(self) -> None:
        if self.storage.problem():  # nothing it starts, finds lost or claims could be recorded
            self._probe_storage()
            return
        self.runner.record_unrecorded()  # (ends the disk refused: before any is found lost)
        self._forget_finished()
        self._check_stall()  # (before caught_up(): after a hold it must listen again first)
        if self.caught_up():
            # (Not before: its history may lack the experiment's stop, as for new trials, or
            # another peer's thaw of a trial thawed here by hand.)
            await self.runner.thaw_asked()  # (asked by hand: first in a slot that freed)
            await self.runner.early_stopping.thaw(self._thaw_turns)
        # A hold since the watcher last ran (a launch's code copy, SIGSTOP right here) is
        # noticed before anything is judged lost, not after.
        self._check_stall()
        now_ms = int(self.clock() * 1000)
        timing = self.config.timing
        runnable = self._with_command()
        caught_up = self.caught_up()
        listened = self.listened()
        for lost in (
            find_lost(
                runnable,
                self.node_id,
                self.replica.quiet_ms,
                int(timing.lost_after * 1000),
                self.membership.not_gone if listened else lambda node: True,
                self.runner.running_keys(),
            )
            if caught_up
            else []
        ):
            asked = self.runner.stop_requested(lost.trial)
            view = self.replica.experiments[lost.experiment].trial(lost.trial)
            if asked is not None and (view is None or view.runner != self.node_id):
                # A note of this peer's own earlier run, which another peer has run again
                # since: applied to that run, it wrote a "frozen by hand" into another peer's
                # run (kept for good, and ignored), and its loss waited another lost_after.
                self.runner.forget_stop_request(lost.trial)
                asked = None
            if asked is not None:
                # Frozen or killed (by hand, its stopper or its timeout) as this peer died:
                # recorded as decided, not taken for lost and run again.
                step = view.last_step if view is not None else None
                log.info(
                    "trial %s: %s before this peer restarted", lost.trial.hex()[:12], asked.reason
                )
                self.write_event(
                    lost.experiment, lost.trial, asked.outcome, step=step or None,
                    reason=asked.reason, after=lost.after, rung=asked.rung,
                )  # fmt: skip
                self.runner.forget_stop_request(lost.trial)
                continue
            log.info("trial %s is lost: %s", lost.trial.hex()[:12], lost.reason)
            self.write_event(
                lost.experiment, lost.trial, "lost", reason=lost.reason, after=lost.after
            )
        self._warn_failing(runnable)
        work = self._plan(runnable, now_ms, caught_up)
        for item in work:
            state = self.replica.experiments[item.experiment]
            known = len(state)  # what the search sees: trials arriving during it are news
            try:
                view = state.trial(item.trial) if item.trial else await self.new_trial(state)
            except SearchError as exc:
                self._exhausted[state.key] = (known, str(exc))
                if self._said_exhausted.get(state.key) == str(exc):
                    continue
                self._said_exhausted[state.key] = str(exc)
                # A warning while its last points run; found again after a restart, long
                # used up (`status` says exhausted), news only: it was a warning at every
                # start of every peer, for every such experiment.
                ended = not any(t.state in ACTIVE_STATES for t in state.trials())
                log.log(logging.INFO if ended else logging.WARNING, "experiment %s: %s",
                        state.spec.name, exc)  # fmt: skip
                continue
            except MetaoptError as exc:
                log.warning("experiment %s: %s", state.spec.name, exc)
                continue
            except Exception as exc:
                if self.storage.note(exc, "recording a new trial"):
                    # The disk's fault, not the search's: the peer holds back until it can
                    # write (see _storage). Set aside, the experiment got no trial here again
                    # until a restart, long after the disk had room.
                    break
                # A bug in the search for one experiment must not starve the others, which it
                # would if retried first on every pass (it never has a trial running here).
                log.exception(
                    "experiment %s: the search failed; set aside on this peer until it restarts",
                    state.spec.name,
                )
                self._unsearchable[state.key] = "its search failed here (see this peer's log)"
                continue
            if view is not None and item.trial and state.budget_used_up:
                # More trials than the budget, every one it allows ended: this one was recorded
                # where it could not be told of yet (its peer killed a moment after), and the
                # others spent the budget meanwhile. Run, it took the experiment past it.
                reason = f"the budget of {state.spec.max_trials} trials was used up meanwhile"
                log.info("trial %s: %s", view.key.hex()[:12], reason)
                self.write_event(state.key, view.key, "killed", reason=reason, after=view.latest)
                continue
            if view is not None and item.trial:
                rerun = await self.runner.early_stopping.worth_rerun(state, view)
                # The searches and the stopper above awaited: another peer may have claimed
                # the trial meanwhile, or it completed; run it only while it is still free.
                view = None if rerun is None else self._still_free(state, rerun)
            if view is not None and not self._stopping.is_set():
                await self.runner.launch(state, view)

    def _still_free(self, state: ExperimentState, view: TrialView) -> TrialView | None:
        """The free trial as it stands now, or None if it is no longer free to claim."""
        now = state.trial(view.key)
        if now is None or now.state not in FREE_STATES or now.key in self.runner.running_keys():
            return None
        return now

    def status(self) -> dict[str, Any]:
        now = self.monotonic()
        return {
            "node_id": self.node_id.hex(),
            "release": __version__,
            "protocol": PROTOCOL_VERSION,
            "name": self.config.name or socket.gethostname(),
            "address": self.addr,
            "pid": os.getpid(),
            "data_dir": str(self.dirs.root),
            "fingerprint": self.key.fingerprint,
            "uptime": now - self.started_at,
            "records": len(self.store),
            "peers": [
                {
                    "node_id": p.node_id.hex(),
                    "address": p.addr,
                    "last_contact": (
                        None if p.last_contact is None else round(now - p.last_contact, 1)
                    ),
                    "live": self.peers.is_alive(p.node_id, now, self.config.timing.peer_timeout),
                }
                for p in self.peers.all()
            ],
            "slots": self.runner.describe(),
            # --join addresses that have not answered since this peer started.
            "silent_seeds": self.membership.silent_seeds(),
            "refusals": self.membership.refusals(),
            "alone": self.membership.alone_hint(),
            "lost_after": self.config.timing.lost_after,
            "storage": self.storage.problem(),  # why it holds back (see _storage), or None
            # Frame bytes on the wire (requests and replies, both directions), peers and CLI.
            "wire": {
                "client_sent": self.client.bytes_out,
                "client_received": self.client.bytes_in,
                "server_received": self.server.bytes_in,
                "server_sent": self.server.bytes_out,
            },
            "sync_sessions": self.replicator.sessions,
            "experiments": len(self.replica.experiments),
            # Records folded and held while it loads its replica (Replica.load), else None.
            "loading": self.loading_progress(),
        }

    def loading_progress(self) -> tuple[int, int] | None:
        """(records folded, records held) while the peer loads its replica, else None."""
        if not self.replica.loading:
            return None
        return self.replica.folded_records, len(self.store)

    @property
    def data_dir(self) -> Path:
        return self.dirs.root
