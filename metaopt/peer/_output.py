"""Reading a trial's output: METAOPT report lines, an objective regex, the tail of stderr.

Pure and incremental: bytes go in as they arrive (lines may be split across chunks, ``\\r`` and
``\\n`` both end a line), reports come out. Whatever the program prints, nothing here raises.

A report is found anywhere in a stdout line, after colour codes and a byte-order mark are
taken out: a script that printed ``epoch 1 ... `` without a newline, a progress bar or another
thread writing to the same line lost its reports when only a line's start was looked at. The
regex is matched once per line as it was left on screen: text a ``\\r`` returned over (a
progress bar's refreshes) is not a step of its own.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import regex

from metaopt._errors import WorkerError
from metaopt._records import MAX_INT
from metaopt.worker import (
    MAX_REPORT_BYTES,
    REPORT_PREFIX,
    MetricValue,
    check_metric,
    check_name,
)

__all__ = ["OutputConfig", "OutputParser", "compile_objective_regex"]

_LINE_END = re.compile(rb"[\r\n]")
_REPORT_AT = re.compile(re.escape(REPORT_PREFIX.strip()) + r"\s*(?=\{)")
# A line that starts with the word alone, as a report would: not METAOPT_TRIAL_DIR=... (`env`
# in a trial printed nine of those, each "not a JSON object", and a run that failed to report
# was said to have failed on one).
_REPORT_WORD = re.compile(re.escape(REPORT_PREFIX.strip()) + r"(?![A-Za-z0-9_])")
# Terminal codes a line may hold that are not on screen: CSI (colours, cursor moves), OSC (a
# window title, a hyperlink), a charset designation (`tput sgr0` writes ESC ( B: a bash
# script's coloured METAOPT lines were all "not a JSON object"), a one-letter escape.
_ESCAPE = (
    r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()*+][0-9A-Za-z]"
    r"|\x1b[=>78DEHMc]"
)
_INVISIBLE = re.compile(_ESCAPE + "|\ufeff")  # ..., and a BOM
_JSON = json.JSONDecoder()
_SURROGATE = re.compile("[\ud800-\udfff]")
CAPTURE_HINT = "; put the number in a group, e.g. 'acc=([0-9.]+)'"
_PREFIX_BYTES = REPORT_PREFIX.strip().encode()
_PREFIX_LEN = len(_PREFIX_BYTES) - 1  # bytes that may hold a prefix's start
# A report's start, as bytes: colour codes may stand between its word and its brace, as they
# may in the lines read (see _INVISIBLE).
_REPORT_BYTES = re.compile(re.escape(_PREFIX_BYTES) + rb"(?:\s|" + _ESCAPE.encode() + rb")*\{")
_CUT_TAIL = 64  # bytes of a cut part kept to find a report's start split across chunks
_REGEX_TRIES = 8  # a line's matches timed out by waiting, not by matching (see _match)
_REGEX_FLOOR = 0.05  # the least wall time a try is given (s)
_NAMES_SHOWN = 8  # metric names a failure's reason lists


def compile_objective_regex(pattern: str) -> Any:
    """The pattern as the peer matches it (a ``regex`` module pattern, which takes a timeout),
    or re.error saying why it is refused.

    Python's ``re`` holds the event loop for as long as a match backtracks ('(a|aa)+b' over
    a line of 'a's froze a peer for a minute, and the peers that took its trial for lost
    froze in turn), and nothing can interrupt it. ``regex`` in its VERSION0 mode reads
    ``re``'s syntax the ``re`` way; it accepts more, so ``re`` says first what is allowed:
    the documented syntax, and what older peers compile.
    """
    try:
        # (Quiet: re's FutureWarning of a "possible nested set" was printed raw at submit.)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            re.compile(pattern)
            if (size := _laid_out(pattern)) > _MAX_LAID_OUT:
                # regex lays every repeat out: 'x{10000000}' took 3 s and a gigabyte to
                # compile, 'x{1000000000}' every byte of memory (the kernel killed the
                # process), at submit and on every peer at every trial of it.
                raise re.error(f"its repeats come to {size:,} items, over {_MAX_LAID_OUT:,}")
            try:
                return regex.compile(pattern, flags=regex.VERSION0)
            except regex.error as exc:
                raise re.error(str(exc)) from None
    except RecursionError:
        # 3,000 nested groups: each trial's start logged a traceback of thousands of lines.
        raise re.error("it is nested too deeply") from None
    except (OverflowError, MemoryError):
        # ('x{4294967296}': re's OverflowError was a traceback at submit, and on a peer
        # "crashed the executor" at every trial; 'a{1000000000}' a MemoryError.)
        raise re.error("a repeat count in it is too large") from None


_MAX_LAID_OUT = 100_000  # items an objective regex's repeats may come to (0.03 s to compile)


def _laid_out(pattern: str) -> int:
    """How many items the pattern's repeats come to, each counted as many times as it may
    repeat (at least, for an open-ended one): what the ``regex`` module lays out."""
    from re import _constants as c  # type: ignore[attr-defined]
    from re import _parser  # type: ignore[attr-defined]

    def size(items: Any) -> int:
        total = 0
        for op, av in items:
            if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
                low, high, sub = av
                total += max(low if high == c.MAXREPEAT else high, 1) * size(sub)
            elif op in (c.SUBPATTERN, c.ATOMIC_GROUP, c.ASSERT, c.ASSERT_NOT):
                total += size(av[-1])
            elif op is c.BRANCH:
                total += sum(size(branch) for branch in av[1])
            elif op is c.GROUPREF_EXISTS:
                total += sum(size(branch) for branch in av[1:] if branch is not None)
            else:
                total += 1
        return total

    return size(_parser.parse(pattern))


@dataclass(frozen=True)
class OutputConfig:
    """How a trial's output is read."""

    objective: str = "loss"  # the metric a regex match is reported as
    objective_regex: str | None = None  # group 1 (or the whole match) of the last match wins
    stderr_lines: int = 20  # how many of the last stderr lines are kept
    max_line_bytes: int = MAX_REPORT_BYTES  # longer lines are cut to this and never parsed
    max_notes: int = 10  # problems kept to explain a missing objective
    step_offset: int = 0  # added to the match count a regex report carries as its step
    # Seconds of CPU the lines of one chunk of output (up to 64 KiB) may take to match
    # together; a chunk over it fails the trial (see ``broken``). The executor matches in a
    # thread (the match releases the GIL), so this bounds a core's time, not the event loop's.
    # Per chunk, not per line: 20 lines of 0.14 s each took 2.9 s, and a chunk holds thousands
    # of lines. CPU, not wall time: a peer paused (SIGSTOP, a VM's pause) or short of CPU
    # failed trials of a plain 'loss=([0-9.]+)', telling the user to simplify it.
    regex_timeout: float = 0.5


