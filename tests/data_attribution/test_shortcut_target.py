"""The pipeline's ``shortcut:CONCEPT:CLASS`` target on a tiny shapes model.

The detector's z is checked against the exact mean and variance of a class-matched
random group's sum (sampling without replacement), the scores against TRAK's
per-image scores weighted by hand, the model contrast against the logits.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from deepprofile.models.registry import register_model

N_TRAIN, N_TEST = 96, 48
TRAIN = {"n": N_TRAIN, "marker_rate": 0.9, "marker_base_rate": 0.05}


class TinyShapesConv(nn.Module):
    """conv(3->4, 8x8, stride 8) -> relu -> linear(4*4*4 -> classes)."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2d(3, 4, 8, stride=8)
        self.act = nn.ReLU()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).flatten(1))


register_model("tiny_shapes_shortcut", TinyShapesConv)


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    from deepprofile.data import load_dataset
    from deepprofile.models import load_model
    from deepprofile.models.train import TrainConfig, train
    from deepprofile.workflow import capture_run

    out = tmp_path_factory.mktemp("shortcut")
    config = TrainConfig(arch="tiny_shapes_shortcut", arch_kwargs={}, dataset="shapes",
                         dataset_params=TRAIN, epochs=2, n_checkpoints=2, lr=0.05,
                         batch_size=32)
    res = train(config, out / "model", quiet=True)
    model, info = load_model(res.final_checkpoint)
    test = load_dataset("shapes", split="test", n=N_TEST, marker_rate=0.5,
                        marker_base_rate=0.5)
    run, _ = capture_run(model, test, out / "run", ["act"], model_info=info.to_dict(),
                         checkpoint=res.final_checkpoint, quiet=True)
    return {"run": run.path, "model": model, "test": test, "checkpoints": res.checkpoints}


def _exact_z(scores: np.ndarray, group: np.ndarray, labels: np.ndarray) -> float:
    """z of the group's sum under class-by-class sampling without replacement."""
    mean = var = 0.0
    for c in np.unique(labels[group]):
        pop = scores[labels == c]
        k, n = int((group & (labels == c)).sum()), len(pop)
        mean += k * pop.mean()
        var += k * pop.var() * (n - k) / (n - 1) if n > 1 else 0.0
    return float((scores[group].sum() - mean) / np.sqrt(var))


@pytest.mark.usefixtures("one_torch_thread")
def test_shortcut_target_z_scores_and_contrast(shapes_run):
    from deepprofile.data import ShapesDataset
    from deepprofile.data_attribution.detector import RelabelledSubset
    from deepprofile.data_attribution.outputs import MarginOutput
    from deepprofile.data_attribution.pipeline import run_data_attribution
    from deepprofile.data_attribution.results import DataAttributionResult
    from deepprofile.data_attribution.store import FeatureStore
    from deepprofile.data_attribution.trak import TrakEnsemble, checkpoint_infos

    run = shapes_run["run"]
    res = run_data_attribution(run, targets=["shortcut:marker:circle"], proj_dim=32,
                               n_targets=N_TEST, k=5, quiet=True)
    (d,) = res.shortcuts
    assert (d.concept, d.class_index, d.class_name) == ("marker", 0, "circle")
    # the ground truth, from the generator directly
    tt = ShapesDataset(N_TRAIN, seed=0, **{k: v for k, v in TRAIN.items() if k != "n"}
                       ).concept_table()
    train_marked, train_labels = tt["marker"].astype(bool), tt["label"].astype(int)
    ev = shapes_run["test"].concept_table()
    other = np.flatnonzero(ev["label"] != 0)  # every other-class test image (n_targets=N_TEST)
    marked = ev["marker"].astype(bool)[other]
    assert (d.n_marked, d.n_unmarked) == (marked.sum(), (~marked).sum())
    assert d.effect.n_group == train_marked.sum()

    scores = np.load(run / res.scores_files["shortcut:marker:circle"])[:, 0].astype(np.float64)
    # the group statistic: Monte Carlo (2000 draws) against the exact null moments
    assert d.effect.effect == pytest.approx(scores[train_marked].sum(), rel=1e-5, abs=1e-6)
    assert d.effect.z == pytest.approx(_exact_z(scores, train_marked, train_labels),
                                       rel=0.06, abs=0.1)
    assert d.fires == (d.effect.z >= 3.0)

    # the grouped target equals the per-image scores weighted by hand
    ens = TrakEnsemble(shapes_run["model"], checkpoint_infos(shapes_run["checkpoints"]),
                       ShapesDataset(N_TRAIN, seed=0, marker_rate=0.9, marker_base_rate=0.05),
                       FeatureStore(run / "data_attribution.zarr"), proj_dim=32, quiet=True)
    per_image = ens.scores(MarginOutput(), RelabelledSubset(shapes_run["test"], other, 0))
    by_hand = per_image[:, marked].mean(1) - per_image[:, ~marked].mean(1)
    np.testing.assert_allclose(scores, by_hand, rtol=1e-3, atol=1e-4 * np.abs(by_hand).max())

    # the target's value on the final model, from its logits
    model = shapes_run["model"].eval()
    with torch.no_grad():
        logits = model(torch.stack([shapes_run["test"][int(i)][0] for i in other])).double()
    margin = (logits[:, 0] - torch.logsumexp(logits[:, 1:], 1)).numpy()
    assert d.model_contrast == pytest.approx(margin[marked].mean() - margin[~marked].mean(),
                                             abs=1e-5)

    # results round trip; a result written before shortcut targets existed still reads
    data = json.loads((run / "results" / "data_attribution.json").read_text())
    back = DataAttributionResult.from_dict(data)
    assert back.shortcuts == res.shortcuts
    data.pop("shortcuts")
    assert DataAttributionResult.from_dict(data).shortcuts == ()
    (t,) = [t for t in res.targets if t.kind == "shortcut"]
    assert t.precision is not None and t.precision.base_rate == pytest.approx(
        train_marked.mean())


