"""Interactive explorer: a local Dash app over a run (or two), every asset served offline.

``deepprofile explore RUN_DIR [RUN_B]`` or, from Python::

    from deepprofile.explore import create_app, serve
    server = serve(create_app("runs/seed0"))   # server.url, server.stop()

Dash and dash-cytoscape are imported only when an app is made.
"""

from typing import Any

from deepprofile.explore.data import ExploreInputError, GraphView, MapperParams, RunData
from deepprofile.explore.server import ExploreServer, serve


def create_app(*args: Any, **kwargs: Any) -> Any:
    """The explorer's ``dash.Dash`` app (see :func:`deepprofile.explore.app.create_app`)."""
    from deepprofile.explore.app import create_app as _create

    return _create(*args, **kwargs)


__all__ = ["ExploreInputError", "ExploreServer", "GraphView", "MapperParams", "RunData",
           "create_app", "serve"]
