"""Pure views over the results table: one plain DataFrame per dashboard view.

Every function takes the long results table (``xlt.results.read_table``) and returns numbers
and raw strings; nothing here draws or escapes. An empty frame means "this study has no data
for the view", and the page leaves the view out with a note instead of drawing it empty.

Curves read the evaluation events (every stage but ``final``); tables, Pareto fronts, learning
curves, depth sweeps and verdicts read the ``is_final`` rows (the point each trial kept).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from xlt import compute
from xlt.spec import Expected

# Trial-level columns, in the order they are named in hover text and row labels.
KEYS = ("model", "method", "depth", "lr", "train_mode", "target_lang", "target_count", "with_english", "seed")
# The first of these that varies across trials colours the curves: method and depth are what the
# adaptation paper compares, lr what a QA search moves, target_count what a learning curve sweeps.
COLOUR_PRIORITY = ("method", "depth", "lr", "target_count", "with_english", "train_mode", "model", "target_lang",
                   "seed")
METRICS = ("f1", "exact_match")
# Adaptation methods whose step 2 runs through the whole model: the depth column means nothing for them.
FULL_MODEL_METHODS = ("base_large",)
METRIC_NAMES = {"f1": "F1", "exact_match": "EM"}


def fmt(value: Any) -> str:
    """A parameter value as people read it: integers without '.0' (pandas turns int columns with
    nulls into floats), floats to 3 significant digits, missing as '-'."""
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.3g}"
    return str(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def curve_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["stage"] != "final"]


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["is_final"].eq(True)]


def study_task(df: pd.DataFrame) -> str:
    tasks = df["task"].dropna().unique()
    return str(tasks[0]) if len(tasks) else "qa"


def _params(text: Any) -> dict[str, Any]:
    if not isinstance(text, str) or not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def trials(df: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: its key columns, searched parameters, a label for hover text and tables,
    and the value of the colour parameter (``colour``, a label; ``colour_key``, for ordering)."""
    first = df.sort_values(["trial_id", "event"]).groupby("trial_id", sort=True).first()
    varying = [k for k in KEYS if first[k].nunique(dropna=True) > 1]
    colour_by = next((k for k in COLOUR_PRIORITY if k in varying), None)
    rows = []
    for trial_id, row in first.iterrows():
        params = _params(row["params"])
        parts = [f"{k}={fmt(row[k])}" for k in varying]
        parts += [f"{k}={fmt(v)}" for k, v in params.items() if k.split(".")[-1] not in varying]
        describe = ", ".join(parts)
        rows.append({
            "trial_id": trial_id,
            **{k: row[k] for k in KEYS},
            "params": params,
            "describe": describe,
            "label": f"{trial_id} ({describe})" if describe else str(trial_id),
            "colour_by": colour_by or "trial",
            "colour": f"{colour_by}={fmt(row[colour_by])}" if colour_by else str(trial_id),
            "colour_key": _sort_key(row[colour_by] if colour_by else trial_id),
        })
    return pd.DataFrame(rows, columns=["trial_id", *KEYS, "params", "describe", "label", "colour_by", "colour",
                                       "colour_key"])


