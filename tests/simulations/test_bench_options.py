"""The benchmarks refuse options that would hang them, crash them or print a table that says
what it did not measure (a whole-file review of simulations/ found each)."""

from __future__ import annotations

import json
import math
import signal
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from simulations import bench_freezethaw, bench_parallel, bench_search
from simulations._curves import Pool
from simulations.bench_freezethaw import _policy, simulate

# -- bench_search --report ---------------------------------------------------------------------


def _save(path: Path, lines: list[dict[str, object]], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + tail)
    return path


def _runs(length: int, seeds: range) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for s in seeds:
        for m in ("auto", "random"):
            ys = list(np.linspace(10.0, 1.0, length))
            out.append({"run": [m, "branin", s], "ys": ys, "sec": 0.01})
    return out


def test_report_of_runs_shorter_than_budget_does_not_claim_the_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A --quick run (budget 12) saved, tabulated with --report (default --budget 50): the
    # table says "after 50 evaluations" over 12-evaluation curves (min(c[:50]) reads all 12).
    # Saved runs carry no budget and nothing checks a curve's length against --budget, so a
    # save file that mixes a quick run's seeds with a full run's mixes budgets silently too.
    f = _save(tmp_path / "runs.jsonl", _runs(12, range(2)))
    try:
        bench_search.main(["--report", str(f), "--problems", "branin", "--methods", "auto,random"])
    except SystemExit:
        return  # refusing is fine
    out = capsys.readouterr().out
    assert "after 50 evaluations" not in out, out


def test_report_of_a_save_file_with_a_damaged_line_is_one_line_not_a_traceback(
    tmp_path: Path,
) -> None:
    # The last line cut short (a run stopped mid-write, a full disk): JSONDecodeError.
    f = _save(tmp_path / "runs.jsonl", _runs(12, range(1)), tail='{"run": ["auto", "bra')
    with pytest.raises(SystemExit):
        bench_search.main(["--report", str(f), "--problems", "branin", "--methods", "auto,random"])


def test_report_for_methods_the_file_does_not_hold_is_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --methods optuna-gp over a file of auto/random runs: present == [] but every seed counted
    # as "finished by every method", so report() took min() of nothing: ValueError.
    f = _save(tmp_path / "runs.jsonl", _runs(12, range(1)))
    args = ["--report", str(f), "--problems", "branin", "--methods", "optuna-gp", "--budget", "12"]
    assert bench_search.main(args) == 0
    assert capsys.readouterr().out.strip() == "seeds finished by every method: []"


def test_save_to_a_file_that_holds_runs_goes_on_where_it_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --save appended: rerun on a stopped run's file, every run was run again and written twice.
    f = _save(tmp_path / "runs.jsonl", [*_runs(12, range(1)), {"run": ["auto", "branin", 5],
               "ys": [1.0] * 12, "sec": 0.01}])  # fmt: skip
    args = ["--save", str(f), "--first-seed", "0", "--seeds", "2", "--budget", "12",
            "--problems", "branin", "--methods", "auto,random", "--timing", "",
            "--jobs", "1"]  # fmt: skip
    assert bench_search.main(args) == 0
    runs = [tuple(json.loads(x)["run"]) for x in f.read_text().splitlines()]
    assert sorted(runs) == sorted(
        [(m, "branin", s) for m in ("auto", "random") for s in (0, 1)] + [("auto", "branin", 5)]
    )
    out = capsys.readouterr().out
    assert "seeds finished by every method: [0, 1]" in out, out  # seed 5: not this run's


def test_timings_saved_before_the_slowest_was_kept_still_tabulate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Timings are saved as [method, n, median, slowest] now; files saved before hold three.
    f = _save(tmp_path / "runs.jsonl", [{"timing": ["auto", 50, 0.05]},
              {"timing": ["auto", 1000, 0.005, 0.5]}])  # fmt: skip
    args = ["--report", str(f), "--problems", "branin", "--methods", "auto", "--budget", "12"]
    assert bench_search.main(args) == 0
    row = [x for x in capsys.readouterr().out.splitlines() if x.startswith("auto")]
    assert row == ["auto    0.0500 / -  0.0050 / 0.5000"], row


