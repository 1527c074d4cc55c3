"""The noisy fine-tuned model of a run, saved once in the run folder and reused.

``run_attribution(..., finetune_steps=N)`` fine-tunes a copy of the model with noisy
residual branches (:func:`~deepprofile.attribution.sde.noisy_finetune`). The weights go to
``RUN_DIR/attribution_finetuned.pt`` (written under a temporary name, then renamed) with
their identity: the run model's weights hash, the fine-tuning settings (sigma, steps,
noise mode, seed, learning rate, batch size), the training images (dataset spec and
indices) and the device. A rerun with the same identity (after a kill, or to add maps)
loads them instead of fine-tuning again; Dask workers load them to compute the
fine-tuned maps. Another identity fine-tunes again and replaces the file. A file that
does not load, or whose weights do not hash to the value recorded in it, is treated as
absent.

Kill point (:mod:`deepprofile.testhooks`): ``attribution-finetuned`` (weights saved and
renamed into place).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepprofile.errors import DeepProfileError
from deepprofile.testhooks import kill_point

FILE_NAME = "attribution_finetuned.pt"
FORMAT_VERSION = 1
#: noisy_finetune's optimiser settings used by run_attribution (part of the identity).
LR = 1e-3
BATCH_SIZE = 64


def finetune_identity(model: nn.Module, *, sigma: float, steps: int, mode: str, seed: int,
                      train_spec: Mapping[str, Any], train_indices: Sequence[int]
                      ) -> dict[str, Any]:
    """What the fine-tuned weights depend on (JSON-ready)."""
    import hashlib

    from deepprofile.attribution.methods import model_device
    from deepprofile.attribution.store import canonical
    from deepprofile.provenance import weights_hash

    idx = np.asarray(train_indices, np.int64)
    return canonical({
        "weights_hash": weights_hash(model), "sigma": float(sigma), "steps": int(steps),
        "mode": mode, "seed": int(seed), "lr": LR, "batch_size": BATCH_SIZE,
        "train": {"spec": dict(train_spec), "n": len(idx),
                  "indices": hashlib.sha256(idx.tobytes()).hexdigest()},
        "device": str(model_device(model)),
    })


def _load(path: Path, identity: Mapping[str, Any] | None, model: nn.Module
          ) -> tuple[nn.Module, list[float], str] | None:
    """The fine-tuned copy of ``model`` in ``path`` if its identity matches (``None``
    checks nothing) and its weights hash to the recorded value; else ``None``."""
    from deepprofile.provenance import weights_hash

    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("format") != FORMAT_VERSION:
            return None
        if identity is not None and json.loads(saved["identity"]) != identity:
            return None
        tuned = copy.deepcopy(model)
        tuned.load_state_dict(saved["state_dict"])
        tuned.eval()
        if weights_hash(tuned) != saved["weights_hash"]:
            return None
        return tuned, [float(v) for v in saved["losses"]], str(saved["weights_hash"])
    except Exception:  # noqa: BLE001 - an unreadable or incomplete file is fine-tuned again
        return None


def _save(path: Path, identity: Mapping[str, Any], tuned: nn.Module, losses: list[float]
          ) -> str:
    """Write the weights atomically (temporary file, fsync, rename); their hash."""
    from deepprofile.provenance import weights_hash

    digest = weights_hash(tuned)
    tmp = path.parent / f".{path.name}.creating-{os.getpid()}"
    with open(tmp, "wb") as fh:
        torch.save({"format": FORMAT_VERSION, "identity": json.dumps(identity, sort_keys=True),
                    "weights_hash": digest, "losses": [float(v) for v in losses],
                    "state_dict": {k: v.detach().cpu() for k, v in
                                   tuned.state_dict().items()}}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    kill_point("attribution-finetuned")
    return digest


def _clean_leftovers(path: Path) -> None:
    """Temporary files of killed processes (the process id ends the name)."""
    from deepprofile.locking import pid_alive

    for tmp in path.parent.glob(f".{path.name}.creating-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid == os.getpid() or not pid_alive(pid):
            tmp.unlink(missing_ok=True)


def load_or_finetune(
    model: nn.Module, run_path: Path | None, identity: Mapping[str, Any],
    train_data: Callable[[], tuple[torch.Tensor, np.ndarray]], *, quiet: bool = True,
) -> tuple[nn.Module, list[float], str, bool]:
    """The noisy fine-tuned copy of ``model`` described by ``identity``
    (:func:`finetune_identity`): loaded from ``RUN_DIR/attribution_finetuned.pt`` when it
    holds these weights, else fine-tuned on ``train_data()`` and saved there.

    Returns the model (eval mode), the loss of every step, its weights hash and whether
    it was fine-tuned now. Without ``run_path`` nothing is saved.
    """
    from deepprofile.attribution.sde import noisy_finetune
    from deepprofile.provenance import weights_hash

    path = None if run_path is None else Path(run_path) / FILE_NAME
    if path is not None:
        _clean_leftovers(path)
        got = _load(path, identity, model)
        if got is not None:
            return (*got, False)
    x_tr, y_tr = train_data()
    tuned, losses = noisy_finetune(
        model, x_tr, y_tr, sigma=identity["sigma"], steps=identity["steps"],
        mode=identity["mode"], seed=identity["seed"], lr=LR, batch_size=BATCH_SIZE,
        quiet=quiet)
    digest = weights_hash(tuned) if path is None else _save(path, identity, tuned, losses)
    return tuned, losses, digest, True


def load_finetuned(model: nn.Module, path: str | Path, weights_hash: str) -> nn.Module:
    """The fine-tuned weights at ``path`` loaded into a copy of ``model`` (a Dask worker's
    run model); an error when they are not the ones hashed ``weights_hash``."""
    got = _load(Path(path), None, model)
    if got is None or got[2] != weights_hash:
        raise DeepProfileError(
            f"The noisy fine-tuned weights at {path} are missing or not the ones of this "
            f"run (weights {weights_hash}); run `deepprofile attribute` again.")
    return got[0]
