"""Concept sets: per-sample boolean concepts aligned with the rows of an activation store.

A concept is a yes/no property of an image ("red", "has the marker patch", "is an
animal"). :class:`ConceptSet` holds several of them as a boolean matrix whose columns are
the store's rows, with the provenance of each concept, so every later analysis (probes,
TCAV, the links to mapper/topology/spectra/attributions) reads one object. Sources:

- :func:`shapes_concepts`: the ground truth of the procedural ``shapes`` dataset
  (``shape:<name>``, ``colour:<name>``, ``texture:<name>``, ``size:small|large``, ``marker``);
- :func:`class_group_concept`: a group of classes (``animals=cat,dog``);
- :func:`array_concept`: any per-sample boolean array from Python;
- :func:`folder_concept`: a folder of positive images outside the store (TCAV style),
  kept beside the row concepts in ``ConceptSet.folders`` and captured when analysed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepprofile.errors import ConceptDataError, UnknownConceptError

CONCEPTS_DIR = "concepts"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class FolderConcept:
    """A concept given by a folder of positive images (negatives: a folder or the run's rows)."""

    name: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...] = ()  # empty: draw negatives from the run's own images

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "positives": list(self.positives),
                "negatives": list(self.negatives)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FolderConcept:
        return cls(str(d["name"]), tuple(d["positives"]), tuple(d.get("negatives", ())))


@dataclass(frozen=True, eq=False)
class ConceptSet:
    """Boolean concepts per store row: ``masks[i, j]`` is whether row ``j`` shows ``names[i]``.

    ``sources[name]`` records where each concept came from (``kind``: shapes, classes,
    array, folder, plus its parameters). Combine sets with :meth:`merge`.
    """

    names: tuple[str, ...]
    masks: np.ndarray
    sources: dict[str, dict]
    folders: tuple[FolderConcept, ...] = field(default=())

    def __post_init__(self) -> None:
        masks = np.asarray(self.masks, dtype=bool)
        if masks.ndim != 2 or masks.shape[0] != len(self.names):
            raise ConceptDataError(
                f"Concept masks must have shape (n_concepts={len(self.names)}, n_samples); got "
                f"{masks.shape}. Give one boolean row per concept name."
            )
        if len(set(self.names)) != len(self.names):
            raise ConceptDataError(f"Concept names must be unique; got {list(self.names)}.")
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "masks", masks)

    @property
    def n_samples(self) -> int:
        return int(self.masks.shape[1])

    @property
    def all_names(self) -> tuple[str, ...]:
        """Row concepts then folder concepts."""
        return self.names + tuple(f.name for f in self.folders)

    def mask(self, name: str) -> np.ndarray:
        """The boolean row of concept ``name``; an unknown name lists the close matches."""
        if name in self.names:
            return self.masks[self.names.index(name)]
        if name in {f.name for f in self.folders}:
            raise ConceptDataError(
                f"Concept {name!r} is a folder concept: its images are not rows of the store, so "
                "it has no row mask. Use ConceptSet.folder(name) for its images."
            )
        raise UnknownConceptError(unknown_concept_message(name, self.all_names))

    def folder(self, name: str) -> FolderConcept:
        for f in self.folders:
            if f.name == name:
                return f
        raise UnknownConceptError(unknown_concept_message(name, self.all_names))

    def select(self, names: Iterable[str]) -> ConceptSet:
        """The sub-set with only ``names`` (row or folder concepts)."""
        names = list(names)
        for name in names:
            if name not in self.all_names:
                raise UnknownConceptError(unknown_concept_message(name, self.all_names))
        rows = [n for n in names if n in self.names]
        return ConceptSet(
            tuple(rows), self.masks[[self.names.index(n) for n in rows]].reshape(
                len(rows), self.n_samples),
            {n: self.sources[n] for n in names},
            tuple(f for f in self.folders if f.name in names),
        )

    def merge(self, other: ConceptSet) -> ConceptSet:
        """Both sets' concepts (same rows); a name in both is an error."""
        if self.names and other.names and self.n_samples != other.n_samples:
            raise ConceptDataError(
                f"Cannot merge concept sets over {self.n_samples} and {other.n_samples} rows; "
                "build both from the same store."
            )
        clash = set(self.all_names) & set(other.all_names)
        if clash:
            raise ConceptDataError(f"Concept names {sorted(clash)} appear twice; rename one.")
        n = self.n_samples if self.names else other.n_samples
        masks = np.concatenate([self.masks.reshape(-1, n), other.masks.reshape(-1, n)], axis=0)
        return ConceptSet(self.names + other.names, masks, {**self.sources, **other.sources},
                          self.folders + other.folders)

    # -- persistence --------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "masks": [np.flatnonzero(row).tolist() for row in self.masks],  # positive rows
            "n_samples": self.n_samples,
            "sources": {k: dict(v) for k, v in self.sources.items()},
            "folders": [f.to_dict() for f in self.folders],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConceptSet:
        names = tuple(d["names"])
        masks = np.zeros((len(names), int(d["n_samples"])), dtype=bool)
        for i, rows in enumerate(d["masks"]):
            masks[i, np.asarray(rows, dtype=int)] = True
        return cls(names, masks, {k: dict(v) for k, v in d["sources"].items()},
                   tuple(FolderConcept.from_dict(f) for f in d.get("folders", ())))

    def save(self, run_dir: str | Path) -> Path:
        """Write ``RUN_DIR/concepts/concept_set.npz`` (masks) and ``concept_set.json``."""
        from deepprofile.results import write_json

        folder = Path(run_dir) / CONCEPTS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / "concept_set.npz", masks=self.masks)
        meta = self.to_dict()
        meta.pop("masks")
        return write_json(folder / "concept_set.json", meta)

    @classmethod
    def load(cls, run_dir: str | Path) -> ConceptSet:
        from deepprofile.errors import MissingFileError
        from deepprofile.results import read_json

        folder = Path(run_dir) / CONCEPTS_DIR
        if not (folder / "concept_set.npz").exists():
            raise MissingFileError(
                f"No concept set in {folder}. Run `deepprofile concepts {run_dir}` first."
            )
        meta = read_json(folder / "concept_set.json")
        with np.load(folder / "concept_set.npz") as npz:
            masks = npz["masks"]
        return cls(tuple(meta["names"]), masks, {k: dict(v) for k, v in meta["sources"].items()},
                   tuple(FolderConcept.from_dict(f) for f in meta.get("folders", ())))


