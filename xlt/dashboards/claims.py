"""Qualitative claims judged from the results table: ``judge(claim, df) -> Verdict``.

Pure: numbers and raw strings, nothing drawn or escaped. A claim (``xlt.spec.OrderClaim``,
``RatioClaim``, ``LiftClaim``) selects trials with ``where`` (a value, a list of values, or numeric
bounds per trial parameter), splits them into cells (``pair_by``), and compares per cell:

- order: mean(better) - mean(worse) > margin;
- ratio: the subject's mean curve (``stage`` rows) reaches quality x the reference's mean final
  score, at a cost <= compute x the reference's cost;
- lift: mean over trials of (final row - baseline row) >= delta.

Verdict: "holds" when every cell holds (``require: any``: some cell), "does not hold" when a judged
cell fails (any: none holds), "not enough data" when no cell can be judged.

Seed spread (the rule): a cell is decided on the means over seeds. Its deciding quantity is also
computed per ``seed`` (paired by seed when both sides have two or more common seeds, else each seed
of the side that has several against the other side's mean), and shown as mean ± std (min..max).
The cell is *within seed spread* when its quantity is no further from the threshold than one seed
std, or when the seeds do not all agree with the means' verdict; the verdict is kept and the detail
says so. With one seed per side there is no spread, and the detail says that too.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from xlt.dashboards.views import _params, _same, _sort_key, fmt
from xlt.spec import Bounds, ClaimGroup, LiftClaim, OrderClaim, RatioClaim, RowPick

HOLDS, FAILS, NO_DATA = "holds", "does not hold", "not enough data"
VERDICTS = (HOLDS, FAILS, NO_DATA)
SEED_KEYS = ("train.seed", "seed")
Claim = OrderClaim | RatioClaim | LiftClaim


@dataclass(frozen=True)
class Cell:
    """One compared cell (e.g. one target_count): ok is None when it cannot be judged."""

    label: str
    ok: bool | None
    numbers: str
    spread: str = ""  # the seed spread of the deciding quantity, "" with one seed
    within_spread: bool = False


@dataclass(frozen=True)
class Verdict:
    verdict: str  # holds | does not hold | not enough data
    numbers: str  # one line per cell: what decides it
    detail: str  # how many cells hold, seed spread, what had no data
    cells: tuple[Cell, ...] = field(default_factory=tuple)

    @property
    def within_spread(self) -> bool:
        return any(c.within_spread for c in self.cells if c.ok is not None)


# ---------------------------------------------------------------- selecting trials and rows


def matches(have: Any, want: Any) -> bool:
    """A trial's value against a where condition: bounds, a list (any of), or a value."""
    if hasattr(have, "item"):
        have = have.item()
    if isinstance(want, Bounds):
        if have is None or isinstance(have, bool | str) or (isinstance(have, float) and math.isnan(have)):
            return False
        try:
            x = float(have)
        except (TypeError, ValueError):
            return False
        return ((want.lt is None or x < want.lt) and (want.le is None or x <= want.le)
                and (want.gt is None or x > want.gt) and (want.ge is None or x >= want.ge))
    if isinstance(want, tuple | list):
        return any(_same(have, w) for w in want)
    return bool(_same(have, want))


def describe_where(where: dict[str, Any]) -> str:
    parts = []
    for key, want in where.items():
        name = key.split(".")[-1]
        if isinstance(want, Bounds):
            ops = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
            parts += [f"{name} {sym} {fmt(getattr(want, k))}" for k, sym in ops if getattr(want, k) is not None]
        elif isinstance(want, tuple | list):
            parts.append(f"{name} in {{{', '.join(fmt(w) for w in want)}}}")
        else:
            parts.append(f"{name}={fmt(want)}")
    return ", ".join(parts) or "all trials"


@dataclass
class _Trials:
    """Trial-level facts: the first row's columns and the searched parameters of every trial."""

    first: pd.DataFrame  # index trial_id
    params: dict[str, dict[str, Any]]

    @classmethod
    def of(cls, df: pd.DataFrame) -> _Trials:
        first = df.sort_values(["trial_id", "event"], kind="stable").groupby("trial_id", sort=True).first()
        return cls(first, {t: _params(p) for t, p in first["params"].items()})

    def value(self, trial_id: str, key: str) -> Any:
        """A results column by name, else the searched parameter (dotted key), else the column named
        by the key's last part (train.lr -> lr): as ``Expected.where`` reads it."""
        row = self.first.loc[trial_id]
        if key in self.first.columns:
            return row[key]
        params = self.params.get(trial_id, {})
        if key in params:
            return params[key]
        last = key.split(".")[-1]
        return row[last] if last in self.first.columns else None

    def select(self, where: dict[str, Any], among: Iterable[str] | None = None) -> list[str]:
        ids = list(self.first.index) if among is None else list(among)
        return [t for t in ids if all(matches(self.value(t, k), w) for k, w in where.items())]

    def seed(self, trial_id: str) -> Any:
        value = self.first.loc[trial_id, "seed"] if "seed" in self.first.columns else None
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        return int(value)


