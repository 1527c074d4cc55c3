"""Mapper graphs for every stored layer of a run: pages, JSON and a layer x layer matrix.

``run_mapper(run_dir)`` reads ``RUN_DIR/activations.zarr``, builds one mapper graph
per layer (:class:`~deepprofile.mapper.graph.MapperGraph`), writes
``RUN_DIR/mapper/<layer>.html`` (offline kmapper pages with thumbnails when the
dataset can be loaded) and ``RUN_DIR/results/mapper.json`` (every layer's graph,
statistics and the layer x layer graph distances), merging with layers already
in that file when they were made from the same store.
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepprofile.errors import DeepProfileError, MissingFileError, UnknownLayerError
from deepprofile.mapper.distance import MapperDistanceMatrix, mapper_distance_matrix
from deepprofile.mapper.graph import MapperGraphResult
from deepprofile.mapper.store import mapper_from_store, store_provenance

RESULT_NAME = "mapper"
PAGES_DIR = "mapper"
DISTANCE_METHODS = ("coot", "vi")


@dataclass(frozen=True)
class MapperResult:
    """Mapper graphs of several layers of one run, with their pages and distances.

    ``distances["coot"]``: hypergraph co-optimal transport distance with the point
    coupling fixed to the identity; ``distances["vi"]``: variation of information of
    the point-to-node assignments (baseline). ``pages`` maps layer -> HTML path
    relative to the run folder.
    """

    graphs: dict[str, MapperGraphResult]
    distances: dict[str, MapperDistanceMatrix] = field(default_factory=dict)
    pages: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return list(self.graphs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "mapper",
            "params": dict(self.params),
            "provenance": dict(self.provenance),
            "layers": {name: g.to_dict() for name, g in self.graphs.items()},
            "pages": dict(self.pages),
            "distances": {k: m.to_dict() for k, m in self.distances.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MapperResult:
        return cls(
            graphs={k: MapperGraphResult.from_dict(v) for k, v in d.get("layers", {}).items()},
            distances={
                k: MapperDistanceMatrix.from_dict(v) for k, v in d.get("distances", {}).items()
            },
            pages=dict(d.get("pages", {})),
            params=dict(d.get("params", {})),
            provenance=dict(d.get("provenance", {})),
        )


def page_name(layer: str) -> str:
    """File name of a layer's page: the module path with unsafe characters replaced."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", layer) + ".html"


def resolve_run_dir(path: str | Path) -> tuple[Any, Path]:
    """``(RunDir, store path)`` from a run folder or from its store folder.

    Given a store, results go to the store's parent folder.
    """
    from deepprofile.rundir import RunDir

    path = Path(path)
    if (path / RunDir.STORE).exists():
        rd = RunDir(path)
        return rd, rd.store_path
    if path.is_dir() and (path / "zarr.json").exists():
        return RunDir(path.parent), path
    raise MissingFileError(
        f"{path} is neither a run folder (with {RunDir.STORE}) nor an activation store. "
        "Run `deepprofile capture` first."
    )


def select_layers(available: Sequence[str], selectors: Sequence[str] | None) -> list[str]:
    """Stored layers matching exact names or glob patterns (all when ``None``)."""
    if not selectors:
        return list(available)
    chosen: list[str] = []
    for sel in selectors:
        hits = [name for name in available if name == sel or fnmatch.fnmatchcase(name, sel)]
        if not hits:
            from deepprofile.capture.selectors import close_matches

            hint = close_matches(sel, list(available))
            raise UnknownLayerError(
                f"Layer {sel!r} is not in the store. "
                + (f"Did you mean: {', '.join(hint)}? " if hint else "")
                + f"Stored layers: {', '.join(available)}."
            )
        chosen += [h for h in hits if h not in chosen]
    return chosen


def _load_dataset(store: Any) -> tuple[Any, str | None]:
    """The store's dataset for thumbnails, or ``(None, reason)``."""
    spec = (getattr(store, "metadata", {}) or {}).get("dataset")
    if spec is None:
        return None, "the store records no dataset"
    try:
        from deepprofile.data import dataset_from_spec
    except ImportError as exc:
        return None, f"deepprofile.data.dataset_from_spec is unavailable ({exc})"
    try:
        return dataset_from_spec(spec), None
    except Exception as exc:  # thumbnails are optional: any failure degrades to none
        return None, f"cannot load dataset {spec!r}: {exc}"


def _thumbnails(result: MapperGraphResult, dataset: Any, indices: Any) -> dict[int, str]:
    from deepprofile.mapper.page import thumbnails_from_dataset

    samples = result.point_sample
    rows = {
        int(samples[p]) if samples is not None else int(p)
        for node in result.nodes
        for p in node.representatives
    }
    return thumbnails_from_dataset(dataset, sorted(rows), indices)


