"""Spectral analysis of weights: conv-weight SVD, operator spectra, random-matrix fits,
projections on singular vectors and class hypergraphs (Praggastis et al. 2022).

Names are imported lazily (PEP 562) so that ``deepprofile.spectral.cli`` can be imported by
the command line without loading torch, scipy or hypernetx.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClassHypergraph": "hypergraph",
    "InitBaseline": "baseline",
    "LayerProjection": "projection",
    "LayerSVD": "conv_svd",
    "LayerSpectrum": "rmt",
    "MPFit": "rmt",
    "ModelSpectrum": "rmt",
    "PowerLawFit": "rmt",
    "ProjectionAccumulator": "projection",
    "SpectralResult": "pipeline",
    "UnsupportedLayerError": "conv_svd",
    "WeightSpectrumAnalyzer": "rmt",
    "analyze_weights": "rmt",
    "build_hypergraph": "hypergraph",
    "conv_operator_matrix": "conv_svd",
    "conv_operator_singular_values": "conv_svd",
    "depth_trend": "hypergraph",
    "energy_shares": "projection",
    "fit_marchenko_pastur": "rmt",
    "fit_power_law": "rmt",
    "hypergraph_from_projection": "hypergraph",
    "influential_mask": "projection",
    "layer_spectrum": "rmt",
    "layer_svd": "conv_svd",
    "model_svd": "conv_svd",
    "project_captured": "projection",
    "project_dataset": "projection",
    "project_inputs": "projection",
    "project_output": "projection",
    "project_stored_outputs": "projection",
    "projection_layers": "pipeline",
    "random_init_baseline": "baseline",
    "random_init_copy": "rmt",
    "run_spectral": "pipeline",
    "singular_values": "conv_svd",
    "summarize_spectral": "pipeline",
    "unfold_inputs": "projection",
    "weight_layers": "conv_svd",
    "weight_matrix": "conv_svd",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"deepprofile.spectral.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'deepprofile.spectral' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = sorted(_EXPORTS)
