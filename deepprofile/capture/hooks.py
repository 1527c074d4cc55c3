"""Forward hooks that record (reduced) layer activations: :class:`ActivationRecorder`.

Hooks exist only inside the ``with`` block: they are registered in ``__enter__``
and removed in ``__exit__`` whatever happened in between, and the model's
train/eval mode is restored. Each batch is reduced on the model's device and
moved to the CPU as it goes, so GPU memory holds one batch at most.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from deepprofile.capture.reducers import Reduction, parse_reduction, reduce
from deepprofile.capture.selectors import resolve_layers
from deepprofile.errors import NonFiniteActivationError, ShapeError


@dataclass
class BatchCapture:
    """What one forward pass recorded: reduced activations (CPU), logits, predictions."""

    activations: dict[str, torch.Tensor]
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    logits: torch.Tensor | None = None
    sample_indices: np.ndarray | None = None

    @property
    def predictions(self) -> torch.Tensor | None:
        return None if self.logits is None else self.logits.argmax(dim=1)


def first_tensor(value: object, layer: str = "") -> torch.Tensor:
    """The tensor a module returned: itself, or the first tensor inside a tuple/list/dict."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            if isinstance(item, torch.Tensor):
                return item
    if isinstance(value, Mapping):
        for item in value.values():
            if isinstance(item, torch.Tensor):
                return item
    raise ShapeError(f"Layer {layer!r} returned {type(value).__name__}, which holds no tensor.")


def register_forward_hooks(
    model: nn.Module, hooks: Iterable[tuple[str, Callable[..., object]]]
) -> list[torch.utils.hooks.RemovableHandle]:
    """Register ``(module path, hook)`` pairs; if any registration fails, the hooks already
    registered are removed before the error propagates. Shared by every hook-using class."""
    modules = dict(model.named_modules())
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for name, hook in hooks:
            handles.append(modules[name].register_forward_hook(hook))
    except BaseException:
        remove_hooks(handles)
        raise
    return handles


def remove_hooks(handles: list[torch.utils.hooks.RemovableHandle]) -> None:
    """Remove every handle and empty the list."""
    for handle in handles:
        handle.remove()
    handles.clear()


