"""Plotly figures from the view frames (``xlt.dashboards.views``).

Every string that comes from a run (trial ids, eval set names, parameter values) goes through
``esc`` before it reaches a figure: Plotly renders titles, legends and hover text as a small
HTML dialect, so a ``<`` in a dataset name would otherwise become markup.
"""

from __future__ import annotations

import html
import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from xlt.dashboards.views import METRIC_NAMES, fmt

# Okabe & Ito (2008), "Color universal design": distinguishable under the common colour-vision
# deficiencies. Black is kept for the frontier and bounds, yellow last (weak on white).
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442")
INK = "#000000"
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
TEMPLATE = "plotly_white"
FLOPS_UNIT = "FLOPs"
HOURS_TITLE = "device-hours (log)"
PANEL_HEIGHT = 300


def esc(value: Any) -> str:
    # quote=False: Plotly decodes &lt; &gt; &amp; but shows &quot; literally.
    return html.escape(value if isinstance(value, str) else fmt(value), quote=False)


def palette(keys: Sequence[tuple[str, Any]]) -> dict[str, str]:
    """Colour per label, in the order of the keys ((label, sort key) pairs). More values than
    Okabe-Ito has colours (a continuous lr search) get a sampled Viridis scale instead."""
    labels = list(dict.fromkeys(label for label, _ in sorted(set(keys), key=lambda p: p[1])))
    if len(labels) <= len(OKABE_ITO):
        return dict(zip(labels, OKABE_ITO, strict=False))
    shades = sample_colorscale("Viridis", [i / (len(labels) - 1) for i in range(len(labels))])
    return dict(zip(labels, shades, strict=True))


def _colours(frame: pd.DataFrame) -> dict[str, str]:
    return palette(list(zip(frame["colour"], frame["colour_key"], strict=True)))


def _legend_entries(fig: go.Figure, colours: dict[str, str], title: str) -> None:
    """What the colours mean: a legend entry per value (toggling its curves), or a colour bar when
    there are more values than Okabe-Ito colours."""
    labels = list(colours)
    if len(labels) > len(OKABE_ITO):
        n = len(labels)
        ticks = sorted({round(i * (n - 1) / 5) for i in range(6)})
        fig.add_trace(go.Scatter(
            x=[None, None], y=[None, None], mode="markers", showlegend=False, hoverinfo="skip",
            marker={"color": [0, n - 1], "cmin": 0, "cmax": n - 1, "colorscale": "Viridis", "showscale": True,
                    "colorbar": {"title": {"text": esc(title)}, "tickvals": ticks,
                                 "ticktext": [esc(labels[i]) for i in ticks], "len": 0.6, "y": 0.4}},
        ))
        return
    for i, (label, colour) in enumerate(colours.items()):
        fig.add_trace(go.Scatter(
            x=[None], y=[None], mode="markers+lines", name=esc(label), marker={"color": colour},
            line={"color": colour}, legendgroup=esc(label), showlegend=True,
            legendgrouptitle={"text": esc(title)} if i == 0 else None,
        ))


def _base_layout(fig: go.Figure, height: int, title: str) -> go.Figure:
    fig.update_layout(template=TEMPLATE, height=height, title={"text": title, "x": 0.01},
                      margin={"l": 70, "r": 20, "t": 70, "b": 60}, hoverlabel={"align": "left"},
                      legend={"groupclick": "toggleitem"})
    return fig


def _add_all(fig: go.Figure, pending: list[tuple[go.Scatter, int, int]]) -> None:
    # One call: add_trace re-validates the whole figure each time, quadratic in the number of curves.
    if pending:
        fig.add_traces([t for t, _, _ in pending], rows=[r for _, r, _ in pending], cols=[c for _, _, c in pending])


def _hover(row: pd.Series, extra: str) -> str:
    return f"<b>{esc(row['trial_id'])}</b><br>{esc(row['describe']) or 'no searched parameters'}<br>{extra}"


def _sci(x: float) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.3g}"


# ---------------------------------------------------------------- compute to quality


