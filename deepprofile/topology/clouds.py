"""Point clouds of hidden layers: one cloud per layer, from a store or a live capture.

A layer's activations become points in its channel space, three ways (``kind``):

=================  ==========================================================================
``image``          one point per image: the stored per-image reduction (``mean``/``max``/
                   ``max_position``), or the spatial mean of a ``flatten`` layer
``max_position``   one point per image: the C-vector at the spatial position of largest L2
                   norm (Purvine et al. 2022, arXiv 2212.00222), from a layer captured with
                   the ``max_position`` reduction or computed here from a ``flatten`` layer
``positions``      k points per image (N*k points) from a ``positions:k`` layer (or k
                   positions drawn from a ``flatten`` layer with the capture's own sampler);
                   the image index, label and spatial position of every point are kept
=================  ==========================================================================

Clouds are then subsampled to ``n_points`` (``random``, ``stratified`` by label, or ``fps``
max-min landmarks) and normalised (``median``: divide by the median pairwise distance, the
default, so layers of different width and scale are comparable; ``standardize``: per feature
zero mean and unit variance; ``none``). Normalisation statistics come from all available
points (the median from a seeded sample of at most 2,000), so two samplers of one layer share
one scale. Everything is seeded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepprofile.errors import (
    EmptyDatasetError,
    MissingFileError,
    NonFiniteActivationError,
    ShapeError,
    UnknownLayerError,
)

CLOUD_KINDS = ("image", "max_position", "positions")
SAMPLERS = ("random", "stratified", "fps")
NORMALIZATIONS = ("none", "median", "standardize")
MIN_POINTS = 3
MEDIAN_SAMPLE = 2000
FPS_POOL = 20_000

# Stored reductions each cloud kind can be built from, in order of preference.
_COMPATIBLE = {
    "image": ("mean", "max", "max_position", "flatten"),
    "max_position": ("max_position", "flatten"),
    "positions": ("positions", "flatten"),
}


@dataclass(frozen=True, eq=False)
class PointCloud:
    """One layer's point cloud and where every point came from.

    ``rows`` are row indices into the store (or the captured batch order), ``sample_ids``
    the dataset index of each point's image, ``positions`` the flat spatial position of
    each point when known (``None`` for ``image`` clouds and stored ``max_position``).
    ``scale`` is the divisor applied by ``median`` normalisation (1 otherwise).
    """

    layer: str
    kind: str
    points: np.ndarray
    rows: np.ndarray
    labels: np.ndarray
    sample_ids: np.ndarray
    positions: np.ndarray | None = None
    normalize: str = "median"
    scale: float = 1.0
    sampler: str = "random"
    seed: int = 0
    n_available: int = 0
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def n_points(self) -> int:
        return int(self.points.shape[0])

    @property
    def dim(self) -> int:
        return int(self.points.shape[1])

    def describe(self) -> dict[str, Any]:
        """The cloud's parameters and provenance without the points (for result JSON)."""
        return {
            "layer": self.layer, "kind": self.kind, "n_points": self.n_points, "dim": self.dim,
            "n_available": self.n_available, "normalize": self.normalize, "scale": self.scale,
            "sampler": self.sampler, "seed": self.seed, "provenance": dict(self.provenance),
        }

    def to_dict(self) -> dict[str, Any]:
        from deepprofile.results import jsonable

        return jsonable({
            **self.describe(), "points": self.points, "rows": self.rows, "labels": self.labels,
            "sample_ids": self.sample_ids, "positions": self.positions,
        })

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PointCloud:
        pos = data.get("positions")
        return cls(
            layer=data["layer"], kind=data["kind"],
            points=np.asarray(data["points"], dtype=np.float64).reshape(-1, data["dim"]),
            rows=np.asarray(data["rows"], dtype=np.int64),
            labels=np.asarray(data["labels"], dtype=np.int64),
            sample_ids=np.asarray(data["sample_ids"], dtype=np.int64),
            positions=None if pos is None else np.asarray(pos, dtype=np.int64),
            normalize=data["normalize"], scale=float(data["scale"]), sampler=data["sampler"],
            seed=int(data["seed"]), n_available=int(data["n_available"]),
            provenance=dict(data.get("provenance", {})),
        )


