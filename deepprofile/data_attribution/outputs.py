"""Model-output functions for TRAK: the classification margin and a concept probe's logit.

Both are :class:`trak.modelout_functions.AbstractModelOutput` subclasses, so they
plug into traker's gradient computer unchanged.

- :class:`MarginOutput` is traker's ``ImageClassificationModelOutput`` (the margin
  ``log p / (1 - p)`` of the true class and the out-to-loss term ``1 - p``).
- :class:`ConceptProbeOutput` is a linear probe on a layer's reduced activations:
  ``w . reduce(net_upto_layer(x)) + b``. The forward pass stops at the probed layer
  (a hook raises once the layer has run) and only the sub-network's own weights,
  those the layer output depends on, are handed to ``functional_call`` (traker
  pitfall 5): the gradient covers exactly the parameters up to the layer.

:func:`params_up_to` finds those parameters by autograd on one example rather
than by module order, so branches and shortcuts are handled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from trak.modelout_functions import AbstractModelOutput, ImageClassificationModelOutput

from deepprofile.capture.hooks import first_tensor, register_forward_hooks, remove_hooks
from deepprofile.capture.selectors import close_matches
from deepprofile.concepts.probes import reduce_differentiable
from deepprofile.errors import DeepProfileError, ShapeError, UnknownLayerError


class MarginOutput(ImageClassificationModelOutput):
    """traker's image-classification margin (true-class logit minus logsumexp of the others)."""


class _StopForward(Exception):
    """Raised by the probe hook once the probed layer has produced its output."""


def _layer_module(model: nn.Module, layer: str) -> nn.Module:
    modules = dict(model.named_modules())
    if layer not in modules or not layer:
        hint = close_matches(layer, [n for n in modules if n])
        raise UnknownLayerError(
            f"Layer {layer!r} is not a module of the model."
            + (f" Did you mean: {', '.join(hint)}?" if hint else "")
        )
    return modules[layer]


def run_to_layer(model: nn.Module, layer: str, weights: dict[str, Tensor] | None,
                 buffers: dict[str, Tensor] | None, images: Tensor) -> Tensor:
    """Output of ``layer`` for ``images``; the forward pass stops there.

    With ``weights``/``buffers`` the model runs through ``torch.func.functional_call``
    (parameters missing from ``weights`` keep their module values). The hook exists
    only during the call and is removed in ``finally``.
    """
    _layer_module(model, layer)
    seen: list[Tensor] = []

    def hook(module: nn.Module, args: tuple, output: object) -> None:
        seen.append(first_tensor(output, layer))
        raise _StopForward

    handles = register_forward_hooks(model, [(layer, hook)])
    try:
        if weights is None and buffers is None:
            model(images)
        else:
            torch.func.functional_call(model, (weights or {}, buffers or {}), (images,))
    except _StopForward:
        pass
    finally:
        remove_hooks(handles)
    if not seen:
        raise ShapeError(f"Layer {layer!r} did not run in the forward pass; probe another layer.")
    return seen[0]


def params_up_to(model: nn.Module, layer: str, example: Tensor) -> list[str]:
    """Names of the parameters ``layer``'s output depends on (found by autograd on ``example``)."""
    named = [(n, p) for n, p in model.named_parameters()]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            out = run_to_layer(model, layer, None, None, example[:1])
            grads = torch.autograd.grad(out.float().sum(), [p for _, p in named],
                                        allow_unused=True)
    finally:
        model.train(was_training)
    return [n for (n, _), g in zip(named, grads, strict=True) if g is not None]


class ConceptProbeOutput(AbstractModelOutput):
    """TRAK target: a linear concept probe on ``layer``'s reduced activations.

    ``weight`` (D,) and ``bias`` live in the raw reduced activation space (as
    :class:`deepprofile.concepts.probes.ConceptProbe` stores them). Only used for
    targets: training-side features keep the margin, because the training loss,
    not the probe, is what moved the weights.
    """

    @classmethod
    def from_probe(cls, probe: object) -> ConceptProbeOutput:
        """From a :class:`deepprofile.concepts.probes.ConceptProbe`."""
        return cls(probe.layer, probe.reduction, probe.weight, probe.bias)  # type: ignore[attr-defined]

    def __init__(self, layer: str, reduction: str, weight: np.ndarray | Tensor,
                 bias: float) -> None:
        super().__init__()
        self.layer = layer
        self.reduction = str(reduction)
        self.weight = torch.as_tensor(np.asarray(weight, dtype=np.float32)).reshape(-1)
        self.bias = float(bias)

    def logit(self, model: nn.Module, weights: dict[str, Tensor] | None,
              buffers: dict[str, Tensor] | None, images: Tensor) -> Tensor:
        """Probe logits ``(N,)`` of a batch of images."""
        act = reduce_differentiable(run_to_layer(model, self.layer, weights, buffers, images),
                                    self.reduction)
        act = act.reshape(act.shape[0], -1)
        if act.shape[-1] != self.weight.numel():
            raise ShapeError(
                f"The probe for {self.layer!r} has {self.weight.numel()} weights but the "
                f"layer's {self.reduction} activations have {act.shape[-1]} values; the probe "
                "was trained on another model or reduction."
            )
        return act @ self.weight.to(act.device, act.dtype) + self.bias

    def get_output(self, model: nn.Module, weights: dict[str, Tensor],
                   buffers: dict[str, Tensor], image: Tensor, label: Tensor) -> Tensor:
        return self.logit(model, weights, buffers, image.unsqueeze(0)).sum()

    def get_out_to_loss_grad(self, model: nn.Module, weights: dict[str, Tensor],
                             buffers: dict[str, Tensor], batch: Sequence[Tensor]) -> Tensor:
        # traker asks every output for this, but deepprofile featurises training images with
        # the margin (MarginOutput) and uses a probe only as a target: reaching here is misuse.
        raise DeepProfileError(
            "A concept probe is a TRAK target only: featurise training images with MarginOutput.")


def subset(named: Iterable[tuple[str, Tensor]], names: Sequence[str] | None) -> dict[str, Tensor]:
    """``{name: tensor}`` for ``names`` (all when ``None``), in the model's order."""
    keep = None if names is None else set(names)
    return {n: t for n, t in named if keep is None or n in keep}
