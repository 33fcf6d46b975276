"""Host memory: peak RSS of a process and all its descendants.

The kernel keeps each process's peak resident set itself (``VmHWM`` in
/proc/<pid>/status, the same figure as ``getrusage().ru_maxrss``), so a peak is
never missed between samples and nothing has to poll fast. A daemon thread
reads the high-water marks of the process and its live descendants (compile
workers, data-loader processes) once a second, and once more at the end; a
descendant that ended in between still counts through ``RUSAGE_CHILDREN``, but
only above the process's own high-water mark: the kernel takes a child's
``ru_maxrss`` from its memory *before* ``exec`` too, and a child started with
``fork``/``vfork`` (``subprocess``) holds its parent's pages there, so every
short command the process runs (DeepSpeed's ``lscpu`` through py-cpuinfo)
reports the parent's own peak as its own. Adding that to the parent's counted
the parent twice (docs/baselines.md, "Cold start").

Plain RSS is not sampled at a high rate because a fast sampler thread takes
from a CPU training step whose intra-op threads use every core
(docs/benchmarks/README.md).

The tree's figure is the sum of each member's own peak, which can overstate a
tree whose members peak at different times or share pages; for a training
worker that is the safe side.
"""

from __future__ import annotations

import os
import resource
import threading

import psutil

from gpubench.worker.trackers.base import PeriodicSampler, Tracker


def peak_rss_bytes(pid: int) -> int | None:
    """The kernel's high-water mark of ``pid``'s resident set (``VmHWM``), or None if gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        pass
    try:  # no /proc (or no VmHWM): the current RSS is the best figure left
        return int(psutil.Process(pid).memory_info().rss)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def descendant_pids(pid: int) -> list[int] | None:
    """``pid``'s descendants, from the kernel's per-thread ``children`` lists
    (``/proc/<pid>/task/<tid>/children``): a few small reads per process of the
    tree, where ``psutil.Process.children`` reads the stat file of every process
    on the machine (docs/benchmarks/README.md, "The worker's host-memory
    sampler"). None where the kernel has no such file (not Linux, or built
    without ``CONFIG_PROC_CHILDREN``); [] when ``pid`` is gone."""
    if not os.path.exists(f"/proc/{pid}/task/{pid}/children"):
        return None if psutil.pid_exists(pid) else []
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue  # ended since its parent listed it
        for tid in tids:
            try:
                with open(f"/proc/{parent}/task/{tid}/children", encoding="ascii") as fh:
                    children = [int(child) for child in fh.read().split()]
            except (OSError, ValueError):
                continue  # the thread ended between the listing and the read
            found.extend(children)
            pending.extend(children)
    return found


def tree_peak_rss_bytes(process: psutil.Process) -> int:
    """Sum of the peak RSS of ``process`` and every descendant still alive."""
    pids = descendant_pids(process.pid)
    if pids is None:
        try:
            pids = [child.pid for child in process.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return 0
    return sum(peak_rss_bytes(pid) or 0 for pid in [process.pid, *pids])


def _ended_children_peak_bytes() -> int:
    """The largest peak RSS among this process's waited-for descendants (``RUSAGE_CHILDREN``).

    A child's figure includes what it shared with this process until its ``exec``: at
    least this process's resident set when it was started (the module doc)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


class ProcessTreeRSS(Tracker):
    """Peak RSS of ``pid``'s process tree: high-water marks read every ``interval_s``."""

    def __init__(self, pid: int | None = None, interval_s: float = 1.0) -> None:
        self.pid = os.getpid() if pid is None else pid
        self.interval_s = interval_s
        self.peak_bytes: int | None = None
        self.samples = 0
        self._children_before = 0
        self._process = psutil.Process(self.pid)
        self._lock = threading.Lock()
        self._sampler = PeriodicSampler(self.sample, interval_s, "gpubench-rss-sampler")

    def start(self) -> None:
        # children that ended before the case (DeepSpeed's op builds: ninja, g++) are the
        # set-up's, not the case's: their peak is the floor an ended child must pass
        self._children_before = _ended_children_peak_bytes()
        self.sample()
        self._sampler.start()

    def stop(self) -> None:
        try:
            self._sampler.stop()
        finally:
            self.sample()  # the final state counts too
            if self.pid == os.getpid():  # descendants that ended: the largest one's peak
                ended = _ended_children_peak_bytes()
                own = peak_rss_bytes(self.pid) or 0
                # at or below this process's own peak the figure may be this process's
                # pages seen through a child (the module doc): only above it is it a child's
                if ended > max(self._children_before, own):
                    self._record(own + ended)

    def sample(self) -> int:
        """Read the tree's high-water marks now; returns their sum."""
        total = tree_peak_rss_bytes(self._process)
        self._record(total)
        return total

    def _record(self, total: int) -> None:
        with self._lock:
            self.samples += 1
            if self.peak_bytes is None or total > self.peak_bytes:
                self.peak_bytes = total
