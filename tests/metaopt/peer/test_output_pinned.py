"""Reading trial output: boundaries and edge cases the output tests left unpinned."""

from __future__ import annotations

from metaopt.peer._output import OutputConfig, OutputParser


def test_a_line_of_exactly_max_line_bytes_is_read_and_one_byte_more_is_cut() -> None:
    """A line of max_line_bytes is whole, not cut: a report that fits exactly is read (with
    or without a regex), and only a longer line is noted as cut."""
    report = b'METAOPT {"loss": 0.5}'
    size = len(report)
    parser = OutputParser(OutputConfig(max_line_bytes=size))
    assert parser.feed(report + b"\n") == [{"loss": 0.5}]
    assert parser.unread is None and list(parser.notes) == []
    longer = OutputParser(OutputConfig(max_line_bytes=size - 1))
    assert longer.feed(report + b"\n") == []
    assert longer.unread is not None
    # Output without reports (the skimmed fast path) counts the same: a line of exactly the
    # limit is no cut line, one byte more is.
    for kept, cut in ((size, 0), (size - 1, 1)):
        skimmed = OutputParser(OutputConfig(max_line_bytes=kept))
        skimmed.feed(b"x" * size + b"\n" + b"y\n")
        assert sum("was cut" in n for n in skimmed.notes) == cut
        assert skimmed.stdout_lines == 2
    regex = OutputParser(OutputConfig(objective_regex=r"loss=([0-9.]+)", max_line_bytes=10))
    assert regex.feed(b"loss=0.125\n") == [{"loss": 0.125, "step": 1}]  # 10 bytes: matched


def test_a_broken_regex_matches_nothing_more_not_later_chunks_nor_what_a_cr_left() -> None:
    """Once the objective regex timed out the parser is broken for good: a later chunk (with
    fresh time) and the text a \\r left on screen at the end are not matched; a value read
    after the break would complete a run whose output could not be read."""
    config = OutputConfig(objective_regex=r"loss=([0-9.]+)|(?:a|aa)+b", regex_timeout=0.05)
    parser = OutputParser(config)
    assert parser.feed(b"loss=0.3\r") == []  # on screen, not yet a line
    assert parser.feed(b"a" * 60 + b"\n", stdout=False) == []  # backtracks: breaks it
    assert parser.broken is not None
    assert parser.feed(b"loss=0.5\n") == []
    assert parser.feed(b"loss=0.25\n", stdout=False) == []
    assert parser.finish() == []
    assert parser.objective() is None and parser.matches == 0


def test_a_report_after_a_malformed_one_on_the_same_line_is_still_read() -> None:
    """A METAOPT prefix followed by broken JSON is skipped, and the scan goes on along the
    line: a later report on it (another thread's output) is not lost."""
    parser = OutputParser()
    out = parser.feed(b'METAOPT {"loss": oops} METAOPT {"loss": 0.25, "step": 2}\n')
    assert out == [{"loss": 0.25, "step": 2}]
    assert any("not JSON" in n for n in parser.notes)


def test_a_metaopt_line_that_is_no_json_object_is_not_matched_by_the_regex() -> None:
    """A line starting with METAOPT that holds no JSON object is the script's failed report,
    said as such, and not read by the objective regex as well."""
    parser = OutputParser(OutputConfig(objective_regex=r"loss=([0-9.]+)"))
    assert parser.feed(b"METAOPT loss=0.3\n") == []
    assert parser.matches == 0
    assert "METAOPT line is not a JSON object" in parser.explain_missing()


def test_the_stderr_tail_drops_blank_lines_and_cuts_long_ones() -> None:
    """The stderr tail in a failure's record keeps the last non-blank lines, each at most
    500 characters (a traceback's long line must not fill the failed event)."""
    parser = OutputParser(OutputConfig(stderr_lines=3))
    parser.feed(b"Traceback\n" + b"e" * 2000 + b"\n\n   \nValueError: x\n\n", stdout=False)
    assert parser.stderr_tail() == ["Traceback", "e" * 500, "ValueError: x"]


def test_the_word_metaopt_on_stderr_is_no_misplaced_report() -> None:
    """Only a report (METAOPT then a JSON object) on stderr is said to belong on stdout; an
    environment dump naming METAOPT_ variables is no such report."""
    parser = OutputParser()
    parser.feed(b"METAOPT_TRIAL_ID=ab12\nMETAOPT said hello\n", stdout=False)
    assert list(parser.notes) == []
    parser.feed(b'\x1b[31mMETAOPT {"loss": 1}\x1b[0m\n', stdout=False)
    assert any("printed to stderr" in n for n in parser.notes)


def test_what_was_cut_from_one_line_is_not_joined_to_the_next_lines_cut() -> None:
    """The bytes kept to find a report's start split where a line was cut belong to that
    line: a cut line ending in 'METAOP' and the next line's cut part starting with 'T {' are
    no report, and the run must not be taken for one whose last report went unread."""
    parser = OutputParser(OutputConfig(max_line_bytes=24))
    parser.feed(b'METAOPT {"loss": 1}\n' + b"x" * 30 + b"METAOP\n")
    parser.feed(b"y" * 24)  # a line filling the limit exactly, then cut in the next chunk
    parser.feed(b'T {"a": 1}\n')
    assert parser.unread is None
    assert parser.objective() == 1.0
