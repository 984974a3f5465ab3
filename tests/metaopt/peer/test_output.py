"""Reading trial output: reports, regex matches, stderr tail, split lines, garbage."""

from __future__ import annotations

import json
import re
import warnings
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from crdt import Record, RecordError
from metaopt.peer._output import OutputConfig, OutputParser, compile_objective_regex
from metaopt.worker import report


def test_report_lines_become_metric_dicts() -> None:
    parser = OutputParser()
    out = parser.feed(b'epoch 1\nMETAOPT {"loss": 0.5, "step": 1}\nMETAOPT {"loss": 0.25}\n')
    assert out == [{"loss": 0.5, "step": 1}, {"loss": 0.25}]
    assert parser.objective() == 0.25
    assert parser.stdout_lines == 3


def test_lines_split_across_chunks_and_crlf() -> None:
    parser = OutputParser()
    assert parser.feed(b'METAOPT {"lo') == []
    assert parser.feed(b'ss": 1.5}\r') == [{"loss": 1.5}]
    assert parser.feed(b'\nMETAOPT {"loss": 2}') == []
    assert parser.finish() == [{"loss": 2}]


def test_invalid_values_are_dropped_and_explained() -> None:
    parser = OutputParser()
    out = parser.feed(b'METAOPT {"loss": NaN, "acc": 0.9, "ok": true}\nMETAOPT [1]\nMETAOPT {x\n')
    assert out == [{"acc": 0.9}]
    assert parser.objective() is None
    why = parser.explain_missing()
    assert "'loss'" in why and "1 reports" in why and "not JSON" in why


def test_a_metric_named_again_moves_last_among_the_latest() -> None:
    # The end event keeps the metrics named latest (last_metrics): 300 named once at the start
    # crowded out the val_acc reported at every step.
    parser = OutputParser()
    parser.feed(b'METAOPT {"val_acc": 0.5, "lr": 0.1, "depth": 3}\n')
    parser.feed(b'METAOPT {"val_acc": 0.7}\n')
    assert list(parser.latest) == ["lr", "depth", "val_acc"]
    assert parser.latest["val_acc"] == 0.7


def test_regex_last_match_wins_on_either_stream_and_counts_steps() -> None:
    parser = OutputParser(OutputConfig(objective="acc", objective_regex=r"acc = ([0-9.]+)"))
    assert parser.feed(b"acc = 0.5 then acc = 0.6\n") == [{"acc": 0.6, "step": 1}]
    assert parser.feed(b"acc = 0.7\n", stdout=False) == [{"acc": 0.7, "step": 2}]
    assert parser.feed(b"acc = .\n") == []
    assert parser.objective() == 0.7
    assert parser.matches == 2


def test_regex_without_a_group_uses_the_whole_match_and_offset_steps() -> None:
    parser = OutputParser(OutputConfig(objective_regex=r"[0-9]+\.[0-9]+", step_offset=10))
    assert parser.feed(b"loss 0.125\n") == [{"loss": 0.125, "step": 11}]


def test_a_regex_whose_whole_match_is_no_number_says_to_capture_it() -> None:
    # 'acc=[0-9.]+' failed every trial with "regex matched 'acc=0.42', not a finite number".
    parser = OutputParser(OutputConfig(objective_regex=r"acc=[0-9.]+"))
    assert parser.feed(b"acc=0.42\n") == []
    assert "put the number in a group, e.g. 'acc=([0-9.]+)'" in parser.explain_missing()
    captured = OutputParser(OutputConfig(objective_regex=r"acc=([0-9a-z.]+)"))
    assert captured.feed(b"acc=0.4x\n") == []
    assert "put the number in a group" not in captured.explain_missing()


def test_never_matching_regex_explains_itself() -> None:
    parser = OutputParser(OutputConfig(objective_regex=r"accuracy = ([0-9.]+)"))
    parser.feed(b"hello\nworld\n")
    why = parser.explain_missing()
    assert "gave 0 numbers" in why and "2 stdout lines" in why


