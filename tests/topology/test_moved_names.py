"""Mapper names moved to deepprofile.mapper stay importable from deepprofile.topology for one
release, with a DeprecationWarning (issue 11)."""

from __future__ import annotations

import pytest

import deepprofile.mapper as mapper
import deepprofile.topology as topology


@pytest.mark.parametrize("name", sorted(topology._MOVED_TO_MAPPER))
def test_old_topology_name_warns_and_forwards(name: str) -> None:
    with pytest.warns(DeprecationWarning, match=f"deepprofile.mapper.{name}"):
        obj = getattr(topology, name)
    assert obj is getattr(mapper, name)


def test_unknown_name_still_raises() -> None:
    with pytest.raises(AttributeError):
        topology.no_such_name  # noqa: B018
