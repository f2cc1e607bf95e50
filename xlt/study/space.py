"""A study's `search` section -> what Ray Tune needs: parameter space, search algorithm,
scheduler, and the names of the metrics the objectives read.

    tpe    Optuna TPE, one objective              (OptunaSearch, storage DIR/optuna.db)
    nsga2  Optuna NSGA-II, one or more objectives (OptunaSearch with metric/mode lists)
    grid   every combination of `choice` values x `search.seeds` (as train.seed): Tune's
           BasicVariantGenerator (Optuna rejects grid_search)
    random Tune's BasicVariantGenerator sampling `num_samples` points
    (nothing to search, whatever the algorithm: one trial per seed, as a grid)

Trial parameters keep the spec's dotted keys (`train.lr`), so a trial is `trial_spec(spec, params)`.
Metric names (what the trial reports, see xlt.study.worker.event_metrics): `f1` and
`exact_match` of the primary eval set, `f1/<set>` and `exact_match/<set>` of every set,
`flops_train`, `device_seconds`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlt import derived, layout
from xlt.errors import XltError
from xlt.spec import Objective, Param, StudySpec

METRICS = ("f1", "exact_match", "flops_train", "device_seconds")


@dataclass
class Search:
    param_space: dict[str, Any]
    search_alg: Any
    scheduler: Any
    num_samples: int
    total: int  # trials the study will run
    metrics: list[str]  # one per objective
    modes: list[str]
    primary_set: str
    points: list[dict[str, Any]] = field(default_factory=list)


def primary_set(spec: StudySpec) -> str:
    """The eval set whose scores are reported as bare `f1`/`exact_match`: the first score
    objective's set; else, adapting, the first set in the trial's target language (what
    adaptation is for; English is step 3's, before any adaptation); else the validation set."""
    for obj in spec.search.objectives:
        if obj.metric in ("f1", "exact_match") and obj.eval_set:
            return obj.eval_set
    if spec.task == "adapt" and spec.adapt is not None:
        target = next((e.label for e in spec.data.eval if e.lang == spec.adapt.target_lang), None)
        if target is not None:
            return target
    return spec.data.validation_set.label


def metric_name(obj: Objective, spec: StudySpec) -> str:
    if obj.metric in ("f1", "exact_match") and obj.eval_set and obj.eval_set != primary_set(spec):
        return layout.set_metric(obj.metric, obj.eval_set)
    return obj.metric


def check(spec: StudySpec) -> None:
    """Errors Tune or Optuna would raise late (or never), as one line naming the key."""
    s = spec.search
    labels = [e.label for e in spec.data.eval]
    for i, obj in enumerate(s.objectives):
        if obj.metric not in METRICS:
            raise XltError(f"search.objectives[{i}].metric: '{obj.metric}' is not one of {', '.join(METRICS)}")
        if obj.eval_set is not None and obj.eval_set not in labels:
            raise XltError(f"search.objectives[{i}].eval_set: '{obj.eval_set}' is not an eval set (have {labels})")
    if s.algorithm == "tpe" and len(s.objectives) > 1:
        raise XltError(f"search.algorithm: tpe optimises one objective, got {len(s.objectives)}: use nsga2")
    if s.algorithm == "grid":
        for key, p in s.space.items():
            if p.choice is None:
                raise XltError(f"search.space.{key}: grid search needs a list of values")
    for i, point in enumerate(s.points):
        unknown = sorted(set(point) - set(s.space))
        if unknown:
            raise XltError(f"search.points[{i}]: '{unknown[0]}' is not a key of search.space")
        if s.algorithm in ("tpe", "nsga2") and set(point) != set(s.space):
            missing = sorted(set(s.space) - set(point))
            raise XltError(f"search.points[{i}]: Optuna needs every search.space key, missing '{missing[0]}'")


def tune_domain(p: Param):
    from ray import tune

    if p.range is not None:
        return tune.uniform(*p.range)
    if p.log_range is not None:
        return tune.loguniform(*p.log_range)
    if p.int_range is not None:
        return tune.randint(p.int_range[0], p.int_range[1] + 1)  # the spec's bounds are inclusive
    return tune.choice(list(p.choice))  # type: ignore[arg-type]


def optuna_distribution(p: Param):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if p.range is not None:
        return FloatDistribution(*p.range)
    if p.log_range is not None:
        return FloatDistribution(*p.log_range, log=True)
    if p.int_range is not None:
        return IntDistribution(*p.int_range)
    return CategoricalDistribution(list(p.choice))  # type: ignore[arg-type]


def asha_scheduler(metric: str, mode: str, grace: int, reduction: float):
    """The study's ASHA (search.asha): Tune's AsyncHyperBandScheduler on the evaluation-event axis
    (each Train report is one Tune iteration), rungs at grace x reduction^k iterations."""
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration", metric=metric, mode=mode, grace_period=grace,
                         reduction_factor=reduction, max_t=10_000)


