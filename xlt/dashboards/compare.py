"""`xlt dashboard RUN_A RUN_B ...`: one page comparing several run directories.

Runs of the same study or of different ones (ru and zh adaptation, a CPU and a GPU run, before
and after a change): a table of final scores on the eval sets they share (best trial, mean and
spread over trials, the best's difference from the first run's), the sets not shared listed per
run, and each run's best-so-far F1 against the device-hours it had spent, one colour per run.
The data are pure functions of the tables (tested on hand-built ones); then drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from xlt import __version__, results
from xlt.dashboards import views
from xlt.errors import XltError


def labels(names: Sequence[str], paths: Sequence[Path]) -> list[str]:
    """A label per run: its study name, with as much of its directory's path as tells apart runs
    that share a name."""
    out = list(names)
    for depth in range(1, max((len(p.parts) for p in paths), default=1) + 1):
        dup = {n for n in out if out.count(n) > 1}
        if not dup:
            break
        out = [f"{n} ({'/'.join(p.parts[-depth:])})" if n in dup or names.count(n) > 1 else o
               for n, o, p in zip(names, out, paths, strict=True)]
    return out


def shared_sets(tables: dict[str, pd.DataFrame]) -> tuple[list[str], dict[str, list[str]]]:
    """The eval sets every run scored (final rows), in the first run's order, and per run the others."""
    per = {k: list(dict.fromkeys(views.final_rows(t)["eval_set"])) for k, t in tables.items()}
    first = next(iter(per.values()), [])
    common = [s for s in first if all(s in sets for sets in per.values())]
    return common, {k: [s for s in sets if s not in common] for k, sets in per.items() if set(sets) - set(common)}


def final_comparison(tables: dict[str, pd.DataFrame], metric: str = "f1") -> pd.DataFrame:
    """(eval set) x (run, statistic): the best trial's final score, the mean and standard
    deviation over trials, the number of trials, and the best's difference from the first run's."""
    common, _ = shared_sets(tables)
    base = None
    out: dict[tuple[str, str], list[float]] = {}
    for run, table in tables.items():
        final = views.final_rows(table)
        per_set = final[final["eval_set"].isin(common)].groupby("eval_set")[metric]
        best, mean, sd, n = (per_set.max(), per_set.mean(), per_set.std(ddof=1), per_set.count())
        out[(run, f"best {metric}")] = [float(best.get(s, float("nan"))) for s in common]
        out[(run, "mean")] = [float(mean.get(s, float("nan"))) for s in common]
        out[(run, "sd")] = [float(sd.get(s, float("nan"))) for s in common]
        out[(run, "trials")] = [float(n.get(s, 0)) for s in common]
        if base is None:
            base = out[(run, f"best {metric}")]
        else:
            out[(run, "Δ best")] = [b - a for a, b in zip(base, out[(run, f"best {metric}")], strict=True)]
    frame = pd.DataFrame(out, index=pd.Index(common, name="eval set"))
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    return frame


def best_so_far(table: pd.DataFrame, eval_set: str, metric: str = "f1") -> pd.DataFrame:
    """Trials in the order they finished: cumulative device-hours spent and the best final score
    so far on `eval_set` (quality bought per compute, whatever the search did)."""
    final = views.final_rows(table)
    final = final[final["eval_set"] == eval_set]
    if final.empty:
        return pd.DataFrame(columns=["trial_id", "hours", "cumulative_hours", metric, "best"])
    ends = final.groupby("trial_id").agg(time=("time", "max"), hours=("device_seconds", "max"),
                                          score=(metric, "max")).sort_values("time")
    ends["hours"] = ends["hours"].astype(float) / 3600.0
    return pd.DataFrame({"trial_id": ends.index, "hours": ends["hours"].to_numpy(),
                         "cumulative_hours": ends["hours"].cumsum().to_numpy(), metric: ends["score"].to_numpy(),
                         "best": ends["score"].cummax().to_numpy()})


def figure(curves: dict[str, pd.DataFrame], eval_set: str):
    import plotly.graph_objects as go

    from xlt.dashboards.figures import OKABE_ITO, TEMPLATE, esc

    fig = go.Figure()
    for i, (run, c) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(x=c["cumulative_hours"], y=c["best"], mode="lines+markers", name=esc(run),
                                 line={"shape": "hv", "color": OKABE_ITO[i % len(OKABE_ITO)]},
                                 text=[esc(t) for t in c["trial_id"]],
                                 hovertemplate="%{text}<br>%{x:.3g} device-hours: best F1 %{y:.2f}<extra></extra>"))
    fig.update_layout(template=TEMPLATE, height=420, title=f"Best final F1 on {esc(eval_set)} so far",
                      xaxis_title="device-hours spent (cumulative over finished trials)", yaxis_title="F1",
                      legend={"orientation": "h", "y": -0.25})
    return fig


def render_compare(run_dirs: Sequence[str]) -> str:
    from plotly.offline import get_plotlyjs

    from xlt.dashboards.page import CSS, Figures, h, load_run, table_html

    runs = [load_run(d) for d in run_dirs]
    names = labels([r.name for r in runs], [r.path for r in runs])
    tables = dict(zip(names, (r.table for r in runs), strict=True))
    common, others = shared_sets(tables)
    figs = Figures()
    parts = [f"<header><h1>xlt: {h(' vs '.join(names))}</h1><p>{len(runs)} runs compared: "
             + "; ".join(f"{h(n)} from {h(str(r.path))}" + (f" ({h(r.partial)})" if r.partial else "")
                         for n, r in zip(names, runs, strict=True)) + ".</p></header>"]
    if not common:
        parts.append("<p class='omitted'>The runs share no evaluation set: nothing to compare side by side.</p>")
    else:
        parts.append("<section id='comparison'><h2>Final scores</h2><p class='lede'>Per evaluation set every run"
                     " scored: the best trial's final F1, the mean and standard deviation over its trials, and the"
                     f" best's difference from {h(names[0])}'s.</p>" + table_html(final_comparison(tables), "eval set")
                     + "</section>")
        curves = {n: best_so_far(t, common[0]) for n, t in tables.items()}
        parts.append("<section id='budget'><h2>Quality for the compute spent</h2>"
                     + figs.div("compare-best-so-far", figure(curves, common[0])) + "</section>")
    if others:
        parts.append("<section id='unshared'><h2>Evaluation sets not in every run</h2><ul>"
                     + "".join(f"<li>{h(n)}: {h(', '.join(sets))}</li>" for n, sets in others.items())
                     + "</ul></section>")
    made = datetime.now(tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>xlt: {h(' vs '.join(names))}</title><style>{CSS}</style>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>\n" + "\n".join(parts)
            + f"\n<footer>Made by xlt {h(__version__)} on {made}; {len(figs.ids)} figures.</footer>\n</body></html>\n")


def compare_dashboard(run_dirs: Sequence[str], out: str | None = None) -> Path:
    page = render_compare(run_dirs)
    target = Path(out) if out else Path("dashboards") / ("compare-" + "-".join(Path(d).name for d in run_dirs) + ".html")
    if target.is_dir():
        target = target / "compare.html"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        results.atomic_write_bytes(target, page.encode("utf-8"))
        target.chmod(0o644)
    except OSError as e:
        raise XltError(f"{target}: cannot write the dashboard ({e.strerror or e})") from None
    return target
