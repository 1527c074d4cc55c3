"""TRAK featurisation as Dask tasks (issue 17): the features and scores of one process,
resumable after the whole job is killed, retried when a worker dies."""

from __future__ import annotations

import numpy as np
import pytest

from deepprofile.data_attribution import featurize
from deepprofile.data_attribution.outputs import MarginOutput
from deepprofile.data_attribution.store import FeatureStore
from deepprofile.data_attribution.trak import TrakEnsemble, checkpoint_infos

distributed = pytest.importorskip("dask.distributed")


@pytest.fixture(scope="module")
def address():
    """Two single-thread workers in this process, reached by their tcp:// address."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  protocol="tcp://", dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def _ensemble(setup, path, **kw):
    return TrakEnsemble(setup["model"], checkpoint_infos(setup["checkpoints"]), setup["train"],
                        FeatureStore(path / "data_attribution.zarr"), proj_dim=20,
                        batch_size=16, chunk_size=kw.pop("chunk_size", 50), quiet=True, **kw)


def _arrays(ens: TrakEnsemble) -> dict[str, bytes]:
    out = {}
    for key in ens.store.keys():
        group = ens.store.get(key)._group
        for name in ("grads", "out_to_loss", "chunks_done"):
            out[f"{key}/{name}"] = np.ascontiguousarray(group[name][...]).tobytes()
    return out


def test_two_workers_equal_one_process_bitwise(tiny_setup, tmp_path, address):
    from deepprofile.data_attribution.distributed import featurize_distributed

    one = _ensemble(tiny_setup, tmp_path / "one")
    expected = one.scores(MarginOutput(), tiny_setup["test"])
    dask = _ensemble(tiny_setup, tmp_path / "dask")
    with distributed.Client(address) as client:
        done = featurize_distributed(dask, client)
        assert done == [(m, c) for m in (0, 1) for c in (0, 1, 2)]  # 120 rows, chunks of 50
        assert featurize_distributed(dask, client) == []  # nothing pending: nothing sent
    assert _arrays(dask) == _arrays(one)

    def never(*a, **k):
        raise AssertionError("features were recomputed in the scoring process")

    original = featurize.featurize_chunks
    featurize.featurize_chunks = never
    try:
        got = dask.scores(MarginOutput(), tiny_setup["test"])
    finally:
        featurize.featurize_chunks = original
    np.testing.assert_array_equal(got, expected)


def test_resume_after_the_whole_job_is_killed(tiny_setup, tmp_path, address, monkeypatch):
    """SIGKILL the job (its Dask cluster in the same process) when the first chunk is
    committed; the rerun computes exactly the chunks left pending, and the features and
    scores equal an uninterrupted one-process run bit for bit."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import deepprofile
    from deepprofile.data_attribution.distributed import featurize_distributed

    root = str(Path(deepprofile.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "DEEPPROFILE_TEST_KILL_AT": "trak-chunk-committed"}
    worker = Path(__file__).with_name("kill_trak_worker.py")
    proc = subprocess.run([sys.executable, str(worker), str(tiny_setup["checkpoints"][0].parent),
                           str(tmp_path / "job")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    ens = _ensemble(tiny_setup, tmp_path / "job", chunk_size=20)
    pending = {(c.model_id, i) for c in ens.checkpoints
               for i in ens.feature_array(c, None).pending_chunks()}
    assert 0 < len(pending) < 12  # 2 checkpoints x 6 chunks, at least one committed

    computed: list[tuple[int, int]] = []
    original = featurize.featurize_chunks

    def counting(gc, projector, train_set, feats, chunk_ids, **kw):
        computed.extend((kw["model_id"], c) for c in chunk_ids)
        return original(gc, projector, train_set, feats, chunk_ids, **kw)

    monkeypatch.setattr(featurize, "featurize_chunks", counting)
    with distributed.Client(address) as client:
        assert set(featurize_distributed(ens, client)) == pending
    assert sorted(computed) == sorted(pending)
    monkeypatch.setattr(featurize, "featurize_chunks", original)
    clean = _ensemble(tiny_setup, tmp_path / "clean", chunk_size=20)
    expected = clean.scores(MarginOutput(), tiny_setup["test"])
    assert _arrays(ens) == _arrays(clean)
    np.testing.assert_array_equal(ens.scores(MarginOutput(), tiny_setup["test"]), expected)


def test_worker_refuses_a_changed_checkpoint(tiny_setup, tmp_path, address):
    """A checkpoint file that changed after it was hashed (or another machine's copy) is
    refused by the task: nothing is written, nothing flagged."""
    import shutil

    from deepprofile.data_attribution.distributed import featurize_distributed
    from deepprofile.data_attribution.trak import DataAttributionError

    first, second = tiny_setup["checkpoints"]
    path = tmp_path / "epoch_001.pt"
    shutil.copy(first, path)
    ens = TrakEnsemble(tiny_setup["model"], checkpoint_infos([path]), tiny_setup["train"],
                       FeatureStore(tmp_path / "f.zarr"), proj_dim=20, batch_size=16,
                       chunk_size=50, quiet=True)
    shutil.copy(second, path)  # the file changes after the ensemble hashed it
    with distributed.Client(address) as client, \
            pytest.raises(DataAttributionError, match="SHA-256"):
        featurize_distributed(ens, client)
    assert ens.feature_array(ens.checkpoints[0], None).pending_chunks() == [0, 1, 2]


def _copy_run(run, dest):
    import shutil

    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("data_attribution*"))
    return dest


def _small_train():
    from deepprofile.data import ArrayDataset, load_dataset

    digits = load_dataset("digits", split="train")
    return ArrayDataset(digits.images[:200], digits.targets[:200], name="digits200")


def test_pipeline_with_scheduler_equals_one_process(digits_run, tmp_path, address):
    from deepprofile.data_attribution.pipeline import run_data_attribution

    kw = {"targets": ["predictions"], "proj_dim": 32, "n_targets": 4, "k": 3, "quiet": True,
          "batch_size": 32}
    one = _copy_run(digits_run["run"], tmp_path / "one")
    dask = _copy_run(digits_run["run"], tmp_path / "dask")
    a = run_data_attribution(one, train_set=_small_train(), **kw)
    b = run_data_attribution(dask, train_set=_small_train(), scheduler=address, **kw)
    np.testing.assert_array_equal(np.load(dask / b.scores_files["predictions"]),
                                  np.load(one / a.scores_files["predictions"]))
    assert [t.helpful for t in b.targets] == [t.helpful for t in a.targets]


def test_cli_scheduler_option(digits_run, tmp_path, address, monkeypatch):
    """A bad value is refused while parsing (exit 2, one line); a good one reaches the run."""
    from typer.testing import CliRunner

    from deepprofile.cli import app
    from deepprofile.data_attribution import pipeline

    res = CliRunner().invoke(app, ["data-attribution", str(digits_run["run"]),
                                   "--scheduler", "local:0"])
    assert res.exit_code == 2 and "worker count" in res.output
    assert "Traceback" not in res.output
    bad = _copy_run(digits_run["run"], tmp_path / "bad")
    before = sorted(p.name for p in bad.rglob("*"))
    res = CliRunner().invoke(app, ["data-attribution", str(bad), "--memory-budget", "lots"])
    assert res.exit_code != 0 and "memory budget" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert sorted(p.name for p in bad.rglob("*")) == before
    seen = {}
    original = pipeline.run_data_attribution

    def spy(*args, **kw):
        seen.update(kw)
        return original(*args, **kw)

    monkeypatch.setattr(pipeline, "run_data_attribution", spy)
    run = _copy_run(digits_run["run"], tmp_path / "cli")
    res = CliRunner().invoke(app, ["data-attribution", str(run), "--scheduler", address,
                                   "--proj-dim", "16", "--n-targets", "2", "-q"])
    assert res.exit_code == 0, res.output
    assert seen["scheduler"] == address
    assert (run / "results" / "data_attribution.json").exists()


@pytest.mark.slow
def test_local_worker_processes_equal_one_process(digits_run, tmp_path, monkeypatch,
                                                 one_torch_thread):
    """``local:2``: two worker processes rebuild the digits training set from its spec and
    load the checkpoints themselves; the scores equal those of one process on as many torch
    threads as each task (1) bit for bit (torch's kernels sum in an order that depends on
    the thread count: with 2 threads here the features differ by float32 rounding)."""
    from pathlib import Path

    from deepprofile.data_attribution.pipeline import run_data_attribution

    # the model's class lives in this folder's conftest (imported as data_attribution.conftest):
    # worker processes, which start with this process's sys.path, must be able to import it
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))

    kw = {"targets": ["predictions"], "proj_dim": 32, "n_targets": 4, "k": 3, "quiet": True}
    one = _copy_run(digits_run["run"], tmp_path / "one")
    dask = _copy_run(digits_run["run"], tmp_path / "dask")
    a = run_data_attribution(one, **kw)
    b = run_data_attribution(dask, scheduler="local:2", **kw)
    np.testing.assert_array_equal(np.load(dask / b.scores_files["predictions"]),
                                  np.load(one / a.scores_files["predictions"]))