def test_stderr_tail_keeps_the_last_lines() -> None:
    parser = OutputParser(OutputConfig(stderr_lines=2))
    parser.feed(b"one\n\ntwo\nthr", stdout=False)
    parser.feed(b"ee\n", stdout=False)
    assert parser.stderr_tail() == ["two", "three"]
    assert parser.feed(b'METAOPT {"loss": 1}\n', stdout=False) == []
    # A failed run said only "0 stdout lines" when its reports went to stderr.
    assert "printed to stderr; reports are read from stdout" in parser.explain_missing()


def test_overlong_lines_are_cut_and_never_parsed() -> None:
    parser = OutputParser(OutputConfig(max_line_bytes=32))
    line = b'METAOPT {"loss": 1, "pad": "' + b"x" * 100 + b'"}\n'
    assert parser.feed(line[:20]) == []
    assert parser.feed(line[20:] + b'METAOPT {"loss": 2}\n') == [{"loss": 2}]
    assert "over 32 bytes" in parser.explain_missing(("nope",))
    # A report after a long run of other text on its line went missing without a word.
    hidden = OutputParser(OutputConfig(max_line_bytes=32))
    hidden.feed(b"x" * 40 + b' METAOPT {"loss": 0.2}\n')
    assert hidden.objective() is None
    assert "a stdout line over 32 bytes was cut, unread" in hidden.explain_missing()


def test_a_report_cut_from_an_overlong_line_leaves_the_result_unread_until_the_next() -> None:
    # A 70 KB line ending in a report was cut before it, and the run completed with the
    # report before it, saying nothing.
    parser = OutputParser(OutputConfig(max_line_bytes=32))
    parser.feed(b'METAOPT {"loss": 0.25}\n')
    assert parser.unread is None
    line = b"x" * 50 + b'METAOPT {"loss": 0.75}\n'
    for at in range(0, len(line), 7):  # in pieces that split the prefix
        parser.feed(line[at : at + 7])
    assert parser.unread is not None and "over 32 bytes was not read" in parser.unread
    assert parser.unread.endswith("on a line of its own, under 32 bytes")
    assert parser.objective() == 0.25
    parser.feed(b'METAOPT {"loss": 0.5}\n')
    assert parser.unread is None and parser.objective() == 0.5
    # In the part kept (such a line is not parsed) or straddling where it was cut, too.
    for head in (b"", b"x" * 28):
        cut = OutputParser(OutputConfig(max_line_bytes=32))
        cut.feed(head + b'METAOPT {"loss": 0.75, "pad": "' + b"p" * 40 + b'"}\n')
        assert cut.unread is not None
    # A report whose start is kept and whose end was cut, on a line longer than a chunk.
    long = OutputParser(OutputConfig(max_line_bytes=1024))
    assert long.feed(b'METAOPT {"loss": 0.5, "note": "' + b"x" * 4000 + b'"}\n') == []
    long.finish()
    assert long.unread is not None and "was not read" in long.explain_missing()
    # A report's start split between what was cut and the next chunk, read without a regex
    # (the fast path for output without reports looked only at the kept part's end).
    split = OutputParser(OutputConfig(max_line_bytes=64))
    split.feed(b'METAOPT {"loss": 0.9}\n')
    split.feed(b"x" * 100 + b"METAOP")
    split.feed(b'T {"loss": 0.1}\n')
    assert split.unread is not None
    # The word alone is no report: a dict printed with a METAOPT_ key failed a good run.
    word = OutputParser(OutputConfig(max_line_bytes=64))
    word.feed(b'METAOPT {"loss": 0.3}\n')
    word.feed(b"{'METAOPT_TRIAL_ID': '" + b"v" * 200 + b"'}\n")
    word.feed(b"{'METAOPT_TRIAL_ID': '" + b"v" * 20 + b"'}" + b"w" * 100 + b"\n")
    assert word.unread is None and word.objective() == 0.3
    # With a regex, a line cut is a line never matched: 'loss = 0.5', then 70 KB ending in
    # 'loss = 0.1', completed with 0.5.
    matched = OutputParser(OutputConfig(max_line_bytes=32, objective_regex=r"loss = ([0-9.]+)"))
    matched.feed(b"loss = 0.5\n" + b"x" * 40 + b"loss = 0.1\n")
    assert matched.unread is not None and "not matched against the objective regex" in (
        matched.unread
    )
    matched.feed(b"loss = 0.2\n")
    assert matched.unread is None and matched.objective() == 0.2
    matched.feed(b"x" * 40 + b"loss = 0.1\n", stdout=False)  # the regex reads stderr too
    assert matched.unread is not None
    coloured = OutputParser(OutputConfig(max_line_bytes=32))
    coloured.feed(b"x" * 40 + b'METAOPT \x1b[0m{"loss": 0.1}\n')
    assert coloured.unread is not None
    # Text alone over the limit leaves nothing unread.
    plain = OutputParser(OutputConfig(max_line_bytes=32))
    plain.feed(b"METAOPT" + b"x" * 24 + b"\n" + b"y" * 80 + b"\n")
    assert plain.unread is None


