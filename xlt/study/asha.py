"""Ray Tune's ASHA decisions outside a Tune run: the study's own scheduler (space.asha_scheduler)
fed results one at a time, as Tune's controller feeds it, so that the search benchmark
(xlt.bench.search) replays recorded curves under the same rung rule `search.asha` runs with.

Tune's controller calls `on_trial_add` when a trial starts, `on_trial_result` for every report
(acting on CONTINUE / STOP), and `on_trial_complete` with the last result when the trial ends,
finished or stopped; the scheduler reads only the trial's id (and no controller state) from them.
"""

from __future__ import annotations

from dataclasses import dataclass

from xlt.study.space import asha_scheduler


@dataclass(frozen=True)
class _Trial:
    trial_id: str  # all AsyncHyperBandScheduler reads of a Trial


class Asha:
    """One study's ASHA: `start(trial_id)`, then `keep_going(trial_id, iteration, value)` after
    each report (False: Tune would stop the trial here), `end(trial_id, iteration, value)`."""

    def __init__(self, metric: str = "f1", mode: str = "max", grace: int = 1, reduction: float = 2.0):
        from ray.tune.schedulers import TrialScheduler

        self.metric, self._stop = metric, TrialScheduler.STOP
        self.scheduler = asha_scheduler(metric, mode, grace, reduction)

    def _result(self, iteration: int, value: float) -> dict[str, float]:
        return {"training_iteration": iteration, self.metric: value}

    def start(self, trial_id: str) -> None:
        self.scheduler.on_trial_add(None, _Trial(trial_id))

    def keep_going(self, trial_id: str, iteration: int, value: float) -> bool:
        decision = self.scheduler.on_trial_result(None, _Trial(trial_id), self._result(iteration, value))
        return decision != self._stop

    def end(self, trial_id: str, iteration: int, value: float) -> None:
        self.scheduler.on_trial_complete(None, _Trial(trial_id), self._result(iteration, value))
