"""HTTP plumbing, the same for every protocol and model: the outermost ASGI app (request ids, in-flight
count, access log, the direct path of the inference routes), uvicorn's protocol guard, body and header
deadlines, request limits, logs, JSON responses, the HTTP errors and their status codes, bearer auth.

It knows nothing of the model, the protocols or the schedulers' internals (docs/architecture.md).
"""
