"""``run_data_attribution``: TRAK for a run's predictions and concepts, written to the run folder.

Everything is checked before anything is written (checkpoints, training set against
the checkpoints, projection size, concept names), so bad input leaves the run folder
as it was. Writes:

- ``RUN_DIR/data_attribution.zarr``: training features per checkpoint (resumable);
- ``RUN_DIR/data_attribution/scores_<target>.npy``: the score matrices
  ``(n_train, n_targets)``; ``thumbnails.npz``: the ranked training images (for the
  report, which never reloads the dataset);
- ``RUN_DIR/results/data_attribution.json``: top-k rankings, precision@k, provenance.

A single checkpoint is allowed with a warning (recorded in the result): TRAK's
ensemble over checkpoints is what makes its scores reliable (the LDS roughly
doubles from 1 to several models in the TRAK paper), but one model still ranks.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from deepprofile.data_attribution.outputs import ConceptProbeOutput, MarginOutput, params_up_to
from deepprofile.data_attribution.results import (
    DataAttributionResult,
    TargetAttribution,
    precision_at_k,
    top_k,
)
from deepprofile.data_attribution.shortcut_target import (
    is_shortcut,
    prepare_shortcut,
    score_shortcut,
    test_concept_mask,
)
from deepprofile.data_attribution.store import FeatureStore
from deepprofile.data_attribution.trak import (
    DEFAULT_RIDGE,
    DataAttributionError,
    TrakEnsemble,
    check_projection,
    check_training_set,
    checkpoint_infos,
    labels_of,
)
from deepprofile.errors import MissingFileError, UnknownConceptError
from deepprofile.rundir import RunDir

STORE_NAME = "data_attribution.zarr"
SCORES_DIR = "data_attribution"
RESULT_NAME = "data_attribution"
THUMBNAILS = "thumbnails.npz"


def find_checkpoints(run_dir: str | Path, extra_model_dirs: Sequence[str | Path] = ()
                     ) -> list[Path]:
    """The checkpoints ``train`` kept for the run's model (``<model folder>/checkpoints/
    epoch_*.pt``, from ``run.json``'s checkpoint path), then those of ``extra_model_dirs``
    (other seeds trained on the same data)."""
    run = RunDir(run_dir)
    folders: list[Path] = []
    if run.overview_path.exists():
        ckpt = run.read_overview().get("checkpoint")
        if ckpt:
            folders.append(Path(ckpt).parent)
    folders += [Path(d) for d in extra_model_dirs]
    found: list[Path] = []
    for folder in folders:
        sub = folder / "checkpoints" if (folder / "checkpoints").is_dir() else folder
        found += sorted(sub.glob("epoch_*.pt"))
    return found


def shapes_truth(train_set: Dataset) -> tuple[Any, list[tuple[str, ...]]] | None:
    """Ground-truth concept set of a ``shapes`` training set, and each image's concept names."""
    spec = getattr(train_set, "spec", lambda: {})()
    if spec.get("name") != "shapes":
        return None
    from deepprofile.concepts.sets import shapes_concepts

    cset = shapes_concepts(range(len(train_set)), **{  # type: ignore[arg-type]
        k: spec[k] for k in ("seed", "spurious_class", "marker_rate", "marker_base_rate")})
    per_image = [tuple(n for n, m in zip(cset.names, cset.masks[:, i], strict=True) if m)
                 for i in range(cset.n_samples)]
    return cset, per_image


def _spread(n: int, k: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, num=min(k, n)).round().astype(int))


def _pick_probe(probes: list[Any], concept: str, layer: str | None) -> Any:
    matches = [p for p in probes if p.concept == concept and (layer is None or p.layer == layer)]
    if not matches:
        from deepprofile.concepts.sets import unknown_concept_message

        known = sorted({p.concept for p in probes})
        raise UnknownConceptError(
            unknown_concept_message(concept, known)
            + (f" (no probe on layer {layer!r})" if layer else "")
            + " Fit its probe with `deepprofile concepts` first.")
    return max(matches, key=lambda p: p.balanced_accuracy)


def _save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)


class _Cluster:
    """The Dask client of one ``run_data_attribution`` call, started on first use (so bad
    input is refused before a cluster starts) and closed when the call ends."""

    def __init__(self, scheduler: str | Any, stack: ExitStack) -> None:
        self.scheduler = scheduler
        self.stack = stack  # closes the client of a ``local:N`` / ``tcp://`` address
        self.client: Any = None

    def get(self) -> Any:
        if self.client is None:
            if isinstance(self.scheduler, str):
                from deepprofile.distributed import client_for

                self.client = self.stack.enter_context(client_for(self.scheduler))
            else:
                self.client = self.scheduler  # a dask.distributed.Client given by the caller
        return self.client


