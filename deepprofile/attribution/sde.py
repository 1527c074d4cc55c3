"""SDE-smoothed attributions (Jha et al., IJCAI 2021), built from the paper's idea.

A residual network computes ``x_{k+1} = x_k + f_k(x_k)``: an Euler step of an ODE with
``dt`` folded into the branch ``f_k``. Adding diffusion noise to every residual branch,
``x_{k+1} = x_k + f_k(x_k) + sigma * sqrt(dt) * eps_k`` (additive) or
``... + sigma * sqrt(dt) * eps_k * f_k(x_k)`` (multiplicative), turns it into an
Euler-Maruyama step of a neural SDE. Attributions averaged over draws of the noise are
smoother and more robust than those of the deterministic network.

There is no public code for the paper; captum has nothing like it. What is ours:

* :class:`ResidualNoise`: forward hooks on the residual branch outputs (torchvision
  BasicBlock ``bn2`` / Bottleneck ``bn3``, i.e. the branch just before the addition,
  so ResNet, ResNeXt and WideResNet; modules with a ``branch`` submodule such as
  deepprofile's SmallResNet). Hooks exist only inside the ``with`` block.
* One *draw* is one realisation of the Brownian increments, fixed for every input and
  every forward pass of that draw (shape (1, C, H, W), broadcast over the batch). Each
  draw is therefore a deterministic network: integrated gradients stay complete per
  draw and the numbers do not depend on how captum batches the integration path.
  Training (:func:`noisy_finetune`) instead draws fresh noise per sample and forward.
* :func:`sde_attribute`: mean and variance (Welford, so identical draws give the
  plain attribution bit for bit) of any :func:`~deepprofile.attribution.methods.attribute`
  method over ``n_draws`` seeded draws.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from deepprofile.attribution.methods import (
    AttributionMaps,
    attribute,
    canonical_method,
    eval_mode,
    model_device,
    resolve_targets,
)
from deepprofile.capture.hooks import register_forward_hooks, remove_hooks
from deepprofile.errors import DeepProfileError

NOISE_MODES = ("additive", "multiplicative")


class NotResidualError(DeepProfileError, TypeError):
    """The model has no residual blocks, so it has no branches to make stochastic."""


@dataclass(frozen=True)
class ResidualSite:
    """One residual branch: the block's path, the module whose output gets the noise."""

    block: str
    module: str
    kind: str  # "basic" (bn2), "bottleneck" (bn3) or "branch"


def residual_sites(model: nn.Module) -> list[ResidualSite]:
    """Residual branches of ``model``, in model order.

    Recognised: torchvision ``BasicBlock`` (noise on ``bn2``'s output) and ``Bottleneck``
    (``bn3``), which covers ResNet, ResNeXt and WideResNet, and any module with a
    ``branch`` submodule next to a ``shortcut`` (deepprofile's ``ResidualBlock``).
    Raises :class:`NotResidualError` when there is none (VGG, plain CNNs, MLPs).
    """
    from torchvision.models.resnet import BasicBlock, Bottleneck

    sites = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, BasicBlock):
            sites.append(ResidualSite(name, f"{prefix}bn2", "basic"))
        elif isinstance(module, Bottleneck):
            sites.append(ResidualSite(name, f"{prefix}bn3", "bottleneck"))
        elif isinstance(getattr(module, "branch", None), nn.Module) and hasattr(
            module, "shortcut"
        ):
            sites.append(ResidualSite(name, f"{prefix}branch", "branch"))
    if not sites:
        raise NotResidualError(
            f"{type(model).__name__} has no residual blocks, so SDE smoothing has no branch "
            "to add noise to. It supports torchvision ResNet/ResNeXt/WideResNet (BasicBlock, "
            "Bottleneck) and blocks with `branch` and `shortcut` submodules (deepprofile's "
            "SmallResNet). For other models (e.g. VGG) use method='smoothgrad' instead."
        )
    return sites


def _check_noise(sigma: float, mode: str) -> None:
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    if mode not in NOISE_MODES:
        raise ValueError(f"mode must be one of {NOISE_MODES}, got {mode!r}")


@functools.lru_cache(maxsize=4096)
def _draw_seed(seed: int, draw: int, site: int) -> int:
    # cached: a SeedSequence costs ~0.15 ms and every call of sde_attribute (one per batch
    # in the pipelines) asks for the same (seed, draw, site) triples again
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, draw, site]).generate_state(1)[0])