def pick_values(df: pd.DataFrame, eval_set: str, pick: RowPick, metric: str,
                columns: Iterable[str] = ()) -> pd.DataFrame:
    """Per trial, the row ``pick`` selects on ``eval_set``: index trial_id, the metric as ``value``
    (rows without it dropped) and the requested columns."""
    on_set = df[df["eval_set"] == eval_set]
    if pick.stage == "final":
        rows = on_set[on_set["is_final"].eq(True)].sort_values(["trial_id", "time"], kind="stable")
        chosen = rows.groupby("trial_id").tail(1)
    else:
        rows = on_set[on_set["stage"] == pick.stage].sort_values(["trial_id", "event"], kind="stable")
        if isinstance(pick.step, int):
            chosen = rows[rows["step"] == pick.step].groupby("trial_id").tail(1)
        elif pick.step == "first":
            chosen = rows.groupby("trial_id").head(1)
        else:
            chosen = rows.groupby("trial_id").tail(1)
    out = chosen.set_index("trial_id")[[metric, *columns]].rename(columns={metric: "value"})
    return out[out["value"].notna()]


def _pick_text(pick: RowPick) -> str:
    if pick.stage == "final":
        return "final"
    return f"{pick.stage} step {pick.step if pick.step is not None else 'last'}"


# ---------------------------------------------------------------- cells


def _named(key: str, names: Iterable[str]) -> bool:
    last = key.split(".")[-1]
    return any(key == n or last == n.split(".")[-1] for n in names)


def _pair_keys(claim: Claim, trials: _Trials, sides: list[list[str]]) -> list[str]:
    """pair_by, or "auto": every searched parameter but the seed that varies within a side (a key a
    side's where fixes does not vary within it)."""
    if claim.pair_by != "auto":
        return list(claim.pair_by)
    keys = dict.fromkeys(k for side in sides for t in side for k in trials.params.get(t, {}))
    return [k for k in keys if not _named(k, SEED_KEYS) and any(_varies(trials, side, k) for side in sides)]


def _key(value: Any) -> str:
    if hasattr(value, "item"):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 100 in params, 100.0 from a column with gaps
    return json.dumps(value, sort_keys=True, default=str)


def _varies(trials: _Trials, side: list[str], key: str) -> bool:
    return len({_key(trials.value(t, key)) for t in side}) > 1


def _cells(trials: _Trials, sides: list[list[str]], keys: list[str]) -> tuple[list[tuple[str, list[list[str]]]], list[str]]:
    """Cells over the pairing keys: a key that varies within a side splits it; a side on which it
    does not vary joins every cell. Returns (label, trials per side) per cell, and the cells of one
    side that found no partner on another."""
    varying = [[k for k in keys if _varies(trials, side, k)] for side in sides]
    combos: list[dict[tuple[str, ...], dict[str, Any]]] = []
    for side, ks in zip(sides, varying, strict=True):
        found: dict[tuple[str, ...], dict[str, Any]] = {}
        for t in side:
            values = {k: trials.value(t, k) for k in ks}
            found.setdefault(tuple(_key(v) for v in values.values()), values)
        combos.append(dict(sorted(found.items(), key=lambda kv: tuple(_sort_key(v) for v in kv[1].values()))))
    cells: list[tuple[str, list[list[str]]]] = []
    used: list[set[tuple[str, ...]]] = [set() for _ in sides]

    def extend(i: int, chosen: list[tuple[str, ...]], values: dict[str, Any]) -> None:
        if i == len(sides):
            members = [[t for t in side if tuple(_key(trials.value(t, k)) for k in ks) == c]
                       for side, ks, c in zip(sides, varying, chosen, strict=True)]
            label = ", ".join(f"{k.split('.')[-1]}={fmt(v)}" for k, v in values.items()) or "all trials"
            cells.append((label, members))
            for j, c in enumerate(chosen):
                used[j].add(c)
            return
        for combo, vals in combos[i].items():
            if all(_key(values[k]) == _key(v) for k, v in vals.items() if k in values):
                extend(i + 1, [*chosen, combo], {**values, **vals})

    extend(0, [], {})
    unpaired = []
    if len(sides) > 1:
        for j, found in enumerate(combos):
            for combo, vals in found.items():
                if combo not in used[j]:
                    unpaired.append(", ".join(f"{k.split('.')[-1]}={fmt(v)}" for k, v in vals.items()))
    return cells, unpaired


