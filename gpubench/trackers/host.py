"""Host memory: sampled peak RSS of a process and all its descendants.

The worker's own RSS misses memory held by helpers it starts (torch.compile's
compile workers, data-loader processes), so the whole tree is summed. RSS of
shared pages is counted once per process, so the sum can overstate a tree
that shares a lot; for a training worker that is the safe side.
"""

from __future__ import annotations

import os
import threading

import psutil

from gpubench.trackers import Tracker, start_daemon


def tree_rss_bytes(process: psutil.Process) -> int:
    """RSS of ``process`` plus every descendant still alive (0 for the vanished)."""
    total = 0
    try:
        members = [process, *process.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total


class ProcessTreeRSS(Tracker):
    """Peak RSS of ``pid`` and its children, sampled every ``interval_s`` by a daemon thread."""

    def __init__(self, pid: int | None = None, interval_s: float = 0.05) -> None:
        self.pid = os.getpid() if pid is None else pid
        self.interval_s = interval_s
        self.peak_bytes: int | None = None
        self.samples = 0
        self._process = psutil.Process(self.pid)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self._stop.clear()
        self.sample()
        self._thread = start_daemon(self._run, "gpubench-rss-sampler")

    def stop(self) -> None:
        try:
            if self._thread is not None:
                self._stop.set()
                self._thread.join(timeout=5.0)
                self._thread = None
        finally:
            self.sample()  # the final state counts too

    def sample(self) -> int:
        """Take one sample now (also usable between the thread's samples); returns it."""
        rss = tree_rss_bytes(self._process)
        with self._lock:
            self.samples += 1
            if self.peak_bytes is None or rss > self.peak_bytes:
                self.peak_bytes = rss
        return rss

    def current_bytes(self) -> int:
        """RSS of the tree right now (not recorded as a sample)."""
        return tree_rss_bytes(self._process)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()
