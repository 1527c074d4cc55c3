"""Image folders (torchvision ``ImageFolder`` trees): splits, normalisation, class order.

- **Splits**: a root holding ``train/`` and ``test/`` (or ``val/``) sub-folders uses them;
  otherwise ``split="train"``/``"test"`` is a seeded, stratified hold-out of a fifth of
  each class, and ``split=None`` is the whole folder.
- **Normalisation**: ``imagenet`` (what torchvision-trained weights expect), ``dataset``
  (per-channel mean and standard deviation of the training images), ``none``, or explicit
  ``MEAN,STD``; the numbers used are recorded in the spec.
- **Class order**: ``classes`` fixes the index of each class name (a checkpoint's order);
  by default the sub-folders in alphabetical order, as torchvision does.
- **Unreadable images** (truncated, corrupt, not an image) raise one line naming the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from deepprofile.errors import DeepProfileError, EmptyDatasetError, MissingFileError

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HOLDOUT = 0.2


class UnreadableImageError(DeepProfileError, OSError):
    """An image file of a folder dataset cannot be decoded."""


def load_image(path: str) -> Any:
    """Open ``path`` as an RGB PIL image, or raise :class:`UnreadableImageError`."""
    from PIL import Image

    try:
        with open(path, "rb") as fh:
            img = Image.open(fh)
            return img.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for damaged files
        raise UnreadableImageError(
            f"Cannot read image {path} ({type(exc).__name__}: {exc}); the file is damaged or "
            "not an image. Remove or replace it.") from None


def parse_normalization(spec: str | Sequence[Any]) -> Any:
    """``"imagenet"``, ``"dataset"``, ``"none"``, or ``(mean, std)`` tuples of 1 or 3 floats.

    Text ``MEAN,STD`` takes one value each (``0.5,0.25``) or three separated by ``:``
    (``0.485:0.456:0.406,0.229:0.224:0.225``).
    """
    if not isinstance(spec, str):
        mean, std = spec
        return _checked(tuple(float(v) for v in mean), tuple(float(v) for v in std), spec)
    text = spec.strip()
    if text in ("imagenet", "dataset", "none"):
        return text
    parts = text.split(",")
    if len(parts) != 2:
        raise DeepProfileError(
            f"Normalisation {spec!r} is not imagenet, dataset, none or MEAN,STD "
            "(e.g. 0.5,0.25 or 0.485:0.456:0.406,0.229:0.224:0.225).")
    try:
        mean, std = (tuple(float(v) for v in p.split(":")) for p in parts)
    except ValueError:
        raise DeepProfileError(f"Normalisation {spec!r}: MEAN and STD must be numbers.") from None
    return _checked(mean, std, spec)


def _checked(mean: tuple[float, ...], std: tuple[float, ...], spec: Any) -> Any:
    if len(mean) not in (1, 3) or len(std) not in (1, 3):
        raise DeepProfileError(f"Normalisation {spec!r}: give 1 or 3 values for MEAN and STD.")
    if not all(np.isfinite(mean)) or not all(np.isfinite(std)) or min(std) <= 0:
        raise DeepProfileError(f"Normalisation {spec!r}: values must be finite and STD > 0.")
    return (mean * (3 // len(mean)), std * (3 // len(std)))


def _tree(root: Path, split: str | None) -> tuple[Path, bool]:
    """The class tree to read and whether a hold-out split is still to be made."""
    if (root / "train").is_dir() and ((root / "test").is_dir() or (root / "val").is_dir()):
        if split == "train":
            return root / "train", False
        return (root / "test" if (root / "test").is_dir() else root / "val"), False
    return root, split is not None


def _folder_class() -> type:
    """torchvision's ImageFolder with a fixed class order (a module-level, picklable class)."""
    global _FOLDER
    if _FOLDER is None:
        from torchvision import datasets

        class OrderedImageFolder(datasets.ImageFolder):
            order: list[str] | None = None

            def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
                found, mapping = super().find_classes(directory)
                if self.order is None:
                    return found, mapping
                extra = [c for c in found if c not in self.order]
                if extra:
                    raise DeepProfileError(
                        f"Folder classes {extra[:5]} of {directory} are not among the given "
                        f"class names {self.order[:10]}.")
                return list(self.order), {c: self.order.index(c) for c in found}

        OrderedImageFolder.__module__ = __name__
        OrderedImageFolder.__qualname__ = "OrderedImageFolder"
        globals()["OrderedImageFolder"] = OrderedImageFolder
        _FOLDER = OrderedImageFolder
    return _FOLDER


_FOLDER: type | None = None


def __getattr__(name: str) -> Any:
    """Lazy ``OrderedImageFolder`` (torchvision imported on first use; found by pickle)."""
    if name == "OrderedImageFolder":
        return _folder_class()
    raise AttributeError(name)


def _image_folder(tree: Path, transform: Any, classes: Sequence[str] | None) -> Any:
    cls = _folder_class()
    ds = cls.__new__(cls)
    ds.order = list(classes) if classes is not None else None
    try:
        cls.__init__(ds, str(tree), transform=transform, loader=load_image)
    except (FileNotFoundError, RuntimeError) as exc:
        raise EmptyDatasetError(
            f"No images found under {tree}: {str(exc).splitlines()[0]}") from None
    return ds


