"""The search benchmark (xlt bench --parts search): the replay of a recorded grid on hand-built
tables whose answers are known, Ray Tune's ASHA rung rule as the replay drives it, and the bench
part end to end on a synthetic grid table (no training, no Ray run: seconds)."""

from __future__ import annotations

import json
import math

import pytest

from tests.helpers import run_cli
from xlt import results
from xlt.bench import BenchConfig, format_table, run_bench
from xlt.bench.replay import (
    Ledger,
    compute_to_target,
    grid_from_table,
    hypervolume,
    hypervolume_curve,
    spread,
)
from xlt.errors import XltError

EVAL = "heldout"


def trial_rows(trial_id: str, params: dict, f1s: list[float], *, flops_step: float = 1e9, eval_flops: float = 1e8,
               steps_per_eval: int = 10, seconds_per_eval: float = 2.0, final: bool = True) -> list[dict]:
    """A fixed-mode trial's rows as the pipeline writes them: an evaluation event every
    `steps_per_eval` steps (running compute totals), then the final event (a copy of the last)."""
    rows = []
    for i, f1 in enumerate(f1s):
        step = (i + 1) * steps_per_eval
        rows.append({"study": "g", "trial_id": trial_id, "params": json.dumps({**params, "train.seed": 0}),
                     "stage": "qa", "event": i, "step": step, "eval_set": EVAL, "f1": f1, "exact_match": f1 / 2,
                     "flops_train": step * flops_step, "flops_eval": (i + 1) * eval_flops,
                     "device_seconds": (i + 1) * seconds_per_eval, "is_final": False, "time": 1000.0 + i})
    if final:
        rows.append({**rows[-1], "stage": "final", "event": len(f1s), "is_final": True, "is_best": True,
                     "time": rows[-1]["time"] + 0.5, "device_seconds": rows[-1]["device_seconds"] + 0.1})
    return rows


