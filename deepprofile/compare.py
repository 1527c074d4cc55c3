"""Compare two runs: two captures of the same layers on the same images.

Typical pairs are two seeds of one architecture, or a model before and after fine-tuning.
:func:`compare_runs` checks that the runs are comparable (same dataset spec, same images in
the same order, common layers), then gathers, using the analyses' own APIs:

- topology (:func:`deepprofile.topology.compare_topology`): the cross layer x layer diagram
  distances and CKA, and the layer matching (specificity: is each layer of A nearest to the
  same layer of B?);
- mapper graphs (:mod:`deepprofile.mapper.distance`): the graph distance between each
  layer of A and its counterpart in B, from both runs' ``results/mapper.json``;
- weight spectra (:mod:`deepprofile.spectral`): alpha, spectral norm and stable rank per weight
  layer (from ``results/spectral.json``, or computed from the checkpoints when absent), and
  the principal angles (``scipy.linalg.subspace_angles``) between the top-k left singular
  subspaces of each weight layer in A and in B, next to the angles between random subspaces
  of the same size.

It writes ``OUT_DIR/results/compare.json``; :func:`deepprofile.report.build_comparison_report`
renders it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepprofile.errors import DeepProfileError, MissingFileError, StoreMismatchError

RESULT_NAME = "compare"


@dataclass(frozen=True)
class ComparisonResult:
    """Everything :func:`compare_runs` found, JSON-ready.

    ``run_a``/``run_b``: what each run is (path, model, weights hash, dataset, samples,
    accuracy, layers); ``checks``: ``differences`` (blocking), ``notes`` and
    ``common_layers``; ``topology``: :class:`~deepprofile.topology.TopologyComparison` as a
    dict; ``matched_layers``: per layer of A its nearest B layer by topology and by CKA and
    its counterpart; ``mapper``, ``spectral``, ``principal_angles``: per-layer rows (``None``
    when that part could not be computed; the reason is in ``checks["notes"]``); ``concepts``:
    concept probe curves of both runs (:func:`deepprofile.concepts.compare.concept_curves`);
    ``data_attribution``: overlap of the top training images per target
    (:func:`deepprofile.data_attribution.compare.compare_data_attribution`).
    """

    run_a: dict[str, Any]
    run_b: dict[str, Any]
    checks: dict[str, Any]
    topology: dict[str, Any] | None = None
    matched_layers: list[dict[str, Any]] = field(default_factory=list)
    mapper: dict[str, Any] | None = None
    spectral: dict[str, Any] | None = None
    principal_angles: dict[str, Any] | None = None
    concepts: dict[str, Any] | None = None
    data_attribution: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    out_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        from deepprofile.results import jsonable

        return {"kind": "comparison", **jsonable({
            name: getattr(self, name) for name in self.__dataclass_fields__})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ComparisonResult:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @classmethod
    def read(cls, out_dir: str | Path) -> ComparisonResult:
        from deepprofile.rundir import RunDir

        return cls.from_dict(RunDir(out_dir).read_result(RESULT_NAME))

    def topology_comparison(self):
        """The topology part as a :class:`~deepprofile.topology.TopologyComparison`."""
        from deepprofile.topology.pipeline import TopologyComparison

        return None if self.topology is None else TopologyComparison.from_dict(self.topology)


# --------------------------------------------------------------------------------------
# what a run is, and whether two runs can be compared
# --------------------------------------------------------------------------------------
def _stores(run: Path) -> dict[str, Any]:
    from deepprofile.capture.store import ActivationStore

    out = {}
    for path in sorted(run.glob("activations*.zarr")):
        try:
            out[path.name] = ActivationStore.open(path, verify=False)
        except DeepProfileError:
            continue
    return out


def describe_run(run_dir: str | Path) -> dict[str, Any]:
    """The facts of a run used to compare it: from ``run.json`` and its stores."""
    from deepprofile.rundir import RunDir

    rd = RunDir(run_dir)
    if not rd.overview_path.exists():
        raise MissingFileError(f"{rd.path} is not a run folder (no run.json). Make one with "
                               "`deepprofile capture MODEL --out RUN_DIR`.")
    ov = rd.read_overview()
    info = ov.get("model_info") or {}
    return {
        "path": str(rd.path), "model": ov.get("model"), "arch": info.get("arch"),
        "checkpoint": ov.get("checkpoint"), "weights_hash": ov.get("weights_hash"),
        "dataset": ov.get("dataset"), "n_samples": ov.get("n_samples"),
        "accuracy": ov.get("accuracy"), "layers": list(ov.get("layers") or []),
        "class_names": ov.get("class_names"), "date": ov.get("date"),
        "results": sorted(p.stem for p in rd.results_dir.glob("*.json")),
    }


def check_comparable(run_a: str | Path, run_b: str | Path) -> dict[str, Any]:
    """``{"differences": [...], "notes": [...], "common_layers": [...]}``.

    Differences block a comparison: another dataset spec, another number of samples, other
    images or another order (store indices), no common layer. Notes do not: layers only one
    run has, other reductions, other class names, another architecture.
    """
    a, b = describe_run(run_a), describe_run(run_b)
    diffs: list[str] = []
    notes: list[str] = []
    if a["dataset"] != b["dataset"]:
        diffs.append(f"dataset differs (A: {a['dataset']}, B: {b['dataset']})")
    if a["n_samples"] != b["n_samples"]:
        diffs.append(f"number of samples differs (A: {a['n_samples']}, B: {b['n_samples']})")
    sa, sb = _stores(Path(run_a)), _stores(Path(run_b))
    if not sa or not sb:
        diffs.append("a run has no readable activation store "
                     f"(A: {', '.join(sa) or 'none'}, B: {', '.join(sb) or 'none'})")
    for name in sorted(set(sa) & set(sb)):
        ia, ib = np.asarray(sa[name].indices), np.asarray(sb[name].indices)
        if ia.shape != ib.shape or not np.array_equal(ia, ib):
            same = int(np.sum(ia[: len(ib)] == ib[: len(ia)])) if len(ia) and len(ib) else 0
            diffs.append(f"store {name}: the runs captured different images or another order "
                         f"({same} of {max(len(ia), len(ib))} rows hold the same dataset "
                         "index)")
        for layer in sorted(set(sa[name].layers) & set(sb[name].layers)):
            ra, rb = sa[name].reduction(layer), sb[name].reduction(layer)
            if ra != rb:
                notes.append(f"store {name}, layer {layer}: reduction {ra} in A, {rb} in B")
    for name in sorted(set(sa) ^ set(sb)):
        notes.append(f"store {name} exists only in run {'A' if name in sa else 'B'}")
    common = [n for n in a["layers"] if n in b["layers"]]
    only_a = [n for n in a["layers"] if n not in b["layers"]]
    only_b = [n for n in b["layers"] if n not in a["layers"]]
    if not common:
        diffs.append(f"no common layer (A: {', '.join(a['layers'])}; B: "
                     f"{', '.join(b['layers'])})")
    elif only_a or only_b:
        notes.append("compared on the common layers only; only in A: "
                     f"{', '.join(only_a) or 'none'}; only in B: {', '.join(only_b) or 'none'}")
    if a["class_names"] != b["class_names"]:
        notes.append("class names differ between the runs")
    if a["arch"] != b["arch"]:
        notes.append(f"architectures differ (A: {a['arch']}, B: {b['arch']}); weight layers "
                     "are compared where names and shapes agree")
    if a["weights_hash"] == b["weights_hash"]:
        notes.append("both runs have the same weights hash: the same model twice")
    return {"differences": diffs, "notes": notes, "common_layers": common,
            "run_a": a, "run_b": b}


# --------------------------------------------------------------------------------------
# parts of the comparison
# --------------------------------------------------------------------------------------
def _cloud_kind(run_a: Path, run_b: Path, layers: Sequence[str]) -> str:
    """``max_position`` (Purvine et al.) when both runs store it for the layers, else
    ``image`` (mean-pooled activations)."""
    from deepprofile.topology.clouds import resolve_layer_stores

    try:
        resolve_layer_stores(run_a, list(layers), "max_position")
        resolve_layer_stores(run_b, list(layers), "max_position")
        return "max_position"
    except DeepProfileError:
        return "image"


def _matched_layers(topo: Any) -> list[dict[str, Any]]:
    spec = topo.specificity
    primary = spec.get(topo.primary)
    cka = spec.get("cka_linear") or next(
        (v for k, v in spec.items() if k.startswith("cka_")), None)
    rows = []
    for i, name in enumerate(topo.layers_a):
        row: dict[str, Any] = {"layer_a": name,
                               "counterpart": name if name in topo.layers_b else None}
        if primary is not None:
            row["nearest_topology"] = topo.layers_b[primary.nearest[i]]
        if cka is not None:
            row["nearest_cka"] = topo.layers_b[cka.nearest[i]]
        rows.append(row)
    return rows


def _mapper_part(run_a: Path, run_b: Path, matched: Sequence[Mapping[str, Any]],
                 notes: list[str]) -> dict[str, Any] | None:
    from deepprofile.mapper.distance import assignment_agreement, mapper_distance
    from deepprofile.mapper.pipeline import RESULT_NAME as MAPPER
    from deepprofile.mapper.pipeline import MapperResult
    from deepprofile.rundir import RunDir

    ra, rb = RunDir(run_a), RunDir(run_b)
    missing = [x for x, r in (("A", ra), ("B", rb)) if not r.has_result(MAPPER)]
    if missing:
        notes.append(f"mapper graphs not compared: run {' and '.join(missing)} has no "
                     "results/mapper.json (run `deepprofile mapper RUN_DIR` on both)")
        return None
    ga = MapperResult.from_dict(ra.read_result(MAPPER)).graphs
    gb = MapperResult.from_dict(rb.read_result(MAPPER)).graphs
    rows = []
    for m in matched:
        la = m["layer_a"]
        lb = m.get("counterpart") or m.get("nearest_topology")
        if la not in ga or lb not in gb:
            continue
        try:
            coot = mapper_distance(ga[la], gb[lb])
            agree = assignment_agreement(ga[la], gb[lb])
            others = [mapper_distance(ga[la], gb[o]) for o in gb
                      if o != lb and gb[o].n_points == ga[la].n_points]
        except DeepProfileError as exc:
            notes.append(f"mapper graphs of {la} (A) and {lb} (B) not compared: {exc}")
            continue
        rows.append({"layer_a": la, "layer_b": lb, "coot": coot, "vi": agree["vi"],
                     "n_points_compared": agree["n_compared"],
                     "ari": agree["ari"], "nvi": agree["nvi"],
                     "coot_other_mean": float(np.mean(others)) if others else None,
                     "n_nodes_a": ga[la].stats.n_nodes, "n_nodes_b": gb[lb].stats.n_nodes})
    return {"layers": rows, "method": "coot (fixed point coupling), VI/ARI of node cells"}


def _load_model(run: Mapping[str, Any], notes: list[str], label: str):
    """The run's model: its checkpoint built with the architecture and class count recorded
    in its run.json, checked against the recorded weights hash (a note says why not)."""
    from deepprofile.models import load_run_model

    try:
        model, _ = load_run_model(run["path"])
    except DeepProfileError as exc:
        notes.append(f"run {label}: model not loaded ({exc}); weight spectra and principal "
                     "angles need it")
        return None
    return model


def _spectral_part(run_a: Path, run_b: Path, models: Sequence[Any], notes: list[str],
                   quiet: bool) -> dict[str, Any] | None:
    from deepprofile.rundir import RunDir
    from deepprofile.spectral.pipeline import RESULT_NAME as SPECTRAL
    from deepprofile.spectral.rmt import ModelSpectrum, analyze_weights

    spectra: list[ModelSpectrum | None] = []
    sources = []
    for run, model, label in ((run_a, models[0], "A"), (run_b, models[1], "B")):
        rd = RunDir(run)
        if rd.has_result(SPECTRAL):
            spectra.append(ModelSpectrum.from_dict(rd.read_result(SPECTRAL)["trained"]))
            sources.append("results/spectral.json")
        elif model is not None:
            spectra.append(analyze_weights(model, compare_random_init=False, quiet=quiet)[0])
            sources.append("computed from the checkpoint")
        else:
            notes.append(f"weight spectra not compared: run {label} has no "
                         "results/spectral.json and no loadable checkpoint")
            return None
    sa, sb = spectra
    names_b = {lay.layer for lay in sb.layers}
    rows = []
    for la in sa.layers:
        if la.layer not in names_b:
            continue
        lb = sb.layer(la.layer)
        rows.append({
            "layer": la.layer, "alpha_a": la.alpha, "alpha_b": lb.alpha,
            "spectral_norm_a": la.spectral_norm, "spectral_norm_b": lb.spectral_norm,
            "stable_rank_a": la.stable_rank, "stable_rank_b": lb.stable_rank,
            "alpha_weighted_a": la.alpha_weighted, "alpha_weighted_b": lb.alpha_weighted,
        })
    return {"layers": rows, "alpha_hat": {"a": sa.alpha_hat, "b": sb.alpha_hat},
            "sources": sources}


def random_subspace_angles(dim: int, k: int, n_draws: int = 20, seed: int = 0) -> np.ndarray:
    """Mean principal angles (radians, ascending) between two random ``k``-dimensional
    subspaces of ``R^dim`` (Gaussian draws), the reference level of "unrelated"."""
    from scipy.linalg import subspace_angles

    rng = np.random.default_rng(seed)
    draws = [np.sort(subspace_angles(rng.standard_normal((dim, k)),
                                     rng.standard_normal((dim, k))))
             for _ in range(n_draws)]
    return np.mean(draws, axis=0)


def principal_angles(model_a: Any, model_b: Any, layers: Sequence[str] | None = None,
                     k: int = 8, seed: int = 0) -> list[dict[str, Any]]:
    """Principal angles between the top-``k`` left singular subspaces of each weight layer
    present (same name and weight shape) in both models."""
    from scipy.linalg import subspace_angles

    from deepprofile.spectral.conv_svd import get_module, layer_svd, weight_layers

    names_b = set(weight_layers(model_b))
    rows = []
    for name in weight_layers(model_a, layers):
        if name not in names_b:
            continue
        ma, mb = get_module(model_a, name), get_module(model_b, name)
        if tuple(ma.weight.shape) != tuple(mb.weight.shape):
            continue
        sa, sb = layer_svd(ma, name), layer_svd(mb, name)
        dim = sa.U.shape[0]
        kk = min(k, sa.rank, sb.rank)
        if kk < 1 or kk >= dim:  # the subspaces would fill the space: angles say nothing
            continue
        angles = np.degrees(np.sort(subspace_angles(sa.U[:, :kk], sb.U[:, :kk])))
        rand = np.degrees(random_subspace_angles(dim, kk, seed=seed))
        rows.append({
            "layer": name, "k": int(kk), "dim": int(dim), "angles_deg": angles.tolist(),
            "min_deg": float(angles.min()), "mean_deg": float(angles.mean()),
            "max_deg": float(angles.max()), "random_mean_deg": float(rand.mean()),
            "random_min_deg": float(rand.min()),
        })
    return rows


# --------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------
def compare_runs(
    run_a: str | Path, run_b: str | Path, out_dir: str | Path, *, quiet: bool = False,
    layers: Sequence[str] | None = None, n_points: int = 500, seed: int = 0, k: int = 8,
    topology: bool = True, mapper: bool = True, spectral: bool = True,
    topology_params: Mapping[str, Any] | None = None, concepts: bool = True,
) -> ComparisonResult:
    """Compare two runs and write ``OUT_DIR/results/compare.json``.

    Raises :class:`~deepprofile.errors.StoreMismatchError` naming every difference when the
    runs are not comparable. ``layers`` restricts the comparison (default: the common
    layers); ``n_points`` and ``seed`` go to the topology clouds; ``k`` is the size of the
    singular subspaces compared; ``topology``/``mapper``/``spectral`` switch parts off.
    """
    from deepprofile.provenance import command_line, now_iso, package_versions
    from deepprofile.rundir import RunDir

    run_a, run_b, out = Path(run_a), Path(run_b), Path(out_dir)
    checks = check_comparable(run_a, run_b)
    a, b = checks.pop("run_a"), checks.pop("run_b")
    if checks["differences"]:
        raise StoreMismatchError(
            f"Runs {run_a} and {run_b} cannot be compared: " + "; ".join(checks["differences"])
            + ". Capture both with the same dataset, split and --limit (same images, same "
            "order) and at least one common layer.")
    notes: list[str] = checks["notes"]
    common = list(checks["common_layers"])
    if layers is not None:
        unknown = [n for n in layers if n not in common]
        if unknown:
            raise DeepProfileError(f"Layers {unknown} are not in both runs; common layers: "
                                   f"{', '.join(common)}.")
        common = list(layers)
    params: dict[str, Any] = {"layers": common, "n_points": n_points, "seed": seed, "k": k}

    topo_dict = None
    matched: list[dict[str, Any]] = []
    if topology:
        from deepprofile.topology.pipeline import compare_topology

        kind = _cloud_kind(run_a, run_b, common)
        n = min(int(n_points), int(a.get("n_samples") or n_points))
        topo = compare_topology(run_a, run_b, layers=common, cloud=kind, n_points=n,
                                seed=seed, quiet=quiet, **dict(topology_params or {}))
        topo_dict = topo.to_dict()
        matched = _matched_layers(topo)
        params["cloud"] = kind
    else:
        matched = [{"layer_a": n, "counterpart": n} for n in common]

    mapper_part = _mapper_part(run_a, run_b, matched, notes) if mapper else None
    spectral_part = angles_part = None
    if spectral:
        models = [_load_model(a, notes, "A"), _load_model(b, notes, "B")]
        spectral_part = _spectral_part(run_a, run_b, models, notes, quiet)
        if models[0] is not None and models[1] is not None:
            rows = principal_angles(models[0], models[1], k=k, seed=seed)
            angles_part = {"k": k, "layers": rows,
                           "method": "scipy.linalg.subspace_angles on the top-k left "
                                     "singular vectors of the unfolded weights"}
    concepts_part = None
    if concepts:
        from deepprofile.concepts.compare import concept_curves

        concepts_part = concept_curves(run_a, run_b, notes)
    from deepprofile.data_attribution.compare import compare_data_attribution

    data_attribution_part = compare_data_attribution(run_a, run_b)
    result = ComparisonResult(
        run_a=a, run_b=b, checks=checks, topology=topo_dict, matched_layers=matched,
        mapper=mapper_part, spectral=spectral_part, principal_angles=angles_part,
        concepts=concepts_part, data_attribution=data_attribution_part,
        params=params,
        provenance={"date": now_iso(), "versions": package_versions(),
                    "command": command_line()},
        out_dir=str(out),
    )
    RunDir(out).write_result(RESULT_NAME, result)
    return result


def summarize_comparison(result: ComparisonResult, max_rows: int = 12) -> str:
    """Plain text: comparability, specificity, then one table row per matched layer (mapper
    distance) and per weight layer (principal angles), long tables cut to their extremes."""
    lines = [f"Comparison of {result.run_a['path']} (A) and {result.run_b['path']} (B): "
             f"{len(result.checks.get('common_layers', []))} common layers."]
    for note in result.checks.get("notes", []):
        lines.append(f"  note: {note}")
    topo = result.topology
    if topo:
        spec = topo.get("specificity", {})
        lines.append("Layer matching (specificity accuracy): " + ", ".join(
            f"{k} {v['accuracy']:.2f}" for k, v in spec.items()))
    if result.mapper and result.mapper.get("layers"):
        rows = [[f"{r['layer_a']} -> {r['layer_b']}", f"{r['coot']:.3f}",
                 "-" if r.get("coot_other_mean") is None else f"{r['coot_other_mean']:.3f}"]
                for r in result.mapper["layers"]]
        lines.append("Mapper graph distance per matched layer:")
        lines += _table(["layers", "COOT", "to other layers"], rows, max_rows)
    angles = result.principal_angles
    if angles and angles.get("layers"):
        rows_in = angles["layers"]
        below = sum(1 for r in rows_in if r["mean_deg"] < r["random_mean_deg"] - 5)
        lines.append(f"Principal angles, top-{angles['k']} singular subspaces of {len(rows_in)} "
                     f"weight layers ({below} clearly below the random level):")
        rows = [[r["layer"], f"{r['min_deg']:.0f}", f"{r['mean_deg']:.0f}",
                 f"{r['random_mean_deg']:.0f}"] for r in rows_in]
        lines += _table(["layer", "min°", "mean°", "random mean°"], rows, max_rows)
    elif result.params.get("k") is not None and angles is None:
        lines.append("Principal angles: not computed (see the notes).")
    if result.spectral and result.spectral.get("layers"):
        ah = result.spectral.get("alpha_hat") or {}
        lines.append(f"Weight spectra of {len(result.spectral['layers'])} common layers; "
                     f"alpha-hat A {_num(ah.get('a'))}, B {_num(ah.get('b'))}.")
    if result.concepts:
        lines.append("Concepts (first decodable layer A / B): " + ", ".join(
            f"{r['concept']} {r['a']['first_layer'] or '-'}/{r['b']['first_layer'] or '-'}"
            for r in result.concepts["concepts"]))
    return "\n".join(lines)


def _num(v: Any) -> str:
    return "-" if v is None else f"{float(v):.3g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], max_rows: int) -> list[str]:
    """Aligned plain-text rows; beyond ``max_rows`` the first and last halves with a gap."""
    if len(rows) > max_rows:
        half = max_rows // 2
        gap = [f"... {len(rows) - 2 * half} more ..."] + [""] * (len(header) - 1)
        rows = [*rows[:half], gap, *rows[-half:]]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return ["  " + fmt.format(*header).rstrip()] + ["  " + fmt.format(*r).rstrip() for r in rows]


__all__ = ["ComparisonResult", "check_comparable", "compare_runs", "describe_run",
           "principal_angles", "random_subspace_angles", "summarize_comparison"]