# -- subsampling ----------------------------------------------------------------------
def farthest_point_sampling(points: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Max-min landmarks: start at a seeded random point, then add the point farthest from
    those chosen so far. Returns indices in selection order (greedy 2-approximation of the
    k-centre problem; every prefix is itself a max-min landmark set)."""
    points = np.asarray(points, dtype=np.float64)
    total = len(points)
    n = min(int(n), total)
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    chosen = np.empty(n, dtype=np.int64)
    chosen[0] = rng.integers(total)
    sq_norms = np.einsum("ij,ij->i", points, points)
    mind = np.full(total, np.inf)
    for step in range(1, n):
        last = points[chosen[step - 1]]
        d2 = sq_norms - 2.0 * points @ last + last @ last
        np.minimum(mind, np.maximum(d2, 0.0), out=mind)
        chosen[step] = int(np.argmax(mind))
    return chosen


def stratified_indices(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` indices drawn without replacement so each label keeps its share (largest
    remainder rounding); sorted."""
    labels = np.asarray(labels)
    total = len(labels)
    if n >= total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = n * counts / total
    quota = np.floor(exact).astype(int)
    short = n - int(quota.sum())
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[:short]] += 1
    picks = [
        rng.choice(np.flatnonzero(labels == c), size=int(q), replace=False)
        for c, q in zip(classes, quota, strict=True) if q > 0
    ]
    return np.sort(np.concatenate(picks))


def subsample_indices(
    points: np.ndarray, labels: np.ndarray, n: int | None, sampler: str = "random",
    seed: int = 0,
) -> np.ndarray:
    """Indices of the ``n`` points kept by ``sampler`` (all of them when ``n`` is None or
    at least the number of points)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}.")
    total = len(points)
    if n is None or n >= total:
        return np.arange(total)
    if n < MIN_POINTS:
        raise ShapeError(f"n_points={n} is too small; a cloud needs at least {MIN_POINTS}.")
    if sampler == "random":
        return np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
    if sampler == "stratified":
        return stratified_indices(labels, n, seed)
    # fps: on very large clouds (positions), first a seeded random pool of FPS_POOL points;
    # beyond the library: giotto-tda has no landmark sampler for raw clouds.
    pool = np.arange(total)
    if total > FPS_POOL:
        pool = np.sort(np.random.default_rng([seed, 1]).choice(total, FPS_POOL, replace=False))
    return pool[farthest_point_sampling(points[pool], n, seed)]


# -- normalisation -------------------------------------------------------------------
def median_pairwise_distance(points: np.ndarray, seed: int = 0,
                             max_points: int = MEDIAN_SAMPLE) -> float:
    """Median Euclidean distance between distinct points (on a seeded sample of at most
    ``max_points`` points)."""
    from scipy.spatial.distance import pdist

    points = np.asarray(points, dtype=np.float64)
    if len(points) > max_points:
        pick = np.random.default_rng([seed, 2]).choice(len(points), max_points, replace=False)
        points = points[pick]
    if len(points) < 2:
        return 0.0
    return float(np.median(pdist(points)))


def normalization_stats(points: np.ndarray, normalize: str, seed: int = 0) -> dict[str, Any]:
    """The statistics ``apply_normalization`` needs, computed from ``points``."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(
            f"Unknown normalisation {normalize!r}; choose one of {', '.join(NORMALIZATIONS)}."
        )
    if normalize == "median":
        scale = median_pairwise_distance(points, seed)
        return {"scale": scale if scale > 0 else 1.0}
    if normalize == "standardize":
        mean = points.mean(axis=0)
        std = points.std(axis=0)
        return {"mean": mean, "std": np.where(std > 0, std, 1.0), "scale": 1.0}
    return {"scale": 1.0}


def apply_normalization(points: np.ndarray, normalize: str, stats: Mapping[str, Any]
                        ) -> np.ndarray:
    if normalize == "median":
        return points / stats["scale"]
    if normalize == "standardize":
        return (points - stats["mean"]) / stats["std"]
    return points


