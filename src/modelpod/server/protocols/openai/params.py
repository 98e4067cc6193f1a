"""The bodies of OpenAI's `POST /v1/chat/completions` and `POST /v1/completions`, checked.

Every problem is a 400 naming the field, what it must be and what came. Sampling fields are OpenAI's
(temperature, top_p, presence and frequency penalties, seed, stop) and the extensions vLLM, TGI and
llama.cpp share (top_k, min_p, repetition_penalty, stop_token_ids, ignore_eos). Fields modelpod does not
implement (logprobs, tools, n > 1, logit_bias, beam search, typical_p, min_tokens, guided decoding, ...)
are refused by name rather than ignored, so a client never gets an answer computed differently from what
it asked; fields that change nothing here (`user`, `metadata`, `store`, ...) and unknown ones are
ignored, as OpenAI-compatible servers do. Defaults are OpenAI's: temperature 1, top_p 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal

import orjson

from modelpod.server.http.errors import ApiError
from modelpod.server.http.limits import off_loop
from modelpod.server.scheduling.text_engine import TextRequest

MAX_STOP_STRINGS = 4
ROLES = ("system", "developer", "user", "assistant", "tool")
# field -> the value that asks for nothing (any other value is refused)
_UNSUPPORTED: dict[str, Any] = {
    "logprobs": False,
    "top_logprobs": None,
    "tools": None,
    "tool_choice": None,
    "functions": None,
    "function_call": None,
    "logit_bias": None,
    "best_of": 1,
    "echo": False,
    "suffix": None,
    "audio": None,
    "prediction": None,
    # sampling extensions of other servers that modelpod does not implement
    "use_beam_search": False,
    "length_penalty": 1.0,
    "typical_p": 1.0,
    "min_tokens": 0,
    "bad_words": None,
    "allowed_token_ids": None,
    "prompt_logprobs": None,
    "truncate_prompt_tokens": None,
    "include_stop_str_in_output": False,
    "guided_json": None,
    "guided_regex": None,
    "guided_choice": None,
    "guided_grammar": None,
    "structured_outputs": None,
    "mirostat": 0,
    "tfs_z": 1.0,
    "top_a": 0,
}
MAX_STOP_TOKEN_IDS = 64


@dataclass(frozen=True)
class GenerationParams:
    kind: Literal["chat", "text"]
    request: TextRequest  # what the engine generates (server/scheduling/text_engine.py)
    stream: bool
    include_usage: bool


async def parse_body(raw: bytes | bytearray) -> dict[str, Any]:
    """The JSON object of a request; a large body is parsed off the event loop (server/http/limits.py)."""
    try:
        body = await off_loop(len(raw), lambda: orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(HTTPStatus.BAD_REQUEST, "expected a JSON object")
    return body


def parse_chat(body: Mapping[str, Any], model: str) -> GenerationParams:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(
            HTTPStatus.BAD_REQUEST,
            'messages must be a non-empty list, e.g. [{"role": "user", "content": "Hi"}]',
        )
    checked = tuple(_message(i, m) for i, m in enumerate(messages))
    return _common(body, model, kind="chat", messages=checked, prompt=None)


def parse_completion(body: Mapping[str, Any], model: str) -> GenerationParams:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a list of one prompt
    if isinstance(prompt, list) and prompt and all(_is_int(t) and t >= 0 for t in prompt):
        return _common(body, model, kind="text", messages=None, prompt=tuple(prompt))
    if not isinstance(prompt, str) or not prompt:
        raise ApiError(
            HTTPStatus.BAD_REQUEST,
            "prompt must be a non-empty string or a list of token ids (one prompt per request)",
        )
    return _common(body, model, kind="text", messages=None, prompt=prompt)


def _common(
    body: Mapping[str, Any],
    model: str,
    *,
    kind: Literal["chat", "text"],
    messages: tuple[Mapping[str, Any], ...] | None,
    prompt: str | tuple[int, ...] | None,
) -> GenerationParams:
    requested = body.get("model")
    if requested is not None and requested != model:
        raise ApiError(HTTPStatus.NOT_FOUND, f"model {requested!r} not found; this server serves {model!r}")
    for name, neutral in _UNSUPPORTED.items():
        value = body.get(name)
        if value is not None and value != neutral and value != {} and value != []:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"{name} is not supported by this server; leave it out")
    n = body.get("n")
    if n is not None and n != 1:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"n must be 1 (one choice per request), not {n!r}")
    format_ = body.get("response_format")
    if format_ is not None and (not isinstance(format_, dict) or format_.get("type") != "text"):
        raise ApiError(
            HTTPStatus.BAD_REQUEST, 'response_format is not supported by this server beyond {"type": "text"}'
        )
    stream = _bool(body, "stream", default=False)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(
            HTTPStatus.BAD_REQUEST, 'stream_options must be an object such as {"include_usage": true}'
        )
    request = TextRequest(
        messages=messages,
        prompt=prompt,
        max_tokens=_max_tokens(body),
        stop=_stop(body.get("stop")),
        stop_token_ids=_token_ids(body.get("stop_token_ids")),
        temperature=_number(body, "temperature", 1.0, low=0.0, high=2.0),
        top_p=_number(body, "top_p", 1.0, low=0.0, high=1.0, low_open=True),
        top_k=_top_k(body.get("top_k")),
        min_p=_number(body, "min_p", 0.0, low=0.0, high=1.0),
        repetition_penalty=_number(body, "repetition_penalty", 1.0, low=0.0, high=10.0, low_open=True),
        presence_penalty=_number(body, "presence_penalty", 0.0, low=-2.0, high=2.0),
        frequency_penalty=_number(body, "frequency_penalty", 0.0, low=-2.0, high=2.0),
        seed=_seed(body.get("seed")),
        ignore_eos=_bool(body, "ignore_eos", default=False),
    )
    return GenerationParams(
        kind=kind,
        request=request,
        stream=stream,
        include_usage=bool(stream and options and _bool(options, "include_usage", default=False)),
    )


def _message(index: int, message: Any) -> Mapping[str, Any]:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise ApiError(HTTPStatus.BAD_REQUEST, f'{where} must be an object {{"role": ..., "content": ...}}')
    role = message.get("role")
    if role not in ROLES:
        raise ApiError(
            HTTPStatus.BAD_REQUEST, f"{where}.role must be one of {', '.join(ROLES)}, not {role!r}"
        )
    content = message.get("content")
    if isinstance(content, list):  # content parts: only text ones
        texts = []
        for j, part in enumerate(content):
            text = part.get("text") if isinstance(part, dict) and part.get("type") == "text" else None
            if not isinstance(text, str):
                raise ApiError(
                    HTTPStatus.BAD_REQUEST,
                    f'{where}.content[{j}] must be a text part {{"type": "text", "text": ...}}',
                )
            texts.append(text)
        content = "".join(texts)
    if content is None and role == "assistant":
        content = ""
    if not isinstance(content, str):
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{where}.content must be a string or a list of text parts")
    return {"role": "system" if role == "developer" else role, "content": content}


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):  # the newer name wins, as with OpenAI
        value = body.get(name)
        if value is None:
            continue
        if not _is_int(value) or value < 1:
            raise ApiError(
                HTTPStatus.BAD_REQUEST, f"{name} must be a whole number of at least 1, not {value!r}"
            )
        return int(value)
    return None


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(
            HTTPStatus.BAD_REQUEST, "stop must be a non-empty string or a list of non-empty strings"
        )
    if len(stops) > MAX_STOP_STRINGS:
        raise ApiError(
            HTTPStatus.BAD_REQUEST, f"stop takes at most {MAX_STOP_STRINGS} strings, not {len(stops)}"
        )
    return tuple(stops)


def _token_ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(_is_int(t) and t >= 0 for t in value):
        raise ApiError(HTTPStatus.BAD_REQUEST, f"stop_token_ids must be a list of token ids, not {value!r}")
    if len(value) > MAX_STOP_TOKEN_IDS:
        raise ApiError(
            HTTPStatus.BAD_REQUEST,
            f"stop_token_ids takes at most {MAX_STOP_TOKEN_IDS} ids, not {len(value)}",
        )
    return tuple(int(t) for t in value)


def _top_k(value: Any) -> int:
    """top_k: 0 or -1 (vLLM's spelling) for no cut."""
    if value is None:
        return 0
    if not _is_int(value) or value < -1:
        raise ApiError(
            HTTPStatus.BAD_REQUEST, f"top_k must be a whole number (0 or -1: no cut), not {value!r}"
        )
    return max(int(value), 0)


def _number(
    body: Mapping[str, Any], name: str, default: float, *, low: float, high: float, low_open: bool = False
) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{name} must be a number, not {value!r}")
    below = value <= low if low_open else value < low
    if below or value > high:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{name} must be in {interval}, not {value!r}")
    return float(value)


def _seed(value: Any) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or not -(2**63) <= value < 2**64:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"seed must be a whole number, not {value!r}")
    return int(value) % 2**63


def _bool(body: Mapping[str, Any], name: str, *, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{name} must be true or false, not {value!r}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
