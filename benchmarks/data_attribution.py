"""Data attribution: LDS of TRAK vs captum's TracInCP vs random scores, a removal check,
and featurisation speed / peak memory against traker used directly.

Demo setting (small enough to retrain dozens of times on a CPU): scikit-learn's
digits at 8x8 (1,257 training images), an MLP 64-32-10 trained with mini-batch SGD.
TRAK and TracInCP use the same checkpoints (``--seeds`` models x 2 checkpoints each).

- LDS: ``--m`` random training subsets at alpha = 0.5, one retrain each, the margin of
  ``--targets`` test images; Spearman per target between the scores' prediction and
  the retrained margins, averaged.
- Removal: the ``--remove`` training images TRAK ranks most helpful for the mean
  margin of the test images of one class, against as many random ones; retrain
  ``--removal-seeds`` times; the class's mean test margin and accuracy drop.
- Speed: featurising ``--speed-images`` digits (32x32) for one checkpoint of the demo
  CNN (SmallResNet, random init), deepprofile (Zarr store) vs ``TRAKer.featurize``
  (fresh save_dir), the same images through the same DataLoader, proj_dim 64. The
  figure is the paired in-process test (``--speed-rounds`` alternating rounds, order
  swapped each round, one torch thread, CPU time of the process, median of the
  per-round ratios, every ratio printed); then each
  side in its own process (best of ``--speed-repeats``, traker's default projector and
  ours) for the peak RSS growth of the featurisation.

``--model small_resnet`` runs the LDS part on the demo CNN instead: deepprofile's
SmallResNet on the bundled digits at 32x32, trained with the demo's recipe
(``deepprofile.demo.demo_config``: ``deepprofile.models.train.train``, 8 epochs, 4 kept
checkpoints; ``--epochs`` overrides), ``--seeds`` models; every LDS subset is retrained
with the same recipe. TRAK over all kept checkpoints, over the first seed's only and
over its final checkpoint only, TracInCP on the same checkpoints (``--no-tracin`` skips
it) and random scores.

TRAK rows use ``--ridge`` (default: the engine's, 1 x the mean eigenvalue of ``X^T X``);
rows ending in ``_ridge0`` are the same scores without the ridge (``TRAKer``'s formula).

Concept parts (the demo CNN; no digits MLP is trained when only these run):
``--parts concept_removal`` is Konz et al.'s removal check on the ``shapes`` marker
probed at ``--concept-layer`` (plain TRAK and TRAK with a ridge of ``--lambda-rel`` times
the mean diagonal of X^T X, against random and marked images);
``--parts concept_removal_digits`` the same for one digit class (``--digit``);
``--parts shapes_detector`` the training-point-ranking detector, spurious vs clean model;
``--parts concept_removal_odd`` the earlier "odd digit" check on the MLP.

Prints one JSON object.

    python benchmarks/data_attribution.py [--m 32] [--targets 50] [--seeds 3]
    python benchmarks/data_attribution.py --model small_resnet --m 24 --targets 40 --seeds 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset

from deepprofile.data import DigitsDataset
from deepprofile.data_attribution.baselines import random_scores, tracin_scores
from deepprofile.data_attribution.evaluation import (
    lds,
    margins,
    random_subsets,
    removal_check,
    subset_outputs,
)
from deepprofile.data_attribution.outputs import MarginOutput
from deepprofile.data_attribution.store import FeatureStore
from deepprofile.data_attribution.trak import DEFAULT_RIDGE, TrakEnsemble, checkpoint_infos
from deepprofile.models.registry import register_model, save_checkpoint

EPOCHS, KEEP = 20, (10, 20)


class DigitsMLP(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(),
                                 nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


register_model("bench_digits_mlp", DigitsMLP)


def train_mlp(train: DigitsDataset, indices: np.ndarray, seed: int,
              save_dir: Path | None = None) -> nn.Module:
    """Mini-batch SGD (batch 64, momentum 0.9, lr 0.05, weight decay 5e-4), seeded."""
    torch.manual_seed(seed)
    model = DigitsMLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x, y = train.images[indices], train.targets[indices]
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(1, EPOCHS + 1):
        for batch in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
        if save_dir is not None and epoch in KEEP:
            save_checkpoint(save_dir / f"epoch_{epoch:03d}.pt", model, "bench_digits_mlp", {},
                            num_classes=10, epoch=epoch, seed=seed)
    return model.eval()


class _PeakRSS:
    """Peak resident memory of this process while the block runs (polls /proc every 5 ms)."""

    def __enter__(self) -> _PeakRSS:
        import threading

        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize()

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def _traker_featurize(model: nn.Module, ckpt: Path, train: Subset, proj_dim: int,
                      save_dir: Path, batch_size: int, projector: object = None) -> None:
    """``TRAKer.featurize`` used directly, batch by batch from a DataLoader over ``train``."""
    import logging

    from torch.utils.data import DataLoader
    from trak import TRAKer

    from deepprofile.data_attribution.trak import load_state

    traker = TRAKer(model=model, task="image_classification", train_set_size=len(train),
                    save_dir=str(save_dir), device="cpu", use_half_precision=False,
                    proj_dim=proj_dim, projector=projector, logging_level=logging.ERROR)
    traker.load_checkpoint(load_state(ckpt), model_id=0)
    for x, y in DataLoader(train, batch_size=batch_size):
        traker.featurize(batch=(x, torch.as_tensor(y).long()), num_samples=len(y))


def _ours_featurize(model: nn.Module, ckpt: Path, train: Subset, proj_dim: int,
                    store: Path, batch_size: int) -> None:
    """deepprofile's featurisation of one checkpoint into a fresh Zarr feature store."""
    infos = checkpoint_infos([ckpt])
    ens = TrakEnsemble(model, infos, train, FeatureStore(store), proj_dim=proj_dim,
                       batch_size=batch_size, quiet=True)
    ens.features(infos[0], None)


def _featurise_job(kind: str, ckpt: str, proj_dim: int, n_images: int,
                   queue: mp.Queue) -> None:
    """One featurisation in a fresh process: images/s and peak RSS growth (MB)."""
    from deepprofile.data_attribution.trak import make_projector
    from deepprofile.models import load_model

    train = Subset(DigitsDataset("train", size=32), range(n_images))
    model, _ = load_model(ckpt)
    tmp = Path(tempfile.mkdtemp())
    n_params = sum(p.numel() for p in model.parameters())
    peak = _PeakRSS().__enter__()
    t = time.perf_counter()
    if kind == "deepprofile":
        _ours_featurize(model, Path(ckpt), train, proj_dim, tmp / "f.zarr", 32)
    else:
        projector = (make_projector(n_params, proj_dim, 0, 0, torch.device("cpu"))
                     if kind == "traker_same_projector" else None)
        _traker_featurize(model, Path(ckpt), train, proj_dim, tmp / "traker", 32, projector)
    seconds = time.perf_counter() - t
    peak.__exit__()
    queue.put({"images_per_s": n_images / seconds, "seconds": seconds,
               "peak_rss_growth_mb": (peak.peak - peak.base) / 2**20})


