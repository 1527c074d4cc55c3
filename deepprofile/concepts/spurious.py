"""Spurious-signal detection (Adebayo et al., ICLR 2022) on a planted ``shapes`` shortcut.

The demo CNN is trained twice on ``shapes``: with the white marker patch planted on one class
(``spurious``: most images of ``spurious_class`` carry it, few others do) and without
(``clean``: the marker appears on every class at the same low rate). Both are evaluated on
one held-out set where half of every class is marked, which gives the ground truth of how
each model behaves: the accuracy on marked vs unmarked images of the OTHER classes (a model
that learned the shortcut calls marked images of other classes ``spurious_class``).

Detector families, each scored on the spurious model (detection) and on the clean one
(false alarm), with rules fixed before measuring:

- ``attribution``: integrated-gradients mass of the spurious class's logit inside the 3x3
  marker patch on marked images of the other classes, as a multiple of the patch's area
  share; detects when the ratio >= ``attribution_ratio`` (default 3);
- ``probe``: the marker concept's probe is decodable (above its shuffled-label control) at
  some layer; it measures whether the information is there, not whether the model uses it;
- ``tcav``: TCAV of the marker toward ``spurious_class`` is significant (p < alpha over >= 10
  random counter-concepts, Bonferroni over the layers) with a score above 0.5 at some layer.
- training-point ranking (TRAK) arrives with the data-attribution issue.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepprofile.results import read_json, write_json

MARKER_SLICE = (slice(1, 4), slice(1, 4))
LAYERS = ("stem", "layer1", "layer2", "layer3")


@dataclass(frozen=True)
class PairConfig:
    """How the spurious/clean pair is trained and evaluated (small: the demo runs it)."""

    n_train: int = 1000
    n_eval: int = 400
    epochs: int = 4
    widths: tuple[int, int, int] = (8, 16, 32)
    lr: float = 0.05
    spurious_class: int = 0
    marker_rate: float = 0.9      # marked share of spurious_class images (spurious model)
    marker_base_rate: float = 0.05  # marked share of the other classes (and all, clean model)
    n_attribution: int = 32
    attribution_ratio: float = 3.0
    alpha: float = 0.05
    n_random: int = 10
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["widths"] = list(self.widths)
        return d


@dataclass(frozen=True)
class ModelBehaviour:
    """Ground truth and every detector's statistic for one model of the pair."""

    name: str
    run_dir: str
    test_accuracy: float
    accuracy_marked_other: float
    accuracy_unmarked_other: float
    spurious_rate_marked_other: float
    spurious_rate_unmarked_other: float
    attribution_share: float
    attribution_ratio: float
    probe_accuracy: dict[str, float]
    probe_shuffled: dict[str, float]
    probe_decodable: dict[str, bool]
    tcav_score: dict[str, float]
    tcav_p: dict[str, float]

    @property
    def shortcut_gap(self) -> float:
        """Accuracy lost on other-class images when the marker is present (ground truth)."""
        return self.accuracy_unmarked_other - self.accuracy_marked_other

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "shortcut_gap": self.shortcut_gap}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelBehaviour:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class SpuriousResult:
    """Per detector family: fires on the spurious model? false alarm on the clean one?"""

    config: dict[str, Any]
    spurious: ModelBehaviour
    clean: ModelBehaviour
    area_share: float
    detection: dict[str, dict[str, bool]]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"config": dict(self.config), "spurious": self.spurious.to_dict(),
                "clean": self.clean.to_dict(), "area_share": self.area_share,
                "detection": {k: dict(v) for k, v in self.detection.items()},
                "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SpuriousResult:
        return cls(dict(d["config"]), ModelBehaviour.from_dict(d["spurious"]),
                   ModelBehaviour.from_dict(d["clean"]), float(d["area_share"]),
                   {k: dict(v) for k, v in d["detection"].items()}, float(d["seconds"]))


def detections(b: ModelBehaviour, cfg: PairConfig) -> dict[str, bool]:
    """Which detector families fire on one model, by the module's fixed rules."""
    return {
        "attribution": bool(b.attribution_ratio >= cfg.attribution_ratio),
        "probe": bool(any(b.probe_decodable.values())),
        "tcav": bool(any(b.tcav_p[layer] < cfg.alpha / max(1, len(b.tcav_p))
                         and b.tcav_score[layer] > 0.5 for layer in b.tcav_p)),
        "behaviour": bool(b.shortcut_gap > 0.1),  # the ground truth, by the same yardstick
    }


