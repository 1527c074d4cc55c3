"""Exceptions raised by deepprofile.

Every error says what was wrong and what to do about it; catching
:class:`DeepProfileError` catches them all.
"""

from __future__ import annotations


class DeepProfileError(Exception):
    """Base class of every error deepprofile raises on bad input."""


class UnknownLayerError(DeepProfileError, KeyError):
    """A layer selector matched no module of the model."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class EmptyDatasetError(DeepProfileError, ValueError):
    """A dataset (or a selection of it) holds no samples."""


class NonFiniteActivationError(DeepProfileError, FloatingPointError):
    """A captured activation contains NaN or inf."""


class StoreMismatchError(DeepProfileError):
    """An existing activation store was made with a different configuration."""


class CorruptStoreError(DeepProfileError):
    """An activation store is truncated, incomplete or damaged."""


class ShapeError(DeepProfileError, ValueError):
    """A tensor or array has a shape the operation cannot use."""


class MissingFileError(DeepProfileError, FileNotFoundError):
    """A file the user pointed at does not exist."""


class UnknownConceptError(DeepProfileError, KeyError):
    """A concept name is not in the concept set."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class ConceptDataError(DeepProfileError, ValueError):
    """A concept cannot be used as given (empty folder, one class only, wrong length ...)."""


class RunLockedError(DeepProfileError):
    """Another process holds the lock of a run folder or store."""


class StaleResultError(DeepProfileError):
    """A result was computed from another activation store than the run's current one."""


class NonFiniteWeightsError(DeepProfileError, FloatingPointError):
    """Model weights, logits or a training loss contain NaN or inf."""
