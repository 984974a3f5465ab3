"""A run that ends by a signal asking it to end (SIGTERM, SIGINT, SIGHUP, or a shell's 128 +
one) while asked to stop: interrupted when its peer stops (systemd and a shutdown send the
signal to every process at once; see test_runner_decisions), but during a freeze or a kill,
with its peer running on, it crashed while it saved its checkpoint (its own bug exiting 130,
a script killing itself, a user's `kill -TERM PID`): failed, not frozen and thawed from half
a checkpoint (a review found the first fix recorded all four frozen)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from metaopt.peer._executor import TrialProcess
from metaopt.peer._runner import Running, TrialRunner
from metaopt.space import Space
from tests.metaopt.peer.test_executor import _FAST, _run, _script, _spec
from tests.metaopt.peer.test_runner_decisions import _frozen_trial, _Node

CRASHES_WHILE_CHECKPOINTING = """
    import os, signal, sys, time
    import metaopt.worker as w
    for step in range(1, 60):
        w.report(loss=1.0 / step, step=step)
        if w.should_stop():
            open(os.environ["HALF"], "w").write("half a checkpoint")
            {crash}
        time.sleep(0.05)
"""

CRASHES = {
    "exit 130 (own bug)": "sys.exit(130)",
    "exit 143 (own bug)": "sys.exit(143)",
    "kills itself with SIGTERM": "os.kill(os.getpid(), signal.SIGTERM); time.sleep(5)",
    "SIGTERM from outside (kill PID)": "time.sleep(0.3); time.sleep(30)",
}


@pytest.mark.asyncio
@pytest.mark.parametrize("how", list(CRASHES))
async def test_a_run_that_dies_of_sigterm_or_exit_130_during_a_freeze_is_failed_not_frozen(
    tmp_path: Path, how: str
) -> None:
    outside = how.startswith("SIGTERM from outside")

    def react(process: TrialProcess, kind: str, data: dict[str, Any]) -> None:
        if kind == "progress" and data["step"] == 1:
            process.request_stop("frozen")  # the stopper froze it; the peer runs on
        if outside and kind == "progress" and data["step"] == 1:
            pid = process.pid
            assert pid is not None
            asyncio.get_running_loop().call_later(0.15, os.kill, pid, signal.SIGTERM)

    config = dataclasses.replace(_FAST, grace=30.0)  # no signal of the peer's comes first
    body = CRASHES_WHILE_CHECKPOINTING.replace("{crash}", CRASHES[how])
    spec = _spec(tmp_path, _script(tmp_path, body), config=config,
                 env={"HALF": str(tmp_path / "half")})  # fmt: skip
    outcome, _events = await _run(spec, react)
    assert (tmp_path / "half").exists()

    # What the runner records of it, the peer not stopping.
    state, trial = _frozen_trial(1)
    node = _Node(state, Space.from_dict({"x": "uniform(0, 1)"}))
    node.stopping = False
    runner = TrialRunner(node, SimpleNamespace(gpus="none", slots=1))  # type: ignore[arg-type]
    run = Running(runner.slots[0], state.key, trial, outcome="frozen", last_step=1)
    runner._record_outcome(run, outcome)
    recorded = node.written[-1][1]
    assert (outcome.status, recorded) == ("failed", "failed"), (outcome.exit_code, outcome.reason)