def _datasets(cfg: PairConfig, spurious: bool):
    from deepprofile.data import ShapesDataset

    rate = cfg.marker_rate if spurious else cfg.marker_base_rate
    train = ShapesDataset(cfg.n_train, seed=cfg.seed, spurious_class=cfg.spurious_class,
                          marker_rate=rate, marker_base_rate=cfg.marker_base_rate)
    evaluation = ShapesDataset(cfg.n_eval, seed=cfg.seed + 1000,
                               spurious_class=cfg.spurious_class, marker_rate=0.5,
                               marker_base_rate=0.5)
    return train, evaluation


def train_model(cfg: PairConfig, spurious: bool, out: Path, device: str | torch.device = "cpu",
                quiet: bool = True) -> Path:
    """Train one model of the pair into ``out`` (skipped when a finished identical run exists)."""
    from deepprofile.models.train import TrainConfig, train

    rate = cfg.marker_rate if spurious else cfg.marker_base_rate
    tcfg = TrainConfig(arch="small_resnet", arch_kwargs={"in_channels": 3,
                                                         "widths": list(cfg.widths)},
                       dataset="shapes", dataset_params={
                           "n": cfg.n_train, "seed": cfg.seed,
                           "spurious_class": cfg.spurious_class, "marker_rate": rate,
                           "marker_base_rate": cfg.marker_base_rate},
                       epochs=cfg.epochs, lr=cfg.lr, seed=cfg.seed, n_checkpoints=1)
    final, log_path = out / "final.pt", out / "train_log.json"
    if final.exists() and log_path.exists():
        log = read_json(log_path)
        if log.get("finished") and log.get("config") == tcfg.to_dict():
            return final
    train_set, eval_set = _datasets(cfg, spurious)
    result = train(tcfg, out, train_set=train_set, test_set=eval_set, device=device, quiet=quiet)
    return Path(result.final_checkpoint)


def marker_attribution_share(model: torch.nn.Module, images: torch.Tensor, target: int,
                             seed: int = 0) -> float:
    """Share of |integrated gradients| mass (summed over channels) inside the marker patch."""
    from deepprofile.attribution import attribute

    maps = attribute(model, images, method="integrated_gradients", target=int(target),
                     seed=seed).attributions
    mass = np.abs(maps).sum(axis=1)  # (n, H, W)
    inside = mass[:, MARKER_SLICE[0], MARKER_SLICE[1]].sum(axis=(1, 2))
    total = mass.sum(axis=(1, 2))
    return float(np.mean(inside / np.maximum(total, 1e-12)))


def evaluate_model(name: str, checkpoint: Path, run_dir: Path, cfg: PairConfig, *,
                   device: str | torch.device = "cpu", quiet: bool = True,
                   concept_families: tuple[str, ...] = ("marker",),
                   echo: Callable[[str], None] | None = None) -> ModelBehaviour:
    """Capture, probe, TCAV and attribute one model of the pair on the shared eval set."""
    from deepprofile.concepts.pipeline import run_concepts
    from deepprofile.concepts.sets import shapes_concepts, shapes_table
    from deepprofile.models import load_model
    from deepprofile.workflow import capture_run

    model, info = load_model(checkpoint, device=device)
    _, eval_set = _datasets(cfg, spurious=True)
    _, store = capture_run(model, eval_set, run_dir, list(LAYERS), reductions="mean",
                           model_info=info.to_dict(), checkpoint=str(checkpoint),
                           device=device, seed=cfg.seed, overwrite=True, quiet=quiet,
                           extra={"pair": name})
    table = shapes_table(store)
    labels, preds = table["label"], store.predictions
    marked = table["marker"].astype(bool)
    other = labels != cfg.spurious_class
    correct = preds == labels

    def mean(a: np.ndarray) -> float:
        return float(a.mean()) if a.size else float("nan")

    concepts = shapes_concepts(store, include=concept_families)
    result = run_concepts(run_dir, concepts, model=model, dataset=eval_set,
                          tcav_concepts=["marker"], tcav_classes=[cfg.spurious_class],
                          n_random=cfg.n_random, alpha=cfg.alpha, seed=cfg.seed,
                          device=str(device), echo=echo,
                          links_options={"attribution_concepts": ["marker"],
                                         "topology_concepts": ["marker"]})
    marker = result.profile("marker")
    tcav = {s.layer: s for s in result.tcav.scores} if result.tcav else {}
    rows = np.flatnonzero(marked & other)[: cfg.n_attribution]
    images = torch.stack([eval_set[int(store.indices[r])][0] for r in rows])
    share = marker_attribution_share(model, images.to(device), cfg.spurious_class, cfg.seed)
    area = (3 * 3) / float(images.shape[-1] * images.shape[-2])
    return ModelBehaviour(
        name=name, run_dir=str(run_dir), test_accuracy=float(store.accuracy),
        accuracy_marked_other=mean(correct[marked & other]),
        accuracy_unmarked_other=mean(correct[~marked & other]),
        spurious_rate_marked_other=mean(preds[marked & other] == cfg.spurious_class),
        spurious_rate_unmarked_other=mean(preds[~marked & other] == cfg.spurious_class),
        attribution_share=share, attribution_ratio=share / area,
        probe_accuracy={lp.layer: lp.accuracy for lp in marker.layers},
        probe_shuffled={lp.layer: lp.shuffled_accuracy for lp in marker.layers},
        probe_decodable={lp.layer: lp.decodable for lp in marker.layers},
        tcav_score={k: s.score for k, s in tcav.items()},
        tcav_p={k: s.p_value for k, s in tcav.items()},
    )


