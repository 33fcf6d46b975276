"""Adopting a case's orphans, so no process of a case can outlive it.

A process whose parent dies is re-parented to the nearest ancestor marked a
*child subreaper* (Linux ``prctl(PR_SET_CHILD_SUBREAPER)``, since 3.4), or to
init when there is none. While a case runs, the parent (the pytest process)
is marked one: whatever the worker's tree leaves behind (a double-forked
daemon, a ``setsid`` child whose parent exited between two scans, a torchrun
rank, which torchrun starts in its own session, after torchrun itself was
killed) becomes this process's child, where :func:`adopted_children` finds
it and the runner kills and reaps it. Without the mark such a process would
belong to init, out of reach of any scan of the worker's tree.

On a system without the call (not Linux) :class:`Subreaper` does nothing and
the runner relies on its scans of the worker's tree alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
from types import TracebackType

import psutil

from gpubench.worker.prctl import PR_GET_CHILD_SUBREAPER, PR_SET_CHILD_SUBREAPER, prctl

log = logging.getLogger(__name__)


def is_subreaper() -> bool | None:
    """Whether this process is marked a child subreaper (None where it cannot be asked)."""
    call = prctl()
    if call is None:
        return None
    flag = ctypes.c_int(0)
    if call(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) != 0:
        return None
    return bool(flag.value)


class Subreaper:
    """Marks this process a child subreaper for the ``with`` block, then puts the
    mark back as it was (a process that was already one, e.g. under a container's
    init, stays one)."""

    def __init__(self) -> None:
        self.active = False
        self._was: bool | None = None

    def __enter__(self) -> Subreaper:
        call = prctl()
        self._was = is_subreaper()
        if call is None or self._was is None:
            return self
        if call(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0:
            self.active = True
        else:
            log.debug("PR_SET_CHILD_SUBREAPER failed: %s", os.strerror(ctypes.get_errno()))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        call = prctl()
        if self.active and call is not None and not self._was:
            call(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        self.active = False


def adopted_children(known: set[int], since: float) -> list[psutil.Process]:
    """This process's children that it did not start itself: not in ``known`` (pids it
    spawned or had before the case) and created at or after ``since`` (a
    ``psutil.Process.create_time``), i.e. orphans re-parented here during the case,
    with their own descendants."""
    me = psutil.Process()
    adopted: dict[int, psutil.Process] = {}
    try:
        children = me.children()
    except psutil.Error:
        return []
    for child in children:
        try:
            if child.pid in known or child.create_time() < since:
                continue
            adopted[child.pid] = child
            for grandchild in child.children(recursive=True):
                adopted.setdefault(grandchild.pid, grandchild)
        except psutil.Error:
            continue
    return list(adopted.values())
