"""One shared image sample for CKA: the same images in every layer compared.

CKA pairs the rows of two layers image by image, so both must hold the same images. Clouds
made by the ``random`` or ``stratified`` sampler from stores of the same images already do;
``fps`` clouds do not (farthest-point sampling picks different images in every layer, and
their overlap is small). For those, the images are chosen once per comparison: the images
every layer holds, then a seeded random subsample of ``n_points`` of them, taken from every
layer. Nothing is intersected silently: :func:`~deepprofile.topology.similarity.aligned_points`
refuses clouds of different images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from deepprofile.errors import ShapeError
from deepprofile.topology.clouds import (
    PointCloud,
    _layer_from_store,
    build_cloud,
    resolve_layer_stores,
)


def same_images(groups: Sequence[Mapping[str, PointCloud]]) -> bool:
    """Whether every cloud of every group holds the same set of images."""
    ids = [np.unique(c.sample_ids) for g in groups for c in g.values()]
    return all(len(i) == len(ids[0]) and np.array_equal(i, ids[0]) for i in ids)


def restrict(cloud: PointCloud, sample_ids: np.ndarray) -> PointCloud:
    """The points of ``cloud`` for ``sample_ids``, in that order (one point per image)."""
    order = np.argsort(cloud.sample_ids, kind="stable")
    pos = np.searchsorted(cloud.sample_ids[order], sample_ids)
    if np.any(pos >= len(order)) or not np.array_equal(
            cloud.sample_ids[order[np.minimum(pos, len(order) - 1)]], sample_ids):
        raise ShapeError(f"Cloud {cloud.layer!r} lacks some of the images asked for.")
    keep = order[pos]
    return replace(
        cloud, points=np.ascontiguousarray(cloud.points[keep]), rows=cloud.rows[keep],
        labels=cloud.labels[keep], sample_ids=cloud.sample_ids[keep],
        positions=None if cloud.positions is None else cloud.positions[keep],
        sampler="shared (CKA)",
    )


def shared_cka_clouds(
    sources: Sequence[tuple[Any, Sequence[str]]], *, kind: str, n_points: int | None,
    normalize: str, seed: int,
) -> tuple[list[dict[str, PointCloud]], dict[str, Any]]:
    """Per source, one cloud per layer on one shared image sample, and how it was chosen.

    ``sources`` are ``(store, store path or run folder, layer names)`` pairs (one for a
    model, two for a comparison). The images are those held by every layer of every source;
    ``n_points`` of them are drawn once (``numpy.random.default_rng(seed)``), or all when
    ``n_points`` is None or larger.
    """
    chosen = [resolve_layer_stores(src, list(names), kind) for src, names in sources]
    held = [np.unique(np.asarray(store.indices)) for per in chosen for store in per.values()]
    common = held[0]
    for ids in held[1:]:
        common = np.intersect1d(common, ids)
    union = np.unique(np.concatenate(held))
    if len(common) < 4:
        raise ShapeError(
            f"The layers compared share only {len(common)} images; CKA needs the same images "
            "in every layer (capture the same dataset for both models).")
    ids = common
    if n_points is not None and n_points < len(common):
        ids = np.sort(np.random.default_rng(seed).choice(common, n_points, replace=False))
    out = []
    for per in chosen:
        clouds = {}
        for name, store in per.items():  # one full layer in memory at a time
            full = build_cloud(_layer_from_store(store, name), kind, n_points=None,
                               normalize=normalize, seed=seed)
            clouds[name] = restrict(full, ids)
        out.append(clouds)
    info = {
        "how": "one shared random subsample of the images every layer holds, drawn once "
               "for all layers (the clouds' own samples hold different images)",
        "n_images": int(len(ids)), "n_common": int(len(common)), "n_union": int(len(union)),
        "seed": int(seed), "sample_ids": ids.tolist(),
    }
    return out, info


def own_sample_info(groups: Sequence[Mapping[str, PointCloud]]) -> dict[str, Any]:
    """How the CKA images were chosen when the clouds already share them."""
    first = next(iter(groups[0].values()))
    ids = np.sort(first.sample_ids)
    return {"how": "the clouds' own sample (the same images in every layer)",
            "n_images": int(len(ids)), "n_common": int(len(ids)), "n_union": int(len(ids)),
            "seed": int(first.seed), "sample_ids": ids.tolist()}


__all__ = ["own_sample_info", "restrict", "same_images", "shared_cka_clouds"]
