"""Schemathesis hooks for tests/server/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

`documented_server_errors` replaces the built-in `not_a_server_error`: every 5xx fails it but the one the
server documents for valid input, a model whose outputs are NaN or infinite (docs/limits.md, "Values").
The digits CNN gives those for pixel values near float32's limit, which its schema allows.
"""

from __future__ import annotations

from typing import Any

import schemathesis

NOT_FINITE = b"the model returned NaN or infinite values"


@schemathesis.check
def documented_server_errors(ctx: Any, response: Any, case: Any) -> None:
    if response.status_code < 500:
        return
    if response.status_code == 500 and NOT_FINITE in response.content:
        return
    raise AssertionError(f"undocumented server error {response.status_code}: {response.content[:300]!r}")
