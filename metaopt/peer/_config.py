"""Everything a peer can be tuned by, in one frozen value passed to its parts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PeerConfig", "Timing"]


@dataclass(frozen=True)
class Timing:
    """Intervals and timeouts in seconds; tests shrink them, defaults suit a real cluster."""

    anti_entropy: float = 2.0  # one reconciliation with a random live peer this often
    # Peers each new record is pushed to at once. A lab cluster is small, so by default every
    # live peer hears of a record directly (one hop); anti-entropy covers larger clusters.
    push_fanout: int = 16
    gossip: float = 5.0  # exchange peer tables this often
    peer_timeout: float = 30.0  # a peer unheard of for this long is not live
    heartbeat: float = 10.0  # a running trial with no report for this long gets a heartbeat
    lost_after: float = 60.0  # another node's trial unheard of for this long is lost
    schedule: float = 0.5  # look for free slots and lost trials this often
    # A new point waits (its rank among live peers) x this before it is recorded, so that of
    # peers asking at the same moment each hears of the ones before it (see Node.new_trial).
    settle: float = 0.05
    stop_grace: float = 10.0  # stop file → SIGTERM → SIGKILL, each after this long
    # A call gives up on a partner that sends no byte of its answer for request_timeout, and
    # on any call after transfer_timeout. Over a slow link an answer of 4 MiB takes seconds
    # to cross (tens, with several partners sending at once): bounded as a whole by the
    # request timeout, a joiner's own sessions were given up as the answers came (every one,
    # at 5 Mbit/s in network namespaces), their bytes sent for nothing.
    request_timeout: float = 10.0
    transfer_timeout: float = 60.0
    # A call gives up on a partner whose TCP handshake has not completed by then: one cut off
    # by a partition never answers it, and held each anti-entropy session for the request
    # timeout (a peer restarted beside one caught up in 12.3-12.6 s, not 2.7-2.9: 4 peers in
    # network namespaces). A handshake takes milliseconds; one lost SYN is sent again after 1 s.
    connect_timeout: float = 2.5
    monitor: float = 2.0  # early-stopping decisions this often
    report_interval: float = 0.2  # a trial's progress records at most this often (thinned)
    # ...and at most this fraction of its run's age (up to a heartbeat apart): 500 records in
    # its first 100 s, 2,000 more by 83 minutes, then one per heartbeat. Every record is kept
    # by every peer for good; at five a second a two-hour run wrote 36,000.
    report_age_fraction: float = 0.002
    leave_wait: float = 2.0  # a stopping peer waits at most this long for peers to hear it leave


@dataclass(frozen=True)
class PeerConfig:
    host: str = "127.0.0.1"
    port: int = 7787
    data_dir: Path = Path("metaopt-data")
    join: tuple[str, ...] = ()
    gpus: str = "auto"
    slots: int = 1
    key_text: str | None = None
    name: str = ""
    mdns: bool = True
    timing: Timing = field(default_factory=Timing)

    @property
    def address(self) -> str:
        return host_port(self.host, self.port)


def host_port(host: str, port: int) -> str:
    """HOST:PORT as peers gossip it and a URL takes it: an IPv6 host in brackets ("::1" gave
    "::1:7787", which peers dropped and no URL could be made of)."""
    bare = ":" in host and not host.startswith("[")
    return f"[{host}]:{port}" if bare else f"{host}:{port}"
