"""Linux ``prctl(2)`` through ctypes, for both sides of the worker protocol.

The parent marks itself a child subreaper while a case runs
(:mod:`gpubench.runner.subreaper`); the worker, and torchrun before it starts
the ranks, ask the kernel for a signal when their parent dies
(:mod:`gpubench.worker.tether`). Elsewhere than Linux :func:`prctl` is None and
callers go without.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PR_GET_PDEATHSIG = 2
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37


@functools.cache
def prctl() -> ctypes._FuncPointer | None:
    """libc's ``prctl`` (errno kept for ``ctypes.get_errno``), or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None
