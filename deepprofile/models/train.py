"""Training loop for the demo model (and any registered architecture on a small dataset).

Saves several checkpoints per run (``checkpoints/epoch_XXX.pt``, used later as a
TRAK ensemble), ``final.pt`` and a JSON training log. The run folder also holds
``train_state.pt`` after every epoch, so an interrupted run started again with
the same configuration resumes from its last finished epoch and ends with the
same weights as an uninterrupted one. Shuffling is seeded per epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deepprofile.errors import (
    DeepProfileError,
    EmptyDatasetError,
    NonFiniteWeightsError,
    StoreMismatchError,
)
from deepprofile.models.fit import check_finite
from deepprofile.models.registry import build_model, save_checkpoint
from deepprofile.provenance import now_iso, package_versions
from deepprofile.results import write_json


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run's result."""

    arch: str = "small_resnet"
    arch_kwargs: dict[str, Any] = field(default_factory=lambda: {"in_channels": 1})
    dataset: str = "digits"
    dataset_params: dict[str, Any] = field(default_factory=dict)
    epochs: int = 8
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    n_checkpoints: int = 4

    def checkpoint_epochs(self) -> list[int]:
        """Epochs (1-based) after which a checkpoint is kept: evenly spaced, last included."""
        n = max(1, min(self.n_checkpoints, self.epochs))
        return sorted({round(self.epochs * (i + 1) / n) for i in range(n)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainResult:
    """Where the checkpoints are and how training went."""

    out_dir: str
    final_checkpoint: str
    checkpoints: list[str]
    test_accuracy: float
    seconds: float
    log: list[dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int = 256,
             device: str | torch.device = "cpu") -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``dataset`` (eval mode, restored)."""
    was_training = model.training
    model.eval()
    correct, loss, n = 0, 0.0, 0
    try:
        for x, y in DataLoader(dataset, batch_size=batch_size):
            x, y = x.to(device), torch.as_tensor(y).to(device)
            out = model(x)
            loss += float(nn.functional.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            n += len(y)
    finally:
        model.train(was_training)
    if n == 0:
        raise EmptyDatasetError("Cannot evaluate on an empty dataset.")
    return correct / n, loss / n


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    train_set: Dataset | None = None,
    test_set: Dataset | None = None,
    device: str | torch.device = "cpu",
    quiet: bool = False,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``config.arch`` and write checkpoints + ``train_log.json`` under ``out_dir``."""
    import math

    from deepprofile.data import class_names, load_dataset

    if config.epochs < 1 or config.batch_size < 1 or config.n_checkpoints < 1:
        raise DeepProfileError(
            f"epochs, batch_size and n_checkpoints must be >= 1; got {config.epochs}, "
            f"{config.batch_size}, {config.n_checkpoints}.")
    if not (math.isfinite(config.lr) and config.lr > 0):
        raise DeepProfileError(f"The learning rate must be a finite number > 0, not {config.lr}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_set = train_set or load_dataset(config.dataset, "train", **config.dataset_params)
    test_set = test_set or load_dataset(config.dataset, "test", **config.dataset_params)
    if len(train_set) == 0:
        raise EmptyDatasetError("The training set is empty.")
    names = class_names(train_set) or []
    num_classes = len(names) or int(max(int(y) for _, y in train_set)) + 1

    torch.manual_seed(config.seed)
    model = build_model(config.arch, num_classes=num_classes, **config.arch_kwargs).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay, nesterov=True)
    steps_per_epoch = -(-len(train_set) // config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.25
    )
    log: list[dict[str, float]] = []
    start_epoch, elapsed = 0, 0.0
    state_path = out / "train_state.pt"
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if state["config"] != config.to_dict():
            raise StoreMismatchError(
                f"{out} holds an unfinished training run with a different configuration; "
                "use another output folder or delete it."
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, log, elapsed = state["epoch"], state["log"], state["seconds"]

    keep = config.checkpoint_epochs()
    checkpoints = [str(out / "checkpoints" / f"epoch_{e:03d}.pt") for e in keep if e <= start_epoch]
    meta = {"config": config.to_dict(), "class_names": names,
            "dataset": getattr(train_set, "spec", lambda: {})()}
    from deepprofile.progress import progress_bar

    with progress_bar(quiet) as progress:
        task = progress.add_task("training", total=config.epochs, completed=start_epoch)
        for epoch in range(start_epoch, config.epochs):
            t0 = time.perf_counter()
            model.train()
            gen = torch.Generator().manual_seed(config.seed * 10_007 + epoch)
            loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True,
                                generator=gen)
            total, seen = 0.0, 0
            for step, (x, y) in enumerate(loader):
                x, y = x.to(device), torch.as_tensor(y).to(device)
                opt.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(model(x), y)
                if not bool(torch.isfinite(loss)):
                    raise NonFiniteWeightsError(
                        f"Training diverged: the loss is {float(loss)} at epoch {epoch + 1}, "
                        f"step {step + 1} (lr {config.lr:g}); no checkpoint was written for "
                        "this epoch. Lower --lr or check the data's normalisation.")
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(y)
                seen += len(y)
            check_finite(model, f"the model after epoch {epoch + 1} (training diverged; "
                                f"lower the learning rate {config.lr:g})")
            acc, test_loss = evaluate(model, test_set, device=device)
            elapsed += time.perf_counter() - t0
            row = {"epoch": epoch + 1, "train_loss": total / seen, "test_loss": test_loss,
                   "test_accuracy": acc, "lr": sched.get_last_lr()[0], "seconds": elapsed}
            log.append(row)
            if epoch + 1 in keep:
                path = out / "checkpoints" / f"epoch_{epoch + 1:03d}.pt"
                save_checkpoint(path, model, config.arch, config.arch_kwargs,
                                num_classes=num_classes, epoch=epoch + 1,
                                metrics={"test_accuracy": acc}, seed=config.seed, **meta)
                checkpoints.append(str(path))
            tmp = state_path.with_suffix(".tmp")
            torch.save({"config": config.to_dict(), "model": model.state_dict(),
                        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "epoch": epoch + 1, "log": log, "seconds": elapsed}, tmp)
            tmp.replace(state_path)
            write_json(out / "train_log.json", {"config": config.to_dict(), "log": log,
                                                 "finished": False})
            if on_epoch:
                on_epoch(row)
            progress.update(task, advance=1,
                            description=f"training: epoch {epoch + 1} acc {acc:.3f}")
    final = save_checkpoint(out / "final.pt", model, config.arch, config.arch_kwargs,
                            num_classes=num_classes, epoch=config.epochs,
                            metrics={"test_accuracy": log[-1]["test_accuracy"]},
                            seed=config.seed, **meta)
    result = TrainResult(str(out), str(final), checkpoints, log[-1]["test_accuracy"],
                         log[-1]["seconds"], log)
    write_json(out / "train_log.json", {"config": config.to_dict(), "log": log,
                                         "finished": True, "result": result.to_dict(),
                                         "versions": package_versions(), "date": now_iso()})
    return result

