"""The overview section: model, data, how the run folder was made, analyses present."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deepprofile.report.blocks import (
    KeyValues,
    Section,
    Table,
    dataset_text,
    fmt,
    pct,
    shape,
    short_list,
)
from deepprofile.report.context import ReportContext
from deepprofile.report.registry import register_section

ANALYSES: tuple[tuple[str, str, str], ...] = (
    ("capture", "Capture statistics", "deepprofile capture MODEL --out RUN_DIR"),
    ("topology", "Topology (persistence, distances, CKA)", "deepprofile topology RUN_DIR"),
    ("mapper", "Mapper graphs", "deepprofile mapper RUN_DIR"),
    ("spectral", "Weight spectra", "deepprofile spectral MODEL --run RUN_DIR"),
    ("attribution", "Attributions", "deepprofile attribute RUN_DIR"),
)


def _commands(ov: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every command that built the run: run.json's ``commands`` (one entry per command
    that wrote a result), else its single ``command`` (the capture)."""
    commands = [dict(c) for c in ov.get("commands") or [] if c.get("command")]
    last = ov.get("command")
    if last and not any(c["command"] == last for c in commands):
        commands.insert(0, {"command": last, "date": ov.get("date"), "results": []})
    return commands


def overview_section(ctx: ReportContext) -> Section | None:
    ov = ctx.overview
    if ov is None:
        return None
    sec = Section(ctx.unique_id("overview"), "Overview", key="overview",
                  intro="What was analysed: the model, the data it saw, and how this run "
                        "folder was made.")
    info = ov.get("model_info") or {}
    params = {k: v for k, v in info.items()
              if k not in ("arch", "source", "weights_hash", "extra") and v not in (None, {})}
    classes = [str(c) for c in ov.get("class_names") or []]
    commands = _commands(ov)
    rows: list[tuple[str, Any]] = [
        ("Model", ov.get("model") or info.get("arch") or "–"),
        ("Checkpoint", ov.get("checkpoint") or info.get("source") or "random init"),
        ("Weights hash", ov.get("weights_hash") or "–"),
        ("Model parameters", ", ".join(f"{k}={v}" for k, v in params.items()) or "–"),
        ("Dataset", dataset_text(ov.get("dataset"))),
        ("Samples", fmt(ov.get("n_samples"))),
        ("Classes", short_list(classes, 20)),
        ("Layers", ", ".join(str(x) for x in ov.get("layers") or []) or "–"),
        ("Accuracy on these samples", pct(ov.get("accuracy"))),
        ("Seed", fmt(ov.get("seed"))),
        ("Date", ov.get("date") or "–"),
        ("Command" if len(commands) < 2 else "Commands",
         commands[0]["command"] if len(commands) == 1 else
         f"{len(commands)}, listed below" if commands else "–"),
        ("Run folder", str(ctx.run_dir)),
    ]
    sec.add(KeyValues(rows))
    if len(commands) > 1:
        sec.add(Table(["date", "command", "results written"],
                      [[c.get("date") or "–", c["command"],
                        ", ".join(c.get("results") or []) or "–"] for c in commands],
                      caption="Every command that built this run folder, in order (from "
                              "run.json's commands)."))
    stores = ov.get("stores") or {}
    if stores:
        srows = []
        for name, s in stores.items():
            layers = s.get("layers") or {}
            red = sorted({str(v.get("reduction")) for v in layers.values()})
            srows.append([name, fmt(s.get("n_samples")), ", ".join(red),
                          ", ".join(f"{k} {shape(v.get('stored_shape'))}"
                                    for k, v in layers.items())])
        sec.add(Table(["store", "samples", "reduction", "stored layers"], srows,
                      caption="Activation stores of the run (one row per store)."))
    arows = []
    for name, label, command in ANALYSES:
        present = name in ctx.result_names()
        arows.append([label, "present" if present else "not run",
                      ctx.link(f"results/{name}.json", f"results/{name}.json") if present
                      else command])
    known = {a[0] for a in ANALYSES}
    for name in ctx.result_names():
        if name not in known and not name.startswith("capture_"):
            arows.append([name, "present", ctx.link(f"results/{name}.json",
                                                    f"results/{name}.json")])
    sec.add(Table(["analysis", "status", "result file / command to run it"], arows,
                  caption="Analyses found in the run folder; the report shows a section for "
                          "each one present."))
    versions = ov.get("versions") or {}
    if versions:
        sec.add(Table(["package", "version"], [[k, v] for k, v in versions.items()],
                      caption="Package versions that made the capture."))
    return sec


register_section(overview_section)
