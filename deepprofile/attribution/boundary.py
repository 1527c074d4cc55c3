"""Boundary-based integrated gradients (BIG; Wang et al., ICML 2022).

Instead of a fixed baseline (black image), BIG integrates gradients from the nearest
point on the decision boundary. The boundary point is found with PGD run at increasing
radii (Linf: captum's ``captum.robust.PGD``; L2: :func:`pgd_l2`, see there why): for
each image the smallest radius whose adversarial example changes the prediction gives
the point (closest in L2 over the norms tried). IG from that point is captum's
IntegratedGradients. Images for which no radius flips the prediction are reported
(``found == False``) and, by default, explained from the zero baseline instead
(``fallback="zeros"``) or left as NaN (``fallback="nan"``).

The radius sweep, the per-image choice of the closest flip, the L2 attack and the
fallback are ours; captum has the Linf attack and IG but not BIG itself.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from deepprofile.attribution.methods import (
    AttributionMaps,
    attribute,
    eval_mode,
    model_device,
    predict,
    resolve_targets,
    seeded,
)

#: Default radii of the sweep, in input units (deepprofile's datasets are standardised).
DEFAULT_EPS: dict[str, tuple[float, ...]] = {
    "L2": (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
    "Linf": (0.01, 0.02, 0.05, 0.1, 0.2, 0.4),
}


@dataclass(frozen=True, eq=False)
class BoundarySearch:
    """Per image: the boundary point, whether one was found, its radius, norm and distance."""

    points: np.ndarray
    found: np.ndarray
    eps: np.ndarray
    norm: list[str | None]
    distance: np.ndarray
    original: np.ndarray
    adversarial: np.ndarray
    params: dict[str, Any]

    @property
    def n_found(self) -> int:
        return int(self.found.sum())

    def summary(self) -> dict[str, Any]:
        """JSON-ready per-image report (without the points themselves)."""
        return {
            "found": self.found.tolist(),
            "n_found": self.n_found,
            "n_images": int(len(self.found)),
            "not_found": np.flatnonzero(~self.found).tolist(),
            "eps": [None if not np.isfinite(e) else float(e) for e in self.eps],
            "norm": list(self.norm),
            "distance_l2": [None if not np.isfinite(d) else float(d) for d in self.distance],
            "original_class": self.original.tolist(),
            "boundary_class": self.adversarial.tolist(),
            "params": dict(self.params),
        }


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, target, reduction="none")


def pgd_l2(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    radius: float,
    step_size: float,
    steps: int,
    lower: float = float("-inf"),
    upper: float = float("inf"),
) -> torch.Tensor:
    """Untargeted L2 PGD with normalised-gradient steps, projected on the L2 ball.

    Ours, not captum's: ``captum.robust.PGD(norm="L2")`` takes signed-gradient (Linf)
    steps and only projects them on the L2 ball, so it moves along ``sign(grad)`` and
    misses the nearest L2 boundary point (on a linear model it never reaches it). The
    Linf attack is captum's.
    """
    x = x.detach()
    delta = torch.zeros_like(x)
    view = (-1, *[1] * (x.ndim - 1))
    for _ in range(steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            loss = _cross_entropy(model(x + delta), target).sum()
            (grad,) = torch.autograd.grad(loss, delta)
        g_norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
        delta = delta.detach() + step_size * grad / g_norm
        d_norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
        delta = delta * torch.clamp(radius / d_norm, max=1.0)
        delta = (x + delta).clamp(lower, upper) - x
    return (x + delta).detach()


def find_boundary(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    classes: torch.Tensor | np.ndarray | None = None,
    norms: Sequence[str] = ("L2", "Linf"),
    eps: Mapping[str, Sequence[float]] | None = None,
    steps: int = 10,
    step_scale: float = 2.5,
    bounds: tuple[float, float] | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> BoundarySearch:
    """Nearest decision-boundary point of each input with PGD at increasing radii.

    For each norm, radii are tried in increasing order on the images not yet flipped
    (untargeted PGD away from ``classes``, the predictions by default; step size
    ``step_scale * eps / steps``). The first radius that changes the prediction wins;
    over several norms the flip closest in L2 is kept.
    """
    from captum.robust import PGD

    eps = {**DEFAULT_EPS, **(eps or {})}
    for nm in norms:
        if nm not in ("L2", "Linf"):
            raise ValueError(f"norm must be 'L2' or 'Linf', got {nm!r}")
    device = model_device(model)
    x_all = torch.as_tensor(inputs).float()
    n = len(x_all)
    orig = predict(model, x_all) if classes is None else torch.as_tensor(classes).long().cpu()
    points = x_all.clone()
    found = np.zeros(n, bool)
    best_eps = np.full(n, np.nan)
    best_norm: list[str | None] = [None] * n
    best_dist = np.full(n, np.inf)
    adv_class = orig.numpy().copy()
    lo, hi = bounds if bounds is not None else (float("-inf"), float("inf"))
    with eval_mode(model), seeded(seed):
        from deepprofile.attribution.memory import bounded_batch

        # PGD attacks each image on its own: a budget-bounded batch changes nothing
        batch_size = bounded_batch(model, x_all[:1].to(device), batch_size)
        # captum's default loss is -log(output), meant for probabilities; models give logits.
        attack = PGD(model, loss_func=_cross_entropy, lower_bound=lo, upper_bound=hi)
        for nm in norms:
            flipped_here = np.zeros(n, bool)
            for radius in sorted(float(e) for e in eps[nm]):
                todo = np.flatnonzero(~flipped_here)
                if len(todo) == 0:
                    break
                for start in range(0, len(todo), batch_size):
                    rows = todo[start : start + batch_size]
                    x = x_all[rows].to(device)
                    t = orig[rows].to(device)
                    step_size = step_scale * radius / steps
                    if nm == "Linf":
                        with warnings.catch_warnings():
                            warnings.filterwarnings(
                                "ignore", message=".*did not already require gradients")
                            adv = attack.perturb(
                                x, radius=radius, step_size=step_size, step_num=steps,
                                target=t, norm="Linf",
                            ).detach()
                    else:
                        adv = pgd_l2(model, x, t, radius, step_size, steps, lo, hi)
                    with torch.no_grad():
                        pred = model(adv).argmax(1).cpu()
                    adv = adv.cpu()
                    for j, r in enumerate(rows):
                        if int(pred[j]) == int(orig[r]):
                            continue
                        flipped_here[r] = True
                        dist = float(torch.linalg.vector_norm(adv[j] - x_all[r]))
                        if dist < best_dist[r]:
                            best_dist[r], best_eps[r], best_norm[r] = dist, radius, nm
                            points[r] = adv[j]
                            adv_class[r] = int(pred[j])
                            found[r] = True
    best_dist[~found] = np.nan
    return BoundarySearch(
        points=points.numpy(),
        found=found,
        eps=best_eps,
        norm=best_norm,
        distance=best_dist,
        original=orig.numpy().astype(np.int64),
        adversarial=adv_class.astype(np.int64),
        params={
            "norms": list(norms), "eps": {k: list(map(float, eps[k])) for k in norms},
            "steps": steps, "step_scale": step_scale,
            "bounds": None if bounds is None else [float(lo), float(hi)], "seed": seed,
            "attack": "untargeted PGD (Linf: captum.robust.PGD; L2: normalised-gradient steps)",
        },
    )


def big_attribute(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    target: Any = "prediction",
    labels: Any = None,
    n_steps: int = 50,
    norms: Sequence[str] = ("L2", "Linf"),
    eps: Mapping[str, Sequence[float]] | None = None,
    steps: int = 10,
    bounds: tuple[float, float] | None = None,
    fallback: str = "zeros",
    seed: int = 0,
    batch_size: int = 32,
    search: BoundarySearch | None = None,
    **kwargs: Any,
) -> AttributionMaps:
    """Boundary-based integrated gradients: IG from each image's nearest boundary point.

    The boundary is searched away from the model's prediction; the attribution target
    is ``target`` (the prediction by default). ``extra["boundary"]`` reports, per image,
    whether a point was found, its radius, norm and distance, and which baseline was used
    (``baseline_used``: ``"boundary"``, ``"zeros"`` for a fallback, ``"none"`` when the map
    is NaN). ``baselines`` holds the baselines IG actually started from (zeros for
    ``fallback="zeros"``; NaN where ``fallback="nan"`` left the map out). Pass ``search``
    to reuse a :func:`find_boundary` result.
    """
    if fallback not in ("zeros", "nan"):
        raise ValueError(f"fallback must be 'zeros' or 'nan', got {fallback!r}")
    x = torch.as_tensor(inputs).float()
    targets, target_mode = resolve_targets(model, x, target, labels)
    if search is None:
        search = find_boundary(
            model, x, norms=norms, eps=eps, steps=steps, bounds=bounds, seed=seed,
            batch_size=max(batch_size, 64),
        )
    base = torch.from_numpy(search.points.copy())
    base[torch.from_numpy(~search.found)] = 0.0
    maps = attribute(
        model, x, method="integrated_gradients", target=targets, baselines=base,
        n_steps=n_steps, seed=seed, batch_size=batch_size, **kwargs,
    )
    attributions = maps.attributions
    used = base.numpy()
    if fallback == "nan" and not search.found.all():
        attributions = attributions.copy()
        attributions[~search.found] = np.nan
        used = used.copy()
        used[~search.found] = np.nan  # no map, so no baseline
    fallback_kind = "zeros" if fallback == "zeros" else "none"
    summary = {**search.summary(), "fallback": np.flatnonzero(~search.found).tolist(),
               "baseline_used": ["boundary" if f else fallback_kind for f in search.found]}
    return AttributionMaps(
        method="big",
        params={**maps.params, **search.params, "fallback": fallback},
        attributions=attributions,
        targets=maps.targets,
        target_mode=target_mode,
        baseline="boundary (PGD); " + ("zeros" if fallback == "zeros" else "NaN")
        + " where none was found",
        baselines=used,
        layer=None,
        model=maps.model,
        sample_indices=maps.sample_indices,
        extra={"boundary": summary},
    )
