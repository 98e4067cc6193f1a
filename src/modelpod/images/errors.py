"""Errors of the image layer; all derive from `modelpod.ModelpodError`, so the CLI prints them without a
traceback and exits 1.

    ModelpodError
    ├── BuildContextError       the build context cannot be rendered (model outside the spec directory, ...)
    ├── EngineError             a container engine command failed (names the command and its last output)
    │   ├── EngineNotFoundError     no docker, podman or buildah executable was found
    │   ├── EngineUnreachableError  the executable is there but its daemon or service does not answer
    │   ├── ImageBuildError         the engine's build failed (the last lines of its output)
    │   └── PushError               the registry refused the image, or no digest came back
    └── SmokeTestError          the built image did not become ready, answered wrongly or exited uncleanly
"""

from __future__ import annotations

from collections.abc import Sequence

from modelpod.errors import ModelpodError


class BuildContextError(ModelpodError):
    """The build context cannot be rendered from this spec."""


class EngineError(ModelpodError):
    """A container engine command failed."""


class EngineNotFoundError(EngineError):
    """No container engine executable was found."""


class EngineUnreachableError(EngineError):
    """The engine's executable exists, but its daemon (or podman's service) does not answer."""


class ImageBuildError(EngineError):
    """The engine's build command failed."""


class PushError(EngineError):
    """Pushing the image failed, or the engine reported no digest."""


class SmokeTestError(ModelpodError):
    """The built image failed its smoke test; carries the container's last log lines."""

    def __init__(self, message: str, *, log_lines: Sequence[str] = (), hint: str | None = None) -> None:
        self.log_lines = tuple(log_lines)
        if self.log_lines:
            message += "\n  container log (last lines):\n" + "\n".join("    " + x for x in self.log_lines)
        super().__init__(message, hint=hint)
