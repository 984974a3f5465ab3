"""The peer's membership: who else is in the cluster, and whether each is live.

Gossip rounds swap peer tables so one contact is enough to learn the whole cluster; a line
is logged as each peer becomes live, comes back or goes silent; a peer alone is told so and
how to join; the addresses of the peers it talks to are kept in its data directory for its
next life; a stopping peer tells the live ones it leaves; and a second peer under this node
id (a copied data directory, see _twins) is called, so that the younger of the two stops.
The Node owns one and answers the peers' "gossip" and "leave" requests with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Callable, Coroutine
from typing import Any

from metaopt._errors import MetaoptError
from metaopt.peer._config import PeerConfig
from metaopt.peer._gossip import LivenessNews, PeerTable, valid_addr
from metaopt.peer._identity import MAX_REMEMBERED, DataDir
from metaopt.peer._lags import RequestLags
from metaopt.peer._transport import (
    Client,
    Misaddressed,
    OtherRelease,
    PeerUnreachable,
    Refused,
    RemoteError,
)
from metaopt.peer._twins import TwinWatch
from metaopt.peer._wire import MAX_RUN_TOKEN, TWIN_STOPS, Request

__all__ = ["Membership"]

log = logging.getLogger("metaopt.peer")

# Seconds after a call to where this node's id was heard of during which a twin's answer (its
# call back: see _twins) may still come, and the peer is not yet caught up (see
# CatchUp.caught_up).
_TWIN_ANSWER = 2.0
_MAX_TWIN_CALLS = 8  # calls under way at once to where this node's id was heard of


class Membership:
    """This peer's view of the others: gossip, liveness, twins and the remembered peers.

    What it shares with the Node is passed in: the peer table, the client (replaced by
    Node.start once the server is bound, as the replicator's is), the twins' watch, the
    requests' lags (which the scheduling reads as clock offsets), and the Node's own
    lifecycle as callables: whether it has listened long enough to judge others, the length
    of a hold of its loop just ended, how to run a task beside its periodic ones, and how to
    stop itself, saying why.
    """

    def __init__(
        self,
        config: PeerConfig,
        node_id: bytes,
        dirs: DataDir,
        peers: PeerTable,
        client: Client,
        twins: TwinWatch,
        lags: RequestLags,
        *,
        monotonic: Callable[[], float],
        rng: random.Random,
        started_at: Callable[[], float],
        stopping: asyncio.Event,
        listened: Callable[[], bool],
        hold_just_ended: Callable[[float], float],
        last_hold_ended: Callable[[], float],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        stop_itself: Callable[[str], None],
    ) -> None:
        self.config = config
        self.node_id = node_id
        self.dirs = dirs
        self.peers = peers
        self.client = client
        self.twins = twins
        self.monotonic = monotonic
        self.rng = rng
        self._lags = lags
        self._started_at = started_at
        self._stopping = stopping
        self._listened = listened
        self._hold_just_ended = hold_just_ended
        self._last_hold_ended = last_hold_ended
        # When the latest round whose calls have all ended began (see gossip_round).
        self._calls_ended_from = -math.inf
        self._spawn = spawn
        self._stop_itself = stop_itself
        self._liveness = LivenessNews()
        self._runs: dict[bytes, bytes] = {}  # each peer's run token, from its requests
        self._seeds_heard: dict[str, bool] = {}  # --join address -> answered (warned once if not)
        # Addresses whose last answer refused this peer, and why (a clock off, another key or
        # release): said where their silence is, which was told as no answer at all.
        self._refusals: dict[str, str] = {}
        # What mDNS found and ignored (Discovery.ignored), set by the node once it browses.
        self.mdns_ignored: Callable[[], list[str]] = list
        # The addresses of the peers this one talked to when it last ran (see recall_peers).
        self._recalled: list[str] = []
        self._alone_said = False
        self._remembered: list[str] = []  # what the data directory's peers file says now
        self._warned_alone = False  # or it talked to a peer since it started
        # Whether a twin would have been heard of by now (see no_twin_unheard), and the calls
        # to where this node's id was heard of: under way, and when the last one ended.
        self._twins_ruled_out = False
        self._gossip_answered_at = math.inf  # (monotonic: when a peer first answered it)
        self._twin_calls, self._twin_call_ended_at = 0, -math.inf
        # Node id -> the greetings tried (_GREET_TRIES once a call of this life reached it).
        self._greeted: dict[bytes, int] = {}

    # ------------------------------------------------------------------------------------ gossip

    async def gossip_round(self) -> None:
        """One round of gossip (Node._gossip runs it, but not while this replica cannot be
        written)."""
        hold_ended = self._last_hold_ended()  # (first: a hold just ended is measured here)
        now = self.monotonic()
        timeout = self.config.timing.peer_timeout
        live = self.peers.random_live(self.rng, 1, now, timeout)
        # One silent peer a round as well: a cluster whose peers all went quiet at once (a
        # stall, a switch rebooting) finds itself again, seeds or none.
        silent = self.peers.silent(now, timeout)
        retry = [self.rng.choice(silent).addr] if silent else []
        targets = [p.addr for p in live] + self.peers.seed_addrs() + retry
        if not self.peers.live(now, timeout):
            targets += self._recalled
        targets += self._greetings(now, timeout)
        # Said before the calls as well as after: the calls end together, and one address
        # that does not answer held the round's lines for the request timeout (a peer's
        # "is live" came 10 s after the line saying it had caught up with that peer, and
        # "counted gone" after the line taking its trial for lost; a partition in namespaces).
        # Not after a hold of this peer's own loop (paused, its VM stopped) until a round
        # begun since has had its answers: every peer had looked silent through it, and its
        # log counted each "gone", "live again" a moment later, as if the others had dropped
        # out (a walkthrough, 4 of 4 pauses of 34-68 s; a review, 3 of 3 with a round's calls
        # under way as the pause began).
        if self._calls_ended_from >= hold_ended:
            self._say_liveness(now, timeout)
        # All at once: up to 16 remembered addresses of machines that may be gone for good,
        # each taking the request timeout, held up the round for minutes when called in turn,
        # and a --join seed that accepts and never answers held it (and the first answer, see
        # no_twin_unheard) for 10 s.
        try:
            await self._gossip_with_all(list(dict.fromkeys(targets)), timeout)
        finally:  # (a bug in one call must not keep the others' news from the peers file)
            self._remember_peers()
            self._say_if_alone(now)
            self._calls_ended_from = max(self._calls_ended_from, now)
            if self._calls_ended_from >= self._last_hold_ended():
                self._say_liveness(self.monotonic(), timeout)

    def _greetings(self, now: float, timeout: float) -> list[str]:
        """Up to _GREETS_PER_ROUND live peers no call of this life has reached yet.

        A peer that said it was leaving counts as gone until it calls (PeerTable.leave), so
        a peer restarted in a moment was gone, for those it had not called again, for as long
        as random gossip took to pick them (5 of 40 restarts in a review: those it heard of
        by mDNS or a third peer, not from its peers file); nor did a peer it had not called
        tell in its log that the peer was back at its old address. One call each, at start,
        tried a few times: a live peer this one cannot reach (a partial partition, or one a
        faulty peer made up) was greeted every round, for good.
        """
        known = {p.node_id for p in self.peers.all()}  # (bounded by the table, not the life)
        self._greeted = {n: tries for n, tries in self._greeted.items() if n in known}
        live = self.peers.live(now, timeout)
        unmet = [p for p in live if self._greeted.get(p.node_id, 0) < _GREET_TRIES]
        chosen = self.rng.sample(unmet, min(_GREETS_PER_ROUND, len(unmet)))
        for peer in chosen:
            self._greeted[peer.node_id] = self._greeted.get(peer.node_id, 0) + 1
        return [p.addr for p in chosen]

    async def _gossip_with_all(self, addrs: list[str], timeout: float) -> None:
        """Gossip with every address at once (each call takes up to the request timeout).
        A call's bug is raised once all have ended, for the round to log (see Node._round: at
        every round, at once, it logged a line per round, for good)."""
        calls = (self._gossip_with(addr, timeout) for addr in addrs)
        ended = await asyncio.gather(*calls, return_exceptions=True)
        failed = [e for e in ended if isinstance(e, Exception)]
        if failed:
            raise failed[0]

    async def _gossip_with(self, addr: str, timeout: float) -> None:
        # Ages as of this call: one to a hung peer takes the whole request timeout, and
        # ages told as of before it made every peer 10 s younger, each round (a peer
        # stopped with SIGSTOP stayed live for 73 s instead of 30).
        called = self.monotonic()
        gossip = self.peers.to_gossip(called, timeout)
        to = self.peers.at(addr)  # (see PeerTable.answered)
        try:
            try:
                reply = await self.client.call(addr, "gossip", gossip, to=to)
            except Misaddressed:
                # Another node answers there: the call again, naming nobody, tells it of
                # this peer (a peer restarted there with a new data directory, not knowing
                # this one, would otherwise go unheard of until the old entry expired).
                self.peers.forget_at(addr, to)
                to = None
                reply = await self.client.call(addr, "gossip", gossip)
        except (PeerUnreachable, RemoteError) as exc:
            log.debug("gossip with %s failed: %s", addr, exc)
            if isinstance(exc, RemoteError):
                self.note_refusal(addr, str(exc), to)
            if isinstance(exc, Refused | OtherRelease):
                if addr in self._refusals or len(self._refusals) < _MAX_REFUSALS:
                    said = str(exc).removeprefix(f"{addr} refused us: ")
                    self._refusals[addr] = said.removeprefix(f"{addr}: ")
            else:
                self._refusals.pop(addr, None)  # (silent now: that is what is said)
            if addr in self.peers.seed_addrs() and addr not in self._seeds_heard:
                # Once: a mistyped --join was silent, the peer alone with no word why. (Not
                # for a refusal, which the transport says, with what to do: "does not answer
                # (... refused us: UnknownKey)" said it twice, and contradicted itself.)
                self._seeds_heard[addr] = False
                if not isinstance(exc, Refused | OtherRelease):
                    log.warning(
                        "--join %s does not answer (%s); still trying every %g s",
                        addr,
                        exc,
                        self.config.timing.gossip,
                    )
            return
        self._refusals.pop(addr, None)
        if self._seeds_heard.get(addr) is False:
            log.info("--join %s answers now", addr)
        self._seeds_heard[addr] = True
        # As of the call, not of the reply's reading: a reply that waited through a hold of
        # this peer's loop read as news of now (see _waited).
        if to is not None:
            self.peers.answered(to, called)
            self._greeted[to] = _GREET_TRIES
        self.peers.merge_gossip(reply, called, exclude=self.node_id, on_own_id=self.maybe_twin_at)
        # (After the calls its reply's news of this id set off.)
        self._gossip_answered_at = min(self._gossip_answered_at, self.monotonic())

    def _say_liveness(self, now: float, timeout: float) -> None:
        """A line for each peer that became live, came back, or went silent (not for one
        that said it was leaving: that was said when it came)."""
        self._runs = {n: run for n, run in self._runs.items() if n in self.peers}
        found, back, gone, moved = self._liveness.changes(self.peers, now, timeout, self._runs)
        # A line each, up to a few a look: a peer gossiping a thousand made-up ids as live (a
        # buggy release, or a hostile peer with the key) wrote two lines for each in every
        # peer's log, 7,407 in minutes.
        untold = [
            (len(found), "live"),
            (len(back), "live again"),
            (len(moved), "live at another address"),
            (len(gone), "gone"),
        ]
        found, back, gone = found[:_NEWS_LINES], back[:_NEWS_LINES], gone[:_NEWS_LINES]
        # As `peer status` has it: a peer only heard of through others may be dead already (a
        # restarted peer logged one killed -9 seconds before as "live", first of all).
        for peer, news in [*((p, "live") for p in found), *((p, "live again") for p in back)]:
            log.info(
                "peer %s at %s is %s%s",
                peer.node_id.hex()[:8],
                peer.addr,
                news,
                " (heard of through other peers)" if peer.last_contact is None else "",
            )
        # A peer restarted on another port within the timeout is neither gone nor back: without
        # this line the log named it only at its old address.
        for old_addr, peer in moved[:_NEWS_LINES]:
            log.info(
                "peer %s is at %s now (was at %s)", peer.node_id.hex()[:8], peer.addr, old_addr
            )
        for peer in gone:
            if peer.node_id not in self.peers and self.peers.was_replaced(peer.node_id):
                # Dropped at once: another node answers at its address (a peer restarted
                # there with a new data directory), not silence.
                log.info(
                    "peer %s at %s: another node is at its address now, counted gone",
                    peer.node_id.hex()[:8],
                    peer.addr,
                )
            elif not peer.left:
                log.info(
                    "peer %s at %s: nothing heard of it for %g s, counted gone (its running"
                    " trials re-run elsewhere once unheard of for %g s)%s",
                    peer.node_id.hex()[:8],
                    peer.addr,
                    timeout,
                    self.config.timing.lost_after,
                    self._refused_why(peer.addr),
                )
        for count, news in untold:
            if count > _NEWS_LINES:
                log.info("%d more peers %s (not named)", count - _NEWS_LINES, news)

    def _say_if_alone(self, now: float) -> None:
        """Once: a peer started without --join where mDNS finds nobody ran alone, its log
        saying only that it listened."""
        if self._alone_said or now - self._started_at() < self.config.timing.peer_timeout:
            return
        self._alone_said = True
        hint = self.alone_hint()
        if hint is not None and not self._recalled:  # (_remember_peers warns of those)
            log.info("%s; this peer runs alone, every trial here", hint)

    def alone_hint(self) -> str | None:
        """Why this peer knows no other, and how to join one; None if it knows one, calls a
        --join seed, or is still calling the addresses remembered from its last life."""
        if self.peers.all() or self.peers.seed_addrs():
            return None
        if self._recalled:
            if not self._listened():
                return None
            # `peer status` said nothing of it: "peers (0 live of 0)" and its log's warning.
            shown = self._recalled_shown()
            refused = self._refused_why(*self._recalled)
            if refused:
                return f"none of the peers this one knew ({shown}) takes its calls{refused}"
            return (
                f"none of the peers this one knew ({shown}) answers: it runs alone and keeps"
                " calling them; if they moved, restart it with --join HOST:PORT of a running peer"
            )
        if not self.config.mdns:
            found = "mDNS is off"
        elif ignored := self.mdns_ignored():
            # (--join would not help: they answer, and are refused.)
            what = {
                "release": ("another metaopt release", "upgrade every peer to the same release"),
                "cluster": ("another cluster", "to join it, start this peer with its key"),
            }
            kinds = " and ".join(what[k][0] for k in ignored)
            advice = "; ".join(what[k][1] for k in ignored)
            return (
                f"no other peer known: mDNS found only peers of {kinds}, which this peer"
                f" ignores (see its log); {advice}"
            )
        else:
            found = "mDNS found none on this interface"
        return f"no other peer known ({found}); to join a cluster, start with --join HOST:PORT"

    def _recalled_shown(self) -> str:
        """The first few addresses remembered from its last life, for a line of the log."""
        return ", ".join(self._recalled[:3]) + (", ..." if len(self._recalled) > 3 else "")

    def silent_seeds(self) -> list[str]:
        """The --join addresses that have not answered since this peer started."""
        return [a for a in self.peers.seed_addrs() if not self._seeds_heard.get(a)]

    def refusals(self) -> dict[str, str]:
        """Why each address that refused this peer's last call to it did (see _refusals), of
        the addresses it still calls: a peer forgotten (expired from the table) and stopped
        was listed as refusing for good, no call going there to clear it."""
        calls = {p.addr for p in self.peers.all()} | set(self.peers.seed_addrs())
        calls |= set(self._recalled)
        self._refusals = {a: why for a, why in self._refusals.items() if a in calls}
        return dict(self._refusals)

    def _refused_why(self, *addrs: str) -> str:
        """ "; ADDR refused this peer: WHY" for the first of addrs whose last answer refused
        this peer, else ""."""
        addr = next((a for a in addrs if a in self._refusals), None)
        return "" if addr is None else f"; {addr} refused this peer: {self._refusals[addr]}"

    # -------------------------------------------------------------------------- remembered peers

    def recall_peers(self) -> None:
        """Read the addresses of the peers this one talked to when it last ran, to call while
        it hears of none (see gossip_round).

        Without them a peer restarted on its data directory without --join (on a new port,
        or after its peers stopped calling its old address) ran alone: from its own copy of
        the history a finished experiment looked open (57 trials ran of --max-trials 40), and
        live peers' trials looked lost. mDNS finds peers on one LAN; this finds them anywhere.
        """
        self._remembered = self.dirs.read_peers()
        limit = self.peers.config.max_addr_len
        self._recalled = [
            a for a in self._remembered if valid_addr(a, limit) and a not in self.peers.own_addrs
        ]

    def _remember_peers(self) -> None:
        """Keep the addresses of the peers this one talks to now in its data directory, then
        the others it knew (if the few it talks to now die, the rest may still answer); while
        it talks to none (cut off, or they are all down) the last ones are kept. Says once if
        it has reached none of them since it started."""
        now, timeout = self.monotonic(), self.config.timing.peer_timeout
        live = self.peers.live(now, timeout)
        talking = [p.addr for p in live if p.last_contact is not None]
        if not talking:
            if self._recalled and not self._warned_alone and self._listened():
                self._warned_alone = True
                shown = self._recalled_shown()
                refused = self._refused_why(*self._recalled)
                if refused:  # (they answered: --join would not help)
                    log.warning(
                        "none of the peers this one knew (%s) has taken its calls for %g s: it"
                        " runs alone, on its own copy of the history%s",
                        shown,
                        self.config.timing.peer_timeout,
                        refused,
                    )
                    return
                log.warning(
                    "none of the peers this one knew (%s) has answered for %g s: it runs"
                    " alone, on its own copy of the history, and keeps calling them; if they"
                    " all moved to other addresses, restart it with --join HOST:PORT of a"
                    " running peer",
                    shown,
                    self.config.timing.peer_timeout,
                )
            return
        self._warned_alone = True  # a partition later is not what that warning says
        self._recalled = (talking + [a for a in self._recalled if a not in talking])[
            :MAX_REMEMBERED
        ]
        if self._recalled == self._remembered:
            return
        try:
            self.dirs.write_peers(self._recalled)
        except OSError as exc:
            log.debug("cannot keep the peers' addresses in %s: %s", self.dirs.root, exc)
            return
        self._remembered = self._recalled

    # ---------------------------------------------------------------------------------- requests

    def on_gossip(self, request: Request) -> Any:
        """The answer to a peer's gossip (Node._on_gossip first refuses it while this
        replica cannot be written)."""
        waited = self._waited(request)
        self.contact(request, waited)
        self.refuse_if_stopped_by(request)
        # Ages as of when it was sent, as far as this peer can tell (see _waited).
        self.peers.merge_gossip(
            request.body,
            self.monotonic() - waited,
            exclude=self.node_id,
            on_own_id=self.maybe_twin_at,
        )
        now, timeout = self.monotonic(), self.config.timing.peer_timeout
        elsewhere = self.peers.elsewhere(request.sender, now, timeout)
        # (First, and within max_gossip entries: a reply is read only up to there.)
        return (elsewhere + self.peers.to_gossip(now, timeout))[: self.peers.config.max_gossip]

    async def on_leave(self, request: Request) -> bool:
        # Not a contact: its word that it is going must not count as a sign of life.
        if request.sender != self.node_id and request.sender in self.peers:
            log.info("peer %s is leaving", request.sender.hex()[:8])
            self.peers.leave(request.sender)
            self._liveness.left(request.sender)
        return True

    def contact(self, request: Request, waited: float | None = None) -> None:
        """A peer's request is word from its sender, as of when it was sent (see _waited);
        one from a twin under this node id is handled as such (see _twin)."""
        if request.sender == self.node_id and self.twins.is_twin(request.run):
            self._twin(request)
            return
        addr = self.sender_addr(request)
        if addr is not None:
            waited = self._waited(request) if waited is None else waited
            self.peers.add(request.sender, addr, self.monotonic() - waited, contacted=True)
            if request.run is not None and request.sender in self.peers:
                self._runs[request.sender] = request.run

    def sender_addr(self, request: Request) -> str | None:
        """The address a peer's request came from, as this peer would call it back."""
        if request.sender == self.node_id or len(request.sender) != 16:
            return None
        return self._call_back_addr(request)

    @staticmethod
    def _call_back_addr(request: Request) -> str | None:
        if not request.addr:
            return None
        host, _, port = request.addr.rpartition(":")
        if host in ("0.0.0.0", "::", "[::]", "") and request.remote:
            # A peer bound to every interface names itself by the address we see it at.
            host = f"[{request.remote}]" if ":" in request.remote else request.remote
        return f"{host}:{port}"

    def _waited(self, request: Request) -> float:
        """How long a request waited in this peer's sockets before it was read (see _lags)."""
        lag = request.lag
        if lag is None or not math.isfinite(lag):
            return 0.0
        now = self.monotonic()
        return self._lags.waited(request.sender, lag, now, self._hold_just_ended(now))

    async def leave(self) -> None:
        """Tell the live peers this one is stopping, so they count it gone now rather than
        after peer_timeout: its interrupted trials re-run elsewhere at once, and its frozen
        ones may be thawed there. Best effort and bounded: a peer that misses it (or one of an
        older release, which answers "unknown operation") finds out by the timeout."""
        if self.twins.stopped_for is not None:
            # Its word would be its twin's, the node id theirs both: the twin that goes on
            # was counted gone by every peer told, until it next called them.
            return
        live = self.peers.live(self.monotonic(), self.config.timing.peer_timeout)

        async def tell(addr: str, node: bytes) -> None:
            with contextlib.suppress(PeerUnreachable, RemoteError):
                await self.client.call(addr, "leave", to=node)

        tasks = [asyncio.ensure_future(tell(peer.addr, peer.node_id)) for peer in live]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.config.timing.leave_wait)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # ------------------------------------------------------------------------------------- twins

    def maybe_twin_at(self, addr: str, age: float, token: bytes | None = None) -> None:
        """This node's id was heard of lately at ``addr`` (gossip, mDNS; or a twin's call,
        whose ``token`` is given): call there, where a twin would hear it (see _twins)."""
        if addr in self.peers.own_addrs or self._stopping.is_set():
            return
        if age > self.config.timing.peer_timeout:
            return  # (an old address of this node's, from before a restart on another port)
        if not valid_addr(addr, self.peers.config.max_addr_len):
            return  # (a twin's call-back address, as it gave it: no URL is made of it)
        if self._twin_calls >= _MAX_TWIN_CALLS:
            # One gossip listing this node's id at 256 addresses had 256 calls made at once,
            # and as many again at each such message (a wire review). A twin's address left
            # out is heard of again at the next round.
            return
        if self.twins.should_call(addr, token, self.monotonic()):
            log.debug("this node's id was heard of at %s; calling it", addr)
            self._twin_calls += 1  # (now: CatchUp.caught_up may be asked before the call starts)
            self._spawn(self._call_twin(addr))

    async def _call_twin(self, addr: str) -> None:
        try:
            await self._gossip_with(addr, self.config.timing.peer_timeout)
        finally:
            self._twin_calls -= 1
            self._twin_call_ended_at = self.monotonic()

    def refuse_if_stopped_by(self, request: Request) -> None:
        """After contact(request): raise MetaoptError if that request, an elder twin's gossip
        or sync, stopped this peer. The answer says so, for the elder to say so too (it said
        nothing: 2 of 6 copies started, a README walk; by a sync, 4 of 4, a review)."""
        stopped_for = self.twins.stopped_for
        # (Not while running: a request under this id without a token, from itself or an
        # earlier release, has run None, as stopped_for is then: a suite run.)
        twin_stopped_it = stopped_for is not None and stopped_for == request.run
        if request.sender == self.node_id and twin_stopped_it:
            raise MetaoptError(
                f"{TWIN_STOPS} {self.twins.token.hex()} the peer called, started later, stops"
            )

    def note_refusal(self, addr: str, answer: str, to: bytes | None) -> None:
        """A call of this peer's to addr (gossip, or a sync session's), naming the node ``to``
        (None: whoever is there), was answered with an error: one saying a twin stopped is
        said here (see _twin_stopped). Only of a call that could reach a twin: one naming
        another node reached that node or was refused as misaddressed, so a peer of another
        id answering so (a bug, or a lie) had every caller say a twin of its own stopped,
        as often as its token changed (a wire review: 28 false lines in 3.5 minutes)."""
        if to not in (None, self.node_id):
            return
        if answer.startswith(f"{addr}: {TWIN_STOPS}"):
            self._twin_stopped(addr, answer)

    def _twin_stopped(self, addr: str, answer: str) -> None:
        """This peer's call stopped a twin at addr, started after it (see _twin), which said
        so in its answer with its process's token: said here once a twin, as when the
        twin's call is what tells this peer (README: "the other says it runs on")."""
        token = answer.removeprefix(f"{addr}: {TWIN_STOPS}").split(maxsplit=1)[:1]
        try:
            run = bytes.fromhex(token[0]) if token else b""
        except ValueError:
            run = b""
        if len(run) > MAX_RUN_TOKEN:
            return  # (no token of a process: see _wire.MAX_RUN_TOKEN)
        # Its own memory, not first_heard's: a copy whose call reached this peer first was
        # told "calling it, so that it stops", and that it stopped went unsaid (a review).
        if run and self.twins.first_stopped(run):
            log.warning(
                "another peer ran with this peer's node id at %s, started after this one (its"
                " data directory a copy of %s?): it stops, and this one runs on",
                addr,
                self.dirs.root,
            )

    def _twin(self, request: Request) -> None:
        """Another peer runs under this node id (see _twins): the younger stops."""
        assert request.run is not None
        if self.twins.stopped_for is not None:
            return  # (stopping: it said so)
        addr = self._call_back_addr(request)
        # Its wait in the sockets by a hold just ended alone: the usual lags are kept by node
        # id, which twins share, so a twin's lag was read against its predecessor's, on another
        # clock (a copy restarted after its clock was stepped 60 s read 60 s old, and the
        # original, 5 s old, stopped; a review of the session's fixes).
        now = self.monotonic()
        waited = self._hold_just_ended(now)
        where = addr or request.remote or "another address"
        if not self.twins.stops_for(request.run, request.age, waited, now):
            if self.twins.first_heard(request.run):  # (the elder said nothing at all)
                log.warning(
                    "another peer runs with this peer's node id at %s, started after this one"
                    " (its data directory a copy of %s?): calling it, so that it stops",
                    where,
                    self.dirs.root,
                )
            if addr is not None:  # (it is the younger: it stops once it hears this one)
                self.maybe_twin_at(addr, 0.0, request.run)
            return
        self._stop_itself(
            f"another peer runs with this peer's node id {self.node_id.hex()[:12]}, at {where},"
            f" started before this one: one data directory is a copy of the other's; give"
            f" this one its own (--data-dir), or delete {self.dirs.root / 'node_id'} before it"
            " starts again"
        )

    def no_twin_unheard(self, now: float, waited: float) -> bool:
        """Whether a twin (see _twins) running now would have been heard of, so that the
        trials its history says this peer runs, and it does not, are its own cut short by a
        restart. Asked until it first holds, at start: a copy of a running peer's data
        directory, caught up by its first anti-entropy session, re-ran the original's running
        trials before the twins heard of each other (5 of 7 copies in a soak).

        It holds _TWIN_ANSWER after a peer first answered its gossip (a twin it called calls
        back: a copy that --join'ed the original escaped without this wait, 1 of 6), with the
        calls to where a reply said this node's id was heard of lately answered; or after
        the peer timeout; at once if it knows no peer to ask."""
        if self.twins.stopped_for is not None:
            return False  # (it stops for its twin: nothing of its own is cut short)
        if not self._twins_ruled_out:
            settled = not self._twin_calls and now - self._twin_call_ended_at >= _TWIN_ANSWER
            heard = (
                now - self._gossip_answered_at >= _TWIN_ANSWER
                or self.knows_nobody()
                or waited >= self.config.timing.peer_timeout
            )
            self._twins_ruled_out = settled and heard
        return self._twins_ruled_out

    def knows_nobody(self) -> bool:
        """No peer, no seed and no address remembered from its last life to call."""
        return len(self.peers) == 0 and not self.peers.seed_addrs() and not self._recalled

    # ---------------------------------------------------------------------------------- liveness

    def is_alive(self, node: bytes) -> bool:
        """Whether ``node`` is this one, or a peer heard from within the peer timeout."""
        if node == self.node_id:
            return True
        return self.peers.is_alive(node, self.monotonic(), self.config.timing.peer_timeout)

    def not_gone(self, node: bytes) -> bool:
        """is_alive, except that a peer that said it was leaving counts until the timeout:
        the judge of whether its trials are lost (see PeerTable.heard_within)."""
        if node == self.node_id:
            return True
        return self.peers.heard_within(node, self.monotonic(), self.config.timing.peer_timeout)

    def turn_nodes(self) -> list[bytes]:
        """The nodes that take turns at new points: the live ones and those that said they
        were leaving, until the timeout (see heard_within). A peer restarted in a moment was
        gone, for the others, from its leave until it called each again, while it counted
        them: two peers took one turn. A peer that did leave costs an empty turn a round."""
        now, timeout = self.monotonic(), self.config.timing.peer_timeout
        heard = [
            p.node_id for p in self.peers.all() if self.peers.heard_within(p.node_id, now, timeout)
        ]
        return [self.node_id, *heard]

    def live_nodes(self) -> list[bytes]:
        """This node and the live peers (see is_alive)."""
        now = self.monotonic()
        return [self.node_id] + [
            p.node_id for p in self.peers.live(now, self.config.timing.peer_timeout)
        ]


_NEWS_LINES = 8  # peers told of one by one at a look, for each kind of news
_MAX_REFUSALS = 1024  # addresses whose refusal is kept (see Membership._refusals)
# Peers first called a round (see Membership._greetings): a cluster of 50 is greeted in 7
# rounds (35 s), at one call each on top of the usual few.
_GREETS_PER_ROUND = 8
_GREET_TRIES = 3  # greetings of a peer whose calls fail before it is left to random gossip