def _featurize(ens: TrakEnsemble, cluster: _Cluster | None,
               scope: Sequence[str] | None = None, scope_name: str = "all") -> None:
    """With a cluster, fill the feature store with Dask tasks; in one process
    ``ens.scores`` featurises by itself."""
    if cluster is not None:
        from deepprofile.data_attribution.distributed import featurize_distributed

        featurize_distributed(ens, cluster.get(), scope, scope_name)


def run_data_attribution(
    run_dir: str | Path,
    *,
    train_set: Dataset | None = None,
    test_set: Dataset | None = None,
    targets: Sequence[str] = ("predictions",),
    checkpoints: Sequence[str | Path] | None = None,
    extra_model_dirs: Sequence[str | Path] = (),
    concept_layer: str | None = None,
    proj_dim: int | None = None,
    projector_seed: int = 0,
    lambda_reg: float = 0.0,
    ridge: float = DEFAULT_RIDGE,
    n_targets: int = 64,
    k: int = 8,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    quiet: bool = False,
    scheduler: str | Any = None,
    memory_budget: int | str | None = "2GiB",
) -> DataAttributionResult:
    """TRAK scores for ``targets`` (``predictions``, ``concept:NAME``, ``shortcut:CONCEPT:CLASS``)
    of a run. A shortcut target (:mod:`.shortcut_target`) also reports the detector's z
    for the concept's training images (training sets with ground truth: ``shapes``).

    ``proj_dim`` defaults to ``min(512, n_train // 2)``; ``ridge`` (relative to the mean
    eigenvalue of ``X^T X``, 0 = traker's scores) is documented in :mod:`.trak`. With
    ``scheduler`` (``local:N``, ``tcp://HOST:PORT`` or a ``dask.distributed.Client``) the training
    features are computed as Dask tasks, one per checkpoint and range of training
    samples (:mod:`deepprofile.data_attribution.distributed`); scoring runs here.
    ``memory_budget`` (bytes or text such as ``"8GiB"``; ``None``/``"none"``: unbounded)
    caps the samples of one per-sample-gradient pass (parameter gradients and
    activations), for training features and targets alike.
    """
    from deepprofile.attribution.memory import memory_budget as budget_scope
    from deepprofile.attribution.memory import parse_budget
    from deepprofile.data import dataset_from_spec
    from deepprofile.models import load_model
    from deepprofile.provenance import now_iso, package_versions
    from deepprofile.validate import check_options

    check_options("data_attribution", locals())  # one-line errors before any work
    if isinstance(scheduler, str):
        from deepprofile.distributed import parse_scheduler

        parse_scheduler(scheduler)
    budget = parse_budget(memory_budget)
    with ExitStack() as stack, budget_scope(budget):
        # the cluster starts on first use, after the inputs have been checked
        cluster = None if scheduler is None else _Cluster(scheduler, stack)
        t0 = time.perf_counter()
        run = RunDir(run_dir)
        if not run.overview_path.exists():
            raise MissingFileError(f"{run.path} has no run.json; capture the run first "
                                   "(`deepprofile capture`).")
        overview = run.read_overview()
        paths = list(checkpoints) if checkpoints else find_checkpoints(run.path, extra_model_dirs)
        if not paths:
            raise DataAttributionError(
                f"No training checkpoints found for {run.path} (looked in the model folder of "
                f"run.json's checkpoint {overview.get('checkpoint')!r}); train with `deepprofile "
                "train` (it keeps several) or pass --checkpoint.")
        notes: list[str] = []
        if len(paths) == 1:
            notes.append("Only one checkpoint: TRAK scores from a single model are noisier; keep "
                          "several (`deepprofile train --checkpoints 4`) or add seeds.")
            warnings.warn(notes[-1], stacklevel=2)
        infos = checkpoint_infos(paths)
        model, info = load_model(paths[-1], device="cpu")
        if train_set is None:
            raw = torch.load(paths[-1], map_location="cpu", weights_only=True)
            spec = raw.get("dataset") if isinstance(raw, dict) else None
            if not spec:
                raise DataAttributionError(
                    f"{paths[-1]} does not record its training data; pass --train-data.")
            train_set = dataset_from_spec(dict(spec))
        check_training_set(model, train_set, info.num_classes)
        n_train = len(train_set)  # type: ignore[arg-type]
        proj_dim = int(min(512, n_train // 2) if proj_dim is None else proj_dim)
        check_projection(n_train, proj_dim, lambda_reg, ridge)

        kinds = [t.strip() for t in targets]
        for t in kinds:
            if t != "predictions" and not t.startswith("concept:") and not is_shortcut(t):
                raise DataAttributionError(f"Unknown target {t!r}; use predictions, concept:NAME "
                                           "or shortcut:CONCEPT:CLASS.")
        store = run.store()
        if test_set is None:
            test_set = dataset_from_spec(dict(overview["dataset"]))
        rows_all = np.asarray(store.indices)
        preds_all = np.asarray(store.predictions)
        concept_jobs = []
        if any(t.startswith("concept:") for t in kinds):
            from deepprofile.concepts.probes import load_probes
            from deepprofile.concepts.sets import ConceptSet

            probes = load_probes(run.path)
            cset = ConceptSet.load(run.path)
            for t in kinds:
                if t.startswith("concept:"):
                    name = t.split(":", 1)[1]
                    probe = _pick_probe(probes, name, concept_layer)
                    concept_jobs.append((name, probe, cset.mask(name)))

        truth = shapes_truth(train_set)
        names = overview.get("class_names") or [str(c) for c in range(info.num_classes)]
        shortcut_jobs = [prepare_shortcut(
            t, class_names=names, store_rows=rows_all, store_labels=np.asarray(store.labels),
            test_mask=lambda c: test_concept_mask(run.path, test_set, rows_all, c),
            train_truth=truth[0] if truth else None, n_targets=n_targets)
            for t in kinds if is_shortcut(t)]

        # -- nothing written before this line -------------------------------------------------
        ens = TrakEnsemble(model, infos, train_set, FeatureStore(run.path / STORE_NAME),
                           proj_dim=proj_dim, projector_seed=projector_seed, lambda_reg=lambda_reg,
                           ridge=ridge, batch_size=batch_size, device=device, quiet=quiet)
        train_labels = labels_of(train_set)
        per_image = truth[1] if truth else None
        results: list[TargetAttribution] = []
        files: dict[str, str] = {}

        if "predictions" in kinds:
            rows = _spread(len(rows_all), n_targets)
            targets_ds = Subset(test_set, rows_all[rows].tolist())
            _featurize(ens, cluster)
            scores = ens.scores(MarginOutput(), targets_ds)
            classes = sorted(set(preds_all[rows].tolist()))
            groups = np.stack([(preds_all[rows] == c) / max(1, (preds_all[rows] == c).sum())
                               for c in classes])
            class_scores = scores @ groups.T
            path = run.path / SCORES_DIR / "scores_predictions.npy"
            _save_npy(path, scores.astype(np.float32))
            files["predictions"] = str(path.relative_to(run.path))
            for j, r in enumerate(rows):
                helpful, harmful = top_k(scores[:, j], k, train_labels, per_image)
                results.append(TargetAttribution(
                    f"test row {int(r)}", "prediction", j, 1, helpful, harmful,
                    detail={"store_row": int(r), "label": int(test_set[int(rows_all[r])][1]),
                            "prediction": int(preds_all[r])}))
            for j, c in enumerate(classes):
                helpful, harmful = top_k(class_scores[:, j], k, train_labels, per_image)
                prec = None
                if truth is not None and "marker" in truth[0].names:
                    prec = precision_at_k(class_scores[:, j], truth[0].mask("marker"), k, "marker")
                results.append(TargetAttribution(
                    f"predicted {names[c] if c < len(names) else c}", "class", j,
                    int((preds_all[rows] == c).sum()), helpful, harmful, prec,
                    detail={"class": int(c)}))

        # a probe lives in the basis of the run's own model: other seeds' checkpoints are left
        # out of concept targets (their hidden units are arranged differently)
        run_seed = info.extra.get("seed")
        own = [c for c in infos if c.seed == run_seed] or infos
        if concept_jobs and len(own) < len(infos):
            notes.append(f"Concept targets use the {len(own)} checkpoint(s) of the run's own seed "
                         f"{run_seed}; a probe does not transfer to other seeds' models.")
        concept_ens = ens if len(own) == len(infos) else TrakEnsemble(
            model, own, train_set, FeatureStore(run.path / STORE_NAME), proj_dim=proj_dim,
            projector_seed=projector_seed, lambda_reg=lambda_reg, ridge=ridge,
            batch_size=batch_size, device=device, quiet=quiet)
        for name, probe, mask in concept_jobs:
            pos = np.flatnonzero(mask)
            if len(pos) == 0:
                pos = np.arange(len(rows_all))
            pos = pos[_spread(len(pos), n_targets)]
            scope = params_up_to(ens.model, probe.layer, train_set[0][0].unsqueeze(0))
            _featurize(concept_ens, cluster, scope, f"upto-{probe.layer}")
            scores = concept_ens.scores(ConceptProbeOutput.from_probe(probe),
                                Subset(test_set, rows_all[pos].tolist()), scope=scope,
                                scope_name=f"upto-{probe.layer}",
                                groups=np.full((1, len(pos)), 1.0 / len(pos)))
            path = run.path / SCORES_DIR / f"scores_concept_{name.replace(':', '_')}.npy"
            _save_npy(path, scores.astype(np.float32))
            files[f"concept:{name}"] = str(path.relative_to(run.path))
            helpful, harmful = top_k(scores[:, 0], k, train_labels, per_image)
            prec = None
            if truth is not None and name in truth[0].names:
                prec = precision_at_k(scores[:, 0], truth[0].mask(name), k, name)
            results.append(TargetAttribution(
                f"concept {name}", "concept", 0, len(pos), helpful, harmful, prec,
                detail={"layer": probe.layer, "reduction": probe.reduction,
                        "probe_balanced_accuracy": float(probe.balanced_accuracy),
                        "n_scope_params": len(scope)}))

        shortcuts = []
        if shortcut_jobs:
            _featurize(ens, cluster)
            final_model = load_model(paths[-1], device="cpu")[0]
        for job in shortcut_jobs:
            scores_1d, target, detection = score_shortcut(job, ens, final_model, test_set,
                                                          train_labels, per_image, k)
            slug = f"{job.concept}_{job.class_index}".replace(":", "_")
            path = run.path / SCORES_DIR / f"scores_shortcut_{slug}.npy"
            _save_npy(path, scores_1d[:, None].astype(np.float32))
            files[job.spec] = str(path.relative_to(run.path))
            results.append(target)
            shortcuts.append(detection)

        shown = sorted({r.index for t in results for r in (*t.helpful, *t.harmful)
                        if t.kind != "prediction" or t.column < 8})
        thumbs = np.stack([np.asarray(train_set[i][0], dtype=np.float32) for i in shown])
        path = run.path / SCORES_DIR / THUMBNAILS
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez_compressed(tmp, indices=np.asarray(shown), images=thumbs)
        tmp.replace(path)
        files["thumbnails"] = str(path.relative_to(run.path))
        result = DataAttributionResult(
            model=info.arch, train_dataset=getattr(train_set, "spec", lambda: {})(),
            n_train=n_train, proj_dim=proj_dim, projector_seed=projector_seed,
            lambda_reg=lambda_reg, checkpoints=tuple(c.to_dict() for c in infos),
            seeds=tuple(sorted({int(c.seed) for c in infos if c.seed is not None})),
            targets=tuple(results), scores_files=files, warnings=tuple(notes),
            seconds=time.perf_counter() - t0, versions=package_versions(), date=now_iso(),
            ridge=ridge, shortcuts=tuple(shortcuts))
        run.write_result(RESULT_NAME, result)
        return result


def summarize_data_attribution(result: DataAttributionResult) -> str:
    """A few lines for the terminal."""
    lines = [f"TRAK over {len(result.checkpoints)} checkpoint(s), seeds {list(result.seeds)}, "
             f"proj_dim {result.proj_dim}, {result.n_train} training images "
             f"({result.seconds:.1f} s)"]
    for t in result.targets:
        if t.kind == "prediction":
            continue
        top = ", ".join(f"#{r.index}" for r in t.helpful[:5])
        line = f"  {t.name}: most helpful {top}"
        if t.precision is not None:
            p = t.precision
            line += (f"; precision@{p.k} for {p.truth} {p.precision:.2f} "
                     f"(base rate {p.base_rate:.2f})")
        lines.append(line)
    for d in result.shortcuts:
        e = d.effect
        lines.append(f"  shortcut {d.concept} -> {d.class_name}: the {e.n_group} training "
                     f"images with {d.concept} give z = {e.z:.1f} against random groups "
                     f"(fires at z >= {d.threshold:g}: {'yes' if d.fires else 'no'}); "
                     f"margin contrast on the model {d.model_contrast:.2f}")
    lines += [f"  warning: {w}" for w in result.warnings]
    return "\n".join(lines)
