"""Mapper graphs of hidden layers: build, measure, compare and draw them.

- :mod:`~deepprofile.mapper.lenses`: lens (filter) functions and input checks;
- :mod:`~deepprofile.mapper.knee`: the automatic DBSCAN ``eps``;
- :mod:`~deepprofile.mapper.stats`: purity, loops, coverage (:class:`MapperStats`);
- :mod:`~deepprofile.mapper.graph`: the kmapper-based builder (:class:`MapperGraph`,
  :func:`build_mapper`) and its result (:class:`MapperGraphResult`);
- :mod:`~deepprofile.mapper.store`: point clouds read from an ActivationStore;
- :mod:`~deepprofile.mapper.distance`: distances between mapper graphs (COOT, VI, ARI);
- :mod:`~deepprofile.mapper.pipeline`: every layer of a run (:func:`run_mapper`,
  :class:`MapperResult`, ``results/mapper.json``);
- :mod:`~deepprofile.mapper.page`: the offline HTML page of one graph;
- :mod:`~deepprofile.mapper.cli`: the ``deepprofile mapper`` command.

Heavy libraries (kmapper, scikit-learn, POT) are imported inside the functions that use
them, so importing this package stays cheap.
"""

from deepprofile.mapper.distance import (
    MapperDistanceMatrix,
    PointAlignment,
    align_points,
    assignment_agreement,
    mapper_distance,
    mapper_distance_matrix,
)
from deepprofile.mapper.graph import (
    MapperGraph,
    MapperGraphResult,
    MapperNode,
    build_mapper,
)
from deepprofile.mapper.knee import KneeEstimate, knee_point, knn_knee_eps
from deepprofile.mapper.lenses import (
    LENSES,
    MapperParameterError,
    UnknownLensError,
    check_cloud,
    compute_lens,
    confidence_from_logits,
    entropy_from_logits,
)
from deepprofile.mapper.page import render_mapper_page, write_mapper_page
from deepprofile.mapper.pipeline import (
    MapperResult,
    load_mapper_result,
    run_mapper,
    summarize_mapper,
    write_pages,
)
from deepprofile.mapper.stats import MapperStats, class_purity, graph_stats, node_purity
from deepprofile.mapper.store import (
    LayerCloud,
    cloud_from_store,
    mapper_from_store,
    store_provenance,
)

__all__ = [
    "LENSES", "KneeEstimate", "LayerCloud", "MapperDistanceMatrix", "MapperGraph",
    "MapperGraphResult", "MapperNode", "MapperParameterError", "MapperResult", "MapperStats",
    "PointAlignment", "UnknownLensError", "align_points", "assignment_agreement",
    "build_mapper", "check_cloud", "class_purity",
    "cloud_from_store", "compute_lens", "confidence_from_logits", "entropy_from_logits",
    "graph_stats", "knee_point", "knn_knee_eps", "load_mapper_result", "mapper_distance",
    "mapper_distance_matrix", "mapper_from_store", "node_purity", "render_mapper_page",
    "run_mapper", "store_provenance", "summarize_mapper", "write_pages", "write_mapper_page",
]
