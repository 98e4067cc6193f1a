"""What every route shares: the server's state (`state.py`), its health machine (`health.py`), the one
inference path to the schedulers (`dispatch.py`), the checks before it (`gate.py`), and the metrics."""