def compute_quality(points: pd.DataFrame, frontier: pd.DataFrame, near_max: pd.DataFrame, x: str,
                    tau: float) -> go.Figure:
    """Quality vs compute: rows = eval sets, columns = F1, EM; every trial a curve, the study
    frontier as a black step line and each trial's time-to-near-max as a star."""
    x_title = f"{points['flops_kind'].iloc[0]} (log, {FLOPS_UNIT})" if x == "flops" else HOURS_TITLE
    sets = sorted(points["eval_set"].unique())
    metrics = list(METRIC_NAMES)
    titles = [f"{esc(s)}: {METRIC_NAMES[m]}" for s in sets for m in metrics]
    fig = make_subplots(rows=len(sets), cols=2, subplot_titles=titles, horizontal_spacing=0.08,
                        vertical_spacing=min(0.12, 0.5 / max(len(sets), 1)))
    colours = _colours(points)
    many = len(colours) > len(OKABE_ITO)
    rank = {label: i for i, label in enumerate(colours)}
    shown = {"frontier": False, "near": False}
    pending: list[tuple[go.Scatter, int, int]] = []
    for r, eval_set in enumerate(sets, start=1):
        on_set = points[(points["eval_set"] == eval_set) & (points[x] > 0)].sort_values(["trial_id", "event"])
        for c, metric in enumerate(metrics, start=1):
            unit = FLOPS_UNIT if x == "flops" else "device-hours"
            # One trace per colour with gaps between trials (far fewer traces than one per trial);
            # with more values than Okabe-Ito has colours, thin grey lines and markers on a colour scale.
            groups = [("", on_set)] if many else list(on_set.groupby("colour", sort=True))
            for colour, group in groups:
                xs: list[Any] = []
                ys: list[Any] = []
                text: list[Any] = []
                marks: list[int] = []
                cols = ["trial_id", "describe", "stage", "step", x, metric, "colour"]
                for trial_id, run in itertools.groupby(group[cols].itertuples(index=False), key=lambda t: t[0]):
                    pts = list(run)
                    head = f"<b>{esc(trial_id)}</b><br>{esc(pts[0][1]) or '-'}<br>"
                    xs += [p_[4] for p_ in pts] + [None]
                    ys += [p_[5] for p_ in pts] + [None]
                    marks += [rank[p_[6]] for p_ in pts] + [0]
                    text += [f"{head}{esc(eval_set)}, {esc(p_[2])} step {fmt(p_[3])}<br>{METRIC_NAMES[metric]}"
                             f" {p_[5]:.2f} % at {_sci(p_[4])} {unit}" for p_ in pts] + [None]
                marker = ({"size": 6, "color": marks, "colorscale": "Viridis", "cmin": 0, "cmax": len(rank) - 1}
                          if many else {"size": 5})
                pending.append((go.Scatter(
                    x=xs, y=ys, mode="lines+markers", line={"color": "#bbbbbb" if many else colours[colour],
                                                            "width": 1 if many else 2},
                    marker=marker, opacity=0.85, hovertext=text, hovertemplate="%{hovertext}<extra></extra>",
                    connectgaps=False, legendgroup=esc(colour) if colour else None, showlegend=False,
                    name=esc(colour) if colour else "trials",
                ), r, c))
            fr = frontier[(frontier["eval_set"] == eval_set) & (frontier["metric"] == metric)]
            if len(fr):
                pending.append((go.Scatter(
                    x=fr["x"], y=fr["y"], mode="lines", line={"color": INK, "dash": "dash", "width": 2,
                                                              "shape": "hv"},
                    name="study frontier", legendgroup="frontier", showlegend=not shown["frontier"],
                    hovertemplate=f"frontier: {METRIC_NAMES[metric]} %{{y:.2f}} at %{{x:.3g}}<extra></extra>",
                ), r, c))
                shown["frontier"] = True
            nm = near_max[(near_max["eval_set"] == eval_set) & (near_max["metric"] == metric)]
            if len(nm):
                pending.append((go.Scatter(
                    x=nm["x"], y=nm["y"], mode="markers", name=f"first point at {tau:.0%} of the trial's max",
                    marker={"symbol": "star", "size": 13, "color": [colours[c_] for c_ in nm["colour"]],
                            "line": {"color": INK, "width": 1}},
                    hovertext=[f"<b>{esc(t)}</b><br>reaches {tau:.0%} of its max here" for t in nm["label"]],
                    hovertemplate="%{hovertext}<extra></extra>", legendgroup="near",
                    showlegend=not shown["near"],
                ), r, c))
                shown["near"] = True
            fig.update_yaxes(title_text=f"{METRIC_NAMES[metric]} (%)", row=r, col=c)
            fig.update_xaxes(type="log", exponentformat="SI extended", title_text=x_title if r == len(sets) else None,
                             row=r, col=c)
    _add_all(fig, pending)
    _legend_entries(fig, colours, points["colour_by"].iloc[0])
    title = "Quality vs " + ("training compute" if x == "flops" else "device time")
    return _base_layout(fig, PANEL_HEIGHT * len(sets) + 120, title)


