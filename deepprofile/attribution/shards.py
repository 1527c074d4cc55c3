"""The per-image part of :func:`~deepprofile.attribution.pipeline.run_attribution`, by shard.

Every map of an image depends on that image alone (and on the settings), so the maps
are computed shard by shard (a fixed range of images): in the command's process, or as
Dask tasks (:mod:`deepprofile.attribution.distributed`). The shards are the same
whatever runs them, so the maps are too. What needs every image (robustness, manifold
alignment, noisy accuracy, the per-node statistics) stays in the command's process.

Seeds: the SDE noise field of draw ``d`` is seeded by ``(seed, d, site)`` and shared by
all images (it is one noisy network), so it does not depend on the shard; BIG's PGD
search has no random start; SmoothGrad's and GradientShap's noise is seeded per captum
batch with ``seed + first image of the shard + batch``, so it depends on the shard size
(recorded in the store's identity), not on where the shard ran.

The maps of the noisy fine-tuned model and of the rows chosen from mapper nodes are map
sets (:mod:`deepprofile.attribution.mapsets`) computed the same way, shard by shard
(:func:`compute_set_shard`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from deepprofile.attribution.methods import attribute, predict
from deepprofile.attribution.store import BOUNDARY_FIELDS, NORMS

#: Radii of BIG's boundary search per norm.
BIG_EPS = {"L2": (0.5, 1.0, 2.0, 4.0, 8.0), "Linf": (0.02, 0.05, 0.1, 0.2, 0.4)}
BIG_STEPS = 8
SMOOTHGRAD_SAMPLES = 8
SHAP_SAMPLES = 8


@dataclass(frozen=True)
class MapSettings:
    """Everything that shapes a shard's maps, JSON-ready (part of the store identity)."""

    base: str
    short: str
    n_steps: int
    n_draws: int
    sigmas: tuple[float, ...]
    noise_mode: str
    seed: int
    smoothgrad_stdev: float
    boundary: bool
    cam_layer: str | None
    residual: bool
    big_eps: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(BIG_EPS))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MapSettings:
        data = dict(data)
        data["sigmas"] = tuple(float(s) for s in data["sigmas"])
        data["big_eps"] = {k: tuple(v) for k, v in data["big_eps"].items()}
        return cls(**data)

    @property
    def method_kw(self) -> dict[str, Any]:
        return {"n_steps": self.n_steps} if self.base == "integrated_gradients" else {}

    @property
    def positive_sigmas(self) -> list[float]:
        return [float(s) for s in self.sigmas if s > 0]

    def labels(self) -> dict[str, str]:
        """Map key -> label, in the order the maps are made."""
        s = self.short
        out = {s: f"{s} (plain)", "saliency": "saliency", "input_x_gradient": "input x gradient",
               "smoothgrad": "SmoothGrad", "gradient_shap": "GradientShap"}
        if self.cam_layer:
            out[f"gradcam:{self.cam_layer}"] = f"Grad-CAM ({self.cam_layer})"
        if self.residual:
            for sigma in self.positive_sigmas:
                out[f"sde_{s}:{sigma:g}"] = f"SDE-{s} σ={sigma:g}"
        if self.boundary:
            out["big"] = "BIG (boundary IG)"
        return out

    def map_shapes(self, image_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """Shape of one image's map per key (Grad-CAM: one channel, upsampled)."""
        return {key: ((1, *image_shape[-2:]) if key.startswith("gradcam:") else image_shape)
                for key in self.labels()}

    def variance_keys(self) -> list[str]:
        return [k for k in self.labels() if k.startswith("sde_")]


def map_meta(label: str, res: Any) -> dict[str, Any]:
    """How one map set was made (the result's ``methods[key]``, without statistics)."""
    return {"label": label, "method": res.method, "params": res.params,
            "baseline": res.baseline, "target_mode": res.target_mode, "layer": res.layer,
            "n_draws": res.n_draws, "sde": res.sde}


def _shard_free(key: str, meta: dict[str, Any], settings: MapSettings) -> dict[str, Any]:
    """``meta`` without what differs between shards (the per-shard noise seed)."""
    if key in ("smoothgrad", "gradient_shap") or (
            key == settings.short and settings.base in ("smoothgrad", "gradient_shap")):
        meta = {**meta, "params": {**meta["params"], "seed": settings.seed,
                                   "noise_seed": "seed + first image of the shard + batch"}}
    return meta


def compute_shard(model: nn.Module, x: torch.Tensor, settings: MapSettings,
                  start: int) -> dict[str, Any]:
    """Every map of the images ``x`` (the shard beginning at image ``start``).

    Returns ``targets``/``predictions`` (the model's predictions, the maps' targets),
    ``maps`` and ``variance`` per key, ``convergence_delta`` (IG), ``sigma0_equal`` (per
    image: SDE at sigma 0 reproduced the plain map bit for bit), ``boundary`` (BIG's search
    per image) and ``meta`` (per key, as in the result's ``methods``). Runs under the
    memory budget of the caller's context.
    """
    from deepprofile.attribution.boundary import big_attribute, find_boundary
    from deepprofile.attribution.sde import sde_attribute

    s = settings
    labels = s.labels()
    preds = predict(model, x).numpy()
    targets = torch.from_numpy(preds)
    noise_seed = s.seed + int(start)  # SmoothGrad / GradientShap: see the module docstring
    maps: dict[str, Any] = {}
    maps[s.short] = attribute(
        model, x, method=s.base, target=targets,
        seed=noise_seed if s.base in ("smoothgrad", "gradient_shap") else s.seed,
        return_convergence_delta=s.base == "integrated_gradients", **s.method_kw)
    maps["saliency"] = attribute(model, x, method="saliency", target=targets)
    maps["input_x_gradient"] = attribute(model, x, method="input_x_gradient", target=targets)
    maps["smoothgrad"] = attribute(model, x, method="smoothgrad", target=targets,
                                   seed=noise_seed, nt_samples=SMOOTHGRAD_SAMPLES,
                                   stdevs=s.smoothgrad_stdev)
    maps["gradient_shap"] = attribute(model, x, method="gradient_shap", target=targets,
                                      seed=noise_seed, n_samples=SHAP_SAMPLES)
    if s.cam_layer:
        maps[f"gradcam:{s.cam_layer}"] = attribute(
            model, x, method="layer_gradcam", layer=s.cam_layer, target=targets, upsample=True)
    plain = maps[s.short].attributions
    sigma0 = np.zeros(len(x), bool)
    for sigma in s.sigmas if s.residual else ():
        res = sde_attribute(model, x, sigma=float(sigma), n_draws=s.n_draws, mode=s.noise_mode,
                            seed=s.seed, method=s.base, target=targets, **s.method_kw)
        if sigma == 0:
            sigma0 = np.array([np.array_equal(a, b) for a, b in zip(res.attributions, plain,
                                                                     strict=True)])
        else:
            maps[f"sde_{s.short}:{float(sigma):g}"] = res
    boundary: dict[str, np.ndarray] = {}
    search_params: dict[str, Any] = {}
    if s.boundary:
        search = find_boundary(model, x, eps=s.big_eps, steps=BIG_STEPS, seed=s.seed)
        maps["big"] = big_attribute(model, x, target=targets, n_steps=s.n_steps, search=search,
                                    seed=s.seed)
        boundary = {
            "found": search.found.astype(np.uint8), "eps": search.eps.astype(np.float64),
            "norm": np.array([NORMS.index(n) for n in search.norm], np.int8),
            "distance": search.distance.astype(np.float64),
            "original": search.original.astype(np.int64),
            "adversarial": search.adversarial.astype(np.int64),
        }
        assert set(boundary) == set(BOUNDARY_FIELDS)
        search_params = dict(search.params)
    delta = maps[s.short].convergence_delta
    return {
        "targets": preds.astype(np.int64), "predictions": preds.astype(np.int64),
        "maps": {k: maps[k].attributions for k in labels},
        "variance": {k: maps[k].variance for k in s.variance_keys()},
        "convergence_delta": (np.full(len(x), np.nan, np.float32) if delta is None
                              else np.asarray(delta, np.float32)),
        "sigma0_equal": sigma0,
        "boundary": boundary,
        "meta": {"methods": {k: _shard_free(k, map_meta(labels[k], maps[k]), s)
                             for k in labels},
                 "boundary_params": search_params},
    }


# -- map sets (deepprofile.attribution.mapsets): the fine-tuned model's maps, node maps ---
def set_labels(kind: str, settings: MapSettings) -> dict[str, str]:
    """Map key -> label of a map set of ``kind`` (``finetuned`` or ``nodes``)."""
    s = settings.short
    if kind == "finetuned":
        return {f"sde_{s}_ft:{sigma:g}": f"SDE-{s} σ={sigma:g} (noisy fine-tuned)"
                for sigma in settings.positive_sigmas}
    if kind == "nodes":
        return {s: f"{s} (mapper node members)"}
    raise ValueError(f"unknown map set kind {kind!r}")


def set_variance_keys(kind: str, settings: MapSettings) -> list[str]:
    """The keys of a map set that have a variance (the SDE-smoothed ones)."""
    return list(set_labels(kind, settings)) if kind == "finetuned" else []


def set_spec(kind: str, settings: MapSettings) -> dict[str, Any]:
    """What the shards of a map set compute (stored in the set; read back by workers)."""
    return {"kind": kind, "settings": settings.to_dict()}


def compute_set_shard(model: nn.Module, x: torch.Tensor, spec: Mapping[str, Any], start: int,
                      targets: torch.Tensor | None) -> dict[str, Any]:
    """The maps of a map set's shard (the images ``x``, beginning at its row ``start``).

    ``finetuned``: ``model`` is the noisy fine-tuned model, SDE-smoothed base method at
    every positive sigma, ``targets`` the run model's predictions. ``nodes``: ``model`` is
    the run model, the base method with the prediction as target (SmoothGrad /
    GradientShap noise seeded with ``seed + start``, as in :func:`compute_shard`).
    Returns ``maps``, ``variance`` (per key) and ``meta`` (``methods``: per key).
    """
    from deepprofile.attribution.sde import sde_attribute

    kind = spec["kind"]
    s = MapSettings.from_dict(spec["settings"])
    labels = set_labels(kind, s)
    maps: dict[str, Any] = {}
    if kind == "finetuned":
        for sigma, key in zip(s.positive_sigmas, labels, strict=True):
            maps[key] = sde_attribute(model, x, sigma=sigma, n_draws=s.n_draws,
                                      mode=s.noise_mode, seed=s.seed, method=s.base,
                                      target=targets, **s.method_kw)
        meta = {k: map_meta(labels[k], maps[k]) for k in labels}
    else:
        noisy = s.base in ("smoothgrad", "gradient_shap")
        maps[s.short] = attribute(model, x, method=s.base, target="prediction",
                                  seed=s.seed + int(start) if noisy else s.seed, **s.method_kw)
        meta = {s.short: _shard_free(s.short, map_meta(labels[s.short], maps[s.short]), s)}
    return {"maps": {k: maps[k].attributions for k in labels},
            "variance": {k: maps[k].variance for k in labels if maps[k].variance is not None},
            "meta": {"methods": meta}}
