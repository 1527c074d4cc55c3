"""Models: registry of torchvision architectures and the demo CNN, checkpoints, training."""

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
from deepprofile.models.small import ResidualBlock, SmallResNet

__all__ = [
    "ARCHITECTURES", "ModelInfo", "ResidualBlock", "SmallResNet", "arch_spec", "build_model",
    "extract_state_dict", "load_model", "load_weights", "register_model", "resolve_device",
    "save_checkpoint",
]
