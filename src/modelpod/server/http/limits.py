"""What one request may cost: body bytes, items, and JSON values; and decoding large bodies off the loop.

A JSON body becomes Python objects before anything else can look at it, and those cost far more than
their text: `0,` is 2 bytes of JSON and an 8-byte pointer in a list, `[],` is 3 bytes and a 64-byte
list. So the number of values a body can hold is bounded before it is parsed, from the signature and
the item cap (`max_json_values`), by counting the bytes that start a JSON value (`,` `:` `[` `{`,
each a C-speed `bytes.count`). A body holding more is refused with 413 without being parsed; only
when that coarse count is over the bound are the strings' contents (which may hold commas) skipped
in an exact count. Signatures with a dimension of any size (-1) have no such bound: their
values are bounded by the body limit alone.

The default body limit follows the memory the spec gives the container (`resources.memory`): 1/64 of
it, between 1 MiB and 16 MiB (512Mi: 8 MiB; 1Gi and above: 16 MiB). A body at the limit is held once
while it is read, and its decoded values are bounded as above, so several such requests at once still
leave the model its memory.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from modelpod.server.http.errors import TooLarge
from modelpod.signature import Signature
from modelpod.specfile.model import default_body_limit
from modelpod.specfile.resolved import Spec

T = TypeVar("T")

MiB = 1024 * 1024
# bodies up to this size are decoded on the event loop: a thread hand-off costs more than their parse
OFF_LOOP_BYTES = 256 * 1024
# values a request may hold beyond those of its items: the protocol's keys, names, parameters
_SLACK_VALUES = 4096
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_VALUE_STARTS = (b",", b":", b"[", b"{")


@dataclass(frozen=True)
class RequestLimits:
    max_body_bytes: int
    max_items: int
    max_json_values: int | None = None  # None until the signature is known, or with a -1 dimension

    @classmethod
    def for_spec(cls, spec: Spec) -> RequestLimits:
        server = spec.server
        body = server.max_body_bytes
        items = server.max_request_items
        return cls(
            max_body_bytes=int(body) if body is not None else default_body_limit(spec.resources.memory),
            max_items=items if items is not None else 4 * server.max_batch_size,
        )

    def with_signature(self, signature: Signature) -> RequestLimits:
        return RequestLimits(
            self.max_body_bytes, self.max_items, json_values_limit(signature, self.max_items)
        )

    def check_json_values(self, body: bytes | bytearray, end: int | None = None) -> None:
        """Refuse (TooLarge) a JSON text (`body[:end]`) with more values than `max_items` items of the
        signature can hold."""
        limit = self.max_json_values
        # every value but the first follows a byte of its own, so a text this short holds few enough
        # (most requests: counting took about 2.6 microseconds of a digits request on the event loop)
        if limit is None or (len(body) if end is None else end) < limit:
            return
        if count_json_values(body, limit, end) <= limit:
            return
        raise TooLarge(
            f"the request holds more JSON values than {self.max_items} items of this model's inputs "
            f"(server.max_request_items) can use (at most {limit})"
        )


def json_values_limit(signature: Signature, max_items: int) -> int | None:
    """The most JSON values (and keys) a request of `max_items` items can need, in any of the accepted
    layouts (flat or nested lists, v2 or /predict instances), or None when a dimension is of any size.

    Per item and input: the leaves, one list per nesting level, a key and an enclosing object; doubled
    for safety, plus slack for the protocol's own keys."""
    per_item = 0
    for tensor in signature.inputs:
        if -1 in tensor.shape:
            return None
        lists = sum(math.prod(tensor.shape[:level]) for level in range(len(tensor.shape)))
        per_item += math.prod(tensor.shape) + lists + 2
    return 2 * per_item * max_items + _SLACK_VALUES


def count_json_values(data: bytes | bytearray, limit: int, end: int | None = None) -> int:
    """An upper bound of the values and keys in the JSON text `data[:end]`: each one but the first
    follows a `,` `:` `[` or `{`. When that count is over `limit`, it is made exact by skipping strings
    (whose contents may hold those bytes), stopping as soon as the count passes `limit`."""
    end = len(data) if end is None else end
    coarse = 1 + sum(data.count(byte, 0, end) for byte in _VALUE_STARTS)
    if coarse <= limit:
        return coarse
    total, position = 1, 0
    for match in _STRING.finditer(data, 0, end):  # a Python step per string: the GIL is let go between
        start, stop = match.span()
        total += sum(data.count(byte, position, start) for byte in _VALUE_STARTS)
        position = stop
        if total > limit:
            return total
    return total + sum(data.count(byte, position, end) for byte in _VALUE_STARTS)


async def off_loop(size: int, decode: Callable[[], T]) -> T:
    """Run `decode` (of a body of `size` bytes) in place when small, else on a worker thread, so that a
    large parse does not hold up health checks and other requests."""
    if size <= OFF_LOOP_BYTES:
        return decode()
    return await asyncio.to_thread(decode)
