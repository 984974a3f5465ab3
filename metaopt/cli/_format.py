"""Plain-text tables and numbers for the terminal (no dependency: columns are simple)."""

from __future__ import annotations

import json
import math
import shlex
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "best_summary",
    "column_names",
    "columns",
    "command",
    "elided",
    "experiment_word",
    "fmt_value",
    "json_text",
    "printable",
    "state_summary",
    "table",
    "trial_state",
]

_OPTIONAL_STATES = ("frozen", "killed", "lost", "interrupted")


def printable(text: str, *, lines: bool = False) -> str:
    """text with what a terminal would act on written as escapes (\\n, \\x1b, ...): names,
    params and reasons come from other peers' records, and one with a newline or a terminal
    escape in it forged lines of a table or a log, or recoloured the terminal. ``lines``
    keeps the newlines, for text shown as lines."""
    if text.isprintable():  # nearly always: no copy
        return text
    if lines:
        return "\n".join(printable(line) for line in text.split("\n"))
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def columns(text: str) -> int:
    """How many terminal columns text takes: East Asian wide characters take two, combining
    marks none (a name of 64 CJK characters, counted as 64, pushed every column out of line)."""
    if text.isascii():
        return len(text)
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


def elided(text: str, width: int = 40) -> str:
    """text shown in at most ``width`` columns, its middle replaced by '…' if it is wider
    (its start and its end are what tell names apart): a table is as wide as its widest cell."""
    if columns(text) <= width:
        return text
    head, tail = (
        _fitting(text, width - 1 - (width - 1) // 3),
        _fitting(text[::-1], (width - 1) // 3),
    )
    return f"{head}…{tail[::-1]}"


def _fitting(text: str, width: int) -> str:
    """The longest start of text that fits in width columns."""
    used = 0
    for i, c in enumerate(text):
        used += columns(c)
        if used > width:
            return text[:i]
    return text


def json_text(value: Any, **options: Any) -> str:
    """value as valid JSON: a float that is not finite (a parameter from another peer's
    record may be) is the string "Infinity", "-Infinity" or "NaN", not JSON's missing token.
    ``options`` go to json.dumps."""
    return json.dumps(_finite(value), allow_nan=False, **options)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def column_names(
    fixed: Sequence[str], params: Sequence[str], metrics: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The headers of a table's parameter and metric columns, none twice in the table: a name
    that is also a fixed column's or one of the other kind's is prefixed ``param:`` or
    ``metric:`` (a CSV reader keyed by header lost one of the two columns). The others keep
    their name; a name with a colon is prefixed too, so a prefixed header is never another
    column's name (metric names have none)."""
    fixed_set, param_set, metric_set = set(fixed), set(params), set(metrics)

    def side(names: Sequence[str], other: set[str], prefix: str) -> list[str]:
        return [f"{prefix}:{n}" if n in fixed_set or n in other or ":" in n else n for n in names]

    return side(params, metric_set, "param"), side(metrics, param_set, "metric")


def command(*words: str, data_dir: str | None = None) -> str:
    """A metaopt command as it can be pasted into a shell: each word quoted, and ``data_dir``,
    the --data-dir the user gave, if any (without it the command asks another peer)."""
    if data_dir:  # (None: the default directory; an empty one is refused before this)
        words = (*words, "--data-dir", data_dir)
    return " ".join(["metaopt", *(shlex.quote(w) for w in words)])


def experiment_word(info: Mapping[str, Any], given: str | None) -> str:
    """The word that reaches an experiment in a printed command: its name if ``given`` (what
    the user typed, or None) is that name, which finds the latest of the name; else the start
    of its id, which finds this one (an earlier namesake, or one the user reached by id)."""
    name = str(info["name"])
    return name if given is not None and given.strip() == name else str(info["id"])[:12]


def fmt_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.4g}"
        return f"{value:.5g}"
    return printable(str(value))


def best_summary(info: Mapping[str, Any]) -> Any:
    """An experiment's best value, or "front of N" with several objectives (no one value is
    the best); None before any trial completed."""
    best = info["best"]
    if not best:
        return None
    return f"front of {len(best)}" if len(info["objectives"]) > 1 else best[0]["value"]


def state_summary(counts: Mapping[str, int], thawed: int = 0) -> str:
    """How many trials are in each state, e.g. "4 done, 2 running, 1 frozen, 1 killed, 0 failed".

    Done, running (pending included) and failed always show; the early-stopping states
    (frozen, killed), the trials waiting for a peer to rerun them (lost, interrupted) and the
    trials ever resumed after a freeze (thawed, in any state now) show when there are any.
    """
    parts = [
        f"{counts.get('completed', 0)} done",
        f"{counts.get('running', 0) + counts.get('pending', 0)} running",
    ]
    parts += [f"{counts[s]} {s}" for s in _OPTIONAL_STATES if counts.get(s)]
    if thawed:
        parts.append(f"{thawed} thawed")
    parts.append(f"{counts.get('failed', 0)} failed")
    return ", ".join(parts)


def trial_state(state: str, thaws: int) -> str:
    """A trial's state, with how often it was resumed after a freeze if it was."""
    return f"{state}, thawed {thaws}x" if thaws else state


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    headers = [printable(h) for h in headers]
    cells = [[fmt_value(c) for c in row] for row in rows]
    # Each cell's width counted once, not again to pad it (600,000 cells at 60,000 trials).
    used = [[columns(c) for c in row] for row in cells]
    widths = [max(column) for column in zip([columns(h) for h in headers], *used, strict=True)]

    def line(row: Sequence[str], taken: Sequence[int]) -> str:
        padded = (c + " " * (w - n) for c, n, w in zip(row, taken, widths, strict=True))
        return "  ".join(padded).rstrip()

    lines = [line(headers, [columns(h) for h in headers]), "  ".join("-" * w for w in widths)]
    lines += [line(row, taken) for row, taken in zip(cells, used, strict=True)]
    return "\n".join(lines)