def _by_seed(trials: _Trials, ids: list[str]) -> dict[Any, list[str]]:
    out: dict[Any, list[str]] = {}
    for t in ids:
        out.setdefault(trials.seed(t), []).append(t)
    return out


def _seedwise(trials: _Trials, sides: list[list[str]],
              f: Callable[..., tuple[float | None, bool | None]]) -> list[tuple[float | None, bool | None]]:
    """The deciding quantity per seed: paired by seed when all sides share two or more seeds, else
    each seed of the first side that has several, with the other sides whole."""
    groups = [_by_seed(trials, s) for s in sides]
    common = set.intersection(*(set(g) for g in groups)) - {None}
    if len(common) >= 2:
        return [f(*(g[s] for g in groups)) for s in sorted(common)]
    for i, g in enumerate(groups):
        seeds = [s for s in g if s is not None]
        if len(seeds) >= 2:
            return [f(*(g[s] if j == i else side for j, side in enumerate(sides))) for s in sorted(seeds)]
    return []


def _spread(q: float, threshold: float, ok: bool, per_seed: list[tuple[float | None, bool | None]],
            name: str = "") -> tuple[str, bool]:
    """The seed spread text and whether the cell is within it (the module docstring's rule)."""
    values = [v for v, _ in per_seed if v is not None and not math.isnan(v)]
    if not per_seed:
        return "", False
    disagree = sum(1 for _, o in per_seed if o is not None and o != ok)
    text = f"over {len(per_seed)} seeds"
    within = disagree > 0
    if len(values) >= 2:
        sd = statistics.stdev(values)
        text = (f"{name}{' ' if name else ''}{statistics.fmean(values):+.3g} ± {sd:.2g}"
                f" ({min(values):+.3g}..{max(values):+.3g}) {text}")
        within = within or abs(q - threshold) <= sd
    if disagree:
        text += f"; {disagree} of {len(per_seed)} seeds disagree"
    return text, within


# ---------------------------------------------------------------- the three kinds


def _mean(values: Iterable[float]) -> float | None:
    vals = [float(v) for v in values if v is not None and not math.isnan(v)]
    return statistics.fmean(vals) if vals else None


def _label(group: ClaimGroup) -> str:
    return group.label or describe_where(group.where)


def _order_cell(claim: OrderClaim, trials: _Trials, df: pd.DataFrame, label: str, members: list[list[str]]) -> Cell:
    a_vals = pick_values(df, claim.eval_set, claim.better, claim.metric)["value"]
    b_vals = pick_values(df, claim.eval_set, claim.worse, claim.metric)["value"]
    a_ids = [t for t in members[0] if t in a_vals.index]
    b_ids = [t for t in members[1] if t in b_vals.index]
    la, lb = _label(claim.better), _label(claim.worse)
    if not a_ids or not b_ids:
        missing = la if not a_ids else lb
        return Cell(label, None, f"{label}: no {_pick_text(claim.better if not a_ids else claim.worse)} "
                                 f"{claim.metric} of {missing} on {claim.eval_set}")

    def diff(a: list[str], b: list[str]) -> tuple[float | None, bool | None]:
        ma, mb = _mean(a_vals[t] for t in a), _mean(b_vals[t] for t in b)
        if ma is None or mb is None:
            return None, None
        return ma - mb, ma - mb > claim.margin

    q, ok = diff(a_ids, b_ids)
    assert q is not None and ok is not None
    ma, mb = _mean(a_vals[t] for t in a_ids), _mean(b_vals[t] for t in b_ids)
    spread, within = _spread(q, claim.margin, ok, _seedwise(trials, [a_ids, b_ids], diff), "diff")
    numbers = (f"{label}: {la} {ma:.2f} vs {lb} {mb:.2f}, diff {q:+.2f} {'>' if ok else '<='} margin"
               f" {claim.margin:g} (n={len(a_ids)} vs {len(b_ids)})")
    return Cell(label, ok, numbers, spread, within)


