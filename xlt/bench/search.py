"""Part search: how much compute each searcher spends to find what the grid finds, replayed on a
recorded grid study (xlt.bench.replay; by default the shipped studies/results/search_grid_cpu).

Searchers, each over `search_seeds` seeds, each search stopping to start trials once it has
spent `search_budget` x the grid's compute (the trial running then finishes):

    grid      Optuna's GridSampler: every point once, in the seed's order (a grid study's cost
              to find its best depends only on where in its order the best point comes)
    random    Optuna's RandomSampler over the grid's values
    tpe       Optuna's TPESampler, as `search.algorithm: tpe` builds it (xlt.study.space)
    tpe_asha  the same with Ray Tune's ASHA (`search.asha`, its default grace and reduction)
              deciding after every report whether the trial goes on (xlt.study.asha)
    nsga2     Optuna's NSGAIISampler, as `search.algorithm: nsga2` builds it, on F1 (max) and
              the trial's training FLOPs (min)
    tpe_asha_max_epochs
              TPE + ASHA the way ASHA is meant to be used: the training length is the resource
              ASHA allots, not a searched key; TPE searches the other keys, every trial runs the
              grid's longest schedule (`search_resource` at its largest value) unless stopped
              (left out when the grid does not search `search_resource`)

Every searcher sees each grid key as a categorical choice of the grid's values, as a study
file's `choice` lists give Optuna. Figures per searcher: compute to the target (the grid's best
F1 - `search_gap`) as a fraction of the grid's compute, in FLOPs and device seconds (median,
quartiles, range over seeds); the best F1 within 1/3 and all of the grid's compute; the
hypervolume of the (F1, training FLOPs) points found vs compute, as a share of that of every
recorded report (the best front any search could find, stopping trials where it likes).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from xlt.bench.common import BenchConfig, median
from xlt.bench.replay import (
    UNITS,
    Grid,
    Ledger,
    best_f1_within,
    compute_to_target,
    grid_from_table,
    hypervolume,
    hypervolume_curve,
    reference_point,
    spread,
)
from xlt.errors import XltError

SEARCHERS = ("grid", "random", "tpe", "tpe_asha", "nsga2", "tpe_asha_max_epochs")
HV_FRACTIONS = (0.1, 0.2, 1 / 3, 0.5, 0.75, 1.0, 1.5, 2.0)
GOAL_FRACTION = 1 / 3  # issue 18: TPE+ASHA at the grid's best F1 - 1 with at most a third of its compute
RECORD = ("xlt run studies/search_grid_cpu.yaml && "
          "xlt publish runs/search_grid_cpu --to studies/results/search_grid_cpu")


def grid_path(cfg: BenchConfig) -> Path:
    """The recorded grid's directory (or table); a relative path is the repository's."""
    p = Path(cfg.search_grid)
    return p if p.is_absolute() else Path(__file__).resolve().parents[2] / p


def load_grid(cfg: BenchConfig) -> Grid:
    from xlt.results import TABLE, read_table

    path = grid_path(cfg)
    if not (path / TABLE).exists() and not (path.is_file() and path.name.endswith(".parquet")):
        raise XltError(f"no recorded grid at {path / TABLE if path.suffix != '.parquet' else path}; "
                       f"record it with `{RECORD}`")
    return grid_from_table(read_table(path), cfg.search_eval_set)


def search(grid: Grid, searcher: str, seed: int, budget: float, unit: str = "flops",
           resource: str = "train.epochs") -> Ledger:
    """One replayed search: Optuna's optimisation loop over the grid's points, each trial a
    replayed curve, until the search has spent `budget` (in `unit`) or the grid sampler has
    visited every point."""
    import optuna

    from xlt.study.space import optuna_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fixed = {resource: grid.values[resource][-1]} if searcher == "tpe_asha_max_epochs" else {}
    space = {k: list(grid.values[k]) for k in grid.keys if k not in fixed}
    if searcher == "grid":
        sampler: Any = optuna.samplers.GridSampler(space, seed=seed)
    elif searcher == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    elif searcher in ("tpe", "tpe_asha", "tpe_asha_max_epochs"):
        sampler = optuna_sampler("tpe", seed)
    elif searcher == "nsga2":
        sampler = optuna_sampler("nsga2", seed)
    else:
        raise ValueError(f"unknown searcher {searcher!r} (have {', '.join(SEARCHERS)})")
    multi = searcher == "nsga2"
    study = optuna.create_study(sampler=sampler, directions=["maximize", "minimize"] if multi else ["maximize"])
    asha = None
    if searcher in ("tpe_asha", "tpe_asha_max_epochs"):
        from xlt.spec import SearchSpec
        from xlt.study.asha import Asha

        defaults = SearchSpec()  # what `search: {asha: true}` runs with
        asha = Asha("f1", "max", defaults.asha_grace, defaults.asha_reduction)
    ledger = Ledger()

    def objective(trial) -> Any:
        params = {k: trial.suggest_categorical(k, v) for k, v in space.items()}
        point = grid.point({**params, **fixed})
        tid = str(trial.number)

        def keep_going(i: int, report) -> bool:
            go = asha is None or asha.keep_going(tid, i, report.f1)
            if go and not multi:
                trial.report(report.f1, i)  # OptunaSearch's intermediate values (one objective only)
            return go

        if asha is not None:
            asha.start(tid)
        ended = ledger.run(point, keep_going)
        if asha is not None and ended.f1 is not None:
            asha.end(tid, ended.iterations, ended.f1)
        if ended.f1 is None:
            return math.nan  # Optuna records the trial as failed, as Tune reports an errored one
        return (ended.f1, ended.flops_train) if multi else ended.f1

    def over_budget(study, trial) -> None:
        if ledger.spent(unit) >= budget:
            study.stop()

    # a bound on trials for a search whose trials cost nothing (it would never reach the budget)
    cheapest = min(p.reports[0].cost(unit) for p in grid.points.values())
    n_trials = len(grid.points) if searcher == "grid" else int(budget / cheapest) + 1 if cheapest > 0 else 10_000
    study.optimize(objective, n_trials=min(n_trials, 10_000), callbacks=[over_budget])
    return ledger


def summarise(grid: Grid, ledgers: list[Ledger], target: float) -> dict[str, Any]:
    """A searcher's figures over its seeds (see the module docstring)."""
    totals = {u: grid.total(u) for u in UNITS}
    out: dict[str, Any] = {"compute_to_target_fraction": {}}
    for u in UNITS:
        out["compute_to_target_fraction"][u] = spread(
            [None if (c := compute_to_target(led.trials, target, u)) is None else c / totals[u] for led in ledgers])
    out["best_f1_within_third"] = spread([best_f1_within(led.trials, GOAL_FRACTION * totals["flops"], "flops")
                                          for led in ledgers])
    out["best_f1_within_grid"] = spread([best_f1_within(led.trials, totals["flops"], "flops") for led in ledgers])
    curves = [hypervolume_curve(led.trials, grid, HV_FRACTIONS, "flops") for led in ledgers]
    out["hypervolume"] = {
        "compute_fraction": list(HV_FRACTIONS),
        **{stat: [fn([c[i] for c in curves]) for i in range(len(HV_FRACTIONS))]
           for stat, fn in (("median", median), ("min", min), ("max", max))}}
    out["trials"] = median([len(led.trials) for led in ledgers])
    out["distinct_points"] = median([len({t.params for t in led.trials}) for led in ledgers])
    out["stopped_early"] = median([sum(t.stopped for t in led.trials) for led in ledgers])
    out["spent_fraction"] = median([led.spent("flops") / totals["flops"] for led in ledgers])
    return out


