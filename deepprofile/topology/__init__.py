"""Topology of hidden layers: point clouds, persistence, diagram distances, CKA, mapper.

Heavy libraries (giotto-ph, giotto-tda, POT) are imported inside the functions that use
them, so importing this package stays cheap.
"""

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
from deepprofile.topology.mapper import (
    MapperGraph,
    MapperGraphResult,
    build_mapper,
    mapper_from_store,
)
from deepprofile.topology.mapper_distance import (
    assignment_agreement,
    mapper_distance,
    mapper_distance_matrix,
)
from deepprofile.topology.mapper_pipeline import (
    MapperResult,
    load_mapper_result,
    run_mapper,
    summarize_mapper,
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
    "CLOUD_KINDS", "DiagramDistance", "DiagramSummary", "METRICS", "MapperGraph",
    "MapperGraphResult", "MapperResult", "MinibatchCKA", "PersistenceDiagrams", "PointCloud",
    "SensitivityResult", "SensitivitySweep", "SpecificityResult", "TopologyAnalysis",
    "TopologyComparison", "TopologyResult", "VietorisRips", "assignment_agreement",
    "build_mapper", "cka", "cka_matrix", "cloud_from_array", "clouds_from_model",
    "clouds_from_store", "compare_topology", "cross_distance_matrix", "diagram_distance",
    "distance_matrix", "farthest_point_sampling", "linear_cka", "load_mapper_result",
    "mapper_distance", "mapper_distance_matrix", "mapper_from_store", "minibatch_cka",
    "persistence", "rbf_cka", "run_mapper", "run_topology", "sensitivity", "specificity",
    "store_minibatch_cka", "summarize_comparison", "summarize_diagram", "summarize_mapper",
    "summarize_topology",
]
