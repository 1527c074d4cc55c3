"""`scheduler:` and `memory_budget:` in run configuration files: parsing, validation on
load (same rules as `--scheduler` / `--memory-budget`), and a run on Dask equal to one
without."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

from deepprofile.config import ConfigError, config_from_dict, load_config, run_config
from deepprofile.results import comparable

BASE = {"model": "m.pt", "out": "OUT"}


def test_run_wide_scheduler_and_budget_reach_every_stage_that_takes_them():
    config = config_from_dict({**BASE, "scheduler": "local:2", "memory_budget": "4GiB",
                               "analyses": {"topology": {}, "mapper": {"intervals": 5},
                                            "spectral": {}, "attribution": {}}})
    assert config.scheduler == "local:2" and config.capture.scheduler == "local:2"
    assert {name: opts.get("scheduler") for name, opts in config.analyses.items()} == {
        "topology": "local:2", "mapper": "local:2", "spectral": "local:2",
        "attribution": "local:2"}
    assert {name: opts.get("memory_budget") for name, opts in config.analyses.items()} == {
        "topology": None, "mapper": None, "spectral": "4GiB", "attribution": "4GiB"}
    assert "memory_budget" not in config.analyses["topology"]
    # the default analyses (no `analyses:` key) get the scheduler too
    default = config_from_dict({**BASE, "scheduler": "tcp://10.0.0.1:8786"})
    assert set(default.analyses) == {"topology", "mapper", "spectral"}
    assert all(o["scheduler"] == "tcp://10.0.0.1:8786" for o in default.analyses.values())
    # without them nothing changes: every stage runs in this process
    plain = config_from_dict({**BASE, "analyses": {"attribution": {}}})
    assert plain.capture.scheduler is None and plain.analyses == {"attribution": {}}


def test_a_stage_overrides_the_run_wide_values():
    config = config_from_dict({
        **BASE, "scheduler": "local:2", "memory_budget": "1GB",
        "capture": {"scheduler": None},
        "analyses": {"spectral": {"scheduler": "local:1", "memory_budget": "none"},
                     "topology": {"scheduler": None}, "attribution": {"memory_budget": 5000}}})
    assert config.capture.scheduler is None  # `null`: capture in this process
    assert config.analyses["spectral"] == {"scheduler": "local:1", "memory_budget": "none"}
    assert config.analyses["topology"] == {"scheduler": None}
    assert config.analyses["attribution"] == {"scheduler": "local:2", "memory_budget": 5000}
    # resolved values survive a round trip through config.json
    assert config_from_dict(config.to_dict()) == config


def test_yaml_and_toml_read_the_same(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "model: m.pt\nscheduler: local:2\nmemory_budget: 8GB\ncapture: {scheduler: null}\n"
        "analyses:\n  spectral: {scheduler: 'tcp://h:8786'}\n  mapper: {}\n")
    (tmp_path / "a.toml").write_text(
        'model = "m.pt"\nscheduler = "local:2"\nmemory_budget = "8GB"\n[capture]\n'
        '[analyses.spectral]\nscheduler = "tcp://h:8786"\n[analyses.mapper]\n')
    yaml_config, toml_config = load_config(tmp_path / "a.yaml"), load_config(tmp_path / "a.toml")
    # TOML has no null: its capture inherits the run-wide scheduler
    assert yaml_config.capture.scheduler is None and toml_config.capture.scheduler == "local:2"
    assert yaml_config.analyses == toml_config.analyses == {
        "spectral": {"scheduler": "tcp://h:8786", "memory_budget": "8GB"},
        "mapper": {"scheduler": "local:2"}}


BAD = [
    ({"scheduler": "local:0"}, r"^`scheduler`: Scheduler 'local:0': local needs a worker count"),
    ({"scheduler": "localhost:8786"}, r"^`scheduler`: Scheduler 'localhost:8786' is not"),
    ({"scheduler": 2}, r"^`scheduler` must be local:N or tcp://HOST:PORT \(text\), got 2\.$"),
    ({"capture": {"scheduler": "tcp://host"}}, r"^`capture\.scheduler`: .*no valid HOST:PORT"),
    ({"analyses": {"mapper": {"scheduler": "local:x"}}}, r"^`mapper\.scheduler`: "),
    ({"memory_budget": "lots"}, r"^`memory_budget`: Cannot read the memory budget 'lots'"),
    ({"memory_budget": -5}, r"^`memory_budget`: The memory budget must be positive"),
    ({"analyses": {"attribution": {"memory_budget": "2XB"}}},
     r"^`attribution\.memory_budget`: Cannot read"),
    ({"analyses": {"topology": {"memory_budget": "1GB"}}},
     r"^`topology\.memory_budget`: topology takes no memory budget; spectral and attribution"),
    ({"capture": {"schedular": "local:2"}}, r"Did you mean 'scheduler'"),
    ({"analyses": {"spectral": {"schedular": "local:2"}}},
     r"^Unknown option 'schedular' for analysis 'spectral'\. Did you mean 'scheduler'\?"),
    ({"analyses": {"mapper": {"memory_budget": "1GB"}}}, r"^`mapper\.memory_budget`: mapper takes"),
    ({"sheduler": "local:2"}, r"Did you mean 'scheduler'"),
    ({"memory-budget": "1GB"}, r"Did you mean 'memory_budget'"),
]


@pytest.mark.parametrize("extra,message", BAD)
def test_bad_scheduler_and_budget_values_are_refused_on_load_naming_the_key(extra, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({**BASE, **extra})


def test_the_cli_refuses_a_bad_scheduler_in_one_line_before_writing(tmp_path):
    from typer.testing import CliRunner

    from deepprofile.cli import app

    path = tmp_path / "run.yaml"
    path.write_text(f"model: small_resnet\nout: {tmp_path / 'run'}\n"
                    "analyses:\n  spectral: {scheduler: 'local:-1'}\n")
    result = CliRunner().invoke(app, ["run", str(path), "-q"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "`spectral.scheduler`" in lines[0] and "local:N" in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("where", ["top", "attribution"])
def test_workers_need_a_checkpoint_file(tmp_path, where):
    """A random-init architecture on a scheduler: one line naming the stage, nothing written
    (checked before any capture, so no cluster is started either)."""
    out = tmp_path / "run"
    data = {"model": "small_resnet", "num_classes": 10, "out": str(out),
            "capture": {"layers": ["layer1"], "reductions": ["mean"], "limit": 8},
            "analyses": {"attribution": {"n_images": 2}}, "report": False}
    if where == "top":
        data["scheduler"] = "local:1"
        stage = "capture"
    else:
        data["analyses"]["attribution"]["scheduler"] = "local:1"
        stage = "attribution"
    with pytest.raises(ConfigError, match=rf"^`{stage}\.scheduler` needs `model:` to be a "
                                          r"checkpoint file.*scheduler: null"):
        run_config(config_from_dict(data), quiet=True, echo=lambda _: None)
    assert not out.exists()


# -- a run on Dask equals the run in one process ------------------------------------------
RUN = {
    "num_classes": 10, "dataset": {"name": "digits", "split": "test"}, "seed": 1,
    "device": "cpu",
    "capture": {"layers": ["layer1", "layer2"], "reductions": ["mean", "flatten"], "limit": 24,
                "batch_size": 8, "chunk_size": 8},
    "analyses": {
        "topology": {"n_points": 20, "metrics": ["sliced_wasserstein"]},
        "mapper": {"intervals": 4, "thumbnails": False},
        "spectral": {"layers": ["layer2"], "compare_random_init": False},
        "attribution": {"n_images": 3, "sigmas": [0.0, 0.3], "n_draws": 2, "n_steps": 4,
                        "robustness": False, "alignment": False, "boundary": False,
                        "accuracy_images": 8, "n_examples": 1, "shard_size": 2},
    },
    "report": False,
}


def _checkpoint(root: Path) -> Path:
    from deepprofile.models import SmallResNet, save_checkpoint

    torch.manual_seed(0)
    kwargs = {"in_channels": 1, "widths": (4, 6, 8)}
    return save_checkpoint(root / "m.pt", SmallResNet(num_classes=10, **kwargs).eval(),
                           "small_resnet", kwargs)


def _outputs(run_dir: Path) -> dict:
    """Every results JSON, run.json and each store's fingerprint, without what differs
    between two identical runs (times, dates, the command, the run folder's path, the
    scheduler that attribution records)."""
    from deepprofile.capture.store import ActivationStore

    files = {}
    for path in [run_dir / "run.json", *sorted((run_dir / "results").glob("*.json"))]:
        data = json.loads(path.read_text().replace(str(run_dir), "RUN"))
        if path.stem == "attribution":
            data["params"].pop("scheduler")
            for key in ("provenance", "store_identity"):
                data.pop(key, None)
        files[path.name] = comparable(data)
    for store in sorted(run_dir.glob("activations*.zarr")):
        files[store.name] = ActivationStore.open(store).metadata["fingerprint"]
    return files


def _run_pair(tmp_path: Path, scheduler: str) -> tuple[dict, dict]:
    ckpt = _checkpoint(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as on a Dask worker: the same BLAS paths in both runs
    try:
        one = run_config(config_from_dict({**RUN, "model": str(ckpt),
                                           "out": str(tmp_path / "one")}),
                         quiet=True, echo=lambda _: None)
        config = config_from_dict({**RUN, "model": str(ckpt), "out": str(tmp_path / "dask"),
                                   "scheduler": scheduler})
        two = run_config(config, quiet=True, echo=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    saved = json.loads((two / "config.json").read_text())
    assert saved["scheduler"] == scheduler and saved["capture"]["scheduler"] == scheduler
    assert json.loads((two / "results" / "attribution.json").read_text())["params"][
        "scheduler"] is not None
    return _outputs(one), _outputs(two)


def test_run_on_a_running_scheduler_equals_one_process(tmp_path):
    """`scheduler: tcp://...` (workers as threads of this process, fast): the same stores,
    results and run.json as the config without a scheduler."""
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  protocol="tcp://", dashboard_address=None) as cluster:
        one, two = _run_pair(tmp_path, cluster.scheduler_address)
    assert set(one) >= {"run.json", "capture.json", "topology.json", "mapper.json",
                        "spectral.json", "attribution.json", "activations.zarr",
                        "activations_flatten.zarr"}
    assert two == one


@pytest.mark.slow
def test_run_on_local_worker_processes_equals_one_process(tmp_path):
    """`scheduler: local:2`: one cluster of two worker processes serves every stage."""
    pytest.importorskip("dask.distributed")
    one, two = _run_pair(tmp_path, "local:2")
    assert two == one


def test_budget_and_scheduler_reach_the_analysis_functions(monkeypatch, tmp_path):
    """spectral runs under the configured budget (a context setting), attribution gets it
    as its keyword; both get the stage's scheduler."""
    import deepprofile.attribution.pipeline as attribution
    import deepprofile.spectral.pipeline as spectral
    from deepprofile.attribution.memory import current_budget
    from deepprofile.config import _run_analysis

    seen = {}

    @functools.wraps(spectral.run_spectral)  # the option check reads the real signature
    def fake_spectral(model, run_dir, dataset, layers, **kw):
        seen["spectral"] = (current_budget(), kw["scheduler"], kw["store"])
        return "spectral result"

    @functools.wraps(attribution.run_attribution)
    def fake_attribution(model, run_dir, dataset, **kw):
        seen["attribution"] = (kw["memory_budget"], kw["scheduler"], current_budget())
        return "attribution result"

    monkeypatch.setattr(spectral, "run_spectral", fake_spectral)
    monkeypatch.setattr(spectral, "summarize_spectral", str)
    monkeypatch.setattr(attribution, "run_attribution", fake_attribution)
    monkeypatch.setattr(attribution, "summarize_attribution", str)
    config = config_from_dict({**BASE, "scheduler": "tcp://h:1", "memory_budget": "1MiB",
                               "analyses": {"spectral": {}, "attribution": {}}})
    for name, options in config.analyses.items():
        _run_analysis(name, dict(options), None, tmp_path, None, 0, True, lambda _: None)
    default = current_budget()
    assert seen["spectral"] == (2**20, "tcp://h:1", None)  # no mean store in tmp_path
    assert seen["attribution"] == ("1MiB", "tcp://h:1", default)
    assert current_budget() == default  # the setting ends with the call