class OutputParser:
    """Turns stdout and stderr bytes into reports (one metric dict per METAOPT line or match).

    A regex match on either stream becomes ``{objective: value, "step": n}`` with n counting the
    matches, so an unmodified program still yields a learning curve.
    """

    def __init__(
        self,
        config: OutputConfig = OutputConfig(),
        clock: Callable[[], float] = time.thread_time,
    ) -> None:
        """clock: the CPU time of the thread that feeds it (see OutputConfig.regex_timeout)."""
        self.config = config
        self._clock = clock
        self._regex_left = 0.0  # what is left of this chunk's time to match (see _match)
        pattern = config.objective_regex
        self._regex = compile_objective_regex(pattern) if pattern else None
        self._pending = {True: bytearray(), False: bytearray()}
        self._overlong = {True: False, False: False}
        self._returned = {True: "", False: ""}  # a line a \r ended, still on screen
        self._cut = False  # the process was ended by a signal (see finish)
        self._stderr: deque[str] = deque(maxlen=max(config.stderr_lines, 0))
        self.report_count = 0
        self.latest: dict[str, MetricValue] = {}
        self.stdout_lines = 0
        self.matches = 0
        self.notes: deque[str] = deque(maxlen=max(config.max_notes, 1))
        self.note_count = 0  # notes ever made (the deque keeps the last few)
        # Metrics whose latest report was nan or inf, as written: a run that diverged must
        # not complete with the last finite value it reported before.
        self.nonfinite: dict[str, str] = {}
        # Why the trial's output can no longer be read (its regex took too long on a line):
        # the trial has failed; nothing more is matched.
        self.broken: str | None = None
        # Set while the latest report printed went unread (it was on a stdout line past
        # max_line_bytes): the objective read before it is not the run's latest, and a run
        # must not complete with it (a 70 KB line ending in a report recorded the one before).
        self.unread: str | None = None
        self._dropped_end = b""  # the last bytes cut from the stdout line (see _take)

    def feed(self, data: bytes, *, stdout: bool = True) -> list[dict[str, MetricValue]]:
        """The reports completed by this chunk of one stream."""
        self._regex_left = self.config.regex_timeout
        buf = self._pending[stdout]
        if stdout and self._regex is None and not self._may_report(buf, data):
            self._skim(buf, data)
            return []
        out: list[dict[str, MetricValue]] = []
        start = 0
        for match in _LINE_END.finditer(data):
            self._take(buf, data[start : match.start()], stdout)
            self._line(bytes(buf), stdout, out, returned=match.group() == b"\r")
            buf.clear()
            self._overlong[stdout] = False
            self._dropped_end = b"" if stdout else self._dropped_end
            start = match.end()
        self._take(buf, data[start:], stdout)
        return out

    def _may_report(self, buf: bytearray, data: bytes) -> bool:
        """Whether the line under way and this chunk may hold a report (its prefix, in
        either, or split between them: the kept part's end, or what was cut last, and this)."""
        if _PREFIX_BYTES in data or _PREFIX_BYTES in buf:
            return True
        head = data[:_PREFIX_LEN]
        return _PREFIX_BYTES in bytes(buf[-_PREFIX_LEN:]) + head or _PREFIX_BYTES in (
            self._dropped_end + head
        )

    def _skim(self, buf: bytearray, data: bytes) -> None:
        """Read stdout that holds no report, with no regex to match: its lines are only
        counted, as the line by line reading would, but in C (a program printing 2-byte lines
        was read at 1.7 MB/s, its peer's loop at 83% of a core)."""
        ends = data.count(b"\n") + data.count(b"\r")
        if not ends:
            self._take(buf, data, True)
            return
        first = min(i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0)
        last = max(data.rfind(b"\n"), data.rfind(b"\r"))
        limit = self.config.max_line_bytes
        cut = int(self._overlong[True] or len(buf) + first > limit)  # lines cut, noted each
        if last - first - 1 > limit:  # (else no line between them is that long)
            middle = data[first + 1 : last].replace(b"\r", b"\n").split(b"\n")
            cut += sum(len(line) > limit for line in middle)
        self.stdout_lines += ends
        for _ in range(min(cut, self.notes.maxlen or 0)):
            self._note(f"a stdout line over {limit} bytes was cut, unread")
        buf.clear()
        self._overlong[True] = False
        self._dropped_end = b""
        self._take(buf, data[last + 1 :], True)

    def finish(self, cut: bool = False) -> list[dict[str, MetricValue]]:
        """Reports from the unterminated last lines of both streams, once the process ended.

        ``cut``: the process was ended by a signal (a freeze, kill or timeout past its grace):
        what it had left on screen is not matched against the objective regex. A progress bar
        half redrawn then (its placeholder loss, say) was recorded as a step, and as the
        trial's value. A METAOPT report whole on the last line still counts.
        """
        self._regex_left = self.config.regex_timeout
        out: list[dict[str, MetricValue]] = []
        self._cut = cut
        for stdout in (True, False):
            buf = self._pending[stdout]
            if buf:
                self._line(bytes(buf), stdout, out)
                buf.clear()
            elif self._returned[stdout] and self.broken is None and not cut:
                self._match(self._returned[stdout], out)
            self._returned[stdout] = ""
        return out

    def stderr_tail(self) -> list[str]:
        """The last stderr lines (empty lines left out), oldest first."""
        return list(self._stderr)

    def objective(self, name: str | None = None) -> float | None:
        """The last numeric value reported for ``name`` (the configured objective by default)."""
        name = name or self.config.objective
        value = self.latest.get(name)
        # One whose latest report was nan or inf has no value now, not its earlier one.
        if isinstance(value, (int, float)) and name not in self.nonfinite:
            return float(value)
        return None

    def explain_missing(self, names: tuple[str, ...] | None = None) -> str:
        """One line saying why no objective was found, for a failure reason."""
        wanted = names or (self.config.objective,)
        missing = [n for n in wanted if self.objective(n) is None]
        texts = [n for n in missing if isinstance(self.latest.get(n), str)]
        where = "at the end of" if texts else "in"  # (numbers may have come before the text)
        named = ", ".join(repr(n) for n in missing)
        parts = [f"no numeric {named} {where} {self.report_count} reports"]
        if texts:  # report(loss="0.5"): say so, or the user hunts for a missing report
            # The last: the objective is the last value reported.
            parts.append(
                ", ".join(f"the last {n!r} was the string {self.latest[n]!r}" for n in texts)
                + " (report a number)"
            )
        reported = sorted(self.latest)
        if reported:  # --objective accuracy where the program reports acc: name what it had
            shown = ", ".join(repr(n[:40]) for n in reported[:_NAMES_SHOWN])
            extra = len(reported) - _NAMES_SHOWN
            parts.append(f"the reports had {shown}" + (f" and {extra} more" if extra > 0 else ""))
        if self._regex is not None:
            parts.append(f"regex {self._regex.pattern!r} gave {self.matches} numbers")
        parts.append(f"{self.stdout_lines} stdout lines")
        if self.notes:
            parts.append(f"last problem: {self.notes[-1]}")
        return "; ".join(parts)

    def _take(self, buf: bytearray, chunk: bytes, stdout: bool) -> None:
        room = self.config.max_line_bytes - len(buf)
        if len(chunk) <= room:
            buf += chunk
            return
        kept = max(room, 0)
        buf += chunk[:kept]
        first_cut = not self._overlong[stdout]
        self._overlong[stdout] = True
        if stdout:
            # What is cut is never read; a report in it must not pass unnoticed. Its start
            # may straddle two chunks, or the kept part's end: the bytes before are looked at.
            # A report, not the word alone (a dict printed with a METAOPT_ key in it failed a
            # run that had reported well). The kept part's end also when a read filled it
            # exactly: the next one's cut began there, and a report across it went unseen.
            before = bytes(buf[-_CUT_TAIL:]) if kept or first_cut else self._dropped_end
            dropped = before + chunk[kept:]
            if _REPORT_BYTES.search(dropped):
                self._unread_report()
            self._dropped_end = dropped[-_CUT_TAIL:]

    def _line(
        self,
        raw: bytes,
        stdout: bool,
        out: list[dict[str, MetricValue]],
        *,
        returned: bool = False,
    ) -> None:
        text = raw.decode("utf-8", errors="replace")
        overlong = self._overlong[stdout]
        if not stdout:
            if text.strip():
                self._stderr.append(text[:500])
            if REPORT_PREFIX.strip() in text and _REPORT_AT.search(_INVISIBLE.sub("", text)):
                # (logging's default handler, for one, writes there)
                self._note("a METAOPT report was printed to stderr; reports are read from stdout")
        else:
            self.stdout_lines += 1
            if self._reports(text, overlong, out):
                return
        if overlong and self._regex is not None and self.broken is None:
            # Never matched (stdout or stderr, as logging writes): the objective it may have
            # held must not leave the earlier one as the run's result (a 70 KB line ending in
            # 'loss = 0.1' completed with 0.5).
            self._unread_report("matched against the objective regex")
        elif overlong and stdout:
            # Its end, where a report may have been, was never kept: say so, or a report
            # after 64 KiB of text on one line just went missing.
            self._note(f"a stdout line over {self.config.max_line_bytes} bytes was cut, unread")
        if overlong:
            # It overwrote what a \r left on screen: that is no later value (a run completed
            # with the value its overlong line had overwritten).
            self._returned[stdout] = ""
        if self._regex is None or overlong or self.broken is not None or self._cut:
            return
        if returned:  # a \r: what follows on this line overwrites it
            if text.strip():  # (an empty stretch, "\r\r", overwrites nothing)
                self._returned[stdout] = text
            return
        shown = text if text.strip() else self._returned[stdout]  # "\r\n" ends a line too
        self._returned[stdout] = ""
        self._match(shown, out)

    def _reports(self, text: str, overlong: bool, out: list[dict[str, MetricValue]]) -> bool:
        """Parse every METAOPT report in a stdout line; whether the line held any."""
        prefix = REPORT_PREFIX.strip()
        if prefix not in text:  # most lines: no clean-up on the way (this runs per line)
            return False
        clean = _INVISIBLE.sub("", text)
        if overlong:
            if _REPORT_AT.search(clean) is None:
                return False  # the word alone; the line's cut part is _take's business
            self._unread_report()
            return True
        found = False
        at = 0
        while (match := _REPORT_AT.search(clean, at)) is not None:
            found = True
            at = self._report(clean, match.end(), out)
        if not found and _REPORT_WORD.match(clean.strip()):
            self._note(f"METAOPT line is not a JSON object: {clean.strip()[:80]!r}")
            return True
        return found

    def _report(self, line: str, start: int, out: list[dict[str, MetricValue]]) -> int:
        """Emit the JSON object at line[start:]; return where scanning goes on."""
        try:
            value, end = _JSON.raw_decode(line, start)
        except (ValueError, RecursionError):
            self._note(f"METAOPT line is not JSON: {line[start : start + 80]!r}")
            return start + 1
        clean: dict[str, MetricValue] = {}
        for name, metric in value.items():
            kind = _JSON_KINDS.get(type(metric))
            if kind is not None and _is_name(name):
                # check_metric speaks Python ("a NoneType ... e.g. loss.item()"), which means
                # nothing to the bash or C program that printed this line.
                want = "a whole number" if name == "step" else "a number or a string"
                self._note(f"metric {name!r} is {kind} in a METAOPT line; give {want}")
                continue
            try:
                clean[name] = check_metric(name, _recordable(metric, name))
            except WorkerError as exc:
                self._note(str(exc))
                if (
                    isinstance(metric, float)
                    and not math.isfinite(metric)
                    and name != "step"  # (a nan step is a malformed report)
                    and _is_name(name)  # a bad name is not recorded, even as text
                ):
                    self.nonfinite[name] = str(metric)
        if clean:
            self._emit(clean, out)
        return end

    def _match(self, text: str, out: list[dict[str, MetricValue]]) -> None:
        assert self._regex is not None
        # Colour codes are not on screen: 'val_loss: ([0-9.]+)' never matched a number rich
        # or colorlog highlight, and matched as written first, 'loss.*?([0-9.]+)' read the 1
        # of ESC[1;36m. The line as written only if that finds nothing: a regex written for
        # the codes ('\x1b\[1;36m([0-9.]+)', the way round them before) still matches.
        shown = _INVISIBLE.sub("", text) if "\x1b" in text else text
        found = self._last_match(shown)
        if found is None and shown is not text and self.broken is None:
            found = self._last_match(text)
        if found is None:
            return
        group = found.group(1) if self._regex.groups else found.group(0)
        try:
            number = float(group) if group is not None else None
        except ValueError:
            number = None
        if number is None or not math.isfinite(number):
            # A regex without a group must match the number alone; 'acc=[0-9.]+' is the usual
            # slip (seen: every trial failed until the user found this).
            hint = "" if self._regex.groups or number is not None else CAPTURE_HINT
            self._note(f"regex matched {group!r}, not a finite number{hint}")
            if number is not None:  # nan or inf: the run diverged
                self.nonfinite[self.config.objective] = str(group)
            return
        self.matches += 1
        self._emit(
            {self.config.objective: number, "step": self.config.step_offset + self.matches}, out
        )

    def _unread_report(self, how: str = "") -> None:
        limit = self.config.max_line_bytes
        if how:
            why = f"a stdout line over {limit} bytes was not {how}; print it on shorter lines"
        else:
            why = (
                f"a METAOPT report on a stdout line over {limit} bytes was not read; print"
                f" each report on a line of its own, under {limit} bytes"
            )
        self.unread = why
        self._note(why)

    def _last_match(self, text: str) -> Any:
        """The regex's last match in text, or None; None and ``broken`` set once the chunk's
        time to match is used up."""
        assert self._regex is not None
        found = None
        began = self._clock()
        for _ in range(_REGEX_TRIES):
            left = self._regex_left - (self._clock() - began)
            if left <= 0:
                break
            try:
                # The last match wins; the timeout bounds what is left of the chunk's time.
                # It is wall time: one the thread spent waiting (paused, or short of CPU) is
                # tried again with what is left of the CPU time (as many times as it takes,
                # up to _REGEX_TRIES). concurrent: the GIL is released while it matches.
                timeout = max(left, _REGEX_FLOOR)
                for found in self._regex.finditer(text, concurrent=True, timeout=timeout):  # noqa: B007
                    pass
            except TimeoutError:
                found = None
                continue
            self._regex_left -= self._clock() - began
            return found
        self.broken = (
            f"objective regex {self._regex.pattern!r} took over"
            f" {self.config.regex_timeout:g} s on one chunk of output; simplify it (nested"
            " repeats such as '(a|aa)+b' backtrack without end) and submit again"
        )
        return None

    def _emit(self, report: dict[str, MetricValue], out: list[dict[str, MetricValue]]) -> None:
        self.report_count += 1
        self.unread = None  # what it read before no longer matters
        for name in report:
            self.nonfinite.pop(name, None)
            # Named again, a metric moves last: the end event keeps the latest named (see the
            # executor's last_metrics), not the first (300 metrics named once at the start
            # crowded out the val_acc reported at every step).
            self.latest.pop(name, None)
        self.latest.update(report)
        out.append(report)

    def _note(self, text: str) -> None:
        self.notes.append(text)
        self.note_count += 1


# What JSON calls the values a metric cannot be (a bool is refused by check_metric by name).
_JSON_KINDS: dict[type, str] = {type(None): "null", list: "an array", dict: "an object"}


def _recordable(metric: object, name: str = "") -> object:
    """A metric of a JSON report as a record can hold it.

    A string: JSON's \\ud800 escape reads as a lone surrogate, which no record encodes (the
    whole report failed to record, and the trial with it); a replacement character stands
    for each, keeping the rest of the text. A whole number past 64 bits (but a step): a
    number, as JSON has no integers apart (123456789012345678901234567890 failed the trial,
    where 1.2e29 completed).
    """
    if isinstance(metric, str):
        return _SURROGATE.sub("\ufffd", metric)
    if type(metric) is int and name != "step" and not -MAX_INT <= metric < MAX_INT:
        with contextlib.suppress(OverflowError):  # (past a float's range: refused, said)
            return float(metric)
    return metric


def _is_name(name: str) -> bool:
    try:
        check_name(name)
    except WorkerError:
        return False
    return True
