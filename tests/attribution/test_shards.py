"""Attribution maps in attribution.zarr: shards, reuse, resume, identity, Dask (issue 17)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import deepprofile
from deepprofile.attribution.pipeline import run_attribution
from deepprofile.attribution.store import STORE_NAME, MapStore, read_array, read_map
from deepprofile.errors import CorruptStoreError, DeepProfileError
from deepprofile.rundir import RunDir

from .conftest import make_run
from .kill_worker import TINY as KILL_TINY

#: Small but with every per-image stage: captum methods, Grad-CAM, SDE at 0 and 0.3, BIG
#: (5 images in 3 shards).
TINY = KILL_TINY
WORKER = Path(__file__).with_name("kill_worker.py")
ROOT = str(Path(deepprofile.__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("attr_shards"), n=20)


def arrays(run_dir) -> dict[str, bytes]:
    """Every array of the map store, as bytes (bitwise comparison)."""
    import zarr

    group = zarr.open_group(str(run_dir / STORE_NAME), mode="r")
    out = {}

    def walk(g, prefix=""):
        for name, arr in g.arrays():
            out[prefix + name] = np.ascontiguousarray(arr[...]).tobytes()
        for name, sub in g.groups():
            walk(sub, f"{prefix}{name}/")

    walk(group)
    return out


def copy_run(src, dst):
    import shutil

    shutil.copytree(src.parent, dst)
    return dst / "run"


def test_maps_reused_resumed_and_never_mixed(run, tmp_path):
    path, model, dataset = run
    path = copy_run(path, tmp_path / "a")
    first = run_attribution(model, path, dataset, **TINY)
    assert first.timings["shards_computed"] == 3  # 5 images in shards of 2
    store = MapStore.open(path / STORE_NAME)
    assert store.n_shards == 3 and store.is_complete
    before = arrays(path)
    stored = RunDir(path).read_result("attribution")
    assert stored["files"]["maps_hash"] == store.hash
    assert {"ig", "smoothgrad", "sde_ig:0.3", "big"} <= set(stored["methods"])
    assert first.checks["sigma0_equals_plain"] is True
    # the same settings again: nothing recomputed, same arrays and summaries
    again = run_attribution(model, path, dataset, **TINY)
    assert again.timings["shards_computed"] == 0 and arrays(path) == before
    assert again.examples == first.examples and again.boundary == first.boundary
    # a lost shard (flag cleared, rows blanked) is the only one redone
    store._group["shards_done"][1] = 0
    store._group["maps/ig"][2:4] = np.nan
    with pytest.raises(CorruptStoreError, match="1 of 3 shards pending.*resume"):
        read_map(path, stored, "ig")
    resumed = run_attribution(model, path, dataset, **TINY)
    assert resumed.timings["shards_computed"] == 1 and arrays(path) == before
    # damaged rows of a finished shard fail their checksum; the rerun redoes that shard
    store._group["maps/sde_ig_0.3"][4] = 0.0
    with pytest.raises(CorruptStoreError, match="rows 4-4 do not match their checksum"):
        read_map(path, stored, "sde_ig:0.3")
    repaired = run_attribution(model, path, dataset, **TINY)
    assert repaired.timings["shards_computed"] == 1 and arrays(path) == before
    # other settings replace the store; the older result then names other maps
    run_attribution(model, path, dataset, **{**TINY, "n_steps": 3})
    assert MapStore.open(path / STORE_NAME).hash != store.hash
    with pytest.raises(CorruptStoreError, match="other settings.*deepprofile attribute"):
        read_map(path, stored, "ig")


def test_shards_equal_one_batch_for_deterministic_maps(run):
    """Splitting the images into shards changes no deterministic map beyond float rounding
    of the batch split: IG and SDE-IG bit for bit, saliency / Grad-CAM / BIG to 1e-6 of the
    map's maximum. SmoothGrad and GradientShap draw other (seeded) noise."""
    from deepprofile.attribution.shards import MapSettings, compute_shard

    _, model, dataset = run
    x = torch.stack([torch.as_tensor(dataset[i][0]).float() for i in range(5)])
    settings = MapSettings(base="integrated_gradients", short="ig", n_steps=4, n_draws=2,
                           sigmas=(0.0, 0.3), noise_mode="additive", seed=0,
                           smoothgrad_stdev=0.3, boundary=True, cam_layer="layer3",
                           residual=True)
    whole = compute_shard(model, x, settings, 0)
    parts = [compute_shard(model, x[a:b], settings, a) for a, b in ((0, 2), (2, 4), (4, 5))]
    for key, ref in whole["maps"].items():
        got = np.concatenate([p["maps"][key] for p in parts])
        if key in ("ig", "sde_ig:0.3"):
            assert np.array_equal(got, ref), key
        elif key not in ("smoothgrad", "gradient_shap"):
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6 * np.abs(ref).max(),
                                       err_msg=key)
    assert all(p["sigma0_equal"].all() for p in parts)
    assert parts[0]["meta"] == whole["meta"]


