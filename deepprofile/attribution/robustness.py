"""Explanation robustness: how much attributions move when the input barely moves.

Map comparisons follow Ghorbani et al. (AAAI 2019) and Quantus: top-k intersection,
Spearman and Kendall rank correlation and centre-of-mass shift between the saliency
maps (absolute attributions summed over channels) of an input and of a perturbed
input that keeps the prediction. Max-sensitivity and infidelity are captum's
(``captum.metrics.sensitivity_max`` / ``infidelity``). Total variation measures the
smoothness of one map.

What is ours: the map comparisons (small numpy functions, tested on hand-made maps),
the label-preserving random perturbation, and :func:`topk_attack`, Ghorbani et al.'s
top-k attribution attack on the simple-gradient map (ReLUs replaced by a softplus
surrogate so the map has a useful gradient), whose perturbed inputs are then explained
by every method (a transfer attack), and :func:`robustness_table`, which ties it
together into one comparison of methods.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

from deepprofile.attribution.methods import eval_mode, model_device, predict, seeded

Explainer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# -- comparisons of two maps ---------------------------------------------------------


def _flat(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).ravel()


def _k(k: int | float, size: int) -> int:
    if isinstance(k, float) and 0 < k < 1:
        return max(1, int(round(k * size)))
    k = int(k)
    if not 1 <= k <= size:
        raise ValueError(f"k must be in [1, {size}] (or a fraction in (0, 1)), got {k}")
    return k


def topk_intersection(a: np.ndarray, b: np.ndarray, k: int | float = 0.1) -> float:
    """Share of the ``k`` largest features of ``a`` that are also among the ``k`` largest of ``b``.

    Features are ranked by value (pass saliency maps, i.e. absolute values); ``k`` is a
    count or a fraction of the features. Ties are broken by position (stable sort).
    """
    fa, fb = _flat(a), _flat(b)
    if fa.shape != fb.shape:
        raise ValueError(f"Maps differ in size: {fa.shape} vs {fb.shape}")
    kk = _k(k, fa.size)
    top_a = set(np.argsort(-fa, kind="stable")[:kk].tolist())
    top_b = set(np.argsort(-fb, kind="stable")[:kk].tolist())
    return len(top_a & top_b) / kk


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (scipy; NaN when a map is constant)."""
    res = stats.spearmanr(_flat(a), _flat(b))
    return float(res.statistic if hasattr(res, "statistic") else res.correlation)