def test_invalid_utf8_does_not_crash() -> None:
    parser = OutputParser()
    assert parser.feed(b'\xff\xfeMETAOPT\n METAOPT {"loss": 3}\n') == [{"loss": 3}]


@given(st.lists(st.binary(max_size=64), max_size=20))
def test_garbage_never_crashes(chunks: list[bytes]) -> None:
    parser = OutputParser(OutputConfig(objective_regex=r"([0-9.]+)", max_line_bytes=16))
    for i, chunk in enumerate(chunks):
        parser.feed(chunk, stdout=i % 2 == 0)
    parser.finish()
    parser.explain_missing()


@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=6))
def test_chunking_does_not_change_the_reports(data: bytes, cuts: list[int]) -> None:
    text = data + b'\nMETAOPT {"loss": 0.5}\n' + data
    whole = OutputParser(OutputConfig(objective_regex=r"(\d+)"))
    expected = whole.feed(text) + whole.finish()
    split = OutputParser(OutputConfig(objective_regex=r"(\d+)"))
    got = []
    start = 0
    for cut in sorted(c % (len(text) + 1) for c in cuts):
        got += split.feed(text[start:cut])
        start = max(start, cut)
    got += split.feed(text[start:]) + split.finish()
    assert got == expected


@given(
    st.lists(st.sampled_from([b"ab", b"\r", b"\n", b"x" * 40, b"METAOPT", b' {"loss": 1}']),
             max_size=40),
    st.lists(st.integers(0, 2000), max_size=6),
)  # fmt: skip
@example([b"ab", b"\n", b"x" * 40, b"\n", b"ab"], [])  # a long line inside one chunk
@example([b"x" * 40, b"METAOPT", b' {"loss": 1}', b"\n"], [44])  # a start cut in two
def test_output_without_reports_is_skimmed_as_it_is_read_line_by_line(
    pieces: list[bytes], cuts: list[int]
) -> None:
    # Stdout that holds no report is only counted, in C; what it counts, notes and leaves
    # under way must be what reading it line by line does (forced on the second parser).
    text = b"".join(pieces)
    parsers = [OutputParser(OutputConfig(max_line_bytes=32)) for _ in range(2)]
    parsers[1]._may_report = lambda buf, data: True  # type: ignore[method-assign]
    outs: list[list[Any]] = [[], []]
    for parser, out in zip(parsers, outs, strict=True):
        start = 0
        for cut in sorted(c % (len(text) + 1) for c in cuts):
            out += parser.feed(text[start:cut])
            start = max(start, cut)
        out += parser.feed(text[start:])
        out += parser.feed(b'\nMETAOPT {"loss": 0.5}\ntail') + parser.finish()
    skimmed, read = parsers
    assert outs[0] == outs[1]
    assert skimmed.stdout_lines == read.stdout_lines
    assert list(skimmed.notes) == list(read.notes)
    assert skimmed.unread == read.unread


def test_a_whole_float_step_from_another_language_is_an_integer_step() -> None:
    parser = OutputParser()
    assert parser.feed(
        b'METAOPT {"loss": 1.0, "step": 3.0}\nMETAOPT {"loss": 1, "step": 2.5}\n'
    ) == [
        {"loss": 1.0, "step": 3},
        {"loss": 1},
    ]


