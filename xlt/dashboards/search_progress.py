"""How a search progressed against the compute it spent: after each finished trial (in the order
trials finished), the cumulative device-hours, the best final F1 so far and the Pareto
hypervolume of quality vs compute so far.

Hypervolume: the area dominated by the trials' (compute, F1) points, compute minimised and F1
maximised, inside the box bounded by the reference point (REF_X_FACTOR x the study's largest trial
compute, F1 0): the larger, the better the front. Reported as a share of the box (0-1), so studies
of any scale read the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from xlt.dashboards import views

REF_X_FACTOR = 1.1  # the reference point's compute: 10% beyond the study's most expensive trial
REF_Y = 0.0  # the reference point's F1

COLUMNS = ["eval_set", "order", "trial_id", "ended", "cum_hours", "f1", "best_f1", "hypervolume", "ref_x", "ref_y"]


def hypervolume(points: Sequence[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by `points` (x to minimise, y to maximise) and bounded by `ref` (x_ref, y_ref):
    the union of the boxes [x, x_ref] x [y_ref, y]. Points beyond the reference add nothing."""
    x_ref, y_ref = ref
    inside = sorted((x, y) for x, y in points if x < x_ref and y > y_ref)
    area, best = 0.0, y_ref
    # sweep by x: each point raises the front from its x to the reference, if it beats every cheaper one
    for i, (x, y) in enumerate(inside):
        if y <= best:
            continue
        nxt = next((nx for nx, ny in inside[i + 1:] if ny > y), x_ref)
        # the strip [x, nxt] stands at height y (above y_ref); beyond nxt a better point takes over
        area += (nxt - x) * (y - y_ref)
        best = y
    return area


def progress(df: pd.DataFrame) -> pd.DataFrame:
    """Per eval set, one row per finished trial in the order trials ended: cumulative device-hours,
    best final F1 so far, hypervolume share so far. Empty with fewer than two trials."""
    final = views.final_rows(df)
    if final["trial_id"].nunique() < 2:
        return pd.DataFrame(columns=COLUMNS)
    final = final.sort_values("time", kind="stable").drop_duplicates(["trial_id", "eval_set"], keep="last")
    cost = views.trial_compute(df)
    ended = df.groupby("trial_id")["time"].max().rename("ended").reset_index()
    frame = final[["trial_id", "eval_set", "f1"]].merge(cost, on="trial_id").merge(ended, on="trial_id")
    rows = []
    for eval_set, g in frame.groupby("eval_set", sort=True):
        g = g.sort_values(["ended", "trial_id"], kind="stable")
        ref_x = REF_X_FACTOR * float(g["flops"].max())
        box = ref_x * (100.0 - REF_Y)
        pts: list[tuple[float, float]] = []
        hours, best = 0.0, float("-inf")
        for i, (_, r) in enumerate(g.iterrows()):
            hours += 0.0 if pd.isna(r["hours"]) else float(r["hours"])
            if not pd.isna(r["f1"]):
                best = max(best, float(r["f1"]))
                if not pd.isna(r["flops"]):
                    pts.append((float(r["flops"]), float(r["f1"])))
            rows.append({"eval_set": eval_set, "order": i + 1, "trial_id": r["trial_id"], "ended": r["ended"],
                         "cum_hours": hours, "f1": r["f1"], "best_f1": best if best > float("-inf") else float("nan"),
                         "hypervolume": hypervolume(pts, (ref_x, REF_Y)) / box if box > 0 else float("nan"),
                         "ref_x": ref_x, "ref_y": REF_Y})
    return pd.DataFrame(rows, columns=COLUMNS)