def kendall(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b of two maps (scipy; NaN when a map is constant)."""
    return float(stats.kendalltau(_flat(a), _flat(b)).statistic)


def center_of_mass(m: np.ndarray) -> np.ndarray:
    """Centre of mass (row, column) of ``|m|`` for a 2-D map; NaN for an all-zero map."""
    w = np.abs(np.asarray(m, dtype=np.float64))
    if w.ndim != 2:
        raise ValueError(f"center_of_mass needs a 2-D map, got shape {w.shape}")
    total = w.sum()
    if total == 0:
        return np.array([np.nan, np.nan])
    rows, cols = np.indices(w.shape)
    return np.array([(rows * w).sum() / total, (cols * w).sum() / total])


def com_shift(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance (in pixels) between the centres of mass of two 2-D maps."""
    return float(np.linalg.norm(center_of_mass(a) - center_of_mass(b)))


def total_variation(m: np.ndarray, normalize: bool = True) -> float:
    """Anisotropic total variation of a 2-D map: sum of |vertical| + |horizontal| differences.

    With ``normalize`` it is divided by ``sum(|m|)``, so it does not depend on the map's
    scale (lower = smoother). A constant map has 0.
    """
    m = np.asarray(m, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"total_variation needs a 2-D map, got shape {m.shape}")
    tv = np.abs(np.diff(m, axis=0)).sum() + np.abs(np.diff(m, axis=1)).sum()
    if normalize:
        total = np.abs(m).sum()
        return float(tv / total) if total > 0 else 0.0
    return float(tv)


def compare_maps(
    a: np.ndarray, b: np.ndarray, k: int | float = 0.1
) -> dict[str, np.ndarray]:
    """Per-image comparisons of two batches of 2-D saliency maps (N, H, W)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"Need two (N, H, W) batches of the same shape, got {a.shape}, {b.shape}")
    pairs = list(zip(a, b, strict=True))
    return {
        "topk_intersection": np.array([topk_intersection(x, y, k) for x, y in pairs]),
        "spearman": np.array([spearman(x, y) for x, y in pairs]),
        "kendall": np.array([kendall(x, y) for x, y in pairs]),
        "com_shift": np.array([com_shift(x, y) for x, y in pairs]),
    }


def to_maps(attributions: torch.Tensor | np.ndarray) -> np.ndarray:
    """Saliency maps (N, H, W): absolute attributions summed over channels."""
    a = attributions
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.abs(np.asarray(a, dtype=np.float64))
    if a.ndim == 4:
        return a.sum(axis=1)
    if a.ndim == 3:
        return a
    raise ValueError(f"Expected (N, C, H, W) or (N, H, W) attributions, got shape {a.shape}")


# -- perturbations -----------------------------------------------------------------


def random_perturbation(
    model: nn.Module,
    inputs: torch.Tensor,
    eps: float,
    *,
    seed: int = 0,
    tries: int = 10,
) -> tuple[torch.Tensor, np.ndarray]:
    """Uniform noise in the Linf ball of radius ``eps`` that keeps each prediction.

    Up to ``tries`` draws per image; returns the perturbed inputs and a mask of the
    images whose prediction was kept (the others keep their last draw).
    """
    x = torch.as_tensor(inputs).float()
    orig = predict(model, x)
    out = x.clone()
    ok = np.zeros(len(x), bool)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(tries):
        todo = np.flatnonzero(~ok)
        if len(todo) == 0:
            break
        noise = (torch.rand((len(todo), *x.shape[1:]), generator=gen) * 2 - 1) * eps
        cand = x[todo] + noise
        keep = (predict(model, cand) == orig[todo]).numpy()
        out[todo] = cand
        ok[todo[keep]] = True
    return out, ok


def softplus_surrogate(model: nn.Module, beta: float = 10.0) -> nn.Module:
    """A copy of ``model`` with every ``nn.ReLU`` replaced by ``Softplus(beta)``.

    A ReLU network's gradient map is piecewise constant in the input, so attacks on it
    need this smooth surrogate (Ghorbani et al. 2019; Dombrowski et al. 2019).
    """
    surrogate = copy.deepcopy(model)
    for parent in surrogate.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Softplus(beta=beta))
    return surrogate.eval()


def topk_attack(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    eps: float,
    *,
    k: int | float = 0.1,
    steps: int = 20,
    step_size: float | None = None,
    beta: float = 10.0,
    seed: int = 0,
) -> tuple[torch.Tensor, np.ndarray]:
    """Ghorbani et al.'s top-k attack on the gradient map, within an Linf ball of ``eps``.

    Each step moves the input (signed gradient) to reduce the share of the softplus
    surrogate's saliency that falls on the original top-k pixels; steps that would
    change the (real) model's prediction are rejected per image. Returns the perturbed
    inputs and a mask of images whose perturbation differs from the input.
    """
    x0 = torch.as_tensor(inputs).float()
    device = model_device(model)
    surrogate = softplus_surrogate(model, beta).to(device)
    for p in surrogate.parameters():
        p.requires_grad_(False)
    t = torch.as_tensor(targets).long().to(device)
    orig = predict(model, x0).to(device)
    step = step_size if step_size is not None else 2.5 * eps / steps

    def attack(x0d: torch.Tensor, t: torch.Tensor, orig: torch.Tensor) -> torch.Tensor:
        def sal(x: torch.Tensor, create_graph: bool) -> torch.Tensor:
            out = surrogate(x).gather(1, t[:, None]).sum()
            (g,) = torch.autograd.grad(out, x, create_graph=create_graph)
            return g.abs().sum(1) if g.ndim == 4 else g.abs()

        xin = x0d.clone().requires_grad_(True)
        base = sal(xin, False).detach()
        flat = base.reshape(len(base), -1)
        kk = _k(k, flat.shape[1])
        mask = torch.zeros_like(flat)
        mask.scatter_(1, flat.topk(kk, dim=1).indices, 1.0)
        mask = mask.reshape(base.shape)
        x_adv = x0d.clone()
        for _ in range(steps):
            xa = x_adv.clone().requires_grad_(True)
            s = sal(xa, True)
            share = (s * mask).flatten(1).sum(1) / (s.flatten(1).sum(1) + 1e-12)
            (g,) = torch.autograd.grad(share.sum(), xa)
            cand = x_adv - step * g.sign()
            cand = x0d + (cand - x0d).clamp(-eps, eps)
            with torch.no_grad():
                keep = model(cand).argmax(1) == orig
            x_adv = torch.where(keep.view(-1, *[1] * (x0d.ndim - 1)), cand, x_adv).detach()
        return x_adv

    # every image is attacked on its own (eval mode), so chunks under the memory budget
    # give the same perturbations as one batch
    from deepprofile.attribution.memory import DOUBLE_BACKWARD_FACTOR, bounded_batch

    x_all = x0.to(device)
    chunk = bounded_batch(surrogate, x_all[:1], len(x_all), factor=DOUBLE_BACKWARD_FACTOR)
    parts = []
    with seeded(seed), torch.enable_grad(), eval_mode(model):
        for start in range(0, len(x_all), chunk):
            sl = slice(start, start + chunk)
            parts.append(attack(x_all[sl], t[sl], orig[sl]))
    x_adv = torch.cat(parts) if parts else x_all.clone()
    moved = (x_adv - x_all).flatten(1).abs().amax(1) > 0
    return x_adv.cpu(), moved.cpu().numpy()


# -- the comparison table ----------------------------------------------------------


@dataclass(frozen=True)
class RobustnessResult:
    """Robustness of several attribution methods on one set of images.

    ``rows``: one per (method, perturbation) with the mean and standard deviation of
    each map comparison over the images whose prediction the perturbation kept
    (``n_kept`` of ``n_images``; ``per_image`` holds NaN for the others);
    ``sensitivity`` / ``infidelity`` / ``total_variation``: per method, mean and per-image
    values; ``params``: eps, k and sample counts.
    """

    rows: list[dict[str, Any]]
    sensitivity: dict[str, dict[str, Any]]
    infidelity: dict[str, dict[str, Any]]
    total_variation: dict[str, dict[str, Any]]
    per_image: dict[str, dict[str, list[float]]]
    perturbations: dict[str, dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from deepprofile.results import jsonable

        return {"kind": "robustness", **jsonable({
            "rows": self.rows, "sensitivity": self.sensitivity, "infidelity": self.infidelity,
            "total_variation": self.total_variation, "per_image": self.per_image,
            "perturbations": self.perturbations, "params": self.params,
        })}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RobustnessResult:
        return cls(**{k: data[k] for k in (
            "rows", "sensitivity", "infidelity", "total_variation", "per_image",
            "perturbations", "params",
        )})

    def table(self) -> list[dict[str, Any]]:
        """One row per method: the means of every metric (perturbation-specific ones prefixed,
        with ``<perturbation>.n_kept``, the images whose prediction was kept)."""
        out: dict[str, dict[str, Any]] = {}
        for row in self.rows:
            r = out.setdefault(row["method"], {"method": row["method"]})
            for key in ("topk_intersection", "spearman", "kendall", "com_shift"):
                r[f"{row['perturbation']}.{key}"] = row[f"{key}_mean"]
            r[f"{row['perturbation']}.n_kept"] = row.get("n_kept")
        for name, r in out.items():
            r["max_sensitivity"] = self.sensitivity.get(name, {}).get("mean")
            r["infidelity"] = self.infidelity.get(name, {}).get("mean")
            r["total_variation"] = self.total_variation.get(name, {}).get("mean")
        return list(out.values())


def _nanstats(v: np.ndarray) -> tuple[float | None, float | None]:
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return None, None
    return float(v.mean()), float(v.std())


def _explain(fn: Explainer, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    out = fn(x, t)
    return out if isinstance(out, torch.Tensor) else torch.as_tensor(np.asarray(out))


def robustness_table(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor | np.ndarray,
    explainers: Mapping[str, Explainer],
    *,
    eps: float = 0.05,
    k: int | float = 0.1,
    perturbations: Sequence[str] = ("random", "topk_attack"),
    attack_steps: int = 10,
    sensitivity_samples: int = 3,
    sensitivity_images: int | None = None,
    sensitivity_radius: float | None = None,
    infidelity_samples: int = 16,
    infidelity_std: float | None = None,
    clean_attributions: Mapping[str, torch.Tensor | np.ndarray] | None = None,
    seed: int = 0,
) -> RobustnessResult:
    """Compare attribution methods' robustness on the same images and perturbations.

    ``explainers`` maps a method name to ``fn(inputs, targets) -> attributions`` (same
    shape as ``inputs``). ``clean_attributions`` may hold already computed attributions
    of ``inputs`` per method (saves one pass). Max-sensitivity uses captum's uniform
    Linf perturbation of radius ``sensitivity_radius`` (``eps`` by default) with
    ``sensitivity_samples`` draws; infidelity uses Gaussian perturbations of standard
    deviation ``infidelity_std`` (``eps``) with ``infidelity_samples`` draws, normalised.
    ``sensitivity_images`` limits max-sensitivity (the costliest metric: captum explains
    each image ``sensitivity_samples + 1`` times) to the first images.
    """
    from captum.metrics import infidelity, sensitivity_max

    x = torch.as_tensor(inputs).float()
    t = torch.as_tensor(np.asarray(targets)).long()
    known = {"random", "topk_attack"}
    if set(perturbations) - known:
        raise ValueError(f"perturbations must be among {sorted(known)}, got {perturbations}")
    perturbed: dict[str, torch.Tensor] = {}
    pinfo: dict[str, dict[str, Any]] = {}
    t_pert = time.perf_counter()
    kept: dict[str, np.ndarray] = {}
    original = predict(model, x).numpy()
    for name in perturbations:
        if name == "random":
            px, ok = random_perturbation(model, x, eps, seed=seed)
            pinfo[name] = {"kind": "uniform Linf noise, prediction kept", "eps": eps,
                           "n_label_kept": int(ok.sum())}
        else:
            px, ok = topk_attack(model, x, t, eps, k=k, steps=attack_steps, seed=seed)
            pinfo[name] = {"kind": "top-k attack on softplus-surrogate gradient (Ghorbani)",
                           "eps": eps, "steps": attack_steps, "n_moved": int(ok.sum())}
        # "prediction kept" is checked on the perturbed inputs themselves, for every kind
        kept[name] = predict(model, px).numpy() == original
        pinfo[name].update(n_kept=int(kept[name].sum()), n_images=int(len(x)),
                           prediction_kept=kept[name].tolist())
        perturbed[name] = px
    perturb_seconds = round(time.perf_counter() - t_pert, 3)

    rows: list[dict[str, Any]] = []
    per_image: dict[str, dict[str, list[float]]] = {}
    sens: dict[str, dict[str, Any]] = {}
    infid: dict[str, dict[str, Any]] = {}
    tv: dict[str, dict[str, Any]] = {}
    device = model_device(model)
    n_sens = len(x) if sensitivity_images is None else max(1, min(sensitivity_images, len(x)))
    s_radius = eps if sensitivity_radius is None else sensitivity_radius
    i_std = eps if infidelity_std is None else infidelity_std

    from deepprofile.attribution.memory import FORWARD_FACTOR, samples_per_pass

    cap = samples_per_pass(model, x[:1].to(device), factor=FORWARD_FACTOR)
    # captum's infidelity runs n_images x infidelity_samples forwards at once unless split
    infid_batch = None
    if cap is not None and cap < len(x) * infidelity_samples:
        infid_batch = len(x) * max(1, cap // len(x))

    def noise_bank(mi: int) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        # all the noise is drawn up front, (image, sample)-indexed, so that captum's split
        # of the samples into memory-bounded batches hands every sample the same noise
        gen = torch.Generator().manual_seed(seed + 211 * mi)
        bank = torch.randn((len(x), max(infidelity_samples, 1), *x.shape[1:]), generator=gen)
        used = [0]

        def perturb_fn(inp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            s = len(inp) // len(x)
            noise = bank[:, used[0] : used[0] + s].reshape(inp.shape).to(inp.device) * i_std
            used[0] += s
            return noise, inp - noise

        return perturb_fn

    seconds: dict[str, float] = {}
    for mi, (name, fn) in enumerate(explainers.items()):
        t_method = time.perf_counter()
        if clean_attributions is not None and name in clean_attributions:
            clean = torch.as_tensor(np.asarray(clean_attributions[name])).float()
        else:
            clean = _explain(fn, x, t).float()
        clean_maps = to_maps(clean)
        tvs = np.array([total_variation(m) for m in clean_maps])
        tv[name] = {"mean": _nanstats(tvs)[0], "values": tvs.tolist()}
        for pname, px in perturbed.items():
            maps = to_maps(_explain(fn, px, t))
            comp = compare_maps(clean_maps, maps, k)
            mask = kept[pname]
            row = {"method": name, "perturbation": pname, "n_kept": int(mask.sum()),
                   "n_images": int(len(mask))}
            for key, vals in comp.items():
                vals = np.where(mask, vals, np.nan)  # flipped predictions are left out
                row[f"{key}_mean"], row[f"{key}_std"] = _nanstats(vals)
                per_image.setdefault(name, {})[f"{pname}.{key}"] = vals.tolist()
            rows.append(row)
        if sensitivity_samples > 0:

            def expl(inp: Any, target: torch.Tensor, _fn: Explainer = fn) -> Any:
                # captum passes (and expects back) a tuple of tensors, like its methods.
                if isinstance(inp, tuple):
                    return (_explain(_fn, inp[0], target).to(inp[0].device),)
                return _explain(_fn, inp, target).to(inp.device)

            with seeded(seed + 101 * mi):
                s = sensitivity_max(
                    expl, x[:n_sens].to(device), perturb_radius=s_radius,
                    n_perturb_samples=sensitivity_samples, target=t[:n_sens].to(device),
                ).detach().cpu().numpy()
            sens[name] = {"mean": _nanstats(s)[0], "values": s.tolist(),
                          "radius": s_radius, "n_samples": sensitivity_samples}
        if infidelity_samples > 0:
            with seeded(seed + 211 * mi), eval_mode(model):
                inf = infidelity(
                    model, noise_bank(mi), x.to(device), clean.to(device), target=t.to(device),
                    n_perturb_samples=infidelity_samples, normalize=True,
                    max_examples_per_batch=infid_batch,
                ).detach().cpu().numpy()
            infid[name] = {"mean": _nanstats(inf)[0], "values": inf.tolist(),
                           "std": i_std, "n_samples": infidelity_samples}
        seconds[name] = round(time.perf_counter() - t_method, 3)
    return RobustnessResult(
        rows=rows, sensitivity=sens, infidelity=infid, total_variation=tv,
        per_image=per_image, perturbations=pinfo,
        params={"eps": eps, "k": k, "perturbations": list(perturbations),
                "n_images": int(len(x)), "seed": seed, "map": "sum over channels of |attr|",
                "sensitivity_images": int(n_sens), "seconds": seconds,
                "perturbation_seconds": perturb_seconds},
    )
