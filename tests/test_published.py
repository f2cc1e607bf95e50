"""Shipped results (studies/results/<study>/, written by `xlt publish`): every committed table
rebuilds its page, and its claims and published numbers judged again from the committed rows
give the committed verdicts.json. `xlt publish` itself on a fake finished run."""

from __future__ import annotations

import json

import pytest

from tests.helpers import ROOT, run_cli
from tests.test_dashboards import fake_run
from xlt.dashboards.publish import SCREENSHOT, VERDICTS, judged

SHIPPED = sorted(p.parent for p in (ROOT / "studies" / "results").glob(f"*/{VERDICTS}"))


@pytest.mark.parametrize("shipped", SHIPPED, ids=lambda p: p.name)
def test_shipped_results_rebuild_their_page_and_verdicts(tmp_path, shipped):
    assert judged(shipped) == json.loads((shipped / VERDICTS).read_text(encoding="utf-8"))
    code, out, err = run_cli("dashboard", str(shipped), "--out", str(tmp_path / "page.html"))
    assert code == 0, err
    assert "<section id='claims'>" in (tmp_path / "page.html").read_text(encoding="utf-8") or not judged(shipped)["claims"]
    assert (shipped / SCREENSHOT).exists(), f"{shipped}: no screenshot"


def test_publish_copies_judges_and_refuses_an_unfinished_run(tmp_path):
    run = fake_run(tmp_path, optuna_trials=0)
    dest = tmp_path / "shipped"
    code, out, err = run_cli("publish", str(run), "--to", str(dest), "--no-screenshot")
    assert code == 0, err
    assert {p.name for p in dest.iterdir()} >= {"results.parquet", "spec.json", "DONE", VERDICTS}
    verdicts = json.loads((dest / VERDICTS).read_text())
    assert [c["text"] for c in verdicts["claims"]] == ["+English beats target-only at <= 1,000 questions",
                                                      "step 2 lifts F1"]
    assert len(verdicts["expected"]) == 3 and verdicts == judged(dest)
    (run / "DONE").unlink()
    code, _, err = run_cli("publish", str(run), "--to", str(tmp_path / "again"), "--no-screenshot")
    assert code == 2 and "publish a finished run" in err and len(err.strip().splitlines()) == 1, err


def test_publish_with_another_study_file_must_hash_alike(tmp_path):
    import yaml

    run = fake_run(tmp_path, optuna_trials=0)
    spec = json.loads((run / "spec.json").read_text())
    other = tmp_path / "other.yaml"
    spec["train"]["lr"] = 0.5
    other.write_text(yaml.safe_dump(spec))
    code, _, err = run_cli("publish", str(run), "--to", str(tmp_path / "x"), "--study", str(other), "--no-screenshot")
    assert code == 2 and "not the study" in err and "train.lr" in err, err
    spec["train"]["lr"] = json.loads((run / "spec.json").read_text())["train"]["lr"]
    spec["claims"] = []
    other.write_text(yaml.safe_dump(spec))
    code, _, err = run_cli("publish", str(run), "--to", str(tmp_path / "y"), "--study", str(other), "--no-screenshot")
    assert code == 0, err
    assert json.loads((tmp_path / "y" / VERDICTS).read_text())["claims"] == []


def test_publish_takes_a_screenshot_when_chromium_is_there(tmp_path):
    import shutil

    if not any(shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("no Chromium: apt-get install chromium")
    run = fake_run(tmp_path, optuna_trials=0)
    code, out, err = run_cli("publish", str(run), "--to", str(tmp_path / "s"))
    assert code == 0, err
    png = (tmp_path / "s" / SCREENSHOT).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_a_table_written_before_the_added_columns_still_reads(tmp_path):
    import pyarrow.parquet as pq

    from tests.test_dashboards import learning_curve_rows
    from xlt import results

    results.write_table(tmp_path, learning_curve_rows())
    old = pq.read_table(tmp_path / results.TABLE).drop_columns(list(results.ADDED))
    pq.write_table(old, tmp_path / results.TABLE)
    table = results.read_table(tmp_path)
    assert set(results.ADDED) <= set(table.columns) and table[list(results.ADDED)].isna().all().all()


def test_a_torn_results_table_is_rebuilt_from_the_row_log(tmp_path, capsys):
    from tests.test_dashboards import learning_curve_rows
    from xlt import results

    rows = learning_curve_rows()
    results.append_rows(tmp_path, rows)
    good = results.write_table(tmp_path).read_bytes()
    (tmp_path / results.TABLE).write_bytes(good[: len(good) // 2])  # torn mid-write by a crash elsewhere
    table = results.read_table(tmp_path)
    assert len(table) == len(rows) and "rebuilt from rows.jsonl" in capsys.readouterr().err
    assert (tmp_path / results.TABLE).read_bytes() == good
