"""Bearer-token auth of the inference routes, when `server.auth_token_env` names the variable holding it."""

from __future__ import annotations

import hmac
import os
from http import HTTPStatus

from modelpod.errors import ModelpodError
from modelpod.server.http.errors import ApiError


class BearerAuth:
    def __init__(self, token: str | None) -> None:
        self.token = token  # None: no token is asked for

    @classmethod
    def from_environment(cls, variable: str | None) -> BearerAuth:
        """The token in `variable`; a variable named but unset or empty is an error, not an open server."""
        if variable is None:
            return cls(None)
        token = os.environ.get(variable, "")
        if not token:
            raise ModelpodError(
                f"server.auth_token_env names {variable}, which is not set or empty",
                hint=f"export {variable}=<token>, or remove server.auth_token_env to serve without a token",
            )
        return cls(token)

    def check(self, authorization: str | None) -> None:
        """401 unless `authorization` is `Bearer <token>`."""
        if self.token is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        # as bytes: compare_digest refuses str with non-ASCII characters (a header may hold any byte)
        given = token.strip().encode("latin-1", errors="replace")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, self.token.encode()):
            raise ApiError(
                HTTPStatus.UNAUTHORIZED,
                "missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
                reason="unauthorized",
            )
