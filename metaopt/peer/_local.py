"""Talking to the peer on this machine from the CLI: find it through its data directory."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Literal, Protocol

from crdt import ClusterKey, FrameCodec
from metaopt._errors import MetaoptError
from metaopt.peer._identity import DataDir, default_data_dir
from metaopt.peer._transport import (
    Client,
    Misaddressed,
    OtherRelease,
    PeerUnreachable,
    Refused,
    StillLoading,
)

__all__ = ["LocalPeer", "fetch_experiment", "resolve_data_dir"]

# How long a command waits for its peer to load its replica (about 10-20 s a million records;
# slower on a busy machine).
LOAD_PATIENCE = 600.0


class _Caller(Protocol):
    def call(self, op: str, body: Any = None) -> Any: ...


def fetch_experiment(
    peer: _Caller,
    experiment: str,
    trials: Literal["all", "open", "none"] = "all",
    last: int | None = None,
) -> dict[str, Any]:
    """api.experiment with every page of its trial list (see metaopt.peer._pages) joined;
    ``last``: only the newest this many trials (and any that arrive while it pages)."""
    query: dict[str, Any] = {"experiment": experiment, "trials": trials}
    if last is not None:  # (a peer of an earlier release refuses no key, and sends them all)
        query["last"] = last
    info: dict[str, Any] = peer.call("api.experiment", query)
    after = info.pop("next", None)
    while after is not None:
        # By id from here on: a namesake submitted meanwhile takes the name, not this listing.
        query = {"experiment": info["id"], "trials": trials, "after": after}
        page = peer.call("api.experiment", query)
        info["trial_list"] += page["trial_list"]
        after = page["next"]
    return info


# How a connection a peer closed at once fails (aiohttp's names for it).
_CLOSED_AT_ONCE = frozenset(
    {"ServerDisconnectedError", "ClientOSError", "ClientConnectionResetError"}
)


def fetch_experiments(peer: _Caller) -> list[dict[str, Any]]:
    """api.experiments with every page of the listing joined (see metaopt.peer._pages)."""
    reply = peer.call("api.experiments", {"after": None})
    if isinstance(reply, list):  # a peer of an earlier release sends it whole
        return reply
    listed: list[dict[str, Any]] = list(reply["experiments"])
    while reply["next"] is not None:
        reply = peer.call("api.experiments", {"after": reply["next"]})
        listed += reply["experiments"]
    return listed


def resolve_data_dir(value: str | None) -> Path:
    if value == "":
        # `--data-dir "$DIR"` with DIR unset: the environment's or the default directory may
        # hold another peer than the one meant, which a submit or a stop would then reach.
        raise MetaoptError("--data-dir is empty; give a directory, or leave out --data-dir")
    if value:
        return Path(value)
    env = os.environ.get("METAOPT_DATA_DIR")
    return Path(env) if env else default_data_dir()


class LocalPeer:
    """The peer that owns a data directory, reached over loopback with the cluster key."""

    def __init__(self, data_dir: Path, timeout: float = 30.0) -> None:
        self.dirs = DataDir(data_dir)
        addr = self.dirs.read_address()
        if addr is None:
            raise MetaoptError(
                f"no peer is running on {self.dirs.root}; start one with"
                f" `metaopt peer start --data-dir {shlex.quote(str(self.dirs.root))}`"
            )
        self.addr = addr
        key_text = self.dirs.read_key()
        if key_text is None:
            raise MetaoptError(f"{self.dirs.key_file} is missing; restart the peer")
        self.key = ClusterKey.from_text(key_text)
        node_id = self.dirs.read_node_id()
        if node_id is None:
            raise MetaoptError(
                f"{self.dirs.root} has a peer.address but no node_id: it is not a peer's data"
                " directory; choose the right one with --data-dir"
            )
        self.node_id = node_id
        self._codec = FrameCodec([self.key])
        self._timeout = timeout

    def call(self, op: str, body: Any = None) -> Any:
        return asyncio.run(self.acall(op, body))

    async def acall(self, op: str, body: Any = None) -> Any:
        client = Client(
            self._codec, os.urandom(16), "", timeout=self._timeout, bounded_replies=False
        )
        try:
            return await self._call_when_loaded(client, op, body)
        except PeerUnreachable as exc:
            why = str(exc).rpartition("(")[2].rstrip(")")
            pid = self.dirs.running_pid()
            if pid is None:
                raise self._stale(f"nothing answers at {self.addr}") from None
            # Its process is alive, so "is it running?" sent a user to `peer start`, which
            # refused: it was paused (SIGSTOP) or hung. Unless it closed the connection at
            # once: a peer holding all the connections it takes (4096) does that, and was
            # said to be hung, to be killed.
            if why in _CLOSED_AT_ONCE:
                raise MetaoptError(
                    f"the peer of {self.dirs.root} (pid {pid}) runs but closed the connection"
                    f" at {self.addr} ({why}): starting, stopping, or holding all the"
                    " connections it takes (its log says); try again in a moment"
                ) from None
            raise MetaoptError(
                f"the peer of {self.dirs.root} (pid {pid}) runs but does not answer at"
                f" {self.addr} ({why}): paused, hung or overloaded; try again, or stop it"
                f" with `kill {pid}`"
            ) from None
        except (Misaddressed, Refused) as exc:
            # Its peer died and left peer.address behind, and another took the port: one of
            # this cluster (it names another node) or of another (it refuses the key).
            why = str(exc).partition(": ")[2]
            if self.dirs.running_pid() is None:
                raise self._stale(f"another peer answers at {self.addr}: {why}") from None
            start = f"metaopt peer start --data-dir {shlex.quote(str(self.dirs.root))}"
            raise MetaoptError(
                f"the peer at {self.addr} is not the peer of {self.dirs.root} ({why}); is that"
                f" peer running? `{start}` starts it"
            ) from None
        except OtherRelease:
            # Upgraded while it ran: this CLI cannot even ask it to stop. An older peer does
            # not check whom a request is for, so the one answering may not be this
            # directory's: a pid is named only if the pid file's is a live metaopt process.
            pid = self.dirs.running_pid()
            if pid is None:
                raise MetaoptError(
                    f"the peer at {self.addr} runs another metaopt release than this command,"
                    f" and no peer of {self.dirs.root} is running (its peer.address may be"
                    " stale); stop that peer with the release it runs"
                ) from None
            raise MetaoptError(
                f"the peer of {self.dirs.root} (pid {pid}) runs another metaopt release than"
                f" this command; stop it (`kill {pid}`) and start it again with this release"
            ) from None
        finally:
            await client.close()

    async def _call_when_loaded(self, client: Client, op: str, body: Any) -> Any:
        """The call's reply, once the peer has loaded its replica (it refuses all but status
        and shutdown until then: a script's `peer start --detach` then `submit` would fail).
        Says once on stderr that it waits, and gives up after LOAD_PATIENCE seconds."""
        deadline = time.monotonic() + LOAD_PATIENCE
        said = False
        while True:
            try:
                return await client.call(self.addr, op, body, to=self.node_id)
            except PeerUnreachable:
                if not said or self.dirs.running_pid() is not None:  # (alive: hung, paused)
                    raise
                # (Not "its peer.address is left from one that stopped or died": a stop
                # removes it, and a peer that could not load its replica says why in its log.)
                raise MetaoptError(
                    f"the peer of {self.dirs.root} stopped while this command waited for it to"
                    f" load its history; see its log ({self.dirs.root / 'peer.log'} if started"
                    " with --detach)"
                ) from None
            except StillLoading as exc:
                if time.monotonic() > deadline:
                    raise MetaoptError(
                        f"{exc} after {LOAD_PATIENCE:.0f} s; see its log"
                        f" ({self.dirs.root / 'peer.log'} if started with --detach)"
                    ) from None
                if not said:
                    print(f"{exc}; waiting for it", file=sys.stderr, flush=True)
                    said = True
                await asyncio.sleep(0.5)

    def _stale(self, why: str) -> MetaoptError:
        """The error to give when the pid file names no live metaopt process: the peer died
        and left its peer.address behind, or is just stopping (its pid file goes first)."""
        return MetaoptError(
            f"no peer is running on {self.dirs.root} (its peer.address is left from one that"
            f" stopped or died; {why}); start one with `metaopt peer start --data-dir"
            f" {self.dirs.root}`"
        )
