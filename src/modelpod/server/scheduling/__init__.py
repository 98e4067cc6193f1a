"""The schedulers that run the model: `batcher.py` batches requests for a model that maps a batch to a
batch; `generation.py` schedules text generation one decode step at a time (continuous batching).

They never import HTTP code (tests/test_layers.py): they raise the errors of `errors.py`, and the server
maps those to status codes in one place (server/http/errors.py).
"""
