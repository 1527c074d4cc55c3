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
from deepprofile.data_attribution.trak import TrakEnsemble, checkpoint_infos
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
        "seeds": args.seeds, "proj_dim": args.proj_dim, "targets": len(rows), "m": args.m,
        "alpha": 0.5, "test_accuracy": [r.test_accuracy for r in runs]}}
    model = build_model(cfg.arch, num_classes=10, **cfg.arch_kwargs)
    infos = checkpoint_infos(ckpts)
    per_seed = len(runs[0].checkpoints)

    def trak(subset: list) -> np.ndarray:
        ens = TrakEnsemble(model, subset, train_set, FeatureStore(tmp / "f.zarr"),
                           proj_dim=args.proj_dim, batch_size=32, quiet=True)
        return ens.scores(MarginOutput(), targets)

    t = time.perf_counter()
    scores = {"trak": trak(infos)}
    seconds["trak"] = time.perf_counter() - t
    if args.seeds > 1:
        scores["trak_seed0"] = trak(infos[:per_seed])
    scores["trak_1_checkpoint"] = trak(infos[per_seed - 1:per_seed])
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
        "targets": len(rows), "m": args.m, "alpha": 0.5, "test_accuracy_last_model": acc}}
    seconds = {"train_ensemble": time.perf_counter() - t}
    infos = checkpoint_infos(ckpts)
    ens = TrakEnsemble(DigitsMLP(), infos, train, FeatureStore(tmp / "f.zarr"),
                       proj_dim=args.proj_dim, batch_size=64, quiet=True)
    if "lds" in parts:
        t = time.perf_counter()
        trak = ens.scores(MarginOutput(), targets)
        seconds["trak"] = time.perf_counter() - t
        one_model = TrakEnsemble(DigitsMLP(), infos[-1:], train, FeatureStore(tmp / "f.zarr"),
                                 proj_dim=args.proj_dim, batch_size=64, quiet=True)
        trak_single = one_model.scores(MarginOutput(), targets)
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
        scores = {"trak": trak, "trak_1_checkpoint": trak_single, "tracin_cp": tracin,
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
    if "concept_removal" in parts:
        t = time.perf_counter()
        report["concept_removal"] = concept_removal(
            train, test, [c for c in ckpts if c.parent.name == "seed0"], args.proj_dim,
            args.remove, seeds, tmp)
        seconds["concept_removal"] = time.perf_counter() - t
    if "speed" in parts:
        report["featurisation"] = speed_part(args)
    seconds["total"] = time.perf_counter() - t_all
    report["seconds"] = seconds
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
