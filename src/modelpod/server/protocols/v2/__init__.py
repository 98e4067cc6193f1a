"""Open Inference Protocol v2: `routes.py` serves it, `codec.py` decodes requests and encodes answers."""
