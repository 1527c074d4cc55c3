"""The attribution analysis of a run: :func:`run_attribution` and its printed summary.

One call explains a handful of images with every method (captum's plus SDE-smoothed
and boundary IG), measures the noisy networks' accuracy, compares the methods'
robustness and smoothness, scores the maps' alignment with the data manifold and,
given a mapper graph's ``node_members``, summarises the maps of each node. Arrays go to
``RUN_DIR/attribution/*.npy``; the summary to ``RUN_DIR/results/attribution.json``.
"""

from __future__ import annotations

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
    predict,
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
    """
    from deepprofile.validate import check_options

    check_options("attribution", locals())
    from deepprofile.attribution.boundary import big_attribute, find_boundary
    from deepprofile.attribution.manifold import (
        manifold_alignment,
        node_attribution_stats,
        select_node_rows,
    )
    from deepprofile.attribution.robustness import robustness_table, total_variation
    from deepprofile.attribution.sde import (
        noisy_accuracy,
        noisy_finetune,
        residual_sites,
        sde_attribute,
    )
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
    preds = predict(model, x).numpy()
    targets = torch.from_numpy(preds)
    std_in = float(x.std())
    span = float(x.max() - x.min()) or 1.0
    eps = float(eps) if eps is not None else round(0.03 * span, 4)
    n_rob = min(robust_images, len(x))
    short = SHORT[base]
    method_kw: dict[str, Any] = {"n_steps": n_steps} if base == "integrated_gradients" else {}
    sig_pos = [float(s) for s in sigmas if s > 0]
    big_eps = {"L2": (0.5, 1.0, 2.0, 4.0, 8.0), "Linf": (0.02, 0.05, 0.1, 0.2, 0.4)}

    maps: dict[str, Any] = {}
    meta: dict[str, dict[str, Any]] = {}

    def keep(key: str, label: str, res: Any) -> None:
        maps[key] = res
        meta[key] = {
            "label": label, "method": res.method, "params": res.params, "baseline": res.baseline,
            "target_mode": res.target_mode, "layer": res.layer, "n_draws": res.n_draws,
            "sde": res.sde,
        }

    stages = _stage_weights(
        n_images=len(x), n_steps=n_steps, n_draws=n_draws, sigmas=sigmas,
        n_rob=n_rob if robustness else 0, accuracy_images=accuracy_images,
        finetune_steps=finetune_steps, boundary=boundary, alignment=alignment,
        nodes=bool(node_members))
    log = StageLog("attribution", stages, quiet=quiet)
    with progress_bar(quiet) as progress:
        task = progress.add_task("attribution", total=len(stages))

        def step(name: str, t0: float) -> None:
            timings[name] = round(time.perf_counter() - t0, 3)
            progress.advance(task)
            log.finished(name)

        # -- captum's methods ------------------------------------------------------------
        t0 = time.perf_counter()
        plain = attribute(model, x, method=base, target=targets, seed=seed,
                          return_convergence_delta=base == "integrated_gradients", **method_kw)
        keep(short, f"{short} (plain)", plain)
        keep("saliency", "saliency", attribute(model, x, method="saliency", target=targets))
        keep("input_x_gradient", "input x gradient",
             attribute(model, x, method="input_x_gradient", target=targets))
        sg_std = round(0.15 * span, 4)
        keep("smoothgrad", "SmoothGrad", attribute(
            model, x, method="smoothgrad", target=targets, seed=seed, nt_samples=8, stdevs=sg_std))
        keep("gradient_shap", "GradientShap", attribute(
            model, x, method="gradient_shap", target=targets, seed=seed, n_samples=8))
        try:
            sites = residual_sites(model)
        except DeepProfileError:
            sites = []
        if sites:
            cam_layer = sites[-1].block or None
            if cam_layer:
                keep(f"gradcam:{cam_layer}", f"Grad-CAM ({cam_layer})", attribute(
                    model, x, method="layer_gradcam", layer=cam_layer, target=targets,
                    upsample=True))
        step("captum_methods", t0)

        # -- SDE smoothing ----------------------------------------------------------------
        sde_ok = bool(sites)
        sigma0_equal = None
        for sigma in sigmas if sde_ok else []:
            t0 = time.perf_counter()
            res = sde_attribute(model, x, sigma=float(sigma), n_draws=n_draws, mode=noise_mode,
                                seed=seed, method=base, target=targets, **method_kw)
            if sigma == 0:
                sigma0_equal = bool(np.array_equal(res.attributions, plain.attributions))
            else:
                keep(f"sde_{short}:{sigma:g}", f"SDE-{short} σ={sigma:g}", res)
            step(f"sde_{sigma:g}", t0)

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
            x_tr, y_tr = _load_images(train_dataset, tr_idx)
            model_ft, losses = noisy_finetune(
                model, x_tr, y_tr, sigma=ft_sigma, steps=finetune_steps, mode=noise_mode,
                seed=seed, quiet=quiet)
            for sigma in sig_pos:
                res = sde_attribute(model_ft, x, sigma=sigma, n_draws=n_draws, mode=noise_mode,
                                    seed=seed, method=base, target=targets, **method_kw)
                keep(f"sde_{short}_ft:{sigma:g}",
                     f"SDE-{short} σ={sigma:g} (noisy fine-tuned)", res)
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

        # -- boundary IG -------------------------------------------------------------------
        search = None
        if boundary:
            t0 = time.perf_counter()
            search = find_boundary(model, x, eps=big_eps, steps=8, seed=seed)
            if search.found.any():  # with no boundary at all BIG would only repeat IG
                big = big_attribute(model, x, target=targets, n_steps=n_steps, search=search,
                                    seed=seed)
                keep("big", "BIG (boundary IG)", big)
            step("big", t0)

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
            node_maps = attribute(model, node_x, method=base, target="prediction", seed=seed,
                                  **method_kw)
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
                "(saliency_scale); full signed maps in the methods' .npy files",
        "labels_of_methods": {k: meta[k]["label"] for k in maps},
    }
    checks: dict[str, Any] = {"sigma0_equals_plain": sigma0_equal}
    if plain.convergence_delta is not None:
        delta = np.abs(plain.convergence_delta)
        total = plain.attributions.reshape(len(x), -1).sum(axis=1) - plain.convergence_delta
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
            "memory_budget": current_budget(),
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
            **search.summary(), "used": "big" in maps,
            **({} if "big" in maps else {
                "note": "no boundary point found for any image: BIG left out"})},
        checks=checks,
        timings=timings,
        nodes=nodes,
        finetune=finetune,
        provenance={"date": now_iso(), "versions": package_versions()},
    )
    if run_path is not None:
        result = _write(result, run_path, x, maps, node_full_maps)
    return result


def _stage_weights(*, n_images: int, n_steps: int, n_draws: int, sigmas: Sequence[float],
                   n_rob: int, accuracy_images: int, finetune_steps: int, boundary: bool,
                   alignment: bool, nodes: bool) -> dict[str, float]:
    """Expected relative cost of each stage, in gradient passes over one image.

    Rough counts from the settings (IG = ``n_steps`` passes, SDE = ``n_draws`` IGs, a
    forward = a third of a pass, BIG's search = 2 norms x 5 radii x 8 PGD steps); they
    only weight the time-left estimate, which is rescaled by the measured times.
    """
    ig = n_steps
    weights: dict[str, float] = {"captum_methods": n_images * (ig + 19)}
    for sigma in sigmas:
        weights[f"sde_{sigma:g}"] = n_images * n_draws * ig
    weights["noisy_accuracy"] = accuracy_images * len(sigmas) * min(n_draws, 4) / 3
    if finetune_steps > 0:
        weights["finetune"] = finetune_steps * 64 + n_images * n_draws * ig * len(sigmas)
    if boundary:
        weights["big"] = n_images * (80 + ig)
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


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in key)


def _write(
    result: AttributionResult, run_path: Path, x: torch.Tensor, maps: Mapping[str, Any],
    node_maps: np.ndarray | None,
) -> AttributionResult:
    from dataclasses import replace

    from deepprofile.rundir import RunDir

    out = run_path / ARRAY_DIR
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    np.save(out / "images.npy", x.numpy().astype(np.float32))
    files["images"] = f"{ARRAY_DIR}/images.npy"
    methods = {k: dict(v) for k, v in result.methods.items()}
    for key, res in maps.items():
        name = f"{ARRAY_DIR}/{_safe(key)}.npy"
        np.save(run_path / name, res.attributions.astype(np.float32))
        methods[key]["file"] = name
        if res.variance is not None:
            vname = f"{ARRAY_DIR}/{_safe(key)}.variance.npy"
            np.save(run_path / vname, res.variance.astype(np.float32))
            methods[key]["variance_file"] = vname
    nodes = result.nodes
    if node_maps is not None and nodes is not None:
        name = f"{ARRAY_DIR}/node_maps_{_safe(str(nodes.get('layer') or 'layer'))}.npy"
        np.save(run_path / name, node_maps)
        nodes = {**nodes, "file": name}
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
        lines.append(f"  wrote {result.files['result']} and maps under {ARRAY_DIR}/")
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
