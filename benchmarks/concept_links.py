"""Benchmark: the concept links (mapper, topology, spectra, attributions), time and figures.

Trains the demo SmallResNet (widths 8/16/32) on ``shapes`` with the marker planted on the
circles (or reuses ``--out/model/final.pt``), captures ``stem``, ``layer1``, ``layer2``,
``layer3`` (mean-pooled) on ``--n`` test images, fits the L2 probe of every ground-truth
concept at every layer, runs mapper and spectral, then :func:`run_concept_links` with its
defaults, and prints one JSON object: seconds per part (the mapper part includes redrawing
the mapper pages with a colour per concept), and the figures the docs quote: marker and
shape attribution mass in the ground-truth region against its area, concept purity against
its shuffled baseline, topology p-values and the concept-selective singular vectors.

    python benchmarks/concept_links.py [--n 400] [--out /tmp/concept_links] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", default="/tmp/concept_links")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from deepprofile.concepts.links import run_concept_links
    from deepprofile.concepts.probes import ConceptProbe, fit_probe
    from deepprofile.concepts.sets import shapes_concepts
    from deepprofile.data import load_dataset
    from deepprofile.mapper.pipeline import run_mapper
    from deepprofile.models import load_model
    from deepprofile.models.train import TrainConfig, train
    from deepprofile.spectral.pipeline import run_spectral
    from deepprofile.workflow import capture_run

    out = Path(args.out)
    layers = ["stem", "layer1", "layer2", "layer3"]
    config = TrainConfig(arch_kwargs={"in_channels": 3, "widths": (8, 16, 32)},
                         dataset="shapes", dataset_params={"n": args.n_train, "seed": 0},
                         epochs=args.epochs, n_checkpoints=1)
    final = out / "model" / "final.pt"
    if not final.exists():
        train(config, final.parent, quiet=True)
    model, _ = load_model(final)
    test = load_dataset("shapes", split="test", n=args.n, seed=0)
    run, store = capture_run(model, test, out / "run", layers, checkpoint=str(final),
                             overwrite=True, quiet=True)
    concepts = shapes_concepts(store)
    t0 = time.perf_counter()
    probes = [ConceptProbe.from_fit(fit_probe(store.layer(layer), concepts.mask(name)),
                                    layer=layer, concept=name, reduction="mean",
                                    store_name="activations.zarr")
              for layer in layers for name in concepts.names]
    probe_s = time.perf_counter() - t0
    run_mapper(run.path, layers=layers, quiet=True)
    run_spectral(model, run.path, layers=layers, store=store, compare_random_init=False,
                 quiet=True)
    t0 = time.perf_counter()
    links = run_concept_links(run.path, concepts, probes, seed=0)
    total = time.perf_counter() - t0

    mapper = links["mapper"]
    purity = {name: {"purity": mapper["purity_by_depth"][name],
                     "baseline": [mapper["layers"][lay]["purity"][name]["baseline"]["mean"]
                                  for lay in mapper["layer_order"]]}
              for name in ("marker", "shape:circle", "colour:red", "size:large")}
    maps = {m["concept"]: {"layer": m["layer"], **m.get("region_share", {})}
            for m in links["attributions"]["maps"]}
    topology = {f"{t['concept']}@{t['layer']}": t["p_value"]
                for t in links["topology"]["tests"] if t["concept"] in ("marker", "shape:circle")}
    selective = {f"{c}@{layer}": a["selective"]
                 for layer, d in links["spectra"]["layers"].items()
                 for c, a in d["alignments"].items() if a["selective"]}
    print(json.dumps({
        "n_images": args.n, "n_concepts": len(concepts.names), "layers": layers,
        "n_probes": len(probes), "probe_fit_s": round(probe_s, 2),
        "links_total_s": round(total, 2), "links_part_s": links["seconds"],
        "threads": args.threads, "region_share": maps, "purity": purity,
        "topology_p": topology, "selective_vectors": selective,
        "n_alignments": sum(len(d["alignments"]) for d in links["spectra"]["layers"].values()),
    }, indent=1, default=float))


if __name__ == "__main__":
    main()
