"""Break-even across target languages from an adaptation study's measured rows (the rule:
xlt.breakeven).

Per arm (method, and depth for mini-models), from each trial's step-2 rows on its target
language:

    one_off        flops_train - flops_stage of the step-2 rows: the step 1 and step 3 FLOPs the
                   trial is charged (cached artifacts count for every trial that uses them, so
                   MiniPost's one-off holds BaseLarge's primary and step 3; `one_off_extra` is what
                   it adds on top of BaseLarge's when a study runs both)
    per_language   step-2 FLOPs (flops_stage) at the first evaluation reaching tau x the curve's
                   maximum (xlt.compute.time_to_near_max), mean over seeds, then over languages
    quality        the curve's maximum F1 (mean over seeds); `retention`: its share of BaseLarge's,
                   over the languages both have
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from xlt import breakeven, compute
from xlt.dashboards import views

ARM_COLUMNS = ["arm", "method", "depth", "one_off", "one_off_extra", "per_language", "quality", "retention",
               "cost_share", "languages", "n_trials"]


def arm_label(method: Any, depth: Any) -> str:
    if method in views.FULL_MODEL_METHODS or depth is None or (isinstance(depth, float) and math.isnan(depth)):
        return str(method)
    return f"{method} k={views.fmt(depth)}"


def curves(df: pd.DataFrame, tau: float = 0.95) -> pd.DataFrame:
    """One row per trial and target eval set: its one-off FLOPs, step-2 FLOPs to tau x max, max F1."""
    rows = df[(df["stage"] == "step2") & df["f1"].notna() & df["eval_lang"].notna()
              & (df["eval_lang"] == df["target_lang"])]
    out = []
    for (trial_id, eval_set), g in rows.groupby(["trial_id", "eval_set"], sort=True):
        hit = compute.time_to_near_max(list(g["flops_stage"].astype(float)), list(g["f1"].astype(float)), tau)
        if hit is None:
            continue  # nothing learned: no near-maximal point to reach
        first = g.iloc[0]
        out.append({"trial_id": trial_id, "eval_set": eval_set, "lang": first["target_lang"],
                    "method": first["method"], "depth": first["depth"],
                    "one_off": float((g["flops_train"] - g["flops_stage"]).max()),
                    "per_language": hit[0], "quality": float(g["f1"].max())})
    return pd.DataFrame(out, columns=["trial_id", "eval_set", "lang", "method", "depth", "one_off", "per_language",
                                      "quality"])


def arms_from_costs(per_lang: pd.DataFrame) -> pd.DataFrame:
    """Arms from per (method, depth, lang) costs (columns method, depth, lang, one_off, per_language,
    quality, n): what both the measured and the priced tables reduce to."""
    if per_lang.empty:
        return pd.DataFrame(columns=ARM_COLUMNS)
    per_lang = per_lang.copy()
    per_lang["depth"] = per_lang["depth"].where(~per_lang["method"].isin(views.FULL_MODEL_METHODS))
    per_lang["arm"] = [arm_label(m, d) for m, d in zip(per_lang["method"], per_lang["depth"], strict=True)]
    ref = per_lang[per_lang["method"] == breakeven.REFERENCE]
    ref_quality = ref.groupby("lang")["quality"].mean()
    ref_one_off = float(ref["one_off"].mean()) if len(ref) else math.nan
    ref_per_language = float(ref.groupby("lang")["per_language"].mean().mean()) if len(ref) else math.nan
    rows = []
    for arm, g in per_lang.groupby("arm", sort=False):
        langs = g.groupby("lang").agg(per_language=("per_language", "mean"), quality=("quality", "mean"),
                                      n=("n", "sum"))
        shared = [lang for lang in langs.index if lang in ref_quality.index and ref_quality[lang] > 0]
        method = g["method"].iloc[0]
        one_off = float(g["one_off"].mean())
        per_language = float(langs["per_language"].mean())
        rows.append({
            "arm": arm, "method": method, "depth": g["depth"].iloc[0], "one_off": one_off,
            # MiniPost starts from BaseLarge's primary and shares its step 3 through the cache
            "one_off_extra": one_off - ref_one_off if method == "mini_post" and not math.isnan(ref_one_off)
            else one_off,
            "per_language": per_language, "quality": float(langs["quality"].mean()),
            "retention": float((langs.loc[shared, "quality"] / ref_quality[shared]).mean()) if shared else math.nan,
            "cost_share": per_language / ref_per_language if ref_per_language else math.nan,
            "languages": ", ".join(str(x) for x in langs.index), "n_trials": int(langs["n"].sum()),
        })
    order = {m: i for i, m in enumerate(("base_large", "mini_joint", "mini_post", "base_small"))}
    out = pd.DataFrame(rows, columns=ARM_COLUMNS)
    out["_o"] = [(order.get(m, 9), -1 if pd.isna(d) else d) for m, d in zip(out["method"], out["depth"], strict=True)]
    return out.sort_values("_o", kind="stable").drop(columns="_o").reset_index(drop=True)


def arms(df: pd.DataFrame, tau: float = 0.95) -> pd.DataFrame:
    """Per arm: one-off and per-language FLOPs, quality and its retention against BaseLarge."""
    c = curves(df, tau)
    if c.empty:
        return pd.DataFrame(columns=ARM_COLUMNS)
    per_lang = c.groupby(["method", "depth", "lang"], dropna=False, sort=False).agg(
        one_off=("one_off", "mean"), per_language=("per_language", "mean"), quality=("quality", "mean"),
        n=("trial_id", "nunique")).reset_index()
    return arms_from_costs(per_lang)


def with_verdicts(arm_table: pd.DataFrame) -> pd.DataFrame:
    """The arm table with each arm's break-even against BaseLarge (xlt.breakeven.break_even)."""
    out = arm_table.copy()
    ref = out[out["method"] == breakeven.REFERENCE]
    verdicts = []
    for _, r in out.iterrows():
        if r["method"] == breakeven.REFERENCE:
            verdicts.append(breakeven.Verdict("no_reference", None))
        elif ref.empty:
            verdicts.append(breakeven.Verdict("no_reference", None))
        else:
            verdicts.append(breakeven.break_even(r["one_off"], r["per_language"], float(ref["one_off"].iloc[0]),
                                                 float(ref["per_language"].iloc[0])))
    out["verdict"] = [v.kind for v in verdicts]
    out["break_even"] = [v.languages for v in verdicts]
    out["verdict_text"] = ["reference" if m == breakeven.REFERENCE else v.text()
                           for m, v in zip(out["method"], verdicts, strict=True)]
    return out


