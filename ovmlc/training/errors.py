"""The errors `ovmlc train` reports as `ovmlc train: error: ...` (exit status 2) instead of a traceback."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """A run cannot start or continue (bad data/model combination, nothing to train, occupied output folder, ...)."""


class OutputFolderLockedError(TrainingError):
    """Another run holds the output folder's lock (one run per output folder)."""


class OutputWriteError(TrainingError):
    """Writing into the output folder failed (read-only folder, full disk, ...); the message says what to do."""


__all__ = ["OutputFolderLockedError", "OutputWriteError", "TrainingError"]
