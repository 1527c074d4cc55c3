"""The attribution analysis of a run: :func:`run_attribution` and its printed summary.

One call explains a handful of images with every method (captum's plus SDE-smoothed
and boundary IG), measures the noisy networks' accuracy, compares the methods'
robustness and smoothness, scores the maps' alignment with the data manifold and,
given a mapper graph's ``node_members``, summarises the maps of each node. The maps are
computed by shards of images (:mod:`.shards`, optionally as Dask tasks: :mod:`.distributed`)
into ``RUN_DIR/attribution.zarr`` (:mod:`.store`; the noisy fine-tuned model's maps and
the node maps in its map sets, :mod:`.mapsets`), resumably; the summary goes to
``RUN_DIR/results/attribution.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepprofile.attribution.memory import DEFAULT_BUDGET, current_budget, with_memory_budget
from deepprofile.attribution.methods import (
    attribute,
    canonical_method,
    model_device,
    saliency_maps,
)
from deepprofile.errors import DeepProfileError, EmptyDatasetError

SHORT = {
    "integrated_gradients": "ig", "saliency": "saliency", "input_x_gradient": "input_x_gradient",
    "smoothgrad": "smoothgrad", "gradient_shap": "gradient_shap",
}
RESULT_NAME = "attribution"
ARRAY_DIR = "attribution"


@dataclass(frozen=True)
class AttributionResult:
    """Everything :func:`run_attribution` measured, JSON-ready (arrays referenced by path).

    ``methods[key]``: how each map set was made (method, parameters, baseline, SDE
    settings) and its file; ``examples``: a few images with every method's saliency map
    (for the report's grid); ``noisy_accuracy``: per sigma; ``robustness``: the method
    comparison (:class:`~deepprofile.attribution.robustness.RobustnessResult`);
    ``alignment[key]``: manifold alignment; ``boundary``: BIG's per-image search;
    ``nodes``: per-mapper-node statistics (when node members were given).
    """

    model: dict[str, Any]
    dataset: dict[str, Any]
    params: dict[str, Any]
    images: dict[str, Any]
    methods: dict[str, dict[str, Any]]
    examples: dict[str, Any]
    noisy_accuracy: list[dict[str, Any]]
    robustness: dict[str, Any]
    alignment: dict[str, dict[str, Any]]
    boundary: dict[str, Any]
    checks: dict[str, Any]
    timings: dict[str, float]
    nodes: dict[str, Any] | None = None
    finetune: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from deepprofile.results import jsonable

        return {"kind": "attribution", **jsonable({
            name: getattr(self, name) for name in self.__dataclass_fields__
        })}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttributionResult:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__ if k in data})

    def robustness_table(self) -> list[dict[str, Any]]:
        from deepprofile.attribution.robustness import RobustnessResult

        return RobustnessResult.from_dict(self.robustness).table()


def _load_images(dataset: Any, indices: Sequence[int]) -> tuple[torch.Tensor, np.ndarray]:
    xs, ys = [], []
    for i in indices:
        x, y = dataset[int(i)]
        xs.append(torch.as_tensor(x).float())
        ys.append(int(y))
    if not xs:
        raise EmptyDatasetError("No images selected for attribution.")
    return torch.stack(xs), np.asarray(ys, dtype=np.int64)


def _evenly(n_total: int, n: int) -> np.ndarray:
    if n_total == 0:
        raise EmptyDatasetError("The dataset is empty; nothing to attribute.")
    return np.unique(np.linspace(0, n_total - 1, min(n, n_total)).round().astype(np.int64))


def _open_store(run_dir: Path | None):
    if run_dir is None:
        return None
    from deepprofile.rundir import RunDir

    rd = RunDir(run_dir)
    if not rd.store_path.exists():
        return None
    return rd.store(verify=False)


def _round(a: np.ndarray, digits: int = 5) -> list:
    return np.round(np.asarray(a, dtype=np.float64), digits).tolist()


@with_memory_budget
def run_attribution(
    model: nn.Module,
    run_dir: str | Path | None,
    dataset: Any,
    *,
    n_images: int = 16,
    sigmas: Sequence[float] = (0.0, 0.1, 0.3),
    n_draws: int = 8,
    seed: int = 0,
    quiet: bool = False,
    method: str = "integrated_gradients",
    n_steps: int = 16,
    noise_mode: str = "additive",
    robust_images: int = 8,
    eps: float | None = None,
    sensitivity_samples: int = 2,
    sensitivity_images: int = 4,
    node_members: Mapping[str, Sequence[int]] | None = None,
    node_layer: str | None = None,
    max_per_node: int = 4,
    reference: Any = None,
    n_reference: int = 400,
    alignment_layer: str | None = None,
    train_dataset: Any = None,
    finetune_steps: int = 0,
    finetune_sigma: float | None = None,
    accuracy_images: int = 256,
    n_examples: int = 4,
    model_info: Mapping[str, Any] | None = None,
    robustness: bool = True,
    boundary: bool = True,
    alignment: bool = True,
    memory_budget: int | float | str | None = DEFAULT_BUDGET,
    scheduler: Any = None,
    shard_size: int = 8,
) -> AttributionResult:
    """Explain ``n_images`` images of ``dataset`` with every method and compare them.

    Images are spread evenly over the run's activation store rows when ``run_dir`` holds
    one (dataset indices from ``store.indices``), else over ``dataset``. ``method`` is
    the base method that is SDE-smoothed (IG by default, ``n_steps`` steps); ``sigmas``
    the diffusion levels (0 = plain, checked to match exactly), ``n_draws`` draws each.
    ``node_members`` (node id -> store row) adds per-node statistics for ``node_layer``.
    ``finetune_steps > 0`` also fine-tunes a noisy copy (on ``train_dataset``) and
    explains with it. ``robustness``, ``boundary`` (BIG) and ``alignment`` switch those
    stages off (their parts of the result are then empty). BIG is left out of the maps
    and the comparisons when no boundary point is found for any image. Writes results
    when ``run_dir`` is given; prints one line per stage when stderr is not a terminal.
    ``memory_budget`` (bytes, ``"4GB"``, or ``None``/``"none"`` for no bound) bounds every
    pass's activations (:mod:`deepprofile.attribution.memory`).

    The maps are computed in shards of ``shard_size`` images and stored in
    ``RUN_DIR/attribution.zarr`` (:mod:`deepprofile.attribution.store`): a killed run
    resumes with the shards not yet done, and a finished one is reused when the map
    settings did not change. ``scheduler`` (``"local:N"``, ``"tcp://HOST:PORT"`` or a
    ``dask.distributed.Client``) computes the shards as Dask tasks, each loading the
    run's checkpoint itself; the maps are the same as in one process. The noisy
    fine-tuned model is saved once in ``RUN_DIR/attribution_finetuned.pt`` and reused by
    a rerun with the same fine-tuning settings (:mod:`deepprofile.attribution.finetuned`);
    its maps and the maps of the node rows are map sets of the store, sharded the same
    way (:mod:`deepprofile.attribution.mapsets`). Everything that needs all images
    (robustness, alignment, noisy accuracy, the fine-tuning itself, the per-node
    statistics) runs here.
    """
    args = dict(locals())
    from deepprofile.validate import check_options

    check_options("attribution", args)
    if run_dir is None:
        if scheduler is not None:
            raise DeepProfileError(
                "A scheduler needs a run folder (its workers load the run's checkpoint and "
                "write the maps there); pass run_dir.")
        return _run_attribution(**args)
    from deepprofile.attribution.store import STORE_NAME, store_lock

    with store_lock(Path(run_dir) / STORE_NAME):
        return _run_attribution(**args)


def _run_attribution(
    model: nn.Module, run_dir: str | Path | None, dataset: Any, *, n_images: int,
    sigmas: Sequence[float], n_draws: int, seed: int, quiet: bool, method: str, n_steps: int,
    noise_mode: str, robust_images: int, eps: float | None, sensitivity_samples: int,
    sensitivity_images: int, node_members: Mapping[str, Sequence[int]] | None,
    node_layer: str | None, max_per_node: int, reference: Any, n_reference: int,
    alignment_layer: str | None, train_dataset: Any, finetune_steps: int,
    finetune_sigma: float | None, accuracy_images: int, n_examples: int,
    model_info: Mapping[str, Any] | None, robustness: bool, boundary: bool, alignment: bool,
    memory_budget: Any, scheduler: Any, shard_size: int,
) -> AttributionResult:
    from deepprofile.attribution.boundary import big_attribute
    from deepprofile.attribution.finetuned import FILE_NAME as FINETUNED_FILE
    from deepprofile.attribution.finetuned import finetune_identity, load_or_finetune
    from deepprofile.attribution.manifold import (
        manifold_alignment,
        node_attribution_stats,
        select_node_rows,
    )
    from deepprofile.attribution.robustness import robustness_table, total_variation
    from deepprofile.attribution.sde import noisy_accuracy, residual_sites, sde_attribute
    from deepprofile.attribution.shards import BIG_EPS, MapSettings
    from deepprofile.progress import StageLog, progress_bar
    from deepprofile.provenance import now_iso, package_versions, weights_hash

    base = canonical_method(method)
    if base not in SHORT:
        raise DeepProfileError(
            f"run_attribution smooths an input method (ig, saliency, input_x_gradient, "
            f"smoothgrad, gradient_shap), not {method!r}."
        )
    run_path = Path(run_dir) if run_dir is not None else None
    store = _open_store(run_path)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    # -- images ---------------------------------------------------------------------
    if store is not None:
        rows = _evenly(store.n_samples, n_images)
        ds_idx = np.asarray(store.indices)[rows]
    else:
        rows = None
        ds_idx = _evenly(len(dataset), n_images)
    x, labels = _load_images(dataset, ds_idx)
    std_in = float(x.std())
    span = float(x.max() - x.min()) or 1.0
    eps = float(eps) if eps is not None else round(0.03 * span, 4)
    n_rob = min(robust_images, len(x))
    short = SHORT[base]
    method_kw: dict[str, Any] = {"n_steps": n_steps} if base == "integrated_gradients" else {}
    sig_pos = [float(s) for s in sigmas if s > 0]
    big_eps = {k: tuple(v) for k, v in BIG_EPS.items()}
    sg_std = round(0.15 * span, 4)
    try:
        sites = residual_sites(model)
    except DeepProfileError:
        sites = []
    sde_ok = bool(sites)
    settings = MapSettings(
        base=base, short=short, n_steps=n_steps, n_draws=n_draws,
        sigmas=tuple(float(s) for s in sigmas), noise_mode=noise_mode, seed=seed,
        smoothgrad_stdev=sg_std, boundary=boundary,
        cam_layer=(sites[-1].block or None) if sites else None, residual=sde_ok)
    n_shards = -(-len(x) // shard_size)

    stages = _stage_weights(
        n_images=len(x), n_steps=n_steps, n_draws=n_draws, sigmas=sigmas,
        n_rob=n_rob if robustness else 0, accuracy_images=accuracy_images,
        finetune_steps=finetune_steps, boundary=boundary, alignment=alignment,
        nodes=bool(node_members), n_shards=n_shards)
    log = StageLog("attribution", stages, quiet=quiet)
    with contextlib.ExitStack() as stack, progress_bar(quiet) as progress:
        dask = _Dask(scheduler, stack)
        task = progress.add_task("attribution", total=len(stages))

        def step(name: str, t0: float | None) -> None:
            if t0 is not None:
                timings[name] = round(time.perf_counter() - t0, 3)
            progress.advance(task)
            log.finished(name)

        # -- every per-image map, by shard (resumable, optionally on Dask) -----------------
        t0 = time.perf_counter()
        got = _shard_maps(model, run_path, x, ds_idx, labels, settings, shard_size, dask,
                          model_info, on_shard=lambda i: step(f"maps_{i}", None))
        timings["maps"] = round(time.perf_counter() - t0, 3)
        timings["shards_computed"] = float(got["computed"])
        for i in range(n_shards):
            if f"maps_{i}" not in log.done:
                step(f"maps_{i}", None)
        mstore = got["store"]
        preds = got["predictions"]
        targets = torch.from_numpy(got["targets"])
        maps: dict[str, Any] = dict(got["maps"])
        meta: dict[str, dict[str, Any]] = {k: dict(v) for k, v in got["meta"].items()}
        search = got["boundary"]
        if search is not None and not search["n_found"]:
            maps.pop("big", None)  # with no boundary at all BIG would only repeat IG
            meta.pop("big", None)

        set_maps = _SetMaps(model, run_path, mstore, settings, shard_size, dask,
                            _source(run_path, model, model_info) if run_path else {})
        sigma0_equal = got["sigma0_equal"] if sde_ok and 0 in settings.sigmas else None

        t0 = time.perf_counter()
        acc_idx = (_evenly(store.n_samples, accuracy_images) if store is not None
                   else _evenly(len(dataset), accuracy_images))
        acc_ds = np.asarray(store.indices)[acc_idx] if store is not None else acc_idx
        x_acc, y_acc = _load_images(dataset, acc_ds)
        accuracy = (noisy_accuracy(model, x_acc, y_acc, sigmas=sigmas, n_draws=min(n_draws, 4),
                                   mode=noise_mode, seed=seed) if sde_ok else [])
        step("noisy_accuracy", t0)

        finetune = None
        model_ft = None
        if finetune_steps > 0 and sde_ok:
            t0 = time.perf_counter()
            if train_dataset is None:
                raise DeepProfileError(
                    "Noisy fine-tuning needs training images; pass train_dataset=...")
            ft_sigma = float(
                finetune_sigma if finetune_sigma is not None else max(sig_pos or [0.1]))
            tr_idx = _evenly(len(train_dataset), 2048)
            ft_identity = finetune_identity(
                model, sigma=ft_sigma, steps=finetune_steps, mode=noise_mode, seed=seed,
                train_spec=_spec(train_dataset), train_indices=tr_idx)
            model_ft, losses, ft_hash, trained = load_or_finetune(
                model, run_path, ft_identity, lambda: _load_images(train_dataset, tr_idx),
                quiet=quiet)
            timings["finetune_trained"] = float(trained)
            ft_path = str((run_path / FINETUNED_FILE).resolve()) if run_path else None
            got_ft = set_maps.fill(  # workers load the saved weights
                "finetuned", model_ft, {"finetuned_weights": ft_hash, "finetune": ft_identity},
                x=x, targets=targets, finetuned={"path": ft_path, "weights_hash": ft_hash})
            timings["finetune_shards_computed"] = float(got_ft["computed"])
            maps.update(got_ft["maps"])
            meta.update(got_ft["meta"])
            finetune = {
                "sigma": ft_sigma, "steps": finetune_steps, "mode": noise_mode,
                "loss_first": losses[0] if losses else None,
                "loss_last": losses[-1] if losses else None,
                "losses": [round(v, 5) for v in losses],
                "noisy_accuracy": noisy_accuracy(model_ft, x_acc, y_acc, sigmas=sigmas,
                                                 n_draws=min(n_draws, 4), mode=noise_mode,
                                                 seed=seed),
            }
            step("finetune", t0)

        # -- robustness --------------------------------------------------------------------
        t0 = time.perf_counter()
        xr, tr = x[:n_rob], targets[:n_rob]
        robust = None

        def explainer(kind: str, sigma: float = 0.0):
            def fn(inp: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
                if kind == "plain":
                    r = attribute(model, inp, method=base, target=tgt, seed=seed, **method_kw)
                elif kind == "smoothgrad":
                    r = attribute(model, inp, method="smoothgrad", target=tgt, seed=seed,
                                  nt_samples=8, stdevs=sg_std)
                elif kind == "sde":
                    r = sde_attribute(model, inp, sigma=sigma, n_draws=n_draws, mode=noise_mode,
                                      seed=seed, method=base, target=tgt, **method_kw)
                else:
                    r = big_attribute(model, inp, target=tgt, n_steps=n_steps, eps=big_eps,
                                      steps=8, seed=seed)
                return r.tensor()
            return fn

        explainers = {short: explainer("plain"), "smoothgrad": explainer("smoothgrad")}
        if sde_ok:
            for sigma in sig_pos:
                explainers[f"sde_{short}:{sigma:g}"] = explainer("sde", sigma)
        if "big" in maps:
            explainers["big"] = explainer("big")
        if robustness:
            robust = robustness_table(
                model, xr, tr, explainers, eps=eps, k=0.1, attack_steps=10,
                sensitivity_samples=sensitivity_samples, sensitivity_images=sensitivity_images,
                infidelity_samples=16,
                clean_attributions={k: maps[k].attributions[:n_rob] for k in explainers},
                seed=seed,
            )
            step("robustness", t0)

        # -- smoothness and manifold alignment ----------------------------------------------
        t0 = time.perf_counter()
        if reference is None:
            pool = np.setdiff1d(np.arange(len(dataset)), ds_idx)
            rng = np.random.default_rng(seed)
            ref_idx = np.sort(rng.choice(pool, size=min(n_reference, len(pool)), replace=False))
            ref_x, _ = _load_images(dataset, ref_idx)
            ref_space = "input (dataset images not explained)"
        else:
            ref_x = torch.as_tensor(np.asarray(reference)).float()
            ref_space = "input (given reference)"
        n_nb = int(min(32, len(ref_x) - 1))
        dim = int(min(8, n_nb - 1))
        aligned: dict[str, dict[str, Any]] = {}
        for key, res in maps.items():
            sal = res.saliency()
            meta[key]["total_variation"] = float(np.mean([total_variation(m) for m in sal]))
            meta[key]["mean_abs"] = float(np.nanmean(np.abs(res.attributions)))
            if alignment and res.attributions.shape == tuple(x.shape):
                al = manifold_alignment(
                    x.numpy(), np.nan_to_num(res.attributions), ref_x.numpy(), method=key,
                    space=ref_space, n_neighbors=n_nb, dim=dim, seed=seed,
                    sample_indices=ds_idx,
                )
                aligned[key] = al.to_dict()
        if alignment and alignment_layer is not None:
            aligned.update(_layer_alignment(
                model, x, targets, ref_x, alignment_layer, n_steps=n_steps, seed=seed,
                n_neighbors=n_nb, dim=dim, sample_indices=ds_idx))
        step("alignment", t0)

        # -- per mapper node ----------------------------------------------------------------
        nodes = None
        node_full_maps = None
        if node_members:
            t0 = time.perf_counter()
            if store is None:
                raise DeepProfileError(
                    "Per-node statistics need the run's activation store (node members are "
                    "store rows); pass a run_dir that holds one.")
            n_rows = store.n_samples
            node_rows = select_node_rows(node_members, max_per_node=max_per_node, seed=seed)
            bad = node_rows[(node_rows < 0) | (node_rows >= n_rows)]
            if len(bad):
                raise DeepProfileError(
                    f"Node members {bad[:5].tolist()} are not rows of the store ({n_rows} rows)."
                )
            node_x, _ = _load_images(dataset, np.asarray(store.indices)[node_rows])
            got_nodes = set_maps.fill("nodes", model, {
                "rows": hashlib.sha256(node_rows.astype(np.int64).tobytes()).hexdigest(),
                "images": hashlib.sha256(node_x.numpy().astype(np.float32).tobytes()
                                         ).hexdigest()}, x=node_x, rows=node_rows)
            timings["node_shards_computed"] = float(got_nodes["computed"])
            node_maps = got_nodes["maps"][short]
            al_nodes = manifold_alignment(
                node_x.numpy(), node_maps.attributions, ref_x.numpy(), method=short,
                n_neighbors=n_nb, dim=dim, seed=seed).alignments
            stats = node_attribution_stats(
                node_maps.saliency(), node_rows, node_members,
                labels=np.asarray(store.labels), predictions=np.asarray(store.predictions),
                alignments=al_nodes, layer=node_layer, method=short,
            )
            nodes = stats.to_dict()
            node_full_maps = stats.full_maps
            step("nodes", t0)

    # -- assemble -------------------------------------------------------------------------
    ex = np.arange(min(n_examples, len(x)))
    sal_ex: dict[str, Any] = {}
    sal_scale: dict[str, list[float]] = {}
    for key, res in maps.items():
        if res.attributions.shape[-2:] != tuple(x.shape[-2:]):
            continue
        sal = saliency_maps(np.nan_to_num(res.attributions[ex]))
        scale = sal.reshape(len(ex), -1).max(axis=1)
        sal_ex[key] = _round(sal / np.where(scale > 0, scale, 1.0)[:, None, None], 3)
        sal_scale[key] = scale.tolist()
    examples = {
        "positions": ex.tolist(),
        "dataset_indices": ds_idx[ex].tolist(),
        "labels": labels[ex].tolist(),
        "predictions": preds[ex].tolist(),
        "images": _round(x[ex].mean(dim=1).numpy(), 3),
        "saliency": sal_ex,
        "saliency_scale": sal_scale,
        "note": "saliency = sum over channels of |attribution|, divided per image by its max "
                "(saliency_scale); full signed maps in attribution.zarr (maps/<method>)",
        "labels_of_methods": {k: meta[k]["label"] for k in maps},
    }
    checks: dict[str, Any] = {"sigma0_equals_plain": sigma0_equal}
    plain_delta = got["convergence_delta"]
    if base == "integrated_gradients":
        delta = np.abs(plain_delta)
        total = maps[short].attributions.reshape(len(x), -1).sum(axis=1) - plain_delta
        checks["ig_completeness_max_abs_delta"] = float(delta.max())
        checks["ig_completeness_max_rel_delta"] = float(
            (delta / np.maximum(np.abs(total), 1e-12)).max())
        checks["ig_n_steps"] = n_steps
    timings["total"] = round(time.perf_counter() - t_all, 3)
    class_names = getattr(dataset, "class_names", None)
    result = AttributionResult(
        model={"name": type(model).__name__, "weights_hash": weights_hash(model),
               **(dict(model_info) if model_info else {})},
        dataset={**_spec(dataset), "class_names": class_names},
        params={
            "n_images": int(len(x)), "sigmas": [float(s) for s in sigmas], "n_draws": n_draws,
            "seed": seed, "method": base, "n_steps": n_steps, "noise_mode": noise_mode,
            "robust_images": n_rob, "eps": eps, "input_std": std_in, "input_range": span,
            "smoothgrad_stdev": sg_std, "sensitivity_samples": sensitivity_samples,
            "sensitivity_images": sensitivity_images,
            "boundary_eps": big_eps, "max_per_node": max_per_node,
            "alignment_neighbors": n_nb, "alignment_dim": dim, "device": str(model_device(model)),
            "stages": {"robustness": robustness, "boundary": boundary, "alignment": alignment},
            "memory_budget": current_budget(), "shard_size": shard_size,
            "scheduler": scheduler if scheduler is None or isinstance(scheduler, str)
            else "client",
        },
        images={
            "dataset_indices": ds_idx.tolist(),
            "store_rows": None if rows is None else rows.tolist(),
            "labels": labels.tolist(), "predictions": preds.tolist(),
            "targets": targets.tolist(), "target_mode": "prediction",
        },
        methods=meta,
        examples=examples,
        noisy_accuracy=accuracy,
        robustness={} if robust is None else {**robust.to_dict(), "table": robust.table()},
        alignment=aligned,
        boundary={} if search is None else {
            **search, "used": "big" in maps,
            **({} if "big" in maps else {
                "note": "no boundary point found for any image: BIG left out"})},
        checks=checks,
        timings=timings,
        nodes=nodes,
        finetune=finetune,
        provenance={"date": now_iso(), "versions": package_versions()},
    )
    if run_path is not None:
        result = _write(result, run_path, mstore, maps, node_full_maps, set_maps.written)
    return result


@dataclass(frozen=True, eq=False)
class _Maps:
    """One map set as read back from the shards (what the summaries need)."""

    attributions: np.ndarray
    variance: np.ndarray | None = None

    def saliency(self) -> np.ndarray:
        return saliency_maps(self.attributions)


class _Dask:
    """The run's Dask client for ``scheduler`` (an address or a client), connected on
    first use and closed with ``stack``; false when there is no scheduler."""

    def __init__(self, scheduler: Any, stack: contextlib.ExitStack) -> None:
        self.scheduler = scheduler
        self._stack = stack
        self._client = None

    def __bool__(self) -> bool:
        return self.scheduler is not None

    def client(self) -> Any:
        if self._client is None:
            if isinstance(self.scheduler, str):
                from deepprofile.distributed import client_for

                self._client = self._stack.enter_context(client_for(self.scheduler))
            else:
                self._client = self.scheduler
        return self._client


class _SetMaps:
    """Fills the map sets of a run (:mod:`deepprofile.attribution.mapsets`) shard by shard,
    in the store (resumable, on Dask with a scheduler) or, without a run folder, in memory."""

    def __init__(self, model: nn.Module, run_path: Path | None, store: Any, settings: Any,
                 shard_size: int, dask: _Dask, source: Mapping[str, Any]) -> None:
        self.model, self.run_path, self.store = model, run_path, store
        self.settings, self.shard_size, self.dask, self.source = (
            settings, shard_size, dask, dict(source))
        #: set name -> (hash, key -> array names) of the sets filled in this run
        self.written: dict[str, tuple[str, dict[str, Any]]] = {}

    def fill(self, kind: str, model: nn.Module, identity: Mapping[str, Any], *,
             x: torch.Tensor, rows: np.ndarray | None = None,
             targets: torch.Tensor | None = None,
             finetuned: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Maps (key -> :class:`_Maps`), their meta and the number of shards computed of
        the set ``kind`` (``finetuned``: ``model`` is the fine-tuned model and ``x`` the
        store's images; ``nodes``: ``x`` the images of the store ``rows``)."""
        from deepprofile.attribution.distributed import fill_dask, fill_set_local
        from deepprofile.attribution.mapsets import MapSet
        from deepprofile.attribution.shards import (
            compute_set_shard,
            set_labels,
            set_spec,
            set_variance_keys,
        )

        spec = set_spec(kind, self.settings)
        keys = list(set_labels(kind, self.settings))
        var_keys = set_variance_keys(kind, self.settings)
        budget = current_budget()
        if self.store is None:  # no run folder: the same shards, in memory
            outs = [compute_set_shard(model, x[a : a + self.shard_size], spec, a,
                                      None if targets is None else targets[a : a + self.shard_size])
                    for a in range(0, len(x), self.shard_size)]
            cat = lambda k, part: np.concatenate([o[part][k] for o in outs])  # noqa: E731
            return {"maps": {k: _Maps(cat(k, "maps"), cat(k, "variance") if k in var_keys
                                      else None) for k in keys},
                    "meta": dict(outs[0]["meta"]["methods"]), "computed": len(outs)}
        own = kind != "finetuned"
        mset = MapSet.open_or_create(
            self.store, kind, identity, spec=spec,
            map_shapes={k: tuple(x.shape[1:]) for k in keys}, variance_keys=var_keys,
            images=x.numpy() if own else None, rows=rows if own else None)
        if not self.dask:
            computed = fill_set_local(model, mset, budget)
        else:
            source = {**self.source, **({"finetuned": dict(finetuned)} if finetuned else {})}
            computed = fill_dask(self.dask.client(), mset, None, budget, source,
                                 self.store.identity["weights_hash"])
        self.written[kind] = (mset.hash, dict(mset.meta["maps"]))
        return {"maps": {k: _Maps(mset.map_array(k), mset.map_array(k, variance=True)
                                  if k in var_keys else None) for k in keys},
                "meta": dict(mset.shard_meta()["methods"]), "computed": len(computed)}


def _source(run_path: Path, model: nn.Module, model_info: Mapping[str, Any] | None
            ) -> dict[str, Any]:
    """How a Dask worker loads the run's model (see :func:`deepprofile.attribution.
    distributed.fill_dask`)."""
    info = dict(model_info or {})
    return {"run_dir": str(run_path.resolve()), "arch": info.get("arch"),
            "num_classes": info.get("num_classes"), "device": str(model_device(model))}


def _identity(model: nn.Module, settings: Any, ds_idx: np.ndarray, x: torch.Tensor,
              shard_size: int, budget: int | None) -> dict[str, Any]:
    """What the maps depend on: a store made with anything else is not reused."""
    import hashlib

    from deepprofile.provenance import weights_hash

    return {
        "weights_hash": weights_hash(model), "settings": settings.to_dict(),
        "dataset_indices": hashlib.sha256(np.asarray(ds_idx, np.int64).tobytes()).hexdigest(),
        "images": hashlib.sha256(x.numpy().astype(np.float32).tobytes()).hexdigest(),
        "shard_size": int(shard_size), "memory_budget": budget,
        "device": str(model_device(model)),
    }


def _shard_maps(model: nn.Module, run_path: Path | None, x: torch.Tensor, ds_idx: np.ndarray,
                labels: np.ndarray, settings: Any, shard_size: int, dask: _Dask,
                model_info: Mapping[str, Any] | None, on_shard: Any) -> dict[str, Any]:
    """Every per-image map, computed shard by shard (in the run's map store when there is
    a run folder, else in memory), read back with the per-image checks."""
    from deepprofile.attribution.distributed import fill_dask, fill_local
    from deepprofile.attribution.shards import compute_shard
    from deepprofile.attribution.store import STORE_NAME, MapStore

    budget = current_budget()
    labels_of = settings.labels()
    if run_path is None:  # no store: the same shards, kept in memory
        outs = []
        for i, start in enumerate(range(0, len(x), shard_size)):
            outs.append(compute_shard(model, x[start : start + shard_size], settings, start))
            on_shard(i)
        cat = lambda get: np.concatenate([get(o) for o in outs])  # noqa: E731
        out = {
            "store": None, "computed": len(outs), "meta": outs[0]["meta"],
            "targets": cat(lambda o: o["targets"]), "predictions": cat(lambda o: o["predictions"]),
            "maps": {k: _Maps(cat(lambda o, k=k: o["maps"][k]),
                              cat(lambda o, k=k: o["variance"][k])
                              if k in settings.variance_keys() else None) for k in labels_of},
            "convergence_delta": cat(lambda o: o["convergence_delta"]),
            "sigma0_equal": cat(lambda o: o["sigma0_equal"]),
            "boundary": ({f: cat(lambda o, f=f: o["boundary"][f]) for f in outs[0]["boundary"]}
                         if settings.boundary else None),
        }
    else:
        image_shape = tuple(x.shape[1:])
        store = MapStore.open_or_create(
            run_path / STORE_NAME, _identity(model, settings, ds_idx, x, shard_size, budget),
            images=x.numpy(), dataset_indices=ds_idx, labels=labels, shard_size=shard_size,
            map_shapes=settings.map_shapes(image_shape), variance_keys=settings.variance_keys(),
            convergence_delta=settings.base == "integrated_gradients",
            boundary=settings.boundary)
        if not dask:
            computed = fill_local(model, store, settings, budget, on_shard=on_shard)
        else:
            computed = fill_dask(dask.client(), store, settings, budget,
                                 _source(run_path, model, model_info),
                                 store.identity["weights_hash"], on_shard=on_shard)
        out = {
            "store": store, "computed": len(computed),
            "meta": store.shard_meta(), "targets": store.read("targets"),
            "predictions": store.read("predictions"),
            "maps": {k: _Maps(store.map_array(k),
                              store.map_array(k, variance=True)
                              if k in settings.variance_keys() else None) for k in labels_of},
            "convergence_delta": (store.read("convergence_delta")
                                  if settings.base == "integrated_gradients"
                                  else np.full(len(x), np.nan, np.float32)),
            "sigma0_equal": store.read("sigma0_equal").astype(bool),
            "boundary": store.boundary() if settings.boundary else None,
        }
    boundary = out["boundary"]
    out["boundary"] = (None if boundary is None else
                       _boundary_summary(boundary, out["meta"]["boundary_params"]))
    out["meta"] = {k: out["meta"]["methods"][k] for k in labels_of}  # the plain map first
    out["sigma0_equal"] = bool(np.all(out["sigma0_equal"]))
    return out


def _boundary_summary(arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]
                      ) -> dict[str, Any]:
    """:meth:`BoundarySearch.summary` from the per-image arrays of the shards."""
    from deepprofile.attribution.store import NORMS

    found = np.asarray(arrays["found"]).astype(bool)
    finite = lambda v: None if not np.isfinite(v) else float(v)  # noqa: E731
    return {
        "found": found.tolist(), "n_found": int(found.sum()), "n_images": int(len(found)),
        "not_found": np.flatnonzero(~found).tolist(),
        "eps": [finite(e) for e in arrays["eps"]],
        "norm": [NORMS[int(k)] for k in arrays["norm"]],
        "distance_l2": [finite(d) for d in arrays["distance"]],
        "original_class": np.asarray(arrays["original"]).tolist(),
        "boundary_class": np.asarray(arrays["adversarial"]).tolist(),
        "params": dict(params),
    }


