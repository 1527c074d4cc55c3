"""Topology of layers end to end: clouds -> diagrams -> distances, CKA, matching tests.

:class:`TopologyAnalysis` is the estimator; :func:`run_topology` runs it on a run folder and
writes ``RUN_DIR/results/topology.json``; :func:`compare_topology` compares two models'
layers (two seeds, two checkpoints) and reports specificity; :func:`summarize_topology`
prints either result. Nothing here renders.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deepprofile.topology.clouds import PointCloud, clouds_from_store
from deepprofile.topology.distances import METRICS, DiagramDistance
from deepprofile.topology.matching import (
    SensitivityResult,
    SensitivitySweep,
    SpecificityResult,
    specificity,
)
from deepprofile.topology.persistence import (
    DiagramSummary,
    PersistenceDiagrams,
    VietorisRips,
    summarize_diagram,
)
from deepprofile.topology.similarity import cka_matrix

if TYPE_CHECKING:
    from deepprofile.partial import LayerResults

RESULT_NAME = "topology"
COMPARE_NAME = "topology_compare"


def _matrices_to_json(mats: Mapping[str, Mapping[int, np.ndarray]]) -> dict[str, Any]:
    return {m: {str(d): np.asarray(v) for d, v in by_dim.items()} for m, by_dim in mats.items()}


def _matrices_from_json(data: Mapping[str, Any]) -> dict[str, dict[int, np.ndarray]]:
    return {m: {int(d): np.asarray(v, dtype=float) for d, v in by_dim.items()}
            for m, by_dim in data.items()}


@dataclass(frozen=True, eq=False)
class TopologyResult:
    """Topology of one model's layers.

    ``distances[metric][dim]`` and ``cka[kind]`` are layer x layer matrices in the order of
    ``layers``; ``diagrams[layer]`` keep the parameters that made them; ``sensitivity[layer]``
    holds the principal-component sweep; ``provenance`` names model, weights, dataset, store.
    """

    layers: tuple[str, ...]
    cloud_kind: str
    clouds: dict[str, dict[str, Any]]
    diagrams: dict[str, PersistenceDiagrams]
    summaries: dict[str, dict[int, DiagramSummary]]
    distances: dict[str, dict[int, np.ndarray]]
    cka: dict[str, np.ndarray]
    sensitivity: dict[str, SensitivityResult]
    params: dict[str, Any]
    provenance: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def matrix(self, metric: str = "sliced_wasserstein", dim: int = 1) -> np.ndarray:
        return self.distances[metric][dim]

    def to_dict(self) -> dict[str, Any]:
        from deepprofile.results import jsonable

        return jsonable({
            "kind": "topology", "layers": self.layers, "cloud_kind": self.cloud_kind,
            "clouds": self.clouds,
            "diagrams": {k: v.to_dict() for k, v in self.diagrams.items()},
            "summaries": {k: {str(d): s.to_dict() for d, s in v.items()}
                          for k, v in self.summaries.items()},
            "distances": _matrices_to_json(self.distances), "cka": self.cka,
            "sensitivity": {k: v.to_dict() for k, v in self.sensitivity.items()},
            "params": self.params, "provenance": self.provenance, "timings": self.timings,
        })

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TopologyResult:
        return cls(
            layers=tuple(data["layers"]), cloud_kind=data["cloud_kind"],
            clouds=dict(data["clouds"]),
            diagrams={k: PersistenceDiagrams.from_dict(v) for k, v in data["diagrams"].items()},
            summaries={k: {int(d): DiagramSummary.from_dict(s) for d, s in v.items()}
                       for k, v in data["summaries"].items()},
            distances=_matrices_from_json(data["distances"]),
            cka={k: np.asarray(v, dtype=float) for k, v in data["cka"].items()},
            sensitivity={k: SensitivityResult.from_dict(v)
                         for k, v in data["sensitivity"].items()},
            params=dict(data["params"]), provenance=dict(data["provenance"]),
            timings={k: float(v) for k, v in data.get("timings", {}).items()},
        )


@dataclass(frozen=True, eq=False)
class TopologyComparison:
    """Layers of model A against layers of model B: cross matrices and specificity.

    ``cross[metric][dim]`` has A's layers as rows and B's as columns; ``specificity`` maps
    ``"<metric>/H<dim>"`` and ``"cka_<kind>"`` to :class:`SpecificityResult`.
    """

    layers_a: tuple[str, ...]
    layers_b: tuple[str, ...]
    cloud_kind: str
    diagrams_a: dict[str, PersistenceDiagrams]
    diagrams_b: dict[str, PersistenceDiagrams]
    cross: dict[str, dict[int, np.ndarray]]
    cka: dict[str, np.ndarray]
    specificity: dict[str, SpecificityResult]
    params: dict[str, Any]
    provenance_a: dict[str, Any]
    provenance_b: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def primary(self) -> str:
        """The headline measure: the first metric on H1 (else its first dimension)."""
        metric = self.params["metrics"][0]
        dims = self.params["homology"]
        return f"{metric}/H{1 if 1 in dims else dims[0]}"

    @property
    def accuracy(self) -> float:
        """Specificity accuracy of the headline measure."""
        return self.specificity[self.primary].accuracy

    def to_dict(self) -> dict[str, Any]:
        from deepprofile.results import jsonable

        return jsonable({
            "kind": "topology_comparison", "layers_a": self.layers_a,
            "layers_b": self.layers_b, "cloud_kind": self.cloud_kind,
            "diagrams_a": {k: v.to_dict() for k, v in self.diagrams_a.items()},
            "diagrams_b": {k: v.to_dict() for k, v in self.diagrams_b.items()},
            "cross": _matrices_to_json(self.cross), "cka": self.cka,
            "specificity": {k: v.to_dict() for k, v in self.specificity.items()},
            "accuracy": self.accuracy, "primary": self.primary,
            "params": self.params, "provenance_a": self.provenance_a,
            "provenance_b": self.provenance_b, "timings": self.timings,
        })

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TopologyComparison:
        return cls(
            layers_a=tuple(data["layers_a"]), layers_b=tuple(data["layers_b"]),
            cloud_kind=data["cloud_kind"],
            diagrams_a={k: PersistenceDiagrams.from_dict(v)
                        for k, v in data["diagrams_a"].items()},
            diagrams_b={k: PersistenceDiagrams.from_dict(v)
                        for k, v in data["diagrams_b"].items()},
            cross=_matrices_from_json(data["cross"]),
            cka={k: np.asarray(v, dtype=float) for k, v in data["cka"].items()},
            specificity={k: SpecificityResult.from_dict(v)
                         for k, v in data["specificity"].items()},
            params=dict(data["params"]), provenance_a=dict(data["provenance_a"]),
            provenance_b=dict(data["provenance_b"]),
            timings={k: float(v) for k, v in data.get("timings", {}).items()},
        )


def _provenance(source: Any, clouds: Mapping[str, PointCloud]) -> dict[str, Any]:
    from deepprofile.provenance import command_line, now_iso, package_versions

    first = next(iter(clouds.values())).provenance
    stores = sorted({c.provenance.get("store") for c in clouds.values()
                     if c.provenance.get("store")})
    return {
        "source": str(getattr(source, "path", source)), "stores": stores,
        "model": first.get("model"), "weights_hash": first.get("weights_hash"),
        "dataset": first.get("dataset"), "n_samples": first.get("n_samples"),
        "versions": package_versions(), "created": now_iso(), "command": command_line(),
    }


def _persistence_layer(cloud: PointCloud, rips: VietorisRips) -> PersistenceDiagrams:
    """The persistence diagrams of one layer (a Dask task with ``--scheduler``; one BLAS
    thread in either place, so both write the same bits: see :mod:`deepprofile.blas`)."""
    from deepprofile.blas import one_blas_thread

    with one_blas_thread():
        return rips.compute(cloud)


def _sweep_layer(item: tuple[PointCloud, PersistenceDiagrams],
                 sweep: SensitivitySweep) -> SensitivityResult:
    """The sensitivity sweep of one layer (a Dask task with ``--scheduler``; one BLAS
    thread in either place: its SVDs and CKA products then have the same bits)."""
    from deepprofile.blas import one_blas_thread

    with one_blas_thread():
        return sweep.fit(*item).result_


def _cloud_key(cloud: PointCloud) -> dict[str, Any]:
    """What identifies a layer's cloud: its description and a digest of its points."""
    from deepprofile.partial import array_digest

    return {"cloud": cloud.describe(), "points": array_digest(cloud.points)}


