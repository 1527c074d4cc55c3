"""``run_concepts``: concept probes per layer, controls, TCAV and links -> results/concepts.json.

Reads the run's store (and, for the random-init control, folder concepts and TCAV, its
model and dataset), writes ``RUN_DIR/concepts/concept_set.*``, ``RUN_DIR/concepts/probes.npz``
(the L2 probe of every concept at every layer, usable through ``ConceptProbe.as_module``) and
``RUN_DIR/results/concepts.json``. When :mod:`deepprofile.concepts.links` is installed its
``run_concept_links`` adds where each concept lives in the mapper graphs, diagrams, spectra and
attributions under the key ``structures``.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepprofile.capture.store import ActivationStore
from deepprofile.concepts.analysis import ConceptProfile, probe_layers
from deepprofile.concepts.probes import ConceptProbe, save_probes
from deepprofile.concepts.sets import ConceptSet, shapes_concepts
from deepprofile.concepts.tcav import MIN_RANDOM, TCAVResult
from deepprofile.errors import ConceptDataError, DeepProfileError
from deepprofile.rundir import RunDir

RESULT_NAME = "concepts"


@dataclass(frozen=True)
class ConceptsResult:
    """Which layer knows which concept (probes + controls), TCAV, and the structure links."""

    run: str
    model: str
    dataset: dict[str, Any]
    store_name: str
    layers: tuple[str, ...]
    reductions: dict[str, str]
    concepts: tuple[ConceptProfile, ...]
    tcav: TCAVResult | None
    structures: dict[str, Any] | None
    notes: tuple[str, ...]
    params: dict[str, Any]
    seconds: float
    class_names: tuple[str, ...] = field(default=())

    def profile(self, concept: str) -> ConceptProfile:
        for p in self.concepts:
            if p.concept == concept:
                return p
        from deepprofile.concepts.sets import unknown_concept_message
        from deepprofile.errors import UnknownConceptError

        raise UnknownConceptError(unknown_concept_message(concept, [
            p.concept for p in self.concepts]))

    def accuracy_matrix(self, kind: str = "accuracy") -> np.ndarray:
        """(concepts x layers) of a LayerProbe field: accuracy, shuffled_accuracy, ..."""
        return np.array([[getattr(p.layer(layer), kind) if getattr(
            p.layer(layer), kind) is not None else np.nan for layer in self.layers]
            for p in self.concepts], dtype=float)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run, "model": self.model, "dataset": dict(self.dataset),
            "store": self.store_name, "store_name": self.store_name,
            "layers": list(self.layers),
            "reductions": dict(self.reductions),
            "concepts": [p.to_dict() for p in self.concepts],
            "tcav": None if self.tcav is None else self.tcav.to_dict(),
            "structures": self.structures, "notes": list(self.notes),
            "params": dict(self.params), "seconds": self.seconds,
            "class_names": list(self.class_names),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConceptsResult:
        return cls(d["run"], d["model"], dict(d["dataset"]), d["store_name"], tuple(d["layers"]),
                   dict(d["reductions"]),
                   tuple(ConceptProfile.from_dict(p) for p in d["concepts"]),
                   None if d.get("tcav") is None else TCAVResult.from_dict(d["tcav"]),
                   d.get("structures"), tuple(d.get("notes", ())), dict(d["params"]),
                   float(d["seconds"]), tuple(d.get("class_names", ())))


def load_concepts(run_dir: str | Path) -> ConceptsResult:
    return ConceptsResult.from_dict(RunDir(run_dir).read_result(RESULT_NAME))


def _locations(store: Any, layer: str, acts: np.ndarray, weight: np.ndarray, bias: float,
               y: np.ndarray) -> list[list[float]] | None:
    """For a ``positions:k`` store: mean probe logit per spatial cell, positives - negatives."""
    from deepprofile.capture.reducers import parse_reduction, sample_positions

    red = parse_reduction(store.reduction(layer))
    shape = store.output_shape(layer)
    if red.kind != "positions" or len(shape) != 3:
        return None
    h, w = shape[1], shape[2]
    seed = int(store.config.get("seed", 0))
    logits = acts @ weight + bias  # (n, k)
    sums = np.zeros((2, h * w))
    counts = np.zeros((2, h * w))
    for row, index in enumerate(store.indices):
        cells = sample_positions(seed, int(index), h * w, red.k)
        side = int(y[row])
        np.add.at(sums[side], cells, logits[row])
        np.add.at(counts[side], cells, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
    diff = (mean[1] - mean[0]).reshape(h, w)
    return [[None if not np.isfinite(v) else float(v) for v in r] for r in diff]


def _load_model(run_dir: Path, device: str, notes: list[str]) -> tuple[Any, Any]:
    from deepprofile.attribution.pipeline import load_run_inputs

    try:
        model, _, dataset, _ = load_run_inputs(run_dir, device=device)
        return model, dataset
    except DeepProfileError as exc:
        notes.append(f"model not loaded ({exc}); random-init control and TCAV skipped")
        return None, None


def run_concepts(
    run_dir: str | Path,
    concept_set: ConceptSet | None = None,
    *,
    model: torch.nn.Module | None = None,
    dataset: Any = None,
    store_name: str = RunDir.STORE,
    layers: Sequence[str] | None = None,
    baseline: bool = True,
    tcav: bool = True,
    tcav_concepts: Sequence[str] | None = None,
    tcav_layers: Sequence[str] | None = None,
    tcav_classes: Sequence[int] | None = None,
    n_random: int = MIN_RANDOM,
    n_tcav_images: int = 30,
    n_tcav_inputs: int = 30,
    alpha: float = 0.05,
    C: float = 1.0,
    n_splits: int = 5,
    n_shuffles: int = 5,
    margin: float = 0.05,
    links: bool = True,
    links_options: Mapping[str, Any] | None = None,
    device: str = "cpu",
    seed: int = 0,
    quiet: bool = False,
    echo: Callable[[str], None] | None = None,
) -> ConceptsResult:
    """Probe every concept at every stored layer, with controls, TCAV and structure links.

    ``concept_set`` defaults to the shapes ground truth when the run was captured on
    ``shapes``. ``model``/``dataset`` default to the run's checkpoint and captured dataset.
    ``links_options`` go to ``deepprofile.concepts.links.run_concept_links`` (its
    ``DEFAULTS``: ``parts``, ``topology_concepts``, ``attribution_concepts``, ...).
    """
    t0 = time.perf_counter()
    say = echo or (lambda _text: None)
    rd = RunDir(run_dir)
    store = ActivationStore.open(rd.path / store_name)
    if concept_set is None:
        concept_set = shapes_concepts(store)
    if concept_set.names and concept_set.n_samples != store.n_samples:
        raise ConceptDataError(
            f"The concept set covers {concept_set.n_samples} samples but the store has "
            f"{store.n_samples} rows; build concepts from this run's store (one value per row).")
    if not concept_set.all_names:
        raise ConceptDataError("The concept set is empty; give at least one --concept.")
    layer_names = list(layers) if layers else store.layers
    for layer in layer_names:
        store.reduction(layer)  # unknown layer -> UnknownLayerError with close matches
    reductions = {layer: store.reduction(layer) for layer in layer_names}
    notes: list[str] = []
    if model is None and (baseline or tcav or concept_set.folders):
        model, loaded = _load_model(rd.path, device, notes)
        dataset = dataset if dataset is not None else loaded
    if dataset is None and (tcav or concept_set.folders):
        from deepprofile.data import dataset_from_spec

        try:
            dataset = dataset_from_spec(store.metadata["dataset"])
        except DeepProfileError as exc:
            notes.append(f"dataset not rebuilt ({exc})")
    if concept_set.folders and (model is None or dataset is None):
        raise ConceptDataError(
            "Folder concepts need the run's model and images to capture them; capture the run "
            "from a checkpoint file (or pass model= and dataset= from Python).")
    capture_seed = int(store.config.get("seed", seed))
    raw = {layer: store.layer(layer) for layer in layer_names}
    acts = _features(raw, reductions)
    base_model = None
    base_acts = None
    if baseline and model is not None:
        from deepprofile.spectral.rmt import random_init_copy

        base_model = random_init_copy(model, seed=seed)
        say("  capturing the random-init baseline")
        images = _images(dataset, store.indices)
        base_acts = _features(_capture(base_model, images, layer_names, reductions,
                                       store.indices, capture_seed, device), reductions)
    elif baseline:
        notes.append("random-init control skipped (no model)")

    profiles: list[ConceptProfile] = []
    probes: list[ConceptProbe] = []
    common = dict(C=C, n_splits=n_splits, n_shuffles=n_shuffles, margin=margin, seed=seed)
    for name in concept_set.names:
        y = concept_set.mask(name)
        say(f"  probing {name} ({int(y.sum())}/{len(y)} positive)")
        profile, fits = probe_layers(acts, y, concept=name, baseline=base_acts,
                                     source=concept_set.sources.get(name, {}), **common)
        locs = {layer: _locations(store, layer, raw[layer], fits[layer].weight,
                                  fits[layer].bias, y) for layer in layer_names
                if str(reductions[layer]).startswith("positions")}
        if locs:
            profile = _with_locations(profile, locs)
        profiles.append(profile)
        probes += [ConceptProbe.from_fit(fits[layer], layer=layer, concept=name,
                                         reduction=reductions[layer], store_name=store_name)
                   for layer in layer_names]
    folder_images: dict[str, torch.Tensor] = {}
    for folder in concept_set.folders:
        profile, fits, pos = _folder_profile(folder, model, base_model, dataset, store,
                                             layer_names, reductions, capture_seed, device,
                                             concept_set.sources.get(folder.name, {}), common,
                                             seed)
        folder_images[folder.name] = pos
        profiles.append(profile)
        probes += [ConceptProbe.from_fit(fits[layer], layer=layer, concept=folder.name,
                                         reduction=reductions[layer], store_name=store_name,
                                         source="folder") for layer in layer_names]
    concept_set.save(rd.path)
    save_probes(rd.path, probes)

    tcav_result = None
    if tcav and model is not None and dataset is not None:
        tcav_result = _run_tcav(model, dataset, store, concept_set, folder_images,
                                tcav_concepts, tcav_layers or layer_names, tcav_classes,
                                n_random, n_tcav_images, n_tcav_inputs, alpha, seed, say)
    elif tcav:
        notes.append("TCAV skipped (no model or dataset)")

    structures = None
    if links:
        opts = {"model": model, "dataset": dataset, "device": device, "quiet": quiet,
                **dict(links_options or {})}
        structures = _links(rd.path, concept_set, probes, seed, notes, opts)
    meta = store.metadata
    result = ConceptsResult(
        run=str(rd.path), model=str(meta.get("model")), dataset=dict(meta.get("dataset") or {}),
        store_name=store_name, layers=tuple(layer_names), reductions=reductions,
        concepts=tuple(profiles), tcav=tcav_result, structures=structures, notes=tuple(notes),
        params={"C": C, "n_splits": n_splits, "n_shuffles": n_shuffles, "margin": margin,
                "baseline": baseline, "n_random": n_random, "n_tcav_images": n_tcav_images,
                "n_tcav_inputs": n_tcav_inputs, "alpha": alpha, "seed": seed},
        seconds=time.perf_counter() - t0,
        class_names=tuple(str(c) for c in meta.get("class_names") or ()),
    )
    rd.write_result(RESULT_NAME, result)
    return result


def _features(arrays: Mapping[str, np.ndarray], reductions: Mapping[str, str]
              ) -> dict[str, np.ndarray]:
    """What probes see: ``positions:k`` clouds ``(n, k, C)`` averaged over their k positions
    (a linear probe on the mean equals the mean of the probe over positions); every other
    reduction as stored."""
    return {layer: (arr.mean(axis=1) if str(reductions[layer]).startswith("positions")
                    else arr) for layer, arr in arrays.items()}


def _images(dataset: Any, indices: np.ndarray) -> torch.Tensor:
    from deepprofile.concepts.capture import dataset_images

    return dataset_images(dataset, [int(i) for i in indices])


def _capture(model: torch.nn.Module, images: torch.Tensor, layers: Sequence[str],
             reductions: Mapping[str, str], indices: np.ndarray | None, seed: int,
             device: str) -> dict[str, np.ndarray]:
    from deepprofile.concepts.capture import capture_arrays, model_device

    del device  # the model stays where it is; images follow it
    return capture_arrays(model, images, layers, reductions, sample_indices=indices, seed=seed,
                          device=model_device(model))


def _with_locations(profile: ConceptProfile, locs: Mapping[str, Any]) -> ConceptProfile:
    from dataclasses import replace

    return replace(profile, layers=tuple(replace(lp, location=locs.get(lp.layer))
                                         for lp in profile.layers))


def _folder_profile(folder: Any, model: Any, base_model: Any, dataset: Any, store: Any,
                    layers: Sequence[str], reductions: Mapping[str, str], capture_seed: int,
                    device: str, source: Mapping[str, Any], common: Mapping[str, Any],
                    seed: int) -> tuple[ConceptProfile, dict, torch.Tensor]:
    """Capture a folder concept's positives and negatives and probe them layer by layer."""
    from deepprofile.concepts.capture import load_folder_images

    like = torch.as_tensor(dataset[int(store.indices[0])][0])
    spec = store.metadata.get("dataset") or {}
    pos = load_folder_images(folder.positives, like, spec)
    if folder.negatives:
        neg = load_folder_images(folder.negatives, like, spec)
    else:
        rng = np.random.default_rng([seed, 31])
        rows = rng.choice(store.n_samples, min(len(pos), store.n_samples), replace=False)
        neg = _images(dataset, store.indices[np.sort(rows)])
    images = torch.cat([pos, neg])
    y = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    # positions:k draws use sample ids; folder images get ids past the dataset's range
    ids = np.arange(len(images)) + int(np.max(store.indices)) + 1
    acts = _features(_capture(model, images, layers, reductions, ids, capture_seed, device),
                     reductions)
    base = (_features(_capture(base_model, images, layers, reductions, ids, capture_seed,
                               device), reductions) if base_model is not None else None)
    profile, fits = probe_layers(acts, y, concept=folder.name, baseline=base, source=source,
                                 **common)
    return profile, fits, pos


