"""What an out-of-memory failure looks like, in one place.

The engine and the worker classify exceptions with :func:`is_oom` (an OOM is a
Result, not a crash) and the runner matches a dead worker's stderr with
:func:`looks_like_oom`. Imports nothing heavy: the parent process uses it too.
"""

from __future__ import annotations

import sys

# Lower-case substrings of the messages torch, the C++ runtime, Python and the OS
# print when an allocation fails.
OOM_MARKERS = (
    "out of memory",  # CUDA caching allocator ("CUDA out of memory"), HIP
    "outofmemoryerror",  # torch.OutOfMemoryError in a traceback
    "can't allocate memory",  # c10 DefaultCPUAllocator under RLIMIT_DATA
    "cannot allocate memory",  # ENOMEM from the OS (mmap under RLIMIT_DATA)
    "defaultcpuallocator",
    "std::bad_alloc",  # C++ allocations inside torch ops
    "memoryerror",  # Python's MemoryError in a traceback
    "_status_alloc_failed",  # CUBLAS_STATUS_ALLOC_FAILED / CUDNN_STATUS_ALLOC_FAILED
)


def _reads_as(text: str, markers: tuple[str, ...]) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in markers)


def looks_like_oom(text: str) -> bool:
    """Whether a message or a line of output reads as an allocation failure."""
    return _reads_as(text, OOM_MARKERS)


# What a failed thread start reads as: Python's threading ("can't start new thread") and
# C++ std::thread / pthread_create (EAGAIN, "Resource temporarily unavailable").
THREAD_START_MARKERS = (
    "can't start new thread",
    "resource temporarily unavailable",
)

# oneDNN (torch's mkldnn kernels on x86) reports every failed primitive creation with
# this one message, whatever its status: out_of_memory among them, when the room for the
# primitive's JIT-compiled code or scratchpad is refused. Seen under the cpu:64MiB cap
# of tests/test_probe.py on a CI machine (batch 11 of gpt-tiny, 2026-12-03) and never
# without a cap; so, like a thread start, an allocation failure only under the host cap.
PRIMITIVE_CREATION_MARKERS = ("could not create a primitive",)

# What reads as an allocation failure only while the host's memory is capped.
UNDER_CAP_OOM_MARKERS = THREAD_START_MARKERS + PRIMITIVE_CREATION_MARKERS


def host_memory_capped() -> bool:
    """Whether this process runs under a finite ``RLIMIT_DATA`` soft limit."""
    try:
        import resource
    except ImportError:  # not POSIX
        return False
    soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
    return soft != resource.RLIM_INFINITY


def is_oom(exc: BaseException, host_capped: bool | None = None) -> bool:
    """Whether ``exc`` is an allocation failure (device or host), not a bug.

    Two failures count too while the host's memory is capped (``host_capped``; by
    default, whether a finite ``RLIMIT_DATA`` is in force now), since under that cap
    each is most likely a refused allocation: a thread that could not start (its
    stack is an allocation like any tensor's, and gloo, DDP and the autograd engine
    start threads as they need them) and a oneDNN primitive that could not be
    created (its code and scratchpad are allocations; oneDNN's message does not say
    which status it got).
    """
    torch = sys.modules.get("torch")  # not imported: no torch error can have been raised
    if isinstance(exc, MemoryError) or (
        torch is not None and isinstance(exc, torch.OutOfMemoryError)
    ):
        return True
    if not isinstance(exc, (RuntimeError, OSError)):
        return False
    message = str(exc)
    if looks_like_oom(message):
        return True
    if host_capped is None:
        host_capped = host_memory_capped()
    return host_capped and _reads_as(message, UNDER_CAP_OOM_MARKERS)