class TopologyAnalysis:
    """Clouds, persistence, distance matrices, CKA and the sensitivity sweep of one model.

    Parameters
    ----------
    layers:
        Layer names (``None``: every usable stored layer).
    cloud:
        ``max_position`` (Purvine et al.), ``image`` or ``positions``.
    n_points, sampler, normalize, seed, positions_k:
        Cloud construction (see :mod:`deepprofile.topology.clouds`).
    homology:
        Homology dimensions (``(0, 1)``).
    metrics:
        Diagram metrics for the layer x layer matrices.
    cutoff_quantile:
        Optional Rips cutoff at this quantile of each cloud's pairwise distances.
    cka:
        CKA kinds for the layer x layer similarity (``linear``, ``rbf``, ``minibatch``);
        skipped for ``positions`` clouds, which hold several points per image.
    sensitivity_k:
        k values of the principal-component sweep (empty: skip it).
    sensitivity_metric:
        Diagram metric of the sweep.
    """

    def __init__(
        self, layers: Sequence[str] | None = None, *, cloud: str = "max_position",
        n_points: int | None = 500, sampler: str = "random", normalize: str = "median",
        seed: int = 0, positions_k: int = 16, homology: Sequence[int] = (0, 1),
        metrics: Sequence[str] = METRICS, cutoff_quantile: float | None = None,
        cka: Sequence[str] = ("linear", "rbf"), sensitivity_k: Sequence[int] = (0, 1, 2, 4, 8),
        sensitivity_metric: str = "sliced_wasserstein", n_threads: int = 2,
        quiet: bool = False, scheduler: str | None = None,
    ) -> None:
        self.layers = None if layers is None else list(layers)
        self.cloud = cloud
        self.n_points = n_points
        self.sampler = sampler
        self.normalize = normalize
        self.seed = seed
        self.positions_k = positions_k
        self.homology = tuple(int(d) for d in homology)
        self.metrics = tuple(metrics)
        self.cutoff_quantile = cutoff_quantile
        self.cka = tuple(cka)
        self.sensitivity_k = tuple(sensitivity_k)
        self.sensitivity_metric = sensitivity_metric
        self.n_threads = n_threads
        self.quiet = quiet
        self.scheduler = scheduler  # where per-layer work runs; not a parameter of the maths

    def params(self) -> dict[str, Any]:
        return {
            "layers": self.layers, "cloud": self.cloud, "n_points": self.n_points,
            "sampler": self.sampler, "normalize": self.normalize, "seed": self.seed,
            "positions_k": self.positions_k, "homology": list(self.homology),
            "metrics": list(self.metrics), "cutoff_quantile": self.cutoff_quantile,
            "cka": list(self.cka), "sensitivity_k": list(self.sensitivity_k),
            "sensitivity_metric": self.sensitivity_metric, "n_threads": self.n_threads,
            "metric_params": {m: DiagramDistance(m).params() for m in self.metrics},
        }

    def _check(self) -> None:
        for metric in (*self.metrics, self.sensitivity_metric):
            DiagramDistance(metric)
        if not self.metrics:
            raise ValueError("Choose at least one diagram metric.")

    def _rips(self) -> VietorisRips:
        return VietorisRips(self.homology, cutoff_quantile=self.cutoff_quantile,
                            seed=self.seed, n_threads=self.n_threads, quiet=self.quiet)

    def clouds(self, source: Any) -> dict[str, PointCloud]:
        """The layer clouds of ``source`` (store, store path or run folder)."""
        return clouds_from_store(
            source, self.layers, kind=self.cloud, n_points=self.n_points, sampler=self.sampler,
            normalize=self.normalize, seed=self.seed, positions_k=self.positions_k,
            quiet=self.quiet,
        )

    def _cka(self, sources: Sequence[tuple[Any, Mapping[str, PointCloud]]]
             ) -> dict[str, np.ndarray]:
        """CKA matrices on the same images in every layer (of one or two models).

        When the clouds do not share their images (``fps``), one random subsample of the
        images all layers hold is drawn once and taken from every layer; ``cka_samples_``
        records which images were used and how they were chosen.
        """
        from deepprofile.topology.cka_sample import own_sample_info, same_images, shared_cka_clouds

        self.cka_samples_: dict[str, Any] | None = None
        if self.cloud == "positions" or not self.cka:  # CKA pairs one point per image
            return {}
        groups = [clouds for _, clouds in sources]
        if same_images(groups):
            self.cka_samples_ = own_sample_info(groups)
        else:
            groups, self.cka_samples_ = shared_cka_clouds(
                [(src, list(clouds)) for src, clouds in sources], kind=self.cloud,
                n_points=self.n_points, normalize=self.normalize, seed=self.seed)
        clouds_b = groups[1] if len(groups) > 1 else None
        return {kind: cka_matrix(groups[0], clouds_b, kind=kind, **(
            {"seed": self.seed} if kind == "minibatch" else {})) for kind in self.cka}

    def _diagrams(self, clouds: Mapping[str, PointCloud], client: Any,
                  saved: LayerResults | None = None) -> dict[str, PersistenceDiagrams]:
        """Persistence of every cloud: here, or one Dask task per layer with ``client``;
        layers found in ``saved`` are reused, the others saved there as they finish."""
        from deepprofile.partial import LayerResults

        saved = saved if saved is not None else LayerResults(None, RESULT_NAME)
        rips = self._rips()
        names = list(clouds)
        found = saved.map("persistence", _persistence_layer, names,
                          [clouds[n] for n in names], client, rips,
                          keys=[{"rips": rips.params(), **_cloud_key(clouds[n])} for n in names],
                          decode=PersistenceDiagrams.from_dict, quiet=self.quiet)
        return dict(zip(names, found, strict=True))

    def fit(self, source: Any, *, saved: LayerResults | None = None) -> TopologyAnalysis:
        """Analyse one model; sets ``clouds_``, ``diagrams_`` and ``result_``.

        With ``scheduler`` the persistence and sensitivity of each layer run as Dask tasks
        (clouds are built here and shipped: at most ``n_points`` rows each); distances
        and CKA, which need every layer, run here. ``saved``
        (:class:`~deepprofile.partial.LayerResults`) keeps each finished layer's
        persistence and sweep so that a killed run resumes (:func:`run_topology` passes the
        run folder's); the result is the same with or without it.
        """
        from deepprofile.distributed import client_for

        self._check()
        with client_for(self.scheduler) as client:
            return self._fit(source, client, saved)

    def _fit(self, source: Any, client: Any, saved: LayerResults | None) -> TopologyAnalysis:
        from deepprofile.partial import LayerResults

        saved = saved if saved is not None else LayerResults(None, RESULT_NAME)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        clouds = self.clouds(source)
        timings["clouds"] = time.perf_counter() - start
        names = list(clouds)

        start = time.perf_counter()
        diagrams = self._diagrams(clouds, client, saved)
        timings["persistence"] = time.perf_counter() - start

        start = time.perf_counter()
        top = max((float(np.max(dg.finite(d)[:, 1])) for dg in diagrams.values()
                   for d in self.homology if len(dg.finite(d))), default=1.0)
        grid = np.linspace(0.0, top, 100)
        summaries = {
            name: {d: summarize_diagram(dg[d], d, grid=grid) for d in self.homology}
            for name, dg in diagrams.items()
        }
        distances = {
            metric: {d: DiagramDistance(metric).pairwise([diagrams[n] for n in names], d,
                                                         quiet=self.quiet)
                     for d in self.homology}
            for metric in self.metrics
        }
        timings["distances"] = time.perf_counter() - start

        start = time.perf_counter()
        cka = self._cka([(source, clouds)])
        timings["cka"] = time.perf_counter() - start

        start = time.perf_counter()
        sens: dict[str, SensitivityResult] = {}
        if self.sensitivity_k:
            # the base diagrams carry their filtration cutoff; the sweep reuses it
            sweep = SensitivitySweep(self.sensitivity_k, metric=self.sensitivity_metric,
                                     homology_dims=self.homology, n_threads=self.n_threads,
                                     cutoff_quantile=self.cutoff_quantile, seed=self.seed)
            swept = [n for n in names
                     if len([k for k in self.sensitivity_k if k < clouds[n].dim]) >= 2]
            # the sweep reads the cloud and its base diagrams (made with these rips settings)
            keys = [{"sweep": vars(sweep), "rips": self._rips().params(),
                     **_cloud_key(clouds[n])} for n in swept]
            sens = dict(zip(swept, saved.map(
                "sensitivity", _sweep_layer, swept, [(clouds[n], diagrams[n]) for n in swept],
                client, sweep, keys=keys, decode=SensitivityResult.from_dict,
                quiet=self.quiet), strict=True))
        timings["sensitivity"] = time.perf_counter() - start

        self.clouds_ = clouds
        self.diagrams_ = diagrams
        self.result_ = TopologyResult(
            layers=tuple(names), cloud_kind=self.cloud,
            clouds={n: c.describe() for n, c in clouds.items()}, diagrams=diagrams,
            summaries=summaries, distances=distances, cka=cka, sensitivity=sens,
            params={**self.params(), "cka_samples": self.cka_samples_},
            provenance=_provenance(source, clouds), timings=timings,
        )
        return self

    def compare(self, source_a: Any, source_b: Any) -> TopologyComparison:
        """Cross matrices and specificity between the layers of two models."""
        self._check()
        timings: dict[str, float] = {}
        start = time.perf_counter()
        clouds_a = self.clouds(source_a)
        clouds_b = self.clouds(source_b)
        timings["clouds"] = time.perf_counter() - start
        start = time.perf_counter()
        from deepprofile.distributed import client_for

        with client_for(self.scheduler) as client:
            diagrams_a = self._diagrams(clouds_a, client)
            diagrams_b = self._diagrams(clouds_b, client)
        timings["persistence"] = time.perf_counter() - start
        names_a, names_b = list(clouds_a), list(clouds_b)

        start = time.perf_counter()
        cross = {
            metric: {d: DiagramDistance(metric).pairwise(
                [diagrams_a[n] for n in names_a], d, [diagrams_b[n] for n in names_b],
                quiet=self.quiet) for d in self.homology}
            for metric in self.metrics
        }
        spec = {
            f"{metric}/H{d}": specificity(cross[metric][d], names_a, names_b,
                                          measure=f"{metric}/H{d}")
            for metric in self.metrics for d in self.homology
        }
        timings["distances"] = time.perf_counter() - start
        start = time.perf_counter()
        cka = self._cka([(source_a, clouds_a), (source_b, clouds_b)])
        for kind, mat in cka.items():
            spec[f"cka_{kind}"] = specificity(mat, names_a, names_b, higher_is_closer=True,
                                              measure=f"cka_{kind}")
        timings["cka"] = time.perf_counter() - start
        return TopologyComparison(
            layers_a=tuple(names_a), layers_b=tuple(names_b), cloud_kind=self.cloud,
            diagrams_a=diagrams_a, diagrams_b=diagrams_b, cross=cross, cka=cka,
            specificity=spec, params={**self.params(), "cka_samples": self.cka_samples_},
            provenance_a=_provenance(source_a, clouds_a),
            provenance_b=_provenance(source_b, clouds_b), timings=timings,
        )


