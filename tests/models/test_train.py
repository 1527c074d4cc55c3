"""Training: deterministic, resumable, with checkpoints and a JSON log."""

from __future__ import annotations

import json

import pytest
import torch

from deepprofile.data import ArrayDataset
from deepprofile.models import load_model
from deepprofile.models.train import TrainConfig, train


@pytest.fixture
def small_sets():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 32, 32, generator=gen)
    y = (x[:, 0, :16].mean(dim=(1, 2)) > 0).long()  # learnable: brightness of the top half
    return ArrayDataset(x[:64], y[:64], name="syn"), ArrayDataset(x[64:], y[64:], name="syn")


def _config(**kw):
    base = dict(arch_kwargs={"in_channels": 1, "widths": (4, 8, 8)}, epochs=3, batch_size=16,
                n_checkpoints=2, seed=11)
    return TrainConfig(**{**base, **kw})


def test_training_is_deterministic(small_sets, tmp_path):
    a = train(_config(), tmp_path / "a", train_set=small_sets[0], test_set=small_sets[1],
              quiet=True)
    b = train(_config(), tmp_path / "b", train_set=small_sets[0], test_set=small_sets[1],
              quiet=True)
    ma, _ = load_model(a.final_checkpoint)
    mb, _ = load_model(b.final_checkpoint)
    for (k, va), vb in zip(ma.state_dict().items(), mb.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert [r["train_loss"] for r in a.log] == [r["train_loss"] for r in b.log]
    assert len(a.checkpoints) == 2  # epochs 2 and 3 (evenly spaced, last included)
    log = json.loads((tmp_path / "a" / "train_log.json").read_text())
    assert log["finished"] and len(log["log"]) == 3


def test_interrupted_training_resumes_to_the_same_weights(small_sets, tmp_path):
    ref = train(_config(), tmp_path / "ref", train_set=small_sets[0], test_set=small_sets[1],
                quiet=True)

    def stop_after_first(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_config(), tmp_path / "run", train_set=small_sets[0], test_set=small_sets[1],
              quiet=True, on_epoch=stop_after_first)
    resumed = train(_config(), tmp_path / "run", train_set=small_sets[0],
                    test_set=small_sets[1], quiet=True)
    m_ref, _ = load_model(ref.final_checkpoint)
    m_res, _ = load_model(resumed.final_checkpoint)
    for va, vb in zip(m_ref.state_dict().values(), m_res.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, rtol=0, atol=0)
    assert [r["epoch"] for r in resumed.log] == [1, 2, 3]


def test_resume_with_other_config_is_refused(small_sets, tmp_path):
    from deepprofile.errors import StoreMismatchError

    def stop(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_config(), tmp_path / "r", train_set=small_sets[0], test_set=small_sets[1],
              quiet=True, on_epoch=stop)
    with pytest.raises(StoreMismatchError, match="different configuration"):
        train(_config(lr=0.1), tmp_path / "r", train_set=small_sets[0],
              test_set=small_sets[1], quiet=True)


def test_checkpoint_epochs():
    assert TrainConfig(epochs=8, n_checkpoints=4).checkpoint_epochs() == [2, 4, 6, 8]
    assert TrainConfig(epochs=2, n_checkpoints=4).checkpoint_epochs() == [1, 2]
