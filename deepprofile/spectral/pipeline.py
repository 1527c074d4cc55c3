"""The spectral analysis of a model in one call: :func:`run_spectral` and its summary lines.

``run_spectral`` computes, for every Conv/Linear layer, the SVD and random-matrix figures of the
trained weights and of a seeded random-init baseline (a fresh instance of the architecture)
side by side; on a dataset, projections,
influential singular vectors and class hypergraphs for a few convolution layers, and their
exact operator spectra (circular padding, at the input size seen). It writes
``RUN_DIR/results/spectral.json`` and returns a :class:`SpectralResult`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from deepprofile.errors import ShapeError, StoreMismatchError
from deepprofile.spectral.conv_svd import (
    _check_supported,
    conv_operator_singular_values,
    get_module,
    is_weight_layer,
    layer_svd,
    singular_values,
)
from deepprofile.spectral.hypergraph import (
    ClassHypergraph,
    depth_trend,
    hypergraph_from_projection,
)
from deepprofile.spectral.projection import (
    LayerProjection,
    project_dataset,
    project_stored_outputs,
)
from deepprofile.spectral.rmt import ModelSpectrum, WeightSpectrumAnalyzer

if TYPE_CHECKING:
    from deepprofile.partial import LayerResults

RESULT_NAME = "spectral"


def _is_spatial_conv(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv1d, nn.Conv2d)) and math.prod(module.kernel_size) > 1


def projection_layers(
    model: nn.Module, layers: str | Iterable[str] | None = None, max_layers: int = 4
) -> list[str]:
    """The convolution layers to project on.

    ``None``: up to ``max_layers`` spatial (k > 1) Conv1d/Conv2d layers evenly spread over
    depth. Otherwise each selected module counts: a weight layer as itself, a block as its last
    spatial convolution (its last weight layer when it has no spatial one).
    """
    from deepprofile.capture.selectors import resolve_layers

    modules = dict(model.named_modules())
    names = [n for n in modules if n]
    if layers is None:
        convs = [n for n in names if _is_spatial_conv(modules[n])]
        if not convs:
            convs = [n for n in names if isinstance(modules[n], (nn.Conv1d, nn.Conv2d))]
        if len(convs) <= max_layers:
            return convs
        picks = np.unique(np.round(np.linspace(0, len(convs) - 1, max_layers)).astype(int))
        return [convs[i] for i in picks]
    if isinstance(layers, str):
        layers = [layers]
    chosen: set[str] = set()
    for sel in layers:
        for hit in resolve_layers(model, [sel]):
            module = modules[hit]
            if is_weight_layer(module):
                chosen.add(hit)
                continue
            inner = [n for n in names if n.startswith(hit + ".")]
            spatial = [n for n in inner if _is_spatial_conv(modules[n])]
            weights = [n for n in inner if is_weight_layer(modules[n])]
            if spatial or weights:
                chosen.add((spatial or weights)[-1])
            elif not any(ch in sel for ch in "*?["):
                _check_supported(module, hit)  # raises: no weights here
    return [n for n in names if n in chosen]


@dataclass(frozen=True)
class SpectralResult:
    """Everything the spectral analysis of one model (and dataset) produced."""

    model: str
    weights_hash: str
    dataset: dict[str, Any] | None
    parameters: dict[str, Any]
    trained: ModelSpectrum
    random_init: ModelSpectrum | None
    projections: dict[str, LayerProjection] = field(default_factory=dict)
    hypergraphs: dict[str, ClassHypergraph] = field(default_factory=dict)
    operator: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_info: dict[str, Any] = field(default_factory=dict)

    @property
    def alpha_hat(self) -> float | None:
        return self.trained.alpha_hat

    @property
    def alpha_hat_random(self) -> float | None:
        return None if self.random_init is None else self.random_init.alpha_hat

    def depth_trend(self) -> dict[str, list[Any]]:
        return depth_trend(list(self.hypergraphs.values()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "spectral", "model": self.model, "weights_hash": self.weights_hash,
            "model_info": dict(self.model_info), "dataset": self.dataset,
            "parameters": dict(self.parameters),
            "alpha_hat": {"trained": self.alpha_hat, "random_init": self.alpha_hat_random},
            "trained": self.trained.to_dict(),
            "random_init": None if self.random_init is None else self.random_init.to_dict(),
            "projections": {k: v.to_dict() for k, v in self.projections.items()},
            "hypergraphs": {k: v.to_dict() for k, v in self.hypergraphs.items()},
            "depth_trend": self.depth_trend(),
            "operator": {k: dict(v) for k, v in self.operator.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpectralResult:
        return cls(
            model=data["model"], weights_hash=data["weights_hash"], dataset=data.get("dataset"),
            parameters=dict(data.get("parameters", {})),
            trained=ModelSpectrum.from_dict(data["trained"]),
            random_init=(None if data.get("random_init") is None
                         else ModelSpectrum.from_dict(data["random_init"])),
            projections={k: LayerProjection.from_dict(v)
                         for k, v in data.get("projections", {}).items()},
            hypergraphs={k: ClassHypergraph.from_dict(v)
                         for k, v in data.get("hypergraphs", {}).items()},
            operator={k: dict(v) for k, v in data.get("operator", {}).items()},
            model_info=dict(data.get("model_info", {})),
        )

    @classmethod
    def read(cls, run_dir: str | Path) -> SpectralResult:
        """Load ``RUN_DIR/results/spectral.json``."""
        from deepprofile.rundir import RunDir

        return cls.from_dict(RunDir(run_dir).read_result(RESULT_NAME))


def operator_summary(module: nn.Module, input_shape: Sequence[int], top: int = 64
                     ) -> dict[str, Any]:
    """Operator spectrum (circular padding) of a conv at input shape ``(c, *spatial)`` next to
    its unfolded-matrix spectrum; ``{"skipped": reason}`` when the stride does not divide."""
    spatial = tuple(int(v) for v in input_shape[1:])
    try:
        values = conv_operator_singular_values(module, spatial)
    except ShapeError as exc:
        return {"input_size": list(spatial), "skipped": str(exc)}
    unfolded = singular_values(module)
    return {
        "input_size": list(spatial), "padding_assumed": "circular",
        "n_singular_values": int(len(values)),
        "operator_spectral_norm": float(values[0]),
        "unfolded_spectral_norm": float(unfolded[0]),
        "norm_ratio": float(values[0] / unfolded[0]) if unfolded[0] > 0 else None,
        "top": values[:top].tolist(),
        "quantiles": dict(zip(("0", "0.25", "0.5", "0.75", "1"),
                              np.quantile(values, [0, .25, .5, .75, 1]).tolist(), strict=True)),
    }


def run_spectral(
    model: nn.Module,
    run_dir: str | Path | None,
    dataset: Dataset | None = None,
    layers: str | Iterable[str] | None = None,
    *,
    seed: int = 0,
    quiet: bool = False,
    weight_layers: str | Iterable[str] | None = None,
    threshold: float = 0.8,
    mode: str = "cumulative",
    n_vectors: int | None = None,
    max_projection_layers: int = 4,
    compare_random_init: bool = True,
    n_bootstrap: int = 0,
    shared_fraction: float = 0.5,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    model_info: Mapping[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    store: Any = None,
    scheduler: str | None = None,
    saved: LayerResults | None = None,
) -> SpectralResult:
    """SVD + random-matrix figures of every Conv/Linear layer (trained and random init), and,
    with a dataset, projections + class hypergraphs for a few conv layers.

    ``layers`` picks the projection layers (see :func:`projection_layers`; a block stands for
    its last spatial convolution); ``weight_layers`` restricts the weight analysis (default:
    all Conv/Linear layers). Writes ``results/spectral.json`` in ``run_dir`` (when given).

    ``store`` (an :class:`~deepprofile.capture.ActivationStore`) can stand in for the dataset:
    layers stored as full maps (``flatten``) are projected from the store directly; the others
    by a forward pass over the store's images, rebuilt from its dataset spec
    (``store.metadata["dataset"]``) and row indices.

    ``scheduler`` (``local:N`` or ``tcp://HOST:PORT``, see
    :func:`deepprofile.distributed.client_for`) runs each layer's weight spectrum (trained
    and random init), each projection from stored full maps and each operator spectrum as
    one Dask task; the forward pass over the dataset stays here (one pass serves every
    layer). The result is identical to one process.

    Each finished layer (weight spectrum, projection, operator spectrum) is kept in
    ``run_dir/results/.partial/spectral`` until ``spectral.json`` is written, so a killed
    run resumes with the layers not yet done (see :mod:`deepprofile.partial`). ``saved``
    (a :class:`~deepprofile.partial.LayerResults`) keeps them elsewhere when the caller
    writes the result itself (the command line's ``-o``; call its ``finish()`` after
    writing). The result is the same with or without them.
    """
    from deepprofile.distributed import client_for
    from deepprofile.partial import LayerResults
    from deepprofile.rundir import RunDir
    from deepprofile.validate import check_options

    check_options("spectral", locals())
    # each finished layer is kept in results/.partial/spectral until spectral.json is
    # written, so a killed run resumes with the layers not yet done
    if saved is None:
        saved = LayerResults.in_results(
            None if run_dir is None else RunDir(run_dir).results_dir, RESULT_NAME)
    with client_for(scheduler) as client:
        result = _run_spectral(
            model, dataset, layers, client=client, seed=seed, quiet=quiet,
            weight_layers=weight_layers, threshold=threshold, mode=mode, n_vectors=n_vectors,
            max_projection_layers=max_projection_layers,
            compare_random_init=compare_random_init, n_bootstrap=n_bootstrap,
            shared_fraction=shared_fraction, batch_size=batch_size, device=device,
            model_info=model_info, class_names=class_names, store=store, saved=saved)
    if run_dir is not None:
        RunDir(run_dir).write_result(RESULT_NAME, result)
        saved.finish(quiet)
    return result


def _run_spectral(
    model: nn.Module, dataset: Dataset | None, layers: str | Iterable[str] | None, *,
    client: Any, seed: int, quiet: bool, weight_layers: str | Iterable[str] | None,
    threshold: float, mode: str, n_vectors: int | None, max_projection_layers: int,
    compare_random_init: bool, n_bootstrap: int, shared_fraction: float, batch_size: int,
    device: str | torch.device, model_info: Mapping[str, Any] | None,
    class_names: Sequence[str] | None, store: Any, saved: Any = None,
) -> SpectralResult:
    """:func:`run_spectral` without writing, per-layer work on ``client`` when given, and
    each finished layer kept in ``saved`` (a :class:`~deepprofile.partial.LayerResults`)."""
    from deepprofile.attribution.memory import current_budget
    from deepprofile.partial import LayerResults, module_digest
    from deepprofile.provenance import weights_hash

    saved = saved if saved is not None else LayerResults(None, RESULT_NAME)
    model_hash = weights_hash(model)
    ana = WeightSpectrumAnalyzer(
        weight_layers, compare_random_init=compare_random_init, n_bootstrap=n_bootstrap,
        seed=seed, quiet=quiet, model_info=model_info,
    ).fit(model, client=client, saved=saved)
    projections: dict[str, LayerProjection] = {}
    hypergraphs: dict[str, ClassHypergraph] = {}
    operator: dict[str, dict[str, Any]] = {}
    dataset_spec = None
    proj_names: list[str] = []
    sources: dict[str, str] = {}
    if dataset is not None or store is not None:
        proj_names = projection_layers(model, layers, max_projection_layers)
    if proj_names:
        from deepprofile.data import dataset_spec as spec_of

        if store is not None:
            dataset_spec = store.metadata.get("dataset")
            class_names = class_names or store.metadata.get("class_names")
        if dataset is not None:
            dataset_spec = spec_of(dataset) if dataset_spec is None else dataset_spec
        modules = {n: get_module(model, n) for n in proj_names}
        svds = {n: layer_svd(modules[n], n, vectors=True) for n in proj_names}
        stored = [n for n in proj_names if store is not None and n in store.layers
                  and store.reduction(n) == "flatten"]
        options = {"n_vectors": n_vectors, "threshold": threshold, "mode": mode,
                   "class_names": None if class_names is None else list(class_names)}
        # full output maps in the store: no forward pass needed; one task per layer with a
        # client, reading its maps from the store there
        identity = None if store is None or not saved.enabled else store.identity
        budget = current_budget()
        store_path = None if store is None else str(Path(store.path).resolve())
        keys = [{"module": module_digest(modules[n]), "store": identity, "options": options,
                 "budget": budget} if identity else None for n in stored]
        projections.update(zip(stored, saved.map(
            "projections-stored", _stored_projection_task, stored,
            [(n, svds[n]) for n in stored], client, store_path, options, keys=keys,
            decode=LayerProjection.from_dict, quiet=quiet), strict=True))
        for n in stored:
            sources[n] = "store (flatten outputs)"
        rest = [n for n in proj_names if n not in projections]
        # a forward pass over the store's own images (rebuilt from its spec) is identified
        # by the store and the model; a dataset passed in is not: its layers are not kept
        forward_key = None if dataset is not None or identity is None else {
            "model": model_hash, "store": identity, "options": options, "budget": budget,
            "batch_size": batch_size, "device": str(device)}
        shapes: dict[str, tuple[int, ...]] = {}
        for n in rest:
            done = saved.load("projections-forward", n, forward_key, decode=dict)
            if done is not None:
                projections[n] = LayerProjection.from_dict(done["projection"])
                if done["input_shape"] is not None:
                    shapes[n] = tuple(done["input_shape"])
        missing = [n for n in rest if n not in projections]
        if missing:
            if dataset is None:  # rebuild the store's images from its dataset spec
                from torch.utils.data import Subset

                from deepprofile.data import dataset_from_spec

                if not dataset_spec:
                    raise StoreMismatchError(
                        f"The store at {store.path} records no dataset spec, and layers {rest} "
                        "are not stored as full maps (flatten); pass the dataset explicitly."
                    )
                dataset = Subset(dataset_from_spec(dataset_spec), store.indices.tolist())
            found: dict[str, tuple[int, ...]] = {}
            fresh = project_dataset(
                model, dataset, missing, svds=svds, n_vectors=n_vectors,
                threshold=threshold, mode=mode, batch_size=batch_size, device=device,
                class_names=class_names, input_shapes=found, quiet=quiet,
            )
            done = saved.save_all(
                "projections-forward", missing,
                [{"projection": fresh[n], "input_shape": found.get(n)} for n in missing],
                [forward_key] * len(missing), decode=dict)
            for n, item in zip(missing, done, strict=True):
                projections[n] = LayerProjection.from_dict(item["projection"])
                if item["input_shape"] is not None:
                    shapes[n] = tuple(item["input_shape"])
        for n in rest:
            sources[n] = "forward hooks on the dataset"
        spectra = [n for n in rest if n in shapes and not isinstance(modules[n], nn.Linear)]
        operator.update(zip(spectra, saved.map(
            "operator", _operator_task, spectra,
            [(modules[n], shapes[n]) for n in spectra], client,
            keys=[{"module": module_digest(modules[n]), "input_shape": list(shapes[n])}
                  if saved.enabled else None for n in spectra],
            decode=dict, quiet=quiet), strict=True))
        projections = {n: projections[n] for n in proj_names}
        hypergraphs = {n: hypergraph_from_projection(p, shared_fraction=shared_fraction)
                       for n, p in projections.items()}
    result = SpectralResult(
        model=type(model).__name__, weights_hash=model_hash, dataset=dataset_spec,
        parameters={
            "seed": seed, "threshold": threshold, "mode": mode, "n_vectors": n_vectors,
            "projection_layers": proj_names, "weight_layers": ana.layer_names_,
            "compare_random_init": compare_random_init, "n_bootstrap": n_bootstrap,
            "shared_fraction": shared_fraction, "min_tail": ana.min_tail,
            "min_eigenvalues": ana.min_eigenvalues, "projection_sources": sources,
            "random_init_baseline": (None if ana.baseline_ is None
                                     else ana.baseline_.to_dict()),
        },
        trained=ana.result_, random_init=ana.random_init_, projections=projections,
        hypergraphs=hypergraphs, operator=operator, model_info=dict(model_info or {}),
    )
    return result


def _stored_projection_task(item: tuple[str, Any], store_path: str,
                            options: dict[str, Any]) -> LayerProjection:
    """One layer's projection from the full maps in the store at ``store_path`` (a task)."""
    from deepprofile.capture.store import ActivationStore

    name, svd = item
    store = ActivationStore.open(store_path, verify=False)
    return project_stored_outputs(svd, store.layer(name), store.labels, store.indices,
                                  **options)


