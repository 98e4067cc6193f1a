"""The `modelpod` command. Each command parses its flags, calls one library function and prints.

Errors modelpod raises on purpose are printed without a traceback: exit 2 for a malformed spec or bad
usage, 1 for everything else.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    try:
        from modelpod.cli.app import run
    except ImportError as exc:
        if exc.name in {"typer", "rich", "click", "httpx"}:
            sys.stderr.write(f'modelpod: the command line needs {exc.name}: pip install "modelpod[cli]"\n')
            raise SystemExit(1) from None
        raise
    run(argv)