def test_a_report_is_found_anywhere_in_a_line() -> None:
    # print("epoch 1 ... ", end="") then report(), colour codes, a BOM, another thread's text
    # on the same line: each report was dropped when only a line's start was read.
    parser = OutputParser()
    out = parser.feed(
        b'epoch 1 ... METAOPT {"loss": 1.0, "step": 1}\n'
        b'\x1b[32mMETAOPT {"loss": 0.5, "step": 2}\x1b[0m\n'
        b'\xef\xbb\xbfMETAOPT {"loss": 0.4, "step": 3}\n'
        b'METAOPT {"loss": 0.3, "step": 4}METAOPT {"loss": 0.2, "step": 5} (thread 2)\n'
        b'METAOPT {"note": "METAOPT {x}", "loss": 0.1}\n'
        b"METAOPT_PARAMS={}\n"
    )
    assert [r.get("step") for r in out] == [1, 2, 3, 4, 5, None]
    assert out[-1] == {"note": "METAOPT {x}", "loss": 0.1}
    assert not any("JSON:" in n for n in parser.notes)  # the report inside a value is no report


def test_a_progress_bar_redrawn_with_cr_is_one_regex_step() -> None:
    # tqdm redraws its bar with \r many times per epoch: each redraw counted as a step, so
    # steps 1-96 for 3 epochs, and the rungs compared runs at unrelated points.
    parser = OutputParser(OutputConfig(objective_regex=r"loss=([0-9.]+)"))
    epoch = b"\r  0%| loss=0.9\r 50%| loss=0.5\r100%| loss=0.4"
    out = parser.feed(epoch + b"\n" + epoch.replace(b"0.4", b"0.3") + b"\n")
    assert out == [{"loss": 0.4, "step": 1}, {"loss": 0.3, "step": 2}]
    assert parser.feed(b"loss=0.25\r\n") == [{"loss": 0.25, "step": 3}]  # CRLF: one line
    assert parser.feed(b"\rloss=0.2\rloss=0.15\r") == []
    assert parser.finish() == [{"loss": 0.15, "step": 4}]  # what was left on screen


def test_a_frame_left_half_drawn_by_a_stop_signal_is_no_step() -> None:
    # Frozen, killed or timed out, a program read by a regex left its next epoch's bar half
    # drawn, a placeholder loss on it: recorded as a step and as the trial's value (12 of 12
    # runs stopped by a signal; a review). Ended on its own, what it left on screen counts.
    regex = OutputConfig(objective_regex=r"val_loss = ([0-9.]+)")
    done = b"\r[=====     ] val_loss = 9.999999\r\x1b[K[==========] val_loss = 0.5\n"
    for tail in (b"[=         ] val_loss = 9.999999", b"[=  ] val_loss = 9.999999\r"):
        parser = OutputParser(regex)
        assert parser.feed(done + tail) == [{"loss": 0.5, "step": 1}]
        assert parser.finish(cut=True) == []
        assert parser.objective() == 0.5
        ended = OutputParser(regex)
        ended.feed(done + tail)
        assert ended.finish() == [{"loss": 9.999999, "step": 2}]
    # A METAOPT report whole on its last line still counts, cut or not.
    reports = OutputParser(OutputConfig())
    reports.feed(b'METAOPT {"loss": 0.5}\nMETAOPT {"loss": 0.25, "step": 2}')
    assert reports.finish(cut=True) == [{"loss": 0.25, "step": 2}]


def test_an_overlong_line_overwrites_what_a_cr_left_on_screen() -> None:
    # "loss: 0.5\r" then a 70 KB line with the real value completed at 0.5, where a run whose
    # last value went unread fails.
    parser = OutputParser(OutputConfig(objective_regex=r"loss: ([0-9.]+)", max_line_bytes=64))
    parser.feed(b"training... loss: 0.5\r" + b"loss: 0.98 " + b"x" * 100 + b"\n")
    assert parser.finish() == [] and parser.unread is not None
    assert parser.objective() is None
    # An empty stretch between two \r overwrites nothing: what is on screen still counts.
    again = OutputParser(OutputConfig(objective_regex=r"acc=([0-9.]+)"))
    assert again.feed(b"acc=0.5\r\r\n") == [{"loss": 0.5, "step": 1}]


