"""`python -m modelpod.server SPEC`: serve without the CLI (the entrypoint of modelpod's images)."""

from modelpod.server.stop_signal import exit_on_sigterm

exit_on_sigterm()  # before the server's imports: a SIGTERM during start-up must not be lost (stop_signal.py)

from modelpod.server.run import main  # noqa: E402

main()
