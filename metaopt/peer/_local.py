"""Talking to the peer on this machine from the CLI: find it through its data directory."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from crdt import ClusterKey, FrameCodec
from metaopt._errors import MetaoptError
from metaopt.peer._identity import DataDir, default_data_dir
from metaopt.peer._transport import Client, PeerUnreachable, RemoteError
from metaopt.peer._wire import MISADDRESSED

__all__ = ["LocalPeer", "resolve_data_dir"]


def resolve_data_dir(value: str | None) -> Path:
    if value:
        return Path(value)
    env = os.environ.get("METAOPT_DATA_DIR")
    return Path(env) if env else default_data_dir()


class LocalPeer:
    """The peer that owns a data directory, reached over loopback with the cluster key."""

    def __init__(self, data_dir: Path, timeout: float = 30.0) -> None:
        self.dirs = DataDir(data_dir)
        if not self.dirs.address_file.exists():
            raise MetaoptError(
                f"no peer is running on {self.dirs.root}; start one with"
                f" `metaopt peer start --data-dir {self.dirs.root}`"
            )
        self.addr = self.dirs.address_file.read_text().strip()
        key_text = self.dirs.read_key()
        if key_text is None:
            raise MetaoptError(f"{self.dirs.key_file} is missing; restart the peer")
        self.key = ClusterKey.from_text(key_text)
        self.node_id = self.dirs.node_id()
        self._codec = FrameCodec([self.key])
        self._timeout = timeout

    def call(self, op: str, body: Any = None) -> Any:
        return asyncio.run(self.acall(op, body))

    async def acall(self, op: str, body: Any = None) -> Any:
        client = Client(self._codec, os.urandom(16), "", timeout=self._timeout)
        try:
            return await client.call(self.addr, op, body, to=self.node_id)
        except PeerUnreachable as exc:
            raise MetaoptError(
                f"the peer of {self.dirs.root} at {self.addr} does not answer ({exc});"
                " is it running? `metaopt peer start` starts it"
            ) from None
        except RemoteError as exc:
            if MISADDRESSED not in str(exc):
                raise
            # Its peer died and left peer.address behind, and another took the port.
            raise MetaoptError(
                f"the peer at {self.addr} is not the peer of {self.dirs.root} (its peer.address"
                f" is stale: {str(exc).partition(MISADDRESSED)[2].strip()}); is that peer"
                f" running? `metaopt peer start --data-dir {self.dirs.root}` starts it"
            ) from None
        finally:
            await client.close()
