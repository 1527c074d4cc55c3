"""The report and a mapper page in headless Chromium: no console errors, every figure
drawn, table-of-contents links resolve, nothing fetched from the network, hostile names
inert. Needs Debian's chromium (``apt-get install -y chromium``) and the playwright
package; skipped without them.

Set ``DEEPPROFILE_UPDATE_SCREENSHOT=1`` to also refresh ``docs/images/report.png``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "report.png"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="no /usr/bin/chromium: install Debian's chromium (apt-get install -y chromium) "
           "to run the browser tests",
)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="the playwright python package is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


class Visit:
    """A page opened with every console message, page error, dialog and network request
    recorded (network requests are refused)."""

    def __init__(self, browser, path: Path) -> None:
        self.console: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.network: list[str] = []
        self.page = browser.new_page(viewport={"width": 1440, "height": 900})
        self.page.on("console", lambda m: self.console.append((m.type, m.text)))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

        def on_dialog(d) -> None:
            self.dialogs.append(d.message)
            d.dismiss()

        self.page.on("dialog", on_dialog)

        def block(route) -> None:
            self.network.append(route.request.url)
            route.abort()

        self.page.route("http://**/*", block)
        self.page.route("https://**/*", block)
        self.page.goto(path.resolve().as_uri(), wait_until="load", timeout=90_000)

    def console_errors(self) -> list[str]:
        return [text for kind, text in self.console if kind == "error"] + self.errors

    def close(self) -> None:
        self.page.close()


ALL_DRAWN = """() => {
  const divs = Array.from(document.querySelectorAll('.plotly-graph-div'));
  return divs.length > 0 && divs.every(d => d.querySelector('svg.main-svg'));
}"""

TOC_CHECK = """() => Array.from(document.querySelectorAll('nav a[href^="#"]'))
  .filter(a => !document.getElementById(decodeURIComponent(a.getAttribute('href').slice(1))))
  .map(a => a.getAttribute('href'))"""


def _check_report(visit: Visit, min_toc: int = 6) -> int:
    page = visit.page
    page.wait_for_function(ALL_DRAWN, timeout=90_000)
    n_divs = page.evaluate("document.querySelectorAll('.plotly-graph-div').length")
    drawn = page.evaluate("Array.from(document.querySelectorAll('.plotly-graph-div'))"
                          ".filter(d => d.querySelector('svg.main-svg')).length")
    assert drawn == n_divs
    # every figure drew something of its own kind: heatmaps/images or SVG marks
    empty = page.evaluate("""() => Array.from(document.querySelectorAll('.plotly-graph-div'))
      .filter(d => !d.querySelector('.heatmaplayer image, .heatmaplayer rect, path.point,'
        + ' .scatterlayer path.js-line, .barlayer path, .boxlayer path, .trace path'))
      .map(d => d.id)""")
    assert empty == [], f"figures with nothing drawn: {empty}"
    n_toc = page.evaluate("document.querySelectorAll('nav a[href^=\"#\"]').length")
    assert n_toc >= min_toc
    assert page.evaluate(TOC_CHECK) == []
    assert visit.console_errors() == []
    assert visit.dialogs == []
    assert visit.network == []
    return n_divs


def test_report_in_browser(browser, report_runs, tmp_path):
    from deepprofile.report import build_report

    out = build_report(report_runs["a"], tmp_path / "reports" / "index.html", strict=True)
    visit = Visit(browser, out)
    try:
        assert _check_report(visit) >= 15
        # a table-of-contents link scrolls to its section
        visit.page.click('nav a[href="#mapper"]')
        visit.page.wait_for_function(  # smooth scrolling: wait until it arrives
            "Math.abs(document.getElementById('mapper').getBoundingClientRect().top) < 60",
            timeout=10_000)
        visit.page.screenshot(path=str(tmp_path / "report.png"))
        assert (tmp_path / "report.png").stat().st_size > 10_000
        if os.environ.get("DEEPPROFILE_UPDATE_SCREENSHOT"):
            DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
            visit.page.click('nav a[href="#topology"]')
            visit.page.wait_for_function(
                "Math.abs(document.getElementById('topology').getBoundingClientRect().top)"
                " < 60", timeout=10_000)
            visit.page.mouse.move(1400, 880)
            visit.page.screenshot(path=str(DOCS_IMAGE))
    finally:
        visit.close()


def test_hostile_report_in_browser(browser, hostile_run, tmp_path):
    from deepprofile.report import build_report

    out = build_report(hostile_run, tmp_path / "hostile.html", strict=True)
    visit = Visit(browser, out)
    try:
        _check_report(visit)  # no dialog, no console message of error level
        assert visit.console == [], visit.console
        # the hostile strings are shown as text, not turned into elements
        assert visit.page.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0
        text = visit.page.evaluate("document.body.innerText")
        assert 'alert("class")' in text and 'onerror=alert("layer")' in text
    finally:
        visit.close()


def test_comparison_report_in_browser(browser, comparison):
    from deepprofile.report import build_comparison_report

    visit = Visit(browser, build_comparison_report(comparison[0]))
    try:
        assert _check_report(visit, min_toc=4) >= 6
    finally:
        visit.close()


def test_mapper_page_draws_nodes(browser, report_runs):
    import json

    run = report_runs["a"]
    graph = json.loads((run / "results" / "mapper.json").read_text())["layers"]["layer3"]
    visit = Visit(browser, run / "mapper" / "layer3.html")
    try:
        visit.page.wait_for_function(
            "document.querySelectorAll('svg g.node').length > 0", timeout=30_000)
        n = visit.page.evaluate("document.querySelectorAll('svg g.node path, svg circle')"
                                ".length")
        assert n > 0
        assert visit.page.evaluate("document.querySelectorAll('svg g.node').length") == len(
            graph["nodes"])
        assert visit.console_errors() == []
        assert visit.network == []
    finally:
        visit.close()


def test_54_layers_fit_their_figures_and_cards(browser, tmp_path):
    """Layer axes of a ResNet-50 (54 weight layers) keep their labels apart, small
    fractions get readable ticks, and a wide table scrolls inside its card (issues 15, 18)."""
    import numpy as np

    from deepprofile.report import Grid, ReportContext, Section, Table, render_page
    from deepprofile.report import figures as F

    names = [f"layer{i // 6 + 1}.{i % 6}.downsample.conv{i % 3 + 1}" for i in range(54)]
    ctx = ReportContext(tmp_path, tmp_path)
    layers = [{"layer": n, "fraction_zero": 0.001 * (i % 5), "n_units": 1000,
               "dead_units": list(range(i % 3)), "saturated_units": []}
              for i, n in enumerate(names)]
    sec = Section("s", "Many layers")
    sec.add(Grid([
        ctx.figure(F.lines_by_layer(names, {"a": list(range(54))}), "lines", id_base="lines"),
        ctx.figure(F.capture_activity(layers), "activity", id_base="activity"),
        ctx.figure(F.heatmap(np.random.default_rng(0).random((54, 54)), names, names),
                   "matrix", id_base="matrix", height=520),
        ctx.figure(F.paired_bars(names, list(range(54)), list(range(54))), "bars",
                   id_base="bars"),
    ]))
    sec.add(Table([f"a long column title {k}" for k in range(14)],
                  [[f"{n}-value-{k}" for k in range(14)] for n in names]))
    out = tmp_path / "page.html"
    out.write_text(render_page("t", "s", [sec]))
    visit = Visit(browser, out)
    try:
        visit.page.wait_for_function(ALL_DRAWN, timeout=60_000)
        for fig_id in ("lines", "activity", "matrix", "bars"):
            for axis in ("xtick", "ytick"):
                boxes = visit.page.evaluate(f"""() => Array.from(
                    document.querySelectorAll('#{fig_id} .{axis} text')).map(t => {{
                      const r = t.getBoundingClientRect();
                      return [r.left, r.right, r.top, r.bottom]; }})""")
                assert len(boxes) >= 2
                overlaps = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]
                            if a[0] < b[1] - 0.5 and b[0] < a[1] - 0.5
                            and a[2] < b[3] - 0.5 and b[2] < a[3] - 0.5]
                assert overlaps == [], f"{fig_id} {axis}: {len(overlaps)} labels overlap"
        ticks = visit.page.evaluate(
            "Array.from(document.querySelectorAll('#activity .ytick text'))"
            ".map(t => t.textContent)")
        assert len(ticks) >= 3 and len(set(ticks)) == len(ticks), ticks
        widths = visit.page.evaluate("""() => {
            const s = document.getElementById('s');
            const w = s.querySelector('.table-wrap');
            return [s.scrollWidth, s.clientWidth, w.scrollWidth, w.clientWidth,
                    document.documentElement.scrollWidth, window.innerWidth]; }""")
        assert widths[0] <= widths[1] + 1, f"the table overflows its card: {widths}"
        assert widths[2] > widths[3], "the table should scroll inside its wrapper"
        assert widths[4] <= widths[5]
        assert visit.console_errors() == []
    finally:
        visit.close()
