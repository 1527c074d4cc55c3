"""weights_hash: the SHA-256 of a model's state, cached under a CRC32 of the same bytes."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

import deepprofile.provenance as provenance
from deepprofile.provenance import weights_hash


def _reference(model: nn.Module) -> str:
    """SHA-256 over name, shape, dtype and bytes of each state entry in name order,
    written out independently of the module (bfloat16 hashed as float32)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(name.encode() + str(tuple(t.shape)).encode() + str(t.dtype).encode())
        digest.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return digest.hexdigest()[:16]


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 6, 6))
    model[3].to(torch.bfloat16)
    return model


@pytest.fixture
def sha_calls(monkeypatch):
    calls = []
    real = hashlib.sha256

    def counting(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(provenance.hashlib, "sha256", counting)
    provenance._hash_cache.clear()
    return calls


def test_hash_matches_an_independent_sha256_and_is_cached(sha_calls):
    model = _model()
    assert weights_hash(model) == _reference(model)
    assert weights_hash(model) == _reference(model)
    assert len(sha_calls) == 1 + 2  # one SHA-256 in weights_hash, two in _reference


def test_any_change_of_values_is_seen(sha_calls):
    model = _model()
    before = weights_hash(model)
    saved = model[0].weight.data[0, 0, 0, 0].item()
    model[0].weight.data[0, 0, 0, 0] = 7.0  # .data: torch's version counter stays put
    changed = weights_hash(model)
    assert changed != before and changed == _reference(model)
    model[0].weight.data[0, 0, 0, 0] = saved
    assert weights_hash(model) == before
    model[1].running_mean.data[2] = 0.5  # a buffer
    assert weights_hash(model) not in (before, changed)


def test_cache_is_bounded(sha_calls):
    for i in range(provenance._HASH_CACHE_SIZE + 5):
        weights_hash(nn.Linear(2, 2).requires_grad_(False).apply(
            lambda m, i=i: torch.nn.init.constant_(m.weight, float(i)) if hasattr(m, "weight")
            else None))
    assert len(provenance._hash_cache) == provenance._HASH_CACHE_SIZE