@pytest.mark.slow
def test_worker_killed_mid_task_is_retried(tiny_setup, tmp_path, monkeypatch,
                                           one_torch_thread):
    """One worker process dies (SIGKILL) right after committing the first of its task's two
    chunks; Dask retries the task elsewhere, the retry skips the committed chunk, and the
    features equal one process's bit for bit."""
    import os
    from pathlib import Path

    from deepprofile.data_attribution.distributed import featurize_distributed
    from deepprofile.testhooks import ENV_ONCE

    marker = tmp_path / "killed"
    monkeypatch.setenv(ENV_ONCE, f"trak-chunk-committed:{marker}")
    # TinyMLP lives in this folder's conftest (data_attribution.conftest): importable there
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    dask = _ensemble(tiny_setup, tmp_path / "dask", chunk_size=20)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        done = featurize_distributed(dask, client, chunks_per_task=2)
    assert marker.exists()  # a worker did die
    assert int(marker.read_text()) != os.getpid()
    # the chunk committed before the kill was not redone: 12 chunks, one reported short
    assert len(done) == 11
    monkeypatch.delenv(ENV_ONCE)
    one = _ensemble(tiny_setup, tmp_path / "one", chunk_size=20)
    expected = one.scores(MarginOutput(), tiny_setup["test"])
    assert _arrays(dask) == _arrays(one)
    np.testing.assert_array_equal(dask.scores(MarginOutput(), tiny_setup["test"]), expected)
