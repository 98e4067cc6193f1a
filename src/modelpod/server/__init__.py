"""The inference server: `create_app` builds the ASGI app, `serve` runs it on uvicorn.

Both resolve on first use, so `python -m modelpod.server` can set its SIGTERM handler before uvicorn and
the app are imported (server/stop_signal.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelpod._lazy import lazy_attributes

if TYPE_CHECKING:
    from modelpod.server.app import create_app as create_app
    from modelpod.server.run import serve as serve

_EXPORTS = {"create_app": "modelpod.server.app", "serve": "modelpod.server.run"}

__all__ = ["create_app", "serve"]

__getattr__ = lazy_attributes(__name__, _EXPORTS, globals())
