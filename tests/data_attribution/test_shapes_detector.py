"""The training-point-ranking detector on shapes: a planted marker vs a clean model (slow).

The detector that fires: the marked training images' total TRAK effect on the
counterfactual shortcut target (``deepprofile.data_attribution.detector``), as a
z-score against class-matched random groups. The pipeline's precision@k of the class
targets is kept as a bookkeeping check only: it does not separate the two models
(docs/data_attribution.md, "The training-point-ranking detector").
"""

from __future__ import annotations

import pytest
from torch import nn

from deepprofile.models.registry import register_model


class TinyShapesNet(nn.Module):
    """conv(3->8, 3x3) -> relu -> 4x4 max pool -> linear(8*8*8 -> classes): positions are
    kept, so the top-left marker is easy to pick up."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.ReLU()
        self.down = nn.MaxPool2d(4)
        self.fc = nn.Linear(8 * 8 * 8, num_classes)

    def forward(self, x):
        return self.fc(self.down(self.act1(self.conv1(x))).flatten(1))


register_model("tiny_shapes_da", TinyShapesNet)


def _run(tmp_path, marker_rate: float):
    from deepprofile.data import load_dataset
    from deepprofile.data_attribution.pipeline import run_data_attribution
    from deepprofile.models import load_model
    from deepprofile.models.train import TrainConfig, train
    from deepprofile.workflow import capture_run

    params = {"n": 400, "marker_rate": marker_rate}
    config = TrainConfig(arch="tiny_shapes_da", arch_kwargs={}, dataset="shapes",
                         dataset_params=params, epochs=15, n_checkpoints=2, lr=0.05,
                         batch_size=32)
    res = train(config, tmp_path / "model", quiet=True)
    model, info = load_model(res.final_checkpoint)
    test = load_dataset("shapes", split="test", n=120, marker_rate=marker_rate)
    run, store = capture_run(model, test, tmp_path / "run", ["act1"], reductions="max",
                             model_info=info.to_dict(), checkpoint=res.final_checkpoint,
                             quiet=True)
    from deepprofile.concepts.probes import ConceptProbe, fit_probe, save_probes
    from deepprofile.concepts.sets import shapes_concepts

    cset = shapes_concepts(store, include=["marker"])
    cset.save(run.path)
    fit = fit_probe(store.layer("act1"), cset.mask("marker"))
    save_probes(run.path, [ConceptProbe.from_fit(fit, layer="act1", concept="marker",
                                                 reduction="max",
                                                 store_name="activations.zarr")])
    out = run_data_attribution(tmp_path / "run", targets=["predictions", "concept:marker"],
                               proj_dim=128, n_targets=40, k=20, quiet=True)
    return {t.name: t for t in out.targets if t.kind != "prediction"}


@pytest.mark.slow
def test_pipeline_precision_bookkeeping_against_the_marker_truth(tmp_path):
    """precision@k of the class and concept targets against the training set's marker
    truth, with the base rate computed independently from the generator. The values
    themselves are no detector (measured on this tiny model: 0.05-0.20 against a base
    rate of 0.25 on the spurious model; on the demo CNN the class target ranks the rare
    unmarked circles above the marked ones, and on the clean model the rare marked
    ones on top); see docs/data_attribution.md."""
    from deepprofile.concepts.sets import shapes_concepts

    rate = 0.9
    targets = _run(tmp_path / str(rate), rate)
    truth = shapes_concepts(range(400), seed=0, spurious_class=0, marker_rate=rate,
                            marker_base_rate=0.05).mask("marker")
    assert set(targets) >= {"concept marker"} and len(targets) >= 3
    for t in targets.values():
        p = t.precision
        assert p is not None and p.truth == "marker" and p.k == 20
        assert p.base_rate == pytest.approx(truth.mean())
        marked = sum(truth[r.index] for r in t.helpful)
        assert p.precision == pytest.approx(marked / 20)


def _shortcut_detector(tmp_path, marker_rate: float) -> dict:
    """The demo's shapes CNN and recipe (SmallResNet 8/16/32, 800 images, 6 epochs,
    one-cycle SGD at 0.1; 3 checkpoints, seed 0), its behaviour on a held-out set with
    half of every class marked, and the marked training images' effect on the
    shortcut target (TRAK, proj_dim 400)."""
    import numpy as np
    import torch
    from torch.utils.data import Subset

    from deepprofile.data import ShapesDataset
    from deepprofile.data_attribution.detector import group_effect, shortcut_scores
    from deepprofile.data_attribution.store import FeatureStore
    from deepprofile.data_attribution.trak import TrakEnsemble, checkpoint_infos
    from deepprofile.models import build_model, load_model
    from deepprofile.models.train import TrainConfig, train

    train_set = ShapesDataset(800, seed=0, marker_rate=marker_rate, marker_base_rate=0.05)
    eval_set = ShapesDataset(400, seed=1000, marker_rate=0.5, marker_base_rate=0.5)
    widths = [8, 16, 32]
    cfg = TrainConfig(arch="small_resnet", arch_kwargs={"in_channels": 3, "widths": widths},
                      dataset="shapes", epochs=6, lr=0.1, seed=0, n_checkpoints=3)
    res = train(cfg, tmp_path / "model", train_set=train_set,
                test_set=Subset(eval_set, range(0, 400, 8)), quiet=True)
    model = load_model(res.final_checkpoint)[0].eval()
    ev, tt = eval_set.concept_table(), train_set.concept_table()
    marked_ev, labels_ev = ev["marker"].astype(bool), ev["label"].astype(int)
    with torch.no_grad():
        preds = model(torch.stack([eval_set[i][0] for i in range(400)])).argmax(1).numpy()
    other = labels_ev != 0
    # measured with TRAKer's formula (no ridge): pin it where TrakEnsemble has a ridge default
    import inspect

    plain = {"ridge": 0.0} if "ridge" in inspect.signature(TrakEnsemble).parameters else {}
    ens = TrakEnsemble(build_model("small_resnet", num_classes=4, in_channels=3, widths=widths),
                       checkpoint_infos(res.checkpoints), train_set,
                       FeatureStore(tmp_path / "f.zarr"), proj_dim=400, batch_size=64,
                       quiet=True, **plain)
    scores = shortcut_scores(ens, eval_set, labels_ev, marked_ev, spurious_class=0)
    effect = group_effect(scores, tt["marker"].astype(bool), tt["label"].astype(int))
    return {"uses_marker": float(np.mean(preds[marked_ev & other] == 0)
                                 - np.mean(preds[~marked_ev & other] == 0)),
            "effect": effect}


@pytest.mark.slow
def test_shortcut_detector_fires_on_the_spurious_model_only(tmp_path, one_torch_thread):
    """Fires when the marked training images' summed TRAK score for the shortcut target
    (circle margin on marked minus unmarked images of the other shapes) is z >= 3 above
    class-matched random groups. Measured over seeds 0-2 (``python
    benchmarks/data_attribution.py --parts shapes_detector --removal-seeds 3``):
    z = 10.1, 9.7, 8.9 on the spurious model (it calls 29-60% of marked other shapes
    circles, 0% of unmarked ones) and 1.2, 0.4, -2.1 on the clean one (0.7-4.1% vs
    0.6-3.2%). Seed 0 is asserted with the rule's threshold, which lies 5.9 below the
    spurious model's lowest z and 1.8 above the clean model's highest."""
    spurious = _shortcut_detector(tmp_path / "spurious", 0.9)
    clean = _shortcut_detector(tmp_path / "clean", 0.05)
    assert spurious["uses_marker"] > 0.2 and abs(clean["uses_marker"]) < 0.1
    assert spurious["effect"].effect > 0 and spurious["effect"].z >= 3.0
    assert clean["effect"].z < 3.0
    assert spurious["effect"].z - clean["effect"].z > 4.0