def _concept_colours(run_dir: Path, result: MapperGraphResult, n_rows: int | None
                     ) -> dict[str, np.ndarray]:
    """Colour values of the run's saved concept set (``RUN_DIR/concepts``), if it has one
    covering this store's ``n_rows`` rows; otherwise none (pages are drawn without concepts)."""
    from deepprofile.concepts.links_mapper import concept_colours, saved_concept_masks

    masks = saved_concept_masks(run_dir)
    if not masks or any(len(m) != n_rows for m in masks.values()):
        return {}
    try:
        return {f"concept {k}": v for k, v in concept_colours(result, masks).items()}
    except DeepProfileError:  # the concept set belongs to another store: no concept colours
        return {}


def write_pages(run_dir: str | Path, *, layers: Sequence[str] | None = None,
                extra_colours: Any = None, thumbnails: bool = True) -> dict[str, str]:
    """Draw the pages of the graphs in ``results/mapper.json`` again (no recomputation),
    with the run's concept colours and, when given, ``extra_colours(result) -> {name:
    values per point}``; returns layer -> page path relative to the run folder."""
    from deepprofile.capture.store import ActivationStore
    from deepprofile.mapper.page import write_mapper_page
    from deepprofile.rundir import RunDir

    rd = RunDir(run_dir)
    saved = load_mapper_result(rd.path)
    dataset = indices = n_rows = None
    if rd.store_path.exists():
        store = ActivationStore.open(rd.store_path, verify=False)
        n_rows = store.n_samples
        if thumbnails:
            dataset, _ = _load_dataset(store)
            indices = store.indices if dataset is not None else None
    pages: dict[str, str] = {}
    for name in select_layers(list(saved.graphs), layers):
        result = saved.graphs[name]
        if not result.nodes:
            continue
        thumbs = {}
        if dataset is not None:
            try:
                thumbs = _thumbnails(result, dataset, indices)
            except Exception:  # optional: keep the page, lose the images
                thumbs = {}
        colours = _concept_colours(rd.path, result, n_rows)
        if extra_colours is not None:
            colours.update(extra_colours(result))
        rel = saved.pages.get(name) or f"{PAGES_DIR}/{page_name(name)}"
        write_mapper_page(result, rd.path / rel, thumbnails=thumbs, extra_colours=colours)
        pages[name] = rel
    return pages


def _existing(rd: Any, store_path: str) -> MapperResult | None:
    if not rd.has_result(RESULT_NAME):
        return None
    try:
        old = MapperResult.from_dict(rd.read_result(RESULT_NAME))
    except Exception:  # an unreadable or older file is replaced, not merged
        return None
    if old.provenance.get("store") != store_path:
        return None
    return old


def _graph_task(layer: str, store_path: str, params: dict[str, Any]) -> MapperGraphResult:
    """One layer's mapper graph from the store at ``store_path`` (a Dask task, or called in
    the command's process; one BLAS thread in both, see :mod:`deepprofile.blas`)."""
    from deepprofile.blas import one_blas_thread
    from deepprofile.capture.store import ActivationStore

    with one_blas_thread():
        return mapper_from_store(ActivationStore.open(store_path, verify=False), layer,
                                 **params)


