"""What the status views print about trial states, frozen, killed and thawed ones included."""

from __future__ import annotations

from metaopt.cli._format import state_summary, table, trial_state


def test_summary_always_shows_done_running_failed_and_pending_counts_as_running() -> None:
    assert state_summary({}) == "0 done, 0 running, 0 failed"
    counts = {"completed": 4, "running": 2, "pending": 1, "failed": 1}
    assert state_summary(counts) == "4 done, 3 running, 1 failed"


def test_summary_shows_early_stopping_states_and_thaws_when_there_are_any() -> None:
    counts = {"completed": 3, "running": 1, "frozen": 2, "killed": 1, "lost": 1}
    assert (
        state_summary(counts, thawed=2)
        == "3 done, 1 running, 2 frozen, 1 killed, 1 lost, 2 thawed, 0 failed"
    )
    assert "thawed" not in state_summary(counts, thawed=0)


def test_trial_state_names_thaws_only_for_thawed_trials() -> None:
    assert trial_state("frozen", 0) == "frozen"
    assert trial_state("running", 2) == "running, thawed 2x"


def test_table_aligns_columns_and_prints_missing_values_as_a_dash() -> None:
    out = table(["trial", "state", "loss"], [["ab", "frozen", 0.25], ["c", "running", None]])
    assert out.splitlines() == [
        "trial  state    loss",
        "-----  -------  ----",
        "ab     frozen   0.25",
        "c      running  -",
    ]


def test_wide_characters_take_two_columns_in_a_table_and_an_elided_name() -> None:
    # A name of 64 CJK characters, counted as 64, took 80 columns once elided to "40" and
    # pushed every column after it out of line.
    from metaopt.cli._format import columns, elided

    assert columns("abc") == 3 and columns("名字") == 4 and columns("e\u0301") == 1
    shown = elided("名" * 64)
    assert columns(shown) <= 40 and "…" in shown
    assert elided("a" * 100) == "a" * 26 + "…" + "a" * 13  # (ASCII as before)
    wide, narrow = table(["name", "x"], [["名字名字", 1], ["abc", 2]]).splitlines()[2:]
    # The second column starts at the same terminal column on both rows.
    assert columns(wide[: wide.index("1")]) == columns(narrow[: narrow.index("2")]) == 10
