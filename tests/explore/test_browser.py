"""The explorer driven in headless Chromium, served from a background thread on a free port:
the graph draws, a parameter change redraws with another node count, a node click lists its
images, the selection rings nodes of the other layer, bad input shows a message, nothing
leaves localhost, no console error, and stopping leaves no thread nor open port (the
command line's Ctrl+C path is tested in test_server.py). Needs Debian's chromium
(``apt-get install -y chromium``) and the playwright package; skipped without them.
"""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
RED = "rgb(228,0,43)"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="no /usr/bin/chromium: install Debian's chromium (apt-get install -y chromium) "
           "to run the browser tests",
)

CY = "document.getElementById('{}')._cyreg.cy"
DRAWN = "() => {{ const e = document.getElementById('{}'); " \
        "return !!(e && e._cyreg && e._cyreg.cy.nodes().length > 0); }}"


@pytest.fixture(scope="module")
def session(explore_runs):
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="the playwright python package is not installed")
    from deepprofile.explore import create_app, serve

    explorer = serve(create_app(explore_runs["a"], layer="layer3"))
    record: dict[str, list] = {"console": [], "errors": [], "outside": []}
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.on("console", lambda m: record["console"].append((m.type, m.text)))
                page.on("pageerror", lambda e: record["errors"].append(str(e)))

                def block(route) -> None:
                    record["outside"].append(route.request.url)
                    route.abort()

                page.route(lambda url: not url.startswith(explorer.url), block)
                page.goto(explorer.url, wait_until="load", timeout=60_000)
                page.wait_for_function(DRAWN.format("graph-a"), timeout=60_000)
                page.wait_for_function(DRAWN.format("graph-b"), timeout=60_000)
                yield {"page": page, "record": record, "explorer": explorer}
            finally:
                browser.close()
    finally:
        explorer.stop()


def _count(page, graph: str) -> int:
    return page.evaluate(f"() => {CY.format(graph)}.nodes().length")


def _caption_nodes(page, key: str) -> int:
    return int(re.search(r"(\d+) nodes", page.inner_text(f"#caption-{key}")).group(1))


def _text_js(element: str, test: str) -> str:
    """A null-safe wait condition on an element's text (the page may still be loading)."""
    return f"() => {{ const e = document.getElementById('{element}'); " \
           f"return !!e && ({test.replace('TEXT', 'e.innerText')}); }}"


def _set(page, field: str, value: str) -> None:
    box = page.locator(f"#{field}")
    box.fill(value)
    box.press("Enter")


def test_graph_draws_and_a_parameter_change_redraws(session):
    page = session["page"]
    before = _count(page, "graph-a")
    assert before == _caption_nodes(page, "a") > 0
    _set(page, "intervals", "5")
    page.wait_for_function(
        f"() => {CY.format('graph-a')}.nodes().length != {before}", timeout=30_000)
    after = _count(page, "graph-a")
    assert after != before and after == _caption_nodes(page, "a")
    assert "5 intervals" not in page.inner_text("#msg-a")  # no error message


def test_out_of_range_parameter_shows_a_message(session):
    page = session["page"]
    _set(page, "overlap", "1.5")
    page.wait_for_function(_text_js("msg-a", "TEXT.length > 0"),
                           timeout=30_000)
    assert "overlap must be in [0, 0.95]" in page.inner_text("#msg-a")
    assert "Traceback" not in page.content()
    _set(page, "overlap", "0.3")
    page.wait_for_function(_text_js("msg-a", "TEXT === ''"),
                           timeout=30_000)


def test_node_click_lists_images_and_rings_nodes_of_the_other_layer(session):
    page = session["page"]
    node = page.evaluate(f"""() => {{
        const el = document.getElementById('graph-a'); const cy = {CY.format('graph-a')};
        cy.resize();
        const n = cy.nodes().max(x => x.data('size')).ele;
        const r = el.getBoundingClientRect(); const p = n.renderedPosition();
        return {{x: r.left + p.x, y: r.top + p.y, id: n.id(), size: n.data('size')}};
    }}""")
    page.mouse.click(node["x"], node["y"])
    page.wait_for_selector("#members", timeout=30_000)
    assert "1 node(s) of layer3" in page.inner_text("#details")
    n_rows = page.locator("#members tr").count() - 1
    assert n_rows == min(node["size"], 60)
    assert page.locator("img.dp-thumb").count() == min(node["size"], 48)
    page.wait_for_function(_text_js("linked-b", "TEXT.length > 0"),
                           timeout=30_000)
    caption = page.inner_text("#linked-b")
    linked = int(re.match(r"(\d+) of (\d+) nodes", caption).group(1))
    ringed = page.evaluate(f"""() => {CY.format('graph-b')}.nodes()
        .filter(n => n.style('border-color') === '{RED}').length""")
    assert linked > 0 and ringed == linked


def test_export_writes_the_static_page(session, explore_runs):
    page = session["page"]
    page.click("#export")
    page.wait_for_function(
        _text_js("msg-export", "TEXT.startsWith('Wrote')"),
        timeout=60_000)
    written = page.inner_text("#msg-export").removeprefix("Wrote ").split(", ")
    assert written and all(Path(w).is_file() for w in written)
    assert all(Path(w).parent == explore_runs["a"] / "mapper" / "explore" for w in written)


def test_unknown_layer_in_the_address_is_a_message(session):
    page = session["page"]
    page.goto(session["explorer"].url + "?layer=layer33", wait_until="load")
    page.wait_for_function(_text_js("msg-url", "TEXT.length > 0"),
                           timeout=30_000)
    text = page.inner_text("#msg-url")
    assert "Layer 'layer33' is not stored" in text and "Did you mean: layer3" in text
    page.wait_for_function(DRAWN.format("graph-a"), timeout=60_000)


def test_no_console_error_no_request_outside_and_clean_shutdown(session):
    record = session["record"]
    errors = [t for kind, t in record["console"] if kind == "error"] + record["errors"]
    assert errors == []
    assert record["outside"] == []
    server = session["explorer"]
    server.stop()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", server.port)) != 0
    assert not [t for t in threading.enumerate() if t.name.startswith("deepprofile-explore")]