def _curve(df: pd.DataFrame, claim: RatioClaim, ids: list[str]) -> pd.DataFrame:
    """Mean curve of trials on the eval set: per step, metric and cost."""
    rows = df[(df["eval_set"] == claim.eval_set) & (df["stage"] == claim.stage) & df["trial_id"].isin(ids)]
    rows = rows[rows[claim.metric].notna() & rows[claim.cost].notna()]
    if rows.empty:
        return pd.DataFrame(columns=["step", "value", "cost"])
    return (rows.groupby("step", sort=True).agg(value=(claim.metric, "mean"), cost=(claim.cost, "mean"))
            .reset_index())


def _first_reach(curve: pd.DataFrame, target: float) -> float | None:
    hit = curve[curve["value"] >= target]
    return float(hit["cost"].iloc[0]) if len(hit) else None


def _ratio_numbers(claim: RatioClaim, df: pd.DataFrame, ref_vals: pd.Series, s_ids: list[str],
                   r_ids: list[str]) -> dict[str, Any] | None:
    ref = _mean(ref_vals[t] for t in r_ids if t in ref_vals.index)
    curve = _curve(df, claim, s_ids)
    ref_curve = _curve(df, claim, r_ids)
    if ref is None or ref <= 0 or curve.empty or ref_curve.empty:
        return None
    target = claim.quality * ref
    best = float(curve["value"].max())
    cost_s = _first_reach(curve, target)
    if claim.reference_cost == "final":
        last = df[(df["stage"] == claim.stage) & df["trial_id"].isin(r_ids) & df[claim.cost].notna()]
        cost_r = _mean(last.groupby("trial_id")[claim.cost].max()) if len(last) else None
    else:
        cost_r = _first_reach(ref_curve, target)
    if cost_r is None or cost_r <= 0:
        return None
    cr = None if cost_s is None else cost_s / cost_r
    ok = cost_s is not None and (claim.compute is None or (cr is not None and cr <= claim.compute))
    return {"ref": ref, "target": target, "best": best, "best_ratio": best / ref, "cost_s": cost_s,
            "cost_r": cost_r, "cr": cr, "ok": ok}


def _ratio_cell(claim: RatioClaim, trials: _Trials, df: pd.DataFrame, label: str, members: list[list[str]]) -> Cell:
    ref_vals = pick_values(df, claim.eval_set, claim.reference, claim.metric)["value"]
    s_ids, r_ids = members
    ls, lr = _label(claim.subject), _label(claim.reference)
    n = _ratio_numbers(claim, df, ref_vals, s_ids, r_ids)
    if n is None:
        return Cell(label, None, f"{label}: needs {lr}'s {_pick_text(claim.reference)} {claim.metric} and {claim.cost}"
                                 f" and {ls}'s {claim.stage} curve on {claim.eval_set}")
    ok = bool(n["ok"])
    if n["cost_s"] is None:
        numbers = (f"{label}: {ls} never reaches {n['target']:.2f} (= {claim.quality:g} x {lr} {n['ref']:.2f});"
                   f" best {n['best']:.2f} = {n['best_ratio']:.3f} x")
    else:
        need = f" (<= {claim.compute:g} needed)" if claim.compute is not None else ""
        numbers = (f"{label}: {ls} reaches {n['target']:.2f} (= {claim.quality:g} x {lr} {n['ref']:.2f}) at"
                   f" {n['cost_s']:.3g} {claim.cost} = {n['cr']:.3f} x {lr}'s {n['cost_r']:.3g}{need}")

    def per_seed(s: list[str], r: list[str]) -> tuple[float | None, bool | None]:
        m = _ratio_numbers(claim, df, ref_vals, s, r)
        if m is None:
            return None, None
        return (m["cr"] if claim.compute is not None else m["best_ratio"]), bool(m["ok"])

    seeds = _seedwise(trials, [s_ids, r_ids], per_seed)
    if claim.compute is not None and n["cr"] is not None:
        spread, within = _spread(n["cr"], claim.compute, ok, seeds, "cost ratio")
    else:
        spread, within = _spread(n["best_ratio"], claim.quality, ok, seeds, "best/reference")
    return Cell(label, ok, numbers, spread, within)