def featurise_speed(ckpt: Path, proj_dim: int, n_images: int, repeats: int) -> dict:
    """Each featurisation in a fresh process (interleaved): best images/s and the peak RSS
    growth of the featurisation (model copy, projector matrix, per-sample gradients, store)."""
    ctx = mp.get_context("spawn")
    out: dict[str, list[dict]] = {}
    for _ in range(repeats):  # interleaved so load changes hit every path alike
        for kind in ("deepprofile", "traker_default", "traker_same_projector"):
            queue = ctx.Queue()
            proc = ctx.Process(target=_featurise_job,
                               args=(kind, str(ckpt), proj_dim, n_images, queue))
            proc.start()
            out.setdefault(kind, []).append(queue.get())
            proc.join()
    best = {k: max(v, key=lambda r: r["images_per_s"]) for k, v in out.items()}
    return {**best,
            "peak_rss_growth_mb_all": {k: [round(r["peak_rss_growth_mb"], 1) for r in v]
                                       for k, v in out.items()},
            "ratio_vs_traker_default": best["deepprofile"]["images_per_s"]
            / best["traker_default"]["images_per_s"],
            "ratio_vs_traker_same_projector": best["deepprofile"]["images_per_s"]
            / best["traker_same_projector"]["images_per_s"]}


def paired_speed(ckpt: Path, proj_dim: int, n_images: int, rounds: int,
                 batch_size: int = 32, threads: int = 1) -> dict:
    """deepprofile's featurisation against ``TRAKer.featurize`` in one process, robust to
    a shared machine.

    Identical work on both sides: the same model object, the same images through the same
    DataLoader and batch size, a fresh store / save_dir each time, traker's default CPU
    projector (at ``proj_dim <= 100`` the same single normal block as ours). One warm-up
    each, then ``rounds`` pairs back to back with the order swapped every round. Each side
    is timed by the CPU time of this process (all its threads: torch, Zarr's I/O thread)
    on ``threads`` torch threads, which other processes' load barely changes, and by wall
    time; the figure is the median of the per-round CPU-time ratios, every ratio kept."""
    from deepprofile.models import load_model

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    train = Subset(DigitsDataset("train", size=32), range(n_images))
    model, _ = load_model(ckpt)
    tmp = Path(tempfile.mkdtemp())
    count = iter(range(10**6))

    def timed(fn) -> tuple[float, float]:
        w, c = time.perf_counter(), time.process_time()
        fn()
        return time.process_time() - c, time.perf_counter() - w

    def ours() -> tuple[float, float]:
        path = tmp / f"f{next(count)}.zarr"
        return timed(lambda: _ours_featurize(model, ckpt, train, proj_dim, path, batch_size))

    def theirs() -> tuple[float, float]:
        path = tmp / f"t{next(count)}"
        return timed(lambda: _traker_featurize(model, ckpt, train, proj_dim, path,
                                               batch_size))

    try:
        ours(), theirs()
        pairs = []
        for r in range(rounds):
            if r % 2:
                b, a = theirs(), ours()
            else:
                a, b = ours(), theirs()
            pairs.append((a, b))
    finally:
        torch.set_num_threads(previous)
    cpu = [b[0] / a[0] for a, b in pairs]  # > 1: deepprofile faster
    wall = [b[1] / a[1] for a, b in pairs]
    return {"rounds": rounds, "n_images": n_images, "proj_dim": proj_dim,
            "batch_size": batch_size, "torch_threads": threads,
            "median_cpu_time_ratio": float(np.median(cpu)),
            "cpu_time_ratios": [round(r, 3) for r in cpu],
            "median_wall_time_ratio": float(np.median(wall)),
            "wall_time_ratios": [round(r, 3) for r in wall],
            "deepprofile_cpu_s": [round(a[0], 3) for a, _ in pairs],
            "traker_cpu_s": [round(b[0], 3) for _, b in pairs],
            "deepprofile_images_per_cpu_s_median":
                float(n_images / np.median([a[0] for a, _ in pairs])),
            "traker_images_per_cpu_s_median":
                float(n_images / np.median([b[0] for _, b in pairs]))}


def concept_removal(train: DigitsDataset, test: DigitsDataset, ckpts: list[Path],
                    proj_dim: int, n_remove: int, seeds: tuple[int, ...], tmp: Path) -> dict:
    """Konz et al.'s removal check for a concept probe: concept ``odd`` (odd digits) on the
    hidden layer ``net.2``; TRAK scores of the probe's mean logit over the odd test digits
    (checkpoints of seed 0, whose final model the probe was fitted on); after retraining
    without the top-attributed vs random images, a probe is fitted afresh on the new model
    (the hidden basis changes) and its cross-validated balanced accuracy and mean signed
    margin on the test set are recorded."""
    from deepprofile.concepts.probes import fit_probe
    from deepprofile.data_attribution.outputs import ConceptProbeOutput, params_up_to
    from deepprofile.models import load_model

    odd = (test.targets.numpy() % 2 == 1)
    sign = np.where(odd, 1.0, -1.0)

    def hidden(model: nn.Module) -> np.ndarray:
        with torch.no_grad():
            return model.net[:3](test.images).numpy()

    final, _ = load_model(ckpts[-1])
    fit = fit_probe(hidden(final), odd)
    infos = checkpoint_infos(ckpts)
    ens = TrakEnsemble(DigitsMLP(), infos, train, FeatureStore(tmp / "concept.zarr"),
                       proj_dim=proj_dim, batch_size=64, quiet=True)
    scope = params_up_to(ens.model, "net.2", test.images[:1])
    pos = np.flatnonzero(odd)
    scores = ens.scores(ConceptProbeOutput("net.2", "mean", fit.weight, fit.bias),
                        Subset(test, pos.tolist()), scope=scope, scope_name="upto-net.2",
                        groups=np.full((1, len(pos)), 1.0 / len(pos)))[:, 0]

    def accuracy(model: nn.Module) -> float:
        return fit_probe(hidden(model), odd).balanced_accuracy

    def margin(model: nn.Module) -> float:
        f = fit_probe(hidden(model), odd)
        return float(np.mean(sign * (hidden(model) @ f.weight + f.bias)))

    def retrain(idx: np.ndarray, s: int) -> nn.Module:
        return train_mlp(train, idx, s)

    cache: dict[tuple, nn.Module] = {}

    def cached(idx: np.ndarray, s: int) -> nn.Module:
        key = (s, idx.tobytes())
        if key not in cache:
            cache[key] = retrain(idx, s)
        return cache[key]

    acc = removal_check(cached, scores, n_remove, accuracy, seeds=seeds)
    mar = removal_check(cached, scores, n_remove, margin, seeds=seeds)
    train_labels = train.targets.numpy()
    top = np.argsort(-scores)[:n_remove]
    return {"concept": "odd digits", "layer": "net.2",
            "probe_balanced_accuracy": fit.balanced_accuracy, "scope_params": scope,
            "top_removed_share_odd": float((train_labels[top] % 2).mean()),
            "train_share_odd": float((train_labels % 2).mean()),
            "probe_accuracy": acc.to_dict(), "probe_margin": mar.to_dict()}