def unknown_concept_message(name: str, known: Sequence[str]) -> str:
    from deepprofile.capture.selectors import close_matches

    hint = close_matches(name, list(known))
    return (f"Unknown concept {name!r}. "
            + (f"Did you mean: {', '.join(hint)}? " if hint else "")
            + f"Known concepts: {', '.join(known) or '(none)'}.")


def empty_set(n_samples: int) -> ConceptSet:
    return ConceptSet((), np.zeros((0, n_samples), dtype=bool), {})


# -- sources ------------------------------------------------------------------
def _shapes_params(store_or_indices: Any, params: Mapping[str, Any]) -> tuple[dict, np.ndarray]:
    """Shapes generator parameters and dataset indices, from a store or given explicitly."""
    if hasattr(store_or_indices, "metadata") and hasattr(store_or_indices, "indices"):
        spec = dict(store_or_indices.metadata.get("dataset") or {})
        if spec.get("name") != "shapes":
            raise ConceptDataError(
                f"The store at {store_or_indices.path} holds dataset {spec.get('name')!r}, not "
                "shapes; shapes ground-truth concepts need a run captured with --data shapes. "
                "Give --concept NAME=DIR or NAME=class,class instead."
            )
        spec.update(params)
        return spec, np.asarray(store_or_indices.indices, dtype=int)
    spec = {"seed": 0, "spurious_class": 0, "marker_rate": 0.9, "marker_base_rate": 0.05}
    spec.update(params)
    return spec, np.asarray(list(store_or_indices), dtype=int)