# ---------------------------------------------------------------- Pareto


def pareto(par: pd.DataFrame) -> go.Figure:
    """Final F1 vs trial compute per eval set; Pareto-optimal trials joined, dominated ones dimmed."""
    sets = sorted(par["eval_set"].unique())
    cols = min(3, len(sets))
    rows = math.ceil(len(sets) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[esc(s) for s in sets], horizontal_spacing=0.08)
    colours = _colours(par)
    flops_kind = par["flops_kind"].iloc[0]
    for i, eval_set in enumerate(sets):
        r, c = i // cols + 1, i % cols + 1
        part = par[par["eval_set"] == eval_set].sort_values("flops")
        for is_dominated in (False, True):
            pts = part[part["dominated"] == is_dominated]
            if pts.empty:
                continue
            fig.add_trace(go.Scatter(
                x=pts["flops"], y=pts["f1"], mode="markers" if is_dominated else "lines+markers",
                line={"color": INK, "width": 1, "shape": "hv"},
                marker={"size": 10, "color": [colours[k] for k in pts["colour"]], "opacity": 0.25 if is_dominated
                        else 1.0, "line": {"color": INK, "width": 0 if is_dominated else 1}},
                name="dominated trials" if is_dominated else "Pareto-optimal trials",
                legendgroup="dominated" if is_dominated else "front", showlegend=False,
                hovertext=[_hover(p, f"{esc(eval_set)} F1 {p['f1']:.2f} %, EM {p['exact_match']:.2f} %<br>"
                                     f"{_sci(p['flops'])} {FLOPS_UNIT}"
                                     + (" (dominated)" if is_dominated else " (Pareto-optimal)"))
                           for _, p in pts.iterrows()],
                hovertemplate="%{hovertext}<extra></extra>",
            ), row=r, col=c)
        fig.update_xaxes(type="log", exponentformat="SI extended", title_text=f"{flops_kind} (log, {FLOPS_UNIT})", row=r,
                         col=c)
        fig.update_yaxes(title_text="final F1 (%)", row=r, col=c)
    # Neutral legend markers: the real traces carry one colour per trial.
    for name, group, opacity, width in (("Pareto-optimal trials", "front", 1.0, 1), ("dominated trials", "dominated",
                                                                                   0.25, 0)):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name, legendgroup=group,
                                 marker={"size": 10, "color": "#888888", "opacity": opacity,
                                         "line": {"color": INK, "width": width}}))
    _legend_entries(fig, colours, par["colour_by"].iloc[0])
    return _base_layout(fig, 380 * rows + 80, "Pareto front: final quality vs compute")


# ---------------------------------------------------------------- learning curves