# -- concept removal on shapes (Konz et al.): the marker concept of the demo CNN ----------
def _no_relative_ridge() -> dict:
    """``ridge=0`` where ``TrakEnsemble`` has a relative ridge of its own (a default other
    than 0 there would add to the ``lambda_reg`` these checks set, and change the plain
    TRAK rows): the figures in docs/data_attribution.md were measured with ``lambda_reg``
    as the only ridge."""
    import inspect

    return {"ridge": 0.0} if "ridge" in inspect.signature(TrakEnsemble).parameters else {}


SHAPES_WIDTHS = [8, 16, 32]  # the demo's shapes pair (deepprofile.demo.pair_config)


def _shapes_train(train_set, idx: np.ndarray, seed: int, epochs: int, out: Path,
                  n_checkpoints: int = 1, eval_set=None) -> object:
    """The demo's shapes recipe (SmallResNet 8/16/32, one-cycle SGD lr 0.1, batch 64)
    on the training images ``idx``; returns deepprofile's TrainResult."""
    from deepprofile.models.train import TrainConfig, train

    cfg = TrainConfig(arch="small_resnet", arch_kwargs={"in_channels": 3,
                                                        "widths": SHAPES_WIDTHS},
                      dataset="shapes", epochs=epochs, lr=0.1, seed=seed,
                      n_checkpoints=n_checkpoints)
    return train(cfg, out, train_set=Subset(train_set, idx.tolist()),
                 test_set=eval_set, quiet=True)


@torch.no_grad()
def _layer_means(model: nn.Module, images: torch.Tensor, layer: str) -> np.ndarray:
    """Spatially mean-pooled output of ``layer`` (the capture's ``mean`` reduction)."""
    from deepprofile.concepts.probes import reduce_differentiable
    from deepprofile.data_attribution.outputs import run_to_layer

    model.eval()
    return torch.cat([reduce_differentiable(run_to_layer(model, layer, None, None, b), "mean")
                      for b in images.split(200)]).numpy()


def _concept_metrics(model: nn.Module, images: torch.Tensor, truth: np.ndarray,
                     labels: np.ndarray, layer: str, spurious_class: int,
                     probe: tuple[np.ndarray, float] | None = None) -> dict:
    """The concept at ``layer`` of a (re)trained model, with its probe fitted afresh
    (the hidden basis changes with every retrain, as in Konz et al.): 5-fold balanced
    accuracy; mean signed probe logit on held-out images (probe fitted on the even
    rows, evaluated on the odd ones); the contrast ``mean logit(marked) - mean
    logit(unmarked)`` of a fixed ``probe`` (the full model's of the same seed: TRAK's
    target itself); and the behaviour the concept drives: the share of marked images
    of other classes called the spurious class."""
    from deepprofile.concepts.probes import fit_probe

    x = _layer_means(model, images, layer)
    fit = fit_probe(x, truth)
    w, b = probe if probe is not None else (fit.weight, fit.bias)
    logit = x @ w + b
    even = np.arange(len(x)) % 2 == 0
    half = fit_probe(x[even], truth[even])
    sign = np.where(truth[~even], 1.0, -1.0)
    margin = float(np.mean(sign * (x[~even] @ half.weight + half.bias)))
    with torch.no_grad():
        preds = torch.cat([model(b).argmax(1) for b in images.split(200)]).numpy()
    other = labels != spurious_class
    out = {"probe_balanced_accuracy": float(fit.balanced_accuracy),
           "probe_heldout_margin": margin,
           "fixed_probe_contrast": float(logit[truth].mean() - logit[~truth].mean()),
           "accuracy": float(np.mean(preds == labels))}
    if (truth & other).any():  # shapes: marked images of the other classes
        out["spurious_rate"] = float(np.mean(preds[truth & other] == spurious_class))
    else:  # a class concept: the class's recall
        out["class_recall"] = float(np.mean(preds[truth] == spurious_class))
    return out


def _arm_summary(full: list[dict], arm: list[dict], rand: list[dict]) -> dict:
    """Per metric: drop (full - arm) mean and std over seeds, and the paired excess drop
    over the random arm (mean and std over seeds)."""
    out = {}
    for key in full[0]:
        f = np.array([r[key] for r in full])
        a = np.array([r[key] for r in arm])
        r = np.array([x[key] for x in rand])
        out[key] = {"drop_mean": float(np.mean(f - a)), "drop_std": float(np.std(f - a)),
                    "excess_over_random_mean": float(np.mean(r - a)),
                    "excess_over_random_std": float(np.std(r - a)),
                    "values": a.tolist()}
    return out


