"""The public analysis entry points refuse out-of-range numeric options with one line
(before any work), with the same limits as the command line."""

from __future__ import annotations

import inspect
import math

import pytest
import torch.nn as nn

from deepprofile.errors import DeepProfileError
from deepprofile.validate import RULES, ParameterError, check_options


def _spectral(**kw):
    from deepprofile.spectral.pipeline import run_spectral

    return run_spectral(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2)),
                        None, quiet=True, **kw)


def _topology(tmp_path, **kw):
    from deepprofile.topology.pipeline import run_topology

    return run_topology(tmp_path / "no_run", quiet=True, write=False, **kw)


def _mapper(tmp_path, **kw):
    from deepprofile.mapper.pipeline import run_mapper

    return run_mapper(tmp_path / "no_run", quiet=True, **kw)


def _attribution(tmp_path, **kw):
    from deepprofile.attribution.pipeline import run_attribution

    return run_attribution(nn.Linear(2, 2), None, [], quiet=True, **kw)


BAD = [
    ("spectral", {"n_vectors": -2}), ("spectral", {"n_vectors": 0}),
    ("spectral", {"threshold": 0.0}), ("spectral", {"threshold": math.nan}),
    ("spectral", {"n_bootstrap": -1}), ("spectral", {"batch_size": 2.5}),
    ("topology", {"n_points": 0}), ("topology", {"n_points": 1}),
    ("topology", {"cutoff_quantile": 2.0}), ("topology", {"homology": [0, 5]}),
    ("topology", {"n_threads": 0}), ("topology", {"seed": -1}),
    ("mapper", {"intervals": 0}), ("mapper", {"overlap": 1.0}), ("mapper", {"overlap": -0.1}),
    ("mapper", {"eps": 0.0}), ("mapper", {"eps": math.inf}), ("mapper", {"min_samples": True}),
    ("attribution", {"n_draws": 0}), ("attribution", {"n_steps": 0}),
    ("attribution", {"sigmas": (0.0, -1.0)}), ("attribution", {"sigmas": (0.0, math.nan)}),
    ("attribution", {"eps": -1.0}), ("attribution", {"n_images": "4"}),
]


@pytest.mark.parametrize("analysis,kw", BAD, ids=[f"{a}-{next(iter(k))}={next(iter(k.values()))}"
                                                  for a, k in BAD])
def test_bad_value_is_a_one_line_error(tmp_path, analysis, kw):
    call = {"spectral": lambda: _spectral(**kw), "topology": lambda: _topology(tmp_path, **kw),
            "mapper": lambda: _mapper(tmp_path, **kw),
            "attribution": lambda: _attribution(tmp_path, **kw)}[analysis]
    key = next(iter(kw))
    with pytest.raises(ParameterError, match=rf"^{key} (items )?must be") as info:
        call()
    assert isinstance(info.value, DeepProfileError) and "\n" not in str(info.value)


def test_defaults_and_boundaries_pass():
    from deepprofile.attribution.pipeline import run_attribution
    from deepprofile.mapper.pipeline import run_mapper
    from deepprofile.spectral.pipeline import run_spectral
    from deepprofile.topology.pipeline import TopologyAnalysis

    for name, func in (("spectral", run_spectral), ("topology", TopologyAnalysis),
                       ("mapper", run_mapper), ("attribution", run_attribution)):
        defaults = {k: p.default for k, p in inspect.signature(func).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        assert set(RULES[name]) <= set(defaults) | {"n_points", "seed"}, name
        check_options(name, defaults)
    check_options("mapper", {"overlap": 0.0, "intervals": 1, "eps": 1e-9})
    check_options("topology", {"n_points": 2, "cutoff_quantile": 1.0, "homology": (0, 3)})
    check_options("spectral", {"n_vectors": None, "threshold": 1.0})


def test_prefix_and_error_class():
    class Mine(DeepProfileError):
        pass

    with pytest.raises(Mine, match=r"^topology\.n_points must be an integer >= 2, got 0\.$"):
        check_options("topology", {"n_points": 0}, prefix="topology.", error=Mine)
