"""The random-init baseline of a model: what its weights looked like before training.

The baseline is a fresh instance of the same architecture built by its own constructor (the
model registry and the architecture's arguments) under a seed, so it carries the
architecture's own initialisation (torchvision ResNets: Kaiming-normal, fan-out, in their
constructor; EfficientNet: its own scheme; the demo CNN: PyTorch's defaults). Calling every
module's ``reset_parameters()`` instead gives PyTorch's generic init, which for most
torchvision models has a very different scale; it is used only when the architecture is
unknown, and the baseline then says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

CONSTRUCTOR = "constructor"
RESET_PARAMETERS = "reset_parameters"


@dataclass(frozen=True)
class InitBaseline:
    """How a random-init baseline was made.

    ``method`` is ``"constructor"`` (fresh instance of ``arch`` with ``num_classes`` and
    ``arch_kwargs`` under ``seed``) or ``"reset_parameters"`` (the fallback; ``reason`` says
    why the constructor was not used).
    """

    method: str
    seed: int
    arch: str | None = None
    num_classes: int | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    @property
    def is_fallback(self) -> bool:
        return self.method != CONSTRUCTOR

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fallback": self.is_fallback}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InitBaseline:
        return cls(**{k: data[k] for k in ("method", "seed", "arch", "num_classes",
                                            "arch_kwargs", "reason") if k in data})


def reset_parameters_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with every ``reset_parameters()`` called under ``seed``
    (PyTorch's generic init; the caller's RNG state is left untouched)."""
    import copy

    clone = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in clone.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return clone


def _spec(model: nn.Module, model_info: Mapping[str, Any] | None) -> dict[str, Any] | None:
    from deepprofile.models.registry import ARCHITECTURES, arch_spec

    spec = arch_spec(model)
    if spec is None and model_info and model_info.get("arch") in ARCHITECTURES:
        spec = {"arch": model_info["arch"],
                "num_classes": int(model_info.get("num_classes") or 1000),
                "arch_kwargs": dict(model_info.get("arch_kwargs") or {})}
    return spec


def _mismatch(model: nn.Module, fresh: nn.Module) -> str:
    """Empty when both models have the same parameter names and shapes, else what differs."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    if want == got:
        return ""
    diff = sorted(set(want) ^ set(got)) or sorted(k for k in want if want[k] != got[k])
    return f"the constructor's weights differ from the model's ({', '.join(diff[:3])})"


def random_init_baseline(
    model: nn.Module, seed: int = 0, *, model_info: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, InitBaseline]:
    """A randomly initialised model of the same architecture, and how it was made.

    The architecture comes from the model itself (models made by
    :func:`deepprofile.models.build_model` or ``load_model`` remember their constructor
    call) or from ``model_info`` (``{"arch", "num_classes", "arch_kwargs"}``, e.g. a
    :class:`~deepprofile.models.ModelInfo` dict). The fresh instance is built under
    ``torch.manual_seed(seed)``, so it equals ``build_model(...)`` after that seed, and the
    caller's RNG state is left untouched. Without a known architecture (or when the
    constructor's weights do not match the model's), every module's ``reset_parameters()``
    is called on a copy instead and the returned :class:`InitBaseline` records the fallback.
    """
    from deepprofile.models.registry import build_model

    spec = _spec(model, model_info)
    reason = ("architecture unknown: the model was not built by deepprofile.models."
              "build_model and no model_info names a registered architecture")
    if spec is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = build_model(spec["arch"], num_classes=spec["num_classes"],
                                **spec["arch_kwargs"])
        reason = _mismatch(model, fresh)
        if not reason:
            fresh.eval()
            return fresh, InitBaseline(CONSTRUCTOR, int(seed), spec["arch"],
                                       int(spec["num_classes"]), dict(spec["arch_kwargs"]))
    baseline = InitBaseline(
        RESET_PARAMETERS, int(seed), None if spec is None else spec["arch"],
        None if spec is None else int(spec["num_classes"]),
        {} if spec is None else dict(spec["arch_kwargs"]), reason)
    return reset_parameters_copy(model, seed), baseline


__all__ = ["InitBaseline", "random_init_baseline", "reset_parameters_copy"]