def concept_removal_shapes(args: argparse.Namespace) -> dict:
    """Konz et al.'s removal check, on a concept whose evidence comes from specific
    training images: the spurious ``marker`` (a 3x3 white patch on 90% of the
    circles, 5% of the other shapes) at ``layer3`` of the demo CNN trained on
    ``shapes``. The probe is fitted on a held-out set where half of every class is
    marked (as ``deepprofile.concepts.spurious`` does); TRAK scores the probe's output
    on those images over the first seed's checkpoints, parameters up to ``layer3``.
    Each ranking's top ``--remove`` training images are removed and the model is
    retrained (``--removal-seeds`` seeds), against ``--remove`` random ones and, as a
    ceiling, ``--remove`` random *marked* ones; after each retrain the probe is fitted
    afresh."""
    from deepprofile.concepts.probes import fit_probe
    from deepprofile.data import ShapesDataset
    from deepprofile.data_attribution.detector import shortcut_scores
    from deepprofile.data_attribution.outputs import ConceptProbeOutput, params_up_to
    from deepprofile.models import build_model, load_model

    t_all = time.perf_counter()
    layer, spurious = args.concept_layer, 0
    train_set = ShapesDataset(args.shapes_n, seed=0, marker_rate=0.9, marker_base_rate=0.05)
    eval_set = ShapesDataset(args.shapes_eval, seed=1000, marker_rate=0.5,
                             marker_base_rate=0.5)
    table = train_set.concept_table()
    marked_train = table["marker"].astype(bool)
    images = torch.stack([eval_set[i][0] for i in range(len(eval_set))])
    ev = eval_set.concept_table()
    truth, labels = ev["marker"].astype(bool), ev["label"].astype(int)
    n, n_remove = len(train_set), args.remove
    tmp = Path(tempfile.mkdtemp())
    monitor = Subset(eval_set, range(0, len(eval_set), 8))  # cheap per-epoch test set

    res = _shapes_train(train_set, np.arange(n), 0, args.shapes_epochs, tmp / "attributed",
                        n_checkpoints=args.shapes_checkpoints, eval_set=monitor)
    model = load_model(res.final_checkpoint)[0]
    fit = fit_probe(_layer_means(model, images, layer), truth)
    infos = checkpoint_infos(res.checkpoints)
    template = build_model("small_resnet", num_classes=4, in_channels=3, widths=SHAPES_WIDTHS)
    store = FeatureStore(tmp / "f.zarr")

    def ensemble(lambda_reg: float) -> TrakEnsemble:
        return TrakEnsemble(template, infos, train_set, store, proj_dim=args.shapes_proj_dim,
                            lambda_reg=lambda_reg, batch_size=64, quiet=True,
                            **_no_relative_ridge())

    ens = ensemble(0.0)
    scope = params_up_to(ens.model, layer, images[:1])
    pos, neg = truth / truth.sum(), (~truth) / (~truth).sum()
    probe_out = ConceptProbeOutput(layer, "mean", fit.weight, fit.bias)
    t = time.perf_counter()

    def probe_scores(e: TrakEnsemble) -> np.ndarray:
        return e.scores(probe_out, eval_set, scope=scope, scope_name=f"upto-{layer}",
                        groups=np.stack([pos, pos - neg]))

    scores = probe_scores(ens)
    s_short = shortcut_scores(ens, eval_set, labels, truth, spurious)
    # ridge relative to the mean diagonal of X^T X (per parameter scope, last checkpoint):
    # (X^T X)^-1 amplifies the directions of rare training images; the ridge damps it
    diag = {name: float((ens.features(infos[-1], sc, name).read()[0].astype(np.float64) ** 2)
                        .sum(0).mean()) for name, sc in ((f"upto-{layer}", scope), ("all", None))}
    lam = {k: args.lambda_rel * v for k, v in diag.items()}
    ridge = probe_scores(ensemble(lam[f"upto-{layer}"]))
    s_short_ridge = shortcut_scores(ensemble(lam["all"]), eval_set, labels, truth, spurious)
    trak_seconds = time.perf_counter() - t
    q = np.mean([ens.features(c, scope, f"upto-{layer}").read()[1] for c in infos], axis=0)
    s_pos, s_con = scores[:, 0], scores[:, 1]
    s_noq = np.where(q > 0, s_con / np.where(q > 0, q, 1.0), 0.0)

    def top(s: np.ndarray) -> np.ndarray:
        return np.argsort(-s, kind="stable")[:n_remove]

    every = {
        "trak_margin_helpful": top(s_con),          # target: probe margin (marked - unmarked)
        "trak_positive_helpful": top(s_pos),        # target: probe logit on marked images only
        "trak_margin_abs": top(np.abs(s_con)),
        "trak_margin_helpful_no_q": top(s_noq),     # TRAK without the 1 - p weighting
        "trak_margin_harmful": top(-s_con),         # removing these should *raise* it
        "trak_shortcut_helpful": top(s_short),      # target: circle margin, marked - unmarked
        "ridge_margin_helpful": top(ridge[:, 1]),
        "ridge_positive_helpful": top(ridge[:, 0]),
        "ridge_margin_abs": top(np.abs(ridge[:, 1])),
        "ridge_margin_harmful": top(-ridge[:, 1]),
        "ridge_shortcut_helpful": top(s_short_ridge),
    }
    arm_names = args.arms.split(",") if args.arms else list(every)
    rankings = {k: every[k] for k in arm_names}
    marked_idx = np.flatnonzero(marked_train)
    full, arms = [], {k: [] for k in [*rankings, "random", "random_marked"]}
    t = time.perf_counter()
    for s in range(args.removal_seeds):
        rng = np.random.default_rng(10_000 + s)
        removed = dict(rankings)
        removed["random"] = rng.choice(n, size=n_remove, replace=False)
        removed["random_marked"] = rng.choice(marked_idx, size=min(n_remove, len(marked_idx)),
                                              replace=False)
        seed_model = model if s == 0 else load_model(_shapes_train(
            train_set, np.arange(n), s, args.shapes_epochs, tmp / f"s{s}_full",
            eval_set=monitor).final_checkpoint)[0]
        f = fit_probe(_layer_means(seed_model, images, layer), truth)
        probe = (f.weight, f.bias)  # the full model's probe of this seed, kept fixed
        full.append(_concept_metrics(seed_model, images, truth, labels, layer, spurious, probe))
        for name, drop in removed.items():
            r = _shapes_train(train_set, np.setdiff1d(np.arange(n), drop), s,
                              args.shapes_epochs, tmp / f"s{s}_{name}", eval_set=monitor)
            arms[name].append(_concept_metrics(load_model(r.final_checkpoint)[0], images,
                                               truth, labels, layer, spurious, probe))
    retrain_seconds = time.perf_counter() - t
    base = full[0]
    return {
        "setting": {"data": f"shapes n={n} (marker on 90% of circles, 5% of others)",
                    "eval": f"{len(eval_set)} held-out shapes, half of every class marked",
                    "model": "SmallResNet 8/16/32 (the demo's shapes CNN)",
                    "epochs": args.shapes_epochs, "checkpoints": len(infos),
                    "proj_dim": args.shapes_proj_dim, "lambda_rel": args.lambda_rel,
                    "layer": layer, "n_remove": n_remove, "seeds": args.removal_seeds,
                    "scope_params": len(scope), "train_marked": int(marked_train.sum())},
        "full_model": base,
        "full_probe_balanced_accuracy": float(fit.balanced_accuracy),
        "lambda_reg": lam,
        "removed_share_marked": {k: float(marked_train[v].mean()) for k, v in every.items()},
        "removed_share_circle": {k: float((table["label"][v] == 0).mean())
                                 for k, v in every.items()},
        "full": full,
        "arms": {k: _arm_summary(full, v, arms["random"]) for k, v in arms.items()},
        "seconds": {"trak": trak_seconds, "retrains": retrain_seconds,
                    "total": time.perf_counter() - t_all},
    }


