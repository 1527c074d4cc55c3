"""What the explorer shows, read from a run folder: clouds, mapper graphs, colours, details.

:class:`RunData` opens a run's activation store once and answers the app's questions:
the mapper graph of a layer for a parameter set (built by the package's
:class:`~deepprofile.mapper.MapperGraph` on the stored activations and kept in a small
LRU cache per ``(layer, parameters)``), per-sample columns to colour nodes by (label,
prediction, correctness, confidence, entropy, margin, concepts, attribution statistics,
the dataset's own columns), member thumbnails regenerated from the run's dataset as the
report does, the mean attribution map and the concept composition of a selection.
Nothing here renders HTML or knows about Dash.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepprofile.errors import DeepProfileError, UnknownLayerError
from deepprofile.mapper import (
    LENSES,
    MapperGraph,
    MapperGraphResult,
    cloud_from_store,
    entropy_from_logits,
    store_provenance,
)
from deepprofile.mapper.pipeline import page_name, resolve_run_dir


class ExploreInputError(DeepProfileError, ValueError):
    """A parameter typed in the explorer is missing or out of range."""


# Ranges accepted from the UI: wide enough for real use, narrow enough that one click
# cannot ask for a graph that takes minutes.
LIMITS = {
    "intervals": (1, 200),
    "overlap": (0.0, 0.95),
    "min_samples": (1, 200),
    "subsample": (10, 10_000_000),
}


@dataclass(frozen=True)
class MapperParams:
    """One parameter set of the explorer's mapper graph (hashable: the cache key)."""

    lens: str = "l2norm"
    intervals: int = 20
    overlap: float = 0.3
    eps: float | None = None
    min_samples: int = 5
    subsample: int | None = None
    seed: int = 0

    def builder_kwargs(self) -> dict[str, Any]:
        return {"lens": self.lens, "intervals": self.intervals, "overlap": self.overlap,
                "eps": self.eps, "min_samples": self.min_samples, "seed": self.seed}

    def describe(self) -> str:
        eps = "auto" if self.eps is None else f"{self.eps:g}"
        sub = "all points" if self.subsample is None else f"{self.subsample} points"
        return (f"lens {self.lens}, {self.intervals} intervals, overlap {self.overlap:g}, "
                f"eps {eps}, min_samples {self.min_samples}, {sub}")

    @classmethod
    def from_ui(cls, lens: Any, intervals: Any, overlap: Any, eps: Any, min_samples: Any,
                subsample: Any, seed: int = 0) -> MapperParams:
        """Validate the raw values of the UI controls; raise :class:`ExploreInputError`."""
        lens = str(lens or "").strip().lower()
        if lens not in LENSES:
            raise ExploreInputError(f"Unknown lens {lens!r}; choose one of {', '.join(LENSES)}.")
        return cls(
            lens=lens,
            intervals=_int("intervals", intervals),
            overlap=_float("overlap", overlap),
            eps=None if _blank(eps) else _positive("eps", eps),
            min_samples=_int("min_samples", min_samples),
            subsample=None if _blank(subsample) else _int("subsample", subsample),
            seed=int(seed),
        )


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _number(name: str, value: Any) -> float:
    if _blank(value):
        raise ExploreInputError(f"{name} is empty; type a number.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ExploreInputError(f"{name} must be a number; got {value!r}.") from None
    if not np.isfinite(number):
        raise ExploreInputError(f"{name} must be finite; got {value!r}.")
    return number


def _int(name: str, value: Any) -> int:
    number = _number(name, value)
    lo, hi = LIMITS[name]
    if number != int(number) or not lo <= number <= hi:
        raise ExploreInputError(f"{name} must be a whole number in [{lo}, {hi}]; got {value!r}.")
    return int(number)


def _float(name: str, value: Any) -> float:
    number = _number(name, value)
    lo, hi = LIMITS[name]
    if not lo <= number <= hi:
        raise ExploreInputError(f"{name} must be in [{lo:g}, {hi:g}]; got {value!r}.")
    return number


def _positive(name: str, value: Any) -> float:
    number = _number(name, value)
    if number <= 0:
        raise ExploreInputError(f"{name} must be > 0 (or empty for automatic); got {value!r}.")
    return number


@dataclass(frozen=True, eq=False)
class GraphView:
    """A mapper graph with the store row of each of its points (``rows[point]``)."""

    layer: str
    params: MapperParams
    result: MapperGraphResult
    rows: np.ndarray
    seconds: float

    @property
    def tag(self) -> str:
        """A short name of this graph (layer and parameters), prefixed to element ids so a
        redrawn graph never reuses the ids (and the selection) of the previous one."""
        import hashlib

        text = repr((self.layer, self.params)).encode()
        return "g" + hashlib.blake2b(text, digest_size=4).hexdigest()

    def element_id(self, node_id: str) -> str:
        return f"{self.tag}-{node_id}"

    def node_id(self, element_id: str) -> str | None:
        """The mapper node of an element id of this graph (None for another graph's)."""
        prefix = self.tag + "-"
        return element_id[len(prefix):] if element_id.startswith(prefix) else None

    @property
    def node_ids(self) -> list[str]:
        return [node.id for node in self.result.nodes]

    def node_rows(self, node_id: str) -> np.ndarray:
        return np.unique(self.rows[list(self.result.node(node_id).members)])

    def rows_of(self, node_ids: Sequence[str]) -> np.ndarray:
        """Store rows of the union of ``node_ids`` (unknown ids are ignored)."""
        by_id = {node.id: node for node in self.result.nodes}
        members = [m for i in node_ids if i in by_id for m in by_id[i].members]
        return np.unique(self.rows[np.asarray(members, dtype=np.int64)])


@dataclass(frozen=True)
class Column:
    """A per-sample column to colour nodes by: one value per store row (NaN: unknown)."""

    key: str
    label: str
    values: np.ndarray
    categorical: bool = False
    categories: tuple[str, ...] = ()


@dataclass
class _Attribution:
    method: str
    maps: np.ndarray  # (n, H, W) saliency: |attribution| summed over channels
    rows: np.ndarray  # store row of each map


@dataclass
class RunData:
    """A run folder opened for exploring (see the module docstring)."""

    path: Path
    name: str
    cache_size: int = 32
    _store: Any = field(default=None, repr=False)
    _graphs: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _memo: dict = field(default_factory=dict, repr=False)  # clouds, provenance, names
    _lock: Any = field(default_factory=threading.RLock, repr=False)
    _dataset: Any = field(default=None, repr=False)
    _dataset_note: str | None = field(default=None, repr=False)
    _columns: dict | None = field(default=None, repr=False)
    _thumbs: dict = field(default_factory=dict, repr=False)
    _attr: Any = field(default=False, repr=False)

    @classmethod
    def open(cls, path: str | Path, name: str | None = None, cache_size: int = 32) -> RunData:
        """Open ``path`` (a run folder or its store); raises a DeepProfileError when it
        holds no readable activation store."""
        from deepprofile.capture.store import ActivationStore

        rd, store_path = resolve_run_dir(path)
        store = ActivationStore.open(store_path)
        if not store.layers:
            raise DeepProfileError(f"The store at {store_path} holds no layers; capture some.")
        store.labels  # noqa: B018  (reads and verifies: a damaged store fails here, clearly)
        return cls(path=rd.path, name=name or rd.path.name, cache_size=cache_size, _store=store)

    # -- basic facts --------------------------------------------------------------------
    @property
    def store(self) -> Any:
        return self._store

    @property
    def layers(self) -> list[str]:
        return list(self._store.layers)

    @property
    def n_rows(self) -> int:
        return int(self._store.n_samples)

    @property
    def class_names(self) -> list[str] | None:
        with self._lock:  # store metadata is read from disk: once
            if ("class_names",) not in self._memo:
                names = (self._store.metadata or {}).get("class_names")
                self._memo[("class_names",)] = (None if names is None else
                                                  [str(c) for c in names])
            return self._memo[("class_names",)]

    def class_name(self, label: int) -> str:
        names = self.class_names
        return names[label] if names is not None and 0 <= label < len(names) else str(label)

    @property
    def dataset_indices(self) -> np.ndarray:
        return np.asarray(self._store.indices, dtype=np.int64)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self._store.labels, dtype=np.int64)

    @property
    def predictions(self) -> np.ndarray:
        return np.asarray(self._store.predictions, dtype=np.int64)

    def check_layer(self, layer: Any) -> str:
        """``layer`` when stored, else an UnknownLayerError listing close matches."""
        from deepprofile.capture.selectors import close_matches

        layer = "" if layer is None else str(layer)
        if layer in self.layers:
            return layer
        hint = close_matches(layer, self.layers)
        raise UnknownLayerError(
            f"Layer {layer!r} is not stored in {self.name}. "
            + (f"Did you mean: {', '.join(hint)}? " if hint else "")
            + f"Stored layers: {', '.join(self.layers)}."
        )

    # -- mapper graphs ------------------------------------------------------------------
    def _cloud(self, layer: str) -> Any:
        with self._lock:
            if layer not in self._memo:
                self._memo[layer] = cloud_from_store(self._store, layer)
            return self._memo[layer]

    def _provenance(self, layer: str) -> dict[str, Any]:
        with self._lock:
            key = ("provenance", layer)
            if key not in self._memo:  # store metadata is read from disk: once per layer
                self._memo[key] = store_provenance(self._store, layer)
            return dict(self._memo[key])

    def graph(self, layer: str, params: MapperParams) -> GraphView:
        """The mapper graph of ``layer`` for ``params`` (cached per parameter set)."""
        layer = self.check_layer(layer)
        key = (layer, params)
        with self._lock:
            if key in self._graphs:
                self._graphs.move_to_end(key)
                return self._graphs[key]
        t0 = time.perf_counter()
        cloud = self._cloud(layer)
        n = cloud.points.shape[0]
        if params.subsample is not None and params.subsample < n:
            rng = np.random.default_rng(params.seed)
            pick: np.ndarray | None = np.sort(rng.choice(n, size=params.subsample,
                                                         replace=False))
        else:
            pick = None  # every point: no copies

        def take(values: np.ndarray | None) -> np.ndarray | None:
            return values if values is None or pick is None else values[pick]

        rows = cloud.point_sample if pick is None else cloud.point_sample[pick]
        identity = len(rows) == self.n_rows and np.array_equal(rows, np.arange(self.n_rows))
        try:
            builder = MapperGraph(**params.builder_kwargs()).fit(
                cloud.points if pick is None else cloud.points[pick],
                labels=take(cloud.labels), logits=take(cloud.logits),
                predictions=take(cloud.predictions), point_sample=None if identity else rows,
                layer=layer, class_names=self.class_names,
                provenance=self._provenance(layer),
                sample_ids=take(getattr(cloud, "sample_ids", None)),
            )
        except DeepProfileError:
            raise
        except ValueError as exc:  # scikit-learn's own checks (e.g. too few points for PCA)
            raise ExploreInputError(f"Cannot build the graph of {layer}: {exc}") from exc
        view = GraphView(layer=layer, params=params, result=builder.result_, rows=rows,
                         seconds=time.perf_counter() - t0)
        with self._lock:
            self._graphs[key] = view
            while len(self._graphs) > self.cache_size:
                self._graphs.popitem(last=False)
        return view

    def cached(self, layer: str, params: MapperParams) -> bool:
        return (layer, params) in self._graphs

    # -- per-sample columns ---------------------------------------------------------------
    def columns(self) -> dict[str, Column]:
        """Every per-sample column the run offers, by key (computed once)."""
        with self._lock:
            if self._columns is None:
                self._columns = self._make_columns()
            return self._columns

    def _make_columns(self) -> dict[str, Column]:
        labels, preds = self.labels, self.predictions
        classes = tuple(self.class_name(c) for c in range(max(
            int(self._store.num_classes), int(labels.max()) + 1, int(preds.max()) + 1)))
        cols = [
            Column("label", "label", labels.astype(float), True, classes),
            Column("prediction", "prediction", preds.astype(float), True, classes),
            Column("correct", "correctness (share correct)", (preds == labels).astype(float)),
        ]
        try:
            logits = np.asarray(self._store.logits, dtype=np.float64)
        except DeepProfileError:
            logits = None
        if logits is not None and np.isfinite(logits).all():
            from scipy.special import softmax

            p = np.sort(softmax(logits, axis=1), axis=1)
            cols += [
                Column("confidence", "confidence (top softmax)", p[:, -1]),
                Column("entropy", "predictive entropy (nats)", entropy_from_logits(logits)),
            ]
            if p.shape[1] > 1:
                cols.append(Column("margin", "margin (top1 - top2 prob.)", p[:, -1] - p[:, -2]))
        cols.append(Column("dataset_index", "dataset index", self.dataset_indices.astype(float)))
        cols += self._concept_columns()
        cols += self._attribution_columns()
        cols += self._dataset_columns({c.key for c in cols})
        return {c.key: c for c in cols}

    def concepts(self) -> tuple[list[str], np.ndarray] | None:
        """``(names, masks)`` from RUN/concepts/concept_set.npz (bool, concepts x rows), or
        None. Uses deepprofile.concepts.sets.ConceptSet when installed, else the npz."""
        path = self.path / "concepts" / "concept_set.npz"
        if not path.exists():
            return None
        try:
            try:
                from deepprofile.concepts.sets import ConceptSet
            except ImportError:  # the same files ConceptSet.save writes
                from deepprofile.results import read_json

                with np.load(path, allow_pickle=False) as z:
                    masks = np.asarray(z["masks"], dtype=bool)
                    names = (list(z["names"]) if "names" in z.files else
                             read_json(path.with_suffix(".json"))["names"])
                names = [str(n) for n in names]
            else:
                cs = ConceptSet.load(self.path)
                names, masks = [str(n) for n in cs.names], np.asarray(cs.masks, dtype=bool)
        except Exception:  # optional input: an unreadable file only hides the concepts
            return None
        if masks.ndim != 2 or masks.shape != (len(names), self.n_rows):
            return None
        return names, masks

    def _concept_columns(self) -> list[Column]:
        found = self.concepts()
        if found is None:
            return []
        names, masks = found
        return [Column(f"concept:{n}", f"concept {n} (share)", m.astype(float))
                for n, m in zip(names, masks, strict=True)]

    def attribution(self) -> _Attribution | None:
        """Saliency maps of the plain attribution method of results/attribution.json."""
        with self._lock:
            if self._attr is False:
                self._attr = self._load_attribution()
            return self._attr

    def _load_attribution(self) -> _Attribution | None:
        from deepprofile.attribution.store import read_map
        from deepprofile.rundir import RunDir

        rd = RunDir(self.path)
        if not rd.has_result("attribution"):
            return None
        try:
            res = rd.read_result("attribution")
            rows = (res.get("images") or {}).get("store_rows")
            methods = res.get("methods") or {}
            if rows is None or not methods:
                return None
            key = next(iter(methods))  # the plain method comes first
            maps = read_map(self.path, res, key)
            maps = np.abs(maps).sum(axis=1) if maps.ndim == 4 else np.abs(maps)
            rows = np.asarray(rows, dtype=np.int64)
            if maps.ndim != 3 or len(maps) != len(rows) or rows.max() >= self.n_rows:
                return None
            label = methods[key].get("label") or key
            return _Attribution(method=str(label), maps=maps.astype(np.float64), rows=rows)
        except Exception:  # optional input: a broken file only hides the maps
            return None

    def _attribution_columns(self) -> list[Column]:
        attr = self.attribution()
        if attr is None:
            return []
        flat = attr.maps.reshape(len(attr.maps), -1)
        total = flat.sum(axis=1)
        l1 = np.full(self.n_rows, np.nan)
        peak = np.full(self.n_rows, np.nan)
        l1[attr.rows] = total
        peak[attr.rows] = flat.max(axis=1) / np.where(total > 0, total, 1.0)
        return [Column("attribution:l1", f"attribution {attr.method}: total |a|", l1),
                Column("attribution:peak", f"attribution {attr.method}: peak share", peak)]

    def dataset(self) -> Any:
        """The run's dataset rebuilt from the store's spec (for thumbnails), or None."""
        with self._lock:
            if self._dataset is None and self._dataset_note is None:
                from deepprofile.mapper.pipeline import _load_dataset

                self._dataset, self._dataset_note = _load_dataset(self._store)
            return self._dataset

    def _dataset_columns(self, taken: set[str]) -> list[Column]:
        ds = self.dataset()
        table = getattr(ds, "concept_table", None)
        if table is None:
            return []
        try:
            data = table()
        except Exception:
            return []
        idx = self.dataset_indices
        out = []
        for name, values in data.items():
            key = f"column:{name}"
            values = np.asarray(values)
            if key in taken or len(values) <= idx.max() or name == "label":
                continue
            values = values[idx]
            if values.dtype.kind in "biuf":
                out.append(Column(key, f"dataset {name}", values.astype(float)))
            else:
                cats, codes = np.unique(values.astype(str), return_inverse=True)
                out.append(Column(key, f"dataset {name}", codes.astype(float), True,
                                  tuple(str(c) for c in cats)))
        return out

    # -- a selection ----------------------------------------------------------------------
    def thumbnails(self, rows: Sequence[int]) -> dict[int, str]:
        """Data URIs of the images of store ``rows`` (empty when the dataset is unknown)."""
        from deepprofile.mapper.page import thumbnails_from_dataset

        ds = self.dataset()
        if ds is None:
            return {}
        missing = [int(r) for r in rows if int(r) not in self._thumbs]
        if missing:
            made = thumbnails_from_dataset(ds, missing, self.dataset_indices)
            with self._lock:
                self._thumbs.update(made)
        return {int(r): self._thumbs[int(r)] for r in rows if int(r) in self._thumbs}

    @property
    def dataset_note(self) -> str | None:
        self.dataset()
        return self._dataset_note

    def mean_attribution(self, rows: Sequence[int]) -> tuple[np.ndarray, int, str] | None:
        """``(mean saliency map, maps averaged, method)`` over the rows that have maps."""
        attr = self.attribution()
        if attr is None:
            return None
        hit = np.isin(attr.rows, np.asarray(rows, dtype=np.int64))
        if not hit.any():
            return None
        return attr.maps[hit].mean(axis=0), int(hit.sum()), attr.method

    def concept_composition(self, rows: Sequence[int]) -> list[tuple[str, float, float]]:
        """``(concept, share in the selection, share in the run)`` per concept."""
        found = self.concepts()
        rows = np.asarray(rows, dtype=np.int64)
        if found is None or not len(rows):
            return []
        names, masks = found
        return [(n, float(m[rows].mean()), float(m.mean()))
                for n, m in zip(names, masks, strict=True)]

    def rows_for_dataset_indices(self, indices: Sequence[int]) -> np.ndarray:
        """Store rows of this run holding the given dataset indices (shared images)."""
        mine = self.dataset_indices
        return np.flatnonzero(np.isin(mine, np.asarray(indices, dtype=np.int64)))

    # -- export --------------------------------------------------------------------------
    def export(self, view: GraphView, out_dir: str | Path | None = None) -> Path:
        """Write ``view`` as the package's static offline mapper page; returns its path."""
        from deepprofile.mapper import write_mapper_page

        if not view.result.nodes:
            raise ExploreInputError("This graph has no nodes: nothing to export.")
        reps = {int(view.rows[p]) for node in view.result.nodes for p in node.representatives}
        thumbs = self.thumbnails(sorted(reps))
        stem = page_name(view.layer)[: -len(".html")]
        p = view.params
        eps = "auto" if p.eps is None else f"{p.eps:g}"
        tag = (f"{p.lens}-i{p.intervals}-o{p.overlap:g}-e{eps}-m{p.min_samples}"
               f"-s{p.subsample or 'all'}")
        out = Path(out_dir) if out_dir is not None else self.path / "mapper" / "explore"
        return write_mapper_page(view.result, out / f"{stem}.{tag}.html", thumbnails=thumbs)


def node_values(view: GraphView, column: Column) -> list[float | None]:
    """Per node: the majority category (categorical) or the mean over the node's members
    with a known value (NaN ignored); None when no member has one."""
    out: list[float | None] = []
    for node in view.result.nodes:
        vals = column.values[view.rows[list(node.members)]]
        vals = vals[np.isfinite(vals)]
        if not len(vals):
            out.append(None)
        elif column.categorical:
            codes, counts = np.unique(vals, return_counts=True)
            out.append(float(codes[np.argmax(counts)]))
        else:
            out.append(float(vals.mean()))
    return out


def linked_nodes(view: GraphView, rows: Sequence[int]) -> dict[str, float]:
    """Nodes of ``view`` holding any of store ``rows``: node id -> share of its members
    that are among them."""
    chosen = np.zeros(int(view.rows.max()) + 1 if len(view.rows) else 0, dtype=bool)
    rows = np.asarray(rows, dtype=np.int64)
    rows = rows[rows < len(chosen)]
    chosen[rows] = True
    out = {}
    for node in view.result.nodes:
        hit = chosen[view.rows[list(node.members)]]
        if hit.any():
            out[node.id] = float(hit.mean())
    return out
