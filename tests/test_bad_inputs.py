"""Bad inputs get one line: `xlt: error: <file/key>: <what is wrong>`, exit code 2, no traceback.

The corpus is tests/bad_inputs/ (see cases.yaml there). Every case runs in-process through
`xlt.cli.main`; the cases marked `subprocess: true` also run in a real process, which proves
that nothing reaches the terminal but the one line.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))
COMMANDS = {"validate", "estimate", "eval", "trial", "flops", "dashboard"}
# lines that may accompany the error: xlt's own warnings, Python warnings and their source line
WARNING = re.compile(r"^(xlt: warning: |\S+:\d+: \w*Warning: |\s)")
UNSET = "XLT_TEST_SURELY_UNSET_VAR"


def _argv(case: dict, tmp: Path) -> list[str]:
    args = case.get("args", ["{file}"])
    return [case["command"]] + [a.replace("{file}", case.get("file", "")).replace("{tmp}", str(tmp)) for a in args]


def _marks(case: dict):
    return [pytest.mark.xfail(reason=case["xfail"], strict=True)] if case.get("xfail") else []


def _check(code, stderr: str, case: dict) -> None:
    assert "Traceback" not in stderr, stderr
    errors = [ln for ln in stderr.splitlines() if ln.strip() and not WARNING.match(ln)]
    assert code == 2, f"exit code {code}, stderr:\n{stderr}"
    assert len(errors) == 1, f"expected one error line, got:\n{stderr}"
    assert errors[0].startswith("xlt: error: "), errors[0]
    assert case["expect"] in errors[0], f"\nexpected: {case['expect']}\n     got: {errors[0]}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A copy of the corpus, so that nothing a case writes (run dirs, tables) lands in the repo."""
    dest = tmp_path_factory.mktemp("bad_inputs") / "bad_inputs"
    shutil.copytree(CORPUS, dest)
    return dest


@pytest.fixture
def in_corpus(corpus, monkeypatch) -> Path:
    monkeypatch.chdir(corpus)
    monkeypatch.delenv(UNSET, raising=False)
    return corpus


def test_manifest_is_well_formed():
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    used = set()
    for case in CASES:
        assert {"id", "command", "expect"} <= set(case), case
        assert set(case) <= {"id", "command", "file", "args", "expect", "subprocess", "xfail"}, case
        assert case["command"] in COMMANDS, case
        assert case["expect"].strip(), case
        if "file" in case:
            used.add(case["file"])
    # every bad file in the corpus is exercised by some case (the controls run in test_controls_are_valid)
    files = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file()}
    controls = {"cases.yaml", "studies/tiny_trial.yaml", "studies/tiny_adapt.yaml", "squad/good.json",
                "preds/empty.json", "configs/bert_tiny.json", "run_dirs/torn_utf8_log/rows.jsonl"}
    unused = sorted(f for f in files - controls if f not in used and str(Path(f).parent) not in used)
    assert not unused, f"files in tests/bad_inputs without a case: {unused}"


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"], marks=_marks(c)) for c in CASES])
def test_bad_input_in_process(case, in_corpus, tmp_path):
    from xlt.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(_argv(case, tmp_path))
        except SystemExit as e:  # argparse
            code = e.code
    _check(code, err.getvalue(), case)


SUBPROCESS = [c for c in CASES if c.get("subprocess")]


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"], marks=_marks(c)) for c in SUBPROCESS])
def test_bad_input_in_a_real_process(case, corpus, tmp_path):
    """`python -m xlt.cli ...` (and once the installed `xlt` script): the terminal sees one line."""
    script = Path(sys.executable).parent / "xlt"
    use_script = case is SUBPROCESS[0] and script.exists()
    cmd = [str(script)] if use_script else [sys.executable, "-m", "xlt.cli"]
    env = {k: v for k, v in os.environ.items() if k != UNSET}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(cmd + _argv(case, tmp_path), cwd=corpus, env=env, capture_output=True, text=True,
                          timeout=120)
    _check(proc.returncode, proc.stderr, case)


def test_there_are_enough_real_process_cases():
    commands = {c["command"] for c in SUBPROCESS}
    assert len(SUBPROCESS) >= 5 and {"validate", "eval", "trial", "flops", "estimate"} <= commands


def test_controls_are_valid(in_corpus):
    """The tiny studies the trial cases bend are themselves valid, so each case fails for its bad file."""
    from tests.helpers import run_cli

    for study in ("studies/tiny_trial.yaml", "studies/tiny_adapt.yaml"):
        code, out, err = run_cli("validate", study)
        assert code == 0 and not err, err
    code, out, err = run_cli("eval", "squad/good.json", "preds/empty.json", "--lang", "en")
    assert code == 0 and '"n": 4' in out, err
    code, out, err = run_cli("flops", "--config", "configs/bert_tiny.json", "--seq-len", "64")
    assert code == 0 and "analytical_flops" in out, err


def test_torn_log_line_is_skipped_not_fatal(in_corpus):
    """A crash mid-write can cut a UTF-8 character in half: the rows before it still count."""
    from xlt import results

    rows = results.read_log(in_corpus / "run_dirs" / "torn_utf8_log")
    assert [r["study"] for r in rows] == ["x"]


def test_bad_trial_input_loses_nothing_in_an_existing_run_dir(in_corpus, tmp_path):
    from tests.helpers import run_cli

    out = tmp_path / "run"
    out.mkdir()
    (out / "rows.jsonl").write_text('{"study": "earlier"}\n', encoding="utf-8")
    (out / "spec.json").write_text("{}", encoding="utf-8")
    code, _, err = run_cli("trial", "studies/tiny_trial.yaml", "data.english.path=squad/zero_bytes.json",
                           "--out", str(out))
    assert code == 2 and "empty file" in err
    assert (out / "rows.jsonl").read_text(encoding="utf-8") == '{"study": "earlier"}\n'
    assert (out / "spec.json").read_text(encoding="utf-8") == "{}"
