"""Fine-tuned and mapper-node maps as map sets of attribution.zarr (issue 17): the
fine-tuned weights saved once and reused, shards resumed, identity-checked, on Dask."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from deepprofile.attribution.finetuned import FILE_NAME
from deepprofile.attribution.mapsets import MapSet
from deepprofile.attribution.pipeline import load_run_inputs, run_attribution
from deepprofile.attribution.store import STORE_NAME, MapStore, read_array, read_map
from deepprofile.errors import CorruptStoreError
from deepprofile.rundir import RunDir

from .conftest import make_run
from .kill_worker import SETS, TINY
from .test_shards import _comparable, _leftovers, _spawn, arrays, copy_run

FT_KEY = "sde_ig_ft:0.3"


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A run folder after one uninterrupted attribution with fine-tuning and node maps."""
    path, model, _ = make_run(tmp_path_factory.mktemp("attr_sets"), n=20)
    _, info, dataset, train = load_run_inputs(path, device="cpu", need_train=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1, user_api="blas"):  # as kill_worker.py and the CLI
        result = run_attribution(model, path, dataset, model_info=info, train_dataset=train,
                                 **TINY, **SETS)
    torch.set_num_threads(threads)
    return path, model, dataset, train, info, result


def again(path, model, dataset, train, info, **over):
    with threadpool_limits(limits=1, user_api="blas"):
        return run_attribution(model, path, dataset, model_info=info, train_dataset=train,
                               **{**TINY, **SETS, **over})