def _results_dir(source: Any) -> Path:
    """Where results of ``source`` go: the run folder, or the folder holding the store."""
    from deepprofile.capture.store import ActivationStore

    if isinstance(source, ActivationStore):
        return Path(source.path).parent / "results"
    path = Path(source)
    if (path / "zarr.json").exists() and not (path / "activations.zarr").exists():
        return path.parent / "results"
    return path / "results"


def run_topology(
    run_dir: str | Path, *, layers: Sequence[str] | None = None, cloud: str = "max_position",
    n_points: int = 500, seed: int = 0, quiet: bool = False,
    store: str | Path | None = None, write: bool = True, scheduler: str | None = None,
    **params: Any,
) -> TopologyResult:
    """Topology of one run's layers; writes ``RUN_DIR/results/topology.json``.

    ``run_dir`` may be a run folder (each layer is read from the first ``activations*.zarr``
    holding it with a usable reduction) or a store path; ``store`` names one store
    explicitly. Other keywords go to :class:`TopologyAnalysis` (``metrics``, ``homology``,
    ``sampler``, ``normalize``, ``cutoff_quantile``, ``cka``, ``sensitivity_k``, ...).
    ``scheduler`` (``local:N`` or ``tcp://HOST:PORT``) runs each layer's persistence and
    sensitivity sweep as a Dask task; the result is the same as without it.
    """
    from deepprofile.results import write_json
    from deepprofile.validate import check_options

    check_options("topology", {**params, "n_points": n_points, "seed": seed})
    from deepprofile.partial import LayerResults

    source: Any = store if store is not None else run_dir
    analysis = TopologyAnalysis(layers, cloud=cloud, n_points=n_points, seed=seed,
                                quiet=quiet, scheduler=scheduler, **params)
    saved = LayerResults.in_results(_results_dir(run_dir) if write else None, RESULT_NAME)
    result = analysis.fit(source, saved=saved).result_
    if write:
        write_json(_results_dir(run_dir) / f"{RESULT_NAME}.json", result)
        saved.finish(quiet)
    return result


