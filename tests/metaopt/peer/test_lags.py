"""A request's wait in this peer's sockets, told from its lag and its sender's usual one."""

from __future__ import annotations

import pytest

from metaopt.peer._lags import RequestLags

A, B = b"a" * 16, b"b" * 16


def _lags() -> RequestLags:
    return RequestLags(window=240.0, jitter=0.5, max_senders=4)


def test_a_lag_beyond_the_senders_least_is_a_wait_whatever_the_clocks_offset() -> None:
    lags = _lags()
    assert lags.waited(A, 60.1, 0.0, 0.0) == 0.0  # a clock a minute behind: its usual
    assert lags.waited(A, 60.4, 1.0, 0.0) == 0.0  # (jitter)
    assert lags.waited(A, 68.1, 10.0, 0.0) == pytest.approx(8.0)  # waited through a pause
    assert lags.waited(B, 0.1, 10.0, 0.0) == 0.0  # another sender, another offset


def test_a_pauses_queued_requests_are_each_judged_by_their_own_wait() -> None:
    # Handled oldest first, they do not move the sender's usual lag up: a mean that crept
    # up with them read the later ones as fresh.
    lags = _lags()
    lags.waited(A, 0.1, 0.0, 0.0)
    waits = [lags.waited(A, 0.1 + 40 - t, 40.0, 40.0) for t in range(0, 40, 10)]
    assert waits == pytest.approx([40.0, 30.0, 20.0, 10.0])


def test_a_sender_not_heard_within_the_window_is_judged_by_the_hold() -> None:
    lags = _lags()
    lags.waited(A, 0.1, 0.0, 0.0)
    # Paused 300 s (past the window): its oldest queued request waited about that long, and
    # those behind it are judged from the usual lag that implies.
    assert lags.waited(A, 300.1, 300.0, 300.0) == pytest.approx(300.0)
    assert lags.waited(A, 200.1, 300.0, 300.0) == pytest.approx(200.0)
    assert lags.waited(A, 0.1, 301.0, 0.0) == 0.0  # sent since: news of now
    assert lags.waited(B, 5.0, 400.0, 0.0) == 0.0  # first heard, no hold: its usual


def test_a_clock_stepped_back_reads_as_a_wait_for_one_window_at_most() -> None:
    lags = _lags()
    lags.waited(A, 0.1, 0.0, 0.0)
    assert lags.waited(A, 100.1, 10.0, 0.0) == pytest.approx(100.0)  # stepped back 100 s
    assert lags.waited(A, 100.1, 239.0, 0.0) == pytest.approx(100.0)
    assert lags.waited(A, 100.1, 250.0, 0.0) == 0.0  # its new usual
    assert lags.waited(A, 0.1, 260.0, 0.0) == 0.0  # stepped forward again: at once


def test_its_memory_is_bounded_in_senders_and_lags() -> None:
    lags = _lags()
    for i in range(10):
        lags.waited(bytes([i]) * 16, 0.1, 0.0, 0.0)
    assert len(lags._seen) <= 4
    for t in range(1000):  # a clock running slow: lags rise without end
        lags.waited(A, 0.1 + t / 100, float(t) / 10, 0.0)
    assert len(lags._seen[A]) <= 64


def test_a_sender_first_heard_after_a_hold_is_judged_by_it_only_while_the_queue_drains() -> None:
    # First heard 35 s into a 40 s hold, its first request waited 5 s: judged by the hold,
    # as it may have waited that long; its later requests, read the moment they come, were
    # judged 35 s old for the whole window (a review of the session's fixes).
    lags = _lags()
    assert lags.waited(A, 0.1 + 5.0, 1040.0, 40.0) == pytest.approx(40.0)
    assert lags.waited(A, 0.1 + 4.0, 1040.5, 40.0) == pytest.approx(39.0)  # queued behind
    later = [lags.waited(A, 0.1, 1040.0 + t, 0.0) for t in (3.0, 10.0, 60.0, 200.0)]
    assert later == [0.0] * 4


def test_a_senders_offset_is_its_least_lag_in_the_window_and_none_once_it_is_gone() -> None:
    # What the failure back-off adds to a node's stamps to read them by this peer's clock: a
    # sender whose clock runs 90 s ahead has lags of -90 s and a little (time in flight).
    lags = RequestLags(window=240.0, jitter=0.05, max_senders=8)
    assert lags.offset(b"a" * 16, 0.0) is None  # never heard from
    for now, lag in ((1.0, -89.9), (2.0, -89.99), (3.0, -89.95)):
        lags.waited(b"a" * 16, lag, now, hold=0.0)
    assert lags.offset(b"a" * 16, 3.0) == -89.99
    assert lags.offset(b"a" * 16, 3.0 + 241.0) is None  # nothing heard in the window
