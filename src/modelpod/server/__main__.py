"""`python -m modelpod.server SPEC`: serve without the CLI (the entrypoint of modelpod's images)."""

from modelpod.server.run import main

main()
