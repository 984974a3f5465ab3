"""Storage-trouble behaviour a mutation audit found unpinned: which OS errors are the disk's,
the minute between lines at its edge, counts and reasons per line, when the first probe is due,
and the defaults a peer runs with."""

from __future__ import annotations

import errno

import pytest

from metaopt.peer._storage import StorageTrouble, storage_failure

FULL = OSError(errno.ENOSPC, "No space left on device")
READ_ONLY = OSError(errno.EROFS, "Read-only file system")


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "cannot write the replica" in r.getMessage()]


@pytest.mark.parametrize(
    ("code", "word"),
    [
        (errno.ENOSPC, "No space left on device"),
        (errno.EROFS, "Read-only file system"),
        (errno.EDQUOT, "Disk quota exceeded"),
        (errno.EIO, "Input/output error"),
        (errno.EFBIG, "File too large"),
    ],
)
def test_every_error_of_a_full_read_only_or_failing_disk_is_the_disks(code: int, word: str) -> None:
    """A quota, an I/O error or a file too large is the disk's fault as a full disk is: the
    peer must hold back for each (else it answers its peers while it can record nothing)."""
    assert storage_failure(OSError(code, word)) == word
    assert StorageTrouble(clock=lambda: 0.0).note(OSError(code, word), "a sync")


def test_the_first_probe_comes_hold_seconds_after_the_failure_not_at_once() -> None:
    """The store is tried again hold seconds after it failed (a monotonic clock is far from 0
    on a running machine): probing at once reopens a store that has just failed, for nothing."""
    now = [5000.0]
    trouble = StorageTrouble(clock=lambda: now[0], hold=10.0)
    assert not trouble.probe_due()  # nothing failed
    trouble.note(FULL, "a sync")
    assert not trouble.probe_due()
    now[0] = 5009.5
    assert not trouble.probe_due()
    now[0] = 5010.0  # exactly hold seconds later: due
    assert trouble.probe_due() and not trouble.probe_due()


def test_a_failure_noted_again_does_not_put_the_next_probe_off() -> None:
    """Each refused write notes the failure; were the probe's clock restarted by each, a peer
    refused every second would never try its store again."""
    now = [0.0]
    trouble = StorageTrouble(clock=lambda: now[0], hold=10.0)
    trouble.note(FULL, "a sync")
    now[0] = 9.0
    trouble.note(FULL, "a sync")
    now[0] = 10.0
    assert trouble.probe_due()


def test_a_line_is_said_again_exactly_a_minute_after_the_last(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Once a minute means at 60 s, not a moment after."""
    now = [0.0]
    trouble = StorageTrouble(clock=lambda: now[0], every=60.0)
    trouble.note(FULL, "a sync")
    now[0] = 59.9
    trouble.note(FULL, "a sync")
    now[0] = 60.0
    trouble.note(FULL, "a sync")
    assert len(_lines(caplog)) == 2 and "1 more such failures" in _lines(caplog)[1]


def test_each_line_counts_the_failures_since_the_line_before_it_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The count restarts at each line: cumulated, a disk full for an hour would read as ever
    more failures a minute."""
    now = [0.0]
    trouble = StorageTrouble(clock=lambda: now[0], every=60.0)
    for second in (0.0, 1.0, 2.0, 60.0, 61.0, 120.0):
        now[0] = second
        trouble.note(FULL, "a sync")
    said = _lines(caplog)
    assert len(said) == 3
    assert "0 more such" in said[0] and "2 more such" in said[1] and "1 more such" in said[2]


def test_the_problem_names_the_latest_reason(caplog: pytest.LogCaptureFixture) -> None:
    """A disk that filled and was then remounted read-only is read-only now: `peer status`
    must say what stands in the way today, not what did first."""
    trouble = StorageTrouble(clock=lambda: 0.0)
    trouble.note(FULL, "a sync")
    trouble.note(READ_ONLY, "a probe")
    assert trouble.problem() == "cannot write its replica (Read-only file system)"


def test_a_write_that_succeeds_with_nothing_failed_ends_nothing_and_says_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every write the peer makes calls recovered(): only one that ends a failure says so and
    makes the peer rejoin (the peer calls CatchUp.rejoin on True, which resets its catch-up)."""
    trouble = StorageTrouble(clock=lambda: 0.0)
    assert trouble.recovered() is False
    assert not [r for r in caplog.records if "written again" in r.getMessage()]
    trouble.note(FULL, "a sync")
    assert trouble.recovered() is True
    assert trouble.recovered() is False


def test_a_peers_storage_trouble_probes_every_10_s_and_speaks_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The defaults the README documents ("it tries every 10 s", a line "once a minute"),
    which the peer constructs its StorageTrouble with."""
    now = [1000.0]
    trouble = StorageTrouble(clock=lambda: now[0])
    trouble.note(FULL, "a sync")
    now[0] = 1009.9
    assert not trouble.probe_due()
    now[0] = 1010.0
    assert trouble.probe_due()
    now[0] = 1059.9
    trouble.note(FULL, "a sync")
    assert len(_lines(caplog)) == 1
    now[0] = 1060.0
    trouble.note(FULL, "a sync")
    assert len(_lines(caplog)) == 2


def test_a_failure_soon_after_a_recovery_is_said_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """After "the replica can be written again: this peer goes on", a new failure within the
    minute was silent: the log's last line said the peer goes on while it held back."""
    now = [0.0]
    trouble = StorageTrouble(clock=lambda: now[0], every=60.0)
    trouble.note(FULL, "a sync")
    now[0] = 20.0
    trouble.recovered()
    now[0] = 30.0
    trouble.note(FULL, "a sync")
    said = _lines(caplog)
    assert len(said) == 2 and "0 more such failures" in said[1]
