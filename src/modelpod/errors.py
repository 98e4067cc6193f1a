"""Every error modelpod raises on purpose derives from `ModelpodError`.

    ModelpodError
    ├── SpecError               modelpod.yaml is malformed; carries one SpecIssue per problem
    ├── ModelLoadError          the model file could not be loaded by its runtime
    │   ├── MissingDependencyError   the runtime's framework is not installed (names the extra)
    │   └── runtimes.base.SignatureUnknownError   it loaded, but neither it nor the spec gives its signature
    ├── InputError              a request's input does not match the signature (name, expected, got)
    ├── InferenceError          the model raised while predicting
    │
    │   defined where they are raised (imported only by the layers that raise or catch them):
    ├── server.scheduling.errors.SchedulingError   a scheduler (batcher, generation engine) did not run it
    │   ├── QueueFullError                     server.max_queue requests wait already (503)
    │   ├── DeadlineError                      not done within server.request_timeout_s (504)
    │   ├── DrainingError                      the server is shutting down (503)
    │   ├── OverBudgetError                    longer than the context or the KV-cache budget (400)
    │   ├── BadPromptError                     a prompt that cannot be generated from (400)
    │   └── UnsupportedFieldError              a field the serving engine does not do (400)
    ├── server.http.errors.ApiError        an HTTP answer with its HTTPStatus; server/http/errors.py maps
    │                                      every error above and below to one, in one place
    ├── server.http.errors.TooLarge        more items or JSON values than a request may carry (413)
    ├── server.http.errors.ProtocolError   a request that breaks its protocol's format (400)
    ├── images.errors.BuildContextError    the build context cannot be rendered from the spec
    ├── images.errors.EngineError          a container engine command failed
    │   ├── EngineNotFoundError                no docker, podman or buildah executable
    │   ├── EngineUnreachableError             the executable is there, its daemon does not answer
    │   ├── ImageBuildError                    the build failed (its last output lines)
    │   └── PushError                          the registry refused the image, or no digest came back
    ├── images.errors.SmokeTestError       the built image failed its smoke test (container log lines)
    ├── deploy.render.RenderError          the spec or arguments cannot be rendered into manifests
    ├── deploy.cluster.DeployError         a release operation on a cluster failed
    │   ├── ClusterError                       the Kubernetes API refused a call or was unreachable
    │   └── deployer.RolloutFailed             a deploy or rollback did not come up (reason, revision)
    ├── deploy.training.TrainingError      the training command or Job failed or timed out
    └── optimize.errors.OptimizeError      `modelpod optimize` could not export, optimise or check
        └── AccuracyError                      the optimised model fell below a threshold (its figures)

Each error's `str()` is a complete message for a person: what is wrong, where, and a hint.
The CLI prints it without a traceback and exits 2 for spec errors, 1 for the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ModelpodError(Exception):
    """Base class of every error modelpod raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  Hint: {self.hint}"
        return self.message


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec file: where it is, what is wrong, and how to fix it."""

    path: str  # dotted field path, e.g. "server.max_batch_size" or "model.signature.inputs[0].dtype"
    message: str
    value: object = None
    hint: str | None = None
    line: int | None = None  # 1-based line in the YAML file, when known

    def render(self, source: str | None = None) -> str:
        """The issue as a person reads it: `source:line: path: message`, then the hint.

        **Parameters**

        * **source** `str` - *(optional)* the spec file's name, put before the line number when known.
        """
        where = self.path or "(top level)"
        if source and self.line:
            where = f"{source}:{self.line}: {where}"
        text = f"{where}: {self.message}"
        if self.value is not None:
            text += f" (got {self.value!r})"
        if self.hint:
            text += f"\n    Hint: {self.hint}"
        return text


class SpecError(ModelpodError):
    """modelpod.yaml (or a profile of it) is malformed."""

    def __init__(self, issues: Sequence[SpecIssue], *, source: str | None = None) -> None:
        self.issues = tuple(issues)
        self.source = source
        count = len(self.issues)
        header = f"{source or 'spec'}: {count} problem{'s' if count != 1 else ''}"
        body = "\n".join("  " + issue.render(source) for issue in self.issues)
        super().__init__(f"{header}\n{body}")


class ModelLoadError(ModelpodError):
    """The model file could not be loaded."""


class MissingDependencyError(ModelLoadError):
    """The framework a runtime needs is not installed."""

    def __init__(self, runtime: str, package: str, extra: str) -> None:
        self.runtime = runtime
        self.package = package
        self.extra = extra
        super().__init__(
            f"the {runtime} runtime needs the Python package {package!r}, which is not installed",
            hint=f'pip install "modelpod[{extra}]"',
        )


class InputError(ModelpodError):
    """A request's input does not match the model signature."""

    def __init__(
        self, field: str, problem: str, *, expected: str | None = None, got: str | None = None
    ) -> None:
        self.field = field
        self.problem = problem
        self.expected = expected
        self.got = got
        text = f"input {field!r}: {problem}"
        if expected is not None:
            text += f"; expected {expected}"
        if got is not None:
            text += f", got {got}"
        super().__init__(text)


class InferenceError(ModelpodError):
    """The model raised while predicting."""
