"""Datasets: bundled digits, procedural shapes with concepts, ImageFolder, tensors.

``load_dataset("digits")``, ``load_dataset("shapes", n=2000, seed=1)``,
``load_dataset("folder", root="path/to/images")``; :func:`dataset_from_spec` rebuilds
a dataset from the spec recorded in an activation store, so analyses can find the
images behind stored activations.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from deepprofile.data.adapters import (
    ArrayDataset,
    class_names,
    dataset_spec,
    image_folder,
)
from deepprofile.data.digits import DigitsDataset
from deepprofile.data.folder import FolderDataset, align_classes, folder_dataset
from deepprofile.data.shapes import ShapeConcepts, ShapesDataset, render_shape
from deepprofile.errors import DeepProfileError

DATASETS = ("digits", "shapes", "folder")


def load_dataset(name: str, split: str | None = None, **params: Any) -> Dataset:
    """Build a named dataset: ``split`` is train or test (None: test for digits and shapes,
    the whole folder for an image folder; see :mod:`deepprofile.data.folder` for its splits).

    For ``shapes`` the train and test splits use different generator seeds
    (``seed`` and ``seed + 1000``), so they never share images.
    """
    if name in ("digits", "shapes"):
        split = split or "test"
    if name in ("digits", "shapes") and split not in ("train", "test"):
        raise DeepProfileError(f"Unknown split {split!r} for {name}; use train or test.")
    if name == "digits":
        return DigitsDataset(split=split, size=int(params.get("size", 32)))
    if name == "shapes":
        seed = int(params.pop("seed", 0))
        n = int(params.pop("n", 2000 if split == "train" else 500))
        params.pop("split", None)
        return ShapesDataset(n=n, seed=seed if split == "train" else seed + 1000, **params)
    if name == "folder":
        if params.get("root") is None:
            raise DeepProfileError("The folder dataset needs root=PATH (a class-per-folder tree).")
        return folder_dataset(split=split, **params)
    raise DeepProfileError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")


def dataset_from_spec(spec: dict[str, Any]) -> Dataset:
    """Rebuild the dataset described by ``spec`` (as stored by :func:`dataset_spec`)."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if name == "digits":
        return DigitsDataset(split=spec.get("split", "test"), size=int(spec.get("size", 32)))
    if name == "shapes":
        spec.pop("n_", None)
        return ShapesDataset(
            n=int(spec["n"]), seed=int(spec["seed"]), spurious_class=int(spec["spurious_class"]),
            marker_rate=float(spec["marker_rate"]),
            marker_base_rate=float(spec["marker_base_rate"]),
        )
    if name == "folder":
        return folder_dataset(
            spec["root"], split=spec.get("split"), image_size=int(spec["image_size"]),
            normalize=(tuple(spec["mean"]), tuple(spec["std"])), classes=spec.get("classes"),
            seed=int(spec.get("split_seed") or 0),
        )
    raise DeepProfileError(
        f"Cannot rebuild dataset {name!r} from its spec; pass the dataset explicitly."
    )


__all__ = [
    "ArrayDataset", "DigitsDataset", "FolderDataset", "ShapeConcepts", "ShapesDataset",
    "align_classes", "class_names", "dataset_from_spec", "dataset_spec", "folder_dataset",
    "image_folder", "load_dataset", "render_shape",
]
