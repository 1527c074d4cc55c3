"""Serve the explorer on a local port in a background thread, and stop it cleanly.

werkzeug's threaded WSGI server (the one Dash itself runs on) bound to ``127.0.0.1``
and port 0 by default, so the operating system picks a free port; :class:`ExploreServer`
knows the port it got, runs ``serve_forever`` in a thread and ``stop()`` shuts the
socket down and joins the thread, so nothing outlives the call that started it.
"""

from __future__ import annotations

import ipaddress
import threading
from typing import Any

from deepprofile.errors import DeepProfileError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class ServerError(DeepProfileError, OSError):
    """The explorer's server could not start (port taken, bad address)."""


def is_local(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ExploreServer:
    """A running explorer: ``url``, ``port``; ``stop()`` (also on leaving a with-block)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        from werkzeug.serving import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:  # no line per request
                pass

        if not 0 <= int(port) <= 65535:
            raise ServerError(f"--port must be in 0..65535 (0: any free port); got {port}.")
        try:
            self._server = make_server(host, int(port), app.server, threaded=True,
                                       request_handler=QuietHandler)
        except (OSError, SystemExit) as exc:
            raise ServerError(
                f"Cannot listen on {host}:{port} ({exc}). Pick another --port, or leave it out "
                "to use any free port."
            ) from None
        self.host = host
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                         name=f"deepprofile-explore-{self.port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}/"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, close the socket and join the thread (idempotent)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout)
        self._server.server_close()

    def __enter__(self) -> ExploreServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(app: Any, host: str = "127.0.0.1", port: int = 0) -> ExploreServer:
    """Start serving ``app`` in a background thread; returns the running server."""
    return ExploreServer(app, host, port)