def test_auto_is_also_timed_through_a_study_holding_the_history(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The target (seconds per suggestion) is what a user's Study.ask() takes, not only the
    # algorithm's suggest(): the Study's row is asked with the same history, then auto's.
    histories: list[int] = []
    real = bench_search.make_algorithm

    def counting(name: str) -> object:
        alg = real(name)
        suggest = alg.suggest

        def spy(space: object, obs: object, rng: object, n: int = 1) -> object:
            histories.append(obs.X.shape[0])  # type: ignore[attr-defined]
            return suggest(space, obs, rng, n)  # type: ignore[arg-type]

        alg.suggest = spy  # type: ignore[method-assign]
        return alg

    monkeypatch.setattr(bench_search, "make_algorithm", counting)
    method, n, median, slowest = bench_search.time_one((bench_search.STUDY_TIMING, 12, 3))
    assert (method, n) == (bench_search.STUDY_TIMING, 12)
    assert histories == [12, 13, 14]  # auto asked, cold, with the history told and each since
    assert 0 < median <= slowest
    args = ["--budget", "1", "--seeds", "1", "--problems", "branin", "--methods", "auto",
            "--timing", "12", "--jobs", "1"]  # fmt: skip
    assert bench_search.main(args) == 0
    rows = [x.split()[0:4] for x in capsys.readouterr().out.splitlines() if x.startswith("auto")]
    assert ["auto", "via", "Study.ask"] in [r[:3] for r in rows], rows


def test_search_budget_zero_is_refused_not_a_zero_division() -> None:
    # run_metaopt returns spent / budget: ZeroDivisionError from the pool's worker.
    with pytest.raises(SystemExit):
        bench_search.main(
            ["--budget", "0", "--seeds", "1", "--problems", "branin", "--methods", "random",
             "--timing", "", "--jobs", "1"]
        )  # fmt: skip


# -- bench_parallel ------------------------------------------------------------------------------


class _Hung(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Hung


def test_parallel_sync_zero_is_refused_or_ends_not_a_hang() -> None:
    # --sync 0 (or negative): every sync event is re-queued at the same virtual time with a
    # larger counter, so virtual time never advances past it and the loop never ends (max_time
    # is never passed). `python -m simulations.bench_parallel --sync 0` hangs for good.
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(10)
    try:
        bench_parallel.run(
            "branin", 2, 0, target=0.05, sync_every=0.0, max_time=3.0, algorithm="random"
        )
    except ValueError:
        pass
    except _Hung:
        pytest.fail("run(..., sync_every=0) still looping after 10 s (virtual time stuck)")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_speedup_interval_is_never_nan() -> None:
    # k = 1 missed the target in 3 of 4 seeds, k peers reached it in all: the resampled
    # medians are inf / 5 = inf, and np.quantile between two infs gives nan: "nan-nanx".
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # (numpy's inf - inf, shown by the CLI)
        lo, hi = bench_parallel.speedup_interval([math.inf, math.inf, math.inf, 10.0], [5.0] * 4)
    assert not math.isnan(lo) and not math.isnan(hi), (lo, hi)


def test_speedup_is_against_k_1_whatever_the_order_of_peers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The docstring: "the speed-up is the median time at k = 1 over the median at k". The
    # code takes the first k listed: --peers 4,1 prints 1.00x for k = 4 and 0.25x for k = 1,
    # and --peers 2,4,8 measures against k = 2 with no word that 1 is missing.
    def fake(name: str, k: int, seed: int, **kw: object) -> bench_parallel.RunResult:
        return bench_parallel.RunResult(8.0 / k, 1, 0, 0, 0.0)

    monkeypatch.setattr(bench_parallel, "run", fake)
    monkeypatch.setattr(
        sys, "argv", ["bench_parallel", "--peers", "4,1", "--seeds", "2", "--problems",
                      "branin", "--push", "off"]
    )  # fmt: skip
    try:
        bench_parallel.main()
    except SystemExit:
        return  # refusing a list without k = 1 first is fine too
    rows = [r.split() for r in capsys.readouterr().out.splitlines() if r.startswith("branin")]
    by_k = {int(r[3]): r[5] for r in rows}
    assert by_k[4] == "4.00x", rows


# -- bench_freezethaw ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--every", "0"],
        ["--workers", "0"],
        ["--methods", "bogus"],
        ["--pools", "bogus"],
        ["--max-trials", "-1"],
    ],
)
def test_freezethaw_bad_options_are_refused_in_one_line(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # --every 0: ZeroDivisionError (t.k % 0); --methods bogus: ValueError traceback from
    # _policy; --workers 0: a table of "never"/inf rows, exit 0; --pools bogus: prints nothing,
    # exit 0.
    base = ["bench_freezethaw", "--no-latency", "--seeds", "1", "--pools", "sgd", "--workers", "1"]
    monkeypatch.setattr(sys, "argv", base + args)
    with pytest.raises(SystemExit):
        bench_freezethaw.main()


def test_regret_at_equal_steps_does_not_count_later_completions() -> None:
    # Two peers in lockstep, no stopping, T = 3: trial A (peer 0) ends at step 5, trial B
    # (peer 1) at step 6. With equal_steps = 5 the regret must be A's. The step that reaches
    # equal_steps is a completion, whose `continue` skips the `steps == equal_steps` check;
    # the round's end check then reads the incumbent after B too (up to workers - 1 steps
    # past the budget).
    curves = np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 0.5], [9.0, 9.0, 9.0]])
    pool = Pool("tiny", np.zeros((3, 4)), curves, curves[:, -1].copy())
    order = np.array([0, 1, 2])
    r = simulate(pool, order, _policy("none", pool, 0, 1), 2, 5, 5, 0.0)
    assert r.regret_at == pytest.approx(0.5), r  # A's true final 1.0 minus the best 0.5
