"""Start an image, wait until it is ready, check the spec's examples, stop it: the smoke test of a build.

`Container` is the running image under modelpod's hardened flags (read-only root, /tmp tmpfs, no
capabilities, no new privileges, uid 10001); `modelpod run` uses it too. Every wait is bounded, and a
failure carries the container's last log lines.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from modelpod import contract
from modelpod.errors import ModelpodError
from modelpod.images.engine import (
    Engine,
    RunRequest,
    inspect_argv,
    logs_argv,
    remove_argv,
    run_argv,
    stop_argv,
)
from modelpod.images.errors import EngineError, SmokeTestError
from modelpod.specfile.resolved import Spec


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class SmokeOptions:
    network: str = "host"
    port: int | None = None  # None: a free port
    ready_timeout_s: float = 120.0
    request_timeout_s: float = 30.0
    stop_grace_s: int | None = None  # None: the spec's drain budget plus 5 s
    log_lines: int = 40
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SmokeReport:
    image: str
    url: str
    ready_s: float
    examples: tuple[str, ...]
    exit_code: int


class Container:
    """A detached container of `image`; use as a context manager so it is always removed."""

    def __init__(
        self, engine: Engine, image: str, *, port: int, network: str, env: Mapping[str, str]
    ) -> None:
        if not engine.can_run:
            raise EngineError(
                f"{engine.kind} builds images but cannot run them",
                hint="install podman (or docker) to run and smoke-test images, or pass --no-smoke-test",
            )
        self.engine = engine
        self.image = image
        self.name = f"modelpod-{secrets.token_hex(4)}"
        self.request = RunRequest(image=image, name=self.name, port=port, network=network, env=env)
        self.url = f"http://127.0.0.1:{port}"
        self.started = False

    def __enter__(self) -> Container:
        result = self.engine.runner.run(
            run_argv(self.engine, self.request), timeout=self.engine.timeout_s * 4, env=self.engine.env()
        )
        if not result.ok:
            self.remove()
            raise EngineError(f"cannot start {self.image}:\n  {result.tail(8)}")
        self.started = True
        return self

    def __exit__(self, *_exc: object) -> None:
        self.remove()

    def state(self, field_name: str) -> str:
        template = "{{.State.%s}}" % field_name  # noqa: UP031 - a Go template, braces included
        result = self.engine.runner.run(
            inspect_argv(self.engine, self.name, template),
            timeout=self.engine.timeout_s,
            env=self.engine.env(),
        )
        return result.stdout.strip() if result.ok else ""

    def logs(self, tail: int) -> list[str]:
        result = self.engine.runner.run(
            logs_argv(self.engine, self.name, tail=tail), timeout=self.engine.timeout_s, env=self.engine.env()
        )
        return (result.stdout + result.stderr).strip().splitlines()[-tail:]

    def wait_ready(self, timeout_s: float, *, log_lines: int = 40) -> float:
        """Seconds until /v2/health/ready answered 200; raises if the container exits or time runs out."""
        import httpx

        start = time.monotonic()
        deadline = start + timeout_s
        next_state_check = start
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + contract.READY, timeout=2.0).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            if time.monotonic() >= next_state_check:
                if self.state("Running") == "false":
                    code = self.state("ExitCode")
                    raise SmokeTestError(
                        f"{self.image} exited with code {code} before it was ready",
                        log_lines=self.logs(log_lines),
                        hint="the log above says why; `modelpod serve` runs the same spec locally",
                    )
                next_state_check = time.monotonic() + 1.0
            time.sleep(0.25)
        raise SmokeTestError(
            f"{self.image} was not ready within {timeout_s:.0f}s ({self.url}{contract.READY})",
            log_lines=self.logs(log_lines),
            hint="a large model may need more time: raise the ready timeout",
        )

    def stop(self, grace_s: int) -> int:
        """SIGTERM, wait up to `grace_s` for the drain, and return the exit code."""
        self.engine.runner.run(
            stop_argv(self.engine, self.name, grace_s=grace_s), timeout=grace_s + 30, env=self.engine.env()
        )
        code = self.state("ExitCode")
        return int(code) if code.lstrip("-").isdigit() else -1

    def remove(self) -> None:
        self.engine.runner.run(
            remove_argv(self.engine, self.name), timeout=self.engine.timeout_s, env=self.engine.env()
        )


def smoke_test(
    engine: Engine,
    image: str,
    spec: Spec,
    options: SmokeOptions = SmokeOptions(),
    *,
    on_event: Callable[[str], None] = lambda _message: None,
) -> SmokeReport:
    """Run the image hardened, wait for ready, check every example, stop it with SIGTERM (exit 0)."""
    from modelpod.inference import predict_examples

    if not spec.examples:
        raise SmokeTestError(
            f"{spec.name} has no examples to smoke-test the image with",
            hint="add examples to modelpod.yaml, or pass --no-smoke-test",
        )
    port = options.port or free_port()
    grace = options.stop_grace_s if options.stop_grace_s is not None else int(spec.server.drain_timeout_s) + 5
    with Container(engine, image, port=port, network=options.network, env=options.env) as container:
        on_event(f"started {container.name} from {image} on {container.url}")
        ready_s = container.wait_ready(options.ready_timeout_s, log_lines=options.log_lines)
        on_event(f"ready after {ready_s:.1f}s")
        names = []
        try:
            reports = list(predict_examples(spec, url=container.url, timeout=options.request_timeout_s))
        except ModelpodError as exc:
            raise SmokeTestError(
                f"{image} failed an example request: {exc}", log_lines=container.logs(options.log_lines)
            ) from None
        for report in reports:
            if report.problems:
                raise SmokeTestError(
                    f"example {report.name!r} got a wrong answer from {image}: " + "; ".join(report.problems),
                    log_lines=container.logs(options.log_lines),
                    hint="the image serves something other than what `modelpod predict` checked locally",
                )
            names.append(report.name)
            on_event(f"example {report.name!r}: outputs match")
        code = container.stop(grace)
        if code != 0:
            raise SmokeTestError(
                f"{image} exited with code {code} after SIGTERM (expected a clean 0)",
                log_lines=container.logs(options.log_lines),
            )
        on_event("stopped with SIGTERM: exit code 0")
    return SmokeReport(image, container.url, ready_s, tuple(names), code)
