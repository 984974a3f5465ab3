"""The code laid out for an experiment, and each trial's copy of it (metaopt/peer/_layout.py)."""

from __future__ import annotations

from pathlib import Path

from metaopt.peer._layout import _lay_out_code


def test_a_trials_code_laid_out_before_is_reused_not_laid_out_again(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "train.py").write_text("print('v1')\n")
    cwd = tmp_path / "trial" / "code"
    _lay_out_code(bundle, cwd)
    (cwd / "checkpoint_note.txt").write_text("written by the first run\n")
    _lay_out_code(bundle, cwd)  # a thaw of the same trial on this peer: must not fail
    assert (cwd / "train.py").read_text() == "print('v1')\n"
    assert (cwd / "checkpoint_note.txt").exists()
