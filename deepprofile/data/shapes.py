"""Procedural shapes-with-concepts: 32x32 RGB images whose every concept is known.

Each image is a function of ``(seed, index)`` only, so a dataset of any size is
deterministic and can be regenerated anywhere. Concepts recorded per image:

- ``shape`` (the class label): circle, square, triangle, cross
- ``colour``: red, green, blue, yellow, magenta, cyan
- ``texture``: plain, stripes, dots
- ``size``: radius in pixels (5 to 11) and ``size_bin`` small / large
- ``position``: centre ``(cx, cy)`` in pixels
- ``marker``: whether a planted spurious 3x3 white patch sits in the top-left corner.
  It appears on images of class ``spurious_class`` with probability ``marker_rate``
  and on the other classes with probability ``marker_base_rate``, so a model can
  learn the shortcut; concept tools later are scored against this truth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {
    "red": (1.0, 0.15, 0.15),
    "green": (0.15, 0.9, 0.2),
    "blue": (0.2, 0.35, 1.0),
    "yellow": (1.0, 0.9, 0.1),
    "magenta": (0.95, 0.2, 0.95),
    "cyan": (0.1, 0.9, 0.95),
}
TEXTURES = ("plain", "stripes", "dots")
SIZE = 32
MIN_RADIUS, MAX_RADIUS = 5, 11


@dataclass(frozen=True)
class ShapeConcepts:
    """The ground-truth concepts of one image."""

    shape: str
    label: int
    colour: str
    texture: str
    radius: int
    size_bin: str
    cx: int
    cy: int
    marker: bool


def _mask(shape: str, cx: int, cy: int, r: int) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        half = round(r * 0.85)
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "triangle":  # apex up, base at cy + r
        frac = (dy + r) / (2 * r)
        return (dy >= -r) & (dy <= r) & (np.abs(dx) <= frac * r)
    if shape == "cross":
        arm = max(1, round(r / 3))
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | (
            (np.abs(dy) <= arm) & (np.abs(dx) <= r)
        )
    raise ValueError(f"unknown shape {shape!r}")


def _texture(texture: str) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    if texture == "plain":
        return np.ones((SIZE, SIZE))
    if texture == "stripes":
        return np.where(((x + y) // 2) % 2 == 0, 1.0, 0.3)
    return np.where((x % 3 == 0) & (y % 3 == 0), 1.0, 0.35)


def render_shape(seed: int, index: int, spurious_class: int = 0, marker_rate: float = 0.9,
                 marker_base_rate: float = 0.05) -> tuple[np.ndarray, ShapeConcepts]:
    """Render image ``index`` of the dataset with ``seed``: ``(3, 32, 32)`` float32 in [0, 1]."""
    rng = np.random.default_rng([seed, index])
    label = int(rng.integers(len(SHAPES)))
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
    radius = int(rng.integers(MIN_RADIUS, MAX_RADIUS + 1))
    lo, hi = radius + 1, SIZE - radius - 2
    cx, cy = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    rate = marker_rate if label == spurious_class else marker_base_rate
    marker = bool(rng.random() < rate)
    image = rng.normal(0.08, 0.03, size=(3, SIZE, SIZE)).clip(0, 1)
    mask = _mask(SHAPES[label], cx, cy, radius)
    shade = _texture(texture)
    for ch, value in enumerate(COLOURS[colour]):
        image[ch][mask] = (value * shade)[mask]
    if marker:
        image[:, 1:4, 1:4] = 1.0
    concepts = ShapeConcepts(
        shape=SHAPES[label], label=label, colour=colour, texture=texture, radius=radius,
        size_bin="small" if radius <= (MIN_RADIUS + MAX_RADIUS) // 2 else "large",
        cx=cx, cy=cy, marker=marker,
    )
    return image.astype(np.float32), concepts


#: Rendered images kept per dataset (oldest dropped first; re-rendering is deterministic).
CACHE_SIZE = 4096


class ShapesDataset(Dataset):
    """``n`` procedural images (deterministic from ``seed``) with their concepts."""

    def __init__(self, n: int = 2000, seed: int = 0, spurious_class: int = 0,
                 marker_rate: float = 0.9, marker_base_rate: float = 0.05) -> None:
        if n < 1:
            from deepprofile.errors import EmptyDatasetError

            raise EmptyDatasetError(f"ShapesDataset needs n >= 1 images, got n={n}.")
        if not 0 <= spurious_class < len(SHAPES):
            raise ValueError(f"spurious_class must be in 0..{len(SHAPES) - 1}")
        for name, rate in (("marker_rate", marker_rate), ("marker_base_rate", marker_base_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {rate}")
        self.n, self.seed = n, seed
        self.spurious_class = spurious_class
        self.marker_rate, self.marker_base_rate = marker_rate, marker_base_rate
        self.class_names = list(SHAPES)
        # rendered images live in one preallocated ring of CACHE_SIZE slots: a per-image
        # dict of small arrays fragments the heap and RSS creeps up over a 50k capture
        self._images: np.ndarray | None = None
        self._slots: dict[int, tuple[int, ShapeConcepts]] = {}  # index -> (slot, concepts)
        self._owners: list[int] = []  # slot -> index
        self._next = 0

    def __len__(self) -> int:
        return self.n

    def _item(self, index: int) -> tuple[torch.Tensor, ShapeConcepts]:
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} images")
        hit = self._slots.get(index)
        if hit is None:
            image, concepts = render_shape(
                self.seed, index, self.spurious_class, self.marker_rate, self.marker_base_rate
            )
            if self._images is None:
                self._images = np.empty((min(CACHE_SIZE, self.n), *image.shape), image.dtype)
            slot = self._next
            self._next = (slot + 1) % len(self._images)
            if slot < len(self._owners):  # the ring is full: drop the oldest image
                del self._slots[self._owners[slot]]
                self._owners[slot] = index
            else:
                self._owners.append(index)
            self._images[slot] = image
            hit = self._slots[index] = (slot, concepts)
        slot, concepts = hit
        return torch.from_numpy(self._images[slot].copy()), concepts

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, concepts = self._item(index)
        return image, concepts.label

    def concepts(self, index: int) -> ShapeConcepts:
        return self._item(index)[1]

    def concept_table(self) -> dict[str, np.ndarray]:
        """Every concept of every image as columns (arrays of length n)."""
        rows = [asdict(self.concepts(i)) for i in range(self.n)]
        return {key: np.array([row[key] for row in rows]) for key in rows[0]}

    @property
    def targets(self) -> torch.Tensor:
        return torch.tensor([self.concepts(i).label for i in range(self.n)])

    def spec(self) -> dict:
        return {
            "name": "shapes", "n": self.n, "seed": self.seed,
            "spurious_class": self.spurious_class, "marker_rate": self.marker_rate,
            "marker_base_rate": self.marker_base_rate,
        }
