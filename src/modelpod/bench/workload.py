"""What `modelpod bench` sends: the spec's examples, or a file of request bodies."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from modelpod import contract
from modelpod.errors import ModelpodError

GENERATION_PATHS = (contract.CHAT_COMPLETIONS, contract.COMPLETIONS)
MAX_REQUESTS_FILE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Workload:
    path: str  # where every request goes, e.g. /predict
    bodies: tuple[bytes, ...]  # JSON bodies, sent in turn
    streaming: bool  # generation requests streamed as server-sent events (time to first token, ...)


def workload_from_examples(examples: list[tuple[str, dict[str, object]]]) -> Workload:
    """The spec's examples as `spec.example_answers.example_request` makes them: (path, body) pairs. A
    chat example is streamed (with usage in its last event), so that its tokens can be timed."""
    if not examples:
        raise ModelpodError(
            "the spec has no examples to send",
            hint="add examples to modelpod.yaml, or pass --requests FILE (one JSON request body a line)",
        )
    paths = {"/" + path.lstrip("/") for path, _ in examples}
    if len(paths) > 1:
        raise ModelpodError(
            f"the spec's examples go to different endpoints ({', '.join(sorted(paths))})",
            hint="pass --requests FILE with the bodies of one endpoint, and --endpoint",
        )
    path = paths.pop()
    streaming = path in GENERATION_PATHS
    bodies = []
    for _, body in examples:
        if streaming:
            body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        bodies.append(json.dumps(body).encode())
    return Workload(path, tuple(bodies), streaming)


def workload_from_file(file: Path, endpoint: str) -> Workload:
    """One JSON request body a line (JSON Lines), all sent to `endpoint`. Generation bodies that ask for
    `"stream": true` are timed token by token."""
    if not file.is_file():
        raise ModelpodError(f"{file} is not a file", hint="pass a file of JSON request bodies, one a line")
    if file.stat().st_size > MAX_REQUESTS_FILE_BYTES:
        raise ModelpodError(
            f"{file} is over {MAX_REQUESTS_FILE_BYTES // 2**20} MiB", hint="send fewer bodies"
        )
    bodies, streams = [], set()
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            body = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ModelpodError(
                f"{file}:{number}: not valid JSON: {exc.msg}", hint="write one JSON request body a line"
            ) from None
        if not isinstance(body, dict):
            raise ModelpodError(f"{file}:{number}: a request body must be a JSON object")
        streams.add(bool(body.get("stream")))
        bodies.append(json.dumps(body).encode())
    if not bodies:
        raise ModelpodError(f"{file} holds no request bodies", hint="write one JSON request body a line")
    if len(streams) > 1:
        raise ModelpodError(f"{file}: some bodies ask for a stream and some do not", hint="make them agree")
    path = "/" + endpoint.lstrip("/")
    return Workload(path, tuple(bodies), streaming=streams.pop() and path in GENERATION_PATHS)
