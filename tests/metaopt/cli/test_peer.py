"""The `metaopt peer` command's own behaviour, without a peer running."""

from __future__ import annotations

import logging

from metaopt.cli._peer import _printable_lines


def test_a_log_line_cannot_be_forged_by_a_name_from_another_peer() -> None:
    # Experiment names come from any peer's records, and earlier versions wrote any string: a
    # newline or a terminal escape in one forged lines in every peer's log.
    name = "sweep\n12:00:00 INFO peer stopped\x1b[2J"
    record = logging.LogRecord("metaopt.peer", logging.INFO, __file__, 1, "experiment %s: %s",
                               (name, "its search failed"), None)  # fmt: skip
    assert _printable_lines(record)
    shown = record.getMessage()
    assert shown.isprintable()
    assert shown == "experiment sweep\\n12:00:00 INFO peer stopped\\x1b[2J: its search failed"
    plain = logging.LogRecord("metaopt.peer", logging.INFO, __file__, 1, "slot %d runs %s",
                              (0, "x"), None)  # fmt: skip
    assert _printable_lines(plain) and plain.getMessage() == "slot 0 runs x" and plain.args