def optuna_sampler(algorithm: str, seed: int):
    """The Optuna sampler of search.algorithm tpe or nsga2, with Optuna's default settings."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per created study is noise here
    if algorithm == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if algorithm == "nsga2":
        return _picklable(optuna.samplers.NSGAIISampler(seed=seed))
    raise ValueError(f"no Optuna sampler for search.algorithm {algorithm!r}")


def _picklable(sampler):
    """Ray Tune pickles the search algorithm with the Tuner's state (for resume), and Optuna 5.1's
    genetic samplers (BaseGASampler) hold a threading.Lock, which cannot be pickled. The lock only
    guards the sampler's in-process generation cache, so a copy gets a fresh one."""
    import copyreg

    if hasattr(sampler, "_thread_lock"):
        copyreg.pickle(type(sampler), _reduce_without_lock)
    return sampler


def _reduce_without_lock(sampler):
    return _with_new_lock, (type(sampler), {k: v for k, v in vars(sampler).items() if k != "_thread_lock"})


def _with_new_lock(cls, state):
    import threading

    sampler = cls.__new__(cls)
    vars(sampler).update(state, _thread_lock=threading.Lock())
    return sampler


def build(spec: StudySpec, run_dir: Path, part: dict[str, Any] | None = None, index: int = 0,
          searcher: bool = True) -> Search:
    """The study's search. `part`: an extension of the study (xlt.study.rundir.experiments: its
    `points` and `samples`), the run's Tune experiment `index`: only its trials (`total` stays the
    study's). `searcher` False: no search algorithm, for what describes the study (an Optuna
    searcher enqueues its points in optuna.db as it is made, and a restored one would run them again)."""
    check(spec)
    s = spec.search
    metrics = [metric_name(o, spec) for o in s.objectives]
    modes: list[str] = [o.mode for o in s.objectives]
    points = [dict(p) for p in (s.points if part is None else part["points"])]
    # an extension's random draws are others than the study's first experiment's
    seed = derived.repeat_seeds(s, spec.train.seed)[0] + index
    scheduler = asha_scheduler(metrics[0], modes[0], s.asha_grace, s.asha_reduction) if s.asha else None
    if s.algorithm in ("tpe", "nsga2") and s.space:
        optuna_search = None
        if searcher:
            import optuna
            from ray.tune.search.optuna import OptunaSearch

            # the same Optuna study (load_if_exists): an extension samples knowing every trial so far
            multi = s.algorithm == "nsga2"
            optuna_search = OptunaSearch(
                space={k: optuna_distribution(p) for k, p in s.space.items()},
                metric=metrics if multi else metrics[0], mode=modes if multi else modes[0],
                points_to_evaluate=points or None, sampler=optuna_sampler(s.algorithm, seed), study_name=spec.name,
                storage=optuna.storages.RDBStorage(f"sqlite:///{run_dir / 'optuna.db'}"),
            )
        samples = s.num_samples if part is None else part["samples"]
        return Search({}, optuna_search, scheduler, samples, s.num_samples, metrics, modes, primary_set(spec), points)
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if derived.searches_grid(s):  # a grid, or nothing to search: once per seed, whatever the algorithm
        space: dict[str, Any] = {k: tune.grid_search(list(p.choice)) for k, p in s.space.items()}  # type: ignore[arg-type]
        if "train.seed" not in space:
            space["train.seed"] = tune.grid_search(derived.repeat_seeds(s, spec.train.seed))
        # each point replaces one sample, and grid keys a point leaves open expand under it; an
        # extension's points are its trials, every key set
        total = len(derived.grid_trials(s, spec.train.seed))
        num_samples = 1 + len(points) if part is None else len(points)
    else:  # random sampling of a space
        space = {k: tune_domain(p) for k, p in s.space.items()}
        total = s.num_samples
        num_samples = s.num_samples if part is None else part["samples"]
    # Tune applies max_concurrent_trials only to the generator it builds itself, not to one passed in
    alg = BasicVariantGenerator(points_to_evaluate=points or None, random_state=seed,
                                max_concurrent=spec.resources.max_concurrent_trials) if searcher else None
    return Search(space, alg, scheduler, num_samples, total, metrics, modes, primary_set(spec), points)
