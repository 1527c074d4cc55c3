"""Small inline PNG images for pages: attribution maps, inputs, mapper thumbnails.

A 4 x 9 grid of 224-pixel attribution maps drawn as plotly heatmaps put 24.5 MB of JSON
into a ResNet-50 report (issue 18). Here each map is block-averaged down to at most
``max_side`` pixels, coloured through a 256-entry lookup table and written as an 8-bit
*indexed* PNG (one byte per pixel before zlib), then embedded as a ``data:`` URI. The PNG
writer is the standard's minimum (signature, IHDR, PLTE, IDAT, IEND; zlib and struct only),
so no imaging library is needed.
"""

from __future__ import annotations

import base64
import functools
import struct
import zlib
from typing import Any

import numpy as np

from deepprofile.errors import DeepProfileError

MAX_SIDE = 112
"""Default largest side, in pixels, of an embedded map (224-pixel inputs are halved)."""


def _chunk(tag: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + tag + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))


def png_bytes(img: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """Encode an image as PNG.

    ``img``: (H, W) uint8 (grey, or palette indices when ``palette`` is given) or
    (H, W, 3) uint8 RGB. ``palette``: (K <= 256, 3) uint8 colours for an indexed PNG.
    """
    img = np.ascontiguousarray(img, dtype=np.uint8)
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3) or 0 in img.shape:
        raise DeepProfileError(f"Cannot encode an image of shape {img.shape} as PNG.")
    h, w = img.shape[:2]
    if palette is not None:
        if img.ndim != 2:
            raise DeepProfileError("An indexed PNG needs a 2-D array of palette indices.")
        colour = 3
    else:
        colour = 0 if img.ndim == 2 else 2
    rows = img.reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), dtype=np.uint8), rows], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
    if palette is not None:
        out += _chunk(b"PLTE", np.ascontiguousarray(palette, dtype=np.uint8).tobytes())
    return out + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@functools.cache
def colormap_lut(name: str = "Inferno") -> np.ndarray:
    """(256, 3) uint8 lookup table interpolated from plotly's sequential colour scale
    ``name`` (e.g. ``Inferno``, ``Greys``, ``Viridis``), low values first."""
    import plotly.colors as pc

    scale = getattr(pc.sequential, name, None)
    if scale is None:
        raise DeepProfileError(f"Unknown colour scale {name!r}; use a plotly sequential one.")
    stops = np.asarray([pc.hex_to_rgb(c) if c.startswith("#") else
                        pc.unlabel_rgb(c) for c in scale], dtype=np.float64)
    pos = np.linspace(0.0, 1.0, len(stops))
    t = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(t, pos, stops[:, k]) for k in range(3)], axis=1)
    return np.round(lut).astype(np.uint8)


def downsample(a: Any, max_side: int = MAX_SIDE) -> np.ndarray:
    """Block means over ``k x k`` pixels with the smallest integer ``k`` that brings the
    largest side to at most ``max_side`` (edges padded by repetition); NaN counts as 0."""
    a = np.nan_to_num(np.asarray(a, dtype=np.float64))
    if a.ndim != 2:
        raise DeepProfileError(f"Expected a 2-D map; got shape {a.shape}.")
    k = max(1, -(-max(a.shape) // max(int(max_side), 1)))
    if k == 1:
        return a
    h, w = a.shape
    ph, pw = -h % k, -w % k
    if ph or pw:
        a = np.pad(a, ((0, ph), (0, pw)), mode="edge")
    return a.reshape(a.shape[0] // k, k, a.shape[1] // k, k).mean(axis=(1, 3))


def scaled_indices(a: np.ndarray, vmin: float | None = None,
                   vmax: float | None = None) -> np.ndarray:
    """``a`` mapped linearly from ``[vmin, vmax]`` (default: its own range) to 0..255."""
    lo = float(np.min(a)) if vmin is None else float(vmin)
    hi = float(np.max(a)) if vmax is None else float(vmax)
    if not hi > lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.round(np.clip((a - lo) / (hi - lo), 0.0, 1.0) * 255).astype(np.uint8)


def map_data_uri(a: Any, *, colorscale: str = "Inferno", max_side: int = MAX_SIDE,
                 vmin: float | None = None, vmax: float | None = None) -> str:
    """A 2-D map (attribution, grey input) as a downsampled, colour-mapped PNG data URI;
    each map scaled to its own range unless ``vmin``/``vmax`` are given."""
    small = downsample(a, max_side)
    return data_uri(png_bytes(scaled_indices(small, vmin, vmax), colormap_lut(colorscale)))


__all__ = ["MAX_SIDE", "colormap_lut", "data_uri", "downsample", "map_data_uri", "png_bytes",
           "scaled_indices"]