def _lift_cell(claim: LiftClaim, trials: _Trials, df: pd.DataFrame, label: str, members: list[list[str]]) -> Cell:
    base = pick_values(df, claim.eval_set, claim.baseline, claim.metric)["value"]
    final = pick_values(df, claim.eval_set, claim.final, claim.metric)["value"]
    ids = [t for t in members[0] if t in base.index and t in final.index]
    if not ids:
        return Cell(label, None, f"{label}: no trial has both a {_pick_text(claim.baseline)} and a"
                                 f" {_pick_text(claim.final)} {claim.metric} on {claim.eval_set}")

    def lift(group: list[str]) -> tuple[float | None, bool | None]:
        m = _mean(final[t] - base[t] for t in group)
        return (None, None) if m is None else (m, m >= claim.delta)

    q, ok = lift(ids)
    assert q is not None and ok is not None
    b, f = _mean(base[t] for t in ids), _mean(final[t] for t in ids)
    spread, within = _spread(q, claim.delta, ok, _seedwise(trials, [ids], lift), "lift")
    numbers = (f"{label}: {_pick_text(claim.baseline)} {b:.2f} -> {_pick_text(claim.final)} {f:.2f}, lift {q:+.2f}"
               f" {'>=' if ok else '<'} {claim.delta:g} (n={len(ids)})")
    return Cell(label, ok, numbers, spread, within)


# ---------------------------------------------------------------- judging


def judge(claim: Claim, df: pd.DataFrame) -> Verdict:
    """Whether the results table supports the claim, with the numbers that decide it."""
    if df.empty or not (df["eval_set"] == claim.eval_set).any():
        return Verdict(NO_DATA, "", f"no rows on eval set {claim.eval_set}")
    trials = _Trials.of(df)
    pool = trials.select(claim.where)
    if isinstance(claim, LiftClaim):
        groups: list[ClaimGroup | None] = [None]
        sides = [pool]
    else:
        pair = (claim.better, claim.worse) if isinstance(claim, OrderClaim) else (claim.subject, claim.reference)
        groups = list(pair)
        sides = [trials.select(g.where, pool) for g in pair]
    names = [_label(g) if g is not None else describe_where(claim.where) for g in groups]
    empty = [n for n, s in zip(names, sides, strict=True) if not s]
    if empty:
        return Verdict(NO_DATA, "", f"no trials match {' and '.join(empty)}")
    keys = _pair_keys(claim, trials, sides)
    cells_in, unpaired = _cells(trials, sides, keys)
    make = {OrderClaim: _order_cell, RatioClaim: _ratio_cell, LiftClaim: _lift_cell}[type(claim)]
    cells = tuple(make(claim, trials, df, label, members) for label, members in cells_in)  # type: ignore[operator]
    judged = [c for c in cells if c.ok is not None]
    notes = []
    if unpaired:
        notes.append(f"no partner for {'; '.join(unpaired)}")
    if not judged:
        if not cells:
            notes.insert(0, f"no cell where both sides have trials (paired by {', '.join(keys)};"
                            " pair_by: [] compares the pooled sides)")
        return Verdict(NO_DATA, "\n".join(c.numbers for c in cells), "; ".join(notes) or "no cell could be judged",
                       cells)
    passed = sum(1 for c in judged if c.ok)
    if claim.require == "all":
        verdict = HOLDS if passed == len(judged) else FAILS
    else:
        verdict = HOLDS if passed else FAILS
    head = f"{passed} of {len(judged)} cells hold" + (f" (require {claim.require})" if len(judged) > 1 else "")
    if len(judged) < len(cells):
        notes.append(f"{len(cells) - len(judged)} cells without data")
    deciding = [c for c in judged if (c.ok if verdict == HOLDS else not c.ok)]
    close = [c.label for c in deciding if c.within_spread]
    if close:
        notes.append(f"within seed spread: {', '.join(close)} (the means decide; other seeds could flip it)")
    elif not any(c.spread for c in judged):
        notes.append("one seed per side: no seed spread")
    spreads = [f"{c.label}: {c.spread}" for c in judged if c.spread]
    detail = "; ".join([head, *notes]) + ("\nseed spread: " + "; ".join(spreads) if spreads else "")
    return Verdict(verdict, "\n".join(c.numbers for c in cells), detail, cells)


def judge_all(claims: Iterable[Claim], df: pd.DataFrame) -> pd.DataFrame:
    """One row per claim for the page: kind, text, source, verdict, numbers, detail, within_spread."""
    rows = []
    for claim in claims:
        v = judge(claim, df)
        rows.append({"kind": claim.kind, "text": claim.text, "source": claim.source, "metric": claim.metric,
                     "eval_set": claim.eval_set, "verdict": v.verdict, "numbers": v.numbers, "detail": v.detail,
                     "within_spread": v.within_spread})
    return pd.DataFrame(rows, columns=["kind", "text", "source", "metric", "eval_set", "verdict", "numbers", "detail",
                                       "within_spread"])

