"""Where a concept lives in the structures deepprofile computes: :func:`run_concept_links`.

Given a run folder, its :class:`~deepprofile.concepts.sets.ConceptSet` and the fitted
:class:`~deepprofile.concepts.probes.ConceptProbe` s, four parts tie each concept to a
structure (each part's computation lives in its own module):

- ``mapper`` (:mod:`.links_mapper`): concept composition of every node and concept purity of
  every graph in ``results/mapper.json``, beside a shuffled-mask baseline;
- ``topology`` (:mod:`.links_topology`): per probed layer, the diagram distance between the
  concept-positive and -negative sub-clouds against a permutation null, beside the probe's
  balanced accuracy;
- ``spectra`` (:mod:`.links_spectra`): cosines between each probe direction and the layer's
  top output singular vectors against random directions; the concept-selective vectors as
  hyperedges of the class hypergraph (from ``results/spectral.json`` when present);
- ``attributions`` (:mod:`.links_attribution`): integrated gradients of the probe's logit on
  a few positive images per concept (maps kept under ``RUN_DIR/concepts/maps/``) and, on the
  ``shapes`` dataset, the attribution mass inside the concept's ground-truth region against
  the region's area share.

The result is plain JSON; ``run_concepts`` stores it under ``"structures"`` of
``results/concepts.json``. A part that cannot run (no mapper graphs yet, no checkpoint for the
model) is recorded with its reason under ``"skipped"`` instead of failing the others.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepprofile.errors import DeepProfileError

PARTS = ("mapper", "topology", "spectra", "attributions")
MAPS_DIR = "concepts/maps"

DEFAULTS: dict[str, Any] = {
    "parts": PARTS,
    # mapper
    "purity_permutations": 20, "mapper_pages": True,
    # topology
    "topology_points": 64, "topology_permutations": 49, "homology_dims": (0, 1),
    "metric": "sliced_wasserstein", "topology_concepts": None,
    # spectra
    "n_vectors": 16, "n_random": 1000, "alpha": 0.05,
    # attributions
    "attribution_images": 8, "attribution_method": "integrated_gradients", "n_steps": 32,
    "attribution_layers": "best", "n_examples": 4, "attribution_concepts": None,
    # inputs (loaded from the run folder when not given)
    "model": None, "dataset": None, "device": "cpu", "quiet": True,
}


def _field(probe: Any, name: str, default: Any = None) -> Any:
    if isinstance(probe, Mapping):
        return probe.get(name, default)
    return getattr(probe, name, default)


def _probe_table(probes: Iterable[Any], concept_names: Sequence[str]) -> list[Any]:
    """One probe per (layer, concept) on a row concept, L2 preferred, in the given order."""
    chosen: dict[tuple[str, str], Any] = {}
    for p in probes:
        key = (str(_field(p, "layer")), str(_field(p, "concept")))
        if key[1] not in concept_names:
            continue
        if key not in chosen or (_field(chosen[key], "penalty", "l2") != "l2"
                                 and _field(p, "penalty", "l2") == "l2"):
            chosen[key] = p
    return list(chosen.values())


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


class _Context:
    """Lazily opened inputs shared by the parts: stores, model, dataset."""

    def __init__(self, run_dir: Path, opts: Mapping[str, Any]) -> None:
        self.run_dir = run_dir
        self.opts = opts
        self._stores: dict[str, Any] = {}
        self._model = opts.get("model")
        self._dataset = opts.get("dataset")

    def store(self, name: str | None):
        from deepprofile.capture.store import ActivationStore
        from deepprofile.rundir import RunDir

        name = name or RunDir.STORE
        if name not in self._stores:
            self._stores[name] = ActivationStore.open(self.run_dir / name, verify=False)
        return self._stores[name]

    def activations(self, probe: Any) -> np.ndarray:
        X = np.asarray(self.store(_field(probe, "store_name")).layer(_field(probe, "layer")))
        if str(_field(probe, "reduction", "")).startswith("positions") and X.ndim == 3:
            X = X.mean(axis=1)  # one point per image: the mean over its sampled positions
        return X.reshape(len(X), -1)

    def model_and_dataset(self):
        if self._model is None or self._dataset is None:
            from deepprofile.attribution.pipeline import load_run_inputs

            model, _, dataset, _ = load_run_inputs(self.run_dir, device=self.opts["device"])
            self._model = self._model if self._model is not None else model
            self._dataset = self._dataset if self._dataset is not None else dataset
        return self._model.eval(), self._dataset


# -- parts ------------------------------------------------------------------------------------


def mapper_part(ctx: _Context, concept_set: Any, probes: Sequence[Any], seed: int
                ) -> dict[str, Any]:
    from deepprofile.concepts.links_mapper import graph_concepts
    from deepprofile.rundir import RunDir

    data = RunDir(ctx.run_dir).read_result("mapper")  # MissingFileError: part skipped
    graphs = data.get("layers", {}) if isinstance(data, Mapping) else {}
    if not graphs:
        raise DeepProfileError("results/mapper.json holds no graphs; run `deepprofile mapper`.")
    masks = {n: concept_set.mask(n) for n in concept_set.names}
    layers: dict[str, Any] = {}
    for layer, graph in graphs.items():
        out = graph_concepts(graph, masks, n_permutations=ctx.opts["purity_permutations"],
                             seed=seed)
        out["class_purity_mean"] = (graph.get("stats") or {}).get("class_purity_mean")
        layers[layer] = out
    depth = {name: [layers[lay]["purity"][name]["purity"] for lay in layers]
             for name in concept_set.names}
    pages: dict[str, str] = {}
    if ctx.opts["mapper_pages"]:  # draw the pages again with a colour function per concept
        from deepprofile.concepts.links_mapper import concept_colours
        from deepprofile.mapper.pipeline import write_pages

        pages = write_pages(ctx.run_dir, extra_colours=lambda result: {
            f"concept {k}": v for k, v in concept_colours(result, masks).items()})
    return {"layers": layers, "layer_order": list(layers), "purity_by_depth": depth,
            "pages": pages}


def topology_part(ctx: _Context, concept_set: Any, probes: Sequence[Any], seed: int
                  ) -> dict[str, Any]:
    from deepprofile.concepts.links_topology import concept_topology_test

    wanted = ctx.opts["topology_concepts"]
    rows = []
    for i, p in enumerate(probes):
        concept = str(_field(p, "concept"))
        if wanted is not None and concept not in wanted:
            continue
        mask = concept_set.mask(concept)
        res = concept_topology_test(
            ctx.activations(p), mask, layer=str(_field(p, "layer")), concept=concept,
            n_points=ctx.opts["topology_points"],
            n_permutations=ctx.opts["topology_permutations"],
            homology_dims=ctx.opts["homology_dims"], metric=ctx.opts["metric"], seed=seed + i,
        ).to_dict()
        res.pop("null")
        res["probe_balanced_accuracy"] = _field(p, "balanced_accuracy")
        rows.append(res)
    return {"tests": rows, "metric": ctx.opts["metric"],
            "homology_dims": list(ctx.opts["homology_dims"]),
            "n_permutations": ctx.opts["topology_permutations"]}


def spectra_part(ctx: _Context, concept_set: Any, probes: Sequence[Any], seed: int
                 ) -> dict[str, Any]:
    from deepprofile.concepts.links_spectra import concept_hypergraph, direction_alignment
    from deepprofile.rundir import RunDir
    from deepprofile.spectral.conv_svd import get_module, layer_svd
    from deepprofile.spectral.pipeline import projection_layers

    model, _ = ctx.model_and_dataset()
    rd = RunDir(ctx.run_dir)
    class_graphs = rd.read_result("spectral").get("hypergraphs", {}) if rd.has_result(
        "spectral") else {}
    by_layer: dict[str, list[Any]] = {}
    for p in probes:
        by_layer.setdefault(str(_field(p, "layer")), []).append(p)
    layers: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for layer, items in by_layer.items():
        try:
            weight_layer = projection_layers(model, [layer])[-1]
        except (DeepProfileError, IndexError) as exc:
            skipped[layer] = str(exc) or "no weight layer"
            continue
        svd = layer_svd(get_module(model, weight_layer), weight_layer, vectors=True)
        alignments, selective = {}, {}
        for j, p in enumerate(items):
            concept = str(_field(p, "concept"))
            try:
                res = direction_alignment(
                    np.asarray(_field(p, "weight")), svd.U, k=ctx.opts["n_vectors"],
                    n_random=ctx.opts["n_random"], alpha=ctx.opts["alpha"], seed=seed + j,
                    layer=layer, weight_layer=weight_layer, concept=concept)
            except DeepProfileError as exc:
                skipped[f"{layer}/{concept}"] = str(exc)
                continue
            alignments[concept] = res.to_dict()
            alignments[concept]["probe_balanced_accuracy"] = _field(p, "balanced_accuracy")
            selective[concept] = list(res.selective)
        if not alignments:
            continue
        k = next(iter(alignments.values()))["k"]
        class_edges = (class_graphs.get(weight_layer) or {}).get("edges", {})
        n_class_vertices = len((class_graphs.get(weight_layer) or {}).get("vertices", []))
        hyper = concept_hypergraph(class_edges, selective, n_vectors=max(k, n_class_vertices),
                                   layer=weight_layer)
        layers[layer] = {
            "weight_layer": weight_layer, "k": k,
            "singular_values": svd.singular_values[:k].tolist(),
            "alignments": alignments, "hypergraph": hyper,
            "class_edges_from": "results/spectral.json" if class_edges else None,
        }
    return {"layers": layers, "skipped": skipped, "n_random": ctx.opts["n_random"],
            "alpha": ctx.opts["alpha"]}


def _attribution_probes(probes: Sequence[Any], how: str, wanted: Any) -> list[Any]:
    out = [p for p in probes if wanted is None or _field(p, "concept") in wanted]
    if how == "all":
        return out
    best: dict[str, Any] = {}
    for p in out:
        c = str(_field(p, "concept"))
        acc = _field(p, "balanced_accuracy") or 0.0
        if c not in best or acc > (_field(best[c], "balanced_accuracy") or 0.0):
            best[c] = p
    return list(best.values())


def attributions_part(ctx: _Context, concept_set: Any, probes: Sequence[Any], seed: int
                      ) -> dict[str, Any]:
    import torch

    from deepprofile.attribution.methods import canonical_method, saliency_maps
    from deepprofile.concepts.links_attribution import concept_attribution, region_share

    model, dataset = ctx.model_and_dataset()
    opts = ctx.opts
    store = ctx.store(None)
    indices = np.asarray(store.indices)
    spec = store.metadata.get("dataset") or {}
    shapes = spec.get("name") == "shapes"
    maps_dir = ctx.run_dir / MAPS_DIR
    rng = np.random.default_rng(seed)
    rows_out = []
    for p in _attribution_probes(probes, opts["attribution_layers"],
                                 opts["attribution_concepts"]):
        concept, layer = str(_field(p, "concept")), str(_field(p, "layer"))
        positives = np.flatnonzero(concept_set.mask(concept))
        if len(positives) == 0:
            continue
        take = np.sort(rng.choice(positives, min(opts["attribution_images"], len(positives)),
                                  replace=False))
        images = torch.stack([torch.as_tensor(dataset[int(indices[r])][0]) for r in take])
        params = {"n_steps": opts["n_steps"]} if canonical_method(
            opts["attribution_method"]) in ("integrated_gradients",) else {}
        maps = concept_attribution(
            model, layer, np.asarray(_field(p, "weight")), float(_field(p, "bias")), images,
            reduction=str(_field(p, "reduction", "mean")), method=opts["attribution_method"],
            seed=seed, **params)
        sal = saliency_maps(maps.attributions).astype(np.float32)
        row: dict[str, Any] = {
            "concept": concept, "layer": layer, "rows": take.tolist(),
            "method": maps.method, "probe_balanced_accuracy": _field(p, "balanced_accuracy"),
        }
        if shapes and sal.ndim == 3:
            from deepprofile.concepts.sets import shapes_regions

            regions = shapes_regions(indices[take], concept, **{
                k: spec[k] for k in ("seed", "spurious_class", "marker_rate",
                                     "marker_base_rate") if k in spec})
            share = region_share(maps.attributions, regions)
            row["region"] = "marker patch" if concept == "marker" else "shape"
            row["region_share"] = {k: share[k] for k in (
                "mean_mass_share", "mean_area_share", "enrichment", "n_images")}
        n_ex = min(opts["n_examples"], len(take))
        path = maps_dir / f"{_safe(concept)}__{_safe(layer)}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, images=images[:n_ex].numpy().astype(np.float32),
                            saliency=sal[:n_ex], rows=take[:n_ex])
        row["maps"] = str(path.relative_to(ctx.run_dir))
        rows_out.append(row)
    return {"maps": rows_out, "method": opts["attribution_method"],
            "n_images": opts["attribution_images"], "dataset": spec.get("name")}


_PART_FUNCS = {"mapper": mapper_part, "topology": topology_part, "spectra": spectra_part,
               "attributions": attributions_part}


def run_concept_links(run_dir: str | Path, concept_set: Any, probes: Iterable[Any], *,
                      seed: int = 0, **opts: Any) -> dict[str, Any]:
    """Tie every concept of ``concept_set`` to the run's mapper graphs, topology, weight
    spectra and attributions; returns JSON-ready data (see the module docstring).

    ``probes`` are :class:`~deepprofile.concepts.probes.ConceptProbe` s (or dicts with the
    same fields). Options (``DEFAULTS``): ``parts`` to run, and each part's parameters;
    ``model`` / ``dataset`` stand in for loading them from the run folder.
    """
    unknown = sorted(set(opts) - set(DEFAULTS))
    if unknown:
        raise DeepProfileError(f"run_concept_links does not take {', '.join(unknown)}; its "
                               f"options are: {', '.join(DEFAULTS)}.")
    options = {**DEFAULTS, **opts}
    bad = sorted(set(options["parts"]) - set(PARTS))
    if bad:
        raise DeepProfileError(f"Unknown part(s) {bad}; choose from {', '.join(PARTS)}.")
    run_dir = Path(run_dir)
    table = _probe_table(probes, concept_set.names)
    ctx = _Context(run_dir, options)
    out: dict[str, Any] = {
        "concepts": list(concept_set.names),
        "probes": [{"layer": _field(p, "layer"), "concept": _field(p, "concept"),
                    "balanced_accuracy": _field(p, "balanced_accuracy")} for p in table],
        "parameters": {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in options.items() if k not in ("model", "dataset")},
        "seed": seed, "skipped": {}, "seconds": {},
    }
    for part in options["parts"]:
        start = time.perf_counter()
        try:
            out[part] = _PART_FUNCS[part](ctx, concept_set, table, seed)
        except DeepProfileError as exc:
            out["skipped"][part] = str(exc)
        out["seconds"][part] = round(time.perf_counter() - start, 3)
    from deepprofile.results import jsonable

    return jsonable(out)


__all__ = ["DEFAULTS", "PARTS", "run_concept_links"]