def test_map_sets_hold_the_maps_computed_in_one_batch(done):
    """The fine-tuned SDE maps and the node maps in their map sets are the maps of one
    call over every image (as before they were sharded), bit for bit (IG is deterministic
    and does not depend on the batch split)."""
    from deepprofile.attribution.finetuned import load_finetuned
    from deepprofile.attribution.manifold import select_node_rows
    from deepprofile.attribution.methods import attribute
    from deepprofile.attribution.sde import sde_attribute

    path, model, dataset, _, _, res = done
    stored = RunDir(path).read_result("attribution")
    assert res.timings["finetune_trained"] == 1 and res.timings["finetune_shards_computed"] == 3
    assert stored["methods"][FT_KEY]["array"] == "sets/finetuned/maps/sde_ig_ft_0.3"
    assert stored["files"]["finetuned_weights"] == FILE_NAME
    store = MapStore.open(path / STORE_NAME)
    assert {s.name for s in store.map_sets()} == {"finetuned", "nodes"}
    assert all(s.is_complete for s in store.map_sets())
    tuned = load_finetuned(model, path / FILE_NAME, store.map_set("finetuned").identity[
        "finetuned_weights"])
    x = torch.from_numpy(store.images())
    one = sde_attribute(tuned, x, sigma=0.3, n_draws=2, seed=0, n_steps=4,
                        target=torch.from_numpy(store.read("targets")))
    assert np.array_equal(read_map(path, stored, FT_KEY), one.attributions)
    assert np.array_equal(read_map(path, stored, FT_KEY, variance=True), one.variance)
    assert stored["methods"][FT_KEY]["sde"] == one.sde
    rows = select_node_rows(SETS["node_members"], max_per_node=3, seed=0)
    nodes = store.map_set("nodes")
    assert nodes.rows().tolist() == rows.tolist() and nodes.n_shards == -(-len(rows) // 2)
    node_x = torch.stack([torch.as_tensor(dataset[int(i)][0]).float()
                          for i in np.asarray(RunDir(path).store().indices)[rows]])
    plain = attribute(model, node_x, method="integrated_gradients", target="prediction",
                      seed=0, n_steps=4)
    assert np.array_equal(nodes.map_array("ig"), plain.attributions)
    assert read_array(path, stored, stored["nodes"]["array"]).shape == (3, 32, 32)


def test_rerun_reuses_weights_and_maps_and_resumes_a_lost_shard(done, tmp_path):
    path, model, dataset, train, info, first = done
    path = copy_run(path, tmp_path / "a")
    before, weights = arrays(path), (path / FILE_NAME).read_bytes()
    got = again(path, model, dataset, train, info)
    assert got.timings["finetune_trained"] == 0
    assert got.timings["finetune_shards_computed"] == got.timings["node_shards_computed"] == 0
    assert arrays(path) == before and (path / FILE_NAME).read_bytes() == weights
    assert got.finetune == first.finetune and got.nodes == first.nodes
    # a lost shard of each set (flag cleared, rows blanked) is the only one redone
    store = MapStore.open(path / STORE_NAME)
    ft, nodes = store.map_set("finetuned"), store.map_set("nodes")
    ft._group["shards_done"][2] = 0
    ft._group["maps/sde_ig_ft_0.3"][4] = np.nan
    nodes._group["maps/ig"][0] = 0.0  # damaged rows of a finished shard
    with pytest.raises(CorruptStoreError, match="rows 0-1 do not match their checksum"):
        read_array(path, RunDir(path).read_result("attribution"), "sets/nodes/maps/ig")
    got = again(path, model, dataset, train, info)
    assert got.timings["finetune_trained"] == 0
    assert got.timings["finetune_shards_computed"] == got.timings["node_shards_computed"] == 1
    assert arrays(path) == before and _comparable(path) == _comparable(done[0])


def test_other_settings_replace_a_set_never_mix(done, tmp_path):
    path, model, dataset, train, info, _ = done
    path = copy_run(path, tmp_path / "b")
    old = RunDir(path).read_result("attribution")
    store = MapStore.open(path / STORE_NAME)
    ft_hash, node_hash = store.map_set("finetuned").hash, store.map_set("nodes").hash
    got = again(path, model, dataset, train, info, finetune_steps=2,
                node_members={"n0": [0, 1], "n1": [2]})
    assert got.timings["shards_computed"] == 0  # the run model's maps are kept
    assert got.timings["finetune_trained"] == 1 and got.finetune["steps"] == 2
    assert got.timings["finetune_shards_computed"] == 3
    store = MapStore.open(path / STORE_NAME)
    assert store.map_set("finetuned").hash != ft_hash
    assert store.map_set("nodes").hash != node_hash
    assert store.map_set("nodes").rows().tolist() == [0, 1, 2]
    with pytest.raises(CorruptStoreError, match="map set 'finetuned'.*other settings"):
        read_map(path, old, FT_KEY)
    assert _leftovers(path) == []


def test_without_a_run_folder_the_same_maps_in_memory(done):
    path, model, dataset, train, info, _ = done
    stored = RunDir(path).read_result("attribution")
    captured = torch.utils.data.Subset(dataset, range(20))  # the run's 20 images, in order
    got = run_attribution(model, None, captured, train_dataset=train, **TINY,
                          finetune_steps=SETS["finetune_steps"])
    assert got.images["dataset_indices"] == stored["images"]["dataset_indices"]
    assert got.finetune == done[5].finetune
    for key in (FT_KEY, "ig"):
        assert got.methods[key]["mean_abs"] == stored["methods"][key]["mean_abs"], key
        assert got.examples["saliency"][key] == stored["examples"]["saliency"][key], key


def test_damaged_weights_are_fine_tuned_again(done, tmp_path):
    path, model, dataset, train, info, first = done
    path = copy_run(path, tmp_path / "c")
    before = arrays(path)
    (path / FILE_NAME).write_bytes(b"not a checkpoint")
    got = again(path, model, dataset, train, info)
    assert got.timings["finetune_trained"] == 1  # the same weights again: maps kept
    assert got.timings["finetune_shards_computed"] == 0 and arrays(path) == before
    assert got.finetune == first.finetune


def test_dask_two_workers_equal_one_process(done, tmp_path):
    """Map-set shards on a 2-worker LocalCluster (threads; each task loads the checkpoint
    and the fine-tuned weights from the run folder) give the one-process arrays."""
    distributed = pytest.importorskip("dask.distributed")
    path, model, dataset, train, info, _ = done
    two = copy_run(path, tmp_path / "two")
    shutil.rmtree(two / STORE_NAME)
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1,
                            dashboard_address=None) as client:
        got = again(two, model, dataset, train, info, scheduler=client)
    assert got.timings["finetune_trained"] == 0  # the weights file was kept
    assert got.timings["finetune_shards_computed"] == 3
    assert got.timings["node_shards_computed"] == 4  # 8 rows
    assert arrays(two) == arrays(path)
    assert _comparable(two) == _comparable(path)