def test_a_nan_or_inf_as_the_latest_value_is_kept_as_a_divergence() -> None:
    # A bash program printing val_loss=0.05, then nan, then inf was recorded completed at 0.05
    # (and became the best); in Python, metaopt.report raises on the nan.
    parser = OutputParser(OutputConfig(objective_regex=r"val_loss=(\S+)"))
    parser.feed(b"val_loss=0.05\nval_loss=nan\nval_loss=inf\n")
    # No value now, not the earlier 0.05: a stopped run that exited 0 at its last step was
    # taken as completed by the objective while its metrics said nan.
    assert parser.objective() is None and parser.nonfinite == {"loss": "inf"}
    parser.feed(b"val_loss=0.04\n")  # it recovered: the last report wins, as ever
    assert parser.nonfinite == {} and parser.objective() == 0.04
    lines = OutputParser()
    lines.feed(b'METAOPT {"loss": 0.7, "step": 1}\nMETAOPT {"loss": NaN, "acc": 0.1, "step": 2}\n')
    assert lines.objective() is None and lines.nonfinite == {"loss": "nan"}
    lines.feed(b'METAOPT {"loss": 0.6, "step": NaN}\n')  # a nan step: malformed, not diverged
    assert lines.objective() == 0.6 and lines.nonfinite == {}
    words = OutputParser(OutputConfig(objective_regex=r"val_loss=(\S+)"))
    words.feed(b"val_loss=0.05\nval_loss=pending\n")
    assert words.nonfinite == {}  # not a number at all: no report, not a divergence


# Lone surrogates included, as JSON's \ud800 escape makes them (st.text drops them whatever
# its alphabet, so the characters are joined by hand).
_SURROGATE = st.sampled_from("\ud800\udbff\udc00\udfff")
_ANY_TEXT = st.lists(st.characters() | _SURROGATE, max_size=8).map("".join)
_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_./-]{0,8}", fullmatch=True)


def _recordable(report: dict[str, object]) -> bool:
    try:
        Record.create("event", bytes(16), 1, 0, {"metrics": report})
    except RecordError:
        return False
    return True


def test_a_lone_surrogate_in_a_report_is_made_valid_and_the_rest_kept() -> None:
    # JSON's \ud800 escape reads as a lone surrogate, which no record encodes: the peer's
    # listener failed on the report, then on the completion, and the trial was recorded failed.
    parser = OutputParser()
    line = rb'METAOPT {"loss": 0.1, "s": "ok \ud800", "\udc00x": 1, "\ud800": Infinity}' + b"\n"
    out = parser.feed(line)
    assert out == [{"loss": 0.1, "s": "ok \ufffd"}]  # the bad name is dropped, with a note
    assert all(_recordable(report) for report in out)
    assert parser.objective() == 0.1 and parser.nonfinite == {}
    assert len(parser.notes) == 2 and all(note.isascii() for note in parser.notes)


def test_what_metaopt_report_prints_of_a_lone_surrogate_is_recordable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report(loss=0.1, s="\ud800")
    parser = OutputParser()
    out = parser.feed(capsys.readouterr().out.encode())
    assert out == [{"loss": 0.1, "s": "\ufffd"}] and _recordable(out[0])


@given(st.dictionaries(_NAMES | _ANY_TEXT, st.one_of(_ANY_TEXT, st.floats())))
def test_every_report_is_recordable(metrics: dict[str, object]) -> None:
    parser = OutputParser(OutputConfig(objective_regex=r"loss=(\S+)"))
    line = b"METAOPT " + json.dumps(metrics).encode() + b" loss=0.5\n"
    for out in parser.feed(line) + parser.finish():
        assert _recordable(out)
    assert _recordable(dict(parser.nonfinite))


