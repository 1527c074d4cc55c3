"""TRAK engine: equal to traker used directly, to an explicit formula, resumable, guarded."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from trak import TRAKer

from deepprofile.data_attribution import featurize
from deepprofile.data_attribution.outputs import MarginOutput
from deepprofile.data_attribution.store import FeatureStore
from deepprofile.data_attribution.trak import (
    DataAttributionError,
    TrakEnsemble,
    checkpoint_infos,
    load_state,
    make_projector,
)


def _ensemble(setup, tmp_path, **kw):
    infos = checkpoint_infos(setup["checkpoints"])
    store = FeatureStore(tmp_path / "data_attribution.zarr")
    return TrakEnsemble(setup["model"], infos, setup["train"], store,
                        proj_dim=kw.pop("proj_dim", 20), batch_size=32, chunk_size=50,
                        quiet=True, **kw)


def test_scores_equal_traker_used_directly(tiny_setup, tmp_path):
    """``ridge=0``: TRAKer's scores exactly (the default ridge is the one departure)."""
    ens = _ensemble(tiny_setup, tmp_path, ridge=0.0)
    ours = ens.scores(MarginOutput(), tiny_setup["test"])
    model = tiny_setup["model"]
    n_params = sum(p.numel() for p in model.parameters())
    traker = TRAKer(model=model, task="image_classification", train_set_size=120,
                    save_dir=str(tmp_path / "traker"), device="cpu", use_half_precision=False,
                    projector=make_projector(n_params, 20, 0, 0, torch.device("cpu")),
                    logging_level=logging.ERROR)
    train, test = tiny_setup["train"], tiny_setup["test"]
    for mid, path in enumerate(tiny_setup["checkpoints"]):
        traker.load_checkpoint(load_state(path), model_id=mid)
        traker.featurize(batch=(train.images, train.targets), num_samples=120)
    traker.finalize_features()
    for mid, path in enumerate(tiny_setup["checkpoints"]):
        traker.start_scoring_checkpoint("t", load_state(path), model_id=mid, num_targets=12)
        traker.score(batch=(test.images, test.targets), num_samples=12)
    theirs = np.asarray(traker.finalize_scores("t"))
    assert ours.shape == (120, 12)
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4 * np.abs(theirs).max())


def _margin_grad(model, x, y):
    logits = model(x.unsqueeze(0))[0]
    others = torch.cat([logits[:y], logits[y + 1:]])
    margin = logits[y] - torch.logsumexp(others, 0)
    grads = torch.autograd.grad(margin, list(model.parameters()))
    return torch.cat([g.reshape(-1) for g in grads]).numpy().astype(np.float64)


@pytest.mark.parametrize(("ridge", "lambda_reg"), [(0.0, 0.0), (1.0, 0.0), (0.3, 1e-3)])
def test_scores_equal_explicit_formula(tiny_setup, tmp_path, ridge, lambda_reg):
    """Per-sample gradients by a plain autograd loop, the projection matrix read off the
    projector, and TRAK's formula written out in float64, with the ridge
    ``lambda_reg + ridge * trace(X^T X) / proj_dim`` per checkpoint."""
    ens = _ensemble(tiny_setup, tmp_path, ridge=ridge, lambda_reg=lambda_reg)
    ours = ens.scores(MarginOutput(), tiny_setup["test"])
    train, test = tiny_setup["train"], tiny_setup["test"]
    model = tiny_setup["model"]
    d = sum(p.numel() for p in model.parameters())
    total, q_sum = 0.0, 0.0
    for mid, path in enumerate(tiny_setup["checkpoints"]):
        model.load_state_dict(load_state(path))
        proj = make_projector(d, 20, 0, mid, torch.device("cpu"))
        P = proj.project(torch.eye(d), model_id=mid).double().numpy() / np.sqrt(d)
        X = np.stack([_margin_grad(model, *train[i]) for i in range(len(train))]) @ P
        T = np.stack([_margin_grad(model, *test[i]) for i in range(len(test))]) @ P
        xtx = X.T @ X
        inv = np.linalg.inv(xtx + (lambda_reg + ridge * np.trace(xtx) / 20) * np.eye(20))
        inv /= np.abs(inv).mean()  # traker's rescaling before its float16 cast
        total = total + X @ inv @ T.T
        with torch.no_grad():
            p = torch.softmax(model(train.images), 1)[torch.arange(120), train.targets]
        q_sum = q_sum + (1 - p).double().numpy()
    expected = (total / 2) * (q_sum / 2)[:, None]
    np.testing.assert_allclose(ours, expected, rtol=2e-3, atol=1e-4 * np.abs(expected).max())


