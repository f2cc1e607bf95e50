"""What one trial reserves on a Ray cluster: the one source for `xlt run` (the Tune trial's
resources, the up-front check, how many trials fit at once, the ETA's slots) and `xlt estimate`.

A trial with one CPU worker runs its pipeline inside its Tune trial process (the trial driver,
xlt.study.driver; host "driver"): it reserves just that worker's CPUs. Any other trial (several
workers, or a GPU) starts a Ray Train run from its driver (host "train"): 1 CPU for the driver,
held while it waits on the run, plus every worker's CPUs and GPUs. XLT_RAY_TRAIN=1 puts every
trial on Ray Train (how xlt ran before; `xlt bench --parts orchestration` compares the two).
No Ray and no torch here: `xlt estimate` imports it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from xlt.spec import Resources

Bundle = dict[str, float]
DRIVER_CPUS = 1.0  # a Train trial's driver process
HOSTS = ("driver", "train")


def default_host(r: Resources, driver_resource: tuple[str, float] | None = None) -> str:
    """Where a new run's trials run. In the driver for one CPU worker: Train would only add a
    controller and a worker process (measured ~20 s a trial here, README) to a process that already
    exists; DDP and GPU placement are what Train is for. With a driver resource on Train too:
    it keeps drivers on some nodes (not on spot ones), and the workers should go anywhere."""
    if driver_resource or os.environ.get("XLT_RAY_TRAIN", "").strip() not in ("", "0"):
        return "train"
    return "driver" if r.workers == 1 and not r.gpus_per_worker else "train"


@dataclass(frozen=True)
class TrialResources:
    r: Resources
    host: str  # "driver" | "train"
    driver_resource: tuple[str, float] | None = None  # keeps drivers on some nodes (--driver-resource)

    @classmethod
    def of(cls, r: Resources, recorded: str | None = None,
           driver_resource: tuple[str, float] | None = None) -> TrialResources:
        """A run's trials are hosted where its run.json says (`recorded`: its checkpoints are that
        host's), unless the resources no longer allow it (a --force resume to more workers);
        a new run's where default_host says."""
        default = default_host(r, driver_resource)
        if recorded is not None:  # a run started by an xlt before hosts were recorded ran on Train
            default = "driver" if recorded == "driver" and default == "driver" else "train"
        return cls(r, default, driver_resource)

    @property
    def in_driver(self) -> bool:
        return self.host == "driver"

    def worker(self) -> Bundle:
        r = self.r
        return {"CPU": float(r.cpus_per_worker), **({"GPU": float(r.gpus_per_worker)} if r.gpus_per_worker else {})}

    def bundles(self) -> list[tuple[str, Bundle]]:
        """(what, bundle) per process of one trial: the trial driver first (its bundle is the Tune
        trial's resources), then the Train workers, if any."""
        extra = {self.driver_resource[0]: self.driver_resource[1]} if self.driver_resource else {}
        if self.in_driver:
            return [("trial driver (and its worker)", {**self.worker(), **extra})]
        return [("trial driver", {"CPU": DRIVER_CPUS, **extra})] + [("Train worker", self.worker())] * self.r.workers

    def need(self) -> Bundle:
        need: Bundle = {}
        for _, bundle in self.bundles():
            for k, v in bundle.items():
                need[k] = need.get(k, 0.0) + v
        return need

    def describe(self) -> str:
        """One trial's reservation, in words."""
        r = self.r
        if self.in_driver:
            return f"1 trial = {r.cpus_per_worker:g} CPU (its one worker runs in the trial driver)"
        return (f"1 trial = {DRIVER_CPUS:g} CPU for its driver + {r.workers} worker(s) x {r.cpus_per_worker:g} CPU"
                + (f" + {r.gpus_per_worker:g} GPU" if r.gpus_per_worker else ""))

    def fit(self, total: Bundle) -> int:
        """How many trials `total` holds at once (by the sums; placement on nodes aside)."""
        return int(min(math.floor(total.get(k, 0) / v + 1e-9) for k, v in self.need().items()))

    def slots(self, total: Bundle) -> int:
        """Trials that run at once: what fits, up to resources.max_concurrent_trials (at least 1)."""
        return max(1, min(self.r.max_concurrent_trials, self.fit(total)))
