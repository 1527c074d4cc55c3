"""Layer shapes from the first batch (no probe forward), lazy store creation, inline and
background writes giving identical stores (issue 17, capture overhead)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepprofile.capture import ActivationStore, capture_to_store
from deepprofile.capture.hooks import hook_count
from deepprofile.capture.runner import background_writes_pay, fill_chunks, prepare_store
from deepprofile.errors import ShapeError, StoreMismatchError
from deepprofile.provenance import package_versions, weights_hash

LAYERS = ["conv1", "conv2", "fc"]
REDS = {"conv1": "positions:2", "conv2": "mean", "fc": "mean"}


class Counting(nn.Module):
    """Wraps a model and counts forward calls and the images they saw."""

    def __init__(self, net: nn.Module, fail_at: int | None = None) -> None:
        super().__init__()
        self.net = net
        self.calls: list[int] = []
        self.meta_calls = 0
        self.fail_at = fail_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "meta":  # shape inference: no activation computed
            self.meta_calls += 1
            return self.net(x)
        self.calls.append(len(x))
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            self.net.conv1(x)  # the hooked layer runs, then the forward fails
            raise RuntimeError("boom mid-forward")
        return self.net(x)


def _layers(prefix: str = "net.") -> list[str]:
    return [prefix + name for name in LAYERS]


def _capture(model, dataset, path, **kw):
    kw = {"reductions": {prefix: REDS[prefix.split(".")[-1]] for prefix in _layers()},
          "batch_size": 8, "chunk_size": 16, "quiet": True, "seed": 3} | kw
    return capture_to_store(model, dataset, _layers(), path, **kw)


def _contents(store: ActivationStore) -> dict[str, bytes]:
    return store.raw_arrays()


def test_new_capture_runs_each_image_once(tiny_net, tiny_dataset, tmp_path, one_torch_thread):
    model = Counting(tiny_net)
    store = _capture(model, tiny_dataset, tmp_path / "s.zarr")
    # 50 images in batches of 8 aligned to chunks of 16: no one-image probe before them
    assert model.calls == [8, 8] * 3 + [2]
    assert sum(model.calls) == len(tiny_dataset)
    assert store.is_complete and store.n_samples == 50 and store.num_classes == 4
    assert store.output_shape("net.conv1") == (2, 8, 8)
    assert store.layer("net.conv1").shape == (50, 2, 2)  # positions:2 of 2 channels
    assert store.layer("net.conv2").shape == (50, 3)
    assert store.metadata["weights_hash"] == weights_hash(model)


def test_resume_and_mismatch_run_no_extra_forward(tiny_net, tiny_dataset, tmp_path,
                                                  one_torch_thread):
    path = tmp_path / "s.zarr"
    ref = _capture(Counting(tiny_net), tiny_dataset, tmp_path / "ref.zarr")
    model = Counting(tiny_net, fail_at=4).train()  # dies in chunk 1, after chunk 0 committed
    with pytest.raises(RuntimeError, match="boom"):
        _capture(model, tiny_dataset, path)
    assert hook_count(model) == 0 and model.training  # hooks gone, mode restored
    assert ActivationStore.open(path, verify=False).done_chunks().tolist() == [1, 0, 0, 0]
    model = Counting(tiny_net)
    store = _capture(model, tiny_dataset, path)
    assert model.calls == [8, 8] * 2 + [2]  # only the pending chunks, no probe
    assert _contents(store) == _contents(ref)
    assert store.fingerprint() == ref.fingerprint()
    model.calls.clear()
    _capture(model, tiny_dataset, path)  # finished: verified, nothing recomputed
    assert model.calls == []
    with pytest.raises(StoreMismatchError, match="seed"):
        _capture(model, tiny_dataset, path, seed=4)
    assert model.calls == []


def test_failure_in_the_first_batch_leaves_no_store_and_no_hooks(tiny_net, tiny_dataset,
                                                                 tmp_path, one_torch_thread):
    model = Counting(tiny_net, fail_at=1)
    path = tmp_path / "s.zarr"
    with pytest.raises(RuntimeError, match="boom"):
        _capture(model, tiny_dataset, path)
    assert hook_count(model) == 0
    assert not path.exists() and [p.name for p in tmp_path.iterdir()] in ([], [".s.zarr.lock"])


def test_inline_and_background_writes_give_identical_stores(tiny_net, tiny_dataset, tmp_path,
                                                            one_torch_thread):
    model = Counting(tiny_net)
    inline = _capture(model, tiny_dataset, tmp_path / "inline.zarr", background_writes=False)
    thread = _capture(model, tiny_dataset, tmp_path / "thread.zarr", background_writes=True)
    assert _contents(inline) == _contents(thread)
    assert inline.fingerprint() == thread.fingerprint()


def test_fill_chunks_fills_a_prepared_store_like_one_capture(tiny_net, tiny_dataset, tmp_path,
                                                             one_torch_thread):
    """The API the distributed capture uses: prepare (shapes from the meta device, no real
    forward pass), fill chunks anywhere."""
    reds = {prefix: REDS[prefix.split(".")[-1]] for prefix in _layers()}
    model = Counting(tiny_net).train()
    store, rows = prepare_store(model, tiny_dataset, _layers(), tmp_path / "p.zarr",
                                reductions=reds, batch_size=8, chunk_size=16, seed=3)
    assert model.calls == [] and model.meta_calls == 1
    assert hook_count(model) == 0 and model.training  # mode restored
    assert all(p.device.type == "cpu" for p in model.state_dict().values())
    for chunks in ([2, 0], [3, 1]):
        fill_chunks(model, tiny_dataset, store, rows, chunks, batch_size=8,
                    background_writes=False)
    store.finalize()
    ref = _capture(model, tiny_dataset, tmp_path / "ref.zarr")
    assert _contents(store) == _contents(ref)
    # reopening the prepared store to resume needs no forward pass
    model.calls.clear()
    prepare_store(model, tiny_dataset, _layers(), tmp_path / "p.zarr", reductions=reds,
                  batch_size=8, chunk_size=16, seed=3)
    assert model.calls == []


def test_dataset_without_labels_is_a_shape_error(tiny_net, tmp_path, one_torch_thread):
    class ImagesOnly(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> torch.Tensor:
            return torch.zeros(1, 8, 8)

    with pytest.raises(ShapeError, match="pairs"):
        capture_to_store(tiny_net, ImagesOnly(), ["conv1"], tmp_path / "s.zarr", quiet=True)
    assert not (tmp_path / "s.zarr").exists() and hook_count(tiny_net) == 0


def test_background_writes_unless_a_single_core(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert background_writes_pay(torch.device("cpu"))  # even with every core in torch's use
    assert background_writes_pay(torch.device("cuda"))
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert not background_writes_pay(torch.device("cpu"))
    assert background_writes_pay(torch.device("cuda"))


def test_package_versions_is_cached_but_not_shared():
    first = package_versions()
    first["torch"] = "edited"
    assert package_versions()["torch"] != "edited"


def test_model_without_2d_logits_is_a_shape_error(tiny_net, tiny_dataset, tmp_path,
                                                  one_torch_thread):
    class Scalar(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = tiny_net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x).sum(dim=1)  # (N,), not (N, classes)

    model = Scalar()
    with pytest.raises(ShapeError, match="logits of shape"):
        capture_to_store(model, tiny_dataset, ["net.conv1"], tmp_path / "s.zarr", quiet=True)
    assert not (tmp_path / "s.zarr").exists() and hook_count(model) == 0


class ItemCalling(nn.Module):
    """Data-dependent control flow (``.item()``): cannot run on the meta device."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.real_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 1.0 if x.abs().max().item() >= 0 else 2.0
        self.real_calls += 1
        return self.net(x) * scale


