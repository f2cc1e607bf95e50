"""One self-contained HTML page per run directory: header, contents, then every view.

plotly.js is inlined once in the head (no CDN: the page must open on a machine with no
network); each figure is a div that calls it. Every string from the results table, the spec
or the Optuna database is HTML-escaped here or in ``figures.esc``.
"""

from __future__ import annotations

import html
import json
import math
import re
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from xlt import __version__, layout, lock, results
from xlt import breakeven as breakeven_rule
from xlt.dashboards import breakeven, claims, extrapolation, figures, search_progress, views
from xlt.errors import XltError
from xlt.spec import Claim, Expected, StudySpec, migrate_saved, spec_from_dict

SPEC_FILE = "spec.json"
STATUS_FILE = "status.json"
DONE_FILE = layout.DONE
OPTUNA_DB = "optuna.db"
UNFINISHED_STATES = ("running", "killed")


def h(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else views.fmt(value), quote=True)


@dataclass
class Run:
    """What the page reads from a run directory."""

    path: Path
    table: pd.DataFrame
    spec: StudySpec | None = None
    spec_raw: dict[str, Any] | None = None
    partial: str | None = None  # why the run looks unfinished
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        if self.spec is not None:
            return self.spec.name
        if self.spec_raw and isinstance(self.spec_raw.get("name"), str):
            return self.spec_raw["name"]
        studies = self.table["study"].dropna().unique()
        return str(studies[0]) if len(studies) else self.path.name

    def spec_value(self, *keys: str) -> Any:
        node: Any = self.spec.model_dump(mode="json") if self.spec is not None else (self.spec_raw or {})
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        return node

    @property
    def expected(self) -> list[Expected]:
        if self.spec is not None:
            return list(self.spec.expected)
        found = []
        for item in (self.spec_raw or {}).get("expected") or []:
            try:
                found.append(Expected.model_validate(item))
            except ValueError:
                continue  # one malformed entry (noted with the spec) does not hide the others
        return found

    @property
    def claims(self) -> list[Any]:
        if self.spec is not None:
            return list(self.spec.claims)
        from pydantic import TypeAdapter

        adapter = TypeAdapter(Claim)
        found = []
        for item in (self.spec_raw or {}).get("claims") or []:
            try:
                found.append(adapter.validate_python(item))
            except ValueError:
                continue  # as for expected: one malformed claim does not hide the others
        return found


def load_run(run_dir: str | Path) -> Run:
    path = Path(run_dir)
    if path.is_file() and path.name == results.TABLE:
        path = path.parent
    if not path.is_dir():
        raise XltError(f"{run_dir}: no such run directory")
    table = results.read_table(path)
    if table.empty:
        raise XltError(f"{path / results.TABLE}: the results table has no rows yet")
    run = Run(path=path, table=table)
    _read_spec(run)
    run.partial = _unfinished(path)
    return run


