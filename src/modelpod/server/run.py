"""Run the app on uvicorn (uvloop and httptools)."""

from __future__ import annotations

import logging

import uvicorn

from modelpod.server.app import create_app
from modelpod.spec.resolved import Spec


def serve(spec: Spec, *, host: str | None = None, port: int | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(spec)
    uvicorn.run(
        app,
        host=host or spec.server.host,
        port=spec.server.port if port is None else port,
        loop="uvloop",
        http="httptools",
        log_level="info",
        lifespan="on",
    )
