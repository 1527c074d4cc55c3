"""spectral on Dask (--scheduler): one task per layer, the same spectral.json as one process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from deepprofile.data import ArrayDataset
from deepprofile.models.small import SmallResNet

distributed = pytest.importorskip("dask.distributed")

KW = {"in_channels": 1, "widths": [4, 8, 16]}


def _model() -> SmallResNet:
    torch.manual_seed(0)
    return SmallResNet(num_classes=3, in_channels=1, widths=(4, 8, 16)).eval()


def _data(n: int = 24) -> ArrayDataset:
    gen = torch.Generator().manual_seed(0)
    return ArrayDataset(torch.randn(n, 1, 16, 16, generator=gen), torch.arange(n) % 3,
                        class_names=["zero", "one", "two"], name="noise")


@pytest.fixture(scope="module")
def address():
    """Two workers in this process, reached by a tcp:// address like a remote scheduler
    (worker processes: tests/test_worker_kill.py)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  protocol="tcp://", dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def test_run_spectral_with_scheduler_writes_the_same_json(tmp_path, address):
    from deepprofile.spectral.pipeline import run_spectral
    from deepprofile.workflow import capture_run

    model, data = _model(), _data()
    # layer2's conv stored as full maps (projected from the store on a worker), layer1's
    # and layer3's from a forward pass here, with operator spectra as tasks
    _, store = capture_run(model, data, tmp_path / "cap", ["layer2.branch.3"],
                           reductions="flatten", quiet=True)
    kwargs = dict(layers=["layer1", "layer2", "layer3"], seed=3, quiet=True, n_bootstrap=3,
                  store=store)
    ref = run_spectral(model, tmp_path / "ref", data, **kwargs)
    assert ref.random_init is not None  # fits (with bootstrap) run in tasks too:
    assert any(lay.power_law is not None for lay in ref.trained.layers)
    got = run_spectral(model, tmp_path / "dask", data, scheduler=address, **kwargs)
    sources = got.parameters["projection_sources"]
    assert sources["layer2.branch.3"].startswith("store")
    assert sources["layer1.branch.3"].startswith("forward") and len(got.operator) == 2
    assert len(got.trained.layers) == 10 and got.random_init is not None
    text = {name: (tmp_path / name / "results" / "spectral.json").read_text()
            for name in ("ref", "dask")}
    assert text["dask"] == text["ref"]  # bitwise: spectral.json holds no timings


def test_cli_spectral_with_scheduler(tmp_path, address):
    from deepprofile.models import save_checkpoint
    from deepprofile.spectral.cli import register
    from deepprofile.workflow import capture_run

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps typer in multi-command mode
    model = _model()
    ckpt = save_checkpoint(tmp_path / "m.pt", model, "small_resnet", KW, num_classes=3)
    capture_run(model, _data(), tmp_path / "run", ["layer2.branch.3"], reductions="flatten",
                quiet=True)
    args = ["spectral", str(ckpt), "--run", str(tmp_path / "run"), "-l", "layer2.branch.3",
            "-q", "-o"]
    runner = CliRunner()
    res = runner.invoke(app, args + [str(tmp_path / "one.json")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, args + [str(tmp_path / "two.json"), "--scheduler", address])
    assert res.exit_code == 0, res.output
    one = json.loads((tmp_path / "one.json").read_text())
    assert one["projections"] and one["random_init"]
    assert (tmp_path / "two.json").read_text() == (tmp_path / "one.json").read_text()
    res = runner.invoke(app, args + [str(tmp_path / "x.json"), "--scheduler", "local:none"])
    assert res.exit_code == 2 and "local:N" in res.output


def test_one_blas_thread_limits_the_main_thread_and_leaves_threads_alone() -> None:
    import threading

    from threadpoolctl import threadpool_info, threadpool_limits

    from deepprofile.blas import one_blas_thread
    from deepprofile.spectral.conv_svd import gram_eigenvalues

    def blas_threads() -> list[int]:
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    blocks = np.random.default_rng(0).normal(size=(1, 40, 90))
    with threadpool_limits(limits=2, user_api="blas"):  # as on a 2-core machine
        before = blas_threads()
        with one_blas_thread():
            assert set(blas_threads()) == {1}
        assert blas_threads() == before
        seen: list[list[int]] = []

        def task() -> None:
            with one_blas_thread():
                seen.append(blas_threads())
            gram_eigenvalues(blocks)

        threads = [threading.Thread(target=task) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert seen == [before, before] and blas_threads() == before  # nothing leaked
        # the main thread's eigenvalues equal a one-thread computation bit for bit
        with threadpool_limits(limits=1, user_api="blas"):
            tb = np.swapaxes(blocks, 1, 2)
            single = np.clip(np.linalg.eigvalsh(blocks @ tb), 0.0, None).reshape(-1)
        np.testing.assert_array_equal(gram_eigenvalues(blocks), single)


def test_scheduler_with_a_dataset_and_no_store(tmp_path, address):
    """Projections from a forward pass only (no store given): nothing is read from a store."""
    from deepprofile.spectral.pipeline import run_spectral

    model, data = _model(), _data(12)
    kwargs = dict(layers=["layer1"], seed=3, quiet=True, n_bootstrap=0)
    run_spectral(model, tmp_path / "ref", data, **kwargs)
    got = run_spectral(model, tmp_path / "dask", data, scheduler=address, **kwargs)
    assert all(v.startswith("forward") for v in got.parameters["projection_sources"].values())
    text = {name: (tmp_path / name / "results" / "spectral.json").read_text()
            for name in ("ref", "dask")}
    assert text["dask"] == text["ref"]
