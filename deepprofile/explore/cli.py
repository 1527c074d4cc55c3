"""``deepprofile explore RUN_DIR [RUN_B]``: the local explorer app over one or two runs.

Dash is imported inside the command so that ``deepprofile --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``explore`` command to the main app."""

    @app.command("explore")
    def explore(
        run_dir: Annotated[Path, typer.Argument(help="Run folder (with activations.zarr).")],
        run_b: Annotated[Path | None, typer.Argument(
            help="A second run on the same images: the same layer side by side.")] = None,
        layer: Annotated[str | None, typer.Option(
            "--layer", "-l", help="Layer shown first (default: the last stored).")] = None,
        port: Annotated[int, typer.Option(help="Port; 0 picks a free one.")] = 0,
        host: Annotated[str, typer.Option(
            help="Address to bind; anything but 127.0.0.1/localhost exposes the run's "
                 "data to the network.")] = "127.0.0.1",
        no_browser: Annotated[bool, typer.Option(
            "--no-browser", help="Do not open a browser tab.")] = False,
    ) -> None:
        """Explore mapper graphs of a run interactively in a local web app (Ctrl+C stops)."""
        import threading

        from deepprofile.explore.app import create_app
        from deepprofile.explore.data import RunData
        from deepprofile.explore.server import is_local, serve

        runs = [RunData.open(run_dir)] + ([RunData.open(run_b)] if run_b else [])
        if layer is not None:
            runs[0].check_layer(layer)
        if not is_local(host):
            typer.echo(f"warning: binding to {host} makes the explorer (and the run's images) "
                       "reachable from other machines; it has no authentication.", err=True)
        app = create_app(run_dir, run_b, layer=layer)
        server = serve(app, host=host, port=port)
        typer.echo(f"deepprofile explorer on {server.url} (Ctrl+C to stop)")
        if not no_browser:
            import webbrowser

            webbrowser.open(server.url)
        stop = threading.Event()
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
            typer.echo("explorer stopped")