class ResidualNoise:
    """Context manager that adds diffusion noise to every residual branch of a model.

    ``with ResidualNoise(model, sigma=0.1) as noise: noise.set_draw(d); model(x)``.
    All hooks are removed on exit, whatever happened inside; the model is otherwise
    untouched (no weights or modes change).

    Parameters
    ----------
    sigma:
        Diffusion coefficient; 0 leaves every output exactly as it was.
    mode:
        ``"additive"``: ``branch + sigma*sqrt(dt)*eps``; ``"multiplicative"``:
        ``branch + sigma*sqrt(dt)*eps*branch``.
    dt:
        Euler-Maruyama step; ``1 / number of residual blocks`` by default.
    per_forward:
        False (attribution): one fixed noise field per draw, shared by all inputs and
        forward passes. True (training): fresh noise for every sample and forward.
    """

    def __init__(
        self,
        model: nn.Module,
        sigma: float,
        *,
        mode: str = "additive",
        dt: float | None = None,
        seed: int = 0,
        per_forward: bool = False,
    ) -> None:
        _check_noise(sigma, mode)
        self.model = model
        self.sigma = float(sigma)
        self.mode = mode
        self.sites = residual_sites(model)
        self.dt = float(dt) if dt is not None else 1.0 / len(self.sites)
        if self.dt <= 0:
            raise ValueError(f"dt must be > 0, got {self.dt}")
        self.seed = int(seed)
        self.per_forward = per_forward
        self.draw = 0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._cache: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}
        # (eps, scale, scale * eps) per cache key: the hook adds the product computed once
        self._scaled: dict[tuple[int, tuple[int, ...]], tuple[torch.Tensor, float, torch.Tensor]]
        self._scaled = {}
        self._generators: dict[int, torch.Generator] = {}

    @property
    def scale(self) -> float:
        return self.sigma * math.sqrt(self.dt)

    def set_draw(self, draw: int) -> None:
        """Switch to draw ``draw`` (a different, reproducible noise realisation)."""
        self.draw = int(draw)
        self._cache.clear()
        self._scaled.clear()
        self._generators.clear()

    def _scaled_noise(self, site: int, out: torch.Tensor) -> torch.Tensor:
        """``scale * eps`` for ``out``; for fixed draws computed once per draw and site."""
        if self.per_forward:
            return self.scale * self._noise(site, out)
        eps, scale = self._noise(site, out), self.scale
        key = (site, tuple(out.shape[1:]))
        cached = self._scaled.get(key)
        if cached is None or cached[0] is not eps or cached[1] != scale:
            cached = (eps, scale, scale * eps)
            self._scaled[key] = cached
        return cached[2]

    def _noise(self, site: int, out: torch.Tensor) -> torch.Tensor:
        if self.per_forward:
            gen = self._generators.get(site)
            if gen is None:
                gen = torch.Generator(device=out.device)
                gen.manual_seed(_draw_seed(self.seed, self.draw, site))
                self._generators[site] = gen
            return torch.randn(out.shape, generator=gen, device=out.device, dtype=out.dtype)
        key = (site, tuple(out.shape[1:]))
        eps = self._cache.get(key)
        if eps is None or eps.device != out.device or eps.dtype != out.dtype:
            gen = torch.Generator(device=out.device)
            gen.manual_seed(_draw_seed(self.seed, self.draw, site))
            eps = torch.randn(
                (1, *out.shape[1:]), generator=gen, device=out.device, dtype=out.dtype
            )
            self._cache[key] = eps
        return eps

    def _make_hook(self, site: int):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            scaled = self._scaled_noise(site, output)  # the same floats as scale * eps
            if self.mode == "additive":
                return output + scaled
            return output + scaled * output

        return hook

    def __enter__(self) -> ResidualNoise:
        if self._handles:
            raise RuntimeError("ResidualNoise is already active; do not nest the same one.")
        self._handles = register_forward_hooks(
            self.model, [(site.module, self._make_hook(i)) for i, site in enumerate(self.sites)])
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def _remove(self) -> None:
        remove_hooks(self._handles)
        self._cache.clear()
        self._scaled.clear()
        self._generators.clear()

    @property
    def active(self) -> bool:
        return bool(self._handles)


