"""Concept-conditional attribution: which input pixels make a layer's concept probe fire.

:class:`ProbeLogit` composes the network up to a layer with a linear concept probe on that
layer's reduced activations (``w . reduce(layer(x)) + b``), so any input attribution method
of :func:`deepprofile.attribution.methods.attribute` (captum) explains the concept's logit
instead of a class logit. The forward hook that reads the layer exists only inside each
forward call (removed in ``finally``), and the rest of the network is skipped.

On the ``shapes`` dataset every concept has a ground-truth region: the shape's pixels for
shape, colour, texture and size concepts, the marker patch for the marker.
:func:`region_share` measures the share of the attribution mass (absolute values, summed over
channels) inside the region, to be read against the region's share of the image's area: a
ratio above 1 means the probe looks where the concept is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from deepprofile.errors import DeepProfileError, ShapeError

_CHANNEL_REDUCTIONS = ("mean", "max", "max_position")


class _Stop(Exception):
    """Raised by the hook once the layer's output is read: the rest of the net is skipped."""


def _reduce(out: torch.Tensor, reduction: str) -> torch.Tensor:
    """Differentiable version of the capture reductions, one vector per image."""
    flat = out.reshape(out.shape[0], out.shape[1], -1)
    kind = reduction.split(":")[0]
    if kind in ("mean", "positions"):  # positions: probe over positions, mean over all of them
        return flat.mean(dim=2)
    if kind == "max":
        return flat.amax(dim=2)
    if kind == "max_position":
        best = flat.detach().norm(dim=1).argmax(dim=1)
        return flat.gather(2, best.view(-1, 1, 1).expand(-1, flat.shape[1], 1)).squeeze(2)
    if kind == "flatten":
        return out.reshape(out.shape[0], -1)
    raise DeepProfileError(
        f"Unknown reduction {reduction!r}; probes are fitted on mean, max, max_position, "
        "flatten or positions:k activations."
    )


class ProbeLogit(nn.Module):
    """``images -> (N, 1)`` concept logit: the probe ``weight . reduce(layer(x)) + bias``.

    ``weight`` lives in the raw activation space of ``layer`` as stored with ``reduction``.
    The wrapped model is not modified; a hook on ``layer`` lives only during ``forward``.
    """

    def __init__(self, model: nn.Module, layer: str, weight: Any, bias: float = 0.0,
                 reduction: str = "mean") -> None:
        super().__init__()
        modules = dict(model.named_modules())
        if layer not in modules or not layer:
            from deepprofile.capture.selectors import resolve_layers

            resolve_layers(model, [layer])  # raises UnknownLayerError with close matches
        self.model = model
        self.layer = layer
        self.reduction = str(reduction)
        w = torch.as_tensor(np.asarray(weight, dtype=np.float32)).reshape(-1)
        self.register_buffer("weight", w)
        self.register_buffer("bias", torch.tensor(float(bias), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from deepprofile.capture.hooks import first_tensor, register_forward_hooks, remove_hooks

        seen: list[torch.Tensor] = []

        def hook(module: nn.Module, args: tuple, output: object) -> None:
            seen.append(first_tensor(output, self.layer))
            raise _Stop

        handles = register_forward_hooks(self.model, [(self.layer, hook)])
        try:
            self.model(x)
        except _Stop:
            pass
        finally:
            remove_hooks(handles)
        if not seen:
            raise DeepProfileError(f"Layer {self.layer!r} was not called in the forward pass.")
        features = _reduce(seen[0], self.reduction)
        if features.shape[1] != self.weight.numel():
            raise ShapeError(
                f"The probe has {self.weight.numel()} weights but layer {self.layer!r} "
                f"({self.reduction}) gives {features.shape[1]} features per image; fit the "
                "probe on this layer's stored activations."
            )
        w = self.weight.to(features.dtype)
        return (features @ w + self.bias.to(features.dtype)).unsqueeze(1)


def concept_attribution(
    model: nn.Module,
    layer: str,
    weight: Any,
    bias: float,
    images: torch.Tensor,
    *,
    reduction: str = "mean",
    method: str = "integrated_gradients",
    seed: int = 0,
    batch_size: int = 16,
    **params: Any,
):
    """Attribute the concept probe's logit to the input pixels (captum through
    :func:`deepprofile.attribution.methods.attribute`); returns its ``AttributionMaps``."""
    from deepprofile.attribution.methods import attribute

    head = ProbeLogit(model, layer, weight, bias, reduction)
    return attribute(head, images, method=method, target=0, seed=seed, batch_size=batch_size,
                     model_name=f"probe({layer})", **params)


def region_share(attributions: np.ndarray, regions: np.ndarray) -> dict[str, Any]:
    """Share of absolute attribution mass inside ``regions`` against the regions' area share.

    ``attributions`` ``(N, C, H, W)`` or ``(N, H, W)``; ``regions`` ``(N, H, W)`` boolean.
    Images with no attribution mass at all are left out of the means.
    """
    from deepprofile.attribution.methods import saliency_maps

    sal = saliency_maps(attributions).astype(np.float64)
    regions = np.asarray(regions).astype(bool)
    if sal.shape != regions.shape:
        raise ShapeError(f"Attribution maps {sal.shape} and regions {regions.shape} differ in "
                         "shape; give one (H, W) region per image.")
    total = sal.reshape(len(sal), -1).sum(axis=1)
    inside = (sal * regions).reshape(len(sal), -1).sum(axis=1)
    area = regions.reshape(len(regions), -1).mean(axis=1)
    ok = total > 0
    share = np.where(ok, inside / np.where(ok, total, 1.0), np.nan)
    mean_share = float(np.nanmean(share)) if ok.any() else float("nan")
    mean_area = float(area[ok].mean()) if ok.any() else float("nan")
    return {
        "mass_share": share.tolist(), "area_share": area.tolist(),
        "mean_mass_share": mean_share, "mean_area_share": mean_area,
        "enrichment": mean_share / mean_area if ok.any() and mean_area > 0 else None,
        "n_images": int(ok.sum()),
    }


def region_kind(concept: str) -> str:
    """``marker`` for the planted marker concept, ``shape`` for every other shapes concept."""
    return "marker" if "marker" in concept.lower() else "shape"


def shapes_regions(dataset: Any, indices: Sequence[int], concept: str) -> np.ndarray:
    """Ground-truth regions ``(N, 32, 32)`` of ``concept`` on images of a shapes dataset."""
    from deepprofile.data.shapes import ShapesDataset, marker_mask, shape_mask

    base = getattr(dataset, "dataset", dataset)
    if not isinstance(base, ShapesDataset):
        raise DeepProfileError("Concept regions exist for the shapes dataset only.")
    if region_kind(concept) == "marker":
        return np.repeat(marker_mask()[None], len(indices), axis=0)
    return np.stack([shape_mask(base.concepts(int(i))) for i in indices])


__all__ = ["ProbeLogit", "concept_attribution", "region_kind", "region_share",
           "shapes_regions"]