def test_a_regex_that_backtracks_without_end_breaks_the_parser_in_bounded_time() -> None:
    # Python's re froze the peer's event loop on it for over a minute.
    config = OutputConfig(objective_regex=r"(a|aa)+b", regex_timeout=0.05)
    parser = OutputParser(config)
    assert parser.feed(b"a" * 60 + b"\n") == []
    assert parser.broken is not None
    assert parser.broken.startswith("objective regex '(a|aa)+b' took over 0.05 s")
    assert "simplify it" in parser.broken and "\n" not in parser.broken
    # Broken for good: no more matching (each line would take as long again), reports still read.
    assert parser.feed(b"a" * 60 + b'\nMETAOPT {"loss": 1}\n') == [{"loss": 1}]


def test_many_lines_just_under_the_time_limit_break_the_parser_by_their_sum() -> None:
    # The limit was per line: 20 lines of 0.14 s each held the event loop 2.9 s, and a chunk
    # of output holds thousands of lines. Each line here "takes" 0.05 s of a virtual clock.
    now = [0.0]

    def clock() -> float:
        now[0] += 0.05  # read once a line (and once a chunk)
        return now[0]

    parser = OutputParser(OutputConfig(objective_regex=r"loss=([0-9.]+)", regex_timeout=0.5), clock)
    assert len(parser.feed(b"loss=1\n" * 4)) == 4 and parser.broken is None
    assert len(parser.feed(b"loss=1\n" * 20)) < 10  # a new chunk, a new 0.5 s, used up
    assert parser.broken is not None and "one chunk of output" in parser.broken


class _Waiting:
    """A compiled regex whose first ``waits`` matches time out without using any CPU, as a
    match does in a peer paused (SIGSTOP, a VM's pause) or short of CPU."""

    def __init__(self, pattern: Any, waits: int) -> None:
        self.pattern, self.groups, self._real, self.waits = (
            pattern.pattern,
            pattern.groups,
            pattern,
            waits,
        )

    def finditer(self, text: str, **kw: Any) -> Any:
        if self.waits:
            self.waits -= 1
            raise TimeoutError
        return self._real.finditer(text, **kw)


def test_a_match_timed_out_by_waiting_is_tried_again_and_one_by_matching_is_not() -> None:
    # The budget was wall time: a paused or starved peer failed a plain 'loss=([0-9.]+)'
    # with "simplify it" (4 of 4 runs paused thrice). Only the CPU used to match counts.
    parser = OutputParser(OutputConfig(objective_regex=r"loss=([0-9.]+)"), clock=lambda: 0.0)
    parser._regex = _Waiting(parser._regex, waits=3)
    assert parser.feed(b"loss=0.25\n") == [{"loss": 0.25, "step": 1}] and parser.broken is None
    used = [0.0]

    def cpu() -> float:
        used[0] += 0.2  # matching: the CPU time goes with the wall time
        return used[0]

    parser = OutputParser(OutputConfig(objective_regex=r"loss=([0-9.]+)"), clock=cpu)
    parser._regex = _Waiting(parser._regex, waits=100)
    assert parser.feed(b"loss=0.25\n") == []
    assert parser.broken is not None and "took over 0.5 s" in parser.broken
    parser = OutputParser(OutputConfig(objective_regex=r"loss=([0-9.]+)"), clock=lambda: 0.0)
    parser._regex = _Waiting(parser._regex, waits=100)  # (waiting for ever: given up, bounded)
    assert parser.feed(b"loss=0.25\n") == [] and parser.broken is not None


def test_an_integer_past_64_bits_is_a_number_and_a_step_of_it_is_refused() -> None:
    # Written as 1.2e29 it completed; as 123456789012345678901234567890 it failed the trial.
    parser = OutputParser()
    assert parser.feed(b'METAOPT {"loss": 123456789012345678901234567890}\n') == [
        {"loss": 1.2345678901234568e29}
    ]
    assert parser.feed(b'METAOPT {"loss": 1, "step": 123456789012345678901234567890}\n') == [
        {"loss": 1}
    ]
    assert "step" in parser.notes[-1] and "does not fit in 64 bits" in parser.notes[-1]


