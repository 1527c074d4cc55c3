"""Select layers of a model by module path or glob pattern."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence

from torch import nn

from deepprofile.errors import UnknownLayerError


def module_names(model: nn.Module) -> list[str]:
    """Every selectable module path of ``model`` (the root, named ``""``, excluded)."""
    return [name for name, _ in model.named_modules() if name]


def close_matches(name: str, candidates: Sequence[str], n: int = 5) -> list[str]:
    """Candidates that look like ``name`` (typos, missing prefixes), best first."""
    found = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    tail = name.split(".")[-1]
    for cand in candidates:
        if len(found) >= n:
            break
        if cand not in found and (cand.endswith("." + tail) or name in cand):
            found.append(cand)
    return found


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a module-path glob: ``*`` and ``?`` stay within one path component
    (``layer*`` matches ``layer1`` but not ``layer1.conv1``), ``**`` crosses dots,
    ``[...]`` is a character class."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if ch == "*":
            out.append(r"[^.]*")
        elif ch == "?":
            out.append(r"[^.]")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1 : end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z")


def resolve_layers(model: nn.Module, selectors: str | Iterable[str]) -> list[str]:
    """Expand exact module paths and glob patterns into module paths, in model order.

    Globs follow :func:`glob_to_regex`: ``layer*`` selects ``layer1``..``layer4``,
    ``layer*.*`` their children, ``**.conv1`` every ``conv1`` at any depth.

    Raises :class:`UnknownLayerError` naming the selector and its close matches when
    a selector matches nothing.
    """
    if isinstance(selectors, str):
        selectors = [selectors]
    selectors = list(selectors)
    if not selectors:
        raise UnknownLayerError("No layers selected; pass module paths or glob patterns.")
    names = module_names(model)
    chosen: set[str] = set()
    for sel in selectors:
        if any(ch in sel for ch in "*?["):
            regex = glob_to_regex(sel)
            hits = [n for n in names if regex.match(n)]
        else:
            hits = [sel] if sel in names else []
        if not hits:
            suggestions = close_matches(sel, names)
            hint = (
                f" Did you mean: {', '.join(suggestions)}?"
                if suggestions
                else " Run `deepprofile layers MODEL` to list them."
            )
            raise UnknownLayerError(
                f"Layer {sel!r} matches no module of {type(model).__name__}.{hint}"
            )
        chosen.update(hits)
    return [n for n in names if n in chosen]