def run_mapper(
    run_dir: str | Path,
    *,
    layers: Sequence[str] | None = None,
    dataset: Any = None,
    seed: int = 0,
    quiet: bool = False,
    lens: Any = "l2norm",
    intervals: int = 40,
    overlap: float = 0.3,
    eps: float | None = None,
    min_samples: int = 5,
    thumbnails: bool = True,
    merge: bool = True,
    scheduler: str | None = None,
) -> MapperResult:
    """Build mapper graphs for the stored layers, write their pages and results/mapper.json.

    ``dataset`` (indexable like the captured dataset) provides thumbnails; when
    ``None`` the store's dataset spec is loaded with
    ``deepprofile.data.dataset_from_spec`` if possible, otherwise pages have no
    images. With ``merge`` layers already in mapper.json from the same store are
    kept and the distance matrices cover all of them. ``quiet`` silences the progress
    bar and warnings; print :func:`summarize_mapper` for a summary. ``scheduler``
    (``local:N`` or ``tcp://HOST:PORT``) builds each layer's graph as a Dask task that
    reads the store itself; pages, merging and distances stay here.
    """
    from deepprofile.capture.store import ActivationStore
    from deepprofile.distributed import client_for
    from deepprofile.mapper.page import write_mapper_page
    from deepprofile.partial import LayerResults
    from deepprofile.progress import progress_bar
    from deepprofile.validate import check_options

    check_options("mapper", locals())
    rd, store_path = resolve_run_dir(run_dir)
    store = ActivationStore.open(store_path)
    chosen = select_layers(store.layers, layers)
    thumb_note = None
    indices = None
    if thumbnails and dataset is None:
        dataset, thumb_note = _load_dataset(store)
    if thumbnails and dataset is not None:
        try:
            indices = store.indices
        except Exception:
            indices = None
    params = {
        "lens": lens if isinstance(lens, str) else "custom",
        "intervals": intervals,
        "overlap": overlap,
        "eps": eps,
        "min_samples": min_samples,
        "seed": seed,
    }
    graph_params = dict(lens=lens, intervals=intervals, overlap=overlap, eps=eps,
                        min_samples=min_samples, seed=seed)
    pages: dict[str, str] = {}
    # each finished graph is kept in results/.partial/mapper until mapper.json is written,
    # so a killed run resumes (a custom lens cannot be identified: nothing kept then)
    saved = LayerResults.in_results(rd.results_dir if isinstance(lens, str) else None,
                                    RESULT_NAME)
    keys = [{"store": store.identity, "store_path": str(store.path), "params": graph_params}
            for _ in chosen]
    with client_for(scheduler) as client:
        built = saved.map("graphs", _graph_task, chosen, chosen, client,
                          str(store.path), graph_params, keys=keys,
                          decode=MapperGraphResult.from_dict, quiet=quiet)
    graphs: dict[str, MapperGraphResult] = dict(zip(chosen, built, strict=True))
    with progress_bar(quiet) as progress:
        task = progress.add_task("mapper pages", total=len(chosen))
        for name in chosen:
            progress.update(task, description=f"mapper page {name}")
            result = graphs[name]
            if result.nodes:
                thumbs = {}
                if thumbnails and dataset is not None:
                    try:
                        thumbs = _thumbnails(result, dataset, indices)
                    except Exception as exc:  # optional: keep the page, lose the images
                        thumb_note = f"thumbnails failed: {exc}"
                rel = f"{PAGES_DIR}/{page_name(name)}"
                write_mapper_page(result, rd.path / rel, thumbnails=thumbs,
                                  extra_colours=_concept_colours(rd.path, result,
                                                                 store.n_samples))
                pages[name] = rel
            elif not quiet:
                warnings.warn(
                    f"mapper graph of {name!r} has no nodes (eps too small?); no page written.",
                    stacklevel=2,
                )
            progress.advance(task)
    provenance = store_provenance(store)
    params["thumbnails"] = bool(thumbnails and dataset is not None)
    if thumb_note:
        params["thumbnails_note"] = thumb_note
    if merge:
        old = _existing(rd, provenance["store"])
        if old is not None:
            n = {g.n_points for g in graphs.values()}
            for name, g in old.graphs.items():
                if name not in graphs and (not n or g.n_points in n) and name in store.layers:
                    graphs[name] = g
                    if name in old.pages:
                        pages[name] = old.pages[name]
    order = [name for name in store.layers if name in graphs]
    graphs = {name: graphs[name] for name in order}
    # Graph distances need the same points: compare the largest group of layers with
    # equal point counts (a positions:k layer has N*k points and is left out otherwise).
    groups: dict[int, list[str]] = {}
    for name, g in graphs.items():
        groups.setdefault(g.n_points, []).append(name)
    comparable = max(groups.values(), key=len) if groups else []
    distances = {}
    if len(comparable) > 1:
        subset = {name: graphs[name] for name in comparable}
        distances = {m: mapper_distance_matrix(subset, m) for m in DISTANCE_METHODS}
    out = MapperResult(
        graphs=graphs, distances=distances, pages=pages, params=params, provenance=provenance
    )
    rd.write_result(RESULT_NAME, out)
    saved.finish(quiet)
    return out


def load_mapper_result(run_dir: str | Path) -> MapperResult:
    """Read RUN_DIR/results/mapper.json back as a :class:`MapperResult`."""
    from deepprofile.rundir import RunDir

    return MapperResult.from_dict(RunDir(run_dir).read_result(RESULT_NAME))


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else format(
        value, spec
    )


def summarize_mapper(result: MapperResult) -> str:
    """A plain-text table: per layer nodes, edges, components, loops, uncovered share,
    node-wise and class-wise purity; then the nearest layer pairs by graph distance."""
    header = (
        f"{'layer':<20} {'nodes':>5} {'edges':>5} {'comp':>4} {'loops':>5} {'no node':>7} "
        f"{'node pur.':>9} {'class pur.':>10}"
    )
    lines = ["Mapper graphs (lens {}, {} intervals, overlap {})".format(
        result.params.get("lens"), result.params.get("intervals"), result.params.get("overlap")
    ), header]
    for name, g in result.graphs.items():
        s = g.stats
        lines.append(
            f"{name[:20]:<20} {s.n_nodes:>5} {s.n_edges:>5} {s.n_components:>4} {s.n_loops:>5} "
            f"{100 * s.uncovered_fraction:>6.1f}% {_fmt(s.node_purity):>9} "
            f"{_fmt(s.class_purity_mean):>10}"
        )
    from deepprofile.mapper.page import cover_warning

    for name, g in result.graphs.items():
        warning = cover_warning(g)
        if warning:
            lines.append(f"Warning ({name}): {warning}")
    coot = result.distances.get("coot")
    if coot is not None and len(coot.layers) > 1:
        lines.append("Graph distance (hypergraph co-optimal transport, fixed point coupling):")
        for i, a in enumerate(coot.layers[:-1]):
            b = coot.layers[i + 1]
            lines.append(f"  {a} -> {b}: {coot.values[i, i + 1]:.3f}")
    if result.pages:
        lines.append("Pages: " + ", ".join(result.pages.values()))
    return "\n".join(lines)
