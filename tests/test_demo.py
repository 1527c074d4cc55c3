"""The README's first quickstart command: the demo runs end to end (small settings)."""

from __future__ import annotations

import json

from deepprofile.demo import run_demo


def test_demo_end_to_end(tmp_path):
    lines: list[str] = []
    paths = run_demo(tmp_path / "demo", fast=True, quiet=True, echo=lines.append)
    out = tmp_path / "demo"
    assert paths["report"] == out / "index.html" and paths["report"].stat().st_size > 100_000
    assert paths["compare"].exists()
    for seed in ("seed0", "seed1"):
        results = {p.stem for p in (out / seed / "results").glob("*.json")}
        assert {"capture", "topology", "mapper", "spectral"} <= results
        assert (out / "models" / seed / "final.pt").exists()
    assert (out / "seed0" / "results" / "attribution.json").exists()
    compare = json.loads((out / "compare" / "results" / "compare.json").read_text())
    assert compare["topology"]["layers_a"] == ["stem", "layer1", "layer2", "layer3"]
    text = "\n".join(lines)
    assert "specificity" in text.lower() and "report:" in text
    spurious = json.loads((out / "shapes" / "results" / "spurious.json").read_text())
    assert set(spurious["detection"]) == {"attribution", "probe", "tcav", "behaviour"}
    for name in ("spurious", "clean"):
        assert (out / "shapes" / name / "results" / "concepts.json").exists()
    assert paths["shapes"]["report"].exists() and "spurious-signal detection" in text
    # a second run reuses the trained checkpoints instead of training again
    lines.clear()
    run_demo(tmp_path / "demo", fast=True, quiet=True, echo=lines.append)
    assert any("using trained model" in line for line in lines)
