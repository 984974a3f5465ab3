"""Running out of file descriptors is one log line a minute, not a traceback per accept."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource

import pytest

from metaopt.peer._limits import LoopGuard, raise_fd_limit


def test_the_soft_limit_on_open_files_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        now = raise_fd_limit()
        assert now == min(hard, 1 << 16) and now >= min(256, hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == now
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.asyncio
async def test_out_of_file_descriptors_is_said_once_a_minute_and_the_rest_passed_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    passed: list[dict[str, object]] = []
    loop.set_exception_handler(lambda loop, context: passed.append(context))
    now = [0.0]
    guard = LoopGuard(clock=lambda: now[0])
    guard.install(loop)
    caplog.set_level(logging.DEBUG)
    try:
        out = OSError(errno.EMFILE, "Too many open files")
        for _ in range(5000):  # what asyncio raised in 40 s behind a limit of 256
            loop.call_exception_handler(
                {"message": "socket.accept() out of system resource", "exception": out}
            )
        now[0] += 61
        loop.call_exception_handler({"message": "again", "exception": out})
        other = {"message": "something else", "exception": ValueError("x")}
        loop.call_exception_handler(other)
    finally:
        guard.uninstall()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("out of file descriptors" in line for line in lines)
    assert "4999 more" in lines[1] and not any(r.exc_info for r in caplog.records)
    assert passed == [other]
    assert loop.get_exception_handler() is not guard
