"""Vietoris-Rips persistence of layer clouds (giotto-ph) and diagram summaries.

Diagrams come from ``gph.ripser_parallel(X, maxdim, n_threads)`` directly: giotto-tda's
``VietorisRipsPersistence`` parallelises over clouds only, while giotto-ph parallelises the
reduction inside one cloud, which is what a single 1,000-point layer cloud needs.

A full filtration (``thresh=inf``) is exact: giotto-ph stops at the enclosing radius, above
which the Rips complex is a cone and has no homology. An optional cutoff (an absolute
``thresh`` or a quantile of the cloud's pairwise distances) truncates the filtration: every
feature still alive at the cutoff is reported with death ``inf``. Edge collapse
(``collapse_edges``) gives the same diagrams and is sometimes faster on dense H1 problems
(often slower on activation clouds; off by default).

Infinite deaths are kept as ``inf`` in the diagrams. Without a cutoff the only one is the
H0 class of the whole cloud, born at 0 in every diagram; distances drop it (any matching
pairs the two infinite points at cost 0, so dropping is exact). With a cutoff, distances
cap infinite deaths at the cutoff (see :mod:`deepprofile.topology.distances`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deepprofile.errors import NonFiniteActivationError, ShapeError
from deepprofile.topology.clouds import MIN_POINTS, PointCloud, _progress


@dataclass(frozen=True, eq=False)
class PersistenceDiagrams:
    """One layer's diagrams, ``dim -> (k, 2)`` (birth, death), with what made them.

    ``thresh`` is the filtration cutoff used (``inf`` for the full filtration);
    ``params`` the persistence parameters; ``cloud`` the cloud's description.
    """

    layer: str
    diagrams: dict[int, np.ndarray]
    thresh: float = float("inf")
    params: dict[str, Any] = field(default_factory=dict)
    cloud: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(sorted(self.diagrams))

    def __getitem__(self, dim: int) -> np.ndarray:
        return self.diagrams[dim]

    def finite(self, dim: int) -> np.ndarray:
        """Features of ``dim`` with a finite death."""
        dgm = self.diagrams[dim]
        return dgm[np.isfinite(dgm[:, 1])]

    def n_essential(self, dim: int) -> int:
        """Features of ``dim`` that never die (or outlive the cutoff)."""
        return int(np.sum(~np.isfinite(self.diagrams[dim][:, 1])))

    def to_dict(self) -> dict[str, Any]:
        from deepprofile.results import jsonable

        return jsonable({
            "layer": self.layer, "thresh": self.thresh, "params": self.params,
            "cloud": self.cloud, "seconds": self.seconds,
            "diagrams": {str(d): self.diagrams[d] for d in self.dims},
        })

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PersistenceDiagrams:
        return cls(
            layer=data["layer"],
            diagrams={int(d): np.asarray(v, dtype=np.float64).reshape(-1, 2)
                      for d, v in data["diagrams"].items()},
            thresh=float(data["thresh"]), params=dict(data.get("params", {})),
            cloud=dict(data.get("cloud", {})), seconds=float(data.get("seconds", 0.0)),
        )


def _as_points(cloud: PointCloud | np.ndarray) -> tuple[np.ndarray, str, dict[str, Any]]:
    if isinstance(cloud, PointCloud):
        return cloud.points, cloud.layer, cloud.describe()
    points = np.asarray(cloud, dtype=np.float64)
    if points.ndim != 2:
        raise ShapeError(f"A cloud must be a 2-D array (N, D); got shape {points.shape}.")
    return points, "array", {"n_points": len(points), "dim": points.shape[1]}


def quantile_threshold(points: np.ndarray, quantile: float, seed: int = 0,
                       max_points: int = 3000) -> float:
    """The ``quantile`` of the cloud's pairwise distances (on a seeded sample of at most
    ``max_points`` points), used as a filtration cutoff."""
    from scipy.spatial.distance import pdist

    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"cutoff_quantile must be in (0, 1], got {quantile}")
    if len(points) > max_points:
        points = points[np.random.default_rng(seed).choice(len(points), max_points,
                                                           replace=False)]
    return float(np.quantile(pdist(points), quantile))


class VietorisRips:
    """Vietoris-Rips persistence with giotto-ph, one cloud at a time.

    Parameters
    ----------
    homology_dims:
        Dimensions to keep (``(0, 1)``; add 2 for H2, which costs much more).
    thresh:
        Absolute filtration cutoff (``None``: full filtration).
    cutoff_quantile:
        Cutoff at this quantile of the cloud's pairwise distances (overrides ``thresh``).
    collapse_edges:
        giotto-ph's edge collapse before the reduction (same diagrams).
    coeff:
        Prime field of coefficients (2).
    seed:
        Seed of the point sample on which ``cutoff_quantile`` is measured (clouds larger than
        :func:`quantile_threshold`'s ``max_points``); the run's seed.
    n_threads:
        Threads giotto-ph uses inside one reduction.

    ``fit(clouds)`` sets ``diagrams_`` (layer -> :class:`PersistenceDiagrams`);
    ``compute(cloud)`` returns one layer's diagrams.
    """

    def __init__(
        self, homology_dims: Sequence[int] = (0, 1), *, thresh: float | None = None,
        cutoff_quantile: float | None = None, collapse_edges: bool = False, coeff: int = 2,
        n_threads: int = 2, quiet: bool = True, seed: int = 0,
    ) -> None:
        self.homology_dims = tuple(sorted({int(d) for d in homology_dims}))
        self.thresh = thresh
        self.cutoff_quantile = cutoff_quantile
        self.collapse_edges = collapse_edges
        self.coeff = coeff
        self.n_threads = n_threads
        self.quiet = quiet
        self.seed = seed

    def _check(self) -> None:
        if not self.homology_dims or min(self.homology_dims) < 0:
            raise ValueError(f"homology_dims must be non-negative, got {self.homology_dims}")
        if max(self.homology_dims) > 3:
            raise ValueError("Homology above dimension 3 is not supported (cost explodes).")

    def params(self) -> dict[str, Any]:
        return {
            "homology_dims": list(self.homology_dims), "thresh": self.thresh,
            "cutoff_quantile": self.cutoff_quantile, "collapse_edges": self.collapse_edges,
            "coeff": self.coeff, "n_threads": self.n_threads, "seed": self.seed,
            "library": "giotto-ph",
            "filtration": "vietoris-rips", "metric": "euclidean",
        }

    def compute(self, cloud: PointCloud | np.ndarray) -> PersistenceDiagrams:
        """Diagrams of one cloud."""
        from gph import ripser_parallel

        self._check()
        points, layer, described = _as_points(cloud)
        if len(points) < MIN_POINTS:
            raise ShapeError(
                f"Cloud {layer!r} has {len(points)} point(s); persistence needs at least "
                f"{MIN_POINTS}."
            )
        if not np.isfinite(points).all():
            raise NonFiniteActivationError(
                f"Cloud {layer!r} contains NaN/inf coordinates; clean the activations first."
            )
        thresh = float("inf") if self.thresh is None else float(self.thresh)
        if self.cutoff_quantile is not None:
            thresh = quantile_threshold(points, self.cutoff_quantile, seed=self.seed)
        start = time.perf_counter()
        out = ripser_parallel(
            np.ascontiguousarray(points), maxdim=max(self.homology_dims), thresh=thresh,
            coeff=self.coeff, collapse_edges=self.collapse_edges, n_threads=self.n_threads,
        )
        seconds = time.perf_counter() - start
        diagrams = {}
        for dim in self.homology_dims:
            dgm = np.asarray(out["dgms"][dim], dtype=np.float64).reshape(-1, 2)
            order = np.lexsort((dgm[:, 1], dgm[:, 0]))
            diagrams[dim] = dgm[order]
        return PersistenceDiagrams(layer=layer, diagrams=diagrams, thresh=thresh,
                                   params=self.params(), cloud=described, seconds=seconds)

    def fit(self, clouds: Mapping[str, PointCloud] | Iterable[PointCloud]) -> VietorisRips:
        """Compute diagrams of every cloud; sets ``diagrams_`` (layer -> diagrams)."""
        items = list(clouds.values()) if isinstance(clouds, Mapping) else list(clouds)
        result: dict[str, PersistenceDiagrams] = {}
        with _progress(self.quiet) as progress:
            task = progress.add_task("persistence", total=len(items))
            for cloud in items:
                dg = self.compute(cloud)
                result[dg.layer if isinstance(cloud, PointCloud) else str(len(result))] = dg
                progress.advance(task)
        self.diagrams_ = result
        return self


def persistence(cloud: PointCloud | np.ndarray, homology_dims: Sequence[int] = (0, 1),
                **params: Any) -> PersistenceDiagrams:
    """Shortcut: ``VietorisRips(homology_dims, **params).compute(cloud)``."""
    return VietorisRips(homology_dims, **params).compute(cloud)


# -- summaries -------------------------------------------------------------------------
def lifetimes(diagram: np.ndarray) -> np.ndarray:
    """Death minus birth of the finite features."""
    dgm = np.asarray(diagram, dtype=np.float64).reshape(-1, 2)
    dgm = dgm[np.isfinite(dgm[:, 1])]
    return dgm[:, 1] - dgm[:, 0]


def betti_curve(diagram: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Number of features alive at each grid value t (birth <= t < death; infinite deaths
    stay alive)."""
    dgm = np.asarray(diagram, dtype=np.float64).reshape(-1, 2)
    grid = np.asarray(grid, dtype=np.float64)
    alive = (dgm[None, :, 0] <= grid[:, None]) & (grid[:, None] < dgm[None, :, 1])
    return alive.sum(axis=1)


def persistence_entropy(diagram: np.ndarray) -> float:
    """Shannon entropy (base 2, as giotto-tda) of the finite lifetimes normalised to sum 1."""
    life = lifetimes(diagram)
    life = life[life > 0]
    if life.size == 0:
        return 0.0
    p = life / life.sum()
    return float(-(p * np.log2(p)).sum())


def total_persistence(diagram: np.ndarray, p: float = 1.0) -> float:
    """Sum of finite lifetimes to the power ``p``."""
    return float(np.sum(lifetimes(diagram) ** p))


def count_above(diagram: np.ndarray, noise: float) -> int:
    """Finite features with lifetime above ``noise``, plus every infinite one."""
    dgm = np.asarray(diagram, dtype=np.float64).reshape(-1, 2)
    return int(np.sum(lifetimes(dgm) > noise) + np.sum(~np.isfinite(dgm[:, 1])))


@dataclass(frozen=True)
class DiagramSummary:
    """Numbers that describe one diagram (finite features unless said otherwise)."""

    dim: int
    n_features: int
    n_essential: int
    total_persistence: float
    max_persistence: float
    entropy: float
    noise_threshold: float
    n_above_noise: int
    betti_grid: tuple[float, ...] = ()
    betti_curve: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        from deepprofile.results import jsonable

        return jsonable(self.__dict__)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiagramSummary:
        return cls(**{**data, "betti_grid": tuple(data.get("betti_grid", ())),
                      "betti_curve": tuple(data.get("betti_curve", ()))})


def summarize_diagram(diagram: np.ndarray, dim: int, *, noise: float = 0.05,
                      grid: np.ndarray | None = None) -> DiagramSummary:
    """Betti curve on ``grid`` (100 values up to the largest finite death when None),
    entropy, total and largest persistence, and features above ``noise``."""
    dgm = np.asarray(diagram, dtype=np.float64).reshape(-1, 2)
    life = lifetimes(dgm)
    if grid is None:
        finite = dgm[np.isfinite(dgm[:, 1])]
        top = float(finite[:, 1].max()) if len(finite) else 1.0
        grid = np.linspace(0.0, top, 100)
    return DiagramSummary(
        dim=dim, n_features=int(life.size), n_essential=int(np.sum(~np.isfinite(dgm[:, 1]))),
        total_persistence=float(life.sum()),
        max_persistence=float(life.max()) if life.size else 0.0,
        entropy=persistence_entropy(dgm), noise_threshold=float(noise),
        n_above_noise=count_above(dgm, noise),
        betti_grid=tuple(float(g) for g in grid),
        betti_curve=tuple(int(c) for c in betti_curve(dgm, grid)),
    )


__all__ = [
    "DiagramSummary", "PersistenceDiagrams", "VietorisRips", "betti_curve", "count_above",
    "lifetimes", "persistence", "persistence_entropy", "quantile_threshold",
    "summarize_diagram", "total_persistence",
]