@pytest.mark.parametrize(("target", "message"), [
    ("shortcut:marker:hexagon", "known classes: circle"),
    ("shortcut:colour:circle", "no ground truth for concept 'colour'"),
    ("shortcut:marker", "write shortcut:CONCEPT:CLASS"),
    ("shortcut:marker:4", "Unknown class '4'"),
])
def test_bad_shortcut_targets_are_refused_before_writing(shapes_run, target, message):
    from deepprofile.data_attribution.pipeline import run_data_attribution
    from deepprofile.errors import DeepProfileError

    run = shapes_run["run"]
    before = sorted(p.name for p in run.rglob("*"))
    with pytest.raises(DeepProfileError, match=message) as err:
        run_data_attribution(run, targets=[target],
                             proj_dim=32, quiet=True)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in run.rglob("*")) == before


def test_report_shows_the_shortcut_detector(shapes_run):
    from deepprofile.data_attribution.pipeline import run_data_attribution
    from deepprofile.report.context import ReportContext
    from deepprofile.report.sections.data_attribution import data_attribution_section

    run = shapes_run["run"]
    if not (run / "results" / "data_attribution.json").exists():
        run_data_attribution(run, targets=["shortcut:marker:circle"], proj_dim=32,
                             n_targets=N_TEST, k=5, quiet=True)
    sec = data_attribution_section(ReportContext(run, run))
    tables = [b for b in sec.blocks if getattr(b, "caption", "").startswith("Shortcut")]
    assert len(tables) == 1 and tables[0].rows[0][0] == "marker -> circle"


def test_prepare_refuses_a_test_set_without_both_kinds_of_other_class_images():
    from deepprofile.concepts.sets import ConceptSet
    from deepprofile.data_attribution.shortcut_target import prepare_shortcut
    from deepprofile.errors import DeepProfileError

    labels = np.array([0, 0, 1, 2, 1, 2])
    marked = np.array([True, True, False, False, False, False])  # only circles marked
    truth = ConceptSet(("marker",), np.array([[True, False, False, True]]), {})
    kw = {"class_names": ["circle", "square", "triangle"], "store_rows": np.arange(6) + 10,
          "store_labels": labels, "train_truth": truth, "n_targets": 8}
    with pytest.raises(DeepProfileError, match=r"found 0 and 4"):
        prepare_shortcut("shortcut:marker:circle", test_mask=lambda c: marked, **kw)
    marked[3] = True
    job = prepare_shortcut("shortcut:marker:0", test_mask=lambda c: marked, **kw)
    assert job.rows.tolist() == [12, 13, 14, 15] and job.marked.tolist() == [0, 1, 0, 0]
    assert job.train_mask.tolist() == [True, False, False, True]
