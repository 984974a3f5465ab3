"""What keeping a long-running trial's view current costs a peer, per report.

python -m simulations.bench_fold [--events 1000,10000,40000] [--reports 200]

Every peer folds every trial's events into a view (metaopt._state), and reads the views of
running trials after each report (its scheduler twice a second). Side by side, in one run, for
one trial that has reported N times: a fold of all its events (what each read after a report
cost before folds were kept) and a kept fold extended by the new report, then read. A run
reporting five times a second (the most a peer records) has 36,000 reports after two hours.
"""

from __future__ import annotations

import argparse
import os
import time

from crdt import Record
from metaopt._records import EVENT, TRIAL, EventBody, ExperimentSpec, experiment_record
from metaopt._state import ExperimentState, TrialFold

NODE = bytes(range(16))


def _history(n: int, extra: int) -> tuple[ExperimentState, Record, list[Record]]:
    """An experiment with one trial, its start and n reports folded in, and extra more."""
    spec = ExperimentSpec("bench", {"x": "uniform(0, 1)"}, command=("true",))
    experiment = experiment_record(spec)
    state = ExperimentState(experiment.key, spec)
    body = {"params": {"x": 0.5}, "node": NODE, "counter": 1}
    trial = Record.create(TRIAL, NODE, 1, 1_000, body, [experiment.key])
    links = [trial.key, experiment.key]
    started = EventBody(trial.key, experiment.key, "started", NODE).to_body()
    events = [Record.create(EVENT, NODE, 2, 2_000, started, links)]
    for step in range(1, n + extra + 1):
        metrics = {"objective": 1.0 / step}
        report = EventBody(trial.key, experiment.key, "progress", NODE, step, metrics)
        stamp = 2_000 + 200 * step
        events.append(Record.create(EVENT, NODE, 2 + step, stamp, report.to_body(), links))
    state.apply_all([trial, *events[: n + 1]])
    return state, trial, events[n + 1 :]


def _per_report(n: int, reports: int) -> tuple[float, float]:
    """Seconds per report to keep the view current: folding all events, and a kept fold."""
    state, trial, more = _history(n, reports)
    state.trial(trial.key)
    t0 = time.perf_counter()
    for record in more:
        state.apply(record)
        state.trial(trial.key)
    kept = (time.perf_counter() - t0) / reports
    spec, (body, created) = state.spec, state._trials[trial.key]
    events = state.events(trial.key)
    rounds = max(1, min(reports, 2_000_000 // max(n, 1) // 100))
    t0 = time.perf_counter()
    for _ in range(rounds):
        TrialFold.of(trial.key, body, created, events, spec).view()
    return (time.perf_counter() - t0) / rounds, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", default="1000,10000,40000")
    parser.add_argument("--reports", type=int, default=200)
    args = parser.parse_args()
    print(f"one trial's view after each report, load average {os.getloadavg()[0]:.2f}:")
    print(f"{'reports so far':>14}  {'fold of all (ms)':>16}  {'kept fold (ms)':>14}  {'ratio':>7}")
    for n in (int(v) for v in args.events.split(",")):
        full, kept = _per_report(n, args.reports)
        print(f"{n:>14,}  {full * 1e3:>16.2f}  {kept * 1e3:>14.3f}  {full / kept:>6.0f}x")


if __name__ == "__main__":
    main()
