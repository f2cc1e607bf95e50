"""The generated page in a real browser: headless Chromium, file://, no network.

Checks that every figure div got Plotly's rendered ``.main-svg`` and that the page logged no
console message (a working page is silent), and writes a screenshot for a person to look at.
"""

from __future__ import annotations

import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.test_dashboards import adapt_rows, extrapolating_run, fake_run, spec_dict
from xlt.dashboards import main_dashboard

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class RenderedFigures(HTMLParser):
    """Figure div ids (``fig-*``) and whether each holds an ``svg.main-svg``."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str | None] = []  # the figure id each open element belongs to
        self.figures: dict[str, bool] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        owner = self.stack[-1] if self.stack else None
        if tag == "div" and (a.get("id") or "").startswith("fig-") and "plotly-graph-div" in (a.get("class") or ""):
            owner = a["id"]
            self.figures.setdefault(owner, False)
        if tag == "svg" and owner and "main-svg" in (a.get("class") or "").split():
            self.figures[owner] = True
        if tag not in VOID:
            self.stack.append(owner)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag not in VOID and self.stack:
            self.stack.pop()


def open_in_chromium(page: Path, tmp: Path, screenshot: Path) -> tuple[dict[str, bool], list[str]]:
    """Load the page once; returns {figure id: rendered} from the DOM and the console lines."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: browser tests need headless Chromium (apt-get install -y chromium)")
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
        # no network at all: a page that needs a CDN must fail here, as it would offline
        "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
        "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--hide-scrollbars",
        "--window-size=1400,4000", f"--screenshot={screenshot}", "--dump-dom", page.resolve().as_uri(),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    parser = RenderedFigures()
    parser.feed(out.stdout)
    console = [line for line in out.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return parser.figures, console


def expected_figures(page: Path) -> list[str]:
    return re.findall(r'<div id="(fig-[^"]+)" class="plotly-graph-div"', page.read_text(encoding="utf-8"))


def check_page(page: Path, tmp: Path, name: str) -> None:
    shot = tmp / f"{name}.png"
    rendered, console = open_in_chromium(page, tmp, shot)
    expected = expected_figures(page)
    assert expected, "the page has no figures"
    assert sorted(rendered) == sorted(expected)
    assert [f for f, ok in rendered.items() if not ok] == [], "figures without a rendered .main-svg"
    assert console == [], "the page logged to the console:\n" + "\n".join(console)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    print(f"screenshot for a person: {shot}")


def test_qa_study_page_renders_offline(tmp_path):
    page = main_dashboard(str(fake_run(tmp_path)), str(tmp_path / "qa.html"))
    assert len(expected_figures(page)) == 9  # 8 + search progress
    check_page(page, tmp_path, "qa-dashboard")


def test_adaptation_study_page_renders_offline(tmp_path):
    spec = spec_dict(name="adapt_demo", task="adapt", scale="cpu",
                     adapt={"method": "mini_joint", "depth": 4, "target_lang": "ru"})
    page = main_dashboard(str(fake_run(tmp_path, adapt_rows(), spec=spec, optuna_trials=0)),
                          str(tmp_path / "adapt.html"))
    assert {"fig-breakeven", "fig-search-progress"} <= set(expected_figures(page))
    assert "fig-depth" in expected_figures(page)
    check_page(page, tmp_path, "adapt-dashboard")


def test_extrapolated_learning_curves_render_offline(tmp_path):
    page = main_dashboard(str(extrapolating_run(tmp_path)), str(tmp_path / "lc.html"))
    assert "fig-learning" in expected_figures(page) and "power-law fit" in page.read_text(encoding="utf-8")
    check_page(page, tmp_path, "learning-extrapolated")


def test_the_check_catches_a_page_that_needs_the_network(tmp_path):
    # A page loading plotly.js from a CDN: blank figures and "Plotly is not defined" offline.
    page = tmp_path / "cdn.html"
    page.write_text(
        "<html><head><script src='https://cdn.plot.ly/plotly-2.35.2.min.js'></script></head><body>"
        '<div id="fig-a" class="plotly-graph-div"></div>'
        "<script>Plotly.newPlot('fig-a', [{x: [1], y: [2]}]);</script></body></html>",
        encoding="utf-8",
    )
    rendered, console = open_in_chromium(page, tmp_path, tmp_path / "cdn.png")
    assert rendered == {"fig-a": False}
    assert any("Plotly is not defined" in line for line in console)


def test_comparison_page_renders_offline(tmp_path):
    from tests.test_compare import run_rows
    from xlt.dashboards.compare import compare_dashboard

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    runs = [str(fake_run(tmp_path / d, run_rows("demo", finals), optuna_trials=0))
            for d, finals in (("a", [40.0, 50.0]), ("b", [44.0, 46.0]))]
    page = compare_dashboard(runs, str(tmp_path / "compare.html"))
    assert expected_figures(page) == ["fig-compare-best-so-far"]
    check_page(page, tmp_path, "compare")