def _run_tcav(model: Any, dataset: Any, store: Any, concept_set: ConceptSet,
              folder_images: Mapping[str, torch.Tensor], concepts: Sequence[str] | None,
              layers: Sequence[str], classes: Sequence[int] | None, n_random: int,
              n_images: int, n_inputs: int, alpha: float, seed: int,
              say: Callable[[str], None]) -> TCAVResult:
    from deepprofile.concepts.tcav import tcav_scores

    names = list(concepts) if concepts is not None else list(concept_set.all_names)
    for name in names:
        if name not in concept_set.all_names:
            concept_set.mask(name)  # raises UnknownConceptError with close matches
    rng = np.random.default_rng([seed, 17])
    images: dict[str, torch.Tensor] = {}
    for name in names:
        if name in folder_images:
            images[name] = folder_images[name][:n_images]
            continue
        rows = np.flatnonzero(concept_set.mask(name))
        rows = rng.choice(rows, min(n_images, len(rows)), replace=False)
        images[name] = _images(dataset, store.indices[np.sort(rows)])
    pool_rows = rng.choice(store.n_samples, min(store.n_samples, 20 * n_images), replace=False)
    pool = _images(dataset, store.indices[np.sort(pool_rows)])
    labels = store.labels
    classes = list(classes) if classes is not None else sorted(set(int(v) for v in labels))
    inputs = {}
    for c in classes:
        rows = np.flatnonzero(labels == c)
        if len(rows):
            rows = rng.choice(rows, min(n_inputs, len(rows)), replace=False)
            inputs[int(c)] = _images(dataset, store.indices[np.sort(rows)])
    say(f"  TCAV: {len(names)} concept(s) x {len(layers)} layer(s) x {len(inputs)} class(es), "
        f"{n_random} random counter-concepts")
    m = min([len(v) for v in images.values()] + [n_images])
    return tcav_scores(model, layers, images, pool, inputs, n_random=n_random,
                       n_concept_images=m, alpha=alpha, seed=seed)


