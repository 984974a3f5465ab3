"""Suite-wide settings: hypothesis profiles (CI runs the same examples, no deadlines), and
Ctrl-C raising KeyboardInterrupt."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough", deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True, scope="session")
def _ctrl_c_raises() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt, as in a terminal, however the suite was started.

    A shell starting it in the background (`cmd &` in a script) has it ignore SIGINT, and
    Python then installs no handler: the tests of what a Ctrl-C does (crdt's held interrupts,
    a Study's tell) failed with "DID NOT RAISE KeyboardInterrupt" (a fresh-clone run).
    """
    before = signal.getsignal(signal.SIGINT)
    if before == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if before == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