def run(cfg: BenchConfig, log) -> dict[str, Any]:
    grid = load_grid(cfg)
    return replay_searchers(grid, cfg, log, source=str(grid_path(cfg)))


def replay_searchers(grid: Grid, cfg: BenchConfig, log, source: str = "") -> dict[str, Any]:
    if cfg.search_seeds < 1:
        raise XltError("search_seeds must be >= 1")
    target = grid.best_f1 - cfg.search_gap
    budget = cfg.search_budget * grid.total("flops")
    searchers: dict[str, Any] = {}
    for name in cfg.search_searchers:
        if name == "tpe_asha_max_epochs" and cfg.search_resource not in grid.keys:
            log(f"  {name}: left out ({cfg.search_resource} is not searched by the grid)")
            continue
        ledgers = [search(grid, name, seed, budget, resource=cfg.search_resource) for seed in range(cfg.search_seeds)]
        searchers[name] = summarise(grid, ledgers, target)
        c = searchers[name]["compute_to_target_fraction"]["flops"]
        log(f"  {name}: compute to F1 {target:.2f}, median {_pct(c['median'])} of the grid's "
            f"({c['reached']}/{c['seeds']} seeds within {cfg.search_budget:g}x)")
    fractions = {n: s["compute_to_target_fraction"]["flops"]["median"] for n, s in searchers.items()}
    reached = {n: f for n, f in fractions.items() if f is not None}
    best = min(reached, key=lambda n: reached[n]) if reached else None
    return {
        "source": source,
        "eval_set": grid.eval_set,
        "keys": list(grid.keys),
        "values": {k: list(v) for k, v in grid.values.items()},
        "points": len(grid.points),
        "failed_points": sum(p.failed for p in grid.points.values()),
        "grid_best_f1": grid.best_f1,
        "grid_best_params": dict(max((p for p in grid.points.values() if not p.failed),
                                     key=lambda p: p.reports[-1].f1).params),
        "target_f1": target,
        # the grid's finished trials' front, as a share of every report's: what `grid` reaches at 1x
        "grid_hypervolume_share": hypervolume(grid.pareto_points(), reference_point(grid))
        / hypervolume(grid.reachable_points(), reference_point(grid)),
        "grid_flops": grid.total("flops"),
        "grid_device_seconds": grid.total("device_seconds"),
        "seeds": cfg.search_seeds,
        "budget_fraction": cfg.search_budget,
        "searchers": searchers,
        "fastest_to_target": best,
        "fastest_to_target_fraction": reached.get(best) if best else None,
        "resource": cfg.search_resource,
    }


