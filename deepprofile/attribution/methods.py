"""One entry point over captum's attribution methods: :func:`attribute`.

The methods themselves are captum's (Saliency, InputXGradient, IntegratedGradients,
NoiseTunnel-SmoothGrad, GradientShap, LayerIntegratedGradients, LayerGradCam); this
module only resolves targets (label, prediction or a class), batches the images,
seeds the stochastic methods, puts the model in eval mode for the call (restored in
``finally``) and returns an :class:`AttributionMaps` that remembers which method,
parameters, baselines, targets and layer made the numbers.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from deepprofile.errors import DeepProfileError, ShapeError

#: Canonical method names and the captum class behind each.
METHODS: dict[str, str] = {
    "saliency": "captum.attr.Saliency",
    "input_x_gradient": "captum.attr.InputXGradient",
    "integrated_gradients": "captum.attr.IntegratedGradients",
    "smoothgrad": "captum.attr.NoiseTunnel(Saliency), nt_type='smoothgrad'",
    "gradient_shap": "captum.attr.GradientShap",
    "layer_integrated_gradients": "captum.attr.LayerIntegratedGradients",
    "layer_gradcam": "captum.attr.LayerGradCam",
}

ALIASES: dict[str, str] = {
    "grad": "saliency",
    "gradient": "saliency",
    "ixg": "input_x_gradient",
    "inputxgradient": "input_x_gradient",
    "ig": "integrated_gradients",
    "sg": "smoothgrad",
    "smooth_grad": "smoothgrad",
    "gradshap": "gradient_shap",
    "gshap": "gradient_shap",
    "layer_ig": "layer_integrated_gradients",
    "lig": "layer_integrated_gradients",
    "gradcam": "layer_gradcam",
    "grad_cam": "layer_gradcam",
}

#: Default parameters of each method (also the list of accepted keyword options).
DEFAULTS: dict[str, dict[str, Any]] = {
    "saliency": {"abs": False},
    "input_x_gradient": {},
    "integrated_gradients": {
        "n_steps": 50, "method": "gausslegendre", "internal_batch_size": None,
    },
    "smoothgrad": {"nt_samples": 16, "stdevs": 0.15, "nt_samples_batch_size": None, "abs": False},
    "gradient_shap": {"n_samples": 16, "stdevs": 0.0},
    "layer_integrated_gradients": {
        "n_steps": 50, "method": "gausslegendre", "internal_batch_size": None,
        "attribute_to_layer_input": False,
    },
    "layer_gradcam": {
        "relu_attributions": False, "attribute_to_layer_input": False, "upsample": False,
    },
}

STOCHASTIC = frozenset({"smoothgrad", "gradient_shap"})
LAYER_METHODS = frozenset({"layer_integrated_gradients", "layer_gradcam"})
BASELINE_METHODS = frozenset(
    {"integrated_gradients", "gradient_shap", "layer_integrated_gradients"}
)


class UnknownMethodError(DeepProfileError, ValueError):
    """An attribution method name or option that deepprofile does not know."""


def canonical_method(name: str) -> str:
    """The canonical name of ``name`` (aliases such as ``ig`` accepted)."""
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in METHODS:
        known = sorted(set(METHODS) | set(ALIASES))
        raise UnknownMethodError(
            f"Unknown attribution method {name!r}. Known methods: {', '.join(known)}."
        )
    return key


@dataclass(frozen=True, eq=False)
class AttributionMaps:
    """Attributions of a batch of inputs and everything that made them.

    ``attributions`` has the inputs' shape (N, C, H, W) for input methods and the
    layer's output shape for layer methods (LayerGradCam: (N, 1, h, w), or the input's
    H x W with ``upsample=True``). SDE-smoothed maps carry ``variance`` (over the
    draws), ``n_draws`` and ``sde`` (sigma, mode, dt, seed).
    """

    method: str
    params: dict[str, Any]
    attributions: np.ndarray
    targets: np.ndarray
    target_mode: str
    baseline: str
    baselines: np.ndarray | None = None
    layer: str | None = None
    model: str | None = None
    sample_indices: np.ndarray | None = None
    convergence_delta: np.ndarray | None = None
    variance: np.ndarray | None = None
    n_draws: int = 1
    sde: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(self.attributions.shape[0])

    def tensor(self) -> torch.Tensor:
        """The attributions as a float tensor on the CPU."""
        return torch.from_numpy(np.ascontiguousarray(self.attributions))

    def saliency(self) -> np.ndarray:
        """(N, H, W) maps: absolute attributions summed over channels (N, d for flat inputs)."""
        return saliency_maps(self.attributions)

    def with_extra(self, **extra: Any) -> AttributionMaps:
        return replace(self, extra={**self.extra, **extra})

    def to_dict(self) -> dict[str, Any]:
        from deepprofile.results import jsonable

        def arr(a: np.ndarray | None) -> Any:
            return None if a is None else {"shape": list(a.shape), "data": a.ravel().tolist()}

        return {
            "kind": "attribution_maps",
            "method": self.method,
            "params": jsonable(self.params),
            "attributions": arr(self.attributions),
            "targets": self.targets.tolist(),
            "target_mode": self.target_mode,
            "baseline": self.baseline,
            "baselines": arr(self.baselines),
            "layer": self.layer,
            "model": self.model,
            "sample_indices": None if self.sample_indices is None else self.sample_indices.tolist(),
            "convergence_delta": arr(self.convergence_delta),
            "variance": arr(self.variance),
            "n_draws": self.n_draws,
            "sde": jsonable(self.sde),
            "extra": jsonable(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttributionMaps:
        def arr(d: Any, dtype: Any = np.float32) -> np.ndarray | None:
            if d is None:
                return None
            return np.asarray(d["data"], dtype=dtype).reshape(d["shape"])

        idx = data.get("sample_indices")
        return cls(
            method=data["method"],
            params=dict(data["params"]),
            attributions=arr(data["attributions"]),
            targets=np.asarray(data["targets"], dtype=np.int64),
            target_mode=data["target_mode"],
            baseline=data["baseline"],
            baselines=arr(data.get("baselines")),
            layer=data.get("layer"),
            model=data.get("model"),
            sample_indices=None if idx is None else np.asarray(idx, dtype=np.int64),
            convergence_delta=arr(data.get("convergence_delta")),
            variance=arr(data.get("variance")),
            n_draws=int(data.get("n_draws", 1)),
            sde=data.get("sde"),
            extra=dict(data.get("extra") or {}),
        )


def saliency_maps(attributions: np.ndarray) -> np.ndarray:
    """Absolute attributions summed over the channel axis: (N, C, H, W) -> (N, H, W).

    (N, H, W) maps are returned as absolute values, flat (N, d) ones too.
    """
    a = np.abs(np.asarray(attributions))
    if a.ndim == 4:
        return a.sum(axis=1)
    return a


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore every module's mode after."""
    training = [m for m in model.modules() if m.training]
    if not training:  # already in eval mode: nothing to change or restore (saves ~1 ms)
        yield model
        return
    try:
        model.eval()
        yield model
    finally:
        for module in training:
            module.training = True


