"""Model registry: torchvision architectures and the demo CNN by name, plus weight loading.

No weights are ever downloaded: registered models start from random init and
take their weights from a file the user supplies (a state_dict, a deepprofile
checkpoint, or a common training-script checkpoint holding a state_dict).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepprofile.errors import DeepProfileError, MissingFileError
from deepprofile.models.fit import (
    check_finite,
    check_model_fits_state,
    guess_architecture,
    infer_arch_kwargs,
    infer_num_classes,
    mismatch_message,
)
from deepprofile.models.small import SmallResNet


def _torchvision(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int = 1000, **kwargs: Any) -> nn.Module:
        import torchvision.models as tvm

        return getattr(tvm, name)(weights=None, num_classes=num_classes, **kwargs)

    build.__name__ = name
    return build


TORCHVISION_MODELS = (
    "resnet18", "resnet34", "resnet50", "resnet101", "wide_resnet50_2", "wide_resnet101_2",
    "resnext50_32x4d", "resnext101_32x8d", "vgg11", "vgg11_bn", "vgg16", "vgg16_bn",
    "densenet121", "mobilenet_v2", "efficientnet_b0", "alexnet",
)
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "small_resnet": SmallResNet,
    **{name: _torchvision(name) for name in TORCHVISION_MODELS},
}


@dataclass(frozen=True)
class ModelInfo:
    """Where a model came from: architecture, its arguments, weights source and hash."""

    arch: str
    num_classes: int
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    source: str = "random init"
    weights_hash: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Attribute :func:`build_model` sets on the models it builds: the constructor call.
ARCH_ATTRIBUTE = "_deepprofile_arch"


def register_model(name: str, builder: Callable[..., nn.Module]) -> None:
    """Register a user architecture so checkpoints and the CLI can name it."""
    ARCHITECTURES[name] = builder


def build_model(name: str, num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """Build a registered architecture with random weights (never downloads)."""
    if name not in ARCHITECTURES:
        close = difflib.get_close_matches(name, list(ARCHITECTURES), n=3)
        raise DeepProfileError(
            f"Unknown architecture {name!r}."
            + (f" Did you mean: {', '.join(close)}?" if close else "")
            + f" Known: {', '.join(sorted(ARCHITECTURES))}."
        )
    model = ARCHITECTURES[name](num_classes=num_classes, **kwargs)
    # Remember the constructor call, so a random-init baseline can rebuild the architecture
    # with its own initialisation (see deepprofile.spectral.baseline).
    setattr(model, ARCH_ATTRIBUTE, {
        "arch": name, "num_classes": int(num_classes), "arch_kwargs": dict(kwargs)})
    return model


def arch_spec(model: nn.Module) -> dict[str, Any] | None:
    """``{"arch", "num_classes", "arch_kwargs"}`` of a model made by :func:`build_model`
    (``None`` for a model built some other way)."""
    spec = getattr(model, ARCH_ATTRIBUTE, None)
    return None if spec is None else {**spec, "arch_kwargs": dict(spec["arch_kwargs"])}


def save_checkpoint(
    path: str | Path, model: nn.Module, arch: str, arch_kwargs: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Save ``{"arch", "arch_kwargs", "num_classes", "state_dict", ...extra}`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    num_classes = extra.pop("num_classes", getattr(model, "num_classes", None))
    payload = {
        "format": "deepprofile-checkpoint-1",
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs or {}),
        "num_classes": num_classes,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def _read_file(path: Path, unsafe: bool) -> Any:
    if not path.exists():
        raise MissingFileError(
            f"Weights file {path} does not exist. Pass the path of a state_dict or checkpoint "
            "(deepprofile never downloads weights)."
        )
    if path.is_dir():
        raise DeepProfileError(
            f"{path} is a folder; expected a weights file written by torch.save (a state_dict "
            "or a checkpoint).")
    expected = "expected a PyTorch weights file written by torch.save (a state_dict or checkpoint)"
    if path.stat().st_size == 0:
        raise DeepProfileError(f"{path} is empty (0 bytes); {expected}.")
    try:
        return torch.load(path, map_location="cpu", weights_only=not unsafe)
    except Exception as exc:
        if not unsafe and "weights_only" in str(exc) and "Unsupported" in str(exc):
            raise DeepProfileError(
                f"{path} holds pickled Python objects (a whole model?), which are not loaded "
                "by default because unpickling runs code. If you trust the file, pass "
                "--unsafe-load / unsafe=True."
            ) from exc
        raise DeepProfileError(f"{path} is {_describe_file(path)}; {expected}.") from exc


def _describe_file(path: Path) -> str:
    """What a file that torch.load cannot read looks like (for the error message)."""
    head = path.read_bytes()[:512]
    size = path.stat().st_size
    if head.startswith(b"PK"):
        return f"a zip archive that torch.load cannot read (truncated or damaged? {size} bytes)"
    if head.startswith(b"\x80"):
        return f"a Python pickle that torch.load cannot read (truncated or damaged? {size} bytes)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"not a PyTorch file ({size} bytes of binary data)"
    first = text.strip().splitlines()[0][:40] if text.strip() else ""
    return f"a text file ({size} bytes, starting {first!r}), not PyTorch weights"


def extract_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The state_dict inside a checkpoint: itself, ``state_dict``/``model_state_dict``/
    ``model`` entries, or a pickled ``nn.Module``; DataParallel ``module.`` prefixes dropped."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "net"):
            if key in obj and isinstance(obj[key], (dict, nn.Module)):
                return extract_state_dict(obj[key])
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            if all(k.startswith("module.") for k in obj):
                obj = {k[len("module."):]: v for k, v in obj.items()}
            return obj
    raise DeepProfileError(
        "No state_dict found in the checkpoint (looked for a tensor dict, or keys "
        "'state_dict', 'model_state_dict', 'model', 'net')."
    )


def load_weights(model: nn.Module, path: str | Path, *, strict: bool = True,
                 unsafe: bool = False) -> nn.Module:
    """Load a weights file into ``model`` in place, with a readable error on mismatch."""
    state = extract_state_dict(_read_file(Path(path), unsafe))
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise DeepProfileError(mismatch_message(
            model, state, path, type(model).__name__, getattr(model, "num_classes", "?"))) from exc
    return model


def load_model(
    spec: str | Path,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    *,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    unsafe: bool = False,
) -> tuple[nn.Module, ModelInfo]:
    """A model ready for analysis (eval mode) and where it came from.

    ``spec`` is a deepprofile checkpoint (architecture inside), a weights file (then give
    ``arch``; ``num_classes`` is read from the classifier's weight shape when not given),
    or a registered architecture name (random init). Weights holding NaN or inf raise
    :class:`~deepprofile.errors.NonFiniteWeightsError`.
    """
    from deepprofile.provenance import weights_hash

    spec_str = str(spec)
    path = Path(spec_str)
    if spec_str in ARCHITECTURES and not path.exists():
        kwargs = dict(arch_kwargs or {})
        model = build_model(spec_str, num_classes=num_classes or 1000, **kwargs)
        info = ModelInfo(spec_str, num_classes or 1000, kwargs)
    else:
        if not path.exists():
            close = difflib.get_close_matches(spec_str, list(ARCHITECTURES), n=3)
            raise MissingFileError(
                f"{spec_str!r} is neither a checkpoint file nor a known architecture."
                + (f" Did you mean: {', '.join(close)}?" if close else "")
                + " Architectures: " + ", ".join(sorted(ARCHITECTURES)) + "."
            )
        raw = _read_file(path, unsafe)
        state = extract_state_dict(raw)
        own = isinstance(raw, dict) and isinstance(raw.get("arch"), str)
        if own and arch is None or own and arch == raw["arch"]:
            arch_name = raw["arch"]
            kwargs = {**dict(raw.get("arch_kwargs") or {}), **dict(arch_kwargs or {})}
            n_cls = num_classes or raw.get("num_classes")
            extra = {k: raw[k] for k in ("epoch", "metrics", "seed", "class_names", "dataset")
                     if k in raw}
        else:
            if arch is None:
                guess = guess_architecture(state)
                raise DeepProfileError(
                    f"{path} is a plain weights file; say which architecture it belongs to "
                    f"with --arch NAME (arch=...)"
                    + (f"; its keys and shapes match {guess}." if guess else ".")
                )
            if arch not in ARCHITECTURES:
                build_model(arch)  # raises the unknown-architecture error with suggestions
            arch_name, extra = arch, {}
            kwargs = {**infer_arch_kwargs(arch, state), **dict(arch_kwargs or {})}
            n_cls = num_classes
        n_cls = int(n_cls or infer_num_classes(arch_name, state, kwargs) or 1000)
        model = build_model(arch_name, num_classes=n_cls, **kwargs)
        check_model_fits_state(model, state, path, arch_name, n_cls)
        check_finite(model, path)
        info = ModelInfo(arch_name, n_cls, kwargs, str(path.resolve()), extra=extra)
    model.eval().to(device)
    return model, ModelInfo(**{**info.to_dict(), "weights_hash": weights_hash(model)})


def resolve_device(device: str | None = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeepProfileError("--device cuda was asked for but no CUDA device is available.")
    return dev
