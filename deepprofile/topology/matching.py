"""Layer-matching tests of Purvine et al. (arXiv 2212.00222): specificity and sensitivity.

* **Specificity**: given a cross matrix between the layers of model A (rows) and model B
  (columns), is each layer's nearest layer in B its counterpart (the layer of the same name,
  else the same index)? Reports the accuracy and the full matrix. Works for distances
  (smaller is nearer) and similarities such as CKA (``higher_is_closer=True``).
* **Sensitivity**: the distance between a layer's diagram and the diagram of the same cloud
  with its top-k principal components removed, over a sweep of k; a useful measure grows with
  k. Reports the distances, the linear CKA alongside, and their monotonicity (Spearman's rho
  of distance against k, and whether the sequence never decreases).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from deepprofile.errors import ShapeError
from deepprofile.topology.clouds import PointCloud
from deepprofile.topology.distances import DiagramDistance
from deepprofile.topology.persistence import VietorisRips


@dataclass(frozen=True, eq=False)
class SpecificityResult:
    """Nearest B layer of every A layer under one measure, and the accuracy of the match."""

    measure: str
    layers_a: tuple[str, ...]
    layers_b: tuple[str, ...]
    matrix: np.ndarray
    nearest: tuple[int, ...]
    expected: tuple[int, ...]
    higher_is_closer: bool = False

    @property
    def correct(self) -> tuple[bool, ...]:
        return tuple(n == e for n, e in zip(self.nearest, self.expected, strict=True))

    @property
    def accuracy(self) -> float:
        scored = [c for c, e in zip(self.correct, self.expected, strict=True) if e >= 0]
        return float(np.mean(scored)) if scored else float("nan")

    def to_dict(self) -> dict[str, Any]:
        from deepprofile.results import jsonable

        return jsonable({
            "measure": self.measure, "layers_a": self.layers_a, "layers_b": self.layers_b,
            "matrix": self.matrix, "nearest": self.nearest, "expected": self.expected,
            "higher_is_closer": self.higher_is_closer, "correct": self.correct,
            "accuracy": self.accuracy,
        })

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpecificityResult:
        return cls(
            measure=data["measure"], layers_a=tuple(data["layers_a"]),
            layers_b=tuple(data["layers_b"]), matrix=np.asarray(data["matrix"], dtype=float),
            nearest=tuple(int(i) for i in data["nearest"]),
            expected=tuple(int(i) for i in data["expected"]),
            higher_is_closer=bool(data["higher_is_closer"]),
        )


def specificity(matrix: np.ndarray, layers_a: Sequence[str],
                layers_b: Sequence[str] | None = None, *, higher_is_closer: bool = False,
                measure: str = "") -> SpecificityResult:
    """Specificity of a cross matrix (rows: layers of A, columns: layers of B).

    A row's counterpart is the B layer with the same name, else the one with the same
    index; rows without either are left out of the accuracy (``expected = -1``).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    layers_a = tuple(layers_a)
    layers_b = tuple(layers_a if layers_b is None else layers_b)
    if matrix.shape != (len(layers_a), len(layers_b)):
        raise ShapeError(f"Matrix shape {matrix.shape} does not match {len(layers_a)} x "
                         f"{len(layers_b)} layers.")
    if not np.isfinite(matrix).all():
        raise ShapeError("The cross matrix holds NaN/inf; cannot rank layers.")
    nearest = np.argmax(matrix, axis=1) if higher_is_closer else np.argmin(matrix, axis=1)
    expected = []
    for i, name in enumerate(layers_a):
        if name in layers_b:
            expected.append(layers_b.index(name))
        else:
            expected.append(i if i < len(layers_b) else -1)
    return SpecificityResult(measure, layers_a, layers_b, matrix,
                             tuple(int(n) for n in nearest), tuple(expected), higher_is_closer)


def remove_top_components(points: np.ndarray, k: int) -> np.ndarray:
    """The cloud with its top-``k`` principal directions projected out (mean kept)."""
    points = np.asarray(points, dtype=np.float64)
    if k <= 0:
        return points.copy()
    mean = points.mean(axis=0)
    centred = points - mean
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    top = vt[:k]
    return centred - (centred @ top.T) @ top + mean


