"""The CLI's way to its own peer (LocalPeer): through the data directory, to that peer only."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaopt._errors import MetaoptError
from metaopt.peer._config import PeerConfig
from metaopt.peer._local import LocalPeer
from metaopt.peer._node import Node

pytestmark = pytest.mark.integration


@pytest.mark.asyncio
async def test_a_stale_peer_address_does_not_reach_the_peer_that_took_the_port(
    tmp_path: Path,
) -> None:
    # A peer killed with -9 leaves peer.address behind; another (of the same cluster) started
    # on that port later, and `metaopt peer stop` on the dead one's data directory stopped it.
    alive = Node(PeerConfig(data_dir=tmp_path / "alive", port=0, mdns=False))
    dead = Node(PeerConfig(data_dir=tmp_path / "dead", port=0, mdns=False, key_text=None))
    try:
        await alive.start()
        (tmp_path / "dead").mkdir(exist_ok=True)
        dead.dirs.key_file.write_text(alive.key.to_text())  # the same cluster
        dead.dirs.address_file.write_text(alive.addr)  # what the killed peer left behind
        assert (await LocalPeer(tmp_path / "alive").acall("api.status"))["pid"]
        with pytest.raises(MetaoptError, match=r"is not the peer of .*dead.*stale") as caught:
            await LocalPeer(tmp_path / "dead").acall("api.shutdown")
        assert "\n" not in str(caught.value)
        assert not alive._stopping.is_set()
    finally:
        await alive.stop()
        dead.store.close()
