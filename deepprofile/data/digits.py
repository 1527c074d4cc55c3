"""scikit-learn's bundled handwritten digits, resized to 32x32, with a fixed split.

1,797 greyscale 8x8 images ship inside scikit-learn, so the demo needs no download.
Images are upsampled bilinearly to 32x32, scaled to [0, 1] and standardised with
the training split's mean and standard deviation. The train/test split is
stratified and fixed (seed 0, 30% test: 1,257 / 540 images) whatever the run's seed.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

DIGIT_CLASSES = tuple(str(d) for d in range(10))
SPLIT_SEED = 0
TEST_FRACTION = 0.3


@lru_cache(maxsize=4)
def _digits(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    labels = np.asarray(bunch.target, dtype=np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    images = images.numpy()
    mean, std = images[idx_train].mean(), images[idx_train].std()
    images = (images - mean) / std
    return images, labels, np.sort(idx_train), np.sort(idx_test)


class DigitsDataset(Dataset):
    """The digits split ``"train"`` or ``"test"`` (or ``"all"``) as ``(1, size, size)`` tensors."""

    def __init__(self, split: str = "test", size: int = 32) -> None:
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
        images, labels, idx_train, idx_test = _digits(size)
        rows = {"train": idx_train, "test": idx_test, "all": np.arange(len(labels))}[split]
        self.split = split
        self.size = size
        self.images = torch.from_numpy(np.ascontiguousarray(images[rows]))
        self.targets = torch.from_numpy(labels[rows])
        self.source_indices = rows
        self.class_names = list(DIGIT_CLASSES)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])

    def spec(self) -> dict:
        return {"name": "digits", "split": self.split, "size": self.size, "n": len(self)}