def test_features_resume_and_are_never_recomputed(tiny_setup, tmp_path, monkeypatch):
    ens = _ensemble(tiny_setup, tmp_path)
    ckpt = ens.checkpoints[0]
    calls = {"n": 0}
    original = featurize.margin_features

    def dying(*args):
        calls["n"] += 1
        if calls["n"] == 3:  # 50-sample chunks of 32-sample batches: chunk 0 done, 1 not
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(featurize, "margin_features", dying)
    with pytest.raises(KeyboardInterrupt):
        ens.features(ckpt, None)
    (key,) = ens.store.keys()
    assert ens.store.get(key).pending_chunks() == [1, 2]
    monkeypatch.setattr(featurize, "margin_features", original)
    fresh = _ensemble(tiny_setup, tmp_path)
    arr = fresh.features(ckpt, None)
    resumed, _ = arr.read()
    clean = _ensemble(tiny_setup, tmp_path / "clean").features(ckpt, None).read()[0]
    np.testing.assert_allclose(resumed, clean, rtol=1e-5, atol=1e-7)

    def never(*a, **k):
        raise AssertionError("finished features were recomputed")

    monkeypatch.setattr(featurize, "margin_features", never)
    _ensemble(tiny_setup, tmp_path).features(ckpt, None)


def test_small_proj_dim_and_any_checkpoint_order(tiny_setup, tmp_path):
    """traker pitfall 1: proj_dim <= 100 with one block crashed when the last-featurised
    model was scored first; here any order and a reload from the store work."""
    ens = _ensemble(tiny_setup, tmp_path, proj_dim=8)
    first = ens.scores(MarginOutput(), tiny_setup["test"])
    rev = _ensemble(tiny_setup, tmp_path, proj_dim=8)
    rev.checkpoints = rev.checkpoints[::-1]
    again = rev.scores(MarginOutput(), tiny_setup["test"])
    np.testing.assert_allclose(first, again, rtol=1e-5, atol=1e-6 * np.abs(first).max())
    assert np.abs(first).max() > 0


def test_proj_dim_not_below_n_train_is_refused(tiny_setup, tmp_path):
    """Without a ridge term, proj_dim >= n_train is refused; with one (the default
    relative ridge, or traker's absolute lambda_reg) the kernel is invertible."""
    with pytest.raises(DataAttributionError, match="below 120"):
        _ensemble(tiny_setup, tmp_path, proj_dim=120, ridge=0.0)
    assert not (tmp_path / "data_attribution.zarr").exists()
    ok = _ensemble(tiny_setup, tmp_path, proj_dim=130, ridge=0.0, lambda_reg=1e-2)
    assert ok.proj_dim == 130
    wide = _ensemble(tiny_setup, tmp_path, proj_dim=130)
    scores = wide.scores(MarginOutput(), tiny_setup["test"])
    assert np.isfinite(scores).all() and np.abs(scores).max() > 0


def test_separate_keys_never_mix_settings(tiny_setup, tmp_path):
    """traker pitfall 3 (reused save_dir): other seeds / sizes get their own arrays."""
    a = _ensemble(tiny_setup, tmp_path, proj_dim=20)
    b = _ensemble(tiny_setup, tmp_path, proj_dim=20, projector_seed=1)
    fa = a.features(a.checkpoints[0], None).read()[0]
    fb = b.features(b.checkpoints[0], None).read()[0]
    assert len(a.store.keys()) == 2
    assert not np.allclose(fa, fb)