def sde_attribute(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    sigma: float,
    n_draws: int = 16,
    mode: str = "additive",
    dt: float | None = None,
    seed: int = 0,
    method: str = "integrated_gradients",
    target: Any = "prediction",
    labels: Any = None,
    keep_draws: bool = False,
    **kwargs: Any,
) -> AttributionMaps:
    """Mean (and variance) of ``method``'s attributions over ``n_draws`` noisy networks.

    Targets are resolved once on the noise-free network (``"prediction"`` is the clean
    prediction). With ``sigma == 0`` every draw is the plain network, so one draw is
    computed and the result equals :func:`attribute` exactly. ``keep_draws`` stores the
    per-draw maps in ``extra["draws"]``. Other keyword arguments go to :func:`attribute`.
    """
    _check_noise(sigma, mode)
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}")
    method = canonical_method(method)
    if not isinstance(inputs, torch.Tensor):
        inputs = torch.as_tensor(np.asarray(inputs))
    targets, target_mode = resolve_targets(model, inputs, target, labels)
    draws_run = 1 if sigma == 0 else n_draws
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    kept: list[np.ndarray] = []
    first: AttributionMaps | None = None
    base_seed = kwargs.pop("seed", seed)
    with eval_mode(model), ResidualNoise(model, sigma, mode=mode, dt=dt, seed=seed) as noise:
        for d in range(draws_run):
            noise.set_draw(d)
            maps = attribute(
                model, inputs, method=method, target=targets, seed=base_seed + 7919 * d, **kwargs
            )
            a = maps.attributions.astype(np.float64)
            if first is None:
                first = maps
                mean, m2 = a.copy(), np.zeros_like(a)
            else:
                # Welford's update: exact for identical draws, stable for many.
                delta = a - mean
                mean += delta / (d + 1)
                m2 += delta * (a - mean)
            if keep_draws:
                kept.append(maps.attributions)
        used_dt = noise.dt
    assert first is not None and mean is not None and m2 is not None
    variance = m2 / (draws_run - 1) if draws_run > 1 else np.zeros_like(m2)
    attributions = mean.astype(np.float32) if draws_run > 1 else first.attributions
    extra = dict(first.extra)
    if keep_draws:
        extra["draws"] = np.stack(kept)
    return AttributionMaps(
        method=method,
        params=first.params,
        attributions=attributions,
        targets=targets.numpy().astype(np.int64),
        target_mode=target_mode,
        baseline=first.baseline,
        baselines=first.baselines,
        layer=first.layer,
        model=first.model,
        sample_indices=first.sample_indices,
        convergence_delta=None,
        variance=variance.astype(np.float32),
        n_draws=draws_run,
        sde={
            "sigma": float(sigma), "mode": mode, "dt": used_dt, "seed": seed,
            "n_draws_requested": n_draws, "n_sites": len(noise.sites),
        },
        extra=extra,
    )


@torch.no_grad()
def noisy_accuracy(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    *,
    sigmas: Sequence[float] = (0.0, 0.1, 0.3),
    n_draws: int = 4,
    mode: str = "additive",
    dt: float | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> list[dict[str, Any]]:
    """Accuracy of the noisy network for each sigma: mean and spread over draws.

    Uses the same per-draw noise as :func:`sde_attribute`, so it says how far the
    networks whose attributions are averaged still classify like the original.
    """
    from deepprofile.attribution.memory import FORWARD_FACTOR, bounded_batch

    y = torch.as_tensor(np.asarray(labels), dtype=torch.long).reshape(-1)
    device = model_device(model)
    if len(inputs) > 1:
        with eval_mode(model):
            batch_size = bounded_batch(model, torch.as_tensor(inputs[:1]).to(device), batch_size,
                                       factor=FORWARD_FACTOR)
    rows = []
    for sigma in sigmas:
        accs = []
        draws = 1 if sigma == 0 else n_draws
        with eval_mode(model), ResidualNoise(model, sigma, mode=mode, dt=dt, seed=seed) as noise:
            for d in range(draws):
                noise.set_draw(d)
                correct = 0
                for start in range(0, len(inputs), batch_size):
                    out = model(inputs[start : start + batch_size].to(device))
                    correct += int((out.argmax(1).cpu() == y[start : start + batch_size]).sum())
                accs.append(correct / max(len(inputs), 1))
        rows.append({
            "sigma": float(sigma), "mode": mode, "n_draws": draws,
            "accuracy_mean": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
            "accuracies": [float(a) for a in accs], "n_samples": int(len(inputs)),
        })
    return rows


def noisy_finetune(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    *,
    sigma: float,
    steps: int = 100,
    lr: float = 1e-3,
    batch_size: int = 64,
    mode: str = "additive",
    dt: float | None = None,
    seed: int = 0,
    quiet: bool = True,
) -> tuple[nn.Module, list[float]]:
    """Briefly train a copy of ``model`` with noisy residual branches (neural-SDE training).

    Fresh noise per sample and step (Euler-Maruyama), Adam, cross-entropy. The model
    passed in is never modified; returns the fine-tuned copy (in eval mode) and the
    loss of every step.
    """
    _check_noise(sigma, mode)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    tuned = copy.deepcopy(model)
    device = model_device(tuned)
    x_all = torch.as_tensor(inputs)
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.long).reshape(-1)
    if len(x_all) != len(y_all) or len(x_all) == 0:
        raise DeepProfileError(
            f"noisy_finetune needs as many labels as inputs (got {len(x_all)} inputs, "
            f"{len(y_all)} labels), and at least one."
        )
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in tuned.parameters() if p.requires_grad], lr=lr)
    losses: list[float] = []
    from deepprofile.progress import progress_bar

    tuned.train()
    with (
        ResidualNoise(tuned, sigma, mode=mode, dt=dt, seed=seed, per_forward=True),
        progress_bar(quiet) as progress,
    ):
        task = progress.add_task("noisy fine-tuning", total=steps)
        for _ in range(steps):
            idx = torch.randint(0, len(x_all), (min(batch_size, len(x_all)),), generator=gen)
            logits = tuned(x_all[idx].to(device))
            loss = nn.functional.cross_entropy(logits, y_all[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            progress.advance(task)
    tuned.eval()
    return tuned, losses