def test_prepare_store_falls_back_to_one_real_image(tiny_net, tiny_dataset, tmp_path,
                                                    one_torch_thread):
    reds = {prefix: REDS[prefix.split(".")[-1]] for prefix in _layers()}
    model = ItemCalling(tiny_net).train()
    store, rows = prepare_store(model, tiny_dataset, _layers(), tmp_path / "p.zarr",
                                reductions=reds, batch_size=8, chunk_size=16, seed=3)
    assert model.real_calls == 1 and hook_count(model) == 0 and model.training
    fill_chunks(model, tiny_dataset, store, rows, range(store.n_chunks), batch_size=8,
                background_writes=False)
    store.finalize()
    ref = _capture(Counting(tiny_net), tiny_dataset, tmp_path / "ref.zarr")
    assert _contents(store) == _contents(ref)


def test_prepare_store_refuses_impossible_reduction_before_writing(tiny_net, tiny_dataset,
                                                                  tmp_path):
    model = Counting(tiny_net)
    with pytest.raises(ShapeError, match="positions:99"):
        prepare_store(model, tiny_dataset, ["net.conv1"], tmp_path / "p.zarr",
                      reductions="positions:99")
    assert not (tmp_path / "p.zarr").exists() and hook_count(model) == 0
    assert model.calls == []
