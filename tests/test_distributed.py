"""Dask capture gives the same arrays as a single-process capture, and resumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepprofile.capture import ActivationStore, capture_to_store
from deepprofile.data import ShapesDataset
from deepprofile.models import SmallResNet, load_model, save_checkpoint
from deepprofile.results import comparable

distributed = pytest.importorskip("dask.distributed")


def test_distributed_capture_matches_single_process(tmp_path):
    from deepprofile.distributed import capture_distributed

    torch.manual_seed(0)
    model = SmallResNet(num_classes=4, in_channels=3, widths=(4, 8, 8))
    ckpt = save_checkpoint(tmp_path / "m.pt", model, "small_resnet",
                           {"in_channels": 3, "widths": (4, 8, 8)})
    data = ShapesDataset(n=70, seed=3)
    reds = {"layer1": "positions:3", "layer3": "mean"}
    ref = capture_to_store(model.eval(), data, ["layer1", "layer3"], tmp_path / "ref.zarr",
                           reductions=reds, batch_size=8, chunk_size=16, quiet=True)
    threads_before = torch.get_num_threads()
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1,
                            dashboard_address=None) as client:
        got = capture_distributed(ckpt, data.spec(), ["layer1", "layer3"], tmp_path / "d.zarr",
                                  reductions=reds, client=client, batch_size=8, chunk_size=16)
        assert got.is_complete and got.n_chunks == 5
        for name in ref.layers:
            np.testing.assert_array_equal(got.layer(name), ref.layer(name))
        np.testing.assert_array_equal(got.logits, ref.logits)
        # a second call on a finished store sends no work and keeps the arrays
        again = capture_distributed(ckpt, data.spec(), ["layer1", "layer3"],
                                    tmp_path / "d.zarr", reductions=reds, client=client,
                                    batch_size=8, chunk_size=16)
    np.testing.assert_array_equal(ActivationStore.open(again.path).labels, ref.labels)
    # in-process workers leave the caller's torch thread count alone
    assert torch.get_num_threads() == threads_before


def _store_bytes(path):
    store = ActivationStore.open(path)
    return store.raw_arrays()


def _run_files(run_dir):
    import json

    files = {p.name: json.loads(p.read_text().replace(str(run_dir), "RUN"))
             for p in [run_dir / "run.json", *sorted((run_dir / "results").glob("*.json"))]}
    store = ActivationStore.open(run_dir / "activations.zarr")
    files["store-metadata"] = json.loads(json.dumps(store.metadata))
    files["store-config"] = json.loads(json.dumps(store.config))
    return comparable(files)


def test_capture_cli_with_scheduler_equals_one_process(tmp_path):
    """`deepprofile capture --scheduler` writes the store, results and run.json of a
    capture in one process (workers in this process, reached by a tcp:// address)."""
    from typer.testing import CliRunner

    from deepprofile.cli import app

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "m.pt", SmallResNet(in_channels=1, widths=(4, 8, 8)),
                           "small_resnet", {"in_channels": 1, "widths": (4, 8, 8)})
    args = ["capture", str(ckpt), "--limit", "40", "--layer", "layer*", "--reduction",
            "positions:2", "--batch-size", "8", "--chunk-size", "16", "--device", "cpu", "-q"]
    runner = CliRunner()
    res = runner.invoke(app, args + ["--out", str(tmp_path / "ref")])
    assert res.exit_code == 0, res.output
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  protocol="tcp://", dashboard_address=None) as cluster:
        res = runner.invoke(app, args + ["--out", str(tmp_path / "dask"), "--scheduler",
                                         cluster.scheduler_address])
    assert res.exit_code == 0, res.output
    ref, got = tmp_path / "ref", tmp_path / "dask"
    assert ActivationStore.open(got / "activations.zarr").n_chunks == 3
    assert _store_bytes(got / "activations.zarr") == _store_bytes(ref / "activations.zarr")
    assert _run_files(got) == _run_files(ref)
    # a random-init architecture cannot be rebuilt identically on workers: one-line error
    res = runner.invoke(app, ["capture", "small_resnet", "--limit", "8", "--out",
                              str(tmp_path / "rand"), "--scheduler", "local:1", "-q"])
    assert res.exit_code == 2 and "checkpoint file" in res.output, res.output
    assert "Traceback" not in res.output
    res = runner.invoke(app, args + ["--out", str(tmp_path / "bad"), "--scheduler", "local:0"])
    assert res.exit_code == 2 and "local:N" in res.output and not (tmp_path / "bad").exists()


def test_distributed_capture_resumes_a_partial_store(tmp_path, monkeypatch):
    """A store left half-filled (a killed job) is finished by sending only its pending chunks."""
    import deepprofile.distributed as dd
    from deepprofile.capture.runner import fill_chunks, prepare_store

    torch.manual_seed(0)
    model = SmallResNet(num_classes=4, in_channels=3, widths=(4, 8, 8))
    ckpt = save_checkpoint(tmp_path / "m.pt", model, "small_resnet",
                           {"in_channels": 3, "widths": (4, 8, 8)})
    loaded, info = load_model(ckpt)  # as the workers load it, so the configurations agree
    data = ShapesDataset(n=70, seed=3)
    kwargs = dict(reductions="mean", batch_size=8, chunk_size=16, model_info=info.to_dict())
    ref = capture_to_store(loaded, data, ["layer2"], tmp_path / "ref.zarr", quiet=True, **kwargs)
    store, rows = prepare_store(loaded, data, ["layer2"], tmp_path / "d.zarr", **kwargs)
    fill_chunks(loaded, data, store, rows, [0, 3], batch_size=8)  # then "killed"
    real, log = dd._fill_task, tmp_path / "sent"
    log.mkdir()

    def recording(*args, **kw):  # tasks may be pickled: record in files, not a list
        (log / "-".join(map(str, args[4]))).touch()
        return real(*args, **kw)

    monkeypatch.setattr(dd, "_fill_task", recording)
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1,
                            dashboard_address=None) as client:
        got = dd.capture_distributed(ckpt, data.spec(), ["layer2"], tmp_path / "d.zarr",
                                     reductions="mean", client=client, batch_size=8,
                                     chunk_size=16)
    assert sorted(p.name for p in log.iterdir()) == ["1", "2", "4"]
    for key in ref.array_keys():
        np.testing.assert_array_equal(got._group[key][...], ref._group[key][...])
    assert got.metadata["fingerprint"] == ref.metadata["fingerprint"]
