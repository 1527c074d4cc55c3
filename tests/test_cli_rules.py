"""The command line's option limits are those of ``validate.RULES`` (no drift between the
CLI parsers and the Python API's checks)."""

from __future__ import annotations

import math
import typing

import pytest
import typer
from typer.testing import CliRunner

from deepprofile.cli import app
from deepprofile.validate import RULES, Range

COMMANDS = {"spectral": "spectral", "topology": "topology", "mapper": "mapper",
            "attribute": "attribution", "data-attribution": "data_attribution"}
#: CLI parameter names that differ from their RULES key.
ALIASES = {
    "spectral": {"max_layers": "max_projection_layers", "bootstrap": "n_bootstrap"},
    "topology": {"threads": "n_threads"},
    "attribution": {"sde_sigma": "sigmas"},
    "data_attribution": {"seed": "projector_seed"},
}


def _options(command: str) -> dict[str, typer.models.OptionInfo]:
    func = typer.main.get_command(app).commands[command].callback
    hints = typing.get_type_hints(func, include_extras=True)
    return {name: info for name, hint in hints.items()
            for info in getattr(hint, "__metadata__", ())
            if isinstance(info, typer.models.OptionInfo)}


def _ruled(analysis: str, command: str) -> list[tuple[str, str, typer.models.OptionInfo]]:
    aliases = ALIASES.get(analysis, {})
    return [(name, aliases.get(name, name), info) for name, info in _options(command).items()
            if aliases.get(name, name) in RULES[analysis]]


def _probes(rule: Range) -> list[float]:
    """Each bound, its neighbours on both sides, and a value inside."""
    values: list[float] = [0.5, 3]
    for bound in (rule.lo, rule.hi):
        if bound is None:
            continue
        if rule.kind is int:
            values += [bound - 1, bound, bound + 1]
        else:
            values += [math.nextafter(bound, -math.inf), bound, math.nextafter(bound, math.inf)]
    return values


@pytest.mark.parametrize("command,analysis", COMMANDS.items())
def test_every_ruled_cli_option_has_the_rules_limits(command, analysis):
    ruled = _ruled(analysis, command)
    names = {key for _, key, _ in ruled}
    assert set(ALIASES.get(analysis, {}).values()) <= names, "an alias names no CLI option"
    assert len(ruled) >= 5
    for name, key, info in ruled:
        rule = RULES[analysis][key]
        item = Range(rule.kind, rule.lo, rule.hi, rule.lo_open, rule.hi_open)
        assert info.parser is not None, f"{command} --{name} has no range parser"
        for value in _probes(rule):
            if rule.kind is int and value != int(value):
                continue
            text = str(int(value)) if rule.kind is int else repr(float(value))
            try:
                info.parser(text)
                accepted = True
            except typer.BadParameter:
                accepted = False
            expected = item.problem(int(value) if rule.kind is int else float(value)) is None
            assert accepted == expected, (command, name, text, item.describe())


@pytest.mark.parametrize("args,option", [
    (["--k", "0"], "--k"), (["--ridge", "-1"], "--ridge"), (["--proj-dim", "0"], "--proj-dim"),
    (["--seed", "-1"], "--seed")])
def test_data_attribution_refuses_out_of_range_values_while_parsing(tmp_path, args, option):
    result = CliRunner().invoke(app, ["data-attribution", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert option in result.output
    assert not list(tmp_path.iterdir())
