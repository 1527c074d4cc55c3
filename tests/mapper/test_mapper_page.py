"""Offline mapper pages (deepprofile.mapper.page)."""

from __future__ import annotations

import re
import shutil
import struct
import zlib
from base64 import b64decode
from pathlib import Path

import kmapper
import numpy as np
import pytest

from deepprofile.errors import DeepProfileError
from deepprofile.mapper import build_mapper
from deepprofile.mapper.page import (
    STATIC_DIR,
    _node_panel,
    external_resources,
    make_offline,
    png_data_uri,
    render_mapper_page,
    to_uint8_image,
    write_mapper_page,
)


@pytest.fixture(scope="module")
def result():
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(size=(150, 5)), rng.normal(size=(150, 5)) + 6]
    y = np.r_[np.zeros(150, int), np.ones(150, int)]
    return build_mapper(
        X, labels=y, logits=rng.normal(size=(300, 2)), intervals=8, layer="blk",
        class_names=["cat", "<dog>"],
    )


@pytest.fixture(scope="module")
def thumbs():
    rng = np.random.default_rng(1)
    return {i: png_data_uri(rng.random((1, 8, 8))) for i in range(300)}


def decode_png(uri: str) -> np.ndarray:
    """Independent minimal PNG reader (8-bit grey/RGB, filter type 0 rows only)."""
    data = b64decode(uri.split(",", 1)[1])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF
        if tag == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    w, h, depth, colour = header[:4]
    channels = {0: 1, 2: 3}[colour]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * channels)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape((h, w, channels) if channels == 3 else (h, w))


def test_page_has_every_node_and_needs_no_network(result, thumbs, tmp_path):
    path = write_mapper_page(result, tmp_path / "sub" / "blk.html", thumbnails=thumbs)
    page = path.read_text()
    for node in result.nodes:
        assert f'"{node.id}"' in page
    assert external_resources(page) == []
    assert not re.search(r"<script[^>]+src=", page, re.I)
    assert not re.search(r"<link[^>]+href=[\"']?(https?:)?//", page, re.I)
    assert "@import" not in page
    assert "https://d3js.org v6.1.1" in page  # d3 inlined from the package
    shown = {int(p) for node in result.nodes for p in node.representatives[:6]}
    # each image shown by some node is embedded once, however many nodes show it
    assert len(re.findall(r"\.dp-t\d+\{background-image", page)) == len(shown)
    for row in shown:
        assert page.count(thumbs[row]) == 1
    # class names are HTML-escaped, then JSON-escaped for the inline script
    assert "<dog>" not in page and "\\u0026lt;dog\\u0026gt;" in page
    for name in ("label (node: majority)", "confidence", "correct", "lens l2norm"):
        assert name in page


def test_external_resources_detects_kmapper_cdn_links(result):
    raw = kmapper.KeplerMapper().visualize(result.kmapper_graph(), save_file=False)
    found = external_resources(raw)
    assert any("d3" in url for url in found)
    assert any("fonts.googleapis" in url for url in found)
    assert external_resources(make_offline(raw)) == []


def test_unknown_external_script_is_refused():
    page = "<html><script src='https://example.org/x.js'></script></html>"
    with pytest.raises(DeepProfileError, match="example.org"):
        make_offline(page)
    assert external_resources("<style>@import url('https://x.org/a.css');</style>") == [
        "https://x.org/a.css"
    ]


def test_png_thumbnails_decode_to_the_scaled_pixels():
    rng = np.random.default_rng(0)
    grey = rng.normal(size=(1, 5, 7))
    np.testing.assert_array_equal(decode_png(png_data_uri(grey)), to_uint8_image(grey))
    expected = np.round((grey[0] - grey.min()) / np.ptp(grey) * 255).astype(np.uint8)
    np.testing.assert_array_equal(to_uint8_image(grey), expected)
    rgb = rng.random((3, 4, 6))
    assert decode_png(png_data_uri(rgb)).shape == (4, 6, 3)
    assert to_uint8_image(np.ones((4, 4))).max() == 0  # constant image: no division by 0


def test_empty_graph_cannot_be_drawn(result):
    import dataclasses

    empty = dataclasses.replace(result, nodes=(), edges=())
    with pytest.raises(DeepProfileError, match="no nodes"):
        render_mapper_page(empty)


def test_static_assets_and_licences_ship_with_the_package():
    for name in ("d3.min.js", "d3.LICENSE", "FileSaver.min.js", "FileSaver.LICENSE.md"):
        assert (STATIC_DIR / name).stat().st_size > 0
    assert "v6.1.1" in (STATIC_DIR / "d3.min.js").read_text()[:200]