def shapes_table(store_or_indices: Any, **params: Any) -> dict[str, np.ndarray]:
    """Shapes ground truth per row: shape, colour, texture, size_bin, marker, cx, cy, radius."""
    from deepprofile.data.shapes import render_shape

    spec, indices = _shapes_params(store_or_indices, params)
    rows = [render_shape(int(spec["seed"]), int(i), int(spec["spurious_class"]),
                         float(spec["marker_rate"]), float(spec["marker_base_rate"]))[1]
            for i in indices]
    keys = ("shape", "colour", "texture", "size_bin", "marker", "cx", "cy", "radius", "label")
    return {k: np.array([getattr(r, k) for r in rows]) for k in keys}


def shapes_concepts(store_or_indices: Any, *, include: Iterable[str] | None = None,
                    **params: Any) -> ConceptSet:
    """Ground-truth concepts of the ``shapes`` dataset for a store's rows (or dataset indices).

    ``params`` (``seed``, ``spurious_class``, ``marker_rate``, ``marker_base_rate``) default to
    the store's recorded dataset spec. ``include`` keeps only some families
    (``shape``, ``colour``, ``texture``, ``size``, ``marker``).
    """
    from deepprofile.data.shapes import COLOURS, SHAPES, TEXTURES

    spec, indices = _shapes_params(store_or_indices, params)
    table = shapes_table(indices, **{k: spec[k] for k in (
        "seed", "spurious_class", "marker_rate", "marker_base_rate")})
    families = {
        "shape": ("shape", SHAPES), "colour": ("colour", tuple(COLOURS)),
        "texture": ("texture", TEXTURES), "size": ("size_bin", ("small", "large")),
    }
    keep = set(include) if include is not None else {*families, "marker"}
    unknown = keep - {*families, "marker"}
    if unknown:
        raise UnknownConceptError(
            f"Unknown shapes concept family {sorted(unknown)}; choose from shape, colour, "
            "texture, size, marker.")
    names, rows, sources = [], [], {}
    base = {"kind": "shapes", **{k: spec[k] for k in (
        "seed", "spurious_class", "marker_rate", "marker_base_rate")}}
    for family, (column, values) in families.items():
        if family not in keep:
            continue
        for value in values:
            name = f"{family}:{value}"
            names.append(name)
            rows.append(table[column] == value)
            sources[name] = {**base, "family": family, "value": value}
    if "marker" in keep:
        names.append("marker")
        rows.append(table["marker"].astype(bool))
        sources["marker"] = {**base, "family": "marker", "value": True}
    return ConceptSet(tuple(names), np.array(rows, dtype=bool).reshape(len(names), len(indices)),
                      sources)


def shapes_regions(store_or_indices: Any, name: str, **params: Any) -> np.ndarray:
    """Ground-truth pixel region of concept ``name`` per row: bool ``(n, 32, 32)``.

    ``marker``: the planted 3x3 patch (also where absent, as the region it would occupy);
    every other shapes concept: the shape's own pixels.
    """
    from deepprofile.data.shapes import SIZE, _mask

    spec, indices = _shapes_params(store_or_indices, params)
    out = np.zeros((len(indices), SIZE, SIZE), dtype=bool)
    if name == "marker":
        out[:, 1:4, 1:4] = True
        return out
    table = shapes_table(indices, **{k: spec[k] for k in (
        "seed", "spurious_class", "marker_rate", "marker_base_rate")})
    for i in range(len(indices)):
        out[i] = _mask(str(table["shape"][i]), int(table["cx"][i]), int(table["cy"][i]),
                       int(table["radius"][i]))
    return out