def compare_topology(
    store_a: Any, store_b: Any, *, layers: Sequence[str] | None = None,
    cloud: str = "max_position", n_points: int = 500, seed: int = 0, quiet: bool = False,
    out: str | Path | None = None, **params: Any,
) -> TopologyComparison:
    """Compare the layers of two models (stores, store paths or run folders).

    Returns a :class:`TopologyComparison` with cross matrices per metric and homology
    dimension, cross CKA, and the specificity of every measure; written as JSON to ``out``
    when given. Defaults compute H0/H1 with all four metrics and linear CKA.
    """
    from deepprofile.results import write_json

    params.setdefault("cka", ("linear",))
    params.setdefault("sensitivity_k", ())
    analysis = TopologyAnalysis(layers, cloud=cloud, n_points=n_points, seed=seed,
                                quiet=quiet, **params)
    result = analysis.compare(store_a, store_b)
    if out is not None:
        write_json(out, result)
    return result


def _fmt_matrix(names: Sequence[str], cols: Sequence[str], mat: np.ndarray) -> list[str]:
    width = max(8, *(len(c) for c in cols))
    head = " " * (max(len(n) for n in names) + 2) + "".join(f"{c:>{width + 1}}" for c in cols)
    lines = [head]
    for name, row in zip(names, np.asarray(mat), strict=True):
        lines.append(f"  {name:<{max(len(n) for n in names)}}"
                     + "".join(f"{v:>{width + 1}.3f}" for v in row))
    return lines