def _links(run_dir: Path, concept_set: ConceptSet, probes: Sequence[ConceptProbe], seed: int,
           notes: list[str], options: Mapping[str, Any]) -> dict[str, Any] | None:
    """Call ``deepprofile.concepts.links.run_concept_links`` when that module exists."""
    try:
        module = importlib.import_module("deepprofile.concepts.links")
    except ModuleNotFoundError as exc:
        if exc.name in ("deepprofile.concepts.links",):
            notes.append("structure links skipped: deepprofile.concepts.links is not installed")
            return None
        raise
    return module.run_concept_links(run_dir, concept_set, list(probes), seed=seed,
                                    **{k: v for k, v in options.items() if v is not None})


def summarize_concepts(result: ConceptsResult) -> str:
    """A few lines for the terminal: per concept, first decodable layer and best accuracy."""
    lines = [f"concepts: {len(result.concepts)} concept(s) x {len(result.layers)} layer(s) "
             f"({result.seconds:.1f} s)"]
    for p in result.concepts:
        best = max(p.layers, key=lambda lp: lp.accuracy)
        lines.append(
            f"  {p.concept:18s} {'known' if p.known else 'not decodable':13s} first "
            f"{p.first_layer or '-':8s} best {best.layer} {best.accuracy:.3f} "
            f"(shuffled {best.shuffled_accuracy:.3f}"
            + (f", random init {best.baseline_accuracy:.3f}" if best.baseline_accuracy
               is not None else "") + ")")
    if result.tcav is not None:
        sig = [s for s in result.tcav.scores if s.significant]
        lines.append(f"  TCAV: {len(sig)}/{len(result.tcav.scores)} (concept, layer, class) "
                     f"significant at alpha={result.tcav.alpha}")
    for note in result.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)
