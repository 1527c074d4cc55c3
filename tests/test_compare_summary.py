"""The printed comparison summary stays a readable table at 54 weight layers."""

from __future__ import annotations

from deepprofile.compare import ComparisonResult, summarize_comparison


def test_principal_angles_print_as_a_capped_table():
    rows = [{"layer": f"layer{i}.conv", "k": 8, "dim": 64, "min_deg": 10.0 + i,
             "mean_deg": 40.0 + i % 30, "max_deg": 80.0, "random_mean_deg": 70.0,
             "random_min_deg": 50.0, "angles_deg": [40.0] * 8} for i in range(54)]
    result = ComparisonResult(
        run_a={"path": "A"}, run_b={"path": "B"}, checks={"common_layers": ["x"], "notes": []},
        principal_angles={"k": 8, "layers": rows}, params={"k": 8})
    text = summarize_comparison(result, max_rows=12)
    lines = text.splitlines()
    assert max(len(line) for line in lines) < 100
    assert sum("layer" in line and ".conv" in line for line in lines) == 12
    assert "... 42 more ..." in text and "54 weight layers" in text
    below = sum(1 for r in rows if r["mean_deg"] < r["random_mean_deg"] - 5)
    assert f"{below} clearly below the random level" in text
    assert "layer0.conv" in text and "layer53.conv" in text


def test_missing_principal_angles_are_said():
    result = ComparisonResult(run_a={"path": "A"}, run_b={"path": "B"},
                              checks={"common_layers": [], "notes": ["run A: model not loaded"]},
                              params={"k": 8})
    text = summarize_comparison(result)
    assert "Principal angles: not computed" in text and "model not loaded" in text
