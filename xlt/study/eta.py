"""How long a running study has left: `xlt estimate`'s per-trial cost, corrected by the time the
finished trials actually took, scheduled over the trial slots the cluster runs at once.

    factor     measured / estimated seconds over the finished trials (1 before any finishes:
               the estimate as it stands, calibrated by `xlt calibrate` or not)
    running    estimate x factor - elapsed (never below 0: a trial past its estimate counts as
               finishing now, and the factor catches up when it ends)
    pending    estimate x factor each, given in plan order to whichever slot frees first
    ETA        when the last slot is done
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass


@dataclass(frozen=True)
class TrialClock:
    estimate: float  # seconds xlt estimate predicts for the trial (shared steps charged once)
    state: str  # pending | running | done | failed
    elapsed: float = 0.0  # seconds it has run (done: took)


@dataclass(frozen=True)
class Eta:
    seconds: float
    factor: float  # measured / estimated over the finished trials
    finished: int  # how many finished trials the factor rests on


def eta(trials: list[TrialClock], slots: int) -> Eta:
    done = [t for t in trials if t.state == "done" and t.estimate > 0 and t.elapsed > 0]
    factor = sum(t.elapsed for t in done) / sum(t.estimate for t in done) if done else 1.0
    running = [max(t.estimate * factor - t.elapsed, 0.0) for t in trials if t.state == "running"]
    free = [0.0] * max(slots - len(running), 0)
    finish = running + free or [0.0]
    heapq.heapify(finish)
    for t in trials:
        if t.state == "pending":
            heapq.heappush(finish, heapq.heappop(finish) + t.estimate * factor)
    return Eta(max(finish), factor, len(done))
