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
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
# glibc's largest allowed mmap threshold on 64-bit systems: smaller blocks come from the heap and are reused
MMAP_THRESHOLD = 32 * 1024 * 1024
# free memory at the top of the heap is given back to the system only beyond this
TRIM_THRESHOLD = 1024 * 1024 * 1024
ENV = "MODELPOD_MALLOC_TUNING"


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
