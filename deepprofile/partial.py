"""Finished layers of an unfinished analysis, kept so that a killed job resumes (issue 17).

Topology, mapper and spectral work layer by layer (one Dask task per layer with
``--scheduler``). Each layer's result is written, as soon as it is computed, atomically to
``RUN_DIR/results/.partial/<analysis>/<stage>/<layer>.<digest>.json``, by whichever
process computed it (a Dask worker, or the command's process). The digest covers
everything that result depends on: the layer's input (its cloud's points, the store's
fingerprint, the module's weights) and every setting that reaches it. Running the same
command again reads the finished layers back and computes only the missing ones; other
settings or another store give another digest, so their files are never read. The analysis
deletes its ``.partial/<analysis>`` folder once ``results/<analysis>.json`` is written.

Every layer's result, fresh or reused, goes through the same JSON text (computed ->
text -> decoded), so a resumed run ends bit for bit like one that was never interrupted. A
file that cannot be read, is truncated or damaged (its checksum), or carries another key is
ignored and the layer computed again.

The ``layer-saved`` fault-injection point (:mod:`deepprofile.testhooks`) follows each
written file, for the kill tests.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepprofile.results import jsonable, write_text

PARTIAL_DIR = ".partial"
FORMAT = 1


def canonical(obj: Any) -> str:
    """``obj`` as canonical JSON text (numpy values converted, keys sorted)."""
    return json.dumps(jsonable(obj), sort_keys=True, allow_nan=True)


def digest(obj: Any) -> str:
    """SHA-256 (hex) of ``obj``'s canonical JSON."""
    return hashlib.sha256(canonical(obj).encode()).hexdigest()


def array_digest(array: Any) -> str:
    """SHA-256 (first 32 hex digits) of an array's dtype, shape and bytes."""
    import numpy as np

    arr = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(memoryview(arr.reshape(-1)).cast("B") if arr.size else b"")
    return h.hexdigest()[:32]


def module_digest(module: Any) -> str:
    """Identity of one torch module: its type and hyperparameters (``repr``) and weights."""
    from deepprofile.provenance import weights_hash

    return digest({"repr": repr(module), "weights": weights_hash(module)})


def encode(result: Any) -> str:
    """A layer's result (a dataclass with ``to_dict`` or plain data) as JSON text."""
    return json.dumps(jsonable(result), allow_nan=True)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:80] or "_"


@dataclass(frozen=True)
class Slot:
    """Where one layer's finished result lives and the key it must carry (small and
    picklable: Dask ships it to the worker that computes the layer)."""

    path: str
    key: str  # canonical JSON of everything the result depends on

    def load(self) -> str | None:
        """The saved result's JSON text, or ``None`` (absent, damaged, another key)."""
        try:
            raw = Path(self.path).read_text(encoding="utf-8")
            head, sep, text = raw.partition("\n")
            header = json.loads(head)
            if (not sep or not isinstance(header, dict) or header.get("format") != FORMAT
                    or header.get("key") != self.key
                    or header.get("sha256") != hashlib.sha256(text.encode()).hexdigest()):
                return None
            json.loads(text)  # the checksum matched; this only guards a broken writer
            return text
        except (OSError, ValueError):  # missing, unreadable, not UTF-8, not JSON
            return None

    def save(self, text: str) -> None:
        """Write ``text`` (atomically, with its key and checksum), then pass the
        ``layer-saved`` kill point."""
        from deepprofile.testhooks import kill_point

        header = json.dumps({"format": FORMAT, "key": self.key,
                             "sha256": hashlib.sha256(text.encode()).hexdigest()})
        write_text(self.path, header + "\n" + text)
        kill_point("layer-saved")

    def keep(self, text: str) -> bool:
        """:meth:`save`, best effort: a file that cannot be written (disk full, no
        permission) only costs the resume, never the analysis. Returns whether it was."""
        try:
            self.save(text)
        except OSError:
            return False
        return True


def _saved_call(fn: Callable[..., Any], pair: tuple[Slot | None, Any], *args: Any) -> str:
    """``fn(item, *args)`` as JSON text, saved to the slot; a result already saved there
    (by an attempt killed after saving) is returned instead of computed again."""
    slot, item = pair
    if slot is not None:
        text = slot.load()
        if text is not None:
            return text
    text = encode(fn(item, *args))
    if slot is not None:
        slot.keep(text)  # a worker that cannot write there: the caller keeps it instead
    return text