def test_legacy_npy_maps_still_read(tmp_path):
    maps = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)
    (tmp_path / "attribution").mkdir()
    np.save(tmp_path / "attribution" / "ig.npy", maps)
    result = {"methods": {"ig": {"file": "attribution/ig.npy"},
                          "gone": {"file": "attribution/gone.npy"}}}
    np.testing.assert_array_equal(read_map(tmp_path, result, "ig"), maps)
    with pytest.raises(CorruptStoreError, match="rerun|attribute"):
        read_map(tmp_path, result, "gone")
    with pytest.raises(CorruptStoreError, match="No attribution maps"):
        read_map(tmp_path, {"methods": {"ig": {"array": "maps/ig"}}}, "ig")
    # arrays named in files[...] of older runs, and truncated files: one-line errors too
    with pytest.raises(CorruptStoreError, match="images.npy is missing"):
        read_array(tmp_path, result, "attribution/images.npy")
    path = tmp_path / "attribution" / "ig.npy"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptStoreError, match="ig.npy cannot be read"):
        read_map(tmp_path, result, "ig")


def test_explorer_reads_maps_from_the_store(run, tmp_path):
    from deepprofile.explore.data import RunData

    path, model, dataset = run
    path = copy_run(path, tmp_path / "e")
    run_attribution(model, path, dataset, **{**TINY, "boundary": False, "sigmas": (0.0,)})
    stored = RunDir(path).read_result("attribution")
    got = RunData.open(path).attribution()
    assert got is not None and got.rows.tolist() == stored["images"]["store_rows"]
    np.testing.assert_allclose(got.maps, np.abs(read_map(path, stored, "ig")).sum(axis=1))


def test_scheduler_needs_a_run_folder(run):
    _, model, dataset = run
    with pytest.raises(DeepProfileError, match="needs a run folder"):
        run_attribution(model, None, dataset, scheduler="local:2", **TINY)


def test_dask_two_workers_equal_one_process(run, tmp_path):
    """Shards on a 2-worker LocalCluster (threads) give the one-process arrays bit for bit."""
    distributed = pytest.importorskip("dask.distributed")
    path, model, dataset = run
    one = copy_run(path, tmp_path / "one")
    two = copy_run(path, tmp_path / "two")
    ref = run_attribution(model, one, dataset, **TINY)
    threads = torch.get_num_threads()
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1,
                            dashboard_address=None) as client:
        got = run_attribution(model, two, dataset, scheduler=client, **TINY)
        # workers load the run's checkpoint: another model in the caller is refused
        other = copy.deepcopy(model)
        with torch.no_grad():
            other.fc.bias.add_(1.0)
        with pytest.raises(DeepProfileError, match="is not the model given"):
            run_attribution(other, copy_run(path, tmp_path / "other"), dataset,
                            scheduler=client, **TINY)
    assert torch.get_num_threads() == threads
    assert got.timings["shards_computed"] == 3
    assert arrays(two) == arrays(one)
    assert _comparable(two) == _comparable(one)
    assert got.examples == ref.examples


def _comparable(run_dir) -> str:
    """results/attribution.json without what differs between runs (times, dates, paths)."""
    data = RunDir(run_dir).read_result("attribution")
    for key in ("timings", "provenance", "store_identity"):
        data.pop(key, None)
    data["params"].pop("scheduler", None)
    return json.dumps(data, sort_keys=True).replace(str(run_dir), "RUN")


@pytest.mark.slow
def test_dask_worker_processes_equal_one_process(run, tmp_path):
    """`local:2`: two worker processes, each loading the run's checkpoint itself."""
    pytest.importorskip("dask.distributed")
    path, model, dataset = run
    one = copy_run(path, tmp_path / "one")
    two = copy_run(path, tmp_path / "two")
    run_attribution(model, one, dataset, **TINY)
    got = run_attribution(model, two, dataset, scheduler="local:2", **TINY)
    assert got.timings["shards_computed"] == 3
    assert arrays(two) == arrays(one)
    assert _comparable(two) == _comparable(one)