def test_colour_codes_and_terminal_escapes_are_not_part_of_a_line() -> None:
    # As rich or colorlog highlight a number: the regex never matched it (4 of 4 trials).
    parser = OutputParser(OutputConfig(objective_regex=r"val_loss: ([0-9.]+)"))
    line = b"Epoch 1: \x1b[32mval_loss\x1b[0m: \x1b[1;36m0.6667\x1b[0m\n"
    assert parser.feed(line) == [{"loss": 0.6667, "step": 1}]
    # Matched as written first, a plain regex read the 1 of ESC[1;36m (3 of 3 trials).
    for regex in (r"val_loss.*?([0-9.]+)", r"loss\D*([0-9.]+)", r"val_loss\W+([0-9.]+)"):
        assert OutputParser(OutputConfig(objective_regex=regex)).feed(line) == [
            {"loss": 0.6667, "step": 1}
        ], regex
    # A regex written for the codes (the way round them before) still matches the line.
    parser = OutputParser(OutputConfig(objective_regex=r"\x1b\[1;36m([0-9.]+)"))
    assert parser.feed(line) == [{"loss": 0.6667, "step": 1}]
    # `tput bold`, `tput sgr0` (ESC ( B ESC [ m on xterm, screen and tmux), a title (OSC): a
    # bash script's every report was "not a JSON object".
    report = b'\x1b]0;title\x07\x1b[1mMETAOPT\x1b(B\x1b[m {"loss": 0.3, "step": 3}\n'
    for before in (b"", b"x" * 70_000 + b"\n"):  # (alone, and after a line cut unread)
        plain = OutputParser()
        assert plain.feed(before + report) == [{"loss": 0.3, "step": 3}], plain.notes


