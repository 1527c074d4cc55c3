"""Make docs/images/explore.png: the explorer over a run, a node of layer3 selected.

    deepprofile demo --out reports/demo            # a trained run (once)
    python docs/explore_screenshot.py reports/demo/seed0

Needs Debian's chromium (``apt-get install -y chromium``) and the playwright package.
"""

from __future__ import annotations

import argparse
from pathlib import Path

OUT = Path(__file__).resolve().parent / "images" / "explore.png"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
DRAWN = ("() => ['graph-a', 'graph-b'].every(id => { const e = document.getElementById(id);"
         " return e && e._cyreg && e._cyreg.cy.nodes().length > 0; })")
BIGGEST = """() => {
    const el = document.getElementById('graph-a'); const cy = el._cyreg.cy; cy.resize();
    const n = cy.nodes().max(x => x.data('size')).ele;
    const r = el.getBoundingClientRect(); const p = n.renderedPosition();
    return [r.left + p.x, r.top + p.y];
}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--layer", default="layer3")
    parser.add_argument("--layer-b", default="layer2")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from deepprofile.explore import create_app, serve

    with serve(create_app(args.run, layer=args.layer, layer_b=args.layer_b)) as server, \
            sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1150})
        page.goto(server.url, wait_until="load")
        page.wait_for_function(DRAWN, timeout=120_000)
        page.wait_for_timeout(500)
        page.mouse.click(*page.evaluate(BIGGEST))
        page.wait_for_selector("#members", timeout=60_000)
        page.wait_for_timeout(800)
        page.screenshot(path=str(args.out))
        browser.close()
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