def _pct(x: float | None) -> str:
    return "not reached" if x is None else f"{100 * x:.0f}%"


def format_lines(out: dict[str, Any]) -> list[str]:
    """The search part's lines of the bench table."""
    width = max(10, *(len(n) + 1 for n in out["searchers"]))
    lines = [f"Search   {out['points']}-point grid over {', '.join(out['keys'])} ({out['source']}): best F1 "
             f"{out['grid_best_f1']:.2f} at {out['grid_best_params']}; target {out['target_f1']:.2f}; grid compute "
             f"{out['grid_flops']:.3g} FLOPs, {out['grid_device_seconds']:.0f} device-s; {out['seeds']} seeds each",
             f"  {'searcher':<{width}}{'to target (FLOPs): median':>27}{'q25-q75':>12}{'range':>12}{'reached':>9}"
             f"{'(device-s) median':>19}{'F1 @1/3':>9}{'HV @1/3':>9}{'HV @1':>7}{'trials':>8}{'stopped':>9}"]

    def rng(s: dict[str, Any], a: str, b: str) -> str:
        return f"{_pct(s[a])}-{_pct(s[b])}".replace("not reached", "inf")

    hv = out["searchers"][next(iter(out["searchers"]))]["hypervolume"]["compute_fraction"]
    i3, i1 = hv.index(1 / 3), hv.index(1.0)
    for name, s in out["searchers"].items():
        f, d = s["compute_to_target_fraction"]["flops"], s["compute_to_target_fraction"]["device_seconds"]
        f13 = s["best_f1_within_third"]["median"]
        lines.append(f"  {name:<{width}}{_pct(f['median']):>27}{rng(f, 'q25', 'q75'):>12}{rng(f, 'min', 'max'):>12}"
                     f"{str(f['reached']) + '/' + str(f['seeds']):>9}{_pct(d['median']):>19}"
                     f"{'-' if f13 is None else format(f13, '.2f'):>9}{s['hypervolume']['median'][i3]:>9.2f}"
                     f"{s['hypervolume']['median'][i1]:>7.2f}{s['trials']:>8g}{s['stopped_early']:>9g}")
    if out["fastest_to_target"]:
        lines.append(f"  fastest to the target: {out['fastest_to_target']} "
                     f"({_pct(out['fastest_to_target_fraction'])} of the grid's compute, median)")
    return lines
