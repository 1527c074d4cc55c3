"""The data-attribution section: which training images most raise / lower each target."""

from __future__ import annotations

from typing import Any

import numpy as np

from deepprofile.report.blocks import ImageCell, ImageGrid, Section, Table, Text, fmt
from deepprofile.report.context import ReportContext
from deepprofile.report.images import data_uri, map_data_uri, png_bytes
from deepprofile.report.registry import register_section

MAX_ROWS = 12


def _thumbnail(image: np.ndarray) -> str:
    """An inline PNG of one training image: grey (1 channel) or RGB (3 channels)."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] == 3:
        lo, hi = float(img.min()), float(img.max())
        scaled = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        return data_uri(png_bytes(np.round(scaled.transpose(1, 2, 0) * 255).astype(np.uint8)))
    return map_data_uri(img.reshape(img.shape[-2], img.shape[-1]), colorscale="Greys")


def _thumbnails(ctx: ReportContext, data: dict[str, Any]) -> dict[int, str]:
    rel = (data.get("scores_files") or {}).get("thumbnails")
    path = ctx.run_dir / rel if rel else None
    if path is None or not path.exists():
        return {}
    with np.load(path) as npz:
        return {int(i): _thumbnail(img) for i, img in zip(npz["indices"], npz["images"],
                                                           strict=True)}


def data_attribution_section(ctx: ReportContext) -> Section | None:
    data = ctx.result("data_attribution")
    if not data:
        return None
    ckpts = data.get("checkpoints") or []
    sec = Section(
        ctx.unique_id("data-attribution"), "Data attribution (TRAK)", key="data_attribution",
        intro=f"Which training images taught the model its predictions and concepts: TRAK "
              f"scores over {len(ckpts)} training checkpoint(s) (seeds "
              f"{', '.join(map(str, data.get('seeds') or [])) or '?'}), projection dimension "
              f"{data.get('proj_dim')}, {data.get('n_train')} training images. A positive "
              "score means training on the image raised the target (helpful), a negative "
              "one that it lowered it (harmful).")
    thumbs = _thumbnails(ctx, data)
    targets = [t for t in data.get("targets", []) if t["kind"] != "prediction"]
    targets += [t for t in data.get("targets", []) if t["kind"] == "prediction"]
    targets = targets[:MAX_ROWS]
    k = max((len(t["helpful"]) for t in targets), default=0)
    if thumbs and targets:
        rows, titles = [], []
        for t in targets:
            cells: list[ImageCell | None] = []
            for side in ("helpful", "harmful"):
                for r in t[side][:k]:
                    src = thumbs.get(int(r["index"]))
                    text = (f"#{r['index']} {ctx.class_name(r['label'])} score {fmt(r['score'])}"
                            + (f" ({', '.join(r.get('concepts') or [])})"
                               if r.get("concepts") else ""))
                    cells.append(ImageCell(src, text, fmt(r["score"], 2)) if src else None)
            rows.append(cells)
            titles.append(t["name"])
        sec.add(ImageGrid(
            ctx.unique_id("data-attribution-top"),
            f"Per target (row): the {k} most helpful training images (left half) and the {k} "
            "most harmful ones (right half), labelled with their TRAK score; hover for the "
            "index, label and ground-truth concepts.", rows,
            column_titles=[f"helpful {i + 1}" for i in range(k)]
            + [f"harmful {i + 1}" for i in range(k)], row_titles=titles,
            title="Most helpful and most harmful training images", size=48))
    prec = [t for t in data.get("targets", []) if t.get("precision")]
    if prec:
        sec.add(Table(
            ["target", "ground truth", "k", "precision@k", "base rate", "lift"],
            [[t["name"], t["precision"]["truth"], str(t["precision"]["k"]),
              fmt(t["precision"]["precision"]), fmt(t["precision"]["base_rate"]),
              fmt(t["precision"]["lift"])] for t in prec],
            numeric=[False, False, True, True, True, True],
            caption="Training-point ranking as a detector: the share of a target's k most "
                    "helpful training images that carry the ground-truth concept, against its "
                    "share in the whole training set (lift = precision / base rate; about 1 "
                    "when the ranking ignores the concept)."))
    shortcuts = data.get("shortcuts") or []
    if shortcuts:
        sec.add(Table(
            ["concept -> class", "training images with it", "summed TRAK score",
             "random groups (mean +- std)", "z", "fires (z >= threshold)",
             "margin contrast on the model", "test images (with / without)"],
            [[f"{d['concept']} -> {d['class_name']}", str(d["effect"]["n_group"]),
              fmt(d["effect"]["effect"]),
              f"{fmt(d['effect']['null_mean'])} +- {fmt(d['effect']['null_std'])}",
              fmt(d["effect"]["z"]),
              f"{'yes' if d.get('fires') else 'no'} ({fmt(d.get('threshold', 3.0))})",
              fmt(d["model_contrast"]), f"{d['n_marked']} / {d['n_unmarked']}"]
             for d in shortcuts],
            numeric=[False, True, True, False, True, False, True, False],
            caption="Shortcut detector: the target is the class's margin on test images of "
                    "the other classes with the concept minus without it; the statistic is "
                    "the summed TRAK score of the training images that carry the concept "
                    "(how much the target would drop without them) as a z-score against "
                    "random groups with the same class counts. Fires at z >= 3 (separated "
                    "a spurious from a clean model on the demo's shapes CNN; "
                    "docs/data_attribution.md)."))
    for w in data.get("warnings") or []:
        sec.add(Text(w, note=True))
    return sec


register_section(data_attribution_section)
