"""The cycle collector held off while many objects that form no cycle are built at once."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["collector_paused"]


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No collection inside the block; as it was after (nested blocks leave it paused).

    Python's collector runs each time 700 more containers are alive, and every few of those
    runs walks all it tracks: building a page of 60,000 trials (a few maps each) or folding
    200,000 records, it walked what was built so far again and again, a fifth to a third of
    the work. What such a block builds holds no cycle (or a few, collected after it).
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()