def table(rows: list[dict], tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    results.write_table(tmp_path, rows)
    return results.read_table(tmp_path)


def small_grid_rows() -> list[dict]:
    """2 learning rates x 2 epoch counts; (lr 2, 2 epochs) is best at F1 50 after 4 events."""
    return [*trial_rows("t0", {"train.lr": 1, "train.epochs": 1}, [10, 20]),
            *trial_rows("t1", {"train.lr": 1, "train.epochs": 2}, [8, 15, 25, 30]),
            *trial_rows("t2", {"train.lr": 2, "train.epochs": 1}, [20, 40]),
            *trial_rows("t3", {"train.lr": 2, "train.epochs": 2}, [15, 30, 45, 50])]


def test_grid_from_table_rebuilds_each_trials_reports(tmp_path):
    grid = grid_from_table(table(small_grid_rows(), tmp_path))
    assert grid.keys == ("train.epochs", "train.lr") and grid.eval_set == EVAL  # train.seed has one value: left out
    assert grid.values == {"train.epochs": (1, 2), "train.lr": (1, 2)}
    best = grid.point({"train.lr": 2, "train.epochs": 2})
    # four evaluation events, then the final one: five Tune reports
    assert [r.f1 for r in best.reports] == [15, 30, 45, 50, 50]
    assert [r.flops for r in best.reports] == [1e10 + 1e8, 2e10 + 2e8, 3e10 + 3e8, 4e10 + 4e8, 4e10 + 4e8]
    assert best.reports[-1].device_seconds == pytest.approx(8.1) and best.reports[-1].flops_train == 4e10
    assert grid.best_f1 == 50
    # every point once: 2 x 2-event trials and 2 x 4-event trials
    assert grid.total("flops") == pytest.approx(2 * (2e10 + 2e8) + 2 * (4e10 + 4e8))
    assert grid.total("device_seconds") == pytest.approx(2 * 4.1 + 2 * 8.1)


def test_grid_from_table_refuses_what_is_not_a_full_grid(tmp_path):
    rows = small_grid_rows()
    with pytest.raises(XltError, match="3 trials for 4 combinations"):
        grid_from_table(table([r for r in rows if r["trial_id"] != "t3"], tmp_path / "a"))
    twice = rows + [{**r, "trial_id": "t4"} for r in rows if r["trial_id"] == "t3"]
    with pytest.raises(XltError, match="two trials at"):
        grid_from_table(table(twice, tmp_path / "b"))
    two_sets = rows + [{**r, "eval_set": "other"} for r in rows]
    with pytest.raises(XltError, match="2 eval sets evaluated during training"):
        grid_from_table(table(two_sets, tmp_path / "c"))
    assert grid_from_table(table(two_sets, tmp_path / "d"), "other").eval_set == "other"
    with pytest.raises(XltError, match="no parameter that varies"):
        grid_from_table(table(trial_rows("t0", {"train.lr": 1}, [1, 2]), tmp_path / "e"))


def test_a_section_override_is_one_choice(tmp_path):
    """`xlt trial` records overrides of whole sections (lists) in params: one JSON choice each."""
    evals = [{"name": EVAL, "max_questions": 10}]
    rows = [*trial_rows("t0", {"train.lr": 1, "data.eval": evals}, [1, 2]),
            *trial_rows("t1", {"train.lr": 2, "data.eval": evals}, [3, 4])]
    grid = grid_from_table(table(rows, tmp_path))
    assert grid.keys == ("train.lr",) and grid.point({"train.lr": 2}).final_f1 == 4


def test_ledger_charges_the_compute_recorded_where_a_trial_ends(tmp_path):
    grid = grid_from_table(table(small_grid_rows(), tmp_path))
    ledger = Ledger()
    a = ledger.run(grid.point({"train.lr": 1, "train.epochs": 2}))  # to the end
    assert (a.iterations, a.stopped, a.f1) == (5, False, 30)
    assert a.cost == {"flops": 4e10 + 4e8, "device_seconds": pytest.approx(8.1)}
    # stopped after its second report: charged what the second evaluation's row records
    b = ledger.run(grid.point({"train.lr": 2, "train.epochs": 2}), lambda i, r: i < 2)
    assert (b.iterations, b.stopped, b.f1, b.flops_train) == (2, True, 30, 2e10)
    assert b.spent["flops"] == pytest.approx(4e10 + 4e8 + 2e10 + 2e8)
    # the same point again is run (and charged) again
    c = ledger.run(grid.point({"train.lr": 2, "train.epochs": 2}))
    assert c.f1 == 50 and c.spent["flops"] == pytest.approx(2 * (4e10 + 4e8) + 2e10 + 2e8)
    total = grid.total("flops")
    # the target 49 (best 50 - 1) is first reached by the third trial's end
    assert compute_to_target(ledger.trials, 49, "flops") / total == pytest.approx(
        (2 * (4e10 + 4e8) + 2e10 + 2e8) / (2 * (2e10 + 2e8) + 2 * (4e10 + 4e8)))
    assert compute_to_target(ledger.trials, 29, "flops") == pytest.approx(4e10 + 4e8)  # the first trial's 30
    assert compute_to_target(ledger.trials, 51, "flops") is None


def test_a_failed_trial_is_charged_and_ends_without_f1(tmp_path):
    rows = small_grid_rows()
    rows = [r for r in rows if not (r["trial_id"] == "t0" and r["stage"] == "final")]
    grid = grid_from_table(table(rows, tmp_path))
    p = grid.point({"train.lr": 1, "train.epochs": 1})
    assert p.failed and p.final_f1 is None
    ended = Ledger().run(p)
    assert ended.f1 is None and ended.cost["flops"] == 2e10 + 2e8
    assert grid.total("flops") == pytest.approx(2 * (2e10 + 2e8) + 2 * (4e10 + 4e8))


def test_hypervolume_of_known_fronts():
    # one point: the rectangle to the reference
    assert hypervolume([(10, 2)], (0, 5)) == 30
    # a staircase of two non-dominated points: 3 x 10 + (5 - 4) x (20 - 10)
    assert hypervolume([(10, 2), (20, 4)], (0, 5)) == 40
    # a dominated point and one beyond the reference add nothing
    assert hypervolume([(10, 2), (20, 4), (5, 3), (99, 6)], (0, 5)) == 40
    assert hypervolume([], (0, 5)) == 0


def test_hypervolume_curve_reaches_one_with_the_whole_grid(tmp_path):
    grid = grid_from_table(table(small_grid_rows(), tmp_path))
    ledger = Ledger()
    for params in ({"train.lr": 2, "train.epochs": 1}, {"train.lr": 1, "train.epochs": 1},
                   {"train.lr": 1, "train.epochs": 2}, {"train.lr": 2, "train.epochs": 2}):
        ledger.run(grid.point(params))
    curve = hypervolume_curve(ledger.trials, grid, [0.0, 0.3, 1.0], "flops")
    # the reference: F1 0, 1.1 x 4e10 training FLOPs. The most any search finds is the front of
    # every report: (20, 1e10) from lr 2's first evaluation, (40, 2e10), (45, 3e10), (50, 4e10)
    whole = hypervolume(grid.reachable_points(), (0, 4.4e10))
    assert whole == pytest.approx(20 * 3.4e10 + 20 * 2.4e10 + 5 * 1.4e10 + 5 * 0.4e10)
    # the first trial (F1 40 at 2e10) alone ends at 2.02e10 / 1.212e11 = 0.17 of the grid's
    # compute; the whole grid run to the end misses the front's (20, 1e10) and (45, 3e10)
    grid_front = 40 * 2.4e10 + 10 * 0.4e10
    assert curve == pytest.approx([0.0, 40 * 2.4e10 / whole, grid_front / whole])


def test_spread_counts_unreached_seeds_as_infinite():
    s = spread([0.2, None, 0.4, 0.1, None])
    assert (s["median"], s["min"], s["max"], s["reached"], s["seeds"]) == (0.4, 0.1, None, 3, 5)
    assert s["q25"] == pytest.approx(0.2) and s["q75"] is None
    assert spread([0.5, 0.3])["median"] == pytest.approx(0.4)
    assert spread([None, None])["median"] is None


def test_asha_stops_as_rays_rung_rule_says(tmp_path):
    """Tune's ASHA (grace 1, reduction 2: rungs at iterations 1, 2, 4, ...) on curves whose
    decisions are known: at a rung, a trial below the median of what that rung recorded stops."""
    pytest.importorskip("ray")
    from xlt.study.asha import Asha

    rows = [*trial_rows("a", {"x": 1}, [10, 20, 30]), *trial_rows("b", {"x": 2}, [5, 50, 60]),
            *trial_rows("c", {"x": 3}, [15, 12, 40])]
    grid = grid_from_table(table(rows, tmp_path))
    asha, ledger = Asha("f1", "max", 1, 2.0), Ledger()
    for n, x in enumerate((1, 2, 3)):
        asha.start(str(n))
        ended = ledger.run(grid.point({"x": x}), lambda i, r, n=n: asha.keep_going(str(n), i, r.f1))
        asha.end(str(n), ended.iterations, ended.f1)
    a, b, c = ledger.trials
    assert (a.iterations, a.stopped) == (4, False)  # the first trial sets every rung: never stopped
    assert (b.iterations, b.stopped, b.f1) == (1, True, 5)  # 5 < 10 at rung 1
    # c: rung 1 holds {10, 5}, median 7.5 < 15 goes on; rung 2 holds {20}: 12 < 20 stops
    assert (c.iterations, c.stopped, c.f1) == (2, True, 12)
    assert b.cost["flops"] == 1e10 + 1e8 and c.cost["flops"] == 2e10 + 2e8


# ---------------------------------------------------------------- the bench part on a synthetic grid


def synthetic_grid_rows(lrs=(3e-5, 1e-4, 3e-4, 1e-3), epochs=(1, 2, 3), steps_per_epoch: int = 13,
                        eval_every: int = 5) -> list[dict]:
    """A grid shaped like studies/search_grid_cpu.yaml's: F1 rises with the steps taken and peaks
    at lr 3e-4; more epochs help a little. Every number follows from the formula below, so the
    replay's figures on it are reproducible (not a model of any real training)."""
    rows = []
    for i, (lr, ep) in enumerate((lr, ep) for lr in lrs for ep in epochs):
        total = steps_per_epoch * ep
        steps = [*range(eval_every, total, eval_every), total]
        ceiling = 40 - 12 * math.log10(lr / 3e-4) ** 2 + 3 * (ep - 1)
        f1s = [round(ceiling * (1 - math.exp(-s / steps_per_epoch)) / (1 - math.exp(-total / steps_per_epoch)), 2)
               for s in steps]
        for j, (s, f1) in enumerate(zip(steps, f1s, strict=True)):
            rows.append({"study": "synthetic", "trial_id": f"t{i:02d}",
                         "params": json.dumps({"train.lr": lr, "train.epochs": ep, "train.seed": 0}),
                         "stage": "qa", "event": j, "step": s, "eval_set": EVAL, "f1": f1, "exact_match": f1 / 2,
                         "flops_train": s * 1.3e11, "flops_eval": (j + 1) * 2.5e10,
                         "device_seconds": 5 + s * 3.5 + (j + 1) * 1.5, "is_final": False, "time": 1000.0 + j})
        rows.append({**rows[-1], "stage": "final", "event": len(steps), "is_final": True, "time": rows[-1]["time"] + 1})
    return rows


SEARCH = BenchConfig(mode="test", parts=("search",), search_seeds=3, search_budget=1.5)


@pytest.fixture(scope="module")
def synthetic_out(tmp_path_factory):
    pytest.importorskip("ray")
    d = tmp_path_factory.mktemp("grid")
    results.write_table(d, synthetic_grid_rows())
    from dataclasses import replace

    return run_bench(replace(SEARCH, search_grid=str(d)), log=lambda msg: None)


def test_search_part_on_a_synthetic_grid(synthetic_out):
    out = synthetic_out
    assert out["errors"] == {}
    s = out["search"]
    assert (s["points"], s["keys"], s["eval_set"]) == (12, ["train.epochs", "train.lr"], EVAL)
    assert s["grid_best_params"] == {"train.epochs": 3, "train.lr": 3e-4} and s["grid_best_f1"] == 46
    assert s["target_f1"] == 45
    assert set(s["searchers"]) == {"grid", "random", "tpe", "tpe_asha", "nsga2", "tpe_asha_max_epochs"}
    g = s["searchers"]["grid"]
    # the grid runs each point once: it spends exactly its own compute and always finds its best
    assert (g["trials"], g["distinct_points"], g["spent_fraction"]) == (12, 12, pytest.approx(1.0))
    assert g["compute_to_target_fraction"]["flops"]["reached"] == 3
    assert all(0 < f <= 1 for f in g["compute_to_target_fraction"]["flops"]["per_seed"])
    # the whole grid, run to the end, finds its finished trials' front (a share of every report's)
    assert g["hypervolume"]["median"][g["hypervolume"]["compute_fraction"].index(1.0)] == pytest.approx(
        s["grid_hypervolume_share"]) and 0 < s["grid_hypervolume_share"] <= 1
    assert g["stopped_early"] == 0
    for name, r in s["searchers"].items():
        hv = r["hypervolume"]["median"]
        assert hv == sorted(hv) and all(0 <= h <= 1 + 1e-9 for h in hv), name  # more compute, never less found
        assert len(r["compute_to_target_fraction"]["device_seconds"]["per_seed"]) == SEARCH.search_seeds
        # a search starts trials until it has spent its budget (the grid: until every point ran)
        assert name == "grid" or r["spent_fraction"] >= SEARCH.search_budget, name
    assert s["searchers"]["tpe_asha"]["stopped_early"] > 0  # ASHA stopped some trials
    assert s["searchers"]["tpe"]["stopped_early"] == 0
    assert s["searchers"]["tpe_asha_max_epochs"]["distinct_points"] <= 4  # 4 learning rates at 3 epochs
    assert "search_tpe_asha_compute_to_target_fraction" in out["targets"]
    json.loads(json.dumps(out))
    text = format_table(out)
    assert "Search   12-point grid" in text and "tpe_asha" in text


def test_search_part_is_reproducible(synthetic_out, tmp_path):
    pytest.importorskip("ray")
    from dataclasses import replace

    results.write_table(tmp_path, synthetic_grid_rows())
    again = run_bench(replace(SEARCH, search_grid=str(tmp_path)), log=lambda msg: None)
    for name in ("tpe", "tpe_asha", "nsga2"):
        assert (again["search"]["searchers"][name]["compute_to_target_fraction"]
                == synthetic_out["search"]["searchers"][name]["compute_to_target_fraction"]), name


def test_search_part_without_a_recorded_grid_fails_in_one_line(tmp_path):
    from dataclasses import replace

    out = run_bench(replace(SEARCH, search_grid=str(tmp_path / "absent")), log=lambda msg: None)
    msg = out["errors"]["search"]
    assert "search" not in out and "\n" not in msg
    assert "no recorded grid" in msg and "xlt run studies/search_grid_cpu.yaml" in msg


def test_cli_bench_search_without_the_recorded_grid(monkeypatch, tmp_path):
    code, out, err = run_cli("bench", "--parts", "search")
    from xlt.bench.search import grid_path

    if (grid_path(BenchConfig()) / results.TABLE).exists():
        pytest.skip("the recorded grid is shipped: see test_search_part_on_a_synthetic_grid")
    assert code == 2, err
    assert "xlt bench: search: no recorded grid at" in err and "record it with" in err


def test_cli_bench_search_on_a_grid_given(tmp_path):
    pytest.importorskip("ray")
    results.write_table(tmp_path, synthetic_grid_rows())
    code, out, err = run_cli("bench", "--parts", "search", "--grid", str(tmp_path))
    assert code == 0, err
    assert json.loads(out)["search"]["points"] == 12 and "fastest to the target" in err