def summarize_topology(result: TopologyResult | TopologyComparison) -> str:
    """A few lines of plain text describing a topology result or comparison."""
    if isinstance(result, TopologyComparison):
        lines = [f"Topology comparison ({result.cloud_kind} clouds): "
                 f"{result.provenance_a.get('source')} vs {result.provenance_b.get('source')}"]
        metric, _, dim = result.primary.partition("/H")
        lines.append(f"Cross {metric} distance, H{dim} (rows: A, columns: B):")
        lines += _fmt_matrix(result.layers_a, result.layers_b, result.cross[metric][int(dim)])
        lines.append("Specificity (nearest layer of B is the same layer):")
        for key, spec in result.specificity.items():
            lines.append(f"  {key:<28} accuracy {spec.accuracy:.2f}")
        lines.append(f"Specificity accuracy ({result.primary}): {result.accuracy:.2f}")
        return "\n".join(lines)
    names = list(result.layers)
    first = next(iter(result.clouds.values()))
    lines = [f"Topology of {len(names)} layers ({result.cloud_kind} clouds, "
             f"{first['n_points']} points, {first['normalize']} normalisation)"]
    for name in names:
        parts = []
        for d, s in result.summaries[name].items():
            # n_features counts finite features, n_above_noise also the essential ones
            total = s.n_features + s.n_essential
            never = f" ({s.n_essential} never die)" if s.n_essential else ""
            parts.append(f"H{d}: {total} features{never}, {s.n_above_noise} above "
                         f"{s.noise_threshold:g}, entropy {s.entropy:.2f}")
        lines.append(f"  {name}: " + "; ".join(parts))
    metric = result.params["metrics"][0]
    dim = 1 if 1 in result.distances[metric] else next(iter(result.distances[metric]))
    lines.append(f"Layer x layer {metric} distance, H{dim}:")
    lines += _fmt_matrix(names, names, result.distances[metric][dim])
    if "linear" in result.cka:
        lines.append("Linear CKA:")
        lines += _fmt_matrix(names, names, result.cka["linear"])
    if result.sensitivity:
        lines.append(f"Sensitivity (top-k PCs removed, {result.params['sensitivity_metric']}):")
        for name, sens in result.sensitivity.items():
            rho = ", ".join(f"H{d} rho {r:.2f}" for d, r in sens.spearman.items())
            lines.append(f"  {name}: k={list(sens.k_values)} {rho}")
    return "\n".join(lines)


def summarize_comparison(result: TopologyComparison) -> str:
    """A few lines describing a comparison (cross matrix, specificity accuracy)."""
    return summarize_topology(result)


__all__ = [
    "COMPARE_NAME", "RESULT_NAME", "TopologyAnalysis", "TopologyComparison", "TopologyResult",
    "compare_topology", "run_topology", "summarize_comparison", "summarize_topology",
]
