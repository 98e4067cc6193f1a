"""What a scheduler raises when it cannot run a request. Both schedulers (the batcher and the generation
engine) raise these; the server answers each with its status code in one place (server/http/errors.py).
A model that raises while predicting is `modelpod.errors.InferenceError`, from either scheduler."""

from __future__ import annotations

from modelpod.errors import ModelpodError


class SchedulingError(ModelpodError):
    """The scheduler did not run the request."""


class QueueFullError(SchedulingError):
    """server.max_queue requests wait already."""


class DeadlineError(SchedulingError):
    """The request was not done within server.request_timeout_s."""


class DrainingError(SchedulingError):
    """The server is shutting down and no longer takes requests, or ended this one."""


class OverBudgetError(SchedulingError):
    """The request can never run: it needs more tokens than the context or the KV-cache budget holds."""


class BadPromptError(SchedulingError):
    """The prompt cannot be generated from: empty after tokenizing, no chat template, or refused by an
    external engine for what it holds."""


class UnsupportedFieldError(SchedulingError):
    """The request asks for something the serving engine does not do (a field another engine honours)."""
