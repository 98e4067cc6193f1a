"""Run the app on uvicorn (uvloop, httptools) with modelpod's shutdown and exit codes.

SIGTERM (or Ctrl-C): readiness answers 503 at once while the listener stays open, so probes see the
change; requests already in flight finish within `server.drain_timeout_s`; then the server stops and the
process exits 0. A second signal during the drain, or one before the model is ready, ends the process
at once, with exit code 0 too (server/stop_signal.py). A model that fails to load exits 1 after one log
line.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from types import FrameType

import uvicorn

from modelpod.errors import ModelpodError
from modelpod.server.app import create_app
from modelpod.server.core.health import Health
from modelpod.server.core.state import ServerState
from modelpod.server.http.allocator import keep_freed_memory
from modelpod.server.http.asgi import ServerApp
from modelpod.server.http.logs import configure_logging
from modelpod.server.http.transport import guarded_protocol
from modelpod.server.stop_signal import exit_now
from modelpod.specfile.resolved import Spec

log = logging.getLogger("modelpod.server")

# after the drain, connections still open are idle keep-alives; close them quickly
_CLOSE_IDLE_SECONDS = 2.0


class ModelServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.state.health.now is Health.FAILED:
            return  # already stopping, to exit 1 for the model that failed to load
        if self._draining or self.state.health.now is not Health.READY:
            # a second signal, or nothing to drain: stop without waiting for the batch the drain waits on
            # or for a model still loading (stop_signal.py)
            log.info(
                "signal %d while %s: stopping now", sig, self.state.health.now.value, extra={"signal": sig}
            )
            exit_now(sig)
        self._draining = True
        self.state.health.move_to(Health.DRAINING)
        log.info("signal %d: draining (readiness now 503)", sig, extra={"signal": sig})
        asyncio.get_event_loop().create_task(self._drain())

    async def _drain(self) -> None:
        budget = self.state.spec.server.drain_timeout_s
        # requests whose body has not arrived are not waited for (server/http/body_watch.py)
        if await self.state.inflight.wait_idle(budget):
            log.info("drained: no request in flight")
        else:
            log.warning(
                "drain budget of %.1fs ran out with %d requests in flight",
                budget,
                self.state.inflight.working(),
            )
            await self._cut_generations()
        # 503 to those still sending a body, before uvicorn cancels them
        self.state.inflight.bodies.stop_all()
        self.should_exit = True

    async def _cut_generations(self) -> None:
        """End the generations still running with an error event (their streams then send `[DONE]`), and
        give their handlers a moment to write it, so that no stream is cut off mid-answer."""
        engine = self.state.engine
        if engine is None:
            return
        engine.abort_all("the server is shutting down and its drain budget ran out; retry the request")
        await self.state.inflight.wait_idle(_CLOSE_IDLE_SECONDS)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                url = f"http://{host}:{port}"
                log.info("serving %s on %s", self.state.name, url, extra={"url": url})


def serve(spec: Spec, *, host: str | None = None, port: int | None = None) -> None:
    """Serve until SIGTERM; raises SystemExit(1) when the model fails to load."""
    configure_logging(spec.server.log_level)
    tuned = keep_freed_memory()  # before the model allocates anything (server/http/allocator.py)
    log.debug("malloc thresholds %s", "set" if tuned else "left as they were")
    _open_files_for(spec.server.max_connections)
    holder: list[ModelServer] = []

    def stop_on_failure() -> None:
        holder[0].should_exit = True

    host = host or spec.server.host
    port = spec.server.port if port is None else port
    _check_port_free(host, port)
    app = create_app(spec, on_failure=stop_on_failure)
    config = uvicorn_config(app, host=host, port=port)
    server = ModelServer(config, app.state)
    holder.append(server)
    server.run()
    if app.state.health.now is Health.FAILED:
        raise SystemExit(1)
    if not server.started:
        raise ModelpodError(
            f"could not start the server on {config.host}:{config.port}", hint="is the port in use?"
        )


def _check_port_free(host: str, port: int) -> None:
    """Fail before the model loads, with the port and the way out, when the address cannot be bound
    (uvicorn would log the OS error after loading and exit without a hint). It binds as uvicorn does
    (SO_REUSEADDR) and lets go at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = "it is taken" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            raise ModelpodError(
                f"cannot listen on {host}:{port}: {reason}",
                hint="choose another port with --port N (--port 0 picks a free one), or stop what uses it",
            ) from None


# files the process holds besides its connections: the model's, libraries, the listener, pipes
_OTHER_FILES = 256


def _open_files_for(connections: int) -> None:
    """Raise the soft limit of open files (often 1024) toward the hard one, so that `connections` fit;
    warn when even the hard limit is too low for them."""
    try:
        import resource
    except ImportError:  # not on a POSIX system
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + _OTHER_FILES
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if raised > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    if raised < wanted:
        log.warning(
            "open files are limited to %d, fewer than server.max_connections (%d) needs: lower it",
            raised,
            connections,
        )


def uvicorn_config(app: ServerApp[ServerState], *, host: str, port: int) -> uvicorn.Config:
    """How modelpod runs uvicorn (benchmarks/request_cost.py drives the same protocol)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        # httptools, one write per response, connection timeouts and limit (server/http/transport.py)
        http=guarded_protocol(app.state.spec.server),
        ws="none",
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        # nothing reads the client address, so X-Forwarded-* need no parsing: one ASGI layer fewer per request
        proxy_headers=False,
        timeout_graceful_shutdown=int(_CLOSE_IDLE_SECONDS),
    )


def main(argv: list[str] | None = None) -> None:
    """`python -m modelpod.server SPEC [--profile P] [--host H] [--port N]`: the entrypoint of images.

    Images run this instead of the `modelpod` CLI, so they need none of the CLI's extras. Host and port
    default to MODELPOD_HOST and MODELPOD_PORT (set by the image), then to the spec."""
    import argparse
    import os
    import sys

    from modelpod.specfile import load_spec

    parser = argparse.ArgumentParser(prog="python -m modelpod.server", description=main.__doc__)
    parser.add_argument("spec", help="modelpod.yaml, or the directory holding it")
    parser.add_argument("--profile", default=None)
    parser.add_argument("--host", default=os.environ.get("MODELPOD_HOST"))
    parser.add_argument("--port", type=int, default=os.environ.get("MODELPOD_PORT"))
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.spec, args.profile)
        serve(spec, host=args.host, port=None if args.port is None else int(args.port))
    except ModelpodError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(1) from None
