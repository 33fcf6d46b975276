"""What an out-of-memory failure looks like, in one place.

The engine matches exception messages with it (an OOM is a Result, not a
crash) and the runner matches a dead worker's stderr with it. Imports nothing
heavy: the parent process uses it too.
"""

from __future__ import annotations

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


def looks_like_oom(text: str) -> bool:
    """Whether a message or a line of output reads as an allocation failure."""
    lowered = text.lower()
    return any(marker in lowered for marker in OOM_MARKERS)


# What a failed thread start reads as: Python's threading ("can't start new thread") and
# C++ std::thread / pthread_create (EAGAIN, "Resource temporarily unavailable").
THREAD_START_MARKERS = (
    "can't start new thread",
    "resource temporarily unavailable",
)


def looks_like_thread_start_failure(text: str) -> bool:
    """Whether a message reads as a thread that could not be started.

    Under the worker's ``RLIMIT_DATA`` cap (``cpu`` profiles) a thread's stack
    is data, so a thread that cannot start for want of room under the cap is an
    allocation failure like any other; :func:`host_memory_capped` tells whether
    such a cap is in force.
    """
    lowered = text.lower()
    return any(marker in lowered for marker in THREAD_START_MARKERS)


def host_memory_capped() -> bool:
    """Whether this process runs under a finite ``RLIMIT_DATA`` soft limit."""
    try:
        import resource
    except ImportError:  # not POSIX
        return False
    soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
    return soft != resource.RLIM_INFINITY