def _stage_weights(*, n_images: int, n_steps: int, n_draws: int, sigmas: Sequence[float],
                   n_rob: int, accuracy_images: int, finetune_steps: int, boundary: bool,
                   alignment: bool, nodes: bool, n_shards: int = 1) -> dict[str, float]:
    """Expected relative cost of each stage, in gradient passes over one image.

    Rough counts from the settings (IG = ``n_steps`` passes, SDE = ``n_draws`` IGs, a
    forward = a third of a pass, BIG's search = 2 norms x 5 radii x 8 PGD steps); they
    only weight the time-left estimate, which is rescaled by the measured times.
    """
    ig = n_steps
    per_image = ig + 19 + len(sigmas) * n_draws * ig + ((80 + ig) if boundary else 0)
    weights: dict[str, float] = {f"maps_{i}": n_images * per_image / n_shards
                                 for i in range(n_shards)}
    weights["noisy_accuracy"] = accuracy_images * len(sigmas) * min(n_draws, 4) / 3
    if finetune_steps > 0:
        weights["finetune"] = finetune_steps * 64 + n_images * n_draws * ig * len(sigmas)
    if n_rob:
        n_expl = 2 + sum(1 for s in sigmas if s > 0) + int(boundary)
        per = ig * (1 + n_draws * sum(1 for s in sigmas if s > 0) / max(n_expl, 1))
        weights["robustness"] = n_rob * n_expl * per * 16
    weights["alignment"] = 24 + 2 * n_images if alignment else 1
    if nodes:
        weights["nodes"] = 64 * ig
    return weights


