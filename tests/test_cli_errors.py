"""Bad input at the command-line boundary: exit code 2, one line on stderr, nothing written.

Every case here printed a Python traceback (or silently did something else) before the
options were validated while parsing. The run folder used by the analysis commands is
snapshotted (names, sizes, modification times) and must be unchanged after each error.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from deepprofile.cli import app
from deepprofile.data import ArrayDataset, load_dataset
from deepprofile.errors import DeepProfileError, NonFiniteWeightsError
from deepprofile.models import SmallResNet, build_model, load_model, save_checkpoint
from deepprofile.workflow import capture_run

runner = CliRunner()
SHAPES = ["circle", "square", "triangle", "cross"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A 3-channel 4-class checkpoint, a 1-channel one, and a 16-image shapes run folder."""
    root = tmp_path_factory.mktemp("cli_errors")
    torch.manual_seed(0)
    net = SmallResNet(num_classes=4, in_channels=3, widths=(4, 8, 8)).eval()
    ckpt = save_checkpoint(root / "shapes.pt", net, "small_resnet",
                           {"in_channels": 3, "widths": (4, 8, 8)}, class_names=SHAPES)
    digits = save_checkpoint(root / "digits.pt", SmallResNet(in_channels=1, widths=(4, 8, 8)),
                             "small_resnet", {"in_channels": 1, "widths": (4, 8, 8)})
    model, info = load_model(ckpt)
    data = load_dataset("shapes", split="test", n=16)
    capture_run(model, data, root / "run", ["layer*"], reductions="max_position",
                model_info=info.to_dict(), checkpoint=info.source, chunk_size=8, quiet=True)
    return {"root": root, "ckpt": ckpt, "digits": digits, "run": root / "run"}


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory) -> Path:
    """A plain state_dict of a 4-class resnet18 with random weights."""
    path = tmp_path_factory.mktemp("r18") / "w.pt"
    torch.manual_seed(0)
    torch.save(build_model("resnet18", num_classes=4).state_dict(), path)
    return path


