"""A damaged ``attribution_finetuned.pt`` is treated as absent, never a traceback (issue 17
probe): truncated, not a dict, or a dict whose fields are missing or of the wrong type."""

from __future__ import annotations

import pytest
import torch

from deepprofile.attribution.finetuned import FILE_NAME, _load, _save, load_finetuned
from deepprofile.errors import DeepProfileError

IDENTITY = {"sigma": 0.1, "steps": 2}


def _damage(path, how):
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:100])
        return
    saved = torch.load(path, weights_only=True)
    if how == "not a dict":
        saved = torch.zeros(3)
    elif how == "no weights_hash":
        del saved["weights_hash"]
    elif how == "losses not numbers":
        saved["losses"] = ["nan?", {}]
    elif how == "no losses":
        del saved["losses"]
    torch.save(saved, path)


@pytest.mark.parametrize("how", ["truncated", "not a dict", "no weights_hash",
                                 "losses not numbers", "no losses"])
def test_damaged_finetuned_file_is_absent(tiny_net, tmp_path, how):
    path = tmp_path / FILE_NAME
    digest = _save(path, IDENTITY, tiny_net, [1.0, 0.5])
    assert _load(path, IDENTITY, tiny_net)[2] == digest  # intact: loads
    _damage(path, how)
    assert _load(path, IDENTITY, tiny_net) is None
    with pytest.raises(DeepProfileError, match="missing or not the ones"):
        load_finetuned(tiny_net, path, digest)