def _spec(dataset: Any) -> dict[str, Any]:
    try:
        from deepprofile.data import dataset_spec

        return dict(dataset_spec(dataset))
    except Exception:  # noqa: BLE001 - any dataset works; the spec is only provenance
        spec = getattr(dataset, "spec", None)
        return dict(spec()) if callable(spec) else {"name": type(dataset).__name__}


def _layer_alignment(
    model: nn.Module, x: torch.Tensor, targets: torch.Tensor, ref_x: torch.Tensor, layer: str,
    *, n_steps: int, seed: int, n_neighbors: int, dim: int, sample_indices: np.ndarray,
) -> dict[str, dict[str, Any]]:
    """Alignment of layer IG attributions with the tangent space of the layer's activations."""
    from deepprofile.attribution.manifold import manifold_alignment
    from deepprofile.capture import ActivationRecorder

    with ActivationRecorder(model, [layer], "flatten") as rec:
        name = rec.layers[0]
        ref_act = torch.cat([rec(ref_x[i : i + 128].to(model_device(model))).activations[name]
                             for i in range(0, len(ref_x), 128)])
        pts = rec(x.to(model_device(model))).activations[name]
    lig = attribute(model, x, method="layer_integrated_gradients", layer=name, target=targets,
                    n_steps=n_steps, seed=seed)
    al = manifold_alignment(
        pts.reshape(len(pts), -1).numpy(), lig.attributions.reshape(len(x), -1),
        ref_act.reshape(len(ref_act), -1).numpy(), method="layer_integrated_gradients",
        space=f"layer:{name}", n_neighbors=n_neighbors, dim=dim, seed=seed,
        sample_indices=sample_indices,
    )
    return {f"layer_ig:{name}": al.to_dict()}


