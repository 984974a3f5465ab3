"""Search benchmark: metaopt's algorithms against Optuna, Hyperopt and random search.

    python -m simulations.bench_search            # full run: 10 seeds, budget 50, 7 problems
    python -m simulations.bench_search --quick    # smoke: 2 seeds, budget 12, cheap timings

Every method runs the same seeds in a sequential ask/tell loop (observe -> suggest -> evaluate).
Hartmann6 is run to max(budget, 100) evaluations; its budget-50 regret is read off the same
curve (no method is told its budget, so the first 50 steps are those of a 50-step run). The
scikit-learn problem has no known optimum: its regret is against the best loss found by any
method in this run. Seconds per suggestion are measured on Hartmann6 with a random history of
50, 200 and 1,000 observations, cold (a fresh algorithm or study each time), median of 5;
with auto among the methods, also auto asked through a metaopt.Study that holds that history
(its fold of the records, de-duplication and the trial's records counted too).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from metaopt.search import Observations, make_algorithm
from metaopt.space import Space
from simulations._problems import PROBLEMS, Problem, get_problem

METAOPT = ("auto", "gp", "evolution", "random")
# optuna-gp-det: GPSampler told the objective is deterministic (every problem here is), its
# noise held near zero; the default GPSampler fits a noise term.
PEERS = ("optuna-tpe", "optuna-gp", "optuna-gp-det", "hyperopt-tpe")
METHODS = METAOPT + PEERS
# A timing row of its own: auto asked through metaopt.Study, the path a user's ask() takes.
STUDY_TIMING = "auto via Study.ask"
HARTMANN_LONG = 100
HARTMANN_LOCAL_GAP = 0.119  # regret of Hartmann6's second-best local minimum (-3.2032)


def _quiet() -> None:
    warnings.simplefilter("ignore")
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
    except ImportError:
        pass
    import logging

    logging.getLogger("hyperopt").setLevel(logging.ERROR)


def _init_worker() -> None:
    _quiet()
    from threadpoolctl import threadpool_limits

    # Two shared cores: one BLAS thread per worker process.
    threadpool_limits(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


# -- runners: each returns the loss after every evaluation -------------------------------------


def run_metaopt(method: str, problem: Problem, seed: int, budget: int) -> tuple[list[float], float]:
    space = Space.from_dict(problem.priors)
    alg = make_algorithm(method)
    rng = np.random.default_rng(seed)
    obs = Observations.empty(space.d)
    ys: list[float] = []
    spent = 0.0
    for _ in range(budget):
        t0 = time.perf_counter()
        u = alg.suggest(space, obs, rng, 1)
        spent += time.perf_counter() - t0
        y = problem.objective(space.from_unit(u[0]))
        ys.append(y)
        obs = Observations(np.vstack([obs.X, u]), np.vstack([obs.Y, [[y]]]))
    return ys, spent / budget


def _optuna_params(trial: Any, space: Space) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dim in space:
        if dim.prior == "choices":
            out[dim.name] = trial.suggest_categorical(dim.name, list(dim.choices))
        elif dim.prior == "randint":
            out[dim.name] = trial.suggest_int(dim.name, int(dim.low), int(dim.high) - 1)
        else:
            out[dim.name] = trial.suggest_float(
                dim.name, dim.low, dim.high, log=dim.prior == "loguniform"
            )
    return out


def _optuna_sampler(method: str, seed: int) -> Any:
    import optuna

    if method == "optuna-tpe":
        return optuna.samplers.TPESampler(multivariate=True, seed=seed)
    return optuna.samplers.GPSampler(seed=seed, deterministic_objective=method == "optuna-gp-det")


def run_optuna(method: str, problem: Problem, seed: int, budget: int) -> tuple[list[float], float]:
    import optuna

    space = Space.from_dict(problem.priors)
    study = optuna.create_study(sampler=_optuna_sampler(method, seed))
    ys: list[float] = []
    spent = 0.0
    for _ in range(budget):
        t0 = time.perf_counter()
        trial = study.ask()
        params = _optuna_params(trial, space)
        spent += time.perf_counter() - t0
        y = problem.objective(params)
        study.tell(trial, y)
        ys.append(y)
    return ys, spent / budget


def _hyperopt_space(space: Space) -> dict[str, Any]:
    from hyperopt import hp

    out: dict[str, Any] = {}
    for dim in space:
        if dim.prior == "choices":
            out[dim.name] = hp.choice(dim.name, list(dim.choices))
        elif dim.prior == "randint":
            out[dim.name] = hp.uniformint(dim.name, int(dim.low), int(dim.high) - 1)
        elif dim.prior == "loguniform":
            out[dim.name] = hp.loguniform(dim.name, math.log(dim.low), math.log(dim.high))
        else:
            out[dim.name] = hp.uniform(dim.name, dim.low, dim.high)
    return out


def _hyperopt_fn(
    space: Space, objective: Callable[[Mapping[str, Any]], float]
) -> Callable[..., float]:
    ints = {d.name for d in space if d.kind == "int"}

    def fn(params: dict[str, Any]) -> float:
        return objective({k: round(v) if k in ints else v for k, v in params.items()})

    return fn


def run_hyperopt(
    method: str, problem: Problem, seed: int, budget: int
) -> tuple[list[float], float]:
    from hyperopt import STATUS_OK, Trials, fmin, tpe

    space = Space.from_dict(problem.priors)
    fn = _hyperopt_fn(space, problem.objective)
    eval_time = [0.0]

    def timed(params: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        y = fn(params)
        eval_time[0] += time.perf_counter() - t0
        return {"loss": y, "status": STATUS_OK}

    trials = Trials()
    t0 = time.perf_counter()
    fmin(
        timed,
        _hyperopt_space(space),
        algo=tpe.suggest,
        max_evals=budget,
        trials=trials,
        rstate=np.random.default_rng(seed),
        show_progressbar=False,
    )
    total = time.perf_counter() - t0
    return [float(v) for v in trials.losses()], (total - eval_time[0]) / budget


def run_one(task: tuple[str, str, int, int]) -> tuple[str, str, int, list[float], float]:
    """Run one (method, problem, seed, budget): its loss curve and seconds per suggestion."""
    method, name, seed, budget = task
    problem = get_problem(name)
    if method in METAOPT:
        ys, sec = run_metaopt(method, problem, seed, budget)
    elif method.startswith("optuna"):
        ys, sec = run_optuna(method, problem, seed, budget)
    else:
        ys, sec = run_hyperopt(method, problem, seed, budget)
    return method, name, seed, ys, sec


# -- seconds per suggestion with a history of n ------------------------------------------------


def time_one(task: tuple[str, int, int]) -> tuple[str, int, float, float]:
    """Median and slowest cold seconds for one suggestion after a random history of n on
    Hartmann6. The slowest matters for auto: past 300 observations it draws each suggestion
    from evolution (milliseconds) or the GP (tenths of a second) at even odds, and a median of
    3 that drew evolution twice printed auto 100 times cheaper than its GP at n = 1,000."""
    method, n, reps = task
    problem = get_problem("hartmann6")
    space = Space.from_dict(problem.priors)
    rng = np.random.default_rng(n)
    X = space.sample(rng, n)
    params = [space.from_unit(x) for x in X]
    Y = np.array([[problem.objective(p)] for p in params])
    if method == STUDY_TIMING:
        times = _time_study(X, Y[:, 0], reps)
        return method, n, float(np.median(times)), float(np.max(times))
    times = []
    for rep in range(reps):
        if method in METAOPT:
            alg = make_algorithm(method)
            t0 = time.perf_counter()
            alg.suggest(space, Observations(X, Y), np.random.default_rng(rep), 1)
            times.append(time.perf_counter() - t0)
        elif method.startswith("optuna"):
            times.append(_time_optuna(method, space, params, Y[:, 0], rep))
        else:
            times.append(_time_hyperopt(space, problem, params, rep))
    return method, n, float(np.median(times)), float(np.max(times))


class _Replay:
    """An Algorithm that hands out a given history's points in order, then asks auto: a Study
    filled by it holds that history under auto's search as a user's Study would."""

    name = "auto-after-replay"

    def __init__(self, X: np.ndarray) -> None:
        self.X = X
        self.given = 0
        self.auto = make_algorithm("auto")

    def suggest(
        self, space: Space, obs: Observations, rng: np.random.Generator, n: int = 1
    ) -> np.ndarray:
        if self.given < self.X.shape[0]:
            self.given += 1
            return self.X[self.given - 1 : self.given]
        return self.auto.suggest(space, obs, rng, n)


def _time_study(X: np.ndarray, y: np.ndarray, reps: int) -> list[float]:
    """Seconds for Study.ask() (auto cold each time) with the history X, y told, then one
    more told after each timed ask (so the last is timed with a history of n + reps - 1)."""
    from metaopt import Study

    problem = get_problem("hartmann6")
    replay = _Replay(X)
    study = Study(space=dict(problem.priors), algorithm=replay, seed=0)
    for v in y:
        study.tell(study.ask(), float(v))
    times = []
    for _ in range(reps):
        replay.auto = make_algorithm("auto")  # cold, as the other rows
        t0 = time.perf_counter()
        trial = study.ask()
        times.append(time.perf_counter() - t0)
        study.tell(trial, problem.objective(trial.params))
    return times


def _time_optuna(
    method: str, space: Space, params: list[dict[str, Any]], y: Any, seed: int
) -> float:
    import optuna

    dists: dict[str, optuna.distributions.BaseDistribution] = {
        d.name: optuna.distributions.FloatDistribution(d.low, d.high, log=d.prior == "loguniform")
        for d in space
    }
    study = optuna.create_study(sampler=_optuna_sampler(method, seed))
    study.add_trials(
        [
            optuna.trial.create_trial(params=p, distributions=dists, value=float(v))
            for p, v in zip(params, y, strict=True)
        ]
    )
    t0 = time.perf_counter()
    trial = study.ask()
    _optuna_params(trial, space)
    return time.perf_counter() - t0


def _time_hyperopt(
    space: Space, problem: Problem, params: list[dict[str, Any]], seed: int
) -> float:
    from hyperopt import Trials, fmin, tpe
    from hyperopt.fmin import generate_trials_to_calculate

    trials: Trials = generate_trials_to_calculate(params)
    fn = _hyperopt_fn(space, problem.objective)
    hspace = _hyperopt_space(space)
    kw: dict[str, Any] = {"trials": trials, "show_progressbar": False}
    fmin(
        fn,
        hspace,
        algo=tpe.suggest,
        max_evals=len(params),
        rstate=np.random.default_rng(seed),
        **kw,
    )
    t0 = time.perf_counter()
    fmin(
        fn,
        hspace,
        algo=tpe.suggest,
        max_evals=len(params) + 1,
        rstate=np.random.default_rng(seed),
        **kw,
    )
    return time.perf_counter() - t0


# -- tables ------------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            str(c).rjust(w) if i else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return "0" if x == 0 else f"{x:.3g}"


def report(
    curves: dict[tuple[str, str], list[list[float]]],
    methods: Sequence[str],
    problems: Sequence[str],
    budget: int,
    sec_per: dict[str, list[float]],
) -> str:
    """The regret tables as plain aligned text."""
    optimum: dict[str, float] = {}
    for name in problems:
        known = get_problem(name).optimum
        found = min(min(c) for m in methods for c in curves.get((m, name), []))
        optimum[name] = known if known is not None else found

    def regret(m: str, name: str, at: int) -> list[float]:
        return [max(0.0, min(c[:at]) - optimum[name]) for c in curves.get((m, name), [])]

    med = {
        (m, p): float(np.median(regret(m, p, budget))) if curves.get((m, p)) else math.nan
        for m in methods
        for p in problems
    }
    out = [
        f"Median final regret after {budget} evaluations, {len(next(iter(curves.values())))} seeds"
    ]
    out.append(
        _table(
            ["problem", *methods], [[p, *(_fmt(med[(m, p)]) for m in methods)] for p in problems]
        )
    )
    peers = [m for m in methods if m in PEERS]
    if peers:
        out.append("\nRatio of median regret to the best peer library's (< 1: metaopt better)")
        rows = []
        for p in problems:
            best = min(med[(m, p)] for m in peers)
            rows.append(
                [
                    p,
                    *(
                        _fmt(med[(m, p)] / best)
                        if best > 0
                        else ("=" if med[(m, p)] == 0 else "inf")
                        for m in methods
                        if m in METAOPT
                    ),
                ]
            )
        out.append(_table(["problem", *(m for m in methods if m in METAOPT)], rows))
    if "auto" in methods:
        for peer in ("optuna-gp", "optuna-gp-det", "optuna-tpe"):
            if peer in methods:
                wins = sum(med[("auto", p)] <= med[(peer, p)] for p in problems)
                out.append(f"auto <= {peer} on {wins} of {len(problems)} problems")
    if "hartmann6" in problems:
        long = max(budget, HARTMANN_LONG)
        out.append(
            f"\nHartmann6 after {long} evaluations: median regret, seeds below {HARTMANN_LOCAL_GAP}"
        )
        rows = []
        for m in methods:
            r = regret(m, "hartmann6", long)
            if r:
                rows.append(
                    [
                        m,
                        _fmt(float(np.median(r))),
                        f"{sum(x < HARTMANN_LOCAL_GAP for x in r)}/{len(r)}",
                    ]
                )
        out.append(_table(["method", "median regret", "seeds < 0.119"], rows))
    out.append("\nMedian seconds per suggestion during the runs above")
    out.append(
        _table(
            ["method", "s/suggestion"],
            [[m, f"{np.median(sec_per[m]):.4f}"] for m in methods if sec_per.get(m)],
        )
    )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m simulations.bench_search", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument(
        "--first-seed",
        type=int,
        default=30,
        help="seeds run from here up (rules were chosen on 0-29: the default holds them out)",
    )
    ap.add_argument("--budget", type=int, default=50)
    ap.add_argument("--problems", default=",".join(PROBLEMS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument(
        "--timing", default="50,200,1000", help="history sizes for seconds per suggestion; '' skips"
    )
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument(
        "--save",
        default="",
        help="append every finished run and timing to this JSON-lines file; runs it already"
        " holds are not run again (a stopped run goes on where it stopped)",
    )
    ap.add_argument(
        "--report",
        action="append",
        default=[],
        help="print the tables from --save files (seeds finished by every method) and exit",
    )
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 2 seeds, budget 12, timing at 50"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.budget, args.timing = 2, 12, "50"
    problems = [p for p in args.problems.split(",") if p]
    methods = [m for m in args.methods.split(",") if m]
    for p in problems:
        if p not in PROBLEMS:
            ap.error(f"unknown problem {p!r}; choose from {','.join(PROBLEMS)}")
    for m in methods:
        if m not in METHODS:
            ap.error(f"unknown method {m!r}; choose from {','.join(METHODS)}")
    if args.budget < 1 or args.seeds < 1:  # (--budget 0 was a ZeroDivisionError in a worker)
        ap.error("--budget and --seeds take 1 or more")
    if args.first_seed < 0:
        ap.error("--first-seed takes 0 or more")
    if args.report:
        print(
            _report_lines(_read_saved(args.report, args.budget, ap), methods, problems, args.budget)
        )
        return 0
    skipped = [m for m in methods if not _available(m)]
    methods = [m for m in methods if m not in skipped]
    if skipped:
        print(f"skipped (not installed / not written yet): {', '.join(skipped)}")
    _quiet()
    long = max(args.budget, 100 if args.quick else HARTMANN_LONG)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    # Seed-major order: whenever the run is stopped, the finished seeds cover every method.
    tasks = [
        (m, p, s, long if p == "hartmann6" else args.budget)
        for s in seeds
        for m in methods
        for p in problems
    ]
    sizes = [int(x) for x in args.timing.split(",") if x]
    timings = [(m, n, 5) for m in methods for n in sizes]
    if "auto" in methods:
        timings += [(STUDY_TIMING, n, 5) for n in sizes]
    # (--save to a file that held runs ran them all again and appended duplicates.)
    lines = _read_saved([args.save], args.budget, ap) if os.path.exists(args.save) else []
    lines = [x for x in lines if "timing" in x or int(x["run"][2]) in seeds]  # this run's table
    if lines:
        held = {tuple(x["run"]) for x in lines if "run" in x}
        timed = {tuple(x["timing"][:2]) for x in lines if "timing" in x}
        tasks = [t for t in tasks if tuple(t[:3]) not in held]
        timings = [t for t in timings if tuple(t[:2]) not in timed]
        print(f"{args.save} holds {len(held)} runs and {len(timed)} timings: not run again")
    t0 = time.time()
    sink = open(args.save, "a") if args.save else None  # noqa: SIM115 - kept open for the run

    def keep(line: dict[str, Any]) -> None:
        lines.append(line)
        if sink is not None:
            sink.write(json.dumps(line) + "\n")
            sink.flush()

    try:
        with mp.get_context("fork").Pool(args.jobs, initializer=_init_worker) as pool:
            for done, (method, name, seed, ys, sec) in enumerate(
                pool.imap_unordered(run_one, tasks), 1
            ):
                keep({"run": [method, name, seed], "ys": ys, "sec": sec})
                if done % max(1, len(tasks) // 20) == 0:
                    print(
                        f"  {done}/{len(tasks)} runs, {time.time() - t0:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
            for m, n, sec, slowest in pool.imap_unordered(time_one, timings):
                keep({"timing": [m, n, sec, slowest]})
    finally:
        if sink is not None:
            sink.close()
    print(_report_lines(lines, methods, problems, args.budget))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"\nwall time {time.time() - t0:.0f} s on {os.cpu_count()} cores ({args.jobs} workers),"
        f" load average {load}"
    )
    return 0


def _read_saved(
    paths: Sequence[str], budget: int, ap: argparse.ArgumentParser
) -> list[dict[str, Any]]:
    """The runs and timings --save files hold, refused in one line if damaged or too short."""
    saved: list[dict[str, Any]] = []
    for path in paths:
        with open(path) as fh:
            for number, text in enumerate(fh, 1):
                try:
                    saved += [json.loads(text)] if text.strip() else []
                except ValueError:  # (a run stopped mid-write: a traceback)
                    ap.error(f"{path}, line {number}: not a saved run; delete that line")
    short = {len(x["ys"]) for x in saved if "run" in x and len(x["ys"]) < budget}
    if short:
        # (Read as they were, runs of 12 evaluations were tabulated as "after 50".)
        ap.error(
            f"{', '.join(paths)} holds runs of {min(short)} evaluations, under"
            f" --budget {budget}; pass --budget {min(short)}"
        )
    return saved


def _report_lines(
    lines: Sequence[Mapping[str, Any]], methods: Sequence[str], problems: Sequence[str], budget: int
) -> str:
    runs: dict[tuple[str, str, int], list[float]] = {}
    sec_per: dict[str, list[float]] = {}
    timing: dict[tuple[str, int], tuple[float, float | None]] = {}
    for line in lines:
        if "run" in line:
            m, p, s = line["run"]
            runs[(m, p, int(s))] = line["ys"]
            sec_per.setdefault(m, []).append(line["sec"])
        else:
            m, n, sec, *slowest = line["timing"]  # (files saved before: no slowest)
            timing[(m, int(n))] = (sec, slowest[0] if slowest else None)
    present = [m for m in methods if any(k[0] == m for k in runs)]
    seeds = sorted({k[2] for k in runs})
    # (None of the methods asked for in the file: every seed counted as finished by them all,
    # and the table took min() of nothing.)
    full = [
        s for s in seeds if present and all((m, p, s) in runs for m in present for p in problems)
    ]
    curves = {(m, p): [runs[(m, p, s)] for s in full] for m in present for p in problems}
    out = [f"seeds finished by every method: {full}"]
    if full:
        out.append(report(curves, present, problems, budget, sec_per))
    if timing:
        sizes = sorted({n for _, n in timing})
        out.append(
            "\nSeconds per suggestion, Hartmann6, random history of n (cold, 5 reps):"
            " median / slowest"
        )
        via_study = "auto" in methods and any(m == STUDY_TIMING for m, _ in timing)
        timed = [*methods, STUDY_TIMING] if via_study else methods
        rows = [[m, *(_fmt_timing(timing.get((m, n))) for n in sizes)] for m in timed]
        out.append(_table(["method", *(f"n={n}" for n in sizes)], rows))
    return "\n".join(out)


def _fmt_timing(cell: tuple[float, float | None] | None) -> str:
    if cell is None:
        return "-"
    median, slowest = cell
    return f"{median:.4f} / " + ("-" if slowest is None else f"{slowest:.4f}")


def _available(method: str) -> bool:
    import importlib.util

    if method == "gp":
        return importlib.util.find_spec("metaopt.search.gp") is not None
    if method.startswith("optuna-gp"):
        return (
            importlib.util.find_spec("torch") is not None
            and importlib.util.find_spec("optuna") is not None
        )
    if method.startswith("optuna"):
        return importlib.util.find_spec("optuna") is not None
    if method.startswith("hyperopt"):
        return importlib.util.find_spec("hyperopt") is not None
    return True


if __name__ == "__main__":
    raise SystemExit(main())