def concept_removal_digits(args: argparse.Namespace) -> dict:
    """The removal check on the demo CNN trained on digits (SmallResNet, the demo's
    recipe, 4 checkpoints) for a concept narrower than "odd": one digit class
    (``--digit``) probed at ``--concept-layer``. Arms as in the shapes check, the
    ceiling being ``--remove`` random training images of that class."""
    from dataclasses import replace

    from deepprofile.concepts.probes import fit_probe
    from deepprofile.data import load_dataset
    from deepprofile.data_attribution.outputs import ConceptProbeOutput, params_up_to
    from deepprofile.demo import demo_config
    from deepprofile.models import build_model, load_model
    from deepprofile.models.train import train

    t_all = time.perf_counter()
    layer, c = args.concept_layer, args.digit
    train_set, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    n, n_remove = len(train_set), args.remove
    train_labels = train_set.targets.numpy()
    images = torch.stack([test[i][0] for i in range(len(test))])
    labels = test.targets.numpy()
    truth = labels == c
    tmp = Path(tempfile.mkdtemp())
    monitor = Subset(test, range(0, len(test), 8))

    def fit_model(idx: np.ndarray, seed: int, name: str, n_checkpoints: int = 1):
        cfg = replace(demo_config(seed, fast=False), n_checkpoints=n_checkpoints)
        return train(cfg, tmp / name, train_set=Subset(train_set, idx.tolist()),
                     test_set=monitor, quiet=True)

    res = fit_model(np.arange(n), 0, "attributed", n_checkpoints=4)
    model = load_model(res.final_checkpoint)[0]
    fit = fit_probe(_layer_means(model, images, layer), truth)
    infos = checkpoint_infos(res.checkpoints)
    template = build_model("small_resnet", num_classes=10, in_channels=1)
    store = FeatureStore(tmp / "f.zarr")

    def ensemble(lambda_reg: float) -> TrakEnsemble:
        return TrakEnsemble(template, infos, train_set, store, proj_dim=args.proj_dim,
                            lambda_reg=lambda_reg, batch_size=64, quiet=True,
                            **_no_relative_ridge())

    ens = ensemble(0.0)
    scope = params_up_to(ens.model, layer, images[:1])
    pos, neg = truth / truth.sum(), (~truth) / (~truth).sum()
    out = ConceptProbeOutput(layer, "mean", fit.weight, fit.bias)
    name = f"upto-{layer}"
    groups = np.stack([pos - neg, pos])  # the probe's margin; its logit on the class only
    plain = ens.scores(out, test, scope=scope, scope_name=name, groups=groups)
    diag = float((ens.features(infos[-1], scope, name).read()[0].astype(np.float64) ** 2)
                 .sum(0).mean())
    ridge = ensemble(args.lambda_rel * diag).scores(out, test, scope=scope, scope_name=name,
                                                    groups=groups)

    def top(v: np.ndarray) -> np.ndarray:
        return np.argsort(-v, kind="stable")[:n_remove]

    every = {"trak_margin_helpful": top(plain[:, 0]), "trak_positive_helpful": top(plain[:, 1]),
             "ridge_margin_helpful": top(ridge[:, 0]), "ridge_positive_helpful": top(ridge[:, 1])}
    rankings = {k: every[k] for k in (args.arms.split(",") if args.arms else every)}
    members = np.flatnonzero(train_labels == c)
    full, arms = [], {k: [] for k in [*rankings, "random", "random_in_class"]}
    for seed in range(args.removal_seeds):
        rng = np.random.default_rng(10_000 + seed)
        removed = dict(rankings)
        removed["random"] = rng.choice(n, size=n_remove, replace=False)
        removed["random_in_class"] = rng.choice(members, size=min(n_remove, len(members)),
                                                replace=False)
        seed_model = model if seed == 0 else load_model(
            fit_model(np.arange(n), seed, f"s{seed}_full").final_checkpoint)[0]
        f = fit_probe(_layer_means(seed_model, images, layer), truth)
        probe = (f.weight, f.bias)
        full.append(_concept_metrics(seed_model, images, truth, labels, layer, c, probe))
        for arm, drop in removed.items():
            r = fit_model(np.setdiff1d(np.arange(n), drop), seed, f"s{seed}_{arm}")
            arms[arm].append(_concept_metrics(load_model(r.final_checkpoint)[0], images,
                                              truth, labels, layer, c, probe))
    return {
        "setting": {"data": f"digits 32x32, n={n}", "model": "SmallResNet (demo recipe)",
                    "concept": f"digit {c}", "layer": layer, "checkpoints": len(infos),
                    "proj_dim": args.proj_dim, "lambda_rel": args.lambda_rel,
                    "n_remove": n_remove, "seeds": args.removal_seeds,
                    "train_in_class": int(len(members))},
        "full": full,
        "removed_share_in_class": {k: float((train_labels[v] == c).mean())
                                   for k, v in every.items()},
        "arms": {k: _arm_summary(full, v, arms["random"]) for k, v in arms.items()},
        "seconds": time.perf_counter() - t_all,
    }


