"""Budget-aware search (`search.budget`): the study starts no trial that could take it over budget.

    spent      what finished (and failed) trials measured: training FLOPs (`flops_train` of their
               last result) or device-hours (`device_seconds` / 3600)
    committed  the running trials' estimated cost (xlt estimate's, for their params)
    candidate  the estimated cost of the trial about to start
    factor     measured / estimated over the finished trials (1 before any finishes): the estimates
               of running and candidate trials are corrected by it, as the ETA's are
    rule       start the candidate only if spent + factor x (committed + candidate) <= budget;
               otherwise start nothing more (running trials finish) and say why

Costs are counted as xlt estimate counts them per trial: FLOPs with cached steps charged to every
trial that uses them (as the rows charge them), device-hours for what the trial computes itself.

`Ledger` is pure; `BudgetedSearch` wraps the study's Tune search algorithm (any SearchAlgorithm:
Tune's BasicVariantGenerator, or a Searcher in SearchGenerator) and asks the ledger before
handing Tune a new trial; returning no trial and marking the search finished is how a Tune
search algorithm ends a study early.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune.search import SearchAlgorithm

from xlt.errors import XltError
from xlt.spec import StudySpec

LEDGER_FILE = "xlt-budget.json"
UNIT_NAMES = {"flops": "training FLOPs", "device_hours": "device-hours"}


@dataclass(frozen=True)
class Decision:
    admit: bool
    trial_id: str
    candidate: float  # corrected estimate of the trial asked about
    spent: float
    committed: float  # corrected estimates of the running trials
    limit: float
    unit: str

    def message(self) -> str:
        unit = UNIT_NAMES[self.unit]
        return (f"budget: not starting {self.trial_id}: spent {self.spent:.3g} + running {self.committed:.3g}"
                f" + this trial {self.candidate:.3g} (estimated) = {self.spent + self.committed + self.candidate:.3g}"
                f" > budget {self.limit:.3g} {unit}; no new trials (stopped by budget)")


@dataclass
class Ledger:
    unit: str  # flops | device_hours
    limit: float
    estimates: dict[str, float] = field(default_factory=dict)  # every started trial's estimate
    running: set[str] = field(default_factory=set)
    spent: dict[str, float] = field(default_factory=dict)  # finished trials: what they measured
    stopped: Decision | None = None

    def factor(self) -> float:
        done = [t for t in self.spent if self.estimates.get(t, 0) > 0 and self.spent[t] > 0]
        return sum(self.spent[t] for t in done) / sum(self.estimates[t] for t in done) if done else 1.0

    def decide(self, trial_id: str, estimate: float) -> Decision:
        f = self.factor()
        spent = sum(self.spent.values())
        committed = f * sum(self.estimates[t] for t in self.running)
        d = Decision(spent + committed + f * estimate <= self.limit * (1 + 1e-12), trial_id, f * estimate, spent,
                     committed, self.limit, self.unit)
        if d.admit:
            self.estimates[trial_id] = estimate
            self.running.add(trial_id)
        else:
            self.stopped = d
        return d

    def finish(self, trial_id: str, measured: float | None) -> None:
        """A trial ended (done or failed): its measured cost, else its estimate, is spent."""
        if trial_id not in self.estimates:
            return  # not one this ledger started (a restored trial)
        self.running.discard(trial_id)
        ok = measured is not None and not math.isnan(measured)
        self.spent[trial_id] = float(measured) if ok else self.estimates[trial_id]  # type: ignore[arg-type]

    def state(self) -> dict[str, Any]:
        return {"estimates": self.estimates, "running": sorted(self.running), "spent": self.spent,
                "stopped": None if self.stopped is None else vars(self.stopped)}

    def load(self, saved: dict[str, Any]) -> None:
        self.estimates, self.running, self.spent = dict(saved["estimates"]), set(saved["running"]), dict(saved["spent"])
        self.stopped = None if saved.get("stopped") is None else Decision(**saved["stopped"])

    def carry(self, saved: dict[str, Any]) -> None:
        """Count what an earlier Tune experiment of the run spent (an extension's ledger starts
        with every trial before it): its saved state, a trial still running there at its estimate."""
        self.estimates.update(saved["estimates"])
        self.spent.update(saved["spent"])
        for t in saved["running"]:
            self.spent.setdefault(t, saved["estimates"][t])

    def snapshot(self) -> dict[str, Any]:
        f = self.factor()
        return {"unit": self.unit, "limit": self.limit, "spent": sum(self.spent.values()),
                "committed": f * sum(self.estimates[t] for t in self.running), "factor": f,
                "stopped": self.stopped is not None,
                "message": self.stopped.message() if self.stopped else None}


def measured(result: dict[str, Any] | None, unit: str) -> float | None:
    """A trial's cost in the budget's unit from its last Tune result."""
    if not result:
        return None
    if unit == "flops":
        v = result.get("flops_train")
        return float(v) if isinstance(v, int | float) else None
    v = result.get("device_seconds")
    return float(v) / 3600 if isinstance(v, int | float) else None


class Price:
    """params -> a trial's estimated cost in the budget's unit, from xlt estimate (picklable: Tune
    saves its search algorithm with the experiment). Params the plan does not list get the mean."""

    def __init__(self, spec: StudySpec, unit: str):
        from xlt.study.estimate import estimate

        try:
            est = estimate(spec)
        except XltError as e:
            raise XltError(f"search.budget: the study cannot be priced, so a budget cannot be kept ({e})") from None
        key = "flops_train" if unit == "flops" else "paid_device_hours"
        self.by = {_key(r["params"]): float(r[key]) for r in est["trials"]}
        self.mean = sum(self.by.values()) / len(self.by) if self.by else 0.0

    def __call__(self, params: dict[str, Any]) -> float:
        return self.by.get(_key(params), self.mean)


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


class BudgetedSearch(SearchAlgorithm):
    """A Tune search algorithm that hands out the wrapped one's trials while the ledger admits them."""

    def __init__(self, inner: SearchAlgorithm, ledger: Ledger, price: Price, progress: Any = None):
        self.inner, self.ledger, self.price, self.progress = inner, ledger, price, progress

    @property
    def metric(self):
        return self.inner.metric

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    @property
    def total_samples(self):
        return self.inner.total_samples

    def add_configurations(self, experiments):
        return self.inner.add_configurations(experiments)

    def next_trial(self):
        if self._finished:
            return None
        trial = self.inner.next_trial()
        if trial is None:
            return None
        d = self.ledger.decide(trial.trial_id, self.price(dict(trial.config)))
        if not d.admit:
            # the wrapped algorithm made this trial; it never runs (an Optuna searcher records it failed)
            self.inner.on_trial_complete(trial.trial_id, None, error=True)
            self.set_finished()
            if self.progress is not None:
                self.progress.budget_stopped(d)
            return None
        if self.progress is not None:
            self.progress.budget_update(self.ledger.snapshot())
        return trial

    def on_trial_result(self, trial_id: str, result: dict):
        self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        self.inner.on_trial_complete(trial_id, result=result, error=error)
        last = result
        if last is None and self.progress is not None:  # an error: what the trial last reported
            last = (self.progress.status["trials"].get(trial_id) or {}).get("last")
        self.ledger.finish(trial_id, measured(last, self.ledger.unit))
        if self.progress is not None:
            self.progress.budget_update(self.ledger.snapshot())

    def is_finished(self) -> bool:
        return self._finished or self.inner.is_finished()

    def set_finished(self):
        self._finished = True
        self.inner.set_finished()

    # the ledger is saved beside the wrapped algorithm's state in Tune's experiment checkpoint, so a
    # resumed study keeps what it spent (and a study stopped by its budget stays stopped)
    def has_checkpoint(self, dirpath: str) -> bool:
        return self.inner.has_checkpoint(dirpath) or (Path(dirpath) / LEDGER_FILE).exists()

    def save_to_dir(self, dirpath: str, **kwargs):
        self.inner.save_to_dir(dirpath, **kwargs)
        (Path(dirpath) / LEDGER_FILE).write_text(json.dumps(self.ledger.state()))

    def restore_from_dir(self, dirpath: str):
        if self.inner.has_checkpoint(dirpath):
            self.inner.restore_from_dir(dirpath)
        saved = Path(dirpath) / LEDGER_FILE
        if saved.exists():
            self.ledger.load(json.loads(saved.read_text()))
            if self.ledger.stopped is not None:
                self._finished = True
            if self.progress is not None:
                self.progress.budget_update(self.ledger.snapshot())
