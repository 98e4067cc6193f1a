"""glibc's malloc, told to keep freed memory for reuse: a model allocates the same large buffers on
every call.

By default a thread other than the main one gets a malloc arena of its own, made of 64 MiB heaps, and a
heap that falls empty is unmapped; in the main heap, free memory beyond the trim threshold (128 KiB,
raised as large blocks are freed) is given back too. A model called on batches of one size frees its
activations after every call and asks for the same blocks again, and the kernel hands the memory back
as zeroed pages, one fault at a time. Measured on minilm at batch 64, run on a thread of its own as the
server runs it (4 s): 354,000 to 388,000 page faults and 468 to 472 items/s by default; none and 514
to 529 items/s with every thread on the main heap and the thresholds below. PyTorch's CPU tuning
guides make the same point and swap in jemalloc or tcmalloc; three mallopt calls need no new library.

The cost: memory freed after a call stays in the process for the next one, so the resident size stays
at the peak of a call instead of falling between calls, and threads share one arena's lock.
MODELPOD_MALLOC_TUNING=0 leaves glibc's defaults. On other C libraries (musl, macOS) this does nothing.

The exception is a large request: its body and decoded values are held once and never asked for again
by the model, so keeping them would leave the process at that request's peak for good. After a body of
`LARGE_BODY_BYTES` or more, once no such request is in flight, `ReleaseAfterLargeRequests` calls
`malloc_trim(0)` on a worker thread, which gives free memory back to the system, the heap's top and
whole free pages inside it. The model's own reused blocks are given back too, so its next call faults
them in again, once (on minilm, about the 17% of one call that the thresholds above save on each).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import sys
from typing import Any

M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
# glibc's largest allowed mmap threshold on 64-bit systems: smaller blocks come from the heap and are reused
MMAP_THRESHOLD = 32 * 1024 * 1024
# free memory at the top of the heap is given back to the system only beyond this
TRIM_THRESHOLD = 1024 * 1024 * 1024
ENV = "MODELPOD_MALLOC_TUNING"
# a request body this large or larger is followed by a trim
LARGE_BODY_BYTES = 1024 * 1024


def keep_freed_memory() -> bool:
    """Put every thread on the main heap and raise its thresholds; True when glibc took all three. Call
    it before other threads allocate: a thread that already has an arena keeps it."""
    if os.environ.get(ENV, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    settings = ((M_ARENA_MAX, 1), (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return all(mallopt(option, value) == 1 for option, value in settings)


@functools.cache
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def release_freed_memory() -> bool:
    """Give free heap memory back to the system (glibc's malloc_trim); True when some was given."""
    trim = getattr(_libc(), "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False


class ReleaseAfterLargeRequests:
    """Counts requests with a large body in flight; `delay` seconds after the last one ends (its answer
    is then written, its buffers freed) and if none has begun since, trims on a worker thread. One trim
    at a time; a request ending during one asks for another after it."""

    def __init__(self, release: Any = release_freed_memory, *, delay: float = 0.2) -> None:
        self._release = release
        self.delay = delay
        self.open = 0
        self.trims = 0  # done, for tests
        self._running: asyncio.Task[None] | None = None
        self._again = False

    def opened(self) -> None:
        self.open += 1

    def closed(self) -> None:
        self.open -= 1
        if self.open > 0:
            return
        if self._running is not None and not self._running.done():
            self._again = True
            return
        self._running = asyncio.get_running_loop().create_task(self._trim())

    async def _trim(self) -> None:
        self._again = True
        while self._again:
            self._again = False
            await asyncio.sleep(self.delay)
            if self.open > 0:
                return  # the end of that request trims
            await asyncio.to_thread(self._release)
            self.trims += 1
