"""A recorded grid study as a tabular benchmark for searchers (the search part of `xlt bench`).

The grid's results table (one row per evaluation, xlt.results) becomes, per grid point, the
sequence of reports Tune saw from that trial: one per evaluation event on the watched eval set,
then the final event (xlt.study.worker.event_metrics: every event is one Tune iteration). A
replayed search asks for a point, receives that point's reports one at a time (a scheduler may
stop it after any of them), and is charged the compute the rows record at the report where it
stopped: FLOPs (training + evaluation, so far) and device seconds. A point asked for again is
run, and charged, again: a study with a fixed seed would retrain it and get the same curve.

Everything here is pure (no searcher, no Optuna, no Ray): xlt.bench.search drives the searchers.
A trial "ends with" its last reported F1 (Tune's last-result scope): a finished trial's final
F1, a stopped one's F1 where it was stopped. A recorded trial without a final row failed: it is
charged what its last row records and ends with no F1.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from xlt.errors import XltError

UNITS = ("flops", "device_seconds")

Params = tuple[tuple[str, Any], ...]  # a grid point: (key, value) pairs in key order


@dataclass(frozen=True)
class Report:
    """What one Tune report of a recorded trial says, with the compute spent up to it."""

    f1: float
    flops: float  # flops_train + flops_eval so far
    flops_train: float  # the F1/FLOPs objective NSGA-II minimises (what the trial reports as flops_train)
    device_seconds: float

    def cost(self, unit: str) -> float:
        return self.flops if unit == "flops" else self.device_seconds


@dataclass(frozen=True)
class Point:
    params: Params
    reports: tuple[Report, ...]
    failed: bool = False  # no final row: the trial never finished

    @property
    def final_f1(self) -> float | None:
        return None if self.failed else self.reports[-1].f1


@dataclass(frozen=True)
class Grid:
    keys: tuple[str, ...]  # the searched keys (a key with one value in the grid is left out)
    values: dict[str, tuple[Any, ...]]  # each key's values, sorted
    points: dict[Params, Point]
    eval_set: str

    def point(self, params: dict[str, Any]) -> Point:
        return self.points[key(params, self.keys)]

    @property
    def best_f1(self) -> float:
        return max(p.final_f1 for p in self.points.values() if p.final_f1 is not None)

    def total(self, unit: str) -> float:
        """What running every point once costs: the grid study's own compute."""
        return sum(p.reports[-1].cost(unit) for p in self.points.values())

    def pareto_points(self) -> list[tuple[float, float]]:
        """(F1, training FLOPs) of every finished point: the grid's own F1/FLOPs trade-off."""
        return [(p.reports[-1].f1, p.reports[-1].flops_train) for p in self.points.values() if not p.failed]

    def reachable_points(self) -> list[tuple[float, float]]:
        """(F1, training FLOPs) of every recorded report: where a replayed trial can end (a
        scheduler may stop it at any of them), so no search finds a front beyond theirs."""
        return [(r.f1, r.flops_train) for p in self.points.values() for r in p.reports]


def key(params: dict[str, Any], keys: Sequence[str]) -> Params:
    return tuple((k, params[k]) for k in keys)


def grid_from_table(df, eval_set: str | None = None) -> Grid:
    """The grid of a results table (pandas, as xlt.results.read_table gives it). `eval_set`: the
    set whose F1 the search watches; default: the one set evaluated during training."""
    if df.empty:
        raise XltError("recorded grid: the results table has no rows")
    during = sorted(set(df.loc[df["stage"] != "final", "eval_set"]))
    if eval_set is None:
        if len(during) != 1:
            raise XltError(f"recorded grid: {len(during)} eval sets evaluated during training ({during}); name one")
        eval_set = during[0]
    rows = df[df["eval_set"] == eval_set]
    if rows.empty:
        raise XltError(f"recorded grid: no rows on eval set '{eval_set}' (have {sorted(set(df['eval_set']))})")
    by_trial: dict[str, tuple[dict[str, Any], list[Report], bool]] = {}
    for trial_id, t in rows.groupby("trial_id", sort=True):
        final = t["stage"] == "final"
        # Tune's order: the evaluation events as they came, then the final one
        t = t.assign(_final=final).sort_values(["_final", "time"], kind="stable")
        reports = [Report(float(r.f1), float(r.flops_train) + float(r.flops_eval or 0.0), float(r.flops_train),
                          float(r.device_seconds)) for r in t.itertuples()]
        params = {k: _choice(v) for k, v in json.loads(t["params"].iloc[0] or "{}").items()}
        by_trial[str(trial_id)] = (params, reports, not final.any())
    all_keys = sorted({k for params, _, _ in by_trial.values() for k in params})
    values = {k: tuple(sorted({params.get(k) for params, _, _ in by_trial.values()}, key=_order)) for k in all_keys}
    keys = tuple(k for k in all_keys if len(values[k]) > 1)
    if not keys:
        raise XltError(f"recorded grid: {len(by_trial)} trial(s) and no parameter that varies: nothing to search")
    points: dict[Params, Point] = {}
    for trial_id, (params, reports, failed) in by_trial.items():
        if set(params) != set(all_keys):
            raise XltError(f"recorded grid: trial {trial_id} sets {sorted(params)}, others {all_keys}")
        k = key(params, keys)
        if k in points:
            raise XltError(f"recorded grid: two trials at {dict(k)} (trial {trial_id}); one trial per point")
        points[k] = Point(k, tuple(reports), failed)
    n = math.prod(len(values[k]) for k in keys)
    if len(points) != n:
        raise XltError(f"recorded grid: {len(points)} trials for {n} combinations of {list(keys)}: not a full grid")
    if all(p.failed for p in points.values()):
        raise XltError("recorded grid: no trial finished")
    return Grid(keys, {k: values[k] for k in keys}, points, eval_set)


