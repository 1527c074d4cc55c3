"""Class hypergraphs of influential singular vectors (hypernetx 2.2).

For one layer the vertices are its top singular vectors ``0 .. k-1`` and there is one hyperedge
per class holding the vectors influential for that class (:mod:`.projection`). The statistics
say how classes share the layer's directions: hyperedge sizes, pairwise class overlaps
(Jaccard index and intersection sizes), ``s``-connected components (classes linked when they
share at least ``s`` vectors), and the vertices shared by many classes. Comparing them across
layers (:func:`depth_trend`) shows how class-specific the directions become with depth.

hypernetx computes the ``s``-connected components; its construction and several of its methods
emit Deprecation/FutureWarnings (and reset warning filters themselves), so every call into it is
wrapped in :func:`_quiet_hnx`. The Jaccard matrix, degrees and the bipartite networkx export
are direct computations on the edge dictionary.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deepprofile.errors import DeepProfileError


@contextlib.contextmanager
def _quiet_hnx() -> Iterator[None]:
    """Swallow the warnings hypernetx emits, restoring the caller's filters afterwards.

    hypernetx's decorators call ``warnings.simplefilter("always", FutureWarning)`` before
    warning, which defeats an "ignore" filter; recording the warnings is what silences them.
    Warnings from other sources raised inside the block are re-emitted.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        if "hypernetx" in (w.filename or "") or issubclass(
            w.category, (DeprecationWarning, FutureWarning, PendingDeprecationWarning)
        ):
            continue
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _hnx():
    with _quiet_hnx():
        import hypernetx as hnx
    return hnx