def _holdout(targets: Sequence[int], split: str, seed: int) -> np.ndarray:
    """Rows of a seeded, stratified split: a fifth of each class (at least one) is test."""
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(targets):
        rows = np.flatnonzero(targets == c)
        rows = rows[rng.permutation(len(rows))]
        n_test = max(1, int(round(HOLDOUT * len(rows)))) if len(rows) > 1 else 0
        keep.append(rows[:n_test] if split == "test" else rows[n_test:])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


class FolderDataset(Dataset):
    """An image folder (or a split of it) with ``class_names``, ``samples`` and ``spec()``."""

    def __init__(self, base: Any, rows: np.ndarray | None, spec: dict[str, Any]) -> None:
        self.base = base
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.class_names = list(base.classes)
        self.classes = self.class_names
        picked = base.samples if self.rows is None else [base.samples[i] for i in self.rows]
        self.samples = picked
        self.targets = [int(t) for _, t in picked]
        self._spec = {**spec, "n": len(picked)}
        if not picked:
            raise EmptyDatasetError(f"No images in {spec.get('root')} (split {spec.get('split')}).")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        row = int(index) if self.rows is None else int(self.rows[index])
        return self.base[row]

    def spec(self) -> dict[str, Any]:
        return dict(self._spec)


def _channel_stats(tree: Path, size: int, rows_split: str | None, seed: int,
                   limit: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the (training) images, resized and cropped to ``size``."""
    from torchvision import transforms

    plain = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size),
                                transforms.ToTensor()])
    base = _image_folder(tree, plain, None)
    rows = (np.arange(len(base.samples)) if rows_split is None
            else _holdout([t for _, t in base.samples], rows_split, seed))
    if len(rows) > limit:
        rows = rows[np.linspace(0, len(rows) - 1, limit).round().astype(np.int64)]
    total, sq, n = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 0
    for r in rows:
        x = base[int(r)][0].double().reshape(3, -1)
        total += x.sum(1)
        sq += (x * x).sum(1)
        n += x.shape[1]
    if n == 0:
        raise EmptyDatasetError(f"No images under {tree} to compute normalisation statistics.")
    mean = total / n
    std = (sq / n - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def folder_dataset(
    root: str | Path,
    *,
    split: str | None = None,
    image_size: int = 224,
    normalize: str | Sequence[Any] | None = "imagenet",
    classes: Sequence[str] | None = None,
    seed: int = 0,
) -> FolderDataset:
    """An image folder as a deepprofile dataset (see the module docstring)."""
    from torchvision import transforms

    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(
            f"Image folder {root} does not exist; point at a directory with one sub-folder "
            "per class.")
    if int(image_size) < 1:
        raise DeepProfileError(f"image_size must be >= 1, got {image_size}.")
    if split not in (None, "train", "test"):
        raise DeepProfileError(f"Unknown split {split!r} for a folder; use train or test.")
    tree, holdout = _tree(root, split)
    norm = parse_normalization(normalize or "imagenet")
    if norm == "imagenet":
        mean, std = IMAGENET
    elif norm == "none":
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    elif norm == "dataset":
        train_tree, train_holdout = _tree(root, "train")
        mean, std = _channel_stats(train_tree, int(image_size),
                                   "train" if train_holdout else None, seed)
    else:
        mean, std = norm
    transform = transforms.Compose([
        transforms.Resize(int(image_size)), transforms.CenterCrop(int(image_size)),
        transforms.ToTensor(), transforms.Normalize(mean, std),
    ])
    base = _image_folder(tree, transform, classes)
    rows = _holdout(base.targets, split, seed) if holdout else None
    spec = {
        "name": "folder", "root": str(root.resolve()), "image_size": int(image_size),
        "mean": list(mean), "std": list(std),
        "normalize": norm if isinstance(norm, str) else "explicit",
        "split": split, "split_seed": seed if holdout else None,
    }
    if classes is not None:
        spec["classes"] = list(classes)
    return FolderDataset(base, rows, spec)


def align_classes(dataset: Dataset, model_names: Sequence[str] | None,
                  rebuild: Any = None) -> tuple[Dataset, str]:
    """Match the dataset's class indices to a checkpoint's class names.

    A folder whose class names are all among the checkpoint's is re-indexed in the
    checkpoint's order (``rebuild = (name, split, params)`` of :func:`load_dataset`).
    Otherwise the names are compared and a note says whether the orders agree; a note
    starting with ``warning:`` means accuracy compares unrelated label orders.
    """
    from deepprofile.data.adapters import class_names

    have = class_names(dataset)
    if not model_names:
        return dataset, ("warning: the checkpoint records no class names, so the dataset's "
                         "label order cannot be checked against the model's; accuracy assumes "
                         "they agree.")
    model_names = [str(n) for n in model_names]
    if have is None:
        return dataset, ("warning: the dataset has no class names to match against the "
                         f"checkpoint's {model_names[:10]}; accuracy assumes the same order.")
    if list(have) == model_names:
        return dataset, "class names match the checkpoint's"
    if isinstance(dataset, FolderDataset) and set(have) <= set(model_names) and rebuild:
        name, split, params = rebuild
        spec = dataset.spec()
        aligned = folder_dataset(params["root"], split=split, image_size=spec["image_size"],
                                 normalize=(spec["mean"], spec["std"]), classes=model_names)
        aligned._spec["normalize"] = spec.get("normalize")
        return aligned, "folder classes re-indexed by name to the checkpoint's order"
    return dataset, (f"warning: the dataset's classes {list(have)[:10]} differ from the "
                     f"checkpoint's {model_names[:10]}; accuracy compares unrelated label "
                     "orders.")