def totals(arm_table: pd.DataFrame, n_max: int = 10) -> pd.DataFrame:
    """Total FLOPs for 1..n_max languages per arm."""
    rows = [{"arm": r["arm"], "method": r["method"], "languages": n,
             "total": breakeven.total(r["one_off"], r["per_language"], n)}
            for _, r in arm_table.iterrows() for n in range(1, n_max + 1)]
    return pd.DataFrame(rows, columns=["arm", "method", "languages", "total"])


def horizon(verdicts: pd.DataFrame, at_least: int = 10) -> int:
    """How many languages to draw: enough to show every break-even, at least `at_least`."""
    found = [int(n) for n in verdicts["break_even"].dropna()]
    return max([at_least] + [min(2 * n, 1000) for n in found])


def paper_reference(arm_table: pd.DataFrame, n_max: int) -> pd.DataFrame:
    """The paper's framing as a line: BaseLarge's per-language cost x 37.2% per language, on top of
    BaseLarge's one-off (the paper prices step 2, the part mini-models make cheaper)."""
    ref = arm_table[arm_table["method"] == breakeven.REFERENCE]
    if ref.empty:
        return pd.DataFrame(columns=["languages", "total"])
    one_off, per = float(ref["one_off"].iloc[0]), float(ref["per_language"].iloc[0])
    return pd.DataFrame({"languages": list(range(1, n_max + 1)),
                         "total": [breakeven.total(one_off, breakeven.PAPER_COST_SHARE * per, n)
                                   for n in range(1, n_max + 1)]})
