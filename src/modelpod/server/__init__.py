"""The inference server: `create_app` builds the ASGI app, `serve` runs it on uvicorn."""

from modelpod.server.app import create_app
from modelpod.server.run import serve

__all__ = ["create_app", "serve"]