@dataclass(frozen=True)
class ClassHypergraph:
    """The class hypergraph of one layer and its statistics (JSON-ready through ``to_dict``).

    ``edges`` maps class name -> sorted member vertices; ``overlaps`` is the Jaccard matrix in
    ``classes`` order and ``intersections`` the counts of shared vertices; ``components[s]`` are
    the ``s``-connected components (lists of class names, singletons included) for ``s`` = 1 ..
    the largest hyperedge size; ``vertex_degree[v]`` the number of classes containing ``v``;
    ``shared_vertices`` those in at least ``shared_min_classes`` classes.
    """

    layer: str
    vertices: tuple[int, ...]
    classes: tuple[str, ...]
    edges: dict[str, list[int]]
    sizes: dict[str, int]
    overlaps: np.ndarray
    intersections: np.ndarray
    components: dict[int, list[list[str]]]
    vertex_degree: dict[int, int]
    shared_min_classes: int
    shared_vertices: tuple[int, ...]
    isolated_vertices: tuple[int, ...] = field(default=())

    # -- summary figures ----------------------------------------------------------------
    @property
    def mean_size(self) -> float:
        return float(np.mean(list(self.sizes.values()))) if self.sizes else 0.0

    @property
    def mean_jaccard(self) -> float:
        """Mean Jaccard index over distinct class pairs (0 with fewer than two classes)."""
        n = len(self.classes)
        if n < 2:
            return 0.0
        upper = self.overlaps[np.triu_indices(n, k=1)]
        return float(np.mean(upper))

    def n_components(self, s: int = 1) -> int:
        return len(self.components.get(s, []))

    def summary(self) -> dict[str, Any]:
        return {
            "layer": self.layer, "n_vertices": len(self.vertices), "n_edges": len(self.edges),
            "mean_size": self.mean_size,
            "min_size": min(self.sizes.values()) if self.sizes else 0,
            "max_size": max(self.sizes.values()) if self.sizes else 0,
            "mean_jaccard": self.mean_jaccard,
            "n_components_s1": self.n_components(1),
            "n_shared_vertices": len(self.shared_vertices),
            "n_used_vertices": len(self.vertices) - len(self.isolated_vertices),
        }

    # -- exports ------------------------------------------------------------------------
    def to_hypernetx(self):
        """A ``hypernetx.Hypergraph`` of the non-empty hyperedges (warnings silenced)."""
        hnx = _hnx()
        with _quiet_hnx():
            return hnx.Hypergraph({k: list(v) for k, v in self.edges.items() if v})

    def to_networkx(self):
        """Bipartite ``networkx.Graph``: class nodes ``("class", name)`` (``bipartite=0``),
        vertex nodes ``("sv", j)`` (``bipartite=1``), an edge for each membership."""
        import networkx as nx

        graph = nx.Graph(layer=self.layer)
        for name in self.classes:
            graph.add_node(("class", name), bipartite=0, label=name, size=self.sizes[name])
        for v in self.vertices:
            graph.add_node(("sv", v), bipartite=1, label=f"u{v}",
                           degree_classes=self.vertex_degree.get(v, 0))
        for name, members in self.edges.items():
            for v in members:
                graph.add_edge(("class", name), ("sv", v))
        return graph

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer, "vertices": list(self.vertices), "classes": list(self.classes),
            "edges": {k: list(v) for k, v in self.edges.items()},
            "sizes": dict(self.sizes), "overlaps": self.overlaps.tolist(),
            "intersections": self.intersections.tolist(),
            "components": {str(s): comps for s, comps in self.components.items()},
            "vertex_degree": {str(v): d for v, d in self.vertex_degree.items()},
            "shared_min_classes": self.shared_min_classes,
            "shared_vertices": list(self.shared_vertices),
            "isolated_vertices": list(self.isolated_vertices),
            "summary": self.summary(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassHypergraph:
        return cls(
            layer=data["layer"], vertices=tuple(int(v) for v in data["vertices"]),
            classes=tuple(data["classes"]),
            edges={k: [int(v) for v in vs] for k, vs in data["edges"].items()},
            sizes={k: int(v) for k, v in data["sizes"].items()},
            overlaps=np.asarray(data["overlaps"], dtype=np.float64).reshape(
                len(data["classes"]), len(data["classes"])),
            intersections=np.asarray(data["intersections"], dtype=np.int64).reshape(
                len(data["classes"]), len(data["classes"])),
            components={int(s): [list(c) for c in comps]
                        for s, comps in data["components"].items()},
            vertex_degree={int(v): int(d) for v, d in data["vertex_degree"].items()},
            shared_min_classes=int(data["shared_min_classes"]),
            shared_vertices=tuple(int(v) for v in data["shared_vertices"]),
            isolated_vertices=tuple(int(v) for v in data.get("isolated_vertices", [])),
        )


def build_hypergraph(
    influence: Mapping[str, Iterable[int]],
    *,
    vertices: Sequence[int] | int | None = None,
    layer: str = "",
    shared_fraction: float = 0.5,
) -> ClassHypergraph:
    """Class hypergraph from ``{class name: influential vertex ids}``.

    ``vertices`` is the vertex set (an int ``k`` means ``0 .. k-1``; default: every vertex that
    appears). A vertex is *shared* when it lies in at least ``ceil(shared_fraction * classes)``
    hyperedges (and at least two).
    """
    edges = {str(k): sorted({int(v) for v in members}) for k, members in influence.items()}
    if not edges:
        raise DeepProfileError(f"No classes to build a hypergraph from (layer {layer!r}).")
    if vertices is None:
        verts = sorted({v for members in edges.values() for v in members})
    elif isinstance(vertices, (int, np.integer)):
        verts = list(range(int(vertices)))
    else:
        verts = sorted({int(v) for v in vertices})
    vset = set(verts)
    stray = sorted({v for members in edges.values() for v in members} - vset)
    if stray:
        raise DeepProfileError(f"Hyperedges of layer {layer!r} use vertices {stray[:10]} that "
                               "are not in the vertex set.")
    classes = tuple(edges)
    sets = [set(edges[c]) for c in classes]
    n = len(classes)
    inter = np.zeros((n, n), dtype=np.int64)
    jac = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for j in range(n):
            shared = len(sets[i] & sets[j])
            union = len(sets[i] | sets[j])
            inter[i, j] = shared
            jac[i, j] = shared / union if union else (1.0 if i == j else 0.0)
    degree = {v: sum(v in s for s in sets) for v in verts}
    need = max(2, int(np.ceil(shared_fraction * n)))
    shared = tuple(v for v in verts if degree[v] >= need)
    components = s_components(edges)
    return ClassHypergraph(
        layer=layer, vertices=tuple(verts), classes=classes, edges=edges,
        sizes={c: len(edges[c]) for c in classes}, overlaps=jac, intersections=inter,
        components=components, vertex_degree=degree, shared_min_classes=need,
        shared_vertices=shared, isolated_vertices=tuple(v for v in verts if degree[v] == 0),
    )


def s_components(edges: Mapping[str, Sequence[int]]) -> dict[int, list[list[str]]]:
    """``s``-connected components of the hyperedges for ``s = 1 .. max size`` (hypernetx).

    Two hyperedges are ``s``-adjacent when they share at least ``s`` vertices. Hyperedges
    smaller than ``s`` are left out at that ``s``; empty hyperedges never take part.
    """
    nonempty = {k: list(v) for k, v in edges.items() if v}
    if not nonempty:
        return {}
    hnx = _hnx()
    with _quiet_hnx():
        graph = hnx.Hypergraph(nonempty)
        out: dict[int, list[list[str]]] = {}
        for s in range(1, max(len(v) for v in nonempty.values()) + 1):
            comps = graph.s_connected_components(s=s, edges=True, return_singletons=True)
            big = {k for k, v in nonempty.items() if len(v) >= s}
            found = [sorted(str(e) for e in comp if e in big) for comp in comps]
            out[s] = sorted((c for c in found if c), key=lambda c: (-len(c), c))
    return out


def hypergraph_from_projection(projection: Any, *, shared_fraction: float = 0.5
                               ) -> ClassHypergraph:
    """The class hypergraph of a :class:`~deepprofile.spectral.projection.LayerProjection`."""
    return build_hypergraph(
        projection.class_influential, vertices=projection.n_vectors, layer=projection.layer,
        shared_fraction=shared_fraction,
    )


def depth_trend(hypergraphs: Sequence[ClassHypergraph]) -> dict[str, list[Any]]:
    """Summary figures per layer, in the given (depth) order, as parallel lists."""
    rows = [h.summary() for h in hypergraphs]
    keys = rows[0].keys() if rows else []
    return {key: [row[key] for row in rows] for key in keys}


__all__ = [
    "ClassHypergraph", "build_hypergraph", "depth_trend", "hypergraph_from_projection",
    "s_components",
]