def array_concept(name: str, mask: Sequence[bool] | np.ndarray, *,
                  n_samples: int | None = None, note: str = "") -> ConceptSet:
    """One concept from any per-sample boolean array (rows in store order)."""
    arr = np.asarray(mask)
    if arr.ndim != 1:
        raise ConceptDataError(
            f"Concept {name!r}: expected a 1-D boolean array (one value per store row), got "
            f"shape {arr.shape}.")
    if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
        raise ConceptDataError(
            f"Concept {name!r}: values must be boolean (or 0/1); pass mask == value.")
    if n_samples is not None and len(arr) != n_samples:
        raise ConceptDataError(
            f"Concept {name!r} has {len(arr)} values but the store has {n_samples} rows; give "
            "one value per store row (a concept cannot be larger than the dataset).")
    return ConceptSet((name,), arr.astype(bool)[None, :],
                      {name: {"kind": "array", "note": note, "n_positive": int(arr.sum())}})


def class_group_concept(name: str, classes: Iterable[str | int], labels: np.ndarray,
                        class_names: Sequence[str] | None = None) -> ConceptSet:
    """A concept that holds for the rows whose label is one of ``classes`` (names or ids)."""
    labels = np.asarray(labels)
    class_names = list(class_names) if class_names else [str(i) for i in range(
        int(labels.max()) + 1 if len(labels) else 0)]
    ids = []
    for cls in classes:
        key = str(cls).strip()
        if key in class_names:
            ids.append(class_names.index(key))
        elif key.isdigit() and int(key) < len(class_names):
            ids.append(int(key))
        else:
            from deepprofile.capture.selectors import close_matches

            hint = close_matches(key, class_names)
            raise UnknownConceptError(
                f"Concept {name!r}: class {key!r} is not a class of the run. "
                + (f"Did you mean: {', '.join(hint)}? " if hint else "")
                + f"Classes: {', '.join(class_names)}.")
    mask = np.isin(labels, ids)
    return ConceptSet((name,), mask[None, :], {name: {
        "kind": "classes", "classes": [class_names[i] for i in ids], "class_ids": ids}})


def list_images(directory: str | Path) -> list[Path]:
    """Image files directly or recursively inside ``directory``, sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConceptDataError(
            f"Concept folder {directory} does not exist or is not a folder; give an existing "
            "folder of images (--concept NAME=DIR).")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConceptDataError(
            f"Concept folder {directory} holds no images ({', '.join(IMAGE_SUFFIXES)}); put "
            "positive example images in it.")
    return files


def folder_concept(name: str, directory: str | Path,
                   negatives: str | Path | None = None) -> ConceptSet:
    """A folder concept: positive images from ``directory``; negatives from the folder
    ``negatives`` or, when None, drawn from the run's own images at analysis time."""
    pos = tuple(str(p) for p in list_images(directory))
    neg = tuple(str(p) for p in list_images(negatives)) if negatives is not None else ()
    if len(pos) < 2:
        raise ConceptDataError(
            f"Concept folder {directory} holds only {len(pos)} image; a probe needs at least 2 "
            "positives (TCAV users typically give 20 or more).")
    return ConceptSet((), np.zeros((0, 0), dtype=bool), {name: {
        "kind": "folder", "root": str(directory), "n_positive": len(pos),
        "negatives": str(negatives) if negatives is not None else "run images"}},
        (FolderConcept(name, pos, neg),))


def parse_concept_spec(spec: str, *, labels: np.ndarray, class_names: Sequence[str] | None,
                       negatives: str | Path | None = None) -> ConceptSet:
    """A CLI ``--concept`` value: ``NAME=DIR`` (folder) or ``NAME=class,class`` (class group)."""
    if "=" not in spec:
        raise ConceptDataError(
            f"--concept {spec!r} must be NAME=DIR (a folder of images) or NAME=cls1,cls2 "
            "(a group of classes).")
    name, value = (s.strip() for s in spec.split("=", 1))
    if not name or not value:
        raise ConceptDataError(f"--concept {spec!r} needs both a NAME and a value (NAME=...).")
    if Path(value).exists() or "/" in value or "\\" in value:
        return folder_concept(name, value, negatives)
    return class_group_concept(name, [v for v in value.split(",") if v.strip()], labels,
                               class_names)
