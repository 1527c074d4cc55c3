"""The model behind a run folder: checkpoint, architecture and class count from run.json.

Every command that reloads a run's model goes through :func:`load_run_model`, so a run
captured from a plain weights file (``--arch resnet50 --num-classes 4``) needs those
options only once, at capture; ``--arch`` / ``--num-classes`` given later override.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepprofile.errors import DeepProfileError, MissingFileError, StoreMismatchError
from deepprofile.models.registry import ModelInfo, load_model


def run_model_spec(run_dir: str | Path) -> dict[str, Any]:
    """``checkpoint``, ``arch``, ``num_classes``, ``arch_kwargs``, ``weights_hash`` of a run."""
    from deepprofile.rundir import RunDir

    rd = RunDir(run_dir)
    if not rd.overview_path.is_file():
        raise MissingFileError(
            f"{rd.path} is not a run folder (no run.json); make one with "
            "`deepprofile capture MODEL --out RUN_DIR`.")
    overview = rd.read_overview()
    info = overview.get("model_info") or {}
    return {
        "checkpoint": overview.get("checkpoint"), "arch": info.get("arch"),
        "num_classes": info.get("num_classes"), "arch_kwargs": info.get("arch_kwargs") or {},
        "weights_hash": overview.get("weights_hash"), "run_json": str(rd.overview_path),
    }


def load_run_model(
    run_dir: str | Path,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    unsafe: bool = False,
) -> tuple[nn.Module, ModelInfo]:
    """Load the checkpoint named in ``RUN_DIR/run.json`` and check its weights hash.

    The architecture, its arguments and the class count recorded at capture are used
    unless ``arch`` / ``num_classes`` are given. A checkpoint whose weights changed since
    the capture raises :class:`StoreMismatchError`.
    """
    spec = run_model_spec(run_dir)
    checkpoint = spec["checkpoint"]
    if not checkpoint:
        raise DeepProfileError(
            f"{spec['run_json']} names no checkpoint (was the run captured from a randomly "
            "initialised model?); capture from a checkpoint file.")
    if not Path(checkpoint).exists():
        raise MissingFileError(
            f"The run's checkpoint {checkpoint} (from {spec['run_json']}) does not exist; "
            "restore it or capture again.")
    use_arch = arch or spec["arch"]
    same_arch = use_arch == spec["arch"]
    model, info = load_model(
        checkpoint, num_classes=num_classes or (spec["num_classes"] if same_arch else None),
        device=device, arch=use_arch,
        arch_kwargs=dict(spec["arch_kwargs"]) if same_arch else None, unsafe=unsafe)
    recorded = spec["weights_hash"]
    if recorded and info.weights_hash and recorded != info.weights_hash:
        raise StoreMismatchError(
            f"The checkpoint {checkpoint} has weights hash {info.weights_hash}, but the run was "
            f"captured with {recorded}: the file changed since. Capture the run again.")
    return model, info