def shapes_detector(args: argparse.Namespace) -> dict:
    """The training-point-ranking detector of the shapes marker, spurious vs clean model
    (the demo's shapes CNN and recipe, ``--removal-seeds`` seeds each): precision@k of
    the top helpful training images against the marker truth, overall and among the
    circles, for three TRAK targets: ``predicted_class`` (the spurious class's mean
    margin over the test images predicted as it: the pipeline's class target),
    ``shortcut_marked`` (the spurious class's margin on marked images of the other
    classes) and ``shortcut_contrast`` (the same, marked minus unmarked); with the
    behaviour that says whether the model uses the marker."""
    from sklearn.metrics import roc_auc_score

    from deepprofile.data import ShapesDataset
    from deepprofile.data_attribution.detector import (
        RelabelledSubset,
        group_effect,
        ranking_precision,
        shortcut_scores,
    )
    from deepprofile.models import build_model, load_model

    eval_set = ShapesDataset(args.shapes_eval, seed=1000, marker_rate=0.5, marker_base_rate=0.5)
    ev = eval_set.concept_table()
    truth_ev, labels_ev = ev["marker"].astype(bool), ev["label"].astype(int)
    images = torch.stack([eval_set[i][0] for i in range(len(eval_set))])
    monitor = Subset(eval_set, range(0, len(eval_set), 8))
    template = build_model("small_resnet", num_classes=4, in_channels=3, widths=SHAPES_WIDTHS)
    tmp = Path(tempfile.mkdtemp())
    out: dict = {"setting": {"n_train": args.shapes_n, "epochs": args.shapes_epochs,
                             "checkpoints": args.shapes_checkpoints,
                             "proj_dim": args.shapes_proj_dim, "ks": [20, 50],
                             "eval": f"{len(eval_set)} shapes, half of every class marked"},
                 "models": []}
    for kind, rate in (("spurious", 0.9), ("clean", 0.05)):
        train_set = ShapesDataset(args.shapes_n, seed=0, marker_rate=rate, marker_base_rate=0.05)
        tt = train_set.concept_table()
        marked, labels = tt["marker"].astype(bool), tt["label"].astype(int)
        for s in range(args.removal_seeds):
            t = time.perf_counter()
            res = _shapes_train(train_set, np.arange(len(train_set)), s, args.shapes_epochs,
                                tmp / f"{kind}{s}", n_checkpoints=args.shapes_checkpoints,
                                eval_set=monitor)
            model = load_model(res.final_checkpoint)[0]
            with torch.no_grad():
                preds = torch.cat([model(b).argmax(1) for b in images.split(200)]).numpy()
            other = labels_ev != 0
            ens = TrakEnsemble(template, checkpoint_infos(res.checkpoints), train_set,
                               FeatureStore(tmp / f"{kind}{s}.zarr"),
                               proj_dim=args.shapes_proj_dim, lambda_reg=args.lambda_reg,
                               batch_size=64, quiet=True, **_no_relative_ridge())
            rows = np.flatnonzero(preds == 0)
            scores = {
                "predicted_class": ens.scores(MarginOutput(), Subset(eval_set, rows.tolist()),
                                              groups=np.full((1, len(rows)), 1 / len(rows)))[:, 0],
                "shortcut_marked": shortcut_scores(ens, eval_set, labels_ev, truth_ev, 0,
                                                   contrast=False),
                "shortcut_contrast": shortcut_scores(ens, eval_set, labels_ev, truth_ev, 0),
            }
            circ = labels == 0
            margin_circle = margins(model, RelabelledSubset(eval_set, np.flatnonzero(other), 0))
            m_other = truth_ev[other]
            row = {"model": kind, "seed": s, "accuracy": float(np.mean(preds == labels_ev)),
                   "shortcut_contrast_value": float(margin_circle[m_other].mean()
                                                    - margin_circle[~m_other].mean()),
                   "spurious_rate_marked_other": float(np.mean(preds[truth_ev & other] == 0)),
                   "spurious_rate_unmarked_other": float(np.mean(preds[~truth_ev & other] == 0)),
                   "targets": {}}
            for name, sc in scores.items():
                row["targets"][name] = {
                    **{f"k{k}": ranking_precision(sc, marked, labels, 0, k).to_dict()
                       for k in (20, 50)},
                    "auc_marked_within_circles": float(roc_auc_score(marked[circ], sc[circ])),
                    "marked_group": group_effect(sc, marked, labels).to_dict()}
            # the same detector with a ridge relative to X^T X's mean diagonal (last checkpoint)
            feats = ens.features(ens.checkpoints[-1], None).read()[0].astype(np.float64)
            diag = float((feats ** 2).sum(0).mean())
            row["shortcut_contrast_ridge"] = {}
            for rel in (1.0, 10.0):
                ridged = TrakEnsemble(template, ens.checkpoints, train_set, ens.store,
                                      proj_dim=args.shapes_proj_dim, lambda_reg=rel * diag,
                                      batch_size=64, quiet=True, **_no_relative_ridge())
                sc = shortcut_scores(ridged, eval_set, labels_ev, truth_ev, 0)
                row["shortcut_contrast_ridge"][f"{rel:g}x"] = {
                    "k20": ranking_precision(sc, marked, labels, 0, 20).to_dict(),
                    "marked_group": group_effect(sc, marked, labels).to_dict()}
            row["seconds"] = time.perf_counter() - t
            out["models"].append(row)
    return out


def cnn_lds(args: argparse.Namespace) -> dict:
    """LDS of TRAK / TracInCP / random scores on the demo CNN (SmallResNet, digits 32x32)."""
    from dataclasses import replace

    from deepprofile.data import load_dataset
    from deepprofile.demo import demo_config
    from deepprofile.models import build_model, load_model
    from deepprofile.models.train import train

    t_all = time.perf_counter()
    train_set, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    n = len(train_set)
    rows = np.unique(np.linspace(0, len(test) - 1, args.targets).round().astype(int))
    targets = Subset(test, rows.tolist())
    tmp = Path(tempfile.mkdtemp())

    def config(seed: int):  # the demo's recipe, optionally with fewer epochs
        base = demo_config(seed, fast=False)
        return replace(base, epochs=args.epochs) if args.epochs else base

    t = time.perf_counter()
    runs = [train(config(seed), tmp / f"seed{seed}", train_set=train_set, test_set=test,
                  quiet=True) for seed in range(args.seeds)]
    ckpts = [c for r in runs for c in r.checkpoints]
    seconds = {"train_ensemble": time.perf_counter() - t}
    cfg = config(0)
    report: dict = {"setting": {
        "data": "digits 32x32", "n_train": n, "model": "SmallResNet (demo CNN)",
        "recipe": {k: v for k, v in cfg.to_dict().items() if k != "seed"},
        "checkpoint_epochs": cfg.checkpoint_epochs(), "checkpoints": len(ckpts),
        "seeds": args.seeds, "proj_dim": args.proj_dim, "ridge": args.ridge,
        "targets": len(rows), "m": args.m, "alpha": 0.5,
        "test_accuracy": [r.test_accuracy for r in runs]}}
    model = build_model(cfg.arch, num_classes=10, **cfg.arch_kwargs)
    infos = checkpoint_infos(ckpts)
    per_seed = len(runs[0].checkpoints)

    def trak(subset: list, ridge: float) -> np.ndarray:
        ens = TrakEnsemble(model, subset, train_set, FeatureStore(tmp / "f.zarr"),
                           proj_dim=args.proj_dim, batch_size=32, quiet=True, ridge=ridge)
        return ens.scores(MarginOutput(), targets)

    t = time.perf_counter()
    scores = {"trak": trak(infos, args.ridge)}
    seconds["trak"] = time.perf_counter() - t
    for ridge, suffix in ((args.ridge, ""), (0.0, "_ridge0")):
        if suffix:
            scores["trak" + suffix] = trak(infos, ridge)
        if args.seeds > 1:
            scores["trak_seed0" + suffix] = trak(infos[:per_seed], ridge)
        scores["trak_1_checkpoint" + suffix] = trak(infos[per_seed - 1:per_seed], ridge)
    if not args.no_tracin:
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores["tracin_cp"] = tracin_scores(model, ckpts, train_set, targets,
                                                batch_size=64)
        seconds["tracin_cp"] = time.perf_counter() - t
    scores["random"] = random_scores(n, len(rows), seed=7)

    def retrain(idx: np.ndarray, seed: int) -> nn.Module:
        out = Path(tempfile.mkdtemp(dir=tmp))
        result = train(config(seed), out, train_set=Subset(train_set, idx.tolist()),
                       test_set=targets, quiet=True)
        return load_model(result.final_checkpoint)[0]

    masks = random_subsets(n, args.m, 0.5, seed=1)
    t = time.perf_counter()
    outputs = subset_outputs(retrain, masks, lambda m: margins(m, targets), seed=100)
    seconds["lds_retrains"] = time.perf_counter() - t
    report["lds"] = {k: lds(v, masks, outputs).lds for k, v in scores.items()}
    seconds["total"] = time.perf_counter() - t_all
    report["seconds"] = seconds
    return report


