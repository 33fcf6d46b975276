"""Waiting for a worker to exit, with one wake-up per poll interval and none between.

``Popen.wait(timeout)`` is a busy loop on POSIX: it calls ``waitpid(WNOHANG)``
and sleeps 1, 2, 4 ... 50 ms in between, about seven wake-ups per 0.1 s. On a
machine whose cores all run the case's intra-op threads, each wake-up of the
parent preempts one of them, and the others wait for it at the end of the
parallel region (figures: docs/benchmarks/README.md, "The parent's wait").

A pidfd (``os.pidfd_open``, Linux 5.3 and later) becomes readable when its
process exits, so ``select`` on it sleeps the whole interval or returns at
the exit (``poll``, not ``select``: a descriptor numbered past 1023 is fine).
Where there is no pidfd, :class:`ExitWaiter` falls back to ``Popen.wait``.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess


class ExitWaiter:
    """Sleeps until ``proc`` exits or a timeout passes; :meth:`close` releases the pidfd
    (``contextlib.closing`` makes it a ``with`` block)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        self._pidfd: int | None = None
        self._poller = select.poll()
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            with contextlib.suppress(OSError):  # old kernel (ENOSYS), or already reaped
                self._pidfd = pidfd_open(proc.pid)
                self._poller.register(self._pidfd, select.POLLIN)

    @property
    def uses_pidfd(self) -> bool:
        return self._pidfd is not None

    def wait(self, timeout_s: float) -> bool:
        """Block for up to ``timeout_s`` seconds; True once the process has exited (and
        been reaped by ``Popen``, so its ``returncode`` is set)."""
        timeout_s = max(0.0, timeout_s)
        if self._pidfd is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=timeout_s)
        else:
            self._poller.poll(timeout_s * 1000.0)  # milliseconds; PEP 475 retries EINTR
        return self._proc.poll() is not None

    def close(self) -> None:
        if self._pidfd is not None:
            self._poller.unregister(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
