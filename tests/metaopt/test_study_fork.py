"""A call from a fork()ed child is a one-line MetaoptError, also when another thread of the
parent was inside a call of the Study at the fork (a threaded program making a Pool)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import metaopt


def _in_child_while_a_parent_thread_is_in_ask(action: str) -> str:
    """What ``action`` said in a child forked while a parent thread held the Study's lock."""
    inside, release = threading.Event(), threading.Event()

    def clock() -> float:  # the user's clock=: a slow call of the Study, in a thread
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
            raise TimeoutError(f"{action} still waiting after 3 s")

        signal.signal(signal.SIGALRM, hung)
        signal.alarm(3)
        try:
            if action == "ask":
                study.ask()
            elif action == "trials":
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


@pytest.mark.parametrize("action", ["ask", "trials", "best", "close"])
def test_a_forked_child_is_refused_not_hung_by_the_parents_lock(action: str) -> None:
    # The check came after the lock (ask, then trials, best and close after the first fix).
    said = _in_child_while_a_parent_thread_is_in_ask(action)
    if action == "close":
        assert said == "returned"  # (nothing: the Study is the parent's)
    else:
        assert said.startswith("MetaoptError") and "forked" in said, said
