"""The featurisation loop: Q from the per-sample forward equals traker's batched Q, and a
sample's features do not depend on which chunks run together."""

from __future__ import annotations

import numpy as np
import torch

from deepprofile.data_attribution.featurize import margin_features
from deepprofile.data_attribution.outputs import MarginOutput
from deepprofile.data_attribution.store import FeatureStore
from deepprofile.data_attribution.trak import (
    ScopedGradientComputer,
    TrakEnsemble,
    checkpoint_infos,
    load_state,
    make_projector,
)


def test_fused_q_and_gradients_equal_trakers_two_passes(tiny_setup):
    model = tiny_setup["model"]
    model.load_state_dict(load_state(tiny_setup["checkpoints"][1]))
    train = tiny_setup["train"]
    batch = (train.images[:40], train.targets[:40])
    gc = ScopedGradientComputer(model, MarginOutput(), None, torch.device("cpu"))
    proj = make_projector(gc.n_params, 20, 0, 1, torch.device("cpu"))
    feats, q = margin_features(gc, proj, batch, 1, gc.n_params)
    ref_q = gc.compute_loss_grad(batch).reshape(-1)  # traker's second, batched forward
    np.testing.assert_allclose(q.numpy(), ref_q.numpy(), rtol=0, atol=1e-6)
    ref = (proj.project(gc.compute_per_sample_grad(batch), model_id=1)
           / torch.sqrt(torch.tensor(float(gc.n_params))))  # traker's normalize_factor
    np.testing.assert_array_equal(feats.numpy(), ref.numpy())


def test_chunks_computed_separately_equal_all_at_once(tiny_setup, tmp_path):
    """Chunk 1 alone (as one Dask task would) equals chunk 1 of a full run, bit for bit."""
    infos = checkpoint_infos(tiny_setup["checkpoints"])

    def ens(name):
        return TrakEnsemble(tiny_setup["model"], infos, tiny_setup["train"],
                            FeatureStore(tmp_path / name), proj_dim=20, batch_size=16,
                            chunk_size=50, quiet=True)

    full = ens("full").features(infos[0], None).read()
    part = ens("part")
    arr = part.feature_array(infos[0], None)
    from deepprofile.data_attribution.featurize import featurize_chunks

    part._load(infos[0])
    gc = ScopedGradientComputer(part.model, MarginOutput(), None, part.device)
    proj = make_projector(gc.n_params, 20, 0, 0, part.device)
    featurize_chunks(gc, proj, tiny_setup["train"], arr, [1], model_id=0,
                     n_params=gc.n_params, batch_size=16, device=part.device)
    assert arr.pending_chunks() == [0, 2]
    rows = slice(50, 100)
    np.testing.assert_array_equal(arr._group["grads"][rows], full[0][rows])
    np.testing.assert_array_equal(arr._group["out_to_loss"][rows], full[1][rows])


def test_memory_budget_splits_passes_and_keeps_the_numbers(tiny_setup, tmp_path, monkeypatch):
    """A budget that fits one sample per pass: every per-sample-gradient pass holds one
    sample (training features and targets), and the scores equal the unbounded ones up to
    float rounding (per-sample results of a batched pass vs single passes)."""
    from deepprofile.attribution.memory import BACKWARD_FACTOR, memory_budget, per_sample_bytes
    from deepprofile.data_attribution import featurize
    from deepprofile.data_attribution.featurize import GRAD_COPIES, samples_per_pass

    infos = checkpoint_infos(tiny_setup["checkpoints"])
    model = tiny_setup["model"]
    gc = ScopedGradientComputer(model, MarginOutput(), None, torch.device("cpu"))
    proj = make_projector(gc.n_params, 20, 0, 0, torch.device("cpu"))
    x = tiny_setup["train"].images[:1]
    fixed = proj.proj_matrix.numel() * 4
    per = int(GRAD_COPIES * 4 * gc.n_params) + per_sample_bytes(model, x, BACKWARD_FACTOR)
    assert samples_per_pass(model, x, gc.n_params, proj, None) is None
    assert samples_per_pass(model, x, gc.n_params, proj, fixed + 3 * per + 1) == 3
    assert samples_per_pass(model, x, gc.n_params, proj, fixed) == 1  # never below one

    def ens(name):
        return TrakEnsemble(model, infos, tiny_setup["train"], FeatureStore(tmp_path / name),
                            proj_dim=20, batch_size=16, chunk_size=50, quiet=True)

    free = ens("free").scores(MarginOutput(), tiny_setup["test"])
    sizes: list[int] = []
    original = featurize.margin_features

    def spy(gc, projector, batch, model_id, n_params, max_samples=None):
        out = original(gc, projector, batch, model_id, n_params, max_samples)
        sizes.append(min(len(batch[0]), max_samples or len(batch[0])))
        return out

    target_sizes: list[int] = []
    per_sample_grad = ScopedGradientComputer.compute_per_sample_grad

    def target_spy(self, batch):
        target_sizes.append(len(batch[0]))
        return per_sample_grad(self, batch)

    monkeypatch.setattr(featurize, "margin_features", spy)
    monkeypatch.setattr(ScopedGradientComputer, "compute_per_sample_grad", target_spy)
    with memory_budget(fixed + per):  # under one sample's need: one per pass
        bounded = ens("bounded").scores(MarginOutput(), tiny_setup["test"])
    assert sizes and set(sizes) == {1}
    assert len(target_sizes) == 2 * 12 and set(target_sizes) == {1}  # 12 targets x 2 ckpts
    np.testing.assert_allclose(bounded, free, rtol=1e-4, atol=1e-6 * np.abs(free).max())
