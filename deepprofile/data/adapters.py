"""Adapters: any Dataset, an ImageFolder directory, or tensors/arrays as a deepprofile dataset.

A deepprofile dataset is any ``torch.utils.data.Dataset`` returning ``(image, label)``
with an image tensor ``(C, H, W)``; ``class_names`` and ``spec()`` are optional
extras that, when present, are recorded in the activation store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from deepprofile.errors import EmptyDatasetError, ShapeError


class ArrayDataset(Dataset):
    """Images ``(N, C, H, W)`` (or ``(N, H, W)``) and integer labels from tensors or arrays."""

    def __init__(
        self,
        images: torch.Tensor | np.ndarray,
        labels: torch.Tensor | np.ndarray | None = None,
        class_names: list[str] | None = None,
        name: str = "arrays",
    ) -> None:
        images = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
        if images.ndim == 3:
            images = images.unsqueeze(1)
        if images.ndim != 4:
            raise ShapeError(
                f"Images must be (N, C, H, W) or (N, H, W); got shape {tuple(images.shape)}."
            )
        if len(images) == 0:
            raise EmptyDatasetError("The image array is empty (N = 0).")
        if labels is None:
            labels = torch.zeros(len(images), dtype=torch.long)
        labels = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels)
        if labels.shape != (len(images),):
            raise ShapeError(
                f"labels must have shape ({len(images)},) to match the images; "
                f"got {tuple(labels.shape)}."
            )
        self.images = images.float()
        self.targets = labels.long()
        n_classes = int(self.targets.max()) + 1
        self.class_names = class_names or [str(i) for i in range(n_classes)]
        self.name = name

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "n": len(self), "shape": list(self.images.shape[1:])}


def image_folder(
    root: str | Path,
    image_size: int = 224,
    mean: tuple[float, ...] = (0.485, 0.456, 0.406),
    std: tuple[float, ...] = (0.229, 0.224, 0.225),
    **options: Any,
) -> Dataset:
    """A torchvision ``ImageFolder`` (one sub-folder per class) resized and normalised.

    ``mean``/``std`` default to ImageNet's, which torchvision-trained weights expect;
    ``options`` (``split``, ``normalize``, ``classes``, ``seed``) are those of
    :func:`deepprofile.data.folder.folder_dataset`.
    """
    from deepprofile.data.folder import folder_dataset

    options.setdefault("normalize", (tuple(mean), tuple(std)))
    return folder_dataset(root, image_size=image_size, **options)


def dataset_spec(dataset: Dataset) -> dict[str, Any]:
    """The dataset's own ``spec()`` when it has one, else its type and length."""
    if hasattr(dataset, "spec"):
        return dict(dataset.spec())
    return {"name": type(dataset).__name__, "n": len(dataset)}  # type: ignore[arg-type]


def class_names(dataset: Dataset) -> list[str] | None:
    """The dataset's class names (``class_names`` or ``classes``), or None."""
    names = getattr(dataset, "class_names", None) or getattr(dataset, "classes", None)
    return [str(n) for n in names] if names is not None else None


def parse_normalization(spec: Any) -> Any:
    """See :func:`deepprofile.data.folder.parse_normalization`."""
    from deepprofile.data.folder import parse_normalization as parse

    return parse(spec)
