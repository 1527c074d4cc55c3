"""The README's command lines: every one parses as written (fast), and all of them run in
order on small settings (slow): fewer epochs, points, images and draws are substituted,
nothing else."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from deepprofile.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

#: (pattern, replacement) applied to the README commands in the slow run: sizes only.
SMALL = [
    (r"--epochs \d+", "--epochs 1"),
    (r"--n-points 1000", "--n-points 64"),
    (r"--preset quick", "--preset quick --n-images 2 --n-steps 2 --n-draws 2 --no-alignment"),
    (r"--n-draws 16", "--n-draws 2 --n-images 2 --n-steps 2 --no-big --no-alignment"),
    (r"--out reports/seeds", "--out reports/seeds --n-points 64"),
    (r"^topology --compare (.*)$", r"topology --compare \1 --n-points 64"),
    (r"--image-size 64", "--image-size 32"),
    (r"^concepts (.*)$", r"concepts \1 --no-tcav --no-baseline"),
]
#: Placeholders the reader replaces with their own folders; such lines are only parsed.
PLACEHOLDERS = ("=DIR", "DIR2")


def readme_commands() -> list[list[str]]:
    """Every ``deepprofile ...`` line of the README's bash blocks (continuations joined,
    comments dropped), without the leading ``deepprofile``."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words[:1] == ["deepprofile"]:
                    commands.append(words[1:])
    return commands


def test_readme_lists_every_command():
    names = {c[0] for c in readme_commands()}
    assert {"layers", "train", "capture", "topology", "mapper", "spectral", "attribute",
            "report", "compare", "run", "demo"} <= names


@pytest.mark.parametrize("args", readme_commands(), ids=lambda a: " ".join(a)[:60])
def test_readme_command_parses(args):
    """Each command and its options exist and every value passes the option's check."""
    group = typer.main.get_command(app)
    if args[0].startswith("--"):
        assert runner.invoke(app, args).exit_code == 0
        return
    with group.make_context("deepprofile", list(args)) as ctx:
        sub = group.get_command(ctx, args[0])
        assert sub is not None, args[0]
        sub.make_context(args[0], list(args[1:]), parent=ctx)


def _small(args: list[str]) -> list[str]:
    line = shlex.join(args)
    for pattern, repl in SMALL:
        line = re.sub(pattern, repl, line)
    return shlex.split(line)


def _inputs(cwd: Path) -> None:
    """What the README assumes the user has: an image folder, a weights file, the config."""
    import numpy as np
    import torch
    import yaml
    from PIL import Image

    from deepprofile.models import build_model

    rng = np.random.default_rng(0)
    for c, name in enumerate(["ant", "bee", "cat"]):
        (cwd / "images" / name).mkdir(parents=True)
        for j in range(5):
            pixels = rng.integers(0, 90, size=(36, 36, 3)) + 50 * c
            Image.fromarray(pixels.astype(np.uint8)).save(cwd / "images" / name / f"{j}.png")
    torch.manual_seed(0)
    torch.save(build_model("resnet18", num_classes=3).state_dict(), cwd / "weights.pt")
    config = yaml.safe_load((ROOT / "configs" / "digits.yaml").read_text())
    config["capture"]["limit"] = 64
    config["analyses"] = {
        "topology": {"cloud": "max_position", "n_points": 64, "metrics": ["sliced_wasserstein"]},
        "mapper": {"intervals": 8},
        "spectral": dict(config["analyses"]["spectral"]),
        "attribution": {"n_images": 2, "sigmas": [0.0, 0.1], "n_draws": 2, "n_steps": 2,
                        "robustness": False, "boundary": False, "alignment": False},
    }
    (cwd / "configs").mkdir()
    (cwd / "configs" / "digits.yaml").write_text(yaml.safe_dump(config))


@pytest.mark.slow
def test_readme_commands_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BROWSER", "true")  # `mapper --open` opens nothing
    _inputs(tmp_path)
    for args in readme_commands():
        if args[0] == "demo":
            continue  # the demo has its own test (tests/test_demo.py)
        if args[0] == "explore":
            continue  # serves until Ctrl+C; tests/explore starts and stops it
        if any(p in a for a in args for p in PLACEHOLDERS):
            continue
        args = _small(args) + (["--device", "cpu"] if args[0] in (
            "train", "capture", "attribute") else [])
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output, result.exception)
    assert (tmp_path / "reports" / "seed0.html").exists()
    assert (tmp_path / "reports" / "seeds" / "results" / "compare.json").exists()
    assert (tmp_path / "runs" / "mine" / "results" / "attribution.json").exists()
