"""The run directory's layout and the metric names a trial reports: one place for the strings
that cross the Ray boundary (workers write them, the driver, `xlt status` and dashboards read).

    spec.json        the resolved study spec (what --resume checks against)
    run.json         run id, spec hash, when it was created, where its trials run (trial_host);
                     `extended`: the study's extensions (xlt.study.extend), each a Tune experiment
    status.json      state (running | done | failed | interrupted), counts, per-trial state and timing
    rows.jsonl       result rows as the trials report them (rank 0 of each trial appends)
    results.parquet  the rows compacted (deduplicated), rewritten atomically while the study runs
    optuna.db        the Optuna study (tpe, nsga2)
    trials/<id>/     per trial: rank-<r>.json markers, final.json, the model
    artifacts/       shared between trials (e.g. the adaptation cache)
    ray/             Tune's experiment state and in-driver trials' checkpoints (ray/tune, and
                     ray/tune-2, ... for extensions), the Train runs (ray/train-<trial id>)
    DONE             written when the study (or `xlt trial`) has finished
"""

from __future__ import annotations

from pathlib import Path

SPEC, RUN, STATUS, DONE = "spec.json", "run.json", "status.json", "DONE"
ROWS_LOG = "rows.jsonl"
TABLE = "results.parquet"
TRIALS_DIR = "trials"
FINAL = "final.json"  # in a trial's directory: its Train run finished
STATE_FILE = "state.pt"  # in a Ray Train checkpoint: the pipeline's resume state
ARTIFACTS_DIR = "artifacts"
MODEL_DIR = "model"
MODEL_PATH = "model_path"  # a trial's last report to Tune: its MODEL_DIR, if saved (for trackers)
RANK_GLOB = "rank-*.json"


def trial_dir(run_dir: str | Path, trial_id: str) -> Path:
    return Path(run_dir) / TRIALS_DIR / trial_id


def rank_marker(trial: str | Path, rank: int) -> Path:
    """Where a rank of a trial says where it runs and how far it got."""
    return Path(trial) / f"rank-{rank}.json"


# ---------------------------------------------------------------- metric names

SCORES = ("f1", "exact_match")


def set_metric(score: str, eval_set: str) -> str:
    """The name of one eval set's score in what a trial reports (`f1/<set>`)."""
    return f"{score}/{eval_set}"


def parse_metric(name: str) -> tuple[str, str | None]:
    """(score, eval set) of a reported metric name; the eval set is None for a bare name (`f1`)."""
    score, sep, eval_set = name.partition("/")
    return score, (eval_set if sep else None)


def is_set_metric(name: str) -> bool:
    score, eval_set = parse_metric(name)
    return score in SCORES and eval_set is not None
