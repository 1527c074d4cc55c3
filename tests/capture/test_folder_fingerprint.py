"""Resuming a capture of an image folder whose images changed (same names, same count)
raises StoreMismatchError instead of mixing old and new chunks (issue 16, item 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from deepprofile.capture import capture_to_store
from deepprofile.capture.fingerprint import content_fingerprint
from deepprofile.capture.runner import fill_chunks, prepare_store
from deepprofile.data.adapters import ArrayDataset, image_folder
from deepprofile.errors import StoreMismatchError


def _write_images(root, seed):
    rng = np.random.default_rng(seed)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(6):
            pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(2, 2)).eval()


def test_changed_images_are_refused_on_resume(tmp_path):
    root = tmp_path / "images"
    _write_images(root, 0)
    net, path = _net(), tmp_path / "s.zarr"
    kw = dict(reductions="mean", batch_size=4, chunk_size=4)
    store, rows = prepare_store(net, image_folder(root, image_size=8), ["0"], path, **kw)
    fill_chunks(net, image_folder(root, image_size=8), store, rows, [0], batch_size=4)
    _write_images(root, 1)  # same names and count, other pixels
    with pytest.raises(StoreMismatchError, match="content_fingerprint"):
        capture_to_store(net, image_folder(root, image_size=8), ["0"], path, quiet=True, **kw)
    _write_images(root, 0)  # the original images again: resumes
    store = capture_to_store(net, image_folder(root, image_size=8), ["0"], path, quiet=True,
                             **kw)
    assert store.is_complete


def test_fingerprint_depends_on_selected_files_only(tmp_path):
    root = tmp_path / "images"
    _write_images(root, 0)
    ds = image_folder(root, image_size=8)
    first = content_fingerprint(ds, range(4))
    assert first == content_fingerprint(image_folder(root, image_size=8), range(4))
    assert first != content_fingerprint(ds, range(5))
    full = content_fingerprint(ds, range(12))
    (root / "b" / "5.png").write_bytes((root / "a" / "0.png").read_bytes())  # row 11
    assert content_fingerprint(ds, range(4)) == first
    assert content_fingerprint(ds, range(12)) != full
    assert content_fingerprint(ArrayDataset(np.zeros((2, 1, 4, 4))), range(2)) is None