_SEEDED_LOCK = threading.RLock()


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Seed torch's and numpy's global generators for the block, restore their state after.

    captum draws SmoothGrad's noise from torch and GradientShap's path points from
    numpy's global generator, so both are seeded. The generators are process-wide, so
    seeded blocks of different threads (Dask workers running as threads) take turns.
    """
    if seed is None:
        yield
        return
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with _SEEDED_LOCK:
        np_state = np.random.get_state()
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(int(seed))
                np.random.seed(int(seed) & 0xFFFFFFFF)
                yield
        finally:
            np.random.set_state(np_state)


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted classes (argmax of the logits) in eval mode, as a CPU LongTensor."""
    from deepprofile.attribution.memory import FORWARD_FACTOR, bounded_batch

    device = model_device(model)
    out = []
    with eval_mode(model):
        if len(inputs) > 1:
            batch_size = bounded_batch(model, inputs[:1].to(device), batch_size,
                                       factor=FORWARD_FACTOR)
        for start in range(0, len(inputs), batch_size):
            logits = model(inputs[start : start + batch_size].to(device))
            out.append(logits.argmax(dim=1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def resolve_targets(
    model: nn.Module,
    inputs: torch.Tensor,
    target: str | int | Sequence[int] | np.ndarray | torch.Tensor,
    labels: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    batch_size: int = 256,
) -> tuple[torch.Tensor, str]:
    """Per-sample target classes and a description: ``label``, ``prediction`` or a class."""
    n = len(inputs)
    if isinstance(target, str):
        mode = target.strip().lower()
        if mode in ("label", "labels"):
            if labels is None:
                raise DeepProfileError(
                    "target='label' needs the labels; pass labels=... or use target='prediction'."
                )
            t = torch.as_tensor(np.asarray(labels), dtype=torch.long).reshape(-1)
            if len(t) != n:
                raise ShapeError(f"Got {len(t)} labels for {n} inputs.")
            return t, "label"
        if mode in ("prediction", "predictions", "pred", "predicted"):
            return predict(model, inputs, batch_size), "prediction"
        if mode.lstrip("-").isdigit():
            return torch.full((n,), int(mode), dtype=torch.long), f"class:{int(mode)}"
        raise DeepProfileError(
            f"Unknown target {target!r}: use 'label', 'prediction', a class index or one "
            "class index per input."
        )
    if isinstance(target, (int, np.integer)):
        return torch.full((n,), int(target), dtype=torch.long), f"class:{int(target)}"
    if isinstance(target, torch.Tensor):  # no round trip through numpy
        t = target.detach().to("cpu", torch.long).reshape(-1)
    else:
        t = torch.as_tensor(np.asarray(target), dtype=torch.long).reshape(-1)
    if len(t) != n:
        raise ShapeError(f"Got {len(t)} targets for {n} inputs; give one per input.")
    return t, "given"


def _check_params(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - set(DEFAULTS[method]))
    if unknown:
        raise UnknownMethodError(
            f"Method {method!r} does not take {', '.join(unknown)}; its options are: "
            f"{', '.join(DEFAULTS[method]) or '(none)'}."
        )
    return {**DEFAULTS[method], **params}


def _resolve_layer(model: nn.Module, layer: str | None, method: str) -> tuple[str, nn.Module]:
    from deepprofile.capture.selectors import resolve_layers

    if layer is None:
        raise DeepProfileError(
            f"Method {method!r} attributes to a layer; pass layer='<module path>' "
            "(e.g. 'layer3')."
        )
    names = resolve_layers(model, layer)
    if len(names) != 1:
        raise DeepProfileError(
            f"Layer selector {layer!r} matches {len(names)} modules ({', '.join(names[:5])}"
            f"{' ...' if len(names) > 5 else ''}); name exactly one."
        )
    return names[0], dict(model.named_modules())[names[0]]


def _baseline_description(baselines: Any, method: str) -> str:
    if method not in BASELINE_METHODS:
        return "none"
    if baselines is None:
        return "zeros"
    if isinstance(baselines, (int, float)):
        return f"constant:{float(baselines):g}"
    if isinstance(baselines, torch.Tensor):
        return f"tensor{tuple(baselines.shape)}"
    return type(baselines).__name__


def build_captum(method: str, model: nn.Module, layer_module: nn.Module | None = None):
    """The captum attribution object for ``method`` (canonical name)."""
    from captum import attr

    if method == "saliency":
        return attr.Saliency(model)
    if method == "input_x_gradient":
        return attr.InputXGradient(model)
    if method == "integrated_gradients":
        return attr.IntegratedGradients(model)
    if method == "smoothgrad":
        return attr.NoiseTunnel(attr.Saliency(model))
    if method == "gradient_shap":
        return attr.GradientShap(model)
    if method == "layer_integrated_gradients":
        return attr.LayerIntegratedGradients(model, layer_module)
    if method == "layer_gradcam":
        return attr.LayerGradCam(model, layer_module)
    raise UnknownMethodError(method)  # pragma: no cover - canonical_method guards


def _call_captum(
    method: str,
    explainer: Any,
    x: torch.Tensor,
    target: torch.Tensor,
    baselines: Any,
    params: Mapping[str, Any],
    want_delta: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One captum call with the method's own keyword arguments."""
    delta = None
    if method == "saliency":
        out = explainer.attribute(x, target=target, abs=params["abs"])
    elif method == "input_x_gradient":
        out = explainer.attribute(x, target=target)
    elif method in ("integrated_gradients", "layer_integrated_gradients"):
        kw = {
            "n_steps": params["n_steps"],
            "method": params["method"],
            "internal_batch_size": params["internal_batch_size"],
        }
        if method == "layer_integrated_gradients":
            kw["attribute_to_layer_input"] = params["attribute_to_layer_input"]
        res = explainer.attribute(
            x, baselines=baselines, target=target, return_convergence_delta=want_delta, **kw
        )
        out, delta = res if want_delta else (res, None)
    elif method == "smoothgrad":
        out = explainer.attribute(
            x, nt_type="smoothgrad", nt_samples=params["nt_samples"], stdevs=params["stdevs"],
            nt_samples_batch_size=params["nt_samples_batch_size"], target=target,
            abs=params["abs"],
        )
    elif method == "gradient_shap":
        res = explainer.attribute(
            x, baselines=baselines, n_samples=params["n_samples"], stdevs=params["stdevs"],
            target=target, return_convergence_delta=want_delta,
        )
        out, delta = res if want_delta else (res, None)
    elif method == "layer_gradcam":
        out = explainer.attribute(
            x, target=target, relu_attributions=params["relu_attributions"],
            attribute_to_layer_input=params["attribute_to_layer_input"],
        )
        if params["upsample"]:
            from captum.attr import LayerAttribution

            out = LayerAttribution.interpolate(out, tuple(x.shape[-2:]), "bilinear")
    else:  # pragma: no cover
        raise UnknownMethodError(method)
    if isinstance(out, tuple):
        out = out[0]
    return out, delta


def _memory_plan(
    method: str, model: nn.Module, example: torch.Tensor, batch_size: int,
    params: dict[str, Any],
) -> tuple[int, dict[str, Any], dict[str, Any] | None]:
    """Batch size and captum options that keep one pass within the memory budget.

    Deterministic methods give the same numbers whatever the split (to float rounding).
    SmoothGrad and GradientShap draw their noise per captum call, so a split forced by
    the budget gives another (seeded, reproducible) draw of the same distribution.
    """
    from deepprofile.attribution import memory as mem

    cap = mem.samples_per_pass(model, example)
    if cap is None:
        return batch_size, params, None
    run = dict(params)
    if method in ("integrated_gradients", "layer_integrated_gradients"):
        batch_size = min(batch_size, cap)
        if run["internal_batch_size"] is None:
            run["internal_batch_size"] = max(batch_size, cap)
    elif method == "smoothgrad":
        batch_size = min(batch_size, cap)
        if run["nt_samples_batch_size"] is None and batch_size * run["nt_samples"] > cap:
            run["nt_samples_batch_size"] = max(1, cap // batch_size)
    elif method == "gradient_shap":
        batch_size = max(1, min(batch_size, cap // max(1, run["n_samples"])))
    else:
        batch_size = min(batch_size, cap)
    memory = {"budget": mem.current_budget(), "samples_per_pass": int(cap),
              "batch_size": int(batch_size)}
    for key in ("internal_batch_size", "nt_samples_batch_size"):
        if run.get(key) is not None and params.get(key) is None:
            memory[key] = int(run[key])
    return batch_size, run, memory


def attribute(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    method: str = "integrated_gradients",
    target: str | int | Sequence[int] | np.ndarray | torch.Tensor = "prediction",
    labels: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    layer: str | None = None,
    baselines: float | torch.Tensor | None = None,
    batch_size: int = 32,
    seed: int | None = 0,
    return_convergence_delta: bool = False,
    sample_indices: Sequence[int] | np.ndarray | None = None,
    model_name: str | None = None,
    **params: Any,
) -> AttributionMaps:
    """Attribute the model's ``target`` output to the inputs (or a layer) with captum.

    Parameters
    ----------
    model:
        Any classifier ``nn.Module``; it runs in eval mode for the call, its mode is
        restored afterwards.
    inputs:
        (N, C, H, W) (or any (N, ...)) float tensor.
    method:
        ``saliency``, ``input_x_gradient``, ``integrated_gradients`` (``ig``),
        ``smoothgrad``, ``gradient_shap``, ``layer_integrated_gradients``,
        ``layer_gradcam``; see :data:`DEFAULTS` for each method's options (``params``).
    target:
        ``"prediction"`` (the model's argmax), ``"label"`` (needs ``labels``), a class
        index, or one class index per input.
    layer:
        Module path of the layer for the layer methods (resolved with
        :func:`deepprofile.capture.resolve_layers`).
    baselines:
        IG / layer IG: ``None`` (zeros), a scalar, or a tensor of shape (1, ...) or
        (N, ...) (sliced per batch). GradientShap: a distribution (M, ...) of baselines,
        zeros (1, ...) when ``None``.
    batch_size:
        Images per captum call.
    seed:
        Seeds SmoothGrad's and GradientShap's noise (batch ``b`` uses ``seed + b``); the
        global torch RNG state is restored afterwards.
    """
    method = canonical_method(method)
    params = _check_params(method, params)
    if not isinstance(inputs, torch.Tensor):
        inputs = torch.as_tensor(np.asarray(inputs))
    if inputs.ndim < 2 or len(inputs) == 0:
        raise ShapeError(
            f"inputs must be a non-empty batch (N, ...), got shape {tuple(inputs.shape)}."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = model_device(model)
    n = len(inputs)
    targets, target_mode = resolve_targets(model, inputs, target, labels)
    layer_name, layer_module = (None, None)
    if method in LAYER_METHODS:
        layer_name, layer_module = _resolve_layer(model, layer, method)
    elif layer is not None:
        raise DeepProfileError(
            f"Method {method!r} attributes to the input; layer={layer!r} applies to "
            "layer_integrated_gradients / layer_gradcam only."
        )
    baseline_desc = _baseline_description(baselines, method)
    per_sample_baselines = None
    if method == "gradient_shap" and baselines is None:
        baselines = torch.zeros((1, *inputs.shape[1:]), dtype=inputs.dtype)
    if isinstance(baselines, torch.Tensor):
        baselines = baselines.to(device=device, dtype=inputs.dtype)
        if (
            method != "gradient_shap"
            and baselines.shape[0] == n
            and n > 1
            and tuple(baselines.shape[1:]) == tuple(inputs.shape[1:])
        ):
            per_sample_baselines = baselines
    want_delta = return_convergence_delta and method in BASELINE_METHODS

    explainer = build_captum(method, model, layer_module)
    chunks: list[torch.Tensor] = []
    deltas: list[torch.Tensor] = []
    with eval_mode(model):
        batch_size, run_params, memory = _memory_plan(
            method, model, inputs[:1].to(device), batch_size, params)
        for b, start in enumerate(range(0, n, batch_size)):
            stop = min(start + batch_size, n)
            x = inputs[start:stop].to(device)
            t = targets[start:stop].to(device)
            base = baselines
            if per_sample_baselines is not None:
                base = per_sample_baselines[start:stop]
            with (
                seeded(None if seed is None or method not in STOCHASTIC else seed + b),
                warnings.catch_warnings(),
            ):
                # captum warns that it switched requires_grad on for the inputs: expected.
                warnings.filterwarnings("ignore", message=".*did not already require gradients")
                out, delta = _call_captum(method, explainer, x, t, base, run_params, want_delta)
            chunks.append(out.detach().to("cpu", torch.float32))
            if delta is not None:
                deltas.append(delta.detach().reshape(-1).to("cpu", torch.float32))
    # one batch: no copy through torch.cat (the chunk is captum's fresh output)
    attributions = (chunks[0].contiguous() if len(chunks) == 1 else torch.cat(chunks)).numpy()
    kept_baselines = None
    if per_sample_baselines is not None:
        kept_baselines = per_sample_baselines.detach().cpu().float().numpy()
    return AttributionMaps(
        method=method,
        params={**params, "batch_size": batch_size, "seed": seed,
                **({"memory": memory} if memory else {})},
        attributions=attributions,
        targets=targets.numpy().astype(np.int64),
        target_mode=target_mode,
        baseline=baseline_desc,
        baselines=kept_baselines,
        layer=layer_name,
        model=model_name or type(model).__name__,
        sample_indices=None if sample_indices is None else np.asarray(sample_indices, np.int64),
        convergence_delta=torch.cat(deltas).numpy() if deltas else None,
    )