def _operator_task(item: tuple[nn.Module, Sequence[int]]) -> dict[str, Any]:
    """One conv's :func:`operator_summary` at its input shape (a task)."""
    module, shape = item
    return operator_summary(module, shape)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def summarize_spectral(result: SpectralResult) -> str:
    """The lines the demo prints: alpha-hat (trained vs random init) and, per projected layer,
    the class hypergraph's summary."""
    fitted = sum(lay.power_law is not None for lay in result.trained.layers)
    lines = [
        f"Weight spectra of {len(result.trained.layers)} Conv/Linear layers "
        f"({fitted} with a power-law tail fit):",
        f"  alpha-hat (mean alpha*log10(s_max^2)): trained {_fmt(result.alpha_hat)}, "
        f"random init {_fmt(result.alpha_hat_random)}; mean alpha: trained "
        f"{_fmt(result.trained.mean_alpha)}, random init "
        f"{_fmt(None if result.random_init is None else result.random_init.mean_alpha)}",
    ]
    baseline = result.parameters.get("random_init_baseline") or {}
    if baseline.get("fallback"):
        lines.append(f"  random init used the modules' reset_parameters() (PyTorch's generic "
                     f"init), not the architecture's own: {baseline.get('reason')}")
    if result.hypergraphs:
        p = result.parameters
        lines.append(
            f"Class hypergraphs of influential singular vectors ({p.get('mode')} threshold "
            f"{p.get('threshold')}):"
        )
        width = max(len(n) for n in result.hypergraphs)
        for name, hg in result.hypergraphs.items():
            s = hg.summary()
            op = result.operator.get(name, {})
            extra = ""
            if op.get("operator_spectral_norm") is not None:
                extra = (f"; norm {op['operator_spectral_norm']:.2f} as operator, "
                         f"{op['unfolded_spectral_norm']:.2f} unfolded")
            lines.append(
                f"  {name:<{width}}  {s['n_edges']} classes x {s['n_vertices']} vectors: "
                f"edge size {s['mean_size']:.1f}, Jaccard {s['mean_jaccard']:.2f}, "
                f"{s['n_components_s1']} component(s), {s['n_shared_vertices']} shared by "
                f">={hg.shared_min_classes} classes{extra}"
            )
    return "\n".join(lines)


__all__ = ["SpectralResult", "operator_summary", "projection_layers", "run_spectral",
           "summarize_spectral"]