def _memory_job(budget: str, n_images: int, batch_size: int, queue: mp.Queue) -> None:
    """Featurise ``n_images`` random 32 px images for a random-init torchvision resnet18
    (11.2M parameters, proj_dim 8) under ``budget``, in a fresh process: peak RSS growth."""
    from deepprofile.attribution.memory import memory_budget
    from deepprofile.data import ArrayDataset
    from deepprofile.models import build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp())
    ckpt = save_checkpoint(tmp / "r18.pt", build_model("resnet18", num_classes=10),
                           "resnet18", {}, num_classes=10)
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.normal(size=(n_images, 3, 32, 32)).astype(np.float32),
                        rng.integers(0, 10, n_images), name="noise")
    model = build_model("resnet18", num_classes=10)
    infos = checkpoint_infos([ckpt])
    ens = TrakEnsemble(model, infos, data, FeatureStore(tmp / "f.zarr"), proj_dim=8,
                       batch_size=batch_size, quiet=True)
    with memory_budget(budget), _PeakRSS() as peak:
        t = time.perf_counter()
        ens.features(infos[0], None)
        seconds = time.perf_counter() - t
    queue.put({"budget": budget, "peak_rss_growth_mb": (peak.peak - peak.base) / 2**20,
               "images_per_s": n_images / seconds})


def memory_part(budgets: list[str], n_images: int, batch_size: int) -> dict:
    """Peak RSS growth of the featurisation of a resnet18 under each memory budget."""
    ctx = mp.get_context("spawn")
    rows = []
    for budget in budgets:
        queue = ctx.Queue()
        proc = ctx.Process(target=_memory_job, args=(budget, n_images, batch_size, queue))
        proc.start()
        rows.append(queue.get())
        proc.join()
    return {"setting": f"torchvision resnet18 (random init, 11.2M parameters), {n_images} "
                       f"random 32 px images, batch {batch_size}, proj_dim 8, one torch "
                       "thread, each budget in a fresh process", "runs": rows}


@contextmanager
def _two_pass_q():
    """Ablation: deepprofile's featurisation with ``Q`` from a second, batched forward pass
    (``compute_loss_grad``, as ``TRAKer.featurize`` does) instead of the per-sample one."""
    from deepprofile.data_attribution import featurize

    original = featurize.margin_features

    def two_pass(gc, projector, batch, model_id, n_params, max_samples=None):
        grads, _ = original(gc, projector, batch, model_id, n_params, max_samples)
        return grads, gc.compute_loss_grad(batch).reshape(-1).detach()

    featurize.margin_features = two_pass
    try:
        yield
    finally:
        featurize.margin_features = original