# -- building clouds ------------------------------------------------------------------
@dataclass
class _LayerData:
    """One layer's stored activations with their reduction and per-row annotations."""

    layer: str
    data: np.ndarray
    reduction: str
    labels: np.ndarray
    sample_ids: np.ndarray
    output_shape: tuple[int, ...]
    capture_seed: int
    provenance: dict[str, Any]


def _check_finite(layer: str, data: np.ndarray) -> None:
    flat = data.reshape(len(data), -1)
    bad = ~np.isfinite(flat).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise NonFiniteActivationError(
            f"Layer {layer!r} holds NaN/inf activations in row(s) {rows[:10].tolist()}"
            f"{' ...' if len(rows) > 10 else ''}; a cloud cannot contain them. Check the "
            "capture (a diverged model?) or drop those samples."
        )


def _points_from(src: _LayerData, kind: str, positions_k: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(points, row of each point, spatial position of each point or None)."""
    from deepprofile.capture.reducers import parse_reduction, sample_positions

    red = parse_reduction(src.reduction)
    if red.kind not in _COMPATIBLE[kind]:
        raise ShapeError(
            f"Layer {src.layer!r} was captured with reduction {src.reduction!r}; a {kind!r} "
            f"cloud needs one of {', '.join(_COMPATIBLE[kind])}. Capture the layer again with "
            f"that reduction (for example into RUN_DIR/activations_maxpos.zarr with "
            "max_position) and pass that store."
        )
    data = src.data
    n = len(data)
    rows = np.arange(n)
    if red.kind == "flatten":
        flat = data.reshape(n, data.shape[1], -1).astype(np.float64)  # (N, C, P)
        if kind == "image":
            return flat.mean(axis=2), rows, None
        if kind == "max_position":
            best = np.linalg.norm(flat, axis=1).argmax(axis=1)
            return flat[rows, :, best], rows, best
        n_pos = flat.shape[2]
        if positions_k > n_pos:
            raise ShapeError(
                f"positions_k={positions_k} exceeds the {n_pos} spatial positions of "
                f"layer {src.layer!r}."
            )
        picks = np.stack([
            sample_positions(src.capture_seed, int(i), n_pos, positions_k) for i in src.sample_ids
        ])  # the capture's own position sampler, so flatten and positions:k stores agree
        pts = np.take_along_axis(flat, picks[:, None, :], axis=2).transpose(0, 2, 1)
        return (pts.reshape(-1, flat.shape[1]), np.repeat(rows, positions_k),
                picks.reshape(-1))
    if red.kind == "positions":
        k, c = data.shape[1], data.shape[2]
        n_pos = int(np.prod(src.output_shape[1:])) if len(src.output_shape) > 1 else 0
        pos = None
        if n_pos >= k:
            pos = np.concatenate([
                sample_positions(src.capture_seed, int(i), n_pos, k) for i in src.sample_ids
            ])
        return data.reshape(n * k, c).astype(np.float64), np.repeat(rows, k), pos
    if data.ndim != 2:
        raise ShapeError(f"Layer {src.layer!r} has stored shape {data.shape[1:]}, expected (C,).")
    return data.astype(np.float64), rows, None


def build_cloud(
    src: _LayerData, kind: str = "max_position", *, n_points: int | None = 1000,
    sampler: str = "random", normalize: str = "median", seed: int = 0, positions_k: int = 16,
) -> PointCloud:
    """Turn one layer's stored activations into a subsampled, normalised :class:`PointCloud`."""
    if kind not in CLOUD_KINDS:
        raise ValueError(f"Unknown cloud kind {kind!r}; choose one of {', '.join(CLOUD_KINDS)}.")
    if len(src.data) == 0:
        raise EmptyDatasetError(f"Layer {src.layer!r} holds no samples.")
    _check_finite(src.layer, src.data)
    points, rows, positions = _points_from(src, kind, positions_k)
    if len(points) < MIN_POINTS:
        raise ShapeError(
            f"Layer {src.layer!r} gives only {len(points)} point(s); a cloud needs at least "
            f"{MIN_POINTS}. Capture more samples."
        )
    stats = normalization_stats(points, normalize, seed)
    points = apply_normalization(points, normalize, stats)
    point_labels = src.labels[rows]
    keep = subsample_indices(points, point_labels, n_points, sampler, seed)
    return PointCloud(
        layer=src.layer, kind=kind, points=np.ascontiguousarray(points[keep]),
        rows=rows[keep].astype(np.int64), labels=point_labels[keep].astype(np.int64),
        sample_ids=src.sample_ids[rows[keep]].astype(np.int64),
        positions=None if positions is None else positions[keep].astype(np.int64),
        normalize=normalize, scale=float(stats["scale"]), sampler=sampler, seed=seed,
        n_available=len(points),
        provenance={**src.provenance, "reduction": src.reduction,
                    "n_requested": n_points, "positions_k": positions_k if kind == "positions"
                    else None},
    )


# -- sources: stores and run folders --------------------------------------------------
def _open_store(path: str | Path):
    from deepprofile.capture.store import ActivationStore

    return ActivationStore.open(path)


def candidate_stores(source: Any) -> list[Any]:
    """Stores a source names: an ActivationStore, a store path, or a run folder (its
    ``activations.zarr`` first, then every other ``activations*.zarr`` in name order)."""
    from deepprofile.capture.store import ActivationStore

    if isinstance(source, ActivationStore):
        return [source]
    if isinstance(source, (list, tuple)):
        return [s for item in source for s in candidate_stores(item)]
    path = Path(source)
    if not path.exists():
        raise MissingFileError(
            f"No store or run folder at {path}. Run `deepprofile capture` (or the demo) first."
        )
    if (path / "zarr.json").exists() and not (path / "activations.zarr").exists():
        return [_open_store(path)]
    stores = sorted(path.glob("activations*.zarr"), key=lambda p: (p.name != "activations.zarr",
                                                                    p.name))
    if not stores:
        raise MissingFileError(
            f"{path} holds no activation store (activations*.zarr). Capture activations first."
        )
    return [_open_store(p) for p in stores]


def resolve_layer_stores(source: Any, layers: Sequence[str] | None, kind: str
                         ) -> dict[str, Any]:
    """For each layer, the first store of ``source`` that holds it with a reduction the
    cloud ``kind`` can use. ``layers=None`` takes every usable layer of the first store
    that has any."""
    from deepprofile.capture.reducers import parse_reduction

    if kind not in CLOUD_KINDS:
        raise ValueError(f"Unknown cloud kind {kind!r}; choose one of {', '.join(CLOUD_KINDS)}.")
    stores = candidate_stores(source)

    def usable(store: Any, layer: str) -> bool:
        if layer not in store.layers:
            return False
        try:
            return parse_reduction(store.reduction(layer)).kind in _COMPATIBLE[kind]
        except ValueError as exc:
            from deepprofile.errors import CorruptStoreError

            raise CorruptStoreError(
                f"{store.path}: layer {layer!r} records an invalid reduction ({exc}); the "
                "store's metadata is damaged. Capture again with --overwrite.") from None

    if layers is None:
        for store in stores:
            names = [name for name in store.layers if usable(store, name)]
            left_out = [name for name in store.layers if name not in names]
            if names and left_out:
                # one store normally holds one reduction; never drop layers silently
                raise ShapeError(
                    f"{store.path} mixes reductions: {', '.join(names)} can make a {kind!r} "
                    f"cloud but {', '.join(f'{n} ({store.reduction(n)})' for n in left_out)} "
                    "cannot. Name the layers to use with --layers, or capture again.")
            if names:
                return {name: store for name in names}
        found = {s.path.name: {n: s.reduction(n) for n in s.layers} for s in stores}
        stored = {r for s in stores for r in (s.reduction(n) for n in s.layers)}
        usable_kinds = [k for k, reds in _COMPATIBLE.items()
                        if k != kind and any(r.split(":")[0] in reds for r in stored)]
        hint = (f"use --cloud {' or --cloud '.join(usable_kinds)}, or capture "
                f"with one of those" if usable_kinds else "Capture with one of those")
        raise ShapeError(
            f"No stored layer can make a {kind!r} cloud (needs reduction "
            f"{' or '.join(_COMPATIBLE[kind])}); stored: {found}. {hint[0].upper()}{hint[1:]}."
        )
    every: list[str] = []
    for store in stores:
        every += [n for n in store.layers if n not in every]
    expanded: list[str] = []
    for sel in layers:
        if any(ch in sel for ch in "*?["):
            import fnmatch

            hits = [n for n in every if fnmatch.fnmatchcase(n, sel)
                    and any(usable(s, n) for s in stores)]
            if not hits:
                raise UnknownLayerError(
                    f"Pattern {sel!r} matches no stored layer usable for a {kind!r} cloud. "
                    f"Stored layers: {', '.join(every)}."
                )
            expanded += [h for h in hits if h not in expanded]
        elif sel not in expanded:
            expanded.append(sel)
    chosen: dict[str, Any] = {}
    for name in expanded:
        hit = next((s for s in stores if usable(s, name)), None)
        if hit is None:
            holders = [s for s in stores if name in s.layers]
            if holders:
                raise ShapeError(
                    f"Layer {name!r} is stored with reduction "
                    f"{holders[0].reduction(name)!r} in {holders[0].path}; a {kind!r} cloud "
                    f"needs {' or '.join(_COMPATIBLE[kind])}. Capture it with that reduction "
                    "(e.g. RUN_DIR/activations_maxpos.zarr) or pick another --cloud."
                )
            from deepprofile.capture.selectors import close_matches

            hint = close_matches(name, every)
            raise UnknownLayerError(
                f"Layer {name!r} is not in the store(s) {[str(s.path) for s in stores]}. "
                + (f"Did you mean: {', '.join(hint)}? " if hint else "")
                + f"Stored layers: {', '.join(every)}."
            )
        chosen[name] = hit
    return chosen


def _store_provenance(store: Any) -> dict[str, Any]:
    meta = store.metadata
    return {
        "source": "store", "store": str(store.path), "model": meta.get("model"),
        "weights_hash": meta.get("weights_hash"), "dataset": meta.get("dataset"),
        "n_samples": store.n_samples,
    }


def _layer_from_store(store: Any, name: str) -> _LayerData:
    return _LayerData(
        layer=name, data=store.layer(name), reduction=store.reduction(name),
        labels=np.asarray(store.labels), sample_ids=np.asarray(store.indices),
        output_shape=tuple(store.output_shape(name)),
        capture_seed=int(store.metadata.get("seed", 0) or 0),
        provenance=_store_provenance(store),
    )


def clouds_from_store(
    source: Any, layers: Sequence[str] | None = None, *, kind: str = "max_position",
    n_points: int | None = 1000, sampler: str = "random", normalize: str = "median",
    seed: int = 0, positions_k: int = 16, quiet: bool = True,
) -> dict[str, PointCloud]:
    """One :class:`PointCloud` per layer from an ActivationStore, a store path or a run folder.

    In a run folder each layer is read from the first ``activations*.zarr`` store that
    holds it with a reduction ``kind`` can use (so ``activations.zarr`` with ``mean`` and
    ``activations_maxpos.zarr`` with ``max_position`` can sit side by side).
    """
    chosen = resolve_layer_stores(source, layers, kind)
    out: dict[str, PointCloud] = {}
    with _progress(quiet) as progress:
        task = progress.add_task("point clouds", total=len(chosen))
        for name, store in chosen.items():
            out[name] = build_cloud(
                _layer_from_store(store, name), kind, n_points=n_points, sampler=sampler,
                normalize=normalize, seed=seed, positions_k=positions_k,
            )
            progress.advance(task)
    return out


_KIND_REDUCTION = {"image": "mean", "max_position": "max_position"}


def clouds_from_model(
    model: Any, dataset: Any, layers: str | Iterable[str], *, kind: str = "max_position",
    n_points: int | None = 1000, sampler: str = "random", normalize: str = "median",
    seed: int = 0, positions_k: int = 16, batch_size: int = 128, device: str = "cpu",
    quiet: bool = True,
) -> dict[str, PointCloud]:
    """Capture ``layers`` of ``model`` on ``dataset`` (``(image, label)`` pairs) with an
    :class:`~deepprofile.capture.ActivationRecorder` and build one cloud per layer, without
    writing a store. ``image`` clouds use the ``mean`` reduction, ``positions`` clouds
    ``positions:<positions_k>``."""
    import torch
    from torch.utils.data import DataLoader

    from deepprofile.capture.hooks import ActivationRecorder, first_tensor
    from deepprofile.provenance import weights_hash

    if kind not in CLOUD_KINDS:
        raise ValueError(f"Unknown cloud kind {kind!r}; choose one of {', '.join(CLOUD_KINDS)}.")
    if len(dataset) == 0:
        raise EmptyDatasetError("The dataset holds no samples; nothing to capture.")
    reduction = _KIND_REDUCTION.get(kind, f"positions:{positions_k}")
    dev = torch.device(device)
    model.to(dev)
    chunks: dict[str, list[np.ndarray]] = {}
    labels: list[np.ndarray] = []
    offset = 0
    with ActivationRecorder(model, layers, reduction, seed=seed) as rec, _progress(quiet) as bar:
        task = bar.add_task("capturing", total=len(dataset))
        for batch in DataLoader(dataset, batch_size=batch_size):
            images, ys = first_tensor(batch[0]), batch[1]
            idx = np.arange(offset, offset + len(images))
            cap = rec(images.to(dev), sample_indices=idx)
            for name in rec.layers:
                chunks.setdefault(name, []).append(cap.activations[name].numpy())
            labels.append(torch.as_tensor(ys).numpy())
            offset += len(images)
            bar.advance(task, len(images))
        names, shapes = list(rec.layers), dict(rec.output_shapes)
    all_labels = np.concatenate(labels).astype(np.int64)
    spec = dataset.spec() if hasattr(dataset, "spec") else {"name": type(dataset).__name__}
    prov = {"source": "live", "model": type(model).__name__,
            "weights_hash": weights_hash(model), "dataset": spec, "n_samples": offset}
    return {
        name: build_cloud(
            _LayerData(name, np.concatenate(chunks[name]), reduction, all_labels,
                       np.arange(offset), shapes[name], seed, prov),
            kind, n_points=n_points, sampler=sampler, normalize=normalize, seed=seed,
            positions_k=positions_k,
        )
        for name in names
    }


def cloud_from_array(
    points: np.ndarray, layer: str = "array", *, labels: np.ndarray | None = None,
    n_points: int | None = None, sampler: str = "random", normalize: str = "none",
    seed: int = 0,
) -> PointCloud:
    """Wrap an ``(N, D)`` array as a :class:`PointCloud` (kind ``image``)."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2:
        raise ShapeError(f"A cloud must be a 2-D array (N, D); got shape {points.shape}.")
    n = len(points)
    labels = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels)
    src = _LayerData(layer, points, "mean", labels, np.arange(n), (points.shape[1],), seed,
                     {"source": "array"})
    return build_cloud(src, "image", n_points=n_points, sampler=sampler, normalize=normalize,
                       seed=seed)


def _progress(quiet: bool) -> Any:
    """The package's progress bar (silent when ``quiet`` or not on a terminal)."""
    from deepprofile.progress import progress_bar

    return progress_bar(quiet)


__all__ = [
    "CLOUD_KINDS", "NORMALIZATIONS", "SAMPLERS", "PointCloud",
    "apply_normalization", "build_cloud", "candidate_stores", "cloud_from_array",
    "clouds_from_model", "clouds_from_store", "farthest_point_sampling",
    "median_pairwise_distance", "normalization_stats", "resolve_layer_stores",
    "stratified_indices", "subsample_indices",
]
