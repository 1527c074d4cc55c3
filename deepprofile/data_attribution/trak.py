"""TRAK scores over training checkpoints, driven through traker's own pieces.

traker's :class:`~trak.gradient_computers.FunctionalGradientComputer` computes
per-sample gradients of a model output, its projectors (``BasicProjector`` on the
CPU, the ``fast_jl`` ``CudaProjector`` on CUDA when installed) sketch them, and
its :class:`~trak.score_computers.BasicScoreComputer` builds ``X (X^T X)^-1`` and
the scores. What this module adds around them:

- training features live in a Zarr :class:`~deepprofile.data_attribution.store.FeatureStore`
  in the run folder (resumable by chunk, never recomputed, keyed by checkpoint
  hash, projection size, seed and parameter scope), instead of traker's memmaps
  in a ``save_dir`` that is silently reused;
- a parameter *scope*: concept targets differentiate only the parameters up to
  the probed layer, and the training features are restricted to the same
  parameters;
- a ridge term scaled to each checkpoint's kernel: ``X^T X + lambda_c I`` with
  ``lambda_c = lambda_reg + ridge * trace(X^T X) / proj_dim`` (``ridge`` times the mean
  eigenvalue). traker's own ``lambda_reg`` is an absolute number, which means nothing
  across models and projection sizes (the kernel's scale follows the gradients'). With
  ``ridge = 0`` (and ``lambda_reg = 0``) the scores are ``TRAKer``'s exactly. The default
  ``ridge = 1`` (:data:`DEFAULT_RIDGE`) lifted the demo CNN's LDS from about 0.1 to 0.3; see
  docs/data_attribution.md for the sweep and how the value was chosen;
- the checks traker does not make: ``proj_dim >= n_train`` (a singular kernel
  that makes every score about 0) is an error unless a ridge term is set.

The ensemble over checkpoints follows ``TRAKer.finalize_scores`` exactly:
``scores = mean_c(Phi_c (Phi_c^T Phi_c + lambda_c I)^-1 G_c^T) * mean_c(Q_c)``
(with traker's rescaling of each inverse by its mean absolute entry).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from trak.gradient_computers import FunctionalGradientComputer
from trak.modelout_functions import AbstractModelOutput
from trak.projectors import AbstractProjector, BasicProjector, ProjectionType
from trak.score_computers import BasicScoreComputer

from deepprofile.data_attribution.outputs import MarginOutput, subset
from deepprofile.data_attribution.store import FeatureArray, FeatureStore, feature_key
from deepprofile.errors import DeepProfileError, MissingFileError, ShapeError

log = logging.getLogger(__name__)
_PROJ_MATRIX_BUDGET = 2**26  # floats held by one projector block (256 MB in float32)
DEFAULT_RIDGE = 1.0
"""Default ridge relative to the mean eigenvalue of ``X^T X`` (0 reproduces ``TRAKer``)."""


class DataAttributionError(DeepProfileError, ValueError):
    """Bad input to TRAK data attribution (data, checkpoints, projection size, concept)."""


@dataclass(frozen=True)
class CheckpointInfo:
    """One training checkpoint of the ensemble: where, its file hash, epoch and seed."""

    path: str
    sha256: str
    epoch: int | None
    seed: int | None
    model_id: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file (first 16 hex digits)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _epoch_of(path: Path) -> int | None:
    match = re.search(r"epoch_(\d+)", path.name)
    return int(match.group(1)) if match else None


def checkpoint_infos(paths: Sequence[str | Path]) -> list[CheckpointInfo]:
    """Hash and describe checkpoint files (model ids 0..n-1 in the given order)."""
    infos = []
    for i, p in enumerate(paths):
        path = Path(p)
        if not path.exists():
            raise MissingFileError(f"Checkpoint {path} does not exist.")
        raw = torch.load(path, map_location="cpu", weights_only=True)
        seed = raw.get("seed") if isinstance(raw, dict) else None
        epoch = raw.get("epoch") if isinstance(raw, dict) else None
        infos.append(CheckpointInfo(str(path.resolve()), file_hash(path),
                                    epoch if epoch is not None else _epoch_of(path),
                                    seed, i))
    return infos


def load_state(path: str | Path) -> dict[str, Tensor]:
    """The state_dict inside a checkpoint file."""
    from deepprofile.models.registry import extract_state_dict

    return extract_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def make_projector(grad_dim: int, proj_dim: int, seed: int, model_id: int,
                   device: torch.device) -> AbstractProjector:
    """traker's fast CUDA projector when ``fast_jl`` works on ``device``, else its
    ``BasicProjector`` with one block as large as memory allows (generated once per
    checkpoint instead of once per block and batch; block size fixed here, never the
    ``<= 100`` single-block path that traker frees in ``finalize_features``)."""
    if device.type == "cuda":
        try:
            import fast_jl  # noqa: F401
            from trak.projectors import CudaProjector

            proj = CudaProjector(grad_dim, proj_dim, seed, ProjectionType.rademacher, device,
                                 max_batch_size=32, dtype=torch.float32)
            proj.project(torch.zeros(1, grad_dim, device=device), model_id)
            return proj
        except (ImportError, RuntimeError, AttributeError, ValueError) as exc:
            log.info("fast_jl projector unavailable (%s); using BasicProjector", exc)
    proj_type = ProjectionType.normal if device.type == "cpu" else ProjectionType.rademacher
    block = max(1, min(proj_dim, _PROJ_MATRIX_BUDGET // max(grad_dim, 1)))
    return BasicProjector(grad_dim, proj_dim, seed, proj_type, device, block_size=block,
                          dtype=torch.float32, model_id=model_id)


class ScopedGradientComputer(FunctionalGradientComputer):
    """traker's functional gradient computer, restricted to the parameters in ``scope``
    (only those are handed to ``functional_call`` and differentiated)."""

    def __init__(self, model: nn.Module, task: AbstractModelOutput, scope: Sequence[str] | None,
                 device: torch.device) -> None:
        self.scope = None if scope is None else list(scope)
        super().__init__(model, task, grad_dim=0, dtype=torch.float32, device=device)

    def load_model_params(self, model: nn.Module) -> None:
        self.func_weights = subset(model.named_parameters(), getattr(self, "scope", None))
        self.func_buffers = dict(model.named_buffers())

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.func_weights.values())


def _batches(dataset: Dataset, start: int, stop: int, batch_size: int,
             device: torch.device):
    loader = DataLoader(Subset(dataset, range(start, stop)), batch_size=batch_size)
    for x, y in loader:
        yield x.to(device), torch.as_tensor(y).long().to(device)


class TrakEnsemble:
    """TRAK over an ensemble of checkpoints of one architecture.

    Parameters
    ----------
    model:
        A model of the checkpoints' architecture; a private copy is loaded with
        each checkpoint in turn (``model`` itself is never modified).
    checkpoints:
        From :func:`checkpoint_infos`.
    train_set:
        The training set the checkpoints were trained on (``(image, label)`` items).
    store:
        Where training features are kept (``RUN_DIR/data_attribution.zarr``).
    proj_dim, projector_seed:
        Projection dimension, projector seed.
    lambda_reg, ridge:
        Ridge term on each checkpoint's ``X^T X``: ``lambda_reg`` (absolute, as in
        traker) plus ``ridge`` times the mean eigenvalue ``trace(X^T X) / proj_dim``.
        ``ridge=0, lambda_reg=0`` gives ``TRAKer``'s scores exactly.
    """

    def __init__(self, model: nn.Module, checkpoints: Sequence[CheckpointInfo],
                 train_set: Dataset, store: FeatureStore, *, proj_dim: int = 512,
                 projector_seed: int = 0, lambda_reg: float = 0.0,
                 ridge: float = DEFAULT_RIDGE, batch_size: int = 32,
                 chunk_size: int = 256, device: str | torch.device = "cpu",
                 quiet: bool = False) -> None:
        if not checkpoints:
            raise DataAttributionError("No checkpoints given; train with `deepprofile train`, "
                                       "which keeps several under checkpoints/.")
        self.n_train = len(train_set)  # type: ignore[arg-type]
        check_projection(self.n_train, proj_dim, lambda_reg, ridge)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(True)
        self.device = torch.device(device)
        self.model.to(self.device)
        self.checkpoints = list(checkpoints)
        self.train_set = train_set
        self.store = store
        self.proj_dim = int(proj_dim)
        self.projector_seed = int(projector_seed)
        self.lambda_reg = float(lambda_reg)
        self.ridge = float(ridge)
        self.batch_size = int(batch_size)
        self.chunk_size = int(chunk_size)
        self.quiet = quiet
        self._loaded: int | None = None

    # -- helpers -------------------------------------------------------------------
    def _load(self, ckpt: CheckpointInfo) -> None:
        if self._loaded != ckpt.model_id:
            self.model.load_state_dict(load_state(ckpt.path))
            self.model.eval()
            self._loaded = ckpt.model_id

    def _project(self, gc: ScopedGradientComputer, projector: AbstractProjector,
                 batch: tuple[Tensor, Tensor], model_id: int) -> Tensor:
        from deepprofile.attribution.memory import current_budget
        from deepprofile.data_attribution.featurize import samples_per_pass

        cap = samples_per_pass(gc.model, batch[0][:1], gc.n_params, projector,
                               current_budget())
        if cap is not None and len(batch[0]) > cap:  # the memory bound: several passes
            return torch.cat([self._project(gc, projector, (batch[0][i:i + cap],
                                                            batch[1][i:i + cap]), model_id)
                              for i in range(0, len(batch[0]), cap)])
        grads = gc.compute_per_sample_grad(batch=batch)
        out = projector.project(grads, model_id=model_id)
        return out / torch.sqrt(torch.tensor(float(gc.n_params)))

    def feature_array(self, ckpt: CheckpointInfo, scope: Sequence[str] | None,
                      scope_name: str = "all") -> FeatureArray:
        """The store's feature array of ``ckpt`` (created empty when new)."""
        key = feature_key(scope_name, ckpt.sha256, self.proj_dim, self.projector_seed)
        config = {"checkpoint": ckpt.path, "sha256": ckpt.sha256, "scope": scope_name,
                  "scope_params": list(scope) if scope is not None else None,
                  "projector_seed": self.projector_seed, "output": "margin"}
        return self.store.open_or_create(key, config, n_train=self.n_train,
                                         proj_dim=self.proj_dim, chunk_size=self.chunk_size)

    def features(self, ckpt: CheckpointInfo, scope: Sequence[str] | None,
                 scope_name: str = "all",
                 progress: Callable[[int], None] | None = None) -> FeatureArray:
        """Featurise the training set for one checkpoint (pending chunks only)."""
        from deepprofile.attribution.memory import current_budget
        from deepprofile.data_attribution.featurize import featurize_chunks

        feats = self.feature_array(ckpt, scope, scope_name)
        pending = feats.pending_chunks()
        if not pending:
            return feats
        self._load(ckpt)
        gc = ScopedGradientComputer(self.model, MarginOutput(), scope, self.device)
        projector = make_projector(gc.n_params, self.proj_dim, self.projector_seed,
                                   ckpt.model_id, self.device)
        featurize_chunks(gc, projector, self.train_set, feats, pending,
                         model_id=ckpt.model_id, n_params=gc.n_params,
                         batch_size=self.batch_size, device=self.device, progress=progress,
                         budget=current_budget())
        return feats

    def featurize(self, scope: Sequence[str] | None = None, scope_name: str = "all") -> None:
        """Featurise every checkpoint (resuming, skipping finished ones), with a progress bar."""
        from deepprofile.progress import progress_bar

        with progress_bar(self.quiet) as bar:
            task = bar.add_task(f"TRAK features ({scope_name})",
                                total=self.n_train * len(self.checkpoints))
            for ckpt in self.checkpoints:
                self.features(ckpt, scope, scope_name,
                              progress=lambda n: bar.advance(task, n))

    def target_grads(self, ckpt: CheckpointInfo, output: AbstractModelOutput,
                     targets: Dataset, scope: Sequence[str] | None) -> Tensor:
        """Projected, normalised target gradients ``(n_targets, proj_dim)`` for one checkpoint."""
        self._load(ckpt)
        gc = ScopedGradientComputer(self.model, output, scope, self.device)
        projector = make_projector(gc.n_params, self.proj_dim, self.projector_seed,
                                   ckpt.model_id, self.device)
        rows = [self._project(gc, projector, batch, ckpt.model_id).cpu()
                for batch in _batches(targets, 0, len(targets), self.batch_size,  # type: ignore[arg-type]
                                      self.device)]
        return torch.cat(rows)

    def ridge_of(self, xtx: Tensor) -> float:
        """The ridge ``lambda_c`` added to one checkpoint's ``X^T X``."""
        mean_eig = float(torch.trace(xtx.double())) / xtx.shape[0]
        return self.lambda_reg + self.ridge * mean_eig

    def scores(self, output: AbstractModelOutput, targets: Dataset, *,
               scope: Sequence[str] | None = None, scope_name: str = "all",
               groups: np.ndarray | None = None) -> np.ndarray:
        """TRAK scores ``(n_train, n_targets)`` ensembled over the checkpoints.

        ``groups`` (``(n_groups, len(targets))``) averages target gradients into
        group targets (a concept's mean probe logit over its images): the scores are
        linear in the target gradient, so this is the mean of the per-image scores.
        """
        self.featurize(scope, scope_name)
        computer = BasicScoreComputer(dtype=torch.float32, device=self.device,
                                      lambda_reg=self.lambda_reg, logging_level=logging.WARNING)
        acc: Tensor | None = None
        q_sum = np.zeros(self.n_train, dtype=np.float64)
        for ckpt in self.checkpoints:
            g_np, q = self.features(ckpt, scope, scope_name).read()
            g = torch.as_tensor(g_np, device=self.device)
            xtx = computer.get_xtx(g)
            computer.lambda_reg = self.ridge_of(xtx)
            feats = computer.get_x_xtx_inv(g, xtx)
            tg = self.target_grads(ckpt, output, targets, scope).to(self.device)
            if groups is not None:
                tg = torch.as_tensor(np.asarray(groups, dtype=np.float32),
                                     device=self.device) @ tg
            part = (feats @ tg.T).detach().cpu().double()
            acc = part if acc is None else acc + part
            q_sum += q
        n = len(self.checkpoints)
        assert acc is not None
        return (acc.numpy() / n) * (q_sum / n)[:, None]