def _spawn(run_dir: Path, kill_at: str | None, env_extra: dict | None = None,
           argv: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("DEEPPROFILE_TEST_KILL_AT", None)
    if kill_at:
        env["DEEPPROFILE_TEST_KILL_AT"] = kill_at
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, str(WORKER), str(run_dir), *(argv or [])], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, -9), proc.stderr[-2000:]
    return proc


def _leftovers(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.rglob(".*")
                  if ".creating-" in p.name or ".removing-" in p.name)


def _killed_and_resumed(run, tmp_path, point: str, computed_after: int) -> None:
    from .kill_worker import run as run_worker

    path, _, _ = run
    expected = copy_run(path, tmp_path / "expected")
    assert run_worker(str(expected)) == 3  # uninterrupted, in this process (one thread)
    killed = copy_run(path, tmp_path / "killed")
    assert _spawn(killed, point).returncode == -9, f"no kill at {point}"
    again = _spawn(killed, None)  # the user runs the same command again
    assert again.returncode == 0 and int(again.stdout.split()[-1]) == computed_after
    assert arrays(killed) == arrays(expected)
    assert _comparable(killed) == _comparable(expected)
    assert _leftovers(killed) == []


@pytest.mark.slow
def test_killed_after_first_shard_resumes_with_the_rest(run, tmp_path):
    """SIGKILL right after the first shard is committed: the rerun computes only the two
    pending shards and ends with the uninterrupted run's arrays, bit for bit."""
    _killed_and_resumed(run, tmp_path, "attribution-shard", computed_after=2)


@pytest.mark.slow
def test_killed_while_creating_the_store_starts_clean(run, tmp_path):
    """SIGKILL before the new store is renamed into place: the rerun removes the leftover
    and computes every shard."""
    _killed_and_resumed(run, tmp_path, "attribution-store-created", computed_after=3)


@pytest.mark.slow
def test_worker_killed_mid_task_is_retried(run, tmp_path, monkeypatch):
    """One of two worker processes dies (SIGKILL) after computing a shard, before writing
    it: Dask runs the task again and the maps equal the one-process maps bit for bit."""
    pytest.importorskip("dask.distributed")
    from deepprofile.testhooks import ENV_ONCE

    path, model, dataset = run
    one = copy_run(path, tmp_path / "one")
    two = copy_run(path, tmp_path / "two")
    run_attribution(model, one, dataset, **TINY)
    marker = tmp_path / "killed.pid"
    monkeypatch.setenv(ENV_ONCE, f"attribution-task:{marker}")  # inherited by the workers
    got = run_attribution(model, two, dataset, scheduler="local:2", **TINY)
    assert marker.is_file() and int(marker.read_text()) != os.getpid()  # a worker died
    assert got.timings["shards_computed"] == 3
    assert arrays(two) == arrays(one)
    assert _comparable(two) == _comparable(one)


def test_cli_scheduler_address_and_bad_values(run, tmp_path):
    """`attribute --scheduler tcp://...` (a two-worker cluster in this process, reached by
    its address) fills the store under the memory budget; a bad --scheduler or --shard-size
    is exit 2, one line."""
    distributed = pytest.importorskip("dask.distributed")
    import typer
    from typer.testing import CliRunner

    from deepprofile.attribution.cli import register

    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command, so typer keeps `attribute` as a subcommand
        pass

    path = copy_run(run[0], tmp_path / "cli")
    for bad in (["--scheduler", "local:zero"], ["--shard-size", "0"]):
        res = CliRunner().invoke(app, ["attribute", str(path), *bad])
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert not (path / STORE_NAME).exists()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  protocol="tcp://", dashboard_address=None) as cluster:
        res = CliRunner().invoke(app, [
            "attribute", str(path), "--preset", "quick", "--n-images", "3", "--n-steps", "2",
            "--n-draws", "1", "--no-alignment", "--shard-size", "2", "--memory-budget", "1KB",
            "-q",
            "--scheduler", cluster.scheduler_address])
    assert res.exit_code == 0, res.output
    stored = RunDir(path).read_result("attribution")
    assert stored["params"]["scheduler"] == cluster.scheduler_address
    assert stored["timings"]["shards_computed"] == 2
    assert read_map(path, stored, "ig").shape == (3, 1, 32, 32)
    # the memory budget applied inside the tasks: one sample per pass under 1 KB
    plan = stored["methods"]["ig"]["params"]["memory"]
    assert plan["budget"] == 1000 and plan["samples_per_pass"] == 1
