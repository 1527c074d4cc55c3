"""A memory budget for the attribution paths: how many samples fit in one pass.

captum expands ``batch x n_steps`` (IG), ``batch x nt_samples`` (SmoothGrad) or
``batch x n_samples`` (GradientShap) into one forward-backward pass when nothing bounds
it; on a resnet50 at 224 px that peaked at 13 GB for 4 images. Here one probe forward
of a single sample (forward hooks on every leaf module, summing the bytes of their
outputs) estimates the activation memory per sample; a pass that keeps the graph for a
backward needs about :data:`BACKWARD_FACTOR` times that, a double backward
:data:`DOUBLE_BACKWARD_FACTOR` times. The number of samples per pass is then
``max(1, budget // per_sample)``.

The budget is a context setting (:func:`memory_budget`), so nested calls
(SDE draws, BIG, the robustness explainers) all see the budget of the run that made
them; :data:`DEFAULT_BUDGET` applies when nothing was set.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import math
import re
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import nn

from deepprofile.errors import DeepProfileError

#: Bytes the activations of one pass may take by default: safe on a 16 GB laptop
#: (the model, the images and Python stay well below the rest) and a 24 GB GPU.
DEFAULT_BUDGET = 2 * 1024**3
#: Activation bytes per sample of a forward-backward pass, as a multiple of the forward's
#: output bytes (kept activations + their gradients + temporaries).
BACKWARD_FACTOR = 3.0
#: The same for a double backward (``create_graph=True``, the top-k attack).
DOUBLE_BACKWARD_FACTOR = 6.0
#: A forward without gradients frees activations as it goes; the sum of outputs over-counts.
FORWARD_FACTOR = 1.0

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2,
          "mib": 1024**2, "g": 1024**3, "gb": 1000**3, "gib": 1024**3, "t": 1024**4,
          "tb": 1000**4, "tib": 1024**4}
T = TypeVar("T")
_UNBOUNDED = ("none", "unbounded", "inf", "off")

_budget: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "deepprofile_memory_budget", default=DEFAULT_BUDGET)
_probe_cache: weakref.WeakKeyDictionary[nn.Module, dict[Any, int]] = weakref.WeakKeyDictionary()


class MemoryBudgetError(DeepProfileError, ValueError):
    """A memory budget that cannot be read (not a size such as ``2GB`` or ``none``)."""


def parse_budget(value: int | float | str | None) -> int | None:
    """Bytes of a budget given as bytes or text (``"2GB"``, ``"512MiB"``, ``"none"``).

    ``None``, ``0``, ``inf`` and ``"none"`` mean unbounded (returns ``None``).
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if text in _UNBOUNDED:
            return None
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[0-9]+)?)([a-z]*)", text)
        if not m or m.group(2) not in _UNITS:
            raise MemoryBudgetError(
                f"Cannot read the memory budget {value!r}: give a size such as 2GB, 512MiB "
                "or 3000000000 (bytes), or 'none' for no bound.")
        value = float(m.group(1)) * _UNITS[m.group(2)]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MemoryBudgetError(f"The memory budget must be a size in bytes, got {value!r}.")
    if math.isinf(value) or value == 0:
        return None
    if value < 0 or math.isnan(value):
        raise MemoryBudgetError(f"The memory budget must be positive, got {value!r}.")
    return int(value)


def current_budget() -> int | None:
    """The budget in force (bytes), ``None`` when unbounded."""
    return _budget.get()


@contextlib.contextmanager
def memory_budget(value: int | float | str | None) -> Iterator[int | None]:
    """Set the budget for the block (``None``/``"none"``: unbounded); restored after."""
    token = _budget.set(parse_budget(value))
    try:
        yield _budget.get()
    finally:
        _budget.reset(token)


def _nbytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(_nbytes(o) for o in obj.values())
    return 0


def probe_bytes(model: nn.Module, example: torch.Tensor) -> int:
    """Bytes of every leaf module's output (plus the input) for one forward of ``example``.

    Runs one forward without gradients with a forward hook on each leaf module; the
    hooks are removed in ``finally``. Cached per model and input shape/dtype/device.
    """
    key = (tuple(example.shape), example.dtype, str(example.device))
    cached = _probe_cache.get(model, {}).get(key)
    if cached is not None:
        return cached
    total = [_nbytes(example)]

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        total[0] += _nbytes(output)

    handles = []
    try:
        for module in model.modules():
            if next(module.children(), None) is None:
                handles.append(module.register_forward_hook(hook))
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    _probe_cache.setdefault(model, {})[key] = total[0]
    return total[0]


def per_sample_bytes(model: nn.Module, example: torch.Tensor,
                     factor: float = BACKWARD_FACTOR) -> int:
    """Estimated activation bytes of one sample in a pass (``factor`` x the probe)."""
    one = example[:1]
    return max(1, int(math.ceil(probe_bytes(model, one) * factor)))


def samples_per_pass(model: nn.Module, example: torch.Tensor, *,
                     factor: float = BACKWARD_FACTOR,
                     budget: Any = ...) -> int | None:
    """Samples one pass may hold under the budget (``None`` when unbounded).

    ``budget`` defaults to :func:`current_budget`; the probe runs only when bounded.
    """
    b = current_budget() if budget is ... else parse_budget(budget)
    if b is None:
        return None
    return max(1, b // per_sample_bytes(model, example, factor))


def bounded_batch(model: nn.Module, example: torch.Tensor, batch_size: int, *,
                  factor: float = BACKWARD_FACTOR) -> int:
    """``batch_size`` lowered to what the budget allows (unchanged when unbounded)."""
    cap = samples_per_pass(model, example, factor=factor)
    return batch_size if cap is None else max(1, min(batch_size, cap))


def with_memory_budget(fn: Callable[..., T]) -> Callable[..., T]:
    """Run ``fn`` under the budget given by its ``memory_budget`` keyword (or its default).

    Lets a long entry point (``run_attribution``) take ``memory_budget=`` without
    wrapping its whole body in a ``with`` block.
    """
    default = inspect.signature(fn).parameters["memory_budget"].default

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        with memory_budget(kwargs.get("memory_budget", default)):
            return fn(*args, **kwargs)

    return wrapper