def learning_curves(lc: pd.DataFrame, bounds: pd.DataFrame, fits: pd.DataFrame | None = None,
                    level: float = 0.8) -> go.Figure:
    """Target-language F1 vs target training questions (log), mean over seeds with a min-max band;
    English-only (lower) and all-target-data (upper) bounds as horizontal lines; with ``fits``
    (``extrapolation.learning_fits``' curve frame) each trustworthy arm's fitted power law, dotted,
    with its bootstrap band, out to 10x the largest size."""
    sets = sorted(lc["eval_set"].unique())
    cols = min(2, len(sets))
    rows = math.ceil(len(sets) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[esc(s) for s in sets], horizontal_spacing=0.1)
    series = list(dict.fromkeys(sorted(lc["series"])))
    colours = dict(zip(series, OKABE_ITO * (len(series) // len(OKABE_ITO) + 1), strict=False))
    fits = fits if fits is not None else pd.DataFrame(columns=["eval_set", "series", "n", "f1", "lo", "hi"])
    lo = lc["target_count"].min()
    hi = max([lc["target_count"].max(), *fits["n"]])
    for i, eval_set in enumerate(sets):
        r, c = i // cols + 1, i % cols + 1
        on_set = lc[lc["eval_set"] == eval_set]
        for name in series:
            s = on_set[on_set["series"] == name].sort_values("target_count")
            if s.empty:
                continue
            colour = colours[name]
            band_x = list(s["target_count"]) + list(s["target_count"])[::-1]
            band_y = list(s["f1_max"]) + list(s["f1_min"])[::-1]
            fig.add_trace(go.Scatter(x=band_x, y=band_y, fill="toself", fillcolor=colour, opacity=0.18,
                                     line={"width": 0}, hoverinfo="skip", showlegend=False,
                                     legendgroup=esc(name)), row=r, col=c)
            text = [f"<b>{esc(name)}</b>, {fmt(p['target_count'])} target questions<br>F1 {p['f1_mean']:.2f} %"
                    f" (std {_sci(p['f1_std'])}, min {p['f1_min']:.2f}, max {p['f1_max']:.2f}) over "
                    f"{fmt(p['n'])} runs, {fmt(p['seeds'])} seeds<br>EM {p['em_mean']:.2f} %" for _, p in s.iterrows()]
            fig.add_trace(go.Scatter(x=s["target_count"], y=s["f1_mean"], mode="lines+markers",
                                     line={"color": colour, "width": 2.5}, name=esc(name), legendgroup=esc(name),
                                     showlegend=i == 0, hovertext=text,
                                     hovertemplate="%{hovertext}<extra></extra>"), row=r, col=c)
            f = fits[(fits["eval_set"] == eval_set) & (fits["series"] == name)].sort_values("n")
            if len(f):
                fig.add_trace(go.Scatter(x=list(f["n"]) + list(f["n"])[::-1], y=list(f["hi"]) + list(f["lo"])[::-1],
                                         fill="toself", fillcolor=colour, opacity=0.1, line={"width": 0},
                                         hoverinfo="skip", showlegend=False, legendgroup=esc(name)), row=r, col=c)
                fig.add_trace(go.Scatter(
                    x=f["n"], y=f["f1"], mode="lines", line={"color": colour, "width": 1.5, "dash": "dot"},
                    name=f"{esc(name)}: power-law fit", legendgroup=esc(name), showlegend=i == 0,
                    customdata=list(zip(f["lo"], f["hi"], strict=True)),
                    hovertemplate=(f"<b>{esc(name)}</b> fit: F1 %{{y:.2f}} % at %{{x:.3g}} questions<br>"
                                   f"{level:.0%} band %{{customdata[0]:.2f}}-%{{customdata[1]:.2f}}<extra></extra>")),
                    row=r, col=c)
        for _, b in bounds[bounds["eval_set"] == eval_set].iterrows():
            lower = b["bound"] == "lower"
            name = ("English only (lower bound)" if lower
                    else f"all target data, {fmt(b['target_count'])} questions (upper bound)")
            fig.add_trace(go.Scatter(
                x=[lo, hi], y=[b["f1"], b["f1"]], mode="lines",
                line={"color": "#555555" if lower else INK, "dash": "dot" if lower else "dash", "width": 1.5},
                name=name, legendgroup=b["bound"], showlegend=i == 0,
                hovertemplate=f"{name}: F1 {b['f1']:.2f} %<extra></extra>"), row=r, col=c)
        fig.update_xaxes(type="log", title_text="target-language training questions (log)", row=r, col=c)
        fig.update_yaxes(title_text="final target F1 (%)", row=r, col=c)
    return _base_layout(fig, 420 * rows + 80, "Learning curves: target-language data, alone and with English")


# ---------------------------------------------------------------- depth sweep


def depth_sweep(ds: pd.DataFrame) -> go.Figure:
    """Per method (colour) and eval language (dash): final target F1 vs mini-model depth, and the
    compute each depth cost; full-model methods as horizontal reference lines."""
    kind = ds["flops_kind"].iloc[0]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=["final F1 vs depth", f"{esc(kind)} vs depth"])
    methods = list(dict.fromkeys(sorted(ds["method"])))
    colours = dict(zip(methods, OKABE_ITO * (len(methods) // len(OKABE_ITO) + 1), strict=False))
    sets = sorted(ds["eval_set"].unique())
    swept = ds[~ds["reference"]]
    span = [swept["depth"].min(), swept["depth"].max()]
    for method in methods:
        m = ds[ds["method"] == method]
        reference = bool(m["reference"].iloc[0])
        for j, eval_set in enumerate(sets):
            s = m[m["eval_set"] == eval_set].sort_values("depth")
            if s.empty:
                continue
            where = "full model" if reference else "depth %{x}"
            text = [f"<b>{esc(method)}</b>, {where}, {esc(eval_set)}<br>F1 {p['f1_mean']:.2f} %"
                    f" (std {_sci(p['f1_std'])}, {fmt(p['n'])} runs), EM {p['em_mean']:.2f} %" for _, p in s.iterrows()]
            fig.add_trace(go.Scatter(
                x=span if reference else s["depth"], y=[s["f1_mean"].iloc[0]] * 2 if reference else s["f1_mean"],
                mode="lines" if reference else "lines+markers",
                name=f"{esc(method)} (full model), {esc(eval_set)}" if reference else f"{esc(method)}, {esc(eval_set)}",
                line={"color": colours[method], "dash": DASHES[j % len(DASHES)], "width": 1.5 if reference else 2},
                marker={"size": 8},
                error_y=None if reference else {"type": "data", "array": s["f1_std"].fillna(0),
                                                "visible": bool(s["f1_std"].notna().any())},
                legendgroup=esc(method), hovertext=text * 2 if reference else text,
                hovertemplate="%{hovertext}<extra></extra>"), row=1, col=1)
        cost = m.drop_duplicates("depth").sort_values("depth")
        fig.add_trace(go.Scatter(
            x=span if reference else cost["depth"],
            y=[cost["flops_mean"].iloc[0]] * 2 if reference else cost["flops_mean"],
            mode="lines" if reference else "lines+markers",
            name=f"{esc(method)}: compute", line={"color": colours[method], "dash": "dot" if reference else "solid"},
            marker={"size": 8, "symbol": "square"}, legendgroup=esc(method),
            hovertemplate=f"<b>{esc(method)}</b>{' (full model)' if reference else ', depth %{x}'}"
                          f"<br>%{{y:.3g}} {FLOPS_UNIT}<extra></extra>"), row=1, col=2)
    fig.update_xaxes(title_text="mini-model depth (layers)", dtick=1)
    fig.update_yaxes(title_text="final target F1 (%)", row=1, col=1)
    fig.update_yaxes(type="log", exponentformat="SI extended", title_text=f"{esc(kind)} (log, {FLOPS_UNIT})", row=1,
                     col=2)
    return _base_layout(fig, 460, "Depth sweep: quality and cost per mini-model depth")


# ---------------------------------------------------------------- search diagnostics


def search_diagnostics(study: Any, objective_names: Sequence[str]) -> tuple[list[tuple[str, go.Figure]], list[str]]:
    """Optuna's own plots of the study Tune ran; the ones that cannot be drawn become notes."""
    import optuna
    import optuna.visualization as ov

    figs: list[tuple[str, go.Figure]] = []
    notes: list[str] = []
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2:
        return [], [f"Search diagnostics not shown: {len(complete)} completed Optuna trial(s); at least 2 are needed."]
    multi = len(study.directions) > 1
    first = esc(objective_names[0]) if objective_names else "objective"
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    target: Callable | None = (lambda t: t.values[0]) if multi else None
    # PED-ANOVA (Optuna's default evaluator) ranks parameters by how they reach *low* target values.
    importance_target: Callable | None = ((lambda t: -t.values[0]) if maximize else (lambda t: t.values[0])) \
        if multi else None
    plots: list[tuple[str, Callable[[], go.Figure]]] = [
        ("optimization history", lambda: ov.plot_optimization_history(study, target=target, target_name=first)),
        ("parameter importances", lambda: ov.plot_param_importances(study, target=importance_target,
                                                                     target_name=first)),
        ("parallel coordinates", lambda: ov.plot_parallel_coordinate(study, target=target, target_name=first)),
    ]
    if multi and len(study.directions) in (2, 3):
        names = [esc(n) for n in objective_names[: len(study.directions)]]
        plots.append(("Pareto front (Optuna)", lambda: ov.plot_pareto_front(study, target_names=names or None)))
    for name, make in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fig = make()
        except Exception as e:  # Optuna refuses e.g. importances when no parameter varies
            notes.append(f"{name.capitalize()} not shown: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            continue
        if not fig.data:
            notes.append(f"{name.capitalize()} not shown: Optuna drew nothing (no completed trials with values).")
            continue
        fig.update_layout(template=TEMPLATE, height=420, title={"text": name.capitalize(), "x": 0.01})
        figs.append((name, fig))
    return figs, notes


# ---------------------------------------------------------------- break-even and search progress


def breakeven(totals: pd.DataFrame, paper: pd.DataFrame, paper_label: str) -> go.Figure:
    """Total training FLOPs (one-off + per language) for 1..N target languages, per arm; the
    paper's framing as a dashed black line."""
    fig = go.Figure()
    arms = list(dict.fromkeys(totals["arm"]))
    colours = dict(zip(arms, itertools.cycle(OKABE_ITO), strict=False))
    for i, arm in enumerate(arms):
        part = totals[totals["arm"] == arm]
        fig.add_trace(go.Scatter(
            x=part["languages"], y=part["total"], mode="lines+markers", name=esc(arm),
            line={"color": colours[arm], "dash": DASHES[i // len(OKABE_ITO) % len(DASHES)],
                  "width": 3 if arm == "base_large" else 2},
            hovertemplate=f"<b>{esc(arm)}</b><br>%{{x}} languages: %{{y:.3g}} {FLOPS_UNIT}<extra></extra>"))
    if not paper.empty:
        fig.add_trace(go.Scatter(x=paper["languages"], y=paper["total"], mode="lines", name=esc(paper_label),
                                 line={"color": INK, "dash": "dash", "width": 1.5},
                                 hovertemplate="paper's framing<br>%{x} languages: %{y:.3g}<extra></extra>"))
    fig.update_xaxes(title_text="target languages", dtick=1 if len(paper) <= 20 else None)
    fig.update_yaxes(title_text=f"total training {FLOPS_UNIT} (steps 1 + 3 once, step 2 per language)",
                     exponentformat="SI extended")
    return _base_layout(fig, 460, "Break-even across target languages")


def search_progress(prog: pd.DataFrame) -> go.Figure:
    """Best final F1 so far and Pareto hypervolume so far against cumulative device-hours."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=["best final F1 so far", "Pareto hypervolume so far (share of the box)"])
    for i, (eval_set, g) in enumerate(prog.groupby("eval_set", sort=True)):
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        hover = [f"<b>{esc(r['trial_id'])}</b> (trial {r['order']} to finish)<br>{r['cum_hours']:.3g} device-hours"
                 f" so far<br>its F1 {_sci(r['f1'])}, best {_sci(r['best_f1'])}<br>hypervolume {r['hypervolume']:.3g}"
                 for _, r in g.iterrows()]
        for col, y in ((1, "best_f1"), (2, "hypervolume")):
            fig.add_trace(go.Scatter(x=g["cum_hours"], y=g[y], mode="lines+markers", line={"color": colour,
                                     "shape": "hv"}, name=esc(eval_set), legendgroup=esc(eval_set),
                                     showlegend=col == 1, hovertext=hover,
                                     hovertemplate="%{hovertext}<extra></extra>"), row=1, col=col)
    for col in (1, 2):
        fig.update_xaxes(title_text="cumulative device-hours (trials in the order they finished)", row=1, col=col)
    fig.update_yaxes(title_text="F1 (%)", row=1, col=1)
    fig.update_yaxes(title_text="hypervolume / box", rangemode="tozero", row=1, col=2)
    return _base_layout(fig, 420, "Search progress against compute spent")
