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
    assert page.count("data:image/png;base64,") >= len(result.nodes)
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
            assert page.locator("#tooltip_content_focus_node img").count() >= 1
        finally:
            browser.close()
    assert errors == []
