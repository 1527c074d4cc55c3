"""Run configuration files: parsing, validation, and a whole small run from one file."""

from __future__ import annotations

import dataclasses
import json

import pytest

from deepprofile.config import (
    ConfigError,
    config_from_dict,
    load_config,
    run_config,
    store_name_for,
)
from deepprofile.errors import MissingFileError

YAML = """
model: small_resnet
num_classes: 10
dataset: {name: digits, split: test}
out: OUT
seed: 3
capture:
  layers: [stem, "layer*"]
  reductions: [mean, max_position]
  limit: 64
  batch_size: 32
analyses:
  topology: {cloud: max_position, n_points: 40, metrics: [sliced_wasserstein]}
  mapper: {intervals: 8, overlap: 0.3, thumbnails: false}
  spectral: {layers: [layer3], compare_random_init: false}
report: false
"""


def test_yaml_and_toml_give_the_same_config(tmp_path):
    (tmp_path / "run.yaml").write_text(YAML)
    (tmp_path / "run.toml").write_text(
        'model = "small_resnet"\nnum_classes = 10\nout = "OUT"\nseed = 3\nreport = false\n'
        '[dataset]\nname = "digits"\nsplit = "test"\n'
        '[capture]\nlayers = ["stem", "layer*"]\nreductions = ["mean", "max_position"]\n'
        'limit = 64\nbatch_size = 32\n'
        '[analyses.topology]\ncloud = "max_position"\nn_points = 40\n'
        'metrics = ["sliced_wasserstein"]\n'
        '[analyses.mapper]\nintervals = 8\noverlap = 0.3\nthumbnails = false\n'
        '[analyses.spectral]\nlayers = ["layer3"]\ncompare_random_init = false\n'
    )
    assert load_config(tmp_path / "run.yaml") == load_config(tmp_path / "run.toml")
    config = load_config(tmp_path / "run.yaml")
    assert config.capture.layers == ("stem", "layer*") and config.seed == 3


def test_unknown_keys_are_named_with_suggestions(tmp_path):
    with pytest.raises(ConfigError, match="Did you mean 'capture'"):
        config_from_dict({"model": "x", "captur": {}})
    with pytest.raises(ConfigError, match="Did you mean 'reductions'"):
        config_from_dict({"model": "x", "capture": {"reduction": ["mean"]}})
    with pytest.raises(ConfigError, match="Unknown analysis 'topo'"):
        config_from_dict({"model": "x", "analyses": {"topo": {}}})
    with pytest.raises(ConfigError, match="needs `model:`"):
        config_from_dict({"seed": 1})
    with pytest.raises(MissingFileError):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="Cannot parse"):
        load_config(tmp_path / "bad.yaml")


def test_store_names():
    assert store_name_for("mean") == "activations.zarr"
    assert store_name_for("max_position") == "activations_maxpos.zarr"
    assert store_name_for("positions:8") == "activations_positions8.zarr"


def test_run_from_config(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(YAML.replace("OUT", str(tmp_path / "run")))
    lines: list[str] = []
    run_dir = run_config(load_config(path), quiet=True, echo=lines.append)
    results = {p.stem for p in (run_dir / "results").glob("*.json")}
    assert {"capture", "capture_activations_maxpos", "topology", "mapper", "spectral"} <= results
    assert (run_dir / "activations_maxpos.zarr").exists()
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["seed"] == 3 and saved["capture"]["limit"] == 64
    overview = json.loads((run_dir / "run.json").read_text())
    assert overview["n_samples"] == 64
    data = {**load_config(path).to_dict(), "analyses": {"mapper": {"intervalz": 3}},
            "capture": {"limit": 64, "layers": ["layer3"]}}
    with pytest.raises(ConfigError, match="Did you mean 'intervals'"):
        config_from_dict(data)  # refused on load, before any capture
    bad = dataclasses.replace(config_from_dict({**data, "analyses": {}}),
                              analyses={"mapper": {"intervalz": 3}})
    with pytest.raises(ConfigError, match="Did you mean 'intervals'"):  # built in Python
        run_config(bad, quiet=True, overwrite=True, echo=lines.append)


BAD_OPTIONS = [
    ("topology:\n    n_points: 0", r"^topology\.n_points must be an integer >= 2, got 0\.$"),
    ("mapper:\n    overlap: 1.5", r"^mapper\.overlap must be .*< 1, got 1\.5\.$"),
    ("mapper:\n    eps: -1.0", r"^mapper\.eps must be a finite number > 0, got -1\.0\.$"),
    ("spectral:\n    n_vectors: -2", r"^spectral\.n_vectors must be an integer >= 1"),
    ("attribution:\n    sigmas: [0.0, -0.1]", r"^attribution\.sigmas items must be"),
    ("attribution:\n    n_draws: 0", r"^attribution\.n_draws must be an integer >= 1"),
    ("attribution:\n    n_steps: 2.5", r"^attribution\.n_steps must be an integer"),
]


@pytest.mark.parametrize("block,message", BAD_OPTIONS)
def test_out_of_range_analysis_options_are_refused_on_load(tmp_path, block, message):
    path = tmp_path / "run.yaml"
    path.write_text(f"model: small_resnet\nout: {tmp_path / 'run'}\nanalyses:\n  {block}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_out_of_range_options_from_toml_and_the_cli(tmp_path):
    from typer.testing import CliRunner

    from deepprofile.cli import app

    path = tmp_path / "run.toml"
    path.write_text(f'model = "small_resnet"\nout = "{tmp_path / "run"}"\nseed = 0\n'
                    "[analyses.topology]\nn_points = 0\n")
    with pytest.raises(ConfigError, match=r"topology\.n_points must be"):
        load_config(path)
    result = CliRunner().invoke(app, ["run", str(path), "-q"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "topology.n_points" in lines[0]
    assert not (tmp_path / "run").exists()  # refused before anything is written
    with pytest.raises(ConfigError, match=r"^seed must be an integer >= 0, got -1\.$"):
        config_from_dict({"model": "x", "seed": -1})


@pytest.mark.parametrize("capture", [[1], "layer1", 3])
def test_capture_that_is_not_a_mapping_is_refused(capture):
    with pytest.raises(ConfigError, match="`capture` must be a mapping"):
        config_from_dict({"model": "small_resnet", "capture": capture})