def _choice(v: Any) -> Any:
    """A parameter value as an Optuna choice (None, bool, int, float or str): a list or mapping
    (an override of a whole section, as `xlt trial` records it) as its JSON."""
    return json.dumps(v, sort_keys=True) if isinstance(v, list | dict) else v


def _order(v: Any) -> tuple[str, Any]:
    return (type(v).__name__, v)  # numbers in order, and mixed types without a TypeError


# ---------------------------------------------------------------- running a search on the grid


@dataclass(frozen=True)
class Ended:
    """One trial of a replayed search, as it ended."""

    params: Params
    iterations: int  # Tune iterations (reports) it ran
    stopped: bool  # stopped by the scheduler before its last report
    f1: float | None  # its last reported F1 (None: the recorded trial failed)
    flops_train: float
    cost: dict[str, float]  # what this trial was charged, per unit
    spent: dict[str, float]  # what the search had spent when it ended, this trial included


@dataclass
class Ledger:
    """A search's trials in the order they ended, and what it has spent."""

    trials: list[Ended] = field(default_factory=list)

    def spent(self, unit: str) -> float:
        return self.trials[-1].spent[unit] if self.trials else 0.0

    def run(self, point: Point, keep_going: Callable[[int, Report], bool] = lambda i, r: True) -> Ended:
        """Replay one trial: `keep_going(iteration, report)` after every report but the last (the
        scheduler's decision; iterations count from 1); charged at the report it ended on."""
        for i, report in enumerate(point.reports, start=1):
            if i == len(point.reports) or not keep_going(i, report):
                break
        stopped = i < len(point.reports)
        cost = {u: report.cost(u) for u in UNITS}
        ended = Ended(point.params, i, stopped, None if point.failed and not stopped else report.f1,
                      report.flops_train, cost, {u: self.spent(u) + cost[u] for u in UNITS})
        self.trials.append(ended)
        return ended


# ---------------------------------------------------------------- what a search achieved


def compute_to_target(trials: Iterable[Ended], target: float, unit: str) -> float | None:
    """What the search had spent when a trial first ended with F1 >= target (None: never)."""
    return next((t.spent[unit] for t in trials if t.f1 is not None and t.f1 >= target), None)


def best_f1_within(trials: Iterable[Ended], budget: float, unit: str) -> float | None:
    """The best F1 any trial ended with among those that ended within `budget`."""
    return max((t.f1 for t in trials if t.f1 is not None and t.spent[unit] <= budget), default=None)


def hypervolume(points: Iterable[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by (F1, cost) points, F1 maximised and cost minimised, bounded by the
    reference point (ref F1 below, ref cost to the right): the union of the rectangles
    [cost, ref cost] x [ref F1, F1], summed in horizontal layers from the cheapest point up."""
    ref_f1, ref_cost = ref
    area, best = 0.0, ref_f1
    for f1, cost in sorted(points, key=lambda p: (p[1], -p[0])):
        if f1 > best and cost < ref_cost:
            area += (ref_cost - cost) * (f1 - best)
            best = f1
    return area


def reference_point(grid: Grid) -> tuple[float, float]:
    """F1 0 and 1.1 x the costliest report's training FLOPs: every point counts, the costliest
    too (on the reference cost it would add nothing)."""
    return 0.0, 1.1 * max(c for _, c in grid.reachable_points())


def hypervolume_curve(trials: Sequence[Ended], grid: Grid, fractions: Sequence[float], unit: str) -> list[float]:
    """The hypervolume of the (F1, training FLOPs) points of the trials that ended within each
    fraction of the grid's compute, as a share of the hypervolume of every recorded report (the
    most any search could find: the grid's finished trials alone reach less where a stopped
    trial's earlier evaluation beats a finished one's F1 for its FLOPs)."""
    ref, total = reference_point(grid), grid.total(unit)
    whole = hypervolume(grid.reachable_points(), ref)
    if whole <= 0:  # every finished point at F1 0: nothing to share out
        return [0.0 for _ in fractions]
    return [hypervolume([(t.f1, t.flops_train) for t in trials if t.f1 is not None and t.spent[unit] <= x * total],
                        ref) / whole for x in fractions]


def spread(xs: Sequence[float | None]) -> dict[str, Any]:
    """Median, quartiles and range over seeds, a seed that never got there (None) counting as
    infinite; a statistic that lands on such a seed is None. `reached`: seeds that got there."""
    vals = sorted(math.inf if x is None else x for x in xs)

    def q(p: float) -> float | None:  # linear interpolation between order statistics
        pos = p * (len(vals) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        v = vals[lo] + (vals[hi] - vals[lo]) * (pos - lo) if vals[hi] != vals[lo] else vals[lo]
        return None if math.isinf(v) or math.isnan(v) else v

    return {"median": q(0.5), "q25": q(0.25), "q75": q(0.75), "min": q(0.0), "max": q(1.0),
            "reached": sum(x is not None for x in xs), "seeds": len(xs), "per_seed": list(xs)}
