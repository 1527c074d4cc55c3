"""Stale analyses: results record their store's identity; --overwrite moves them aside;
check_result_identity tells current from stale (issue 16, item 2)."""

from __future__ import annotations

import json

import pytest
import torch

from deepprofile.errors import StaleResultError
from deepprofile.results import write_json
from deepprofile.rundir import RunDir, check_result_identity, require_current
from deepprofile.workflow import capture_run


def _run(net, dataset, run_dir, **kw):
    return capture_run(net, dataset, run_dir, ["conv2", "fc"], batch_size=10, chunk_size=20,
                       quiet=True, **kw)


def test_results_record_identity_and_overwrite_moves_them_aside(tiny_net, tiny_dataset,
                                                                 tmp_path):
    run_dir = tmp_path / "run"
    run, store = _run(tiny_net, tiny_dataset, run_dir)
    rd = RunDir(run_dir)
    # an analysis writing through RunDir, and one writing the file itself (as topology does)
    rd.write_result("mapper", {"provenance": {"store": str(store.path)}, "layers": {}})
    write_json(rd.result_path("topology"), {"layers": ["fc"]})
    old = {name: rd.read_result(name) for name in ("capture", "mapper", "topology")}
    for name, data in old.items():
        ident = data["store_identity"]
        assert ident == {"store": "activations.zarr", "weights_hash": store.metadata[
            "weights_hash"], "fingerprint": store.fingerprint()}, name
        assert check_result_identity(data, run_dir, name).status == "current"

    with torch.no_grad():
        tiny_net.fc.bias.add_(1.0)  # other weights, same architecture
    _, new_store = _run(tiny_net, tiny_dataset, run_dir, overwrite=True)
    assert new_store.fingerprint() != store.fingerprint()
    aside = sorted(run_dir.glob("results.stale-*"))
    assert len(aside) == 1
    assert sorted(p.name for p in aside[0].glob("*.json")) == [
        "capture.json", "mapper.json", "topology.json"]
    assert sorted(p.name for p in rd.results_dir.glob("*.json")) == ["capture.json"]

    stale = json.loads((aside[0] / "topology.json").read_text())
    verdict = check_result_identity(stale, run_dir, "topology")
    assert verdict.status == "stale" and "Run the analysis again" in verdict.message
    assert verdict.current["fingerprint"] == new_store.fingerprint()
    with pytest.raises(StaleResultError, match="earlier capture"):
        require_current(stale, run_dir, "topology")
    assert require_current(rd.read_result("capture"), run_dir).ok
    assert check_result_identity({"layers": []}, run_dir).status == "unknown"


def test_same_capture_repeated_keeps_the_fingerprint(tiny_net, tiny_dataset, tmp_path):
    _, a = _run(tiny_net, tiny_dataset, tmp_path / "a")
    _, b = _run(tiny_net, tiny_dataset, tmp_path / "b")
    assert a.fingerprint() == b.fingerprint() == a._compute_fingerprint()
    _, c = _run(tiny_net, tiny_dataset, tmp_path / "c", seed=1, indices=range(40))
    assert c.fingerprint() != a.fingerprint()


def test_other_store_results_stay_on_overwrite(tiny_net, tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    _run(tiny_net, tiny_dataset, run_dir)
    _, other = _run(tiny_net, tiny_dataset, run_dir, store_name="other.zarr")
    rd = RunDir(run_dir)
    rd.write_result("topology_other", {"store": str(other.path)})
    assert rd.read_result("topology_other")["store_identity"]["store"] == "other.zarr"
    _run(tiny_net, tiny_dataset, run_dir, overwrite=True)
    assert rd.has_result("topology_other") and rd.has_result("capture_other")
    (run_dir / "other.zarr").rename(run_dir / "gone.zarr")
    verdict = check_result_identity(rd.read_result("topology_other"), run_dir)
    assert verdict.status == "missing"
