"""The explorer served over HTTP: local assets only, a free port, a clean stop, the CLI's
one-line errors, and bad runs shown as a message in the page."""

from __future__ import annotations

import json
import os
import re
import signal
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


def test_cli_errors_are_one_line(explore_runs, monkeypatch, capsys):
    from deepprofile.cli import main

    for args, needles in (
        ([str(explore_runs["empty"])], ["deepprofile capture"]),
        ([str(explore_runs["a"]), "--layer", "layer9"], ["not stored", "Did you mean"]),
        ([str(explore_runs["a"]), "--port", "70000"], ["--port must be in 0..65535"]),
    ):
        monkeypatch.setattr(sys, "argv", ["deepprofile", "explore", *args, "--no-browser"])
        with pytest.raises(SystemExit) as info:
            main()
        err = capsys.readouterr().err
        assert info.value.code == 2 and "Traceback" not in err and err.startswith("error:")
        text = " ".join(err.split())  # rich wraps long lines at the terminal's width
        assert all(n in text for n in needles), text


@pytest.mark.slow
def test_cli_serves_until_ctrl_c(explore_runs):
    """`deepprofile explore RUN --no-browser` in a subprocess: prints its URL, serves the
    page, and exits 0 on SIGINT with the port closed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepprofile.cli", "explore", str(explore_runs["a"]),
         "--no-browser"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        assert _get(match.group(0))[0] == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "explorer stopped" in out and "Traceback" not in err
    assert _refused(int(match.group(1)))


def test_cli_warns_before_binding_beyond_localhost(explore_runs, monkeypatch, capsys):
    """--host 0.0.0.0 prints the warning first (the bind itself is stubbed out: tests
    listen on the loopback only)."""
    import deepprofile.explore.server as server_module
    from deepprofile.cli import main

    def refuse(app, host, port):
        raise ServerError(f"stub: not binding {host}")

    monkeypatch.setattr(server_module, "serve", refuse)
    monkeypatch.setattr(sys, "argv", ["deepprofile", "explore", str(explore_runs["a"]),
                                      "--host", "0.0.0.0", "--no-browser"])
    with pytest.raises(SystemExit):
        main()
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("warning: binding to 0.0.0.0") and "stub: not binding 0.0.0.0" in err
