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