class _SavedTask:
    """A picklable ``_saved_call`` bound to ``fn`` (named after it for Dask's task keys)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "layer-task")

    def __call__(self, pair: tuple[Slot | None, Any], *args: Any) -> str:
        return _saved_call(self.fn, pair, *args)


@dataclass
class LayerResults:
    """The finished layers of one analysis in one run folder (``folder=None``: nothing is
    kept, but results still pass through the same JSON text).

    ``reused`` and ``computed`` count, per stage, the layers read back and the layers
    computed by this process's calls of :meth:`map`.
    """

    folder: Path | None
    analysis: str
    reused: dict[str, int] = field(default_factory=dict)
    computed: dict[str, int] = field(default_factory=dict)

    @classmethod
    def in_results(cls, results_dir: str | Path | None, analysis: str) -> LayerResults:
        """Keep ``analysis``'s layers under ``results_dir/.partial`` (none when ``None``)."""
        folder = None if results_dir is None else Path(results_dir) / PARTIAL_DIR / analysis
        return cls(folder, analysis)

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    def slot(self, stage: str, layer: str, key: Any) -> Slot | None:
        """The file of ``layer``'s ``stage`` result under ``key`` (``None`` when disabled
        or when ``key`` is ``None``: the result's inputs cannot be identified)."""
        if self.folder is None or key is None:
            return None
        from deepprofile.provenance import package_versions

        text = canonical({"analysis": self.analysis, "stage": stage, "layer": layer,
                          "format": FORMAT, "versions": package_versions(), "key": key})
        name = f"{_safe(layer)}.{hashlib.sha256(text.encode()).hexdigest()[:20]}.json"
        return Slot(str((self.folder / _safe(stage) / name).resolve()), text)

    def map(self, stage: str, fn: Callable[..., Any], layers: Sequence[str],
            items: Sequence[Any], client: Any, *args: Any, keys: Sequence[Any],
            decode: Callable[[Any], Any], quiet: bool = True) -> list[Any]:
        """``[decode(fn(item, *args)) for item in items]`` through JSON text, reusing the
        layers saved under the same key and saving the others as they finish.

        The missing layers run as one Dask task each with ``client`` (each saves its own
        file), else here with a progress bar named ``stage``.
        """
        from deepprofile.distributed import map_layers
        from deepprofile.progress import progress_iter

        slots = [self.slot(stage, layer, key) for layer, key in zip(layers, keys, strict=True)]
        texts: list[str | None] = [s.load() if s is not None else None for s in slots]
        todo = [i for i, t in enumerate(texts) if t is None]
        self.reused[stage] = self.reused.get(stage, 0) + len(texts) - len(todo)
        self.computed[stage] = self.computed.get(stage, 0) + len(todo)
        pairs = [(slots[i], items[i]) for i in todo]
        task = _SavedTask(fn)
        if client is None:
            done = [task(pair, *args) for pair in progress_iter(pairs, stage, quiet=quiet)]
        else:
            def arrived(j: int, text: str) -> None:
                # the worker saved it where it sees the run folder; a worker without this
                # file system (no shared disk) did not: keep it from here as it arrives
                slot = pairs[j][0]
                if slot is not None and not Path(slot.path).is_file():
                    slot.keep(text)

            done = map_layers(task, pairs, client, *args, on_result=arrived)
        for i, text in zip(todo, done, strict=True):
            texts[i] = text
        return [decode(json.loads(t)) for t in texts]

    def save_all(self, stage: str, layers: Sequence[str], results: Sequence[Any],
                 keys: Sequence[Any], decode: Callable[[Any], Any]) -> list[Any]:
        """Save results computed together (one forward pass for several layers) and return
        them decoded from their JSON text, like :meth:`map`."""
        out = []
        self.computed[stage] = self.computed.get(stage, 0) + len(layers)
        for layer, result, key in zip(layers, results, keys, strict=True):
            text = encode(result)
            slot = self.slot(stage, layer, key)
            if slot is not None:
                slot.keep(text)
            out.append(decode(json.loads(text)))
        return out

    def load(self, stage: str, layer: str, key: Any, decode: Callable[[Any], Any]) -> Any:
        """``layer``'s saved ``stage`` result under ``key`` decoded, or ``None``."""
        slot = self.slot(stage, layer, key)
        text = None if slot is None else slot.load()
        if text is None:
            return None
        self.reused[stage] = self.reused.get(stage, 0) + 1
        return decode(json.loads(text))

    def note(self) -> str | None:
        """One line saying how many layers were reused (``None`` when none were)."""
        if not any(self.reused.values()):
            return None
        parts = [f"{stage} {n} of {n + self.computed.get(stage, 0)}"
                 for stage, n in self.reused.items() if n]
        return (f"{self.analysis}: reused the layers an interrupted run had finished "
                f"({', '.join(parts)}).")

    def finish(self, quiet: bool = False) -> None:
        """Call once the final JSON is written: delete the kept layers and, unless ``quiet``,
        say on stderr how many were reused."""
        self.clear()
        note = self.note()
        if note and not quiet:
            import sys

            print(note, file=sys.stderr)

    def clear(self) -> None:
        """Delete this analysis's saved layers (after its final result is written)."""
        if self.folder is None:
            return
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.folder.parent.rmdir()  # .partial itself, when no other analysis uses it
        except OSError:
            pass


__all__ = ["LayerResults", "PARTIAL_DIR", "Slot", "array_digest", "canonical", "digest",
           "encode", "module_digest"]