def _spearman(k_values: Sequence[int], values: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    if len(values) < 2 or np.ptp(values) == 0:
        return float("nan")
    return float(spearmanr(k_values, values).statistic)


@dataclass(frozen=True, eq=False)
class SensitivityResult:
    """Distances between a layer and itself with its top-k principal components removed.

    ``distances[dim][i]`` is the diagram distance at ``k_values[i]``; ``cka[i]`` the linear
    CKA between the original and the reduced cloud; ``spearman[dim]`` Spearman's rho of
    distance against k (NaN when the distances are constant); ``monotone[dim]`` whether
    they never decrease; ``cka_spearman`` Spearman's rho of (1 - CKA) against k.
    """

    layer: str
    k_values: tuple[int, ...]
    distances: dict[int, tuple[float, ...]]
    cka: tuple[float, ...]
    metric: str
    spearman: dict[int, float] = field(default_factory=dict)
    monotone: dict[int, bool] = field(default_factory=dict)
    cka_spearman: float = float("nan")
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from deepprofile.results import jsonable

        return jsonable({
            "layer": self.layer, "k_values": self.k_values, "metric": self.metric,
            "distances": {str(d): v for d, v in self.distances.items()}, "cka": self.cka,
            "spearman": {str(d): v for d, v in self.spearman.items()},
            "monotone": {str(d): v for d, v in self.monotone.items()},
            "cka_spearman": self.cka_spearman, "params": self.params,
        })

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SensitivityResult:
        return cls(
            layer=data["layer"], k_values=tuple(int(k) for k in data["k_values"]),
            distances={int(d): tuple(float(x) for x in v) for d, v in data["distances"].items()},
            cka=tuple(float(x) for x in data["cka"]), metric=data["metric"],
            spearman={int(d): float(v) for d, v in data["spearman"].items()},
            monotone={int(d): bool(v) for d, v in data["monotone"].items()},
            cka_spearman=float(data["cka_spearman"]), params=dict(data.get("params", {})),
        )


class SensitivitySweep:
    """Sensitivity test: remove the top-k principal components of a cloud for each k and
    measure how far its diagrams (and its linear CKA) move from the original.

    The reduced cloud is not rescaled (``renormalize=False``), as in Purvine et al.; with
    ``renormalize=True`` it is rescaled to the original median pairwise distance, so only
    the change of shape counts.

    Base and reduced diagrams use the same filtration: the base diagrams' cutoff (``thresh``
    of the diagrams passed to :meth:`fit`, or the ``cutoff_quantile`` of the original cloud,
    measured on a sample drawn with ``seed``) is applied to every reduced cloud too, so a
    distance measures the change of the cloud, not a change of cutoff.
    """

    def __init__(self, k_values: Sequence[int] = (0, 1, 2, 4, 8, 16), *,
                 metric: str = "sliced_wasserstein", homology_dims: Sequence[int] = (0, 1),
                 renormalize: bool = False, n_threads: int = 2,
                 cutoff_quantile: float | None = None, seed: int = 0,
                 **metric_params: Any) -> None:
        self.k_values = tuple(int(k) for k in k_values)
        self.metric = metric
        self.homology_dims = tuple(homology_dims)
        self.renormalize = renormalize
        self.n_threads = n_threads
        self.cutoff_quantile = cutoff_quantile
        self.seed = seed
        self.metric_params = metric_params

    def fit(self, cloud: PointCloud, diagrams: Any = None) -> SensitivitySweep:
        """Run the sweep on ``cloud`` (reusing its ``diagrams`` when given)."""
        from deepprofile.topology.clouds import median_pairwise_distance
        from deepprofile.topology.similarity import linear_cka

        ks = tuple(k for k in self.k_values if 0 <= k < cloud.dim)
        if len(ks) < 2:
            raise ShapeError(f"Cloud {cloud.layer!r} has dimension {cloud.dim}; the sweep "
                             f"needs at least two k values below it, got {self.k_values}.")
        dist = DiagramDistance(self.metric, **self.metric_params)
        if diagrams is None:
            diagrams = VietorisRips(self.homology_dims, cutoff_quantile=self.cutoff_quantile,
                                    seed=self.seed, n_threads=self.n_threads).compute(cloud)
        base = diagrams
        thresh = float(base.thresh)
        rips = VietorisRips(self.homology_dims, thresh=None if np.isinf(thresh) else thresh,
                            n_threads=self.n_threads)
        ref_scale = median_pairwise_distance(cloud.points) if self.renormalize else 1.0
        per_dim: dict[int, list[float]] = {d: [] for d in self.homology_dims}
        ckas = []
        for k in ks:
            reduced = remove_top_components(cloud.points, k)
            if self.renormalize:
                scale = median_pairwise_distance(reduced)
                reduced = reduced * (ref_scale / scale) if scale > 0 else reduced
            dg = rips.compute(replace(cloud, points=reduced)) if k else base
            for d in self.homology_dims:
                per_dim[d].append(dist.between(base, dg, d))
            ckas.append(linear_cka(cloud.points, reduced))
        self.result_ = SensitivityResult(
            layer=cloud.layer, k_values=ks,
            distances={d: tuple(v) for d, v in per_dim.items()}, cka=tuple(ckas),
            metric=self.metric,
            spearman={d: _spearman(ks, v) for d, v in per_dim.items()},
            monotone={d: bool(np.all(np.diff(v) >= -1e-12)) for d, v in per_dim.items()},
            cka_spearman=_spearman(ks, [-c for c in ckas]),
            params={"renormalize": self.renormalize, **dist.params(),
                    "homology_dims": list(self.homology_dims),
                    "thresh": None if np.isinf(thresh) else thresh,
                    "cutoff_quantile": self.cutoff_quantile},
        )
        return self


def sensitivity(cloud: PointCloud, k_values: Sequence[int] = (0, 1, 2, 4, 8, 16),
                **params: Any) -> SensitivityResult:
    """Shortcut: ``SensitivitySweep(k_values, **params).fit(cloud).result_``."""
    return SensitivitySweep(k_values, **params).fit(cloud).result_


__all__ = [
    "SensitivityResult", "SensitivitySweep", "SpecificityResult", "remove_top_components",
    "sensitivity", "specificity",
]
