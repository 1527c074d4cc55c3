"""List a model's selectable layers with their output shapes for a given input size."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deepprofile.capture.hooks import first_tensor


@dataclass(frozen=True)
class LayerInfo:
    """One module: its path, type, output shape (per sample) and own parameter count."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    n_params: int


@torch.no_grad()
def layer_table(model: nn.Module, input_size: tuple[int, ...],
                device: str | torch.device = "cpu") -> list[LayerInfo]:
    """Run one zero input of ``input_size`` (C, H, W) and report every module's output shape.

    Modules that do not run in the forward pass get ``output_shape=None``. Hooks are
    removed and the train/eval mode restored whatever happens.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    was_training = model.training

    def make(name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            try:
                shapes[name] = tuple(first_tensor(output, name).shape[1:])
            except Exception:  # modules returning no tensor: shape unknown
                shapes[name] = ()
        return hook

    named = [(n, m) for n, m in model.named_modules() if n]
    try:
        for name, module in named:
            handles.append(module.register_forward_hook(make(name)))
        model.eval()
        model(torch.zeros((1, *input_size), device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [
        LayerInfo(name, type(module).__name__, shapes.get(name),
                  sum(p.numel() for p in module.parameters(recurse=False)))
        for name, module in named
    ]
