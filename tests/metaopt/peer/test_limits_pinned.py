"""File-descriptor behaviour a mutation audit found unpinned: the 65,536 cap and the limits left
alone, which errors are "out of descriptors", the minute's edge, the count each line gives, and
an uninstall that leaves a later handler in place."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
from typing import Any

import pytest

from metaopt.peer._limits import LoopGuard, raise_fd_limit

INF = resource.RLIM_INFINITY


def _limits(
    monkeypatch: pytest.MonkeyPatch, soft: int, hard: int, refuse: bool = False
) -> list[tuple[int, int]]:
    """Fakes the process's open-files limits (soft, hard); returns the setrlimit calls."""
    calls: list[tuple[int, int]] = []

    def setrlimit(which: int, limits: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        calls.append(limits)
        if refuse:
            raise ValueError("not allowed to raise maximum limit")

    monkeypatch.setattr(resource, "getrlimit", lambda which: (soft, hard))
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    return calls


@pytest.mark.parametrize("hard", [1_048_576, INF])
def test_the_soft_limit_is_raised_at_most_to_65536(
    monkeypatch: pytest.MonkeyPatch, hard: int
) -> None:
    """A hard limit of a million (or none) raises the soft one to 65,536, not past it: a peer
    is a server, not a reason to hold a million descriptors' worth of kernel tables."""
    calls = _limits(monkeypatch, 1024, hard)
    assert raise_fd_limit() == 1 << 16
    assert calls == [(1 << 16, hard)]


def test_an_unlimited_soft_limit_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process with no limit on open files keeps it: "raising" it to 65,536 would lower it."""
    calls = _limits(monkeypatch, INF, INF)
    assert raise_fd_limit() == int(INF)
    assert calls == []


def test_a_refused_raise_reports_the_limit_still_in_force(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where setrlimit is refused the peer says the soft limit it still has, not the one it
    asked for (what it logs at start is what the user tunes `ulimit -n` by)."""
    calls = _limits(monkeypatch, 256, 4096, refuse=True)
    assert raise_fd_limit() == 256
    assert calls == [(4096, 4096)]


def _guarded(loop: asyncio.AbstractEventLoop, now: list[float]) -> tuple[LoopGuard, list[Any]]:
    passed: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda loop, context: passed.append(context))
    guard = LoopGuard(clock=lambda: now[0])
    guard.install(loop)
    return guard, passed


def _out_of(loop: asyncio.AbstractEventLoop, code: int = errno.EMFILE, times: int = 1) -> None:
    for _ in range(times):
        loop.call_exception_handler({"message": "accept", "exception": OSError(code, "x")})


def _said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "out of file descriptors" in r.getMessage()]


@pytest.mark.asyncio
@pytest.mark.parametrize("code", [errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
async def test_a_full_system_table_or_no_buffers_is_out_of_descriptors_too(
    caplog: pytest.LogCaptureFixture, code: int
) -> None:
    """ENFILE (the system's table full), ENOBUFS and ENOMEM from accept are the same flood as
    EMFILE: one line a minute, never a traceback per refused connection."""
    caplog.set_level(logging.DEBUG)
    loop = asyncio.get_running_loop()
    guard, passed = _guarded(loop, [0.0])
    try:
        _out_of(loop, code, times=100)
    finally:
        guard.uninstall()
    assert len(_said(caplog)) == 1 and passed == [] and guard.suppressed == 99


@pytest.mark.asyncio
async def test_another_os_error_is_passed_on(caplog: pytest.LogCaptureFixture) -> None:
    """A connection reset (or any OSError that is not about descriptors) is not swallowed as
    "out of file descriptors": the handler it replaced sees it."""
    caplog.set_level(logging.DEBUG)
    loop = asyncio.get_running_loop()
    guard, passed = _guarded(loop, [0.0])
    reset = {"message": "reset", "exception": OSError(errno.ECONNRESET, "Connection reset")}
    try:
        loop.call_exception_handler(reset)
    finally:
        guard.uninstall()
    assert passed == [reset] and _said(caplog) == []


@pytest.mark.asyncio
async def test_the_next_line_comes_exactly_a_minute_later_and_counts_only_its_own_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Within the minute nothing more is said (59.9 s), at 60 s the next line, and each line
    counts the errors since the previous line only: "0 more" after a quiet minute."""
    caplog.set_level(logging.DEBUG)
    loop = asyncio.get_running_loop()
    now = [1000.0]
    guard, _ = _guarded(loop, now)
    try:
        _out_of(loop)
        now[0] = 1059.9
        _out_of(loop, times=3)
        assert len(_said(caplog)) == 1
        now[0] = 1060.0
        _out_of(loop)
        now[0] = 1120.0
        _out_of(loop)
    finally:
        guard.uninstall()
    lines = _said(caplog)
    assert len(lines) == 3
    assert "3 more" in lines[1] and "0 more" in lines[2]


@pytest.mark.asyncio
async def test_uninstall_leaves_a_handler_set_after_it_in_place() -> None:
    """A guard uninstalled after someone else set a handler must not put its predecessor
    back over theirs (that would silently drop their handler)."""
    loop = asyncio.get_running_loop()
    before = loop.get_exception_handler()
    guard = LoopGuard()
    guard.install(loop)

    def later(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        pass

    loop.set_exception_handler(later)
    try:
        guard.uninstall()
        assert loop.get_exception_handler() is later
    finally:
        loop.set_exception_handler(before)
