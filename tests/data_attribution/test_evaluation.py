"""LDS and removal check on known answers; TRAK against leave-one-out on logistic regression."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from deepprofile.data import ArrayDataset
from deepprofile.data_attribution.baselines import random_scores, tracin_scores
from deepprofile.data_attribution.evaluation import (
    lds,
    margins,
    random_subsets,
    removal_check,
)
from deepprofile.data_attribution.outputs import MarginOutput
from deepprofile.data_attribution.store import FeatureStore
from deepprofile.data_attribution.trak import TrakEnsemble, checkpoint_infos
from deepprofile.models.registry import register_model, save_checkpoint


def test_lds_of_a_linear_datamodel_and_of_random_scores():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(200, 5))
    masks = random_subsets(200, 100, 0.5, seed=1)
    assert masks.sum(1).tolist() == [100] * 100
    outputs = masks @ true + 0.01 * rng.normal(size=(100, 5))
    exact = lds(true, masks, outputs)
    assert exact.lds > 0.99
    rho = spearmanr(masks @ true[:, 2], outputs[:, 2]).statistic
    assert exact.per_target[2] == pytest.approx(rho)
    rand = [lds(random_scores(200, 5, s), masks, outputs).lds for s in range(10, 15)]
    assert abs(np.mean(rand)) < 0.1


def test_removal_check_on_a_known_metric():
    """metric = sum of kept 'values'; removing the top-valued images drops it most."""
    values = np.linspace(0, 1, 50)

    def train_fn(indices, seed):
        model = nn.Linear(1, 1)
        model.value = float(values[indices].sum())
        return model

    res = removal_check(train_fn, values, 10, lambda m: m.value, seeds=(0, 1, 2))
    assert res.drop_attributed == pytest.approx(values[-10:].sum())
    assert res.drop_attributed > res.drop_random > 0
    assert len(res.to_dict()["random"]) == 3


class LogReg(nn.Module):
    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.fc = nn.Linear(5, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


register_model("logreg_da", LogReg)
_L2 = 1e-2


def _newton(X: np.ndarray, y: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
    """Exact minimiser of the L2-regularised binary logistic loss on ``[X, 1]`` (Newton)."""
    Xa = np.hstack([X, np.ones((len(X), 1))])
    theta = np.zeros(Xa.shape[1]) if init is None else init.copy()
    for _ in range(100):
        p = 1 / (1 + np.exp(-Xa @ theta))
        grad = Xa.T @ (p - y) + _L2 * theta
        hess = Xa.T @ (Xa * (p * (1 - p))[:, None]) + _L2 * np.eye(len(theta))
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-12:
            break
    return theta


def _as_model(theta: np.ndarray) -> LogReg:
    """The two-class model whose logits are (-s/2, s/2), s = theta . [x, 1]: its cross
    entropy is the binary logistic loss and its margin is +-s."""
    model = LogReg()
    with torch.no_grad():
        w = torch.tensor(theta[:5], dtype=torch.float32)
        model.fc.weight.copy_(torch.stack([-w / 2, w / 2]))
        model.fc.bias.copy_(torch.tensor([-theta[5] / 2, theta[5] / 2]))
    return model


@pytest.mark.parametrize(("shift", "floor"), [(0.5, 0.95), (1.2, 0.5)])
def test_trak_tracks_leave_one_out_on_logistic_regression(tmp_path, shift, floor):
    """At the optimum of a logistic regression, TRAK without projection loss (proj_dim =
    rank of the margin gradients, d + 1) is the one-step Newton estimate of leave-one-out
    except that its kernel drops the weights R = p(1 - p). Where p stays away from 0/1
    (shift 0.5) it ranks exact leave-one-out effects almost perfectly (measured Spearman
    0.97-0.998); on nearly separable data (shift 1.2, p down to 1e-5) the missing R costs
    accuracy (measured 0.53-0.69). No ridge: the statement is about TRAK's own formula."""
    rng = np.random.default_rng(3)
    n = 60
    y = rng.integers(0, 2, size=n)
    x = rng.normal(size=(n, 5)) + shift * (2 * y[:, None] - 1) * np.array([1, 0.5, 0, 0, 0])
    train = ArrayDataset(x.reshape(n, 1, 1, 5).astype(np.float32), y)
    xt = rng.normal(size=(6, 5))
    yt = np.array([0, 1, 0, 1, 0, 1])
    test = ArrayDataset(torch.tensor(xt, dtype=torch.float32).reshape(6, 1, 1, 5),
                        torch.tensor(yt))
    theta = _newton(x, y)
    path = save_checkpoint(tmp_path / "epoch_001.pt", _as_model(theta), "logreg_da", {},
                           num_classes=2)
    ens = TrakEnsemble(LogReg(), checkpoint_infos([path]), train,
                       FeatureStore(tmp_path / "f.zarr"), proj_dim=6, ridge=0.0, quiet=True)
    scores = ens.scores(MarginOutput(), test)
    sign = 2 * yt - 1
    xta = np.hstack([xt, np.ones((6, 1))])
    base = sign * (xta @ theta)
    np.testing.assert_allclose(margins(_as_model(theta), test), base, rtol=1e-4, atol=1e-4)
    loo = np.zeros((n, 6))
    for i in range(n):
        keep = np.arange(n) != i
        loo[i] = base - sign * (xta @ _newton(x[keep], y[keep], init=theta))  # > 0: helped
    rhos = [spearmanr(scores[:, j], loo[:, j]).statistic for j in range(6)]
    assert min(rhos) > floor, rhos


def test_tracin_baseline_shape_and_sign(tiny_setup):
    """captum's TracInCP: (n_train, n_targets), and a training image is a proponent of
    itself (self-influence = sum of squared loss-gradient norms >= 0)."""
    train = torch.utils.data.Subset(tiny_setup["train"], range(20))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = tracin_scores(tiny_setup["model"], tiny_setup["checkpoints"], train,
                           torch.utils.data.Subset(tiny_setup["train"], range(4)),
                           batch_size=20)
    assert tr.shape == (20, 4) and np.isfinite(tr).all()
    assert (np.diag(tr[:4]) > 0).all()
