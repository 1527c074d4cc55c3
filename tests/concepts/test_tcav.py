"""TCAV: the marker toward the spurious class is significant in the spurious model; a random
concept is not significant at the stated level; hooks are gone afterwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepprofile.capture.hooks import hook_count
from deepprofile.concepts.tcav import TCAVResult, tcav_scores


@pytest.fixture(scope="module")
def pools(eval_arrays):
    images = torch.from_numpy(eval_arrays["images"])
    labels = eval_arrays["labels"]
    marker = eval_arrays["marker"]
    return images, labels, marker


def test_tcav_marker_significant_random_concept_not(spurious_net, pools):
    images, labels, marker = pools
    rng = np.random.default_rng(0)
    random_rows = rng.choice(len(images), 60, replace=False)
    inputs = images[(labels != 0) & marker][:20]  # marked images of the other classes
    result = tcav_scores(
        spurious_net, ["conv2"],
        {"marker": images[marker], "random": images[random_rows]},
        images, {0: inputs}, n_random=10, n_concept_images=20, alpha=0.05, seed=0)
    mk = result.get("marker", "conv2", 0)
    rnd = result.get("random", "conv2", 0)
    assert mk.significant and mk.p_value < 0.05 and mk.score > 0.5
    assert not rnd.significant and rnd.p_value >= 0.05  # rejected at the stated level
    assert hook_count(spurious_net) == 0
    back = TCAVResult.from_dict(result.to_dict())
    assert back.get("marker", "conv2", 0) == mk


def test_tcav_needs_two_random_sets(spurious_net, pools):
    images, _, _ = pools
    with pytest.raises(ValueError, match="n_random"):
        tcav_scores(spurious_net, ["conv2"], {"c": images[:5]}, images, {0: images[:4]},
                    n_random=1)


def test_tcav_leaves_no_hook_and_restores_mode_when_the_model_raises(pools):
    from torch import nn

    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls > 3:  # after the first concept activations: mid-run
                raise RuntimeError("boom")
            return self.conv(x).mean(dim=(2, 3))

    images, _, _ = pools
    net = Boom().train()
    with pytest.raises(RuntimeError, match="boom"):
        tcav_scores(net, ["conv"], {"c": images[:10]}, images[:40], {0: images[:4]},
                    n_random=2, n_concept_images=5)
    assert hook_count(net) == 0 and net.training