def _sort_key(value: Any) -> tuple[int, float, str]:
    """Numbers in numeric order before strings; missing last."""
    if hasattr(value, "item"):
        value = value.item()
    if _missing(value):
        return (2, 0.0, "")
    if isinstance(value, bool | int | float):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _with_trials(frame: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    info = trials(df)[["trial_id", "label", "describe", "colour_by", "colour", "colour_key"]]
    return frame.merge(info, on="trial_id", how="left")


# ---------------------------------------------------------------- compute to quality


def compute_points(df: pd.DataFrame) -> pd.DataFrame:
    """Every evaluation event of every trial with its compute so far.

    For adaptation studies the x axis is step-2 compute (``flops_stage`` of the step-2 rows): the
    paper's question is what learning new embeddings costs, and steps 1 and 3 are shared or cached.
    """
    curves = curve_rows(df)
    step2 = curves[curves["stage"] == "step2"]
    if study_task(df) == "adapt" and len(step2):
        rows, flops_col, kind = step2, "flops_stage", "step-2 training FLOPs"
    else:
        rows, flops_col, kind = curves, "flops_train", "training FLOPs"
    out = pd.DataFrame({
        "trial_id": rows["trial_id"],
        "eval_set": rows["eval_set"],
        "eval_lang": rows["eval_lang"],
        "stage": rows["stage"],
        "step": rows["step"],
        "event": rows["event"],
        "flops": rows[flops_col].astype(float),
        "hours": rows["device_seconds"].astype(float) / 3600.0,
        "f1": rows["f1"].astype(float),
        "exact_match": rows["exact_match"].astype(float),
    })
    out = out[out["flops"].notna() | out["hours"].notna()]
    if out.empty:
        return out.assign(flops_kind=pd.Series(dtype=str))
    out = _with_trials(out, df)
    out["flops_kind"] = kind
    return out.sort_values(["trial_id", "eval_set", "event"], kind="stable").reset_index(drop=True)


def _positive(points: pd.DataFrame, x: str, metric: str) -> pd.DataFrame:
    # Log axes cannot show zero compute; an evaluation before any training has no place on them.
    return points[(points[x] > 0) & points[metric].notna()]


def frontier_points(points: pd.DataFrame, x: str = "flops") -> pd.DataFrame:
    """The study frontier per eval set and metric: the best quality reached for at most x compute."""
    rows = []
    for metric in METRICS:
        for eval_set, group in _positive(points, x, metric).groupby("eval_set", sort=True):
            for fx, fy in compute.frontier(list(zip(group[x], group[metric], strict=True))):
                rows.append({"metric": metric, "eval_set": eval_set, "x": fx, "y": fy})
    return pd.DataFrame(rows, columns=["metric", "eval_set", "x", "y"])


def near_max_points(points: pd.DataFrame, x: str = "flops", tau: float = 0.95) -> pd.DataFrame:
    """Per trial, eval set and metric: the first point reaching tau x the curve's maximum."""
    rows = []
    for (trial_id, eval_set), group in points[points[x] > 0].groupby(["trial_id", "eval_set"], sort=True):
        first = group.iloc[0]
        for metric in METRICS:
            ok = group[metric].notna()
            hit = compute.time_to_near_max(list(group[x][ok]), list(group[metric][ok]), tau)
            if hit is not None:
                rows.append({"metric": metric, "trial_id": trial_id, "eval_set": eval_set, "x": hit[0], "y": hit[1],
                             "label": first["label"], "colour": first["colour"], "colour_key": first["colour_key"]})
    return pd.DataFrame(rows, columns=["metric", "trial_id", "eval_set", "x", "y", "label", "colour", "colour_key"])


def trial_compute(df: pd.DataFrame) -> pd.DataFrame:
    """Each trial's total compute: training FLOPs (step-2 FLOPs for adaptation) and device-hours."""
    by_trial = df.groupby("trial_id", sort=True)
    hours = by_trial["device_seconds"].max().astype(float) / 3600.0
    step2 = df[df["stage"] == "step2"]
    if study_task(df) == "adapt" and len(step2):
        flops, kind = step2.groupby("trial_id")["flops_stage"].max().astype(float), "step-2 training FLOPs"
    else:
        flops, kind = by_trial["flops_train"].max().astype(float), "training FLOPs"
    out = pd.DataFrame({"flops": flops, "hours": hours}).rename_axis("trial_id").reset_index()
    out["flops_kind"] = kind
    return out


def dominated(xs: Sequence[float], ys: Sequence[float]) -> list[bool]:
    """For points to minimise in x (compute) and maximise in y (quality): whether another point is
    at least as good in both and strictly better in one."""
    pts = list(zip(xs, ys, strict=True))
    return [
        any(bx <= ax and by >= ay and (bx < ax or by > ay) for bx, by in pts)
        for ax, ay in pts
    ]


def pareto(df: pd.DataFrame) -> pd.DataFrame:
    """Trials' final points per eval set, quality vs compute, with the dominated ones marked."""
    final = final_rows(df)
    if final["trial_id"].nunique() < 2:
        return pd.DataFrame(columns=["trial_id", "eval_set", "flops", "hours", "f1", "exact_match", "dominated"])
    final = final.sort_values("time", kind="stable").drop_duplicates(["trial_id", "eval_set"], keep="last")
    frame = final[["trial_id", "eval_set", "f1", "exact_match"]].merge(trial_compute(df), on="trial_id")
    frame = frame[(frame["flops"] > 0) & frame["f1"].notna()].copy()
    frame["dominated"] = False
    for _, idx in frame.groupby("eval_set").groups.items():
        part = frame.loc[idx]
        frame.loc[idx, "dominated"] = dominated(list(part["flops"]), list(part["f1"]))
    return _with_trials(frame, df).sort_values(["eval_set", "flops"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------- learning curves and depth


def _target_rows(final: pd.DataFrame) -> pd.DataFrame:
    """Final rows on the target language: eval_lang == the trial's target_lang, else every
    non-English eval set (a study with no target language set still has a transfer language)."""
    on_target = final[final["eval_lang"].notna() & (final["eval_lang"] == final["target_lang"])]
    if len(on_target):
        return on_target
    return final[final["eval_lang"].notna() & (final["eval_lang"] != "en")]


def _truthy(value: Any) -> bool:
    return not _missing(value) and bool(value)


def _series_name(row: pd.Series, prefix_keys: Iterable[str]) -> str:
    base = "+English" if _truthy(row["with_english"]) else "target only"
    prefix = ", ".join(fmt(row[k]) for k in prefix_keys)
    return f"{prefix}: {base}" if prefix else base


def learning_points(df: pd.DataFrame) -> pd.DataFrame:
    """Every trial's final target-language score with its series (target only, +English), target
    count and seed: what learning curves aggregate and extrapolation fits. Empty unless a QA study
    varies the target count."""
    final = final_rows(df)
    final = final[final["target_count"].notna()]
    cols = ["eval_set", "series", "with_english", "target_count", "seed", "trial_id", "f1", "exact_match"]
    if study_task(df) != "qa" or final["target_count"].nunique() < 2:
        return pd.DataFrame(columns=cols)
    rows = _target_rows(final).copy()
    if rows.empty:
        return pd.DataFrame(columns=cols)
    prefix = [k for k in ("model", "train_mode") if rows[k].nunique(dropna=True) > 1]
    rows["with_english"] = rows["with_english"].eq(True)
    rows["series"] = [_series_name(r, prefix) for _, r in rows.iterrows()]
    rows["target_count"] = rows["target_count"].astype(int)
    return rows[cols].reset_index(drop=True)


def _learning_agg(df: pd.DataFrame) -> pd.DataFrame:
    rows = learning_points(df)
    if rows.empty:
        return pd.DataFrame()
    agg = rows.groupby(["eval_set", "series", "with_english", "target_count"], sort=True).agg(
        f1_mean=("f1", "mean"), f1_std=("f1", "std"), f1_min=("f1", "min"), f1_max=("f1", "max"),
        em_mean=("exact_match", "mean"), n=("f1", "size"), seeds=("seed", "nunique"),
    )
    return agg.reset_index()


def learning_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Final target-language F1 vs target-language training questions, per series (target only,
    +English), mean and spread over seeds. Count 0 is left to ``learning_bounds``."""
    agg = _learning_agg(df)
    if agg.empty:
        return agg
    return agg[agg["target_count"] > 0].reset_index(drop=True)


def learning_bounds(df: pd.DataFrame) -> pd.DataFrame:
    """Per eval set: the lower bound (English only: target_count 0) and the upper bound (all
    target data: the largest target_count, target-only training when it was run)."""
    agg = _learning_agg(df)
    rows = []
    if agg.empty:
        return pd.DataFrame(columns=["eval_set", "bound", "target_count", "f1"])
    for eval_set, group in agg.groupby("eval_set", sort=True):
        zero = group[group["target_count"] == 0]
        if len(zero):
            rows.append({"eval_set": eval_set, "bound": "lower", "target_count": 0,
                         "f1": float((zero["f1_mean"] * zero["n"]).sum() / zero["n"].sum())})
        top = group[group["target_count"] == group["target_count"].max()]
        if top["target_count"].iloc[0] > 0:
            alone = top[~top["with_english"]]
            pick = alone if len(alone) else top
            rows.append({"eval_set": eval_set, "bound": "upper", "target_count": int(pick["target_count"].iloc[0]),
                         "f1": float((pick["f1_mean"] * pick["n"]).sum() / pick["n"].sum())})
    return pd.DataFrame(rows, columns=["eval_set", "bound", "target_count", "f1"])


def depth_sweep(df: pd.DataFrame) -> pd.DataFrame:
    """Final target-language F1 and training compute per method, depth and eval set (mean over
    seeds). Full-model methods (BaseLarge) have no mini-model depth: they come back once per eval
    set with ``reference`` True and depth NaN, the line the mini-models are measured against."""
    final = final_rows(df)
    full = final["method"].isin(FULL_MODEL_METHODS)
    swept = final[~full & final["depth"].notna()]
    if swept["depth"].nunique() < 2:
        return pd.DataFrame()
    rows = _target_rows(pd.concat([swept, final[full]]))
    if rows.empty:
        rows = pd.concat([swept, final[full]])
    rows = rows.merge(trial_compute(df), on="trial_id", how="left")
    rows["method"] = rows["method"].fillna("-")
    rows["reference"] = rows["method"].isin(FULL_MODEL_METHODS)
    rows["depth"] = rows["depth"].where(~rows["reference"])
    out = rows.groupby(["method", "reference", "eval_set", "eval_lang", "depth"], sort=True, dropna=False).agg(
        f1_mean=("f1", "mean"), f1_std=("f1", "std"), em_mean=("exact_match", "mean"), n=("f1", "size"),
        flops_mean=("flops", "mean"),
    ).reset_index()
    out["flops_kind"] = rows["flops_kind"].iloc[0]
    return out


# ---------------------------------------------------------------- tables


def _training_data(row: pd.Series) -> str:
    lang = fmt(row["target_lang"]) if not _missing(row["target_lang"]) else "target"
    count = row["target_count"]
    english = _truthy(row["with_english"])
    if english and (_missing(count) or count == 0):
        return "English"
    amount = "all" if _missing(count) else fmt(count)
    return f"English + {lang} {amount}" if english else f"{lang} {amount}"


def _wide(rows: pd.DataFrame, row_key: str, col_key: str, col_order: Sequence[Any]) -> pd.DataFrame:
    """Mean F1 and EM pivoted: index = row_key (in order of appearance), columns = (col_key value, F1|EM)."""
    wide = rows.groupby([row_key, col_key], sort=False)[list(METRICS)].mean().unstack(col_key)
    wide = wide.swaplevel(axis=1)
    cols = [(c, m) for c in col_order for m in METRICS if (c, m) in wide.columns]
    table = wide[cols].reindex(list(dict.fromkeys(rows[row_key])))
    table.columns = pd.MultiIndex.from_tuples([(c, METRIC_NAMES[m]) for c, m in cols])
    table.index.name = None
    return table


def paper_tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """QA: one table per eval set in the layout of the DeepPavlov paper's Tables 1-3: rows =
    model (training data), columns = mode x {F1, EM}, mean over seeds."""
    final = final_rows(df)
    if final.empty:
        return {}
    extra = [k for k in ("method", "depth", "lr") if final[k].nunique(dropna=True) > 1]
    final = final.copy()
    final["row"] = [
        f"{fmt(r['model'])} ({_training_data(r)})" + "".join(f", {k}={fmt(r[k])}" for k in extra)
        for _, r in final.iterrows()
    ]
    final["train_mode"] = final["train_mode"].fillna("-")
    modes = [m for m in ("fixed", "validated") if m in set(final["train_mode"])]
    modes += sorted(set(final["train_mode"]) - set(modes))
    return {
        str(eval_set): _wide(group, "row", "train_mode", modes)
        for eval_set, group in final.groupby("eval_set", sort=True)
    }


def language_table(df: pd.DataFrame) -> pd.DataFrame:
    """Adaptation: rows = method / depth, columns = language x {F1, EM}, mean over seeds."""
    final = final_rows(df)
    if final.empty:
        return pd.DataFrame()
    final = final.copy()
    langs = final.groupby("eval_set")["eval_lang"].first()
    unique = langs.notna().all() and langs.nunique() == len(langs)
    final["column"] = final["eval_lang"] if unique else final["eval_set"]
    extra = [k for k in ("model", "lr") if final[k].nunique(dropna=True) > 1]
    final["row"] = [
        (fmt(r["method"]) if r["method"] in FULL_MODEL_METHODS else f"{fmt(r['method'])}, depth {fmt(r['depth'])}")
        + "".join(f", {k}={fmt(r[k])}" for k in extra)
        for _, r in final.iterrows()
    ]
    final = final.sort_values(["method", "depth"], kind="stable", na_position="last")
    return _wide(final, "row", "column", list(dict.fromkeys(final.sort_values("eval_set")["column"])))


def breakdown(df: pd.DataFrame) -> pd.DataFrame:
    """Every final score: rows = trials (with their parameters), columns = eval set x {F1, EM}."""
    final = final_rows(df)
    if final.empty:
        return pd.DataFrame()
    final = _with_trials(final, df)
    return _wide(final.sort_values("trial_id", kind="stable"), "label", "eval_set",
                 sorted(final["eval_set"].dropna().unique()))


# ---------------------------------------------------------------- verdicts


def _same(have: Any, want: Any) -> bool:
    if hasattr(have, "item"):
        have = have.item()
    if _missing(have):
        return want is None
    if isinstance(want, bool):
        return isinstance(have, bool | int | float) and bool(have) == want
    if isinstance(want, int | float):
        try:
            return math.isclose(float(have), float(want), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return str(have) == str(want)


def _where_mask(final: pd.DataFrame, where: dict[str, Any]) -> pd.Series:
    """Rows whose trial matches every key: a results column by name, else the trial's searched
    parameter (dotted key), else the column named by the key's last part (train.lr -> lr)."""
    mask = pd.Series(True, index=final.index)
    params = final["params"].map(_params)
    for key, want in where.items():
        if key in final.columns:
            have = final[key]
        else:
            last = key.split(".")[-1]
            fallback = final[last] if last in final.columns else pd.Series(None, index=final.index, dtype=object)
            have = pd.Series([p[key] if key in p else fallback.loc[i] for i, p in params.items()], index=final.index,
                             dtype=object)
        mask &= have.map(lambda v, w=want: _same(v, w)).astype(bool)
    return mask


def verdicts(df: pd.DataFrame, expected: Iterable[Expected | dict[str, Any]], scale: str | None) -> pd.DataFrame:
    """Each published number next to what this study measured (mean over the matching trials'
    final rows) and whether it was reproduced. A CPU-scale study never claims a paper's number."""
    final = final_rows(df)
    rows = []
    for item in expected:
        e = item if isinstance(item, Expected) else Expected.model_validate(item)
        match = final[(final["eval_set"] == e.eval_set) & _where_mask(final, e.where)]
        values = match[e.metric].dropna().astype(float)
        n = len(values)
        measured = float(values.mean()) if n else math.nan
        seeds = match["seed"].nunique(dropna=True)
        std = float(values.std(ddof=1)) if n >= 2 and seeds >= 2 else math.nan
        diff = measured - e.value
        if n == 0:
            verdict = "not run"
        elif scale == "cpu":
            verdict = "CPU-scale"
        elif abs(diff) <= e.tolerance:
            verdict = "reproduced"
        elif not math.isnan(std) and abs(diff) <= 2 * std:
            verdict = "within noise"
        else:
            verdict = "not reproduced"
        rows.append({
            "label": e.label, "metric": METRIC_NAMES[e.metric], "eval_set": e.eval_set,
            "where": ", ".join(f"{k}={fmt(v)}" for k, v in e.where.items()),
            "expected": e.value, "tolerance": e.tolerance, "measured": measured, "diff": diff, "seed_std": std,
            "n": n, "verdict": verdict, "source": e.source,
        })
    return pd.DataFrame(rows, columns=["label", "metric", "eval_set", "where", "expected", "tolerance", "measured",
                                       "diff", "seed_std", "n", "verdict", "source"])


# ---------------------------------------------------------------- header


def summary(df: pd.DataFrame) -> dict[str, Any]:
    """The numbers of the page header."""
    by_trial = df.groupby("trial_id")
    times = df["time"].dropna()

    def distinct(col: str) -> list[str]:
        return sorted(str(v) for v in df[col].dropna().unique())

    return {
        "studies": distinct("study"),
        "task": study_task(df),
        "trials": int(df["trial_id"].nunique()),
        "rows": len(df),
        "first_time": float(times.min()) if len(times) else None,
        "last_time": float(times.max()) if len(times) else None,
        "hardware": distinct("hardware"),
        "devices": distinct("device_kind"),
        "xlt_versions": distinct("xlt_version"),
        "flops_train": float(by_trial["flops_train"].max().sum()),
        "device_hours": float(by_trial["device_seconds"].max().sum()) / 3600.0,
    }
