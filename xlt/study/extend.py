"""A study file that only extends its study (`xlt run --resume`): more trials, none changed.

    grid (or nothing to search)  values added to a `search.space` choice list, seeds added to
                                 `search.seeds`, points added to `search.points`
                                 (`search.num_samples` is no part of a grid's trials): every
                                 trial of the old plan is still in the new one; the added trials
                                 are the new plan's trials that the old one lacks
    tpe, nsga2, random           `search.num_samples` raised, and points added to `search.points`
                                 (run first among the added samples)
    anything else that differs   a change, refused naming its first key (xlt.study.rundir.check):
                                 model, data, train keys, a removed grid value or seed, fewer
                                 samples, another search key or bound

Every other key must be as it was: the new spec, with its extended keys set back to the old
values, hashes as the old one. Ray-free: `xlt.study.rundir.check` decides before Ray starts, and
the runner runs the added trials as a new Tune experiment beside the old one (Tune restores an
experiment only with its own search space).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from xlt import derived
from xlt.spec import StudySpec


@dataclass(frozen=True)
class Extension:
    difference: str  # the first extended key, as StudySpec.first_difference words it
    points: list[dict[str, Any]]  # run first: a grid's added trials (every one), or the added search.points
    samples: int  # trials the extension runs, points included


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _minus(new: list[Any], old: list[Any]) -> list[Any] | None:
    """`new` without one copy of each of `old` (in `new`'s order); None if `old` has one it lacks."""
    left = Counter(_key(v) for v in old)
    out = []
    for v in new:
        if left[_key(v)] > 0:
            left[_key(v)] -= 1
        else:
            out.append(v)
    return None if +left else out


def _within(old: Any, new: Any) -> bool:
    """Every value of `old` (a list, or None) still in `new`."""
    if old is None or new is None:
        return old == new
    return _minus(list(new), list(old)) is not None


def decide(old: StudySpec, new: StudySpec) -> Extension | str:
    """`new` as an extension of `old` (whose hash differs), or the first key whose change is no
    extension, worded as StudySpec.first_difference words it."""
    o, n = old.search, new.search
    grid = derived.searches_grid(o) and derived.searches_grid(n)
    keep: dict[str, Any] = {}  # extended keys, set back to the old values to compare the rest
    if grid:
        keep["num_samples"] = o.num_samples
        if set(o.space) == set(n.space) and all(_within(o.space[k].choice, n.space[k].choice) for k in o.space):
            keep["space"] = o.space
        if _within(derived.repeat_seeds(o, old.train.seed), derived.repeat_seeds(n, new.train.seed)):
            keep["seeds"] = o.seeds
    elif n.num_samples >= o.num_samples:
        keep["num_samples"] = o.num_samples
    if _within(o.points, n.points):
        keep["points"] = o.points
    change = old.first_difference(new.model_copy(update={"search": n.model_copy(update=keep)}))
    if change:
        return change
    difference = old.first_difference(new) or "(nothing)"
    if grid:
        added = _minus(derived.grid_trials(n, new.train.seed), derived.grid_trials(o, old.train.seed))
        assert added is not None  # every key within its old values: so is their product
        return Extension(difference, added, len(added))
    points = _minus(list(n.points), list(o.points)) or []
    samples = n.num_samples - o.num_samples
    if len(points) > samples:  # points replace samples (Tune, Optuna): they would not all run
        return (f"search.points: {len(points)} point(s) added but search.num_samples grows by {samples}: "
                f"raise it by {len(points)} or more to run them")
    return Extension(difference, points, samples)