def run_spurious(out_dir: str | Path, config: PairConfig | None = None, *,
                 device: str | torch.device = "cpu", quiet: bool = True,
                 concept_families: tuple[str, ...] = ("marker",),
                 echo: Callable[[str], None] | None = None) -> SpuriousResult:
    """Train (if needed) and evaluate the pair under ``out_dir``; write
    ``out_dir/results/spurious.json`` and the same file into both run folders."""
    cfg = config or PairConfig()
    out = Path(out_dir)
    say = echo or (lambda _t: None)
    t0 = time.perf_counter()
    behaviours = {}
    for name, spurious in (("spurious", True), ("clean", False)):
        t = time.perf_counter()
        ckpt = train_model(cfg, spurious, out / "models" / name, device=device, quiet=quiet)
        say(f"  {name} model: {ckpt} ({time.perf_counter() - t:.1f} s)")
        behaviours[name] = evaluate_model(name, ckpt, out / name, cfg, device=device,
                                          quiet=quiet, concept_families=concept_families,
                                          echo=echo)
    area = 9.0 / (32 * 32)
    result = SpuriousResult(
        cfg.to_dict(), behaviours["spurious"], behaviours["clean"], area,
        {family: {"spurious": detections(behaviours["spurious"], cfg)[family],
                  "clean": detections(behaviours["clean"], cfg)[family]}
         for family in ("attribution", "probe", "tcav", "behaviour")},
        time.perf_counter() - t0)
    write_json(out / "results" / "spurious.json", result.to_dict())
    for name in ("spurious", "clean"):
        write_json(out / name / "results" / "spurious.json", result.to_dict())
    return result


def summarize_spurious(result: SpuriousResult) -> str:
    """The detection table as text."""
    s, c = result.spurious, result.clean
    lines = [
        "spurious-signal detection (marker planted on class "
        f"{result.config['spurious_class']}), spurious vs clean model:",
        f"  ground truth: other-class accuracy marked/unmarked {s.accuracy_marked_other:.3f}/"
        f"{s.accuracy_unmarked_other:.3f} vs {c.accuracy_marked_other:.3f}/"
        f"{c.accuracy_unmarked_other:.3f}",
        f"  attribution: marker share {s.attribution_share:.3f} ({s.attribution_ratio:.1f}x "
        f"area) vs {c.attribution_share:.3f} ({c.attribution_ratio:.1f}x)",
        f"  probe: best marker accuracy {max(s.probe_accuracy.values()):.3f} vs "
        f"{max(c.probe_accuracy.values()):.3f}",
    ]
    if s.tcav_score:
        ls = min(s.tcav_p, key=s.tcav_p.get)
        lc = min(c.tcav_p, key=c.tcav_p.get) if c.tcav_p else None
        lines.append(f"  TCAV toward the class: {s.tcav_score[ls]:.2f} (p={s.tcav_p[ls]:.2g}, "
                     f"{ls})" + (f" vs {c.tcav_score[lc]:.2f} (p={c.tcav_p[lc]:.2g}, {lc})"
                                  if lc else ""))
    for family, d in result.detection.items():
        lines.append(f"  {family:11s} detects: spurious {'yes' if d['spurious'] else 'no'}, "
                     f"clean (false alarm) {'yes' if d['clean'] else 'no'}")
    return "\n".join(lines)


__all__ = ["ModelBehaviour", "PairConfig", "SpuriousResult", "detections", "evaluate_model",
           "marker_attribution_share", "run_spurious", "summarize_spurious",
           "train_model"]
