"""The spectral section: singular values, spectral densities and RMT fits of weights."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from deepprofile.report import figures as F
from deepprofile.report.blocks import (
    Grid,
    Section,
    Table,
    Text,
    fmt,
    shape,
)
from deepprofile.report.context import ReportContext
from deepprofile.report.registry import register_section

MANY_LAYERS = 12
"""Above this many weight layers, per-layer overlays and small multiples become a by-depth
summary plus a drop-down over every layer."""

LIFT = 1.05
"""A layer's top singular value counts as above (below) random init when it exceeds (falls
short of) the random-init one by more than 5 %. Captions state these counts; they never say
what training did, which the weights alone cannot tell (the model may be untrained)."""


def _lift_sentence(spectra: Mapping[str, np.ndarray],
                   random: Mapping[str, np.ndarray]) -> str:
    """What the data shows about the top of the spectrum against random init, measured."""
    both = [n for n in spectra if n in random and len(spectra[n]) and len(random[n])]
    if not both:
        return "No random-init spectra to compare with."
    lifted = sum(float(np.max(spectra[n])) > LIFT * float(np.max(random[n])) for n in both)
    lowered = sum(float(np.max(spectra[n])) * LIFT < float(np.max(random[n])) for n in both)
    text = (f"The largest singular value is more than {round(100 * (LIFT - 1))} % above its "
            f"random-init value in {lifted} of {len(both)} layers and more than "
            f"{round(100 * (LIFT - 1))} % below it in {lowered}")
    if lifted > len(both) / 2:
        return text + ": in most layers the top of the spectrum sits above random init."
    if lifted == 0 and lowered == 0:
        return text + ": the spectra match random initialisation (an untrained model?)."
    return text + "."


def spectral_section(ctx: ReportContext) -> Section | None:
    data = ctx.result("spectral")
    if not data or not data.get("trained"):
        return None
    trained = data["trained"].get("layers", [])
    random = {r["layer"]: r for r in (data.get("random_init") or {}).get("layers", [])}
    alpha_hat = data.get("alpha_hat") or {}
    baseline = (data.get("parameters") or {}).get("random_init_baseline") or {}
    if baseline.get("method") == "constructor":
        made = (f"a fresh {baseline.get('arch')} built by its own constructor "
                f"(seed {baseline.get('seed')})")
    elif baseline:
        made = ("the modules' reset_parameters() (PyTorch's generic init, not the "
                f"architecture's own: {baseline.get('reason')})")
    else:
        made = "a seeded copy"
    sec = Section(
        ctx.unique_id("spectral"), "Weight spectra", key="spectral",
        intro="Singular values of every Conv/Linear weight (unfolded to a matrix), their "
              "empirical spectral density against random-matrix theory, and the power-law "
              "exponent α of its tail (heavy-tailed, α between 2 and 6, usually means learned "
              f"structure). Model α̂: trained {fmt(alpha_hat.get('trained'), 2)}, seeded "
              f"random init {fmt(alpha_hat.get('random_init'), 2)}; the random init is "
              f"{made}.")
    rows = []
    for r in trained:
        rr = random.get(r["layer"], {})
        mp = r.get("mp") or {}
        rows.append([r["layer"], r.get("module_type"), shape(r.get("matrix_shape")),
                     fmt(r.get("spectral_norm")), fmt(r.get("lambda_max_unnormalised")),
                     fmt(r.get("lambda_max_normalised")), fmt(r.get("stable_rank"), 2),
                     fmt(r.get("alpha"), 2), fmt(rr.get("alpha"), 2),
                     fmt(r.get("alpha_weighted"), 2), fmt(mp.get("ks")),
                     fmt(mp.get("n_spikes"))])
    sec.add(Table(["layer", "type", "matrix", "spectral norm", "λmax of WWᵀ",
                   "λmax of WWᵀ/n", "stable rank", "α", "α random init",
                   "α̂ (α·log₁₀ λmax of WWᵀ)", "MP KS", "spikes above MP"], rows,
                  numeric=[False, False, False] + [True] * 9,
                  caption="Per weight layer: largest singular value s_max, the largest "
                          "eigenvalue of WWᵀ (= s_max², used by α̂) and of WWᵀ/n (n = the "
                          "larger side of W; the ESD the fits use), stable rank "
                          "(‖W‖²_F/‖W‖²₂), power-law exponent of the eigenvalue tail for the "
                          "trained and random-init weights, WeightWatcher's α̂, the "
                          "Kolmogorov-Smirnov distance of the Marchenko-Pastur fit and the "
                          "eigenvalues beyond its bulk edge."))
    spectra = {}
    rspectra = {}
    for r in trained:
        eig = np.asarray(r.get("eigenvalues") or [], dtype=np.float64)
        if eig.size:
            spectra[r["layer"]] = np.sqrt(np.clip(eig[::-1], 0, None) * r.get("n", 1))
        rr = random.get(r["layer"])
        if rr and rr.get("eigenvalues"):
            e = np.asarray(rr["eigenvalues"], dtype=np.float64)
            rspectra[r["layer"]] = np.sqrt(np.clip(e[::-1], 0, None) * rr.get("n", 1))
    names = [r["layer"] for r in trained]
    if len(spectra) <= MANY_LAYERS:
        sv_figs = [ctx.figure(
            F.singular_value_spectra(spectra, rspectra),
            "Singular values of each layer in decreasing order (log-log); dotted: the same "
            "layer at random initialisation. " + _lift_sentence(spectra, rspectra),
            title="Singular value spectra", height=400)]
    else:
        sv_figs = [
            ctx.figure(
                F.singular_value_summary(names, spectra, rspectra),
                "Largest, median and smallest singular value of every layer by depth "
                "(dashed: random initialisation). " + _lift_sentence(spectra, rspectra),
                title="Singular values by depth", height=400),
            ctx.figure(
                F.singular_value_picker(spectra, rspectra),
                f"The whole spectrum of one layer (pick any of the {len(spectra)} layers in "
                "the menu), in decreasing order on log-log axes; dotted: the same layer at "
                "random initialisation.", title="Singular value spectrum per layer",
                height=400),
        ]
    grid = sv_figs + [
        ctx.figure(
            F.lines_by_layer(names, {"trained": [r.get("alpha") for r in trained],
                                     "random init": [random.get(n, {}).get("alpha")
                                                     for n in names]},
                             ytitle="power-law α", dashed=["random init"],
                             band=(2.0, 6.0, "typical of trained layers")),
            "Power-law exponent α of each layer's eigenvalue tail by depth (gaps: too few "
            "eigenvalues to fit). Smaller α means a heavier tail, i.e. more correlated "
            "structure in the weights.", title="α by depth", height=400),
        ctx.figure(
            F.lines_by_layer(names, {"trained": [r.get("spectral_norm") for r in trained],
                                     "random init": [random.get(n, {}).get("spectral_norm")
                                                     for n in names]},
                             ytitle="spectral norm", dashed=["random init"]),
            "Largest singular value of each layer by depth, trained against random init.",
            title="Spectral norm by depth", height=360),
        ctx.figure(
            F.lines_by_layer(names, {"trained": [r.get("stable_rank") for r in trained],
                                     "random init": [random.get(n, {}).get("stable_rank")
                                                     for n in names]},
                             ytitle="stable rank", dashed=["random init"]),
            "Stable rank (effective number of directions a layer uses) by depth; a drop "
            "below random init means training concentrated the weights on fewer directions.",
            title="Stable rank by depth", height=360),
    ]
    sec.add(Grid(grid))
    with_eig = [r for r in trained if r.get("eigenvalues")]
    if with_eig:
        sec.add(ctx.heading("Empirical spectral densities", "spectral-esd"))
        what = ("Histogram of the eigenvalues of WWᵀ/n (log-log), with the fitted "
                "Marchenko-Pastur law of a random matrix (orange, bulk edge dotted) and the "
                "power-law tail fit (red dashed, α in the corner). Mass to the right of the "
                "MP edge is structure the random model does not explain.")
        if len(with_eig) <= MANY_LAYERS:
            sec.add(ctx.figure(F.esd_panels(with_eig), f"One panel per weight layer (all "
                               f"{len(with_eig)}). " + what, wide=True,
                               title="ESD with Marchenko-Pastur and power-law fits"))
        else:
            sec.add(ctx.figure(F.esd_picker(with_eig), f"Pick any of the {len(with_eig)} "
                               "weight layers in the menu. " + what, wide=True, height=440,
                               title="ESD with Marchenko-Pastur and power-law fits"))
    hgs = data.get("hypergraphs") or {}
    if hgs:
        sec.add(ctx.heading("Class hypergraphs of singular vectors", "spectral-hypergraphs"))
        p = data.get("parameters", {})
        sec.add(Text(
            "For a few convolution layers, each class is a hyperedge over the layer's top "
            "singular vectors that carry its images' energy (" + str(p.get("mode")) +
            " threshold " + str(p.get("threshold")) + "). Classes sharing vectors use the "
            "same directions; separate vectors mean class-specific features."))
        srows = []
        for name, hg in hgs.items():
            s = hg.get("summary", {})
            srows.append([name, fmt(s.get("n_vertices")), fmt(s.get("n_used_vertices")),
                          fmt(s.get("mean_size"), 1), fmt(s.get("mean_jaccard"), 2),
                          fmt(s.get("n_components_s1")), fmt(s.get("n_shared_vertices"))])
        sec.add(Table(["layer", "singular vectors", "used", "mean edge size",
                       "mean Jaccard", "s=1 components", "shared vectors"], srows,
                      numeric=[False] + [True] * 6,
                      caption="Per projected layer: vectors available and used by any class, "
                              "mean number of vectors per class, mean class-pair overlap "
                              "(Jaccard), connected components and vectors shared by many "
                              "classes."))
        for name, hg in hgs.items():
            classes = list(hg.get("classes", []))
            sec.add(Grid([
                ctx.figure(F.hypergraph_drawing(hg),
                           f"Class hypergraph of {name}: classes (squares, top) joined to "
                           "the singular vectors influential for them (dots, bottom, largest "
                           "singular value left; darker = shared by more classes).",
                           title=f"Hypergraph: {name}", height=320),
                ctx.figure(F.heatmap(hg.get("overlaps", []), classes, classes,
                                     colorscale="Blues", zmin=0, zmax=1, colorbar="Jaccard"),
                           f"Overlap (Jaccard index) of the classes' vector sets in {name}; "
                           "dark off-diagonal cells are classes the layer does not tell "
                           "apart by direction.", title=f"Class overlap: {name}", height=320),
            ]))
    op = {k: v for k, v in (data.get("operator") or {}).items() if "operator_spectral_norm" in v}
    if op:
        sec.add(Table(["layer", "input size", "operator norm", "unfolded norm", "ratio"],
                      [[k, shape(v.get("input_size")), fmt(v.get("operator_spectral_norm")),
                        fmt(v.get("unfolded_spectral_norm")), fmt(v.get("norm_ratio"))]
                       for k, v in op.items()],
                      numeric=[False, False, True, True, True],
                      caption="Exact spectral norm of the convolution as an operator on "
                              "images of the size seen (circular padding) next to the norm "
                              "of its unfolded kernel matrix."))
    return sec


register_section(spectral_section)
