"""Concept-conditional attribution: which input pixels make a layer's concept probe fire.

:class:`ProbeLogit` composes the network up to a layer with a linear concept probe on that
layer's reduced activations (``w . reduce(layer(x)) + b``), so any input attribution method
of :func:`deepprofile.attribution.methods.attribute` (captum) explains the concept's logit
instead of a class logit (the composition itself is the probe's own module,
:meth:`deepprofile.concepts.probes.ConceptProbe.as_module`).

On the ``shapes`` dataset every concept has a ground-truth region
(:func:`deepprofile.concepts.sets.shapes_regions`): the shape's pixels for shape, colour,
texture and size concepts, the marker patch for the marker.
:func:`region_share` measures the share of the attribution mass (absolute values, summed over
channels) inside the region, to be read against the region's share of the image's area: a
ratio above 1 means the probe looks where the concept is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from deepprofile.errors import ShapeError


class ProbeLogit(nn.Module):
    """``images -> (N, 1)`` concept logit: the probe ``weight . reduce(layer(x)) + bias``.

    A thin wrapper over :class:`deepprofile.concepts.probes.ProbeModule` (which returns
    ``(N,)``) giving captum the ``(N, 1)`` output its ``target=0`` selects. ``weight`` lives in
    the raw activation space of ``layer`` as stored with ``reduction``; the hook on ``layer``
    lives only during each forward call.
    """

    def __init__(self, model: nn.Module, layer: str, weight: Any, bias: float = 0.0,
                 reduction: str = "mean") -> None:
        super().__init__()
        from deepprofile.concepts.probes import ConceptProbe

        probe = ConceptProbe(layer=layer, concept="", reduction=str(reduction), store_name="",
                             weight=np.asarray(weight, dtype=np.float64).reshape(-1),
                             bias=float(bias), balanced_accuracy=float("nan"))
        self.head = probe.as_module(model)
        self.layer = self.head.layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x).unsqueeze(1)


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


__all__ = ["ProbeLogit", "concept_attribution", "region_share"]
