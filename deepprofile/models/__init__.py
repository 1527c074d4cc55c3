"""Models: registry of torchvision architectures and the demo CNN, checkpoints, training."""

from deepprofile.models.fit import check_finite, check_forward, guess_architecture
from deepprofile.models.registry import (
    ARCHITECTURES,
    ModelInfo,
    arch_spec,
    build_model,
    extract_state_dict,
    load_model,
    load_weights,
    register_model,
    resolve_device,
    save_checkpoint,
)
from deepprofile.models.runs import load_run_model, run_model_spec
from deepprofile.models.small import ResidualBlock, SmallResNet

__all__ = [
    "ARCHITECTURES", "ModelInfo", "ResidualBlock", "SmallResNet", "arch_spec", "build_model",
    "check_finite", "check_forward", "extract_state_dict", "guess_architecture", "load_model",
    "load_run_model", "load_weights", "register_model", "resolve_device", "run_model_spec",
    "save_checkpoint",
]