def _read_spec(run: Run) -> None:
    file = run.path / SPEC_FILE
    if not file.exists():
        run.notes.append(f"No {SPEC_FILE} in the run directory: description, warnings and verdicts come from the spec.")
        return
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise XltError(f"{file}: not a JSON study spec ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise XltError(f"{file}: a study spec must be a JSON object, got {type(raw).__name__}")
    run.spec_raw = raw
    try:
        run.spec = spec_from_dict(migrate_saved(raw), str(file))
    except XltError as e:
        # A run made by another xlt version: show what can be read rather than nothing.
        run.notes.append(f"{SPEC_FILE} does not validate against this xlt's StudySpec ({e}); read as plain JSON.")


def _unfinished(path: Path) -> str | None:
    status = path / STATUS_FILE
    if status.exists():
        try:
            data = json.loads(status.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            data = None
        state = (data.get("state") or data.get("status")) if isinstance(data, dict) else None
        if isinstance(state, str) and state.lower() in UNFINISHED_STATES:
            return f"{STATUS_FILE} says {state.lower()}"
    if not (path / DONE_FILE).exists():
        return f"no {DONE_FILE} marker in the run directory"
    return None


# ---------------------------------------------------------------- sections


@dataclass
class Section:
    key: str
    title: str
    body: str = ""  # empty: the view is left out and `omitted` says why
    omitted: str = ""


class Figures:
    """Figure divs with stable ids, so a browser test can find every one."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def div(self, key: str, fig) -> str:
        div_id = f"fig-{key}"
        self.ids.append(div_id)
        height = fig.layout.height or 450
        return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, default_height=f"{height}px",
                           default_width="100%", config={"displaylogo": False, "responsive": True})


def _compute_section(run: Run, figs: Figures, tau: float) -> Section:
    s = Section("compute", "Compute to quality")
    points = views.compute_points(run.table)
    if points.empty or not ((points["flops"] > 0) | (points["hours"] > 0)).any():
        s.omitted = "no evaluation events with recorded compute (FLOPs or device time)."
        return s
    adapt = points["flops_kind"].iloc[0].startswith("step-2")
    parts = [
        f"<p class='lede'>Every trial's evaluation points ({'step-2 evaluations, x = step-2 FLOPs only' if adapt else 'x = training FLOPs so far'}),"
        f" coloured by <code>{h(points['colour_by'].iloc[0])}</code>. Black dashes: the study frontier (best quality"
        f" reached for at most that compute). Stars: the first point at which each trial reaches {tau:.0%} of its own"
        " maximum.</p>",
    ]
    for axis, missing in (("flops", "training FLOPs"), ("hours", "device time")):
        if not (points[axis] > 0).any():
            parts.append(f"<p class='omitted'>Quality vs {'FLOPs' if axis == 'flops' else 'device-hours'}: not shown"
                         f" — no {missing} recorded.</p>")
            continue
        fig = figures.compute_quality(points, views.frontier_points(points, axis),
                                      views.near_max_points(points, axis, tau), axis, tau)
        parts.append(figs.div(f"compute-{axis}", fig))
    if adapt:
        parts.append("<p class='note'>Device-hours are the whole trial's so far (all steps): the results table"
                     " records device time per trial, not per stage. The step-0 evaluation (before any step-2"
                     " compute) has no place on the log FLOPs axis.</p>")
    s.body = "\n".join(parts)
    return s


def _pareto_section(run: Run, figs: Figures) -> Section:
    s = Section("pareto", "Pareto front")
    par = views.pareto(run.table)
    if par.empty:
        s.omitted = "needs final scores of at least two trials."
        return s
    n_front = int((~par["dominated"]).sum())
    s.body = (f"<p class='lede'>Each trial's final F1 against its total {h(par['flops_kind'].iloc[0])}. {n_front} of"
              f" {len(par)} points are Pareto-optimal (no other trial is both cheaper and better); dominated points are"
              f" dimmed.</p>\n" + figs.div("pareto", figures.pareto(par)))
    return s


def _search_progress_section(run: Run, figs: Figures) -> Section:
    s = Section("search-progress", "Search progress against compute")
    prog = search_progress.progress(run.table)
    if prog.empty:
        s.omitted = "needs final scores of at least two trials."
        return s
    kind = views.trial_compute(run.table)["flops_kind"].iloc[0]
    s.body = ("<p class='lede'>After each finished trial (in the order trials finished): the best final F1 so far"
              " and the Pareto hypervolume so far (final F1 against the trial's " + h(kind) + "), against the"
              " device-hours spent so far rather than the trial number. Hypervolume: the area the trials"
              " dominate (less compute, more F1), as a share of the box up to the reference point"
              f" ({search_progress.REF_X_FACTOR:g} x the largest trial's compute, F1 {search_progress.REF_Y:g})."
              "</p>\n" + figs.div("search-progress", figures.search_progress(prog)))
    return s


def _breakeven_section(run: Run, figs: Figures, tau: float) -> Section:
    s = Section("breakeven", "Break-even across target languages")
    if views.study_task(run.table) != "adapt":
        s.omitted = "not an adaptation study."
        return s
    arms = breakeven.with_verdicts(breakeven.arms(run.table, tau))
    if arms.empty:
        s.omitted = "no step-2 curves on a target language with a near-maximal point."
        return s
    n_max = breakeven.horizon(arms)
    paper = breakeven.paper_reference(arms, n_max)
    label = f"paper: step 2 at {breakeven_rule.PAPER_COST_SHARE:.1%} of BaseLarge's"
    rows = "".join(
        f"<tr><th class='row'>{h(r['arm'])}</th><td>{r['one_off']:.3g}</td><td>{r['one_off_extra']:.3g}</td>"
        f"<td>{r['per_language']:.3g}</td><td>{_pct(r['cost_share'])}</td><td>{_num(r['quality'])}</td>"
        f"<td>{_pct(r['retention'])}</td><td class='l'>{h(r['languages'])} ({h(r['n_trials'])} trials)</td>"
        f"<td class='l'>{h(r['verdict_text'])}</td></tr>" for _, r in arms.iterrows())
    s.body = (
        "<p class='lede'>What a method costs for N new languages, measured from the rows: its one-off cost (step 1"
        " and step 3 FLOPs, paid once: step 3 serves every target language, and MiniPost starts from BaseLarge's"
        " primary and shares its step 3 through the cache) plus N times its per-language cost, the step-2 FLOPs"
        f" to reach {tau:.0%} of the maximum of its step-2 F1 curve on that language (tau = {tau:g}; mean over"
        " seeds, then languages). Each method is priced at the same retention of its own maximum; its quality"
        " against BaseLarge's is the retention column. Break-even: the fewest languages at which the method's"
        f" total is below BaseLarge's. Dashed black: the paper's framing ({h(breakeven_rule.PAPER_SOURCE)}):"
        " BaseLarge's one-off plus 37.2% of its per-language cost.</p>\n"
        + figs.div("breakeven", figures.breakeven(breakeven.totals(arms, n_max), paper, label))
        + "<div class='scroll'><table><thead><tr><th>arm</th><th>one-off FLOPs</th><th>one-off beyond"
        " BaseLarge's</th><th>per-language FLOPs</th><th>share of BaseLarge's</th><th>max F1</th>"
        "<th>quality retention vs BaseLarge</th><th>languages</th><th>break-even vs BaseLarge</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
        "<p class='note'>Measured one-off costs count a cached step for every trial that uses it (the rows"
        " charge it to each); <code>xlt estimate</code> prints the same break-even priced before a study"
        " runs, for the planned step-2 steps rather than to near-maximal quality.</p>")
    return s


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<span class='na'>–</span>"
    return f"{100 * value:.1f}%"


def _learning_section(run: Run, figs: Figures) -> Section:
    s = Section("learning", "Learning curves")
    lc = views.learning_curves(run.table)
    if lc.empty:
        s.omitted = "no QA trials vary the amount of target-language training data (data.target_count)."
        return s
    bounds = views.learning_bounds(run.table)
    curve, fits = extrapolation.learning_fits(views.learning_points(run.table), bounds)
    s.body = ("<p class='lede'>Final F1 on the target language as target-language training data grows, trained on"
              " target data alone and jointly with English; lines are means over seeds, bands span min to max."
              " (Layout of the DeepPavlov paper's Figures 2-3.) Dotted: a saturating power law"
              " F1(n) = a - b·n<sup>-c</sup> fitted per arm, with its 80% bootstrap band (over sizes and seeds),"
              " drawn only where the fit is trustworthy.</p>\n"
              + figs.div("learning", figures.learning_curves(lc, bounds, curve)) + _extrapolation_tables(fits))
    return s


def _n(value: float) -> str:
    if value is None or math.isnan(value):
        return "<span class='na'>–</span>"
    if math.isinf(value):
        return "never"
    return f"{value:,.0f}"


def _extrapolation_tables(fits: pd.DataFrame) -> str:
    """Per eval set, one row per arm: the fit, F1 at 2x and 10x the largest size, examples needed."""
    if fits.empty:
        return ""
    parts = ["<p class='note'>Extrapolation per arm (80% intervals from the bootstrap). Examples needed: target"
             " questions at which the fitted curve reaches the target (the upper bound - 2 F1, or 95% of the"
             " asymptote without an upper bound). Leave-largest-out: the fit without the largest size, predicting"
             " it. A fit is not trustworthy with fewer than 4 sizes, non-monotone means, a failed, flat or"
             " unsaturated fit.</p>"]
    for eval_set, group in fits.groupby("eval_set", sort=True):
        rows = []
        for _, r in group.iterrows():
            if not r["trustworthy"]:
                rows.append(f"<tr><th class='row'>{h(r['series'])}</th><td class='l' colspan='5'>not trustworthy:"
                            f" {h(r['reason'])} ({h(r['sizes'])} sizes, {h(r['n_obs'])} runs)</td></tr>")
                continue
            fit = f"a {r['a']:.1f}, b {r['b']:.3g}, c {r['c']:.2f}"
            at = "".join(f"<td>{_num(r[f'f1_{m}x'])} ({_num(r[f'f1_{m}x_lo'])}–{_num(r[f'f1_{m}x_hi'])}) at"
                         f" {_n(int(m) * r['largest'])}</td>" for m in ("2", "10"))
            needed = f"{_n(r['needed'])} ({_n(r['needed_lo'])}–{_n(r['needed_hi'])})"
            hold = (f"{_num(r['holdout_predicted'])} vs {_num(r['holdout_observed'])} at {_n(r['holdout_size'])}"
                    f" ({r['holdout_error']:+.2f})" if not math.isnan(r["holdout_predicted"])
                    else f"<span class='na'>{h(r['holdout_reason'])}</span>")
            rows.append(f"<tr><th class='row'>{h(r['series'])}</th><td class='l'>{fit}</td>{at}"
                        f"<td class='l'>F1 {_num(r['target'])} ({h(r['target_rule'])}): {needed}</td>"
                        f"<td class='l'>{hold}</td></tr>")
        parts.append(
            f"<h3>Extrapolated on {h(eval_set)}</h3><div class='scroll'><table><thead><tr><th>arm</th>"
            "<th>fit</th><th>F1 at 2x the largest size</th><th>F1 at 10x</th>"
            "<th>examples needed</th><th>leave-largest-out</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table></div>")
    return "\n".join(parts)


def _depth_section(run: Run, figs: Figures) -> Section:
    s = Section("depth", "Depth sweep")
    ds = views.depth_sweep(run.table)
    if ds.empty:
        s.omitted = "no trials vary the mini-model depth."
        return s
    s.body = ("<p class='lede'>Final target-language F1 (mean over seeds, error bars one std) and training compute"
              " per mini-model depth, for each method and evaluation language.</p>\n"
              + figs.div("depth", figures.depth_sweep(ds)))
    return s


def _num(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<span class='na'>–</span>"
    return f"{value:.{digits}f}"


def table_html(table: pd.DataFrame, corner: str = "") -> str:
    """A (row label) x (group, metric) table with a two-level header."""
    groups = list(dict.fromkeys(table.columns.get_level_values(0)))
    top = "".join(
        f"<th colspan='{sum(1 for c in table.columns if c[0] == g)}' class='group'>{h(g)}</th>" for g in groups
    )
    sub = "".join(f"<th>{h(c[1])}</th>" for c in table.columns)
    body = "".join(
        f"<tr><th class='row'>{h(idx)}</th>" + "".join(f"<td>{_num(v)}</td>" for v in row) + "</tr>"
        for idx, row in zip(table.index, table.itertuples(index=False), strict=True)
    )
    return (f"<div class='scroll'><table><thead><tr><th rowspan='2' class='corner'>{h(corner)}</th>{top}</tr>"
            f"<tr>{sub}</tr></thead><tbody>{body}</tbody></table></div>")


def _tables_section(run: Run) -> Section:
    s = Section("tables", "Tables")
    if views.study_task(run.table) == "adapt":
        table = views.language_table(run.table)
        if table.empty:
            s.omitted = "no final scores yet."
            return s
        s.body = ("<p class='lede'>Final F1 and EM (%) per adaptation method and mini-model depth (rows) and"
                  " evaluation language (columns), mean over seeds.</p>\n" + table_html(table, "method, depth"))
        return s
    tables = views.paper_tables(run.table)
    if not tables:
        s.omitted = "no final scores yet."
        return s
    parts = ["<p class='lede'>Final F1 and EM (%) per model and training data (rows), fixed and validated mode"
             " (columns), mean over seeds; the layout of the DeepPavlov paper's Tables 1-3.</p>"]
    for eval_set, table in tables.items():
        parts.append(f"<h3>Evaluated on {h(eval_set)}</h3>\n{table_html(table, 'model (training data)')}")
    s.body = "\n".join(parts)
    return s


VERDICT_CLASS = {"reproduced": "ok", "within noise": "noise", "not reproduced": "bad", "not run": "none",
                 "CPU-scale": "cpu"}
VERDICT_MARK = {"reproduced": "✓", "within noise": "≈", "not reproduced": "✗", "not run": "–", "CPU-scale": "◦"}


def _verdicts_section(run: Run) -> Section:
    s = Section("verdicts", "Verdicts")
    if run.spec_raw is None:
        s.omitted = f"no {SPEC_FILE} in the run directory, so no published numbers to compare with."
        return s
    expected = run.expected
    if not expected:
        s.omitted = "the spec lists no published numbers (expected:) to compare with."
        return s
    scale = run.spec_value("scale")
    v = views.verdicts(run.table, expected, scale)
    rows = []
    for _, r in v.iterrows():
        measured = _num(r["measured"]) + (f" ± {_num(r['seed_std'])}" if not math.isnan(r["seed_std"]) else "")
        diff = "" if math.isnan(r["diff"]) else f"{r['diff']:+.2f}"
        rows.append(
            f"<tr><th class='row'>{h(r['label'])}</th><td class='l'>{h(r['metric'])} on {h(r['eval_set'])}</td>"
            f"<td class='l'>{h(r['where']) or '<span class=na>all trials</span>'}</td>"
            f"<td>{_num(r['expected'])} ± {_num(r['tolerance'])}</td><td>{measured}</td><td>{diff}</td>"
            f"<td>{h(r['n'])}</td><td class='verdict {VERDICT_CLASS[r['verdict']]}'>{VERDICT_MARK[r['verdict']]}"
            f" {h(r['verdict'])}</td><td class='l'>{h(r['source'])}</td></tr>"
        )
    lede = ("<p class='lede'>Each published number next to the mean of the matching trials' final scores"
            " (± std over seeds). Reproduced: within the stated tolerance; within noise: within two seed std.</p>")
    if scale == "cpu":
        lede += ("<p class='warn'>This is a CPU-scale study (small models and data): it does not claim the papers'"
                 " numbers, so every measured value is marked CPU-scale rather than judged.</p>")
    s.body = (lede + "<div class='scroll'><table><thead><tr><th>expected</th><th>metric</th><th>trials</th>"
              "<th>published (%)</th><th>measured (%)</th><th>diff</th><th>n</th><th>verdict</th><th>source</th>"
              "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")
    return s


CLAIM_CLASS = {claims.HOLDS: "ok", claims.FAILS: "bad", claims.NO_DATA: "none"}
CLAIM_MARK = {claims.HOLDS: "✓", claims.FAILS: "✗", claims.NO_DATA: "–"}


def _lines(text: str) -> str:
    return "<br>".join(h(line) for line in text.splitlines())


def _claims_section(run: Run) -> Section:
    s = Section("claims", "Claims")
    if run.spec_raw is None:
        s.omitted = f"no {SPEC_FILE} in the run directory, so no claims to judge."
        return s
    stated = run.claims
    if not stated:
        s.omitted = "the spec states no qualitative claims (claims:)."
        return s
    v = claims.judge_all(stated, run.table)
    rows = []
    for _, r in v.iterrows():
        verdict = r["verdict"] + (" (within seed spread)" if r["within_spread"] and r["verdict"] != claims.NO_DATA
                                  else "")
        rows.append(
            f"<tr><th class='row'>{h(r['text'])}</th><td class='l'>{h(r['kind'])}, {h(r['metric'])} on"
            f" {h(r['eval_set'])}</td><td class='verdict {CLAIM_CLASS[r['verdict']]}'>{CLAIM_MARK[r['verdict']]}"
            f" {h(verdict)}</td><td class='l'>{_lines(r['numbers']) or '<span class=na>–</span>'}</td>"
            f"<td class='l'>{_lines(r['detail'])}</td><td class='l'>{h(r['source'])}</td></tr>"
        )
    lede = ("<p class='lede'>The study's qualitative claims, judged from its rows: per cell (e.g. per target count)"
            " on the means over seeds. A claim within seed spread keeps its verdict, but one seed std (or a"
            " disagreeing seed) could flip it. A claim that does not hold is a result, not a bug.</p>")
    s.body = (lede + "<div class='scroll'><table><thead><tr><th>claim</th><th>kind</th><th>verdict</th>"
              "<th>numbers</th><th>detail</th><th>source</th></tr></thead><tbody>" + "".join(rows)
              + "</tbody></table></div>")
    return s


def _optuna_study(run: Run) -> tuple[Any, str | None]:
    """The Optuna study in optuna.db, or None and why not."""
    db = run.path / OPTUNA_DB
    if not db.exists():
        return None, f"no {OPTUNA_DB} in the run directory (grid searches and single trials have none)."
    try:
        # Read-only first: opening a foreign file through Optuna's storage would create its tables in it.
        with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as con:
            names = [r[0] for r in con.execute("SELECT study_name FROM studies")]
    except sqlite3.Error as e:
        return None, f"{OPTUNA_DB} is not an Optuna database ({e})."
    if not names:
        return None, f"{OPTUNA_DB} holds no Optuna study."
    name = run.name if run.name in names else names[0]
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    except Exception as e:  # a schema from another Optuna version, a locked file...
        return None, f"cannot open {OPTUNA_DB} with Optuna {optuna.__version__} ({str(e).splitlines()[0]})."
    return study, None


def _objective_names(run: Run, study: Any) -> list[str]:
    if getattr(study, "metric_names", None):
        return list(study.metric_names)
    names = []
    for o in run.spec_value("search", "objectives") or []:
        metric = {"f1": "F1 (%)", "exact_match": "EM (%)", "flops_train": "training FLOPs",
                  "device_seconds": "device-seconds"}.get(o.get("metric"), str(o.get("metric")))
        names.append(f"{metric} on {o['eval_set']}" if o.get("eval_set") else metric)
    return names or [f"objective {i}" for i in range(len(study.directions))]


def _search_section(run: Run, figs: Figures) -> Section:
    s = Section("search", "Search diagnostics")
    study, why = _optuna_study(run)
    if study is None:
        s.omitted = why or ""
        return s
    plots, notes = figures.search_diagnostics(study, _objective_names(run, study))
    if not plots:
        s.omitted = " ".join(notes).removeprefix("Search diagnostics not shown: ") or "nothing to draw."
        return s
    parts = [f"<p class='lede'>Optuna's view of the search (study {h(study.study_name)},"
             f" {len(study.trials)} trials in {OPTUNA_DB}).</p>"]
    parts += [figs.div(f"search-{i}", fig) for i, (_, fig) in enumerate(plots)]
    parts += [f"<p class='omitted'>{h(n)}</p>" for n in notes]
    s.body = "\n".join(parts)
    return s


def _breakdown_section(run: Run) -> Section:
    s = Section("breakdown", "Every final score")
    table = views.breakdown(run.table)
    if table.empty:
        s.omitted = "no final scores yet."
        return s
    s.body = ("<p class='lede'>Final F1 and EM (%) of every trial (rows, with the parameters that vary) on every"
              " evaluation set (columns).</p>\n" + table_html(table, "trial"))
    return s


# ---------------------------------------------------------------- the page


def _when(t: float | None) -> str:
    return "–" if t is None else datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _header(run: Run) -> str:
    s = views.summary(run.table)
    description = run.spec_value("description") or ""
    facts = [
        ("dates", f"{_when(s['first_time'])} – {_when(s['last_time'])}"),
        ("task", f"{s['task']}" + (f", {run.spec_value('scale')}-scale" if run.spec_value("scale") else "")),
        ("trials", f"{s['trials']} ({s['rows']} result rows)"),
        ("training compute", f"{s['flops_train']:.3g} FLOPs, {s['device_hours']:.3g} device-hours"),
        ("hardware", "; ".join(s["hardware"] + [d for d in s["devices"] if d not in ("cpu",)]) or "–"),
        ("xlt version", ", ".join(s["xlt_versions"]) or "–"),
        ("run directory", str(run.path)),
    ]
    warnings = []
    if run.partial:
        written = datetime.now(tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        warnings.append(f"<p class='warn'><b>Partial run</b> ({h(run.partial)}): the views cover only the"
                        f" evaluations recorded so far; this page was written {written}.</p>")
    if run.spec_value("model", "trust_remote_code"):
        warnings.append("<p class='warn'><b>trust_remote_code was ON</b>: this study ran code shipped with the"
                        " model, not only xlt's.</p>")
    if len(s["studies"]) > 1:
        warnings.append(f"<p class='warn'>The results table mixes studies: {h(', '.join(s['studies']))}.</p>")
    notes = "".join(f"<p class='note'>{h(n)}</p>" for n in run.notes)
    dl = "".join(f"<dt>{h(k)}</dt><dd>{h(v)}</dd>" for k, v in facts)
    return (f"<header><h1>{h(run.name)}</h1>" + (f"<p class='description'>{h(description)}</p>" if description else "")
            + f"<dl>{dl}</dl>{''.join(warnings)}{notes}</header>")


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1400px;
  padding:0 24px 48px;color:#1a1a1a;line-height:1.4}
header{border-bottom:1px solid #ddd;padding:12px 0}
h1{margin:8px 0 4px;font-size:1.7em} h2{margin:32px 0 6px;border-bottom:1px solid #eee}
h3{margin:18px 0 6px;font-size:1.05em}
.description{margin:0 0 8px;font-size:1.05em}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0;font-size:.92em}
dt{color:#555} dd{margin:0}
.warn{background:#fff4e0;border-left:4px solid #E69F00;padding:6px 10px;margin:6px 0}
.note,.lede{color:#444;font-size:.93em;margin:4px 0 8px}
.omitted{color:#666;font-style:italic;font-size:.93em;margin:6px 0}
nav ol{columns:2;font-size:.95em;margin:8px 0}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.9em;margin:6px 0 14px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;font-variant-numeric:tabular-nums}
th{background:#f5f5f5} th.row,td.l{text-align:left} th.row{font-weight:normal;background:#fafafa}
thead th{text-align:center;vertical-align:bottom} th.corner{text-align:left}
.na{color:#999}
.verdict{white-space:nowrap;text-align:left;font-weight:600}
.verdict.ok{color:#006b4f}.verdict.noise{color:#0060a0}.verdict.bad{color:#b23c00}.verdict.none,.verdict.cpu{color:#666}
footer{margin-top:40px;color:#777;font-size:.85em}
"""


def render(run: Run, tau: float = 0.95) -> str:
    """The page's HTML (plotly.js inlined)."""
    from plotly.offline import get_plotlyjs

    figs = Figures()
    sections: list[Section] = [
        _compute_section(run, figs, tau),
        _pareto_section(run, figs),
        _search_progress_section(run, figs),
        _learning_section(run, figs),
        _depth_section(run, figs),
        _breakeven_section(run, figs, tau),
        _tables_section(run),
        _verdicts_section(run),
        _claims_section(run),
        _search_section(run, figs),
        _breakdown_section(run),
    ]
    shown = [s for s in sections if s.body]
    toc = "".join(f"<li><a href='#{s.key}'>{h(s.title)}</a></li>" for s in shown)
    body = "\n".join(
        f"<section id='{s.key}'><h2>{h(s.title)}</h2>\n{s.body}\n</section>" if s.body
        else f"<p class='omitted' id='{s.key}'><b>{h(s.title)}</b>: not shown — {h(s.omitted)}</p>"
        for s in sections
    )
    made = datetime.now(tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>xlt: {h(run.name)}</title><style>{CSS}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>\n"
        f"{_header(run)}\n<nav><b>Contents</b><ol>{toc}</ol></nav>\n{body}\n"
        f"<footer>Made by xlt {h(__version__)} on {made} from {h(str(run.path / results.TABLE))};"
        f" {len(figs.ids)} figures.</footer>\n</body></html>\n"
    )


def default_out(run: Run) -> Path:
    return Path("dashboards") / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', run.name)}.html"


def main_dashboard(run_dir: str, out: str | None = None, *, tau: float = 0.95) -> Path:
    """Write the run's dashboard and return its path.

    ``out``: a file path, or a directory to hold ``<study>.html``; default ``dashboards/<study>.html``
    under the current directory. Bad input (no run directory, no/corrupt/old results table, an
    unreadable spec.json, an unwritable output) raises XltError with one line.
    """
    run = load_run(run_dir)
    if out is None:
        target = default_out(run)
    else:
        target = Path(out)
        if target.is_dir() or str(out).endswith(("/", "\\")):
            target = target / default_out(run).name
    page = render(run, tau=tau)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        results.atomic_write_bytes(target, page.encode("utf-8"))
        target.chmod(0o644)  # the temp file behind the atomic write is private; a dashboard is for sharing
    except OSError as e:
        raise XltError(f"{target}: cannot write the dashboard ({e.strerror or e})") from None
    return target


def driver_alive(run_dir: str | Path) -> bool:
    """Whether a driver (`xlt run`) holds the run directory now (its lock, alive by pid or heartbeat)."""
    holder = lock.holder(Path(run_dir) / lock.LOCK)
    return holder is not None and not lock.gone(holder)


def watch(run_dir: str, out: str | None = None, *, every: float = 30.0,
          on_write: Callable[[Path], None] = lambda path: None, sleep: Callable[[float], None] = time.sleep) -> Path:
    """Rewrite the run's page every `every` seconds while its driver runs, and once more after
    (`xlt dashboard RUN --watch`); returns the page's path. Whether the driver is alive is read
    before each write, so the last page covers everything the study recorded."""
    while True:
        alive = driver_alive(run_dir)
        target = main_dashboard(run_dir, out)
        on_write(target)
        if not alive:
            return target
        sleep(every)