def test_the_regex_keeps_re_syntax_and_meaning() -> None:
    # The peer matches with the regex module (it has a timeout); it reads re's syntax as re.
    for pattern in (r"\p{L}", r"(?<=a+)b", r"a(?i)b"):  # regex takes these, re does not
        with pytest.raises(re.error):
            compile_objective_regex(pattern)
    text = "Loss: 0.5 step 3 loss: 0.25"
    for pattern in (r"(?i)loss: ([0-9.]+)", r"\d+", r"(?P<loss>[0-9.]+)\s", r"[[a-z]"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # re's "possible nested set"
            ours = [m.group(0) for m in compile_objective_regex(pattern).finditer(text)]
            assert ours == [m.group(0) for m in re.finditer(pattern, text)]


def test_a_missing_objective_names_what_the_reports_had() -> None:
    # --objective accuracy on a program reporting acc said only "no numeric 'accuracy' in 2
    # reports", and the user guessed at the name.
    parser = OutputParser(OutputConfig(objective="accuracy"))
    parser.feed(b'METAOPT {"loss": 0.5, "acc": 0.9}\nMETAOPT {"loss": 0.4, "step": 2}\n')
    assert "the reports had 'acc', 'loss', 'step'" in parser.explain_missing()
    wide = OutputParser(OutputConfig(objective="accuracy"))
    wide.feed(b"METAOPT " + json.dumps({f"m{i:02}": i for i in range(10)}).encode() + b"\n")
    assert "'m07' and 2 more" in wide.explain_missing()


@pytest.mark.parametrize("split", [False, True], ids=["one-read", "a-read-that-fills-the-line"])
@pytest.mark.parametrize("before_cut", [6, 2, 1])
def test_a_report_across_the_64_kib_cut_is_unread_however_it_was_read(
    split: bool, before_cut: int
) -> None:
    # A line whose report starts a few bytes before the cut: read whole, the run is failed
    # (its report unread); read as 65,536 bytes and then the rest (a full pipe's worth), the
    # bytes before the cut were not looked at, and the run completed with the report before.
    parser = OutputParser()
    parser.feed(b'METAOPT {"loss": 0.5}\n')
    line = b"x" * (65536 - before_cut) + b'METAOPT {"loss": 0.1}\n'
    for chunk in [line[:65536], line[65536:]] if split else [line]:
        parser.feed(chunk)
    parser.finish()
    assert parser.unread is not None


_PIECES = st.sampled_from(
    [b"x", b"xxxxxxx", b" ", b"\n", b"\r", b'METAOPT {"loss": 0.5}', b"METAOPT"]
)


@example(b"x" * 28 + b'METAOPT {"loss": 0.5}\n', [32])  # a read that filled the line
@given(
    st.lists(_PIECES, max_size=30).map(b"".join),
    # (Reads that end where the line is cut, 32 bytes in, are the tricky ones.)
    st.lists(
        st.integers(min_value=1, max_value=40) | st.sampled_from([29, 30, 31, 32]), max_size=12
    ),
)
def test_how_the_output_was_read_changes_nothing(output: bytes, cuts: list[int]) -> None:
    # The same bytes, read whole or in pieces of any size (as a pipe hands them over): the
    # same reports, the same result and the same verdict on a report cut from a long line.
    def parsed(chunks: list[bytes]) -> tuple[Any, ...]:
        parser = OutputParser(OutputConfig(max_line_bytes=32))
        reports = [r for chunk in chunks for r in parser.feed(chunk)] + parser.finish()
        return reports, parser.objective(), parser.unread is None

    chunks, at = [], 0
    for size in cuts:
        chunks.append(output[at : at + size])
        at += size
    assert parsed([output]) == parsed([*chunks, output[at:]])


@pytest.mark.parametrize(
    ("pattern", "said"),
    [
        # re's OverflowError: a traceback at submit, "crashed the executor" on a peer.
        ("loss=([0-9.]+){4294967296}", "a repeat count in it is too large"),
        # regex lays repeats out: this took every byte of memory and the kernel killed it.
        ("([0-9.]+){1000000000}", "its repeats come to 1,000,000,000 items, over 100,000"),
        ("(?:(?:ab){1000}){1000}", "its repeats come to 2,000,000 items, over 100,000"),
    ],
)
def test_a_regex_whose_repeats_are_too_large_is_refused_in_one_line(
    pattern: str, said: str
) -> None:
    with pytest.raises(re.error) as refused:
        compile_objective_regex(pattern)
    assert str(refused.value) == said


def test_a_regex_within_the_bound_compiles() -> None:
    assert compile_objective_regex("((x{10}){10}){999}|loss=([0-9.]+)(?(3)a|b)").groups == 3


def test_a_line_of_a_metaopt_environment_variable_is_no_malformed_report() -> None:
    # `env | grep METAOPT` in a trial noted nine lines "METAOPT line is not a JSON object:
    # 'METAOPT_DATA_DIR=...'", and a run that failed to report was said to have failed on
    # one (a README walkthrough). The word alone at a line's start still is one.
    parser = OutputParser()
    out = parser.feed(
        b"METAOPT_TRIAL_DIR=/data/trials/e1fa2b294ab2\n"
        b'METAOPT_PARAMS={"x": 0.5}\n'
        b'METAOPT {"loss": 0.25}\n'
    )
    assert out == [{"loss": 0.25}] and list(parser.notes) == []
    parser.feed(b"METAOPT loss=3\n")
    assert [note for note in parser.notes if "not a JSON object" in note]
    failed = OutputParser()
    failed.feed(b"METAOPT_TRIAL_DIR=/data/trials/e1fa2b294ab2\ntraining done\n")
    failed.finish()
    assert "METAOPT_TRIAL_DIR" not in failed.explain_missing()


def test_a_metric_of_the_wrong_json_kind_is_explained_in_json_words() -> None:
    # A bash script printing null was told "a NoneType; ... (e.g. loss.item())".
    parser = OutputParser()
    out = parser.feed(b'METAOPT {"loss": null, "acc": [1], "f1": {"a": 1}, "step": 2}\n')
    assert out == [{"step": 2}]
    assert list(parser.notes) == [
        "metric 'loss' is null in a METAOPT line; give a number or a string",
        "metric 'acc' is an array in a METAOPT line; give a number or a string",
        "metric 'f1' is an object in a METAOPT line; give a number or a string",
    ]
    # A step is no string (a review: it was told one would do).
    assert parser.feed(b'METAOPT {"loss": 0.5, "step": null}\n') == [{"loss": 0.5}]
    assert parser.notes[-1] == "metric 'step' is null in a METAOPT line; give a whole number"