def check_projection(n_train: int, proj_dim: int, lambda_reg: float,
                     ridge: float = 0.0) -> None:
    """Refuse a projection size that makes ``X^T X`` singular (traker pitfall 2) when no
    ridge term keeps it invertible."""
    if proj_dim < 1:
        raise DataAttributionError(f"proj_dim must be >= 1, got {proj_dim}.")
    if proj_dim >= n_train and lambda_reg <= 0 and ridge <= 0:
        raise DataAttributionError(
            f"proj_dim={proj_dim} is not below the {n_train} training images, so X^T X is "
            f"singular and every score would be about 0; use --proj-dim below {n_train} "
            "(or pass --ridge > 0).")


def check_training_set(model: nn.Module, train_set: Dataset, num_classes: int,
                       device: str | torch.device = "cpu") -> None:
    """One-line errors when ``train_set`` cannot be the checkpoints' training data."""
    n = len(train_set)  # type: ignore[arg-type]
    if n == 0:
        raise DataAttributionError("The training set is empty; pass --train-data.")
    x, _ = train_set[0]
    x = torch.as_tensor(x)
    try:
        with torch.no_grad():
            out = model.to(device)(x.unsqueeze(0).to(device))
    except RuntimeError as exc:
        raise DataAttributionError(
            f"Training images of shape {tuple(x.shape)} do not fit the checkpoints' model "
            f"({str(exc).splitlines()[0][:120]}); pass the training data the model was "
            "trained on (--train-data).") from exc
    if out.ndim != 2 or out.shape[1] != num_classes:
        raise ShapeError(f"The model returns {tuple(out.shape)}, not (N, {num_classes}) logits.")
    labels = _labels(train_set)
    if labels.max() >= num_classes or labels.min() < 0:
        raise DataAttributionError(
            f"The training set has labels up to {int(labels.max())} but the checkpoints have "
            f"{num_classes} classes; pass the training data the model was trained on "
            "(--train-data).")


def _labels(dataset: Dataset) -> np.ndarray:
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return np.asarray(torch.as_tensor(targets)).astype(int)
    return np.array([int(dataset[i][1]) for i in range(len(dataset))])  # type: ignore[arg-type]


def labels_of(dataset: Dataset) -> np.ndarray:
    """Integer labels of every item of ``dataset``."""
    return _labels(dataset)