def _write(
    result: AttributionResult, run_path: Path, store: Any, maps: Mapping[str, Any],
    node_maps: np.ndarray | None, sets: Mapping[str, tuple[str, Mapping[str, Any]]],
) -> AttributionResult:
    """Record where each map lives in ``attribution.zarr`` (the store's arrays, or those of
    the map sets filled in this run: ``sets``, name -> (hash, key -> arrays); the mean map
    per mapper node is written there now) and write the result JSON."""
    from dataclasses import replace

    from deepprofile.attribution.store import STORE_NAME
    from deepprofile.rundir import RunDir

    where = dict(store.meta["maps"])
    if "finetuned" in sets:
        where.update(sets["finetuned"][1])
    methods = {k: dict(v) for k, v in result.methods.items()}
    for key in maps:  # every map is in the store or in one of its map sets
        methods[key]["array"] = where[key]["array"]
        if where[key]["variance"]:
            methods[key]["variance_array"] = where[key]["variance"]
    files: dict[str, Any] = {"store": STORE_NAME, "maps_hash": store.hash, "images": "images"}
    if sets:
        files["map_sets"] = {name: h for name, (h, _) in sorted(sets.items())}
        if "finetuned" in sets:
            from deepprofile.attribution.finetuned import FILE_NAME

            files["finetuned_weights"] = FILE_NAME
    nodes = result.nodes
    if node_maps is not None and nodes is not None:
        name = store.write_extra(f"node_maps_{nodes.get('layer') or 'layer'}", node_maps)
        nodes = {**nodes, "array": name}
        files["node_maps"] = name
    files["result"] = f"results/{RESULT_NAME}.json"
    result = replace(result, methods=methods, nodes=nodes, files=files)
    RunDir(run_path).write_result(RESULT_NAME, result)
    return result


