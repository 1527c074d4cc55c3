"""Reductions that turn one layer's output batch into per-sample feature arrays.

A layer output is ``(N, C, H, W)`` (conv), ``(N, C, L)`` (1-D conv) or
``(N, C)`` (linear). Spatial dimensions are everything after the channel axis.

=================  =====================================  ==============================
name               result per batch                        meaning
=================  =====================================  ==============================
``mean``           ``(N, C)``                              global average pool
``max``            ``(N, C)``                              global max pool
``max_position``   ``(N, C)``                              the C-vector at the spatial
                                                           position of largest L2 norm
                                                           (Purvine et al. 2022)
``flatten``        ``(N, C, *spatial)``                    the whole map, unchanged
``positions:k``    ``(N, k, C)``                           k spatial positions per image,
                                                           drawn without replacement,
                                                           seeded per sample index
=================  =====================================  ==============================

Position sampling depends only on ``(seed, sample index)``, so a capture that
resumes half-way draws exactly the positions an uninterrupted run draws.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from deepprofile.errors import ShapeError

REDUCTIONS = ("mean", "max", "max_position", "flatten", "positions")
_POSITIONS = re.compile(r"^positions(?::(\d+))?$")


@dataclass(frozen=True)
class Reduction:
    """A parsed reduction: its kind and, for ``positions``, the number ``k`` per image."""

    kind: str
    k: int = 0

    def __str__(self) -> str:
        return f"positions:{self.k}" if self.kind == "positions" else self.kind

    def output_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape per sample of the reduced output for a layer output of ``sample_shape``."""
        channels = sample_shape[0]
        if self.kind in ("mean", "max", "max_position"):
            return (channels,)
        if self.kind == "flatten":
            return tuple(sample_shape)
        return (self.k, channels)

    def __call__(
        self, output: torch.Tensor, sample_indices: np.ndarray | None = None, seed: int = 0
    ) -> torch.Tensor:
        return reduce(output, self, sample_indices=sample_indices, seed=seed)


def parse_reduction(spec: str | Reduction) -> Reduction:
    """Parse ``"mean"``, ``"max"``, ``"max_position"``, ``"flatten"`` or ``"positions:k"``."""
    if isinstance(spec, Reduction):
        return spec
    spec = str(spec).strip().lower()
    match = _POSITIONS.match(spec)
    if match:
        k = int(match.group(1) or 16)
        if k < 1:
            raise ValueError(f"positions:k needs k >= 1, got {spec!r}")
        return Reduction("positions", k)
    if spec not in REDUCTIONS:
        raise ValueError(
            f"Unknown reduction {spec!r}; choose one of mean, max, max_position, flatten, "
            "positions:k (e.g. positions:16)."
        )
    return Reduction(spec)


def _spatial(output: torch.Tensor, layer: str = "") -> torch.Tensor:
    """View an output as ``(N, C, P)`` with P spatial positions (P = 1 for linear outputs)."""
    if output.ndim < 2:
        raise ShapeError(
            f"Layer {layer!r} returned a tensor of shape {tuple(output.shape)}; reductions need "
            "(N, C, ...) with a batch and a channel axis."
        )
    return output.reshape(output.shape[0], output.shape[1], -1)


def reduce(
    output: torch.Tensor,
    reduction: str | Reduction,
    sample_indices: np.ndarray | None = None,
    seed: int = 0,
    layer: str = "",
) -> torch.Tensor:
    """Apply ``reduction`` to a batch ``output``; see the module docstring for shapes."""
    red = parse_reduction(reduction)
    out = output.detach()
    if red.kind == "flatten":
        return out
    flat = _spatial(out, layer)
    if red.kind == "mean":
        return flat.mean(dim=2)
    if red.kind == "max":
        return flat.amax(dim=2)
    if red.kind == "max_position":
        best = flat.norm(dim=1).argmax(dim=1)  # (N,)
        return flat.gather(2, best.view(-1, 1, 1).expand(-1, flat.shape[1], 1)).squeeze(2)
    # positions
    n, _, p = flat.shape
    if red.k > p:
        raise ShapeError(
            f"positions:{red.k} asks for {red.k} positions per image but layer {layer!r} has "
            f"only {p} spatial positions; use k <= {p}."
        )
    if sample_indices is None:
        sample_indices = np.arange(n)
    picks = np.stack([sample_positions(seed, int(i), p, red.k) for i in sample_indices])
    index = torch.as_tensor(picks, device=flat.device).unsqueeze(1).expand(-1, flat.shape[1], -1)
    return flat.gather(2, index).transpose(1, 2)  # (N, k, C)


def sample_positions(seed: int, sample_index: int, n_positions: int, k: int) -> np.ndarray:
    """The k spatial positions drawn for one sample: a function of (seed, index) only."""
    rng = np.random.default_rng([seed, sample_index])
    return np.sort(rng.choice(n_positions, size=k, replace=False))