def speed_part(args: argparse.Namespace) -> dict:
    """Featurisation speed and peak memory of the demo CNN against traker used directly."""
    from deepprofile.models import build_model

    torch.manual_seed(0)
    cnn = Path(tempfile.mkdtemp()) / "small_resnet.pt"
    save_checkpoint(cnn, build_model("small_resnet", num_classes=10, in_channels=1),
                    "small_resnet", {"in_channels": 1}, num_classes=10)
    speed: dict = {"setting": f"SmallResNet (random init), digits 32x32, batch 32, CPU, "
                              f"{torch.get_num_threads()} torch threads"}
    speed["paired"] = paired_speed(cnn, args.speed_proj_dim, args.speed_images,
                                   args.speed_rounds)
    if args.speed_two_pass:
        with _two_pass_q():
            speed["paired_two_pass_q"] = paired_speed(cnn, args.speed_proj_dim,
                                                      args.speed_images, args.speed_rounds)
    if args.speed_repeats > 0:
        speed["separate_processes"] = featurise_speed(cnn, args.speed_proj_dim,
                                                      args.speed_images, args.speed_repeats)
    return speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--m", type=int, default=32, help="LDS subsets (retrains)")
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=3, help="models in the TRAK ensemble")
    parser.add_argument("--proj-dim", type=int, default=512)
    parser.add_argument("--ridge", type=float, default=DEFAULT_RIDGE,
                        help="TRAK ridge relative to the mean eigenvalue of X^T X (rows "
                        "ending in _ridge0 use 0: TRAKer's formula)")
    parser.add_argument("--remove", type=int, default=100)
    parser.add_argument("--removal-seeds", type=int, default=3)
    parser.add_argument("--speed-repeats", type=int, default=3,
                        help="separate-process runs per side (peak RSS); 0 skips them")
    parser.add_argument("--speed-rounds", type=int, default=9,
                        help="alternating rounds of the paired in-process speed test")
    parser.add_argument("--parts", default="lds,removal,concept_removal,speed",
                        help="comma-separated parts to run (also: memory)")
    parser.add_argument("--memory-budgets", default="none,1GiB",
                        help="memory part: budgets compared (comma-separated)")
    parser.add_argument("--speed-proj-dim", type=int, default=64,
                        help="speed: projection dimension (below --speed-images; <= 100 "
                        "keeps traker's default projector to one block, like ours)")
    parser.add_argument("--speed-two-pass", action="store_true",
                        help="speed: also time ours with traker's second forward pass for Q")
    parser.add_argument("--speed-images", type=int, default=256,
                        help="training images featurised by the demo CNN in the speed test")
    parser.add_argument("--model", choices=("mlp", "small_resnet"), default="mlp",
                        help="small_resnet: LDS only, on the demo CNN (digits 32x32)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="small_resnet: training epochs (default: the demo's 8)")
    parser.add_argument("--no-tracin", action="store_true",
                        help="small_resnet: skip captum's TracInCP")
    parser.add_argument("--concept-layer", default="layer3",
                        help="concept_removal: the demo CNN's layer probed for the marker")
    parser.add_argument("--shapes-n", type=int, default=800,
                        help="concept_removal: shapes training images (the demo's 800)")
    parser.add_argument("--shapes-eval", type=int, default=400)
    parser.add_argument("--shapes-epochs", type=int, default=6)
    parser.add_argument("--shapes-checkpoints", type=int, default=3)
    parser.add_argument("--shapes-proj-dim", type=int, default=400)
    parser.add_argument("--lambda-reg", type=float, default=0.0)
    parser.add_argument("--lambda-rel", type=float, default=10.0,
                        help="concept_removal: the ridge arms' lambda_reg as a multiple of "
                             "the mean diagonal of X^T X")
    parser.add_argument("--digit", type=int, default=3,
                        help="concept_removal_digits: the digit class probed as the concept")
    parser.add_argument("--arms", default="",
                        help="concept_removal: comma-separated rankings to retrain without "
                             "(default: all; random and random_marked always run)")
    args = parser.parse_args()
    if args.model == "small_resnet":
        print(json.dumps(cnn_lds(args), indent=1))
        return
    parts = set(args.parts.split(","))
    if parts <= {"speed", "memory"}:  # no MLP ensemble needed
        out = {}
        if "speed" in parts:
            out["featurisation"] = speed_part(args)
        if "memory" in parts:
            out["memory"] = memory_part(args.memory_budgets.split(","), 32, 16)
        print(json.dumps(out, indent=1))
        return
    shapes_parts = {"concept_removal": concept_removal_shapes, "shapes_detector": shapes_detector,
                    "concept_removal_digits": concept_removal_digits}
    if parts <= set(shapes_parts):  # shapes only: no digits MLP needed
        torch.manual_seed(0)
        print(json.dumps({p: shapes_parts[p](args) for p in sorted(parts)}, indent=1))
        return
    torch.manual_seed(0)
    t_all = time.perf_counter()
    train, test = DigitsDataset("train", size=8), DigitsDataset("test", size=8)
    n = len(train)
    rows = np.unique(np.linspace(0, len(test) - 1, args.targets).round().astype(int))
    targets = Subset(test, rows.tolist())
    tmp = Path(tempfile.mkdtemp())
    ckpts: list[Path] = []
    t = time.perf_counter()
    for seed in range(args.seeds):
        d = tmp / f"seed{seed}"
        model = train_mlp(train, np.arange(n), seed, d)
        ckpts += sorted(d.glob("epoch_*.pt"))
    acc = float((model(test.images).argmax(1) == test.targets).float().mean())
    report: dict = {"setting": {
        "data": "digits 8x8", "n_train": n, "model": "MLP 64-32-10", "epochs": EPOCHS,
        "checkpoints": len(ckpts), "seeds": args.seeds, "proj_dim": args.proj_dim,
        "ridge": args.ridge, "targets": len(rows), "m": args.m, "alpha": 0.5,
        "test_accuracy_last_model": acc}}
    seconds = {"train_ensemble": time.perf_counter() - t}
    infos = checkpoint_infos(ckpts)
    ens = TrakEnsemble(DigitsMLP(), infos, train, FeatureStore(tmp / "f.zarr"),
                       proj_dim=args.proj_dim, batch_size=64, quiet=True, ridge=args.ridge)
    if "lds" in parts:
        t = time.perf_counter()
        trak = ens.scores(MarginOutput(), targets)
        seconds["trak"] = time.perf_counter() - t

        def trak_with(subset: list, ridge: float) -> np.ndarray:
            return TrakEnsemble(DigitsMLP(), subset, train, FeatureStore(tmp / "f.zarr"),
                                proj_dim=args.proj_dim, batch_size=64, quiet=True,
                                ridge=ridge).scores(MarginOutput(), targets)

        trak_single = trak_with(infos[-1:], args.ridge)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tracin = tracin_scores(DigitsMLP(), ckpts, train, targets, batch_size=256)
        seconds["tracin_cp"] = time.perf_counter() - t
        masks = random_subsets(n, args.m, 0.5, seed=1)
        t = time.perf_counter()
        outputs = subset_outputs(lambda idx, s: train_mlp(train, idx, s), masks,
                                 lambda model: margins(model, targets), seed=100)
        seconds["lds_retrains"] = time.perf_counter() - t
        scores = {"trak": trak, "trak_1_checkpoint": trak_single,
                  "trak_ridge0": trak_with(infos, 0.0),
                  "trak_1_checkpoint_ridge0": trak_with(infos[-1:], 0.0), "tracin_cp": tracin,
                  "random": random_scores(n, len(rows), seed=7)}
        report["lds"] = {k: lds(v, masks, outputs).lds for k, v in scores.items()}
    seeds = tuple(range(args.removal_seeds))
    if "removal" in parts:
        cls = 3
        members = np.flatnonzero(test.targets.numpy() == cls)
        cls_targets = Subset(test, members.tolist())
        class_scores = ens.scores(MarginOutput(), cls_targets).mean(1)

        def metric(model: nn.Module) -> float:
            return float(margins(model, cls_targets).mean())

        removal = removal_check(lambda idx, s: train_mlp(train, idx, s), class_scores,
                                args.remove, metric, seeds=seeds)
        report["removal"] = {"target": f"mean test margin of class {cls} "
                                       f"({len(members)} images)", **removal.to_dict()}
    if "concept_removal_odd" in parts:
        t = time.perf_counter()
        report["concept_removal_odd"] = concept_removal(
            train, test, [c for c in ckpts if c.parent.name == "seed0"], args.proj_dim,
            args.remove, seeds, tmp)
        seconds["concept_removal_odd"] = time.perf_counter() - t
    if "concept_removal" in parts:
        report["concept_removal"] = concept_removal_shapes(args)
    if "speed" in parts:
        report["featurisation"] = speed_part(args)
    seconds["total"] = time.perf_counter() - t_all
    report["seconds"] = seconds
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