chromium = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium is None, reason="needs a chromium binary (apt-get install chromium)")
def test_page_renders_offline_in_a_browser(result, thumbs, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    path: Path = write_mapper_page(result, tmp_path / "blk.html", thumbnails=thumbs)
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, args=["--headless=new", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route(
                "**/*",
                lambda route: route.continue_()
                if route.request.url.startswith(("file:", "data:"))
                else (errors.append(route.request.url), route.abort())[-1],
            )
            page.goto(path.resolve().as_uri())
            page.wait_for_selector("svg g.node path.circle", timeout=10_000)
            assert page.locator("svg g.node").count() == len(result.nodes)
            assert page.locator("line.link").count() == len(result.edges)
            page.wait_for_timeout(1500)  # let the force layout settle
            page.locator("svg g.node path.circle").first.click(force=True)
            assert page.locator("#tooltip_content_focus_node .dp-hist").count() == 1
            assert page.locator("#tooltip_content_focus_node .dp-t").count() >= 1
            image = page.locator("#tooltip_content_focus_node .dp-t").first.evaluate(
                "t => getComputedStyle(t).backgroundImage")
            assert image.startswith('url("data:image/png;base64,')
            # lens statistics under the right headers: Min <= Mean <= Max
            heads = page.locator("#tooltip_content_focus_node .projection_stats thead th")
            cells = page.locator("#tooltip_content_focus_node .projection_stats tbody td")
            stats = dict(zip([h.strip() for h in heads.all_inner_texts()][1:],
                             [float(c) for c in cells.all_inner_texts()[1:4]], strict=True))
            assert stats["Min"] <= stats["Mean"] <= stats["Max"], stats
            # a colour legend that follows the colour function
            legend = page.locator("#dp-legend")
            assert "cat" in legend.inner_text() and "<dog>" in legend.inner_text()
            page.select_option("#select-color-function", "1")
            page.dispatch_event("#select-color-function", "input")
            assert "lens" in legend.inner_text()
        finally:
            browser.close()
    assert errors == []


def test_lens_statistics_columns_follow_their_headers(result):
    """kmapper's table heads read Mean, Max, Min while its script filled mean, min, max."""
    page = render_mapper_page(result)
    table = page[page.index("class='projection_stats'"):]
    heads = re.findall(r"<small>(\w+)</small>", table[:table.index("</thead>")])
    order = re.search(r"function do_projection_stats.*?column_order = \[([^\]]*)\]", page,
                      re.S).group(1)
    columns = [c.strip(" '\"") for c in order.split(",")]
    assert heads == ["Mean", "Max", "Min"]
    assert columns[1:] == [h.lower() for h in heads]


def test_thumbnails_nearest_first_one_per_image_and_capped(result):
    """Points of one image (several positions per image) show that image once; the panel
    keeps the representatives' order (nearest the node mean first) and the cap."""
    import dataclasses

    node = max(result.nodes, key=lambda n: len(n.representatives))
    reps = list(node.representatives)
    assert len(reps) >= 4
    sample = np.arange(result.n_points)
    sample[reps[1]] = sample[reps[0]]  # the 2nd representative is the 1st's image
    g = dataclasses.replace(result, point_sample=sample)
    thumbs = {int(r): png_data_uri(np.full((4, 4), float(r)))
              for r in range(result.n_points)}
    page = render_mapper_page(g, thumbnails=thumbs, max_thumbnails=3)
    rows = [int(sample[p]) for p in reps]
    expect = list(dict.fromkeys(rows))[:3]
    panel = next(part for part in _node_panel(node, g, thumbs, 3) if "dp-thumbs" in part)
    assert re.findall(r"dp-t(\d+)", panel) == [str(r) for r in expect]
    for row in expect:  # the page defines each shown image once
        assert page.count(f".dp-t{row}{{") == 1
    assert f"closest first, 3 of {node.size}" in panel


def test_thumbnails_are_downsampled():
    from deepprofile.mapper.page import thumbnails_from_dataset

    rng = np.random.default_rng(0)
    data = [(rng.random((3, 224, 224)), 0) for _ in range(2)]
    uris = thumbnails_from_dataset(data, [0, 1])
    assert decode_png(uris[0]).shape == (56, 56, 3)  # 224 / 4: the first k with <= 64
    big = decode_png(png_data_uri(data[0][0]))
    assert len(uris[0]) * 8 < len(png_data_uri(data[0][0])) and big.shape == (224, 224, 3)


def test_too_few_points_per_interval_warns_on_the_page_and_in_the_summary():
    from deepprofile.mapper.stats import interval_counts

    rng = np.random.default_rng(0)
    lens = np.sort(rng.random(4000))
    counts = interval_counts(lens, 10, 0.3)
    width = 1.0 / (2 * 10 * (1 - 0.3)) * 2  # kmapper: radius = range / (2 n (1 - p))
    assert np.median(counts) == pytest.approx(4000 * width, rel=0.1)
    X = rng.normal(size=(240, 6))
    sparse = build_mapper(X, intervals=40, layer="l4", labels=rng.integers(0, 4, 240))
    page = render_mapper_page(sparse)
    assert "Too few points per interval" in page and "240 points over 40 intervals" in page
    dense = build_mapper(np.r_[X, rng.normal(size=(1760, 6))], intervals=8, layer="l4")
    assert "Too few points per interval" not in render_mapper_page(dense)
