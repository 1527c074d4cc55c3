"""Range checks of the analyses' numeric options, shared by the Python API and run configs.

The command line refuses out-of-range values while parsing (:mod:`deepprofile.cliparams`);
these checks give the same limits to the public entry points (``run_spectral``,
``run_topology``, ``run_mapper``, ``run_attribution``) and to the ``analyses:`` section of a
run configuration, so that ``n_vectors=-2`` is a one-line error instead of a silently
different analysis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from deepprofile.errors import DeepProfileError


class ParameterError(DeepProfileError, ValueError):
    """An analysis option is of the wrong kind or out of its range."""


@dataclass(frozen=True)
class Range:
    """An integer or finite float in ``[lo, hi]`` (``*_open`` excludes that bound);
    ``optional`` allows ``None``; ``each`` checks every item of a sequence instead."""

    kind: type = int
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    optional: bool = False
    each: bool = False

    def describe(self) -> str:
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
        noun = "an integer" if self.kind is int else "a finite number"
        return f"{noun} {' and '.join(parts)}".strip()

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is refused, or ``None`` when it is fine."""
        if value is None:
            return None if self.optional else f"must be {self.describe()}"
        if self.each:
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                return "must be a list of values"
            for item in value:
                why = Range(self.kind, self.lo, self.hi, self.lo_open, self.hi_open).problem(item)
                if why is not None:
                    return f"items {why}, got {item!r} in {list(value)!r}"
            return None
        if isinstance(value, bool):
            return f"must be {self.describe()}"
        if self.kind is int:
            if not isinstance(value, Integral):
                return f"must be {self.describe()}"
        elif not isinstance(value, Real) or not math.isfinite(float(value)):
            return f"must be {self.describe()}"
        x = float(value)
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return f"must be {self.describe()}"
        if self.hi is not None and (x >= self.hi if self.hi_open else x > self.hi):
            return f"must be {self.describe()}"
        return None


def _int(lo: int | None = None, hi: int | None = None, **kw: Any) -> Range:
    return Range(int, lo, hi, **kw)


def _num(lo: float | None = None, hi: float | None = None, **kw: Any) -> Range:
    return Range(float, lo, hi, **kw)


SEED = _int(0)

#: Limits per analysis and keyword, the same as the command line's.
RULES: dict[str, dict[str, Range]] = {
    "spectral": {
        "threshold": _num(0, 1, lo_open=True), "n_vectors": _int(1, optional=True),
        "max_projection_layers": _int(1), "n_bootstrap": _int(0),
        "shared_fraction": _num(0, 1), "batch_size": _int(1), "seed": SEED,
    },
    "topology": {
        "n_points": _int(2, optional=True), "positions_k": _int(1),
        "cutoff_quantile": _num(0, 1, lo_open=True, optional=True),
        "homology": _int(0, 3, each=True), "sensitivity_k": _int(0, each=True),
        "n_threads": _int(1), "seed": SEED,
    },
    "mapper": {
        "intervals": _int(1), "overlap": _num(0, 1, hi_open=True),
        "eps": _num(0, lo_open=True, optional=True), "min_samples": _int(1), "seed": SEED,
    },
    "attribution": {
        "n_images": _int(1), "sigmas": _num(0, each=True), "n_draws": _int(1),
        "n_steps": _int(1), "robust_images": _int(1),
        "eps": _num(0, lo_open=True, optional=True), "finetune_steps": _int(0),
        "finetune_sigma": _num(0, lo_open=True, optional=True), "seed": SEED,
        "shard_size": _int(1),
    },
    "data_attribution": {
        "proj_dim": _int(1, optional=True), "lambda_reg": _num(0), "ridge": _num(0),
        "n_targets": _int(1), "k": _int(1), "batch_size": _int(1), "projector_seed": SEED,
    },
}


def check_options(analysis: str, values: Mapping[str, Any], *, prefix: str = "",
                  error: type[DeepProfileError] = ParameterError) -> None:
    """Raise ``error`` (one line naming ``prefix + key``) for the first value in ``values``
    outside the limits of ``RULES[analysis]``; keys without a rule are not looked at."""
    rules = RULES[analysis]
    for key, value in values.items():
        if key in rules:
            check_value(f"{prefix}{key}", value, rules[key], error=error)


def check_value(name: str, value: Any, rule: Range, *,
                error: type[DeepProfileError] = ParameterError) -> None:
    """Raise ``error`` (one line naming ``name``) when ``value`` is outside ``rule``."""
    why = rule.problem(value)
    if why is not None:
        got = "" if why.startswith("items") else f", got {value!r}"
        raise error(f"{name} {why}{got}.")
