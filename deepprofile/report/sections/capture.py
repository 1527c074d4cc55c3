"""The capture section: layer shapes and activation statistics of every store."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deepprofile.report import figures as F
from deepprofile.report.blocks import (
    Grid,
    Section,
    Table,
    Text,
    fmt,
    pct,
    shape,
    short_list,
)
from deepprofile.report.context import ReportContext
from deepprofile.report.registry import register_section


def _capture_table(stats: Mapping[str, Any]) -> Table:
    rows = []
    for r in stats.get("layers", []):
        rows.append([
            r["layer"], shape(r.get("output_shape")), r.get("reduction", "–"),
            shape(r.get("stored_shape")), fmt(r.get("n_units")), fmt(r.get("mean")),
            fmt(r.get("std")), fmt(r.get("min")), fmt(r.get("max")),
            pct(r.get("fraction_zero")), short_list(r.get("dead_units") or []),
            short_list(r.get("saturated_units") or []),
        ])
    return Table(["layer", "output", "reduction", "stored", "units", "mean", "std", "min", "max",
                  "zeros", "dead units", "saturated units"], rows,
                 numeric=[False, False, False, False, True, True, True, True, True, True,
                          False, False])


def capture_section(ctx: ReportContext) -> Section | None:
    names = [n for n in ctx.result_names() if n == "capture" or n.startswith("capture_")]
    names.sort(key=lambda n: (n != "capture", n))
    found = [(n, ctx.result(n)) for n in names]
    found = [(n, d) for n, d in found if d]
    if not found:
        return None
    sec = Section(ctx.unique_id("capture"), "Capture", key="capture",
                  intro="Layer shapes and activation statistics of every store. A unit "
                        "(channel) is dead when it is zero on every sample, saturated when "
                        "it barely varies across samples; both carry no information about "
                        "the input.")
    for i, (name, stats) in enumerate(found):
        store = Path(str(stats.get("store", name))).name
        if len(found) > 1:
            sec.add(ctx.heading(f"Store {store}", f"capture-{store}"))
        sec.add(Text(f"{fmt(stats.get('n_samples'))} samples, accuracy "
                     f"{pct(stats.get('accuracy'))}."))
        table = _capture_table(stats)
        table.caption = ("Per layer: raw output shape, stored reduction and shape, statistics "
                         "over all samples and units, share of exact zeros, and the indices "
                         "of dead and saturated units.")
        sec.add(table)
        layers = stats.get("layers", [])
        if i == 0 and layers:
            sec.add(Grid([
                ctx.figure(F.capture_activity(layers),
                           "Share of exactly-zero activations, dead units and saturated "
                           "units per layer; tall red or orange bars mean wasted capacity.",
                           title="Sparsity and dead units", height=340),
                ctx.figure(F.capture_unit_spread(layers),
                           "Spread of the per-unit standard deviations across samples "
                           "(log scale); a long lower whisker means some units hardly "
                           "respond to the input.", title="Unit variability", height=340),
            ]))
    return sec


register_section(capture_section)