class ActivationRecorder:
    """Record reduced activations of selected layers during forward passes.

    Parameters
    ----------
    model:
        Any ``nn.Module``; it is never modified beyond the temporary hooks and mode.
    layers:
        Module paths or glob patterns (``"layer*.branch"``); unknown names raise
        :class:`~deepprofile.errors.UnknownLayerError` with close matches.
    reductions:
        One reduction for all layers (``"mean"``) or a mapping layer -> reduction.
    capture_inputs:
        Also record each layer's (reduced) first input.
    check_finite:
        Raise :class:`~deepprofile.errors.NonFiniteActivationError` naming the layer and
        sample when an activation holds NaN or inf.
    eval_mode:
        Put the model in eval mode inside the block (restored on exit).

    Example
    -------
    >>> with ActivationRecorder(model, ["layer1", "layer2"], "mean") as rec:
    ...     cap = rec(images, sample_indices=np.arange(len(images)))
    >>> cap.activations["layer1"].shape
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | Iterable[str],
        reductions: str | Reduction | Mapping[str, str | Reduction] = "mean",
        *,
        capture_inputs: bool = False,
        check_finite: bool = True,
        eval_mode: bool = True,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.layers = resolve_layers(model, layers)
        if isinstance(reductions, Mapping):
            missing = [name for name in self.layers if name not in reductions]
            if missing:
                raise ValueError(f"No reduction given for layers {missing}.")
            self.reductions = {name: parse_reduction(reductions[name]) for name in self.layers}
        else:
            red = parse_reduction(reductions)
            self.reductions = {name: red for name in self.layers}
        self.capture_inputs = capture_inputs
        self.check_finite = check_finite
        self.eval_mode = eval_mode
        self.seed = seed
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._was_training: bool | None = None
        self._current: dict[str, torch.Tensor] = {}
        self._current_inputs: dict[str, torch.Tensor] = {}
        self._indices: np.ndarray | None = None
        self._finite: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        self._sync: set[torch.device] = set()
        self._warned_output = False
        self.output_shapes: dict[str, tuple[int, ...]] = {}

    # -- context management -------------------------------------------------
    def __enter__(self) -> ActivationRecorder:
        if self._handles:
            raise RuntimeError("ActivationRecorder is already active; do not nest the same one.")
        self._was_training = self.model.training
        self._handles = register_forward_hooks(
            self.model, [(name, self._make_hook(name)) for name in self.layers])
        if self.eval_mode:
            self.model.eval()
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def _remove(self) -> None:
        remove_hooks(self._handles)
        if self._was_training is not None:
            self.model.train(self._was_training)
            self._was_training = None
        self._current = {}
        self._current_inputs = {}

    @property
    def active(self) -> bool:
        return bool(self._handles)

    # -- recording ------------------------------------------------------------
    def _make_hook(self, name: str):
        red = self.reductions[name]

        def hook(module: nn.Module, args: tuple, output: object) -> None:
            out = first_tensor(output, name)
            self.output_shapes[name] = tuple(out.shape[1:])
            self._current[name] = self._reduce(out, red, name)
            if self.capture_inputs and args:
                self._current_inputs[name] = self._reduce(first_tensor(args, name), red, name)

        return hook

    def _reduce(self, tensor: torch.Tensor, red: Reduction, name: str) -> torch.Tensor:
        """Reduce on the tensor's device, then copy to the host.

        On CUDA the copy goes into pinned memory without blocking, and the finiteness
        check is computed on the device: nothing waits for the GPU until the forward pass
        is over (:meth:`_finish` synchronises once per batch). On the CPU both are no-ops.
        """
        reduced = reduce(tensor, red, sample_indices=self._indices, seed=self.seed, layer=name)
        if reduced.dtype in (torch.float16, torch.bfloat16):
            reduced = reduced.float()
        if self.check_finite and reduced.is_floating_point():
            # one sum per layer: NaN and inf propagate through it, so a finite sum clears
            # the whole layer (checked for the batch at once in _finish)
            self._finite.append((name, reduced, reduced.sum()))
        if reduced.device.type == "cuda":
            host = torch.empty(reduced.shape, dtype=reduced.dtype, pin_memory=True)
            host.copy_(reduced, non_blocking=True)
            self._sync.add(reduced.device)
            return host
        return reduced

    def _finish(self) -> None:
        """Wait for the batch's device-to-host copies, then report non-finite activations."""
        for device in self._sync:
            torch.cuda.current_stream(device).synchronize()
        self._sync.clear()
        checks, self._finite = self._finite, []
        if not checks:
            return
        device = checks[0][2].device
        totals = torch.stack([total.to(device) for _, _, total in checks])
        if bool(torch.isfinite(totals).all()):  # one sync per batch, whatever the layers
            return
        # some sum is NaN/inf: a non-finite value, or finite values whose sum overflowed
        for name, reduced, _ in checks:
            ok = torch.isfinite(reduced.reshape(reduced.shape[0], -1)).all(dim=1).cpu()
            if bool(ok.all()):
                continue
            rows = torch.nonzero(~ok).flatten().tolist()
            ids = rows if self._indices is None else [int(self._indices[r]) for r in rows]
            raise NonFiniteActivationError(
                f"Layer {name!r} produced NaN/inf activations for sample(s) {ids[:10]}"
                f"{' ...' if len(ids) > 10 else ''}. Check the inputs and the weights "
                "(a diverged checkpoint?), or pass check_finite=False to record them anyway."
            )

    @torch.no_grad()
    def __call__(
        self, inputs: torch.Tensor, sample_indices: np.ndarray | None = None
    ) -> BatchCapture:
        """Run the model on one batch and return what the hooks recorded."""
        if not self.active:
            raise RuntimeError("Use the recorder inside `with ActivationRecorder(...) as rec:`.")
        self._indices = None if sample_indices is None else np.asarray(sample_indices)
        self._current, self._current_inputs = {}, {}
        self._finite, self._sync = [], set()
        try:
            logits = self.model(inputs)
            self._finish()
        finally:
            self._indices = None
            self._finite, self._sync = [], set()
        if not isinstance(logits, torch.Tensor) and not self._warned_output:
            self._warned_output = True
            chosen = first_tensor(logits, "<model output>")
            warnings.warn(
                f"The model returned a {type(logits).__name__}, not a tensor; its first "
                f"tensor (shape {tuple(chosen.shape)}) is taken as the logits, for "
                "predictions and accuracy. If the logits are another element (a model "
                "returning (features, logits)), wrap the model so that it returns them.",
                stacklevel=2)
        logits = first_tensor(logits, "<model output>").detach().to("cpu").float()
        if self.check_finite:
            bad = ~torch.isfinite(logits.reshape(logits.shape[0], -1)).all(dim=1)
            if bool(bad.any()):
                rows = torch.nonzero(bad).flatten().tolist()
                ids = rows if sample_indices is None else [int(sample_indices[r]) for r in rows]
                raise NonFiniteActivationError(
                    f"The model's logits are NaN/inf for sample(s) {ids[:10]}"
                    f"{' ...' if len(ids) > 10 else ''}; predictions and accuracy would be "
                    "meaningless. Check the weights (NaN/inf parameters, a diverged checkpoint) "
                    "and the inputs."
                )
        missing = [name for name in self.layers if name not in self._current]
        if missing:
            raise ShapeError(
                f"Layers {missing} did not run in the forward pass (unused modules?); "
                "select layers that the model calls."
            )
        return BatchCapture(
            activations=dict(self._current),
            inputs=dict(self._current_inputs),
            logits=logits,
            sample_indices=None if sample_indices is None else np.asarray(sample_indices),
        )


def hook_count(model: nn.Module) -> int:
    """Number of forward, pre-forward and backward hooks left on any module of ``model``."""
    total = 0
    for module in model.modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
        ):
            total += len(getattr(module, attr, {}) or {})
    return total