def summarize_attribution(result: AttributionResult) -> str:
    """A short plain-text account of an :class:`AttributionResult` (for the demo/CLI)."""
    p = result.params
    lines = [
        f"Attribution: {p['n_images']} images, {result.model.get('name')}, target = prediction, "
        f"base method {p['method']} ({p['n_steps']} steps), {p['n_draws']} SDE draws "
        f"({p['noise_mode']} noise), {result.timings.get('total', 0):.1f} s",
    ]
    if result.noisy_accuracy:
        accs = ", ".join(
            f"σ={r['sigma']:g}: {r['accuracy_mean']:.3f}"
            + (f"±{r['accuracy_std']:.3f}" if r["n_draws"] > 1 else "")
            for r in result.noisy_accuracy
        )
        lines.append(f"  noisy-network accuracy ({result.noisy_accuracy[0]['n_samples']} images): "
                     f"{accs}")
    chk = result.checks
    if chk.get("sigma0_equals_plain") is not None:
        lines.append("  σ=0 reproduces the plain attribution exactly: "
                     f"{chk['sigma0_equals_plain']}")
    if "ig_completeness_max_abs_delta" in chk:
        lines.append(f"  IG completeness ({chk['ig_n_steps']} steps): "
                     "max |sum(attr) - (f(x) - f(0))| = "
                     f"{chk['ig_completeness_max_abs_delta']:.2e} "
                     f"({100 * chk['ig_completeness_max_rel_delta']:.1f}% of f(x) - f(0))")
    b = result.boundary
    if not b:
        lines.append("  BIG: skipped")
    elif not b.get("n_found"):
        lines.append(f"  BIG: no boundary point found for any of the {b['n_images']} images; "
                     "BIG is left out of the maps and comparisons")
    else:
        lines.append(f"  BIG: boundary point found for {b['n_found']}/{b['n_images']} images"
                     + (f" (none for {b['not_found']})" if b["not_found"] else ""))
    rob = result.robustness
    if not rob:
        lines.append("  robustness: skipped")
    pert = rob["params"]["perturbations"] if rob else []
    if rob:
        kept = ", ".join(f"{q} {rob['perturbations'][q].get('n_kept', '?')}" for q in pert)
        lines.append(f"  robustness on {rob['params']['n_images']} images, "
                     f"eps={rob['params']['eps']:g}; map comparisons over the images whose "
                     f"prediction was kept ({kept}) (top-10% intersection per perturbation / "
                     "Spearman / max-sens / infidelity / TV):")
    for row in rob.get("table", []):
        inter = " / ".join(_fmt(row.get(f"{q}.topk_intersection")) for q in pert)
        spear = " / ".join(_fmt(row.get(f"{q}.spearman")) for q in pert)
        lines.append(
            f"    {row['method']:<16} {inter:<13} {spear:<13} {_fmt(row['max_sensitivity']):>6} "
            f"{_fmt(row['infidelity'], 3):>9} {_fmt(row['total_variation']):>6}")
    if result.alignment:
        first = next(iter(result.alignment.values()))
        lines.append(f"  manifold alignment ({first['space'].split(' ')[0]}, tangent dim "
                     f"{first['dim']} of {first['n_features']}, random baseline "
                     f"{first['baseline']:.3f}):")
        items = [f"{k} {v['mean']:.3f} ({v['ratio']:.1f}x)" for k, v in result.alignment.items()]
        for i in range(0, len(items), 3):
            lines.append("    " + ", ".join(items[i : i + 3]))
    if result.nodes:
        nodes = result.nodes["nodes"]
        explained = sum(1 for n in nodes.values() if n["n_explained"])
        lines.append(f"  per-node maps for {result.nodes.get('layer') or 'the mapper graph'}: "
                     f"{explained}/{len(nodes)} nodes explained")
    if result.finetune:
        ft = result.finetune
        lines.append(f"  noisy fine-tuning: {ft['steps']} steps at σ={ft['sigma']:g}, loss "
                     f"{_fmt(ft['loss_first'])} -> {_fmt(ft['loss_last'])}")
    if result.files.get("result"):
        lines.append(f"  wrote {result.files['result']} and maps in "
                     f"{result.files.get('store', ARRAY_DIR)}")
    return "\n".join(lines)


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not np.isfinite(f):
        return "nan"
    return f"{f:.{digits}f}" if abs(f) >= 10 ** -digits or f == 0 else f"{f:.1e}"