def snapshot(folder: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*") if p.is_file())


def assert_one_line_error(result, expect: str | None = None) -> str:
    """Exit code 2, exactly one line on stderr starting with ``error:``, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    err = result.stderr
    assert "Traceback" not in result.output
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    if expect is not None:
        assert expect in lines[0], lines[0]
    return lines[0]


BAD_OPTIONS = [
    (["layers", "small_resnet", "--input-size", "0", "0", "0"], "--input-size"),
    (["capture", "{ckpt}", "--reduction", "median"], "Unknown reduction"),
    (["capture", "{ckpt}", "--reduction", "positions:0"], "positions:k"),
    (["capture", "{ckpt}", "--batch-size", "0"], "--batch-size"),
    (["capture", "{ckpt}", "--chunk-size", "0"], "--chunk-size"),
    (["capture", "{ckpt}", "--image-size", "0", "--data", "folder"], "--image-size"),
    (["capture", "{ckpt}", "--device", "tpu"], "--device"),
    # an MPS device where there is none: was torch's RuntimeError with a traceback
    *([(["capture", "{ckpt}", "--device", "mps"], "no MPS device")]
      if not torch.backends.mps.is_available() else []),
    (["capture", "{ckpt}", "--limit", "0"], "--limit"),
    (["capture", "{ckpt}", "--data", "shapes", "--split", "validation"], "--split"),
    (["capture", "{ckpt}", "--data", "folder"], "--data-root"),
    (["capture", "{ckpt}", "--data", "imagenet"], "--data"),
    (["capture", "{ckpt}", "--normalize", "0.5"], "--normalize"),
    (["topology", "{run}", "--metric", "foo"], "--metric"),
    (["topology", "{run}", "--cloud", "foo"], "--cloud"),
    (["topology", "{run}", "--sampler", "foo"], "--sampler"),
    (["topology", "{run}", "--normalize", "foo"], "--normalize"),
    (["topology", "{run}", "--homology", "5"], "--homology"),
    (["topology", "{run}", "--cutoff-quantile", "2"], "--cutoff-quantile"),
    (["topology", "{run}", "--n-points", "0"], "--n-points"),
    (["attribute", "{run}", "--noise", "foo"], "--noise"),
    (["attribute", "{run}", "--n-draws", "0"], "--n-draws"),
    (["attribute", "{run}", "--n-steps", "0"], "--n-steps"),
    (["attribute", "{run}", "--eps", "-1"], "--eps"),
    (["attribute", "{run}", "--sde-sigma", "-1"], "--sde-sigma"),
    (["attribute", "{run}", "--sde-sigma", "nan"], "--sde-sigma"),
    (["attribute", "{run}", "--preset", "huge"], "--preset"),
    (["mapper", "{run}", "--lens", "foo"], "--lens"),
    (["mapper", "{run}", "--intervals", "0"], "--intervals"),
    (["mapper", "{run}", "--overlap", "1"], "--overlap"),
    (["mapper", "{run}", "--eps", "nan"], "--eps"),
    (["mapper", "{run}", "--min-samples", "0"], "--min-samples"),
    (["spectral", "{ckpt}", "--threshold", "2"], "--threshold"),
    (["spectral", "{ckpt}", "--n-vectors", "-2"], "--n-vectors"),
    (["spectral", "{ckpt}", "--mode", "both"], "--mode"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--lr", "-1"], "--lr"),
    (["train", "--data", "folder"], "--data-root"),
    (["run", "{run}"], "is a folder"),
    (["nosuchcommand"], "No such command"),
]


@pytest.mark.parametrize(("args", "expect"), BAD_OPTIONS, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else None)
def test_bad_options_are_one_line_errors(tiny, tmp_path, args, expect):
    before = snapshot(tiny["run"])
    out = tmp_path / "out"
    argv = [a.format(**tiny) for a in args]
    if argv[0] in ("capture", "train"):
        argv += ["--out", str(out)]
    assert_one_line_error(runner.invoke(app, argv), expect)
    assert snapshot(tiny["run"]) == before
    assert not out.exists()


def test_out_pointing_at_a_file(tiny):
    result = runner.invoke(app, ["capture", str(tiny["ckpt"]), "--out", str(tiny["ckpt"])])
    assert_one_line_error(result, "is a file")


def test_help_keeps_brackets_and_plain_flags():
    text = runner.invoke(app, ["attribute", "--help"]).output
    assert "[store rows]" in text and "<bool>" not in text
    assert "--no-robustness" in text and "--preset" in text and "--arch" in text


# -- weights files ------------------------------------------------------------------------
def test_unreadable_weights_files_say_what_they_are(tiny, tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("these are not weights\n")
    (tmp_path / "cut.pt").write_bytes(tiny["ckpt"].read_bytes()[:2000])
    for name, expect in (("empty.pt", "empty (0 bytes)"), ("text.pt", "a text file"),
                         ("cut.pt", "zip archive")):
        result = runner.invoke(app, ["capture", str(tmp_path / name), "--out",
                                     str(tmp_path / "r")])
        line = assert_one_line_error(result, expect)
        assert "expected a PyTorch weights file" in line and "101" not in line


def test_architecture_mismatch_is_one_line_naming_the_likely_arch(resnet18_weights):
    result = runner.invoke(app, ["layers", str(resnet18_weights), "--arch", "resnet34",
                                 "--input-size", "3", "32", "32"])
    line = assert_one_line_error(result, "do not fit resnet34")
    assert "missing keys (layer1.2." in line and "pass --arch resnet18" in line
    assert len(line) < 400
    result = runner.invoke(app, ["layers", str(resnet18_weights)])
    assert_one_line_error(result, "match resnet18")


def test_plain_state_dict_infers_the_class_count(resnet18_weights):
    model, info = load_model(resnet18_weights, arch="resnet18")
    assert info.num_classes == 4 and model.fc.out_features == 4


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, bad):
    net = SmallResNet(num_classes=4, in_channels=3, widths=(4, 8, 8))
    with torch.no_grad():
        net.fc.bias[1] = bad
    path = save_checkpoint(tmp_path / "bad.pt", net, "small_resnet",
                           {"in_channels": 3, "widths": (4, 8, 8)})
    with pytest.raises(NonFiniteWeightsError, match="fc.bias"):
        load_model(path)
    result = runner.invoke(app, ["capture", str(path), "--data", "shapes",
                                 "--out", str(tmp_path / "r")])
    assert_one_line_error(result, "NaN or inf")
    assert not (tmp_path / "r").exists()


def test_training_stops_on_a_non_finite_loss(tmp_path):
    from deepprofile.models.train import TrainConfig, train

    images = np.random.default_rng(0).normal(size=(16, 1, 8, 8)).astype(np.float32) * 1e30
    data = ArrayDataset(images, np.arange(16) % 2)
    config = TrainConfig(arch="small_resnet", arch_kwargs={"in_channels": 1, "widths": (4, 4, 4)},
                         epochs=1, batch_size=8, lr=0.1)
    with pytest.raises(NonFiniteWeightsError, match="diverged"):
        train(config, tmp_path / "t", train_set=data, test_set=data, quiet=True)
    assert not list((tmp_path / "t").rglob("*.pt"))
    with pytest.raises(DeepProfileError, match="learning rate"):
        train(TrainConfig(lr=float("nan")), tmp_path / "u", train_set=data, test_set=data)


# -- data the model cannot use ------------------------------------------------------------
def test_digits_model_on_shapes_is_one_line(tiny, tmp_path):
    result = runner.invoke(app, ["capture", str(tiny["digits"]), "--data", "shapes",
                                 "--limit", "8", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: The model does not accept")
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()


def _folder(root: Path, n: int = 3) -> Path:
    from PIL import Image

    for name in SHAPES:
        (root / name).mkdir(parents=True)
        for j in range(n):
            Image.fromarray(np.full((12, 12, 3), 60 * j, dtype=np.uint8)).save(
                root / name / f"{j}.png")
    return root


@pytest.mark.parametrize("damage", ["fake", "truncated"])
def test_damaged_image_in_a_folder_names_the_file(tiny, tmp_path, damage):
    root = _folder(tmp_path / "images")
    bad = root / "circle" / "0.png"
    if damage == "fake":
        bad.write_text("not an image")
    else:
        bad.write_bytes(bad.read_bytes()[:40])
    result = runner.invoke(app, ["capture", str(tiny["ckpt"]), "--data", "folder",
                                 "--data-root", str(root), "--image-size", "16",
                                 "--out", str(tmp_path / "r"), "-q"])
    assert result.exit_code == 2, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Cannot read image") and "circle/0.png" in last


def test_folder_classes_follow_the_checkpoint_order(tiny, tmp_path):
    root = _folder(tmp_path / "images", n=2)
    out = tmp_path / "r"
    result = runner.invoke(app, ["capture", str(tiny["ckpt"]), "--data", "folder",
                                 "--data-root", str(root), "--image-size", "16",
                                 "--normalize", "none", "--layer", "layer1", "--out", str(out),
                                 "-q"])
    assert result.exit_code == 0, result.output
    from deepprofile.rundir import RunDir

    overview = RunDir(out).read_overview()
    assert overview["class_names"] == SHAPES  # checkpoint order, not alphabetical
    assert "re-indexed by name" in overview["class_order"]
    assert overview["dataset"]["normalize"] == "none" and overview["dataset"]["std"] == [1.0] * 3
    store = RunDir(out).store()
    folder = load_dataset("folder", root=root, image_size=16)  # alphabetical by default
    assert folder.class_names == sorted(SHAPES)
    assert set(np.asarray(store.labels).tolist()) == {0, 1, 2, 3}


# -- property-based: any bad value of a checked option ------------------------------------
_WORD = st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=8)
_NOT_POSITIVE = st.one_of(st.integers(max_value=0).map(str), _WORD)
_NOT_FINITE_OR_NEG = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "NaN"]),
    st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False).map(repr), _WORD)
_CHOICES = {"--reduction": ["mean", "max", "max_position", "flatten"], "--device": ["cpu"],
            "--cloud": ["max_position", "image", "positions"], "--metric": ["bottleneck"],
            "--noise": ["additive", "multiplicative"], "--preset": ["quick"]}
OPTION_KINDS = [
    ("capture", "--batch-size", "int"), ("capture", "--limit", "int"),
    ("capture", "--chunk-size", "int"), ("capture", "--reduction", "choice"),
    ("capture", "--device", "choice"), ("topology", "--n-points", "int"),
    ("topology", "--cloud", "choice"), ("topology", "--metric", "choice"),
    ("topology", "--cutoff-quantile", "float"), ("attribute", "--n-draws", "int"),
    ("attribute", "--n-steps", "int"), ("attribute", "--eps", "float"),
    ("attribute", "--sde-sigma", "float"), ("attribute", "--noise", "choice"),
    ("attribute", "--preset", "choice"), ("spectral", "--n-vectors", "int"),
    ("spectral", "--threshold", "float"), ("train", "--epochs", "int"),
    ("mapper", "--intervals", "int"), ("mapper", "--overlap", "float"),
    ("train", "--lr", "float"),
]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_bad_option_value_is_one_line_and_writes_nothing(tiny, data):
    command, option, kind = data.draw(st.sampled_from(OPTION_KINDS))
    if kind == "int":
        value = data.draw(_NOT_POSITIVE)
    elif kind == "float":
        value = data.draw(_NOT_FINITE_OR_NEG)
    else:
        value = data.draw(_WORD.filter(lambda w, o=option: w not in _CHOICES[o]))
    target = {"capture": str(tiny["ckpt"]), "spectral": str(tiny["ckpt"]),
              "topology": str(tiny["run"]), "attribute": str(tiny["run"]),
              "mapper": str(tiny["run"])}.get(command)
    out = tiny["root"] / "never"
    argv = [command] + ([target] if target else []) + [f"{option}={value}"]
    if command in ("capture", "train"):
        argv += ["--out", str(out)]
    before = snapshot(tiny["run"])
    assert_one_line_error(runner.invoke(app, argv), option)
    assert snapshot(tiny["run"]) == before and not out.exists()


@settings(max_examples=25, deadline=None)
@given(blob=st.binary(max_size=64))
def test_any_unreadable_weights_file_is_one_deepprofile_error(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("blob") / "w.pt"
    path.write_bytes(blob)
    with pytest.raises(DeepProfileError) as info:
        load_model(path, arch="resnet18")
    assert "\n" not in str(info.value)


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(0, 3), min_size=0, max_size=6),
       n_labels=st.integers(0, 4))
def test_array_inputs_with_bad_shapes_raise_deepprofile_errors(shape, n_labels):
    images = np.zeros(shape, dtype=np.float32)
    ok = images.ndim in (3, 4) and images.shape[0] > 0 and n_labels == images.shape[0]
    if ok:
        assert len(ArrayDataset(images, np.zeros(n_labels, dtype=int))) == n_labels
    else:
        with pytest.raises(DeepProfileError) as info:
            ArrayDataset(images, np.zeros(n_labels, dtype=int))
        assert "\n" not in str(info.value)


@settings(max_examples=40, deadline=None)
@given(text=st.text(max_size=20))
def test_normalization_text_is_parsed_or_refused_in_one_line(text):
    from deepprofile.data.folder import parse_normalization

    try:
        parsed = parse_normalization(text)
    except DeepProfileError as exc:
        assert "\n" not in str(exc)
        return
    if isinstance(parsed, tuple):
        mean, std = parsed
        assert len(mean) == len(std) == 3 and min(std) > 0
        assert all(np.isfinite(mean)) and all(np.isfinite(std))
    else:
        assert parsed in ("imagenet", "dataset", "none")


def test_topology_refuses_an_edited_reduction_instead_of_dropping_the_layer(tiny, tmp_path):
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny["run"], run)
    meta_file = run / "activations.zarr" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["deepprofile"]["layers"]["layer2"]["reduction"] = "mean"
    meta_file.write_text(json.dumps(meta))
    result = runner.invoke(app, ["topology", str(run), "--n-points", "8", "-q"])
    line = assert_one_line_error(result)
    assert "layer2" in line
    assert not (run / "results" / "topology.json").exists()


def test_non_finite_logits_stop_a_capture_from_python(tmp_path):
    from deepprofile.capture import capture_to_store
    from deepprofile.errors import NonFiniteActivationError

    net = SmallResNet(num_classes=4, in_channels=3, widths=(4, 8, 8)).eval()
    with torch.no_grad():
        net.fc.weight[0, 0] = float("inf")  # bypasses load_model's weight check
    data = load_dataset("shapes", split="test", n=8)
    with pytest.raises(NonFiniteActivationError, match="logits"):
        capture_to_store(net, data, ["layer1"], tmp_path / "s.zarr", quiet=True)