@pytest.mark.slow
def test_dask_worker_processes_equal_one_process(done, tmp_path):
    """`local:2`: worker processes fine-tune nothing; they load the saved weights."""
    pytest.importorskip("dask.distributed")
    path, model, dataset, train, info, _ = done
    two = copy_run(path, tmp_path / "two")
    shutil.rmtree(two / STORE_NAME)
    (two / FILE_NAME).unlink()
    got = again(two, model, dataset, train, info, scheduler="local:2")
    assert got.timings["finetune_trained"] == 1
    assert arrays(two) == arrays(path)
    assert _comparable(two) == _comparable(path)


def _killed_and_resumed(done, tmp_path, point: str, expect: dict[str, float]) -> None:
    path = copy_run(done[0], tmp_path / "killed")
    shutil.rmtree(path / STORE_NAME)
    (path / FILE_NAME).unlink()
    killed = _spawn(path, point, argv=["sets"])
    assert killed.returncode == -9, f"no kill at {point}"
    weights = (path / FILE_NAME).stat().st_mtime_ns
    rerun = _spawn(path, None, argv=["sets"])
    timings = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert {k: timings[k] for k in expect} == expect
    assert (path / FILE_NAME).stat().st_mtime_ns == weights  # not fine-tuned again
    assert arrays(path) == arrays(done[0])
    assert _comparable(path) == _comparable(done[0])
    assert _leftovers(path) == [] and not list(path.glob(f".{FILE_NAME}.*"))


@pytest.mark.slow
def test_killed_after_fine_tuning_does_not_fine_tune_again(done, tmp_path):
    """SIGKILL right after the fine-tuned weights are saved: the rerun loads them, computes
    the fine-tuned and node maps, and ends with the uninterrupted run's arrays."""
    _killed_and_resumed(done, tmp_path, "attribution-finetuned", {
        "shards_computed": 0, "finetune_trained": 0, "finetune_shards_computed": 3,
        "node_shards_computed": 4})


@pytest.mark.slow
def test_killed_after_first_fine_tuned_shard_resumes(done, tmp_path):
    """SIGKILL right after the first fine-tuned shard is committed: the rerun fine-tunes
    nothing and computes only the two pending fine-tuned shards (and the node maps)."""
    _killed_and_resumed(done, tmp_path, "attribution-set-shard", {
        "shards_computed": 0, "finetune_trained": 0, "finetune_shards_computed": 2,
        "node_shards_computed": 4})


def test_weights_file_is_written_atomically(done, tmp_path, monkeypatch):
    """A leftover temporary weights file of a dead process is removed; the file in place
    is only ever a whole checkpoint (written aside, then renamed)."""
    path, model, dataset, train, info, _ = done
    path = copy_run(path, tmp_path / "d")
    dead = path / f".{FILE_NAME}.creating-{2**22 + 12345}"
    dead.write_bytes(b"partial")
    assert again(path, model, dataset, train, info).timings["finetune_trained"] == 0
    assert not dead.exists() and os.path.getsize(path / FILE_NAME) > 1000
    assert MapSet.open(MapStore.open(path / STORE_NAME), "finetuned").is_complete


def _first_chunk(folder):
    return next(p for p in sorted(folder.rglob("*")) if p.is_file() and "c" in p.parts[
        len(folder.parts):])


def test_lost_node_maps_chunk_and_unreadable_flags_are_damage(done, tmp_path):
    """The per-node mean maps (one chunk outside the shards) read as zeros once their chunk
    is lost, and a truncated shards_done file was a Zstd traceback: both are one-line
    CorruptStoreErrors."""
    path = copy_run(done[0], tmp_path / "copy")
    result = RunDir(path).read_result("attribution")
    where = result["files"]["node_maps"]
    assert where.startswith("extra/") and np.abs(read_array(path, result, where)).sum() > 0
    _first_chunk(path / STORE_NAME / where).unlink()
    with pytest.raises(CorruptStoreError, match="node_maps.*checksum"):
        read_array(path, result, where)
    flags = _first_chunk(path / STORE_NAME / "sets" / "finetuned" / "shards_done")
    flags.write_bytes(flags.read_bytes()[:3])
    with pytest.raises(CorruptStoreError, match="shards_done"):
        read_map(path, result, FT_KEY)
