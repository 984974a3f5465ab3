"""a call from a fork()ed child is a one-line MetaoptError, also when another thread
of the parent was inside a call of the Study at the fork (a threaded program making a Pool)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import metaopt
from metaopt import MetaoptError


def test_a_forked_child_is_refused_not_hung_while_a_parent_thread_is_in_a_call() -> None:
    inside, release = threading.Event(), threading.Event()
    calls = 0

    def clock() -> float:  # the user's clock=: a slow call of the Study, in a thread
        nonlocal calls
        calls += 1
        if threading.current_thread().name == "asker" and not release.is_set():
            inside.set()
            release.wait(10)
        return time.time()

    study = metaopt.Study(space={"x": "uniform(0, 1)"}, seed=0, algorithm="random", clock=clock)
    asker = threading.Thread(target=study.ask, name="asker")
    asker.start()
    assert inside.wait(5)  # the thread is inside ask(), holding the Study's lock
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: as a multiprocessing fork Pool worker would
        os.close(read)

        def hung(*_: object) -> None:
            raise TimeoutError("ask() still waiting after 3 s")

        signal.signal(signal.SIGALRM, hung)
        signal.alarm(3)
        try:
            study.ask()
            said = "no error"
        except MetaoptError as exc:
            said = f"MetaoptError: {exc}"
        except BaseException as exc:
            said = f"{type(exc).__name__}: {exc}"
        os.write(write, said.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    said = os.read(read, 4096).decode()
    os.close(read)
    release.set()
    asker.join(10)
    study.close()
    assert said.startswith("MetaoptError") and "forked" in said, said


def _in_child_while_a_parent_thread_is_in_ask(action: str) -> str:
    inside, release = threading.Event(), threading.Event()

    def clock() -> float:
        if threading.current_thread().name == "asker" and not release.is_set():
            inside.set()
            release.wait(10)
        return time.time()

    study = metaopt.Study(space={"x": "uniform(0, 1)"}, seed=0, algorithm="random", clock=clock)
    asker = threading.Thread(target=study.ask, name="asker")
    asker.start()
    assert inside.wait(5)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)

        def hung(*_: object) -> None:
            raise TimeoutError(f"{action} still waiting after 3 s")

        signal.signal(signal.SIGALRM, hung)
        signal.alarm(3)
        try:
            if action == "trials":
                assert study.trials is not None
            elif action == "best":
                assert study.best is not None
            elif action == "close":
                study.close()
            said = "returned"
        except BaseException as exc:
            said = f"{type(exc).__name__}: {exc}"
        os.write(write, said.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    said = os.read(read, 4096).decode()
    os.close(read)
    release.set()
    asker.join(10)
    study.close()
    return said


@pytest.mark.parametrize("action", ["trials", "best", "close"])
def test_a_forked_child_is_not_hung_by_the_parents_lock_reading_or_closing(action: str) -> None:
    # (Moved before the lock in ask/tell/sync, the check still came after it here.)
    said = _in_child_while_a_parent_thread_is_in_ask(action)
    if action == "close":
        assert said == "returned"  # (nothing: the Study is the parent's)
    else:
        assert said.startswith("MetaoptError") and "forked" in said, said
