"""Does a state_dict fit an architecture? Head size, likely architecture, finite weights.

Used by :func:`deepprofile.models.load_model` so that a plain weights file needs only
``--arch`` (the class count is read from the classifier's weight shape), and so that
a file that does not fit says so in one line: the first mismatching keys and the
registered architecture whose keys and shapes it matches best.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from deepprofile.errors import DeepProfileError, NonFiniteWeightsError


def _skeleton(arch: str, num_classes: int, kwargs: Mapping[str, Any]) -> nn.Module:
    """The architecture built on the meta device: names and shapes only, no memory, fast."""
    from deepprofile.models.registry import ARCHITECTURES

    with torch.device("meta"):
        return ARCHITECTURES[arch](num_classes=num_classes, **dict(kwargs))


def head_name(model: nn.Module) -> str | None:
    """Module path of the classifier: the last ``nn.Linear`` in module order."""
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linear[-1] if linear else None


def infer_num_classes(arch: str, state: Mapping[str, torch.Tensor],
                      kwargs: Mapping[str, Any] | None = None) -> int | None:
    """Class count from the classifier weight's first dimension, or None when not found."""
    try:
        head = head_name(_skeleton(arch, 10, kwargs or {}))
    except Exception:  # noqa: BLE001 - a user architecture that cannot build on meta
        return None
    weight = state.get(f"{head}.weight") if head else None
    return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None


def infer_arch_kwargs(arch: str, state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Constructor arguments readable from the weights (the demo CNN's input channels)."""
    if arch == "small_resnet":
        stem = state.get("stem.0.weight")
        if stem is not None and stem.ndim == 4:
            return {"in_channels": int(stem.shape[1])}
    return {}


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


@functools.lru_cache(maxsize=64)
def _reference(arch: str) -> tuple[dict[str, tuple[int, ...]], str | None] | None:
    """Parameter shapes (10-class head) and head name of a registered architecture."""
    try:
        skeleton = _skeleton(arch, 10, {})
    except Exception:  # noqa: BLE001 - skip architectures that cannot build on meta
        return None
    return _shapes(skeleton.state_dict()), head_name(skeleton)


def guess_architecture(state: Mapping[str, torch.Tensor]) -> str | None:
    """The registered architecture whose parameter names and shapes fit ``state`` best.

    Scores every registered architecture (built once on the meta device) by the share
    of keys matching in name and shape (the classifier's output size and the first
    layer's input channels may differ); None when none matches at least half the keys.
    """
    from deepprofile.models.registry import ARCHITECTURES

    have = _shapes(state)
    best, best_score = None, 0.5
    for arch in ARCHITECTURES:
        ref = _reference(arch)
        if ref is None:
            continue
        want, head = ref
        same = 0
        for key, shape in want.items():
            got = have.get(key)
            if got == shape or (got is not None and len(got) == len(shape) and (
                    (head and key.startswith(f"{head}.") and got[1:] == shape[1:])
                    or (len(shape) == 4 and got[0] == shape[0] and got[2:] == shape[2:]))):
                same += 1
        score = same / max(len(want), len(have))
        if score > best_score:
            best, best_score = arch, score
    return best


def _first(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def mismatch_message(model: nn.Module, state: Mapping[str, torch.Tensor], path: Any,
                     arch: str, num_classes: int) -> str:
    """One line: what does not fit (missing, unexpected, other shapes) and a likely arch."""
    want, have = _shapes(model.state_dict()), _shapes(state)
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    shapes = [f"{k} {'x'.join(map(str, have[k]))} in the file, "
              f"{'x'.join(map(str, want[k]))} in the model"
              for k in want if k in have and have[k] != want[k]]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_first(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches ({_first(shapes, 2)})")
    guess = guess_architecture(state)
    hint = (f" The file looks like {guess} weights: pass --arch {guess}." if guess and guess != arch
            else " Check --arch and --num-classes.")
    return (f"Weights in {path} do not fit {arch} with num_classes={num_classes}: "
            + "; ".join(parts or ["the file's tensors do not load"]) + "." + hint)


def check_finite(model: nn.Module, source: Any) -> None:
    """Raise :class:`NonFiniteWeightsError` naming the tensors holding NaN or inf."""
    bad = [name for name, t in model.state_dict().items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise NonFiniteWeightsError(
            f"The weights in {source} contain NaN or inf ({_first(bad)}); the model's "
            "outputs would be meaningless. Use a checkpoint from before training diverged."
        )


def check_model_fits_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: Any,
                           arch: str, num_classes: int) -> None:
    """Load ``state`` into ``model`` (strict), turning a mismatch into one clear line."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DeepProfileError(mismatch_message(model, state, path, arch, num_classes)) from exc


def check_forward(model: nn.Module, dataset: Any, device: Any = "cpu", *,
                  num_classes: int | None = None) -> None:
    """Run the dataset's first image through ``model`` before a long pass over all of them.

    A model that cannot take the images (channel count, size) or whose logits are not
    finite raises one clear :class:`DeepProfileError` instead of a traceback mid-capture.
    """
    image = dataset[0][0]
    x = torch.as_tensor(image).float().unsqueeze(0).to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(x)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise DeepProfileError(
            f"The model does not accept the dataset's images (shape "
            f"{'x'.join(map(str, x.shape[1:]))}): {first} Use a dataset with the "
            "channels and size the model was trained on (digits: 1 channel, shapes and "
            "folders: 3).") from None
    finally:
        model.train(was_training)
    if not torch.is_tensor(logits) or logits.ndim != 2:
        raise DeepProfileError(
            f"The model returns {type(logits).__name__} of shape "
            f"{tuple(getattr(logits, 'shape', ()))}; deepprofile needs a classifier "
            "returning logits of shape (batch, classes).")
    if not bool(torch.isfinite(logits).all()):
        raise NonFiniteWeightsError(
            "The model's logits on the first image are NaN or inf; its weights or inputs "
            "are broken (check the checkpoint and the normalisation).")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise DeepProfileError(
            f"The model returns {logits.shape[1]} logits but records {num_classes} classes.")
