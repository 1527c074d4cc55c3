"""The explorer served over HTTP: local assets only, a free port, a clean stop, the CLI's
one-line errors, and bad runs shown as a message in the page."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.request

import pytest

from deepprofile.explore import create_app, serve
from deepprofile.explore.server import ExploreServer, ServerError, is_local


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 (loopback only)
        return resp.status, resp.read()


def _refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_served_on_a_free_local_port_with_local_assets_and_stops(explore_runs):
    app = create_app(explore_runs["a"], explore_runs["b"])
    with serve(app) as server:
        assert server.url == f"http://127.0.0.1:{server.port}/" and server.port > 0
        status, body = _get(server.url)
        page = body.decode()
        assert status == 200
        urls = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
        assert not re.search(r"https?://(?!127\.0\.0\.1)", page)
        for url in urls:  # every bundle is served by this process
            assert _get(server.url.rstrip("/") + url)[0] == 200
        layout = json.loads(_get(server.url + "_dash-layout")[1])
        assert "graph-a" in json.dumps(layout) and "graph-b" in json.dumps(layout)
    assert _refused(server.port) and not server._thread.is_alive()


def test_a_taken_port_is_a_clear_error(explore_runs):
    app = create_app(explore_runs["a"])
    with serve(app) as first, pytest.raises(ServerError, match="Pick another --port"):
        ExploreServer(app, port=first.port)


def test_run_without_activations_is_a_message_in_the_page(explore_runs):
    app = create_app(explore_runs["empty"])
    client = app.server.test_client()
    layout = client.get("/_dash-layout").get_data(as_text=True)
    assert "load-error" in layout and "Cannot explore this run" in layout
    assert "Traceback" not in layout


def test_host_check():
    assert is_local("127.0.0.1") and is_local("localhost") and is_local("::1")
    assert is_local("127.0.0.2") and not is_local("0.0.0.0") and not is_local("10.1.2.3")


def test_cli_errors_are_one_line(explore_runs):
    env = {**os.environ, "COLUMNS": "400"}  # rich wraps at 80 columns without a terminal
    proc = subprocess.run(
        [sys.executable, "-m", "deepprofile.cli", "explore", str(explore_runs["empty"]),
         "--no-browser"], capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "error:" in lines[0] and "deepprofile capture" in lines[0]
    proc = subprocess.run(
        [sys.executable, "-m", "deepprofile.cli", "explore", str(explore_runs["a"]),
         "--layer", "layer9", "--no-browser"], capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "not stored" in proc.stderr and "Did you mean" in proc.stderr
