"""Attributions: captum's methods behind one entry point, SDE-smoothed attributions
(neural SDE view of residual networks), boundary IG, explanation robustness, and links
to the data manifold and mapper graphs.

``attribute(model, x, method="ig")`` -> :class:`AttributionMaps`;
``sde_attribute(model, x, sigma=0.1, n_draws=16)``; ``big_attribute(model, x)``;
``robustness_table(...)``; ``manifold_alignment(...)``; ``run_attribution(...)`` for a run.
"""

from deepprofile.attribution.boundary import BoundarySearch, big_attribute, find_boundary
from deepprofile.attribution.manifold import (
    AlignmentResult,
    ManifoldAlignment,
    NodeAttributionStats,
    alignment,
    manifold_alignment,
    node_attribution_stats,
    random_baseline,
    select_node_rows,
    tangent_basis,
)
from deepprofile.attribution.methods import (
    METHODS,
    AttributionMaps,
    UnknownMethodError,
    attribute,
    canonical_method,
    resolve_targets,
    saliency_maps,
)
from deepprofile.attribution.pipeline import (
    AttributionResult,
    run_attribution,
    summarize_attribution,
)
from deepprofile.attribution.robustness import (
    RobustnessResult,
    center_of_mass,
    com_shift,
    compare_maps,
    kendall,
    random_perturbation,
    robustness_table,
    spearman,
    topk_attack,
    topk_intersection,
    total_variation,
)
from deepprofile.attribution.sde import (
    NotResidualError,
    ResidualNoise,
    ResidualSite,
    noisy_accuracy,
    noisy_finetune,
    residual_sites,
    sde_attribute,
)

__all__ = [
    "METHODS", "AlignmentResult", "AttributionMaps", "AttributionResult", "BoundarySearch",
    "ManifoldAlignment", "NodeAttributionStats", "NotResidualError", "ResidualNoise",
    "ResidualSite", "RobustnessResult", "UnknownMethodError", "alignment", "attribute",
    "big_attribute", "canonical_method", "center_of_mass", "com_shift", "compare_maps",
    "find_boundary", "kendall", "manifold_alignment", "node_attribution_stats",
    "noisy_accuracy", "noisy_finetune", "random_baseline", "random_perturbation",
    "residual_sites", "resolve_targets", "robustness_table", "run_attribution",
    "saliency_maps", "sde_attribute", "select_node_rows", "spearman", "summarize_attribution",
    "tangent_basis", "topk_attack", "topk_intersection", "total_variation",
]
