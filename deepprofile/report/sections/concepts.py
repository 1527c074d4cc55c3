"""The concepts section: which layer knows which concept, where it lives, spurious signals.

Reads ``results/concepts.json`` (probes with their controls, TCAV, and under ``structures``
the links of :func:`deepprofile.concepts.links.run_concept_links`), the concept-conditional
maps it saved under ``RUN_DIR/concepts/maps/`` and ``results/spurious.json`` (the spurious
/ clean pair). Every part is optional: a missing part is left out, or named in a note when
the analysis recorded why it skipped it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from deepprofile.report import figures as F
from deepprofile.report.blocks import (
    Grid,
    ImageCell,
    ImageGrid,
    Section,
    Table,
    Text,
    fmt,
)
from deepprofile.report.context import ReportContext
from deepprofile.report.registry import register_section

MAX_TCAV_ROWS = 60
"""TCAV rows shown in full; beyond, the significant ones first and a note."""


def _matrix(concepts: Sequence[Mapping[str, Any]], layers: Sequence[str], key: str
            ) -> np.ndarray:
    """concepts x layers of one per-layer probe field (NaN where absent)."""
    out = np.full((len(concepts), len(layers)), np.nan)
    for i, c in enumerate(concepts):
        by_layer = {lp.get("layer"): lp for lp in c.get("layers", [])}
        for j, layer in enumerate(layers):
            value = (by_layer.get(layer) or {}).get(key)
            if value is not None:
                out[i, j] = float(value)
    return out


def _probes(ctx: ReportContext, sec: Section, data: Mapping[str, Any]) -> None:
    concepts = [c for c in data.get("concepts") or [] if c.get("layers")]
    layers = list(data.get("layers") or [])
    if not concepts or not layers:
        return
    names = [str(c["concept"]) for c in concepts]
    acc = _matrix(concepts, layers, "accuracy")
    matrices = {"probe balanced accuracy": acc,
                "shuffled-label control": _matrix(concepts, layers, "shuffled_accuracy")}
    base = _matrix(concepts, layers, "baseline_accuracy")
    if np.isfinite(base).any():
        matrices["random-init model control"] = base
    matrices["selectivity (accuracy - shuffled)"] = acc - matrices["shuffled-label control"]
    marks = [(i, layers.index(c["first_layer"])) for i, c in enumerate(concepts)
             if c.get("first_layer") in layers]
    sec.add(ctx.heading("Which layer knows which concept", "concepts-probes"))
    sec.add(ctx.figure(
        F.heatmap_selector(matrices, names, layers, marks_by_key={
            "probe balanced accuracy": marks}, zmin=0.0, zmax=1.0,
            colorbar="balanced acc.", row_title="concept", col_title="layer"),
        "Balanced accuracy (stratified k-fold) of a logistic-regression probe per concept and "
        "layer; 0.5 is chance. The drop-down shows the controls: the same probe on shuffled "
        "concept labels (should stay near 0.5) and on the randomly initialised model (what "
        "the architecture gives without training), and the selectivity. Outlined: the first "
        "layer where the concept is decodable (within the margin of the best layer).",
        title="Probe accuracy with controls", height=max(320, 24 * len(names) + 140),
        wide=True))
    rows = []
    for c in concepts:
        best = max(c["layers"], key=lambda lp: lp.get("accuracy") or 0.0)
        rows.append([
            c["concept"], c.get("n_positive"), fmt(c.get("known")), c.get("first_layer") or "–",
            best.get("layer"), f"{fmt(best.get('accuracy'))} ± {fmt(best.get('accuracy_std'))}",
            fmt(best.get("shuffled_accuracy")), fmt(best.get("baseline_accuracy")),
            fmt(best.get("sparsity_k")),
        ])
    sec.add(Table(
        ["concept", "positives", "known", "first layer", "best layer", "accuracy",
         "shuffled", "random init", "units for 90 %"], rows,
        numeric=[False, True, False, False, False, True, True, True, True],
        caption="Per concept: whether it is decodable above its controls, the first such "
                "layer, and at the best layer the accuracy (± spread over folds), the two "
                "controls and the fewest units whose L1 probe reaches 90 % of the full "
                "probe's accuracy."))


def _tcav(ctx: ReportContext, sec: Section, data: Mapping[str, Any]) -> None:
    tcav = data.get("tcav") or {}
    scores = tcav.get("scores") or []
    if not scores:
        return
    scores = sorted(scores, key=lambda s: (not s.get("significant"), s.get("p_value", 1.0)))
    shown = scores[:MAX_TCAV_ROWS]
    rows = [[s["concept"], s["layer"], ctx.class_name(s["target"]),
             f"{fmt(s.get('score'))} ± {fmt(s.get('score_std'))}",
             f"{fmt(s.get('random_score'))} ± {fmt(s.get('random_std'))}",
             fmt(s.get("p_value")), fmt(bool(s.get("significant")))] for s in shown]
    sec.add(ctx.heading("TCAV: does the concept push the class?", "concepts-tcav"))
    n_sig = sum(bool(s.get("significant")) for s in scores)
    sec.add(Table(
        ["concept", "layer", "class", "TCAV score", "random concepts", "p", "significant"],
        rows, numeric=[False, False, False, True, True, True, False],
        caption=f"TCAV (Kim et al. 2018, captum): share of the class's images whose logit "
                f"grows along the concept's activation vector, against "
                f"{tcav.get('n_random')} random counter-concepts (two-sided t-test, level "
                f"{tcav.get('alpha')}). {n_sig} of {len(scores)} scores are significant"
                + (f"; the first {MAX_TCAV_ROWS} rows are shown, significant ones first."
                   if len(scores) > MAX_TCAV_ROWS else ", listed first.")))


def _purity(ctx: ReportContext, sec: Section, mapper: Mapping[str, Any]) -> Any:
    layers = list(mapper.get("layer_order") or [])
    depth = mapper.get("purity_by_depth") or {}
    if not layers or not depth:
        return None
    names = list(depth)
    purity = np.array([[np.nan if v is None else v for v in depth[n]] for n in names], float)
    base = np.array([[((mapper["layers"][lay]["purity"].get(n) or {}).get("baseline") or {})
                      .get("mean") or np.nan for lay in layers] for n in names], float)
    return ctx.figure(
        F.heatmap_selector({"concept purity": purity, "shuffled-mask baseline": base,
                            "purity - baseline": purity - base}, names, layers, zmin=None,
                           colorbar="purity", row_title="concept", col_title="mapper graph"),
        "Concept purity of each layer's mapper graph: the class-purity statistic for the "
        "label 'has the concept' (1 = concept-positive images never share a node with "
        "negatives). The baseline is the same statistic for shuffled masks of equal "
        "prevalence; the mapper pages colour nodes by each concept's share.",
        title="Concept purity by depth", height=max(320, 24 * len(names) + 140))


def _topology(ctx: ReportContext, sec: Section, topo: Mapping[str, Any]) -> Any:
    tests = topo.get("tests") or []
    if not tests:
        return None
    names = list(dict.fromkeys(t["concept"] for t in tests))
    layers = list(dict.fromkeys(t["layer"] for t in tests))
    p = np.full((len(names), len(layers)), np.nan)
    ratio = np.full_like(p, np.nan)
    for t in tests:
        i, j = names.index(t["concept"]), layers.index(t["layer"])
        p[i, j] = t["p_value"]
        if t.get("null_mean"):
            ratio[i, j] = t["statistic"] / t["null_mean"]
    return ctx.figure(
        F.heatmap_selector({"permutation p-value": p, "distance / null mean": ratio}, names,
                           layers, colorbar="p", row_title="concept", col_title="layer",
                           reverse=True),
        f"Do concept-positive and -negative images form differently shaped clouds? "
        f"{topo.get('metric')} distance between the persistence diagrams "
        f"(H{', H'.join(str(d) for d in topo.get('homology_dims', []))}) of equal-size "
        f"sub-clouds, against {topo.get('n_permutations')} label permutations; small p = "
        "the concept changes the layer's shape. Read it beside the probe accuracy above: "
        "a concept can be linearly decodable without changing the cloud's topology.",
        title="Concept topology (permutation test)", height=max(320, 24 * len(names) + 140))


def _alignment(ctx: ReportContext, sec: Section, spectra: Mapping[str, Any]) -> None:
    layers = spectra.get("layers") or {}
    if not layers:
        return
    names = list(dict.fromkeys(c for d in layers.values() for c in d.get("alignments", {})))
    cols = list(layers)
    cos = np.full((len(names), len(cols)), np.nan)
    pmax = np.full_like(cos, np.nan)
    for j, layer in enumerate(cols):
        for i, n in enumerate(names):
            a = layers[layer]["alignments"].get(n)
            if a:
                cos[i, j], pmax[i, j] = a["max_cosine"], a["p_max"]
    col_names = [f"{c} ({layers[c]['weight_layer']})" for c in cols]
    k = next(iter(layers.values()))["k"]
    sec.add(ctx.figure(
        F.heatmap_selector({"best |cos| with a top singular vector": cos,
                            "p against random directions": pmax}, names, col_names,
                           colorbar="|cos|", row_title="concept", col_title="layer"),
        f"Alignment of each concept's probe direction with the top {k} "
        f"output singular vectors of the layer's (last) convolution: the largest |cosine| and "
        f"its p-value against {spectra.get('n_random')} random directions (the maximum over "
        "the same vectors). A concept carried by one singular direction shows |cos| near 1.",
        title="Probe directions vs singular vectors", height=max(320, 24 * len(names) + 140)))
    rows = []
    for layer, d in layers.items():
        jac = (d.get("hypergraph") or {}).get("concept_class_jaccard") or {}
        for n, a in d.get("alignments", {}).items():
            if not a.get("selective"):
                continue
            overlap = jac.get(n) or {}
            top = sorted(overlap.items(), key=lambda kv: -kv[1])[:3]
            rows.append([n, layer, ", ".join(f"u{v}" for v in a["selective"]),
                         fmt(a["max_cosine"]),
                         ", ".join(f"{ctx.class_name(c) if str(c).isdigit() else c} "
                                   f"{fmt(v, 2)}" for c, v in top if v > 0) or "none"])
    if rows:
        sec.add(Table(["concept", "layer", "concept-selective vectors", "best |cos|",
                       "classes sharing them (Jaccard)"], rows,
                      numeric=[False, False, False, True, False],
                      caption="Singular vectors selective for a concept (p below α / k, "
                              "Bonferroni) become a 'concept:' hyperedge of the layer's class "
                              "hypergraph; the Jaccard index says which classes' influential "
                              "vectors the concept shares."))
    else:
        sec.add(Text("No singular vector is selective for any concept at the stated level: "
                     "the probe directions are spread over many singular directions.",
                     note=True))


def _maps(ctx: ReportContext, sec: Section, attr: Mapping[str, Any]) -> None:
    from deepprofile.mapper.page import png_data_uri
    from deepprofile.report.images import map_data_uri

    entries = attr.get("maps") or []
    if not entries:
        return
    rows, titles, table = [], [], []
    n_cols = 0
    for e in entries:
        path = ctx.run_dir / e.get("maps", "")
        share = e.get("region_share") or {}
        if share:
            table.append([e["concept"], e["layer"], fmt(e.get("probe_balanced_accuracy")),
                          e.get("region", ""), fmt(share.get("mean_mass_share")),
                          fmt(share.get("mean_area_share")), fmt(share.get("enrichment"), 2)])
        if not path.is_file():
            continue
        with np.load(path) as saved:
            images, sal = saved["images"], saved["saliency"]
        cells = []
        for image, s in zip(images, sal, strict=False):
            cells.append(ImageCell(png_data_uri(image), f"{e['concept']}: input"))
            cells.append(ImageCell(map_data_uri(s), f"{e['concept']} @ {e['layer']}: map"))
        n_cols = max(n_cols, len(cells))
        rows.append(cells)
        titles.append(f"{e['concept']} @ {e['layer']}")
    sec.add(ctx.heading("Concept-conditional attributions", "concepts-maps"))
    if rows:
        rows = [r + [None] * (n_cols - len(r)) for r in rows]
        sec.add(ImageGrid(
            ctx.unique_id("concept-maps"),
            f"{attr.get('method')} attributions of each concept probe's logit (probe ∘ "
            "network up to the probe's best layer) on concept-positive images: each pair is "
            "an input and its map (|attribution| summed over channels, black = 0, bright = "
            "the map's maximum). A probe that reads the concept itself lights up the "
            "concept's pixels.", rows,
            column_titles=[("input" if k % 2 == 0 else "map") for k in range(n_cols)],
            row_titles=titles, title="Where each concept probe looks", size=80))
    if table:
        sec.add(Table(
            ["concept", "layer", "probe acc.", "region", "attribution mass in region",
             "region's area share", "ratio"], table,
            numeric=[False, False, True, False, True, True, True],
            caption="On the shapes dataset every concept has a ground-truth region (the "
                    "shape's pixels, or the marker patch): the share of the attribution mass "
                    "inside it against its share of the image; a ratio well above 1 means the "
                    "probe looks at the concept."))


def _spurious(ctx: ReportContext, sec: Section, data: Mapping[str, Any]) -> None:
    s, c = data.get("spurious") or {}, data.get("clean") or {}
    detection = data.get("detection") or {}
    if not detection:
        return
    cfg = data.get("config") or {}
    sec.add(ctx.heading("Spurious-signal detection", "concepts-spurious"))
    stats = {
        "attribution": lambda b: f"{fmt(b.get('attribution_share'))} "
                                 f"({fmt(b.get('attribution_ratio'), 1)}× area)",
        "probe": lambda b: fmt(max((b.get("probe_accuracy") or {}).values(), default=None)),
        "tcav": lambda b: _best_tcav(b),
        "behaviour": lambda b: f"{fmt(b.get('accuracy_marked_other'))} / "
                               f"{fmt(b.get('accuracy_unmarked_other'))}",
    }
    what = {
        "attribution": "marker-patch attribution share (IG of the spurious class)",
        "probe": "best marker probe accuracy",
        "tcav": "TCAV of the marker toward the class (best p)",
        "behaviour": "ground truth: other-class accuracy marked / unmarked",
    }
    rows = []
    for family, d in detection.items():
        f = stats.get(family, lambda b: "–")
        rows.append([family, what.get(family, family), f(s), fmt(bool(d.get("spurious"))),
                     f(c), fmt(bool(d.get("clean")))])
    sec.add(Table(
        ["detector", "statistic", "spurious model", "detects", "clean model", "false alarm"],
        rows, caption=f"Adebayo et al. (2022): the marker is planted on class "
                      f"{ctx.class_name(cfg.get('spurious_class', 0))} of one model's training "
                      "set and not the other's; each detector family is scored on both by "
                      "rules fixed in advance. The behaviour row is the ground truth: a model "
                      "that uses the shortcut loses accuracy on marked images of the other "
                      "classes."))


def _best_tcav(b: Mapping[str, Any]) -> str:
    p = b.get("tcav_p") or {}
    if not p:
        return "–"
    layer = min(p, key=p.get)
    return f"{fmt((b.get('tcav_score') or {}).get(layer), 2)} (p = {fmt(p[layer])}, {layer})"


def concepts_section(ctx: ReportContext) -> Section | None:
    data = ctx.result("concepts")
    spurious = ctx.result("spurious")
    if not data and not spurious:
        return None
    data = data or {}
    n = len(data.get("concepts") or [])
    sec = Section(
        ctx.unique_id("concepts"), "Concepts", key="concepts",
        intro=f"Human concepts ({n} of them) against the network: which layer can decode each "
              "one (linear probes with controls, TCAV), where it lives in the structures of "
              "the other sections (mapper graphs, the topology of the clouds, the weights' "
              "singular vectors, attributions), and whether known spurious signals are "
              "detected." if n else "Spurious-signal detection on a planted shortcut.")
    _probes(ctx, sec, data)
    _tcav(ctx, sec, data)
    structures = data.get("structures") or {}
    if structures:
        sec.add(ctx.heading("Where the concepts live", "concepts-structures"))
        grid = [b for b in (_purity(ctx, sec, structures.get("mapper") or {}),
                            _topology(ctx, sec, structures.get("topology") or {})) if b]
        if grid:
            sec.add(Grid(grid))
        _alignment(ctx, sec, structures.get("spectra") or {})
        _maps(ctx, sec, structures.get("attributions") or {})
        for part, reason in (structures.get("skipped") or {}).items():
            sec.add(Text(f"{part} link not computed: {reason}", note=True))
    if spurious:
        _spurious(ctx, sec, spurious)
    for note in data.get("notes") or []:
        sec.add(Text(str(note), note=True))
    return sec


register_section(concepts_section)
