"""Topology of hidden layers: point clouds, persistence, diagram distances, CKA.

Heavy libraries (giotto-ph, giotto-tda, POT) are imported inside the functions that use
them, so importing this package stays cheap. Mapper graphs moved to
:mod:`deepprofile.mapper`; their names are still importable from here for one release
(with a ``DeprecationWarning``).
"""

import importlib
import warnings
from typing import Any

from deepprofile.topology.clouds import (
    CLOUD_KINDS,
    PointCloud,
    cloud_from_array,
    clouds_from_model,
    clouds_from_store,
    farthest_point_sampling,
)
from deepprofile.topology.distances import (
    METRICS,
    DiagramDistance,
    cross_distance_matrix,
    diagram_distance,
    distance_matrix,
)
from deepprofile.topology.matching import (
    SensitivityResult,
    SensitivitySweep,
    SpecificityResult,
    sensitivity,
    specificity,
)
from deepprofile.topology.persistence import (
    DiagramSummary,
    PersistenceDiagrams,
    VietorisRips,
    persistence,
    summarize_diagram,
)
from deepprofile.topology.pipeline import (
    TopologyAnalysis,
    TopologyComparison,
    TopologyResult,
    compare_topology,
    run_topology,
    summarize_comparison,
    summarize_topology,
)
from deepprofile.topology.similarity import (
    MinibatchCKA,
    cka,
    cka_matrix,
    linear_cka,
    minibatch_cka,
    rbf_cka,
    store_minibatch_cka,
)

__all__ = [
    "CLOUD_KINDS", "DiagramDistance", "DiagramSummary", "METRICS", "MinibatchCKA",
    "PersistenceDiagrams", "PointCloud", "SensitivityResult", "SensitivitySweep",
    "SpecificityResult", "TopologyAnalysis", "TopologyComparison", "TopologyResult",
    "VietorisRips", "cka", "cka_matrix", "cloud_from_array", "clouds_from_model",
    "clouds_from_store", "compare_topology", "cross_distance_matrix", "diagram_distance",
    "distance_matrix", "farthest_point_sampling", "linear_cka", "minibatch_cka", "persistence",
    "rbf_cka", "run_topology", "sensitivity", "specificity", "store_minibatch_cka",
    "summarize_comparison", "summarize_diagram", "summarize_topology",
]

# Mapper names moved to deepprofile.mapper (issue 11); kept here for one release.
_MOVED_TO_MAPPER = frozenset({
    "MapperGraph", "MapperGraphResult", "MapperResult", "assignment_agreement",
    "build_mapper", "load_mapper_result", "mapper_distance", "mapper_distance_matrix",
    "mapper_from_store", "run_mapper", "summarize_mapper",
})


def __getattr__(name: str) -> Any:
    """Old ``deepprofile.topology.<mapper name>`` imports: warn and forward."""
    if name in _MOVED_TO_MAPPER:
        warnings.warn(
            f"deepprofile.topology.{name} moved to deepprofile.mapper.{name}; the old import "
            "will be removed in the next release.",
            DeprecationWarning, stacklevel=2,
        )
        return getattr(importlib.import_module("deepprofile.mapper"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
