"""Errors of `modelpod optimize` (see the tree in modelpod/errors.py)."""

from __future__ import annotations

from modelpod.errors import ModelpodError


class OptimizeError(ModelpodError):
    """The model could not be exported, optimised or checked, or the optimised one was refused."""


class AccuracyError(OptimizeError):
    """The optimised model falls below an accuracy threshold; nothing was written. `figures` holds the
    accuracy report (check.Accuracy), so the caller can print it."""

    def __init__(self, message: str, *, figures: object, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.figures = figures
