"""Images and activations the concept analysis needs beyond the store.

- :func:`capture_arrays`: reduced activations of any images through the package's
  :class:`~deepprofile.capture.ActivationRecorder` (same layers and reductions as a store),
  used for folder concepts and for the random-init baseline model;
- :func:`dataset_images`: the images behind store rows;
- :func:`load_folder_images`: a folder's images in the run's input format.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepprofile.errors import ConceptDataError


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless model)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def dataset_images(dataset: Any, indices: Sequence[int]) -> torch.Tensor:
    """Stack ``dataset[i][0]`` for the given dataset indices."""
    if len(indices) == 0:
        raise ConceptDataError("No images selected.")
    return torch.stack([torch.as_tensor(dataset[int(i)][0]) for i in indices]).float()


@torch.no_grad()
def capture_arrays(model: nn.Module, images: torch.Tensor, layers: Sequence[str],
                   reductions: Mapping[str, str], *, sample_indices: np.ndarray | None = None,
                   batch_size: int = 128, seed: int = 0,
                   device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """Reduced activations ``{layer: (n, ...)}`` of ``images`` (hooks removed on exit)."""
    from deepprofile.capture.hooks import ActivationRecorder

    parts: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    idx = np.arange(len(images)) if sample_indices is None else np.asarray(sample_indices)
    with ActivationRecorder(model, list(layers), dict(reductions), seed=seed) as rec:
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].to(device)
            cap = rec(batch, sample_indices=idx[start:start + batch_size])
            for layer in layers:
                parts[layer].append(cap.activations[layer].numpy())
    return {layer: np.concatenate(parts[layer]) for layer in layers}


def load_folder_images(paths: Sequence[str | Path], like: torch.Tensor,
                       spec: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Load image files as tensors shaped like ``like`` (C, H, W): resized, RGB or greyscale,
    scaled to [0, 1] and normalised with the run dataset's ``mean``/``std`` when it has them."""
    from PIL import Image

    c, h, w = like.shape
    out = []
    for path in paths:
        try:
            with Image.open(path) as img:
                img = img.convert("L" if c == 1 else "RGB").resize((w, h))
                arr = np.asarray(img, dtype=np.float32) / 255.0
        except OSError as exc:
            raise ConceptDataError(f"Cannot read concept image {path} ({exc}); remove it.") from exc
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        if arr.shape[0] != c:
            arr = np.repeat(arr[:1], c, axis=0)
        out.append(arr)
    images = torch.from_numpy(np.stack(out))
    spec = spec or {}
    if "mean" in spec and "std" in spec:
        mean = torch.as_tensor(spec["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.as_tensor(spec["std"], dtype=torch.float32).view(1, -1, 1, 1)
        images = (images - mean) / std
    return images
