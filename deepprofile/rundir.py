"""A run folder: one capture and every result computed from it.

Layout::

    RUN_DIR/
      run.json              overview: model, weights hash, dataset, layers, accuracy,
                            parameters, package versions, date, command, and
                            ``commands``: every command that wrote a result here
      activations.zarr/     the ActivationStore
      results/<name>.json   one file per analysis (topology, mapper, spectral, ...)
      mapper/<layer>.html   interactive pages written beside the results

Analyses write here and never render; ``deepprofile report RUN_DIR`` renders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepprofile.results import read_json, write_json


class RunDir:
    """Paths and JSON access for one run folder."""

    STORE = "activations.zarr"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def store_path(self) -> Path:
        return self.path / self.STORE

    @property
    def results_dir(self) -> Path:
        return self.path / "results"

    def result_path(self, name: str) -> Path:
        return self.results_dir / f"{name}.json"

    def has_result(self, name: str) -> bool:
        return self.result_path(name).exists()

    def write_result(self, name: str, result: Any) -> Path:
        """Write ``result`` (a dataclass with ``to_dict`` or plain JSON data) atomically."""
        data = result.to_dict() if hasattr(result, "to_dict") else result
        path = write_json(self.result_path(name), data)
        self.record_command(name)
        return path

    def record_command(self, result_name: str) -> None:
        """Note in ``run.json`` (when it exists) the command line that wrote a result, so
        the report can list every command that built the run (``commands``: one entry per
        command, with the results it wrote)."""
        from deepprofile.provenance import command_line, now_iso

        if not self.overview_path.exists():
            return
        overview = self.read_overview()
        commands = list(overview.get("commands") or [])
        if not commands and overview.get("command"):  # the capture that made the folder
            commands.append({"command": overview["command"], "date": overview.get("date"),
                             "results": []})
        cmd = command_line()
        if commands and commands[-1].get("command") == cmd:
            if result_name not in commands[-1].setdefault("results", []):
                commands[-1]["results"].append(result_name)
        else:
            commands.append({"command": cmd, "date": now_iso(), "results": [result_name]})
        overview["commands"] = commands
        self.write_overview(overview)

    def read_result(self, name: str) -> Any:
        return read_json(self.result_path(name))

    @property
    def overview_path(self) -> Path:
        return self.path / "run.json"

    def write_overview(self, overview: dict[str, Any]) -> Path:
        return write_json(self.overview_path, overview)

    def read_overview(self) -> dict[str, Any]:
        return read_json(self.overview_path)

    def store(self, verify: bool = True):
        """Open the run's activation store."""
        from deepprofile.capture.store import ActivationStore

        return ActivationStore.open(self.store_path, verify=verify)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"