def load_run_inputs(
    run_dir: str | Path, *, device: str = "auto", need_train: bool = False,
    arch: str | None = None, num_classes: int | None = None,
) -> tuple[nn.Module, dict[str, Any], Any, Any]:
    """The model, its info, the captured dataset (and its training split) of a run folder.

    The model is the checkpoint named in ``RUN_DIR/run.json``, built with the architecture
    and class count recorded there (``arch`` / ``num_classes`` override); its weights hash
    must match the one recorded at capture. The dataset is rebuilt from the store's spec.
    """
    from deepprofile.data import dataset_from_spec
    from deepprofile.errors import MissingFileError
    from deepprofile.models import load_run_model, resolve_device
    from deepprofile.rundir import RunDir

    rd = RunDir(run_dir)
    if not rd.path.exists():
        raise MissingFileError(f"No run folder at {rd.path}; run `deepprofile capture` first.")
    model, info = load_run_model(rd.path, arch=arch, num_classes=num_classes,
                                 device=resolve_device(device))
    store = rd.store(verify=False)
    spec = store.metadata.get("dataset")
    if not spec:
        raise DeepProfileError(f"The store at {rd.store_path} records no dataset spec.")
    dataset = dataset_from_spec(spec)
    train_dataset = None
    if need_train:
        if "split" not in spec:
            raise DeepProfileError(
                f"Noisy fine-tuning needs a training split; dataset {spec.get('name')!r} has none."
            )
        train_dataset = dataset_from_spec({**spec, "split": "train"})
    return model, info.to_dict(), dataset, train_dataset


def node_members_from_mapper(run_dir: str | Path, layer: str) -> dict[str, list[int]]:
    """Node id -> store rows of ``layer``'s graph in ``RUN_DIR/results/mapper.json``.

    Mapper members are point indices; ``point_sample`` maps them to store rows (a layer
    stored with several positions per image has several points per row).
    """
    from deepprofile.rundir import RunDir

    data = RunDir(run_dir).read_result("mapper")
    graphs = data.get("layers") if isinstance(data, Mapping) else None
    if not isinstance(graphs, Mapping) or layer not in graphs:
        have = ", ".join(graphs) if isinstance(graphs, Mapping) else "none"
        raise DeepProfileError(
            f"results/mapper.json has no graph for layer {layer!r} (graphs: {have}). Run "
            f"`deepprofile mapper RUN_DIR --layer {layer}` or pass --node-members FILE."
        )
    graph = graphs[layer]
    sample = graph.get("point_sample")
    members: dict[str, list[int]] = {}
    for node in graph.get("nodes", []):
        pts = [int(p) for p in node["members"]]
        rows = pts if sample is None else [int(sample[p]) for p in pts]
        members[str(node["id"])] = sorted(set(rows))
    return members
