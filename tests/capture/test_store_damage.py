"""Damaged stores: a capture verifies before it trusts, and every store-format error is a
one-line CorruptStoreError (issue 16, items 1 and the store-format list)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepprofile.capture import ActivationStore
from deepprofile.capture.stats import capture_stats
from deepprofile.errors import CorruptStoreError
from deepprofile.workflow import capture_run

REDS = {"conv1": "positions:3", "conv2": "mean", "fc": "mean"}


def _run(net, dataset, run_dir, **kw):
    return capture_run(net, dataset, run_dir, ["conv1", "conv2", "fc"], reductions=REDS,
                       batch_size=8, chunk_size=16, quiet=True, seed=5, **kw)


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of the run outside the store, byte for byte."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and "activations.zarr" not in p.parts}


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("damage", ["layer chunk", "labels chunk", "array shape"])
def test_capture_on_damaged_complete_store_refuses_and_rewrites_nothing(
        tiny_net, tiny_dataset, tmp_path, damage):
    run_dir = tmp_path / "run"
    _run(tiny_net, tiny_dataset, run_dir)
    store = run_dir / "activations.zarr"
    if damage == "layer chunk":
        (store / "layers" / "conv2" / "c" / "1" / "0").unlink()
    elif damage == "labels chunk":
        (store / "labels" / "c" / "2").unlink()
    else:
        def grow(meta):
            meta["shape"][0] = 64
        _edit_json(store / "layers" / "fc" / "zarr.json", grow)
    before = _snapshot(run_dir)
    with pytest.raises(CorruptStoreError) as info:
        _run(tiny_net, tiny_dataset, run_dir)
    assert "\n" not in str(info.value) and str(store) in str(info.value)
    assert _snapshot(run_dir) == before


def test_resume_checks_committed_chunks(tiny_net, tiny_dataset, tmp_path):
    from deepprofile.capture.runner import prepare_store

    path = tmp_path / "s.zarr"
    kw = dict(reductions=REDS, batch_size=8, chunk_size=16, seed=5)
    store, rows = prepare_store(tiny_net, tiny_dataset, ["conv1", "conv2", "fc"], path, **kw)
    from deepprofile.capture.runner import fill_chunks

    fill_chunks(tiny_net, tiny_dataset, store, rows, [0, 1], batch_size=8)
    (path / "logits" / "c" / "1" / "0").unlink()
    with pytest.raises(CorruptStoreError, match="Chunk 1 of 'logits'"):
        prepare_store(tiny_net, tiny_dataset, ["conv1", "conv2", "fc"], path, **kw)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _set_digest(path: Path, chunk_id: int, key: str) -> None:
    """Rewrite one digest in a commit record (a valid file, a wrong checksum)."""
    import zarr

    store = ActivationStore.open(path)
    column = store.array_keys().index(key)
    commits = zarr.open_array(str(path / "commits"), mode="r+")
    commits[chunk_id, column] = commits[chunk_id, column] ^ 1


# each damage, and the first read that meets it (as an analysis would)
DAMAGES = {
    "flip commit record": lambda path: ActivationStore.open(path).is_complete,
    "commits deleted": lambda path: ActivationStore.open(path).is_complete,
    "flip digests": lambda path: capture_stats(ActivationStore.open(path)),
    "indices chunk": lambda path: ActivationStore.open(path, verify=False).indices,
    "n_samples text": ActivationStore.open,
    "empty attributes": ActivationStore.open,
    "empty metadata": None,  # met by the capture run again
    "reduction not text": ActivationStore.open,
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_store_format_errors_are_corrupt_store_errors(tiny_net, tiny_dataset, tmp_path, damage):
    path = tmp_path / "run" / "activations.zarr"
    _run(tiny_net, tiny_dataset, tmp_path / "run")
    attrs = path / "zarr.json"
    if damage == "flip commit record":
        _flip(path / "commits" / "c" / "1" / "0")
    elif damage == "commits deleted":
        import shutil

        shutil.rmtree(path / "commits")
    elif damage == "flip digests":
        _set_digest(path, 0, "layers/conv2")
    elif damage == "indices chunk":
        (path / "indices" / "c" / "0").unlink()
    elif damage == "n_samples text":
        _edit_json(attrs, lambda m: m["attributes"]["deepprofile"].update(n_samples="fifty"))
    elif damage == "empty attributes":
        _edit_json(attrs, lambda m: m["attributes"].update(deepprofile={}))
    elif damage == "empty metadata":
        _edit_json(attrs, lambda m: m["attributes"]["deepprofile"].update(metadata={}))
    else:
        _edit_json(attrs, lambda m: m["attributes"]["deepprofile"]["layers"]["conv2"].update(
            reduction=None))
    with pytest.raises(CorruptStoreError) as info:
        if DAMAGES[damage] is None:
            _run(tiny_net, tiny_dataset, tmp_path / "run")
        else:
            DAMAGES[damage](path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
