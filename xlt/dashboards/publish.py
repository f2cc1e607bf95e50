"""`xlt publish RUN_DIR`: a finished run's results as they ship in the repository.

    studies/results/<study>/
        results.parquet   every row (small: a CPU-scale study has a few hundred)
        spec.json         the study as run (with its claims), run.json, status.json
        verdicts.json     the claims and published numbers judged from the rows
        dashboard.png     a screenshot of the page (headless Chromium, when installed)

`xlt dashboard studies/results/<study>` rebuilds the page from these files, and a test rebuilds
the verdicts from the table and compares them with verdicts.json: the README's numbers can be
traced to rows, never typed in. Nothing here trains or reads Ray: a directory of files in, a
directory of files out.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from xlt import layout, results
from xlt.errors import XltError

SHIPPED = (layout.SPEC, layout.RUN, layout.STATUS, layout.DONE)
VERDICTS = "verdicts.json"
SCREENSHOT = "dashboard.png"
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def judged(run_dir: Path) -> dict[str, Any]:
    """The run's claims and published numbers judged from its table (what verdicts.json holds)."""
    from xlt.dashboards import claims, views
    from xlt.dashboards.page import load_run

    run = load_run(run_dir)
    spec = run.spec
    if spec is None:
        raise XltError(f"{run_dir}: no readable spec.json: nothing to judge the rows against")
    table = claims.judge_all(spec.claims, run.table)
    expected = views.verdicts(run.table, spec.expected, spec.scale)
    return {"study": spec.name, "spec_hash": spec.hash(),
            "claims": table[["kind", "text", "eval_set", "verdict", "numbers", "detail"]].to_dict("records"),
            "expected": json.loads(expected.to_json(orient="records"))}


def screenshot(page: Path, png: Path, width: int = 1400, height: int = 5000) -> str | None:
    """A PNG of the page by headless Chromium, offline; None when it worked, else why not."""
    exe = next((shutil.which(c) for c in CHROMIUM if shutil.which(c)), None)
    if exe is None:
        return "no Chromium found (apt-get install chromium)"
    with tempfile.TemporaryDirectory() as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
               "--virtual-time-budget=8000", f"--window-size={width},{height}", f"--screenshot={png}",
               page.resolve().as_uri()]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if out.returncode != 0 or not png.exists():
        return f"Chromium failed (exit {out.returncode}): {out.stderr.strip().splitlines()[-1:]}"
    return None


def publish(run_dir: str | Path, to: str | Path | None = None, *, study: str | Path | None = None,
            shot: bool = True) -> Path:
    """Copy a finished run's small files to `to` (default studies/results/<study>), judge its
    verdicts, and take the screenshot. An unfinished run is refused: its table would change.
    `study`: the study file whose claims and expected numbers to ship (they are not part of the
    spec hash, so a run made before they were written is judged by them); it must hash like the run."""
    from xlt.dashboards.page import load_run, main_dashboard
    from xlt.spec import load_spec

    src = Path(run_dir)
    run = load_run(src)  # one-line errors for a missing directory, table or spec
    if run.partial:
        raise XltError(f"{src}: {run.partial}: publish a finished run (or resume it first)")
    spec = run.spec
    if study is not None:
        spec = load_spec(study)
        if run.spec is not None and run.spec.hash() != spec.hash():
            raise XltError(f"{study}: not the study {src} ran ({run.spec.first_difference(spec)})")
    name = spec.name if spec is not None else src.name
    dest = Path(to) if to is not None else Path("studies/results") / name
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for f in (results.TABLE, *SHIPPED):  # the table as the run compacted it: rows untouched
            if (src / f).exists():
                shutil.copyfile(src / f, dest / f)
        if study is not None and spec is not None:
            (dest / layout.SPEC).write_text(json.dumps(spec.model_dump(mode="json"), indent=1), encoding="utf-8")
        (dest / VERDICTS).write_text(json.dumps(judged(dest), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as e:
        raise XltError(f"{dest}: cannot write the published results ({e.strerror or e})") from None
    if shot:
        with tempfile.TemporaryDirectory() as tmp:
            page = main_dashboard(str(dest), str(Path(tmp) / "page.html"))
            why = screenshot(page, dest / SCREENSHOT)
        if why:
            print(f"xlt: publish: no screenshot: {why}")
    return dest
