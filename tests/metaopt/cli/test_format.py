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
