"""Machine load: what else the machine did while the case's measured steps ran.

CPU, from two reads, at the start and the end of the measured steps: the
machine's busy time (``/proc/stat``: user, nice, system, irq, softirq, steal, over
every core) and the CPU time of the case's process tree (``/proc/<pid>/stat``:
utime, stime and the waited-for children's cutime, cstime of every member). What
the machine did outside the tree, over the window, is the other work a case's
intra-op threads compete with. Whether they did compete is the time the tree's
threads spent runnable but waiting for a CPU (the scheduler's run delay,
``/proc/<pid>/task/<tid>/schedstat``): a case that sleeps on its GPU or its
data is not slowed by a neighbour that fills idle cores. Two reads and no
thread: nothing here takes a core from the steps it measures.

GPU, on a CUDA device: the compute processes NVML lists on the case's device that
are not in the tree, sampled every ``interval_s`` (they come and go). Inside a
container NVML lists the host's pids, which match none of the tree's: then every
entry beyond the case's own is another process, pids unknown.

The figures become a :class:`~gpubench.contracts.conditions.MachineLoad`, which
decides what counts as busy.

The sampler thread is the worker's one: it also takes the telemetry's rows
(:mod:`gpubench.worker.trackers.telemetry`) when given one, and then runs on a CPU
case too.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from gpubench.contracts.conditions import MachineLoad
from gpubench.worker.trackers.base import PeriodicSampler, Tracker
from gpubench.worker.trackers.host import descendant_pids

# /proc/stat's cpu line: user nice system idle iowait irq softirq steal guest guest_nice;
# guest time is already inside user (and guest_nice inside nice), so it is not added again
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)
_ALL_FIELDS = range(8)


@dataclass(frozen=True)
class CpuTimes:
    """The machine's CPU ticks (every core together) at one moment."""

    busy: int
    total: int
    cpu_count: int


def machine_cpu_times(path: str = "/proc/stat") -> CpuTimes | None:
    """The aggregate ``cpu`` line of ``/proc/stat``; None where there is none (not Linux)."""
    try:
        with open(path, encoding="ascii") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    cores = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    for line in lines:
        if line.startswith("cpu "):
            ticks = [int(v) for v in line.split()[1:]]
            ticks += [0] * (8 - len(ticks))
            return CpuTimes(
                busy=sum(ticks[i] for i in _BUSY_FIELDS),
                total=sum(ticks[i] for i in _ALL_FIELDS),
                cpu_count=cores or (os.cpu_count() or 1),
            )
    return None


def process_cpu_ticks(pid: int) -> int:
    """``pid``'s CPU ticks: its own (every thread's) utime and stime, and its waited-for
    children's cutime and cstime; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return 0
    # the command name (field 2) is in parentheses and may hold spaces: split after it
    fields = text[text.rfind(")") + 2 :].split()
    try:  # utime, stime, cutime, cstime: fields 14-17, so 11-14 after the name
        return sum(int(fields[i]) for i in (11, 12, 13, 14))
    except (IndexError, ValueError):
        return 0


def tree_pids(root: int) -> list[int]:
    """``root`` and its live descendants."""
    return [root, *(descendant_pids(root) or [])]


def run_delay_ns(pid: int) -> int | None:
    """Nanoseconds ``pid``'s live threads spent runnable, waiting for a CPU (the second
    field of each ``/proc/<pid>/task/<tid>/schedstat``); None without schedstat."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0  # gone
    total = 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as fh:
                total += int(fh.read().split()[1])
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # the thread ended since the listing
            return None  # a kernel without schedstat
        except (OSError, ValueError, IndexError):
            continue
    return total


def tree_run_delay_ns(root: int) -> int | None:
    """:func:`run_delay_ns` over ``root``'s process tree; None without schedstat."""
    delays = [run_delay_ns(pid) for pid in tree_pids(root)]
    return None if any(d is None for d in delays) else sum(d or 0 for d in delays)


def tree_cpu_ticks(root: int) -> int:
    """CPU ticks of ``root``'s process tree (ended members count through their parents'
    ``cutime``/``cstime`` once waited for)."""
    return sum(process_cpu_ticks(pid) for pid in tree_pids(root))


class WindowSampler(Protocol):
    """What else the sampler thread samples over the same window (the telemetry)."""

    def start(self) -> None: ...
    def sample(self) -> None: ...
    def stop(self) -> None: ...


class MachineLoadTracker(Tracker):
    """Other work on the machine while the block runs: :meth:`load` after it.

    ``root`` is the case's process tree (the worker; under torchrun, torchrun, whose
    tree holds every rank); ``nvml_handle`` the case's GPU (None: no GPU looked at);
    ``telemetry`` sampled by the same thread, started and stopped with this.
    """

    def __init__(
        self,
        root: int | None = None,
        nvml_handle: Any = None,
        interval_s: float = 0.5,
        telemetry: WindowSampler | None = None,
    ) -> None:
        self.root = os.getpid() if root is None else root
        self.nvml_handle = nvml_handle
        self.telemetry = telemetry
        self._began = False
        self._start: tuple[float, CpuTimes, int, int | None] | None = None
        self._load: MachineLoad | None = None
        self._gpu_lock = threading.Lock()
        self._gpu_others = 0
        self._gpu_pids: set[int] = set()
        self._gpu_memory: int | None = None
        self._gpu_seen = False
        self._sampler = PeriodicSampler(self._tick, interval_s, "gpubench-load-sampler")

    @property
    def started(self) -> bool:
        return self._began

    def start(self) -> None:
        self._began = True
        machine = machine_cpu_times()
        if machine is not None:  # without /proc/stat nothing measures the machine
            self._start = (
                time.perf_counter(),
                machine,
                tree_cpu_ticks(self.root),
                tree_run_delay_ns(self.root),
            )
            if self.nvml_handle is not None:
                self._sample_gpu()
        if self.telemetry is not None:
            self.telemetry.start()
        if self.telemetry is not None or (self._start and self.nvml_handle is not None):
            self._sampler.start()

    def stop(self) -> None:
        try:
            self._sampler.stop()
        finally:
            if self.telemetry is not None:
                self.telemetry.stop()
            if self._start is not None and self._load is None:
                if self.nvml_handle is not None:
                    self._sample_gpu()
                self._load = self._measured()

    def _tick(self) -> None:
        """The sampler's period: the GPU's other processes, then the telemetry's row."""
        if self._start is not None and self.nvml_handle is not None:
            self._sample_gpu()
        if self.telemetry is not None:
            self.telemetry.sample()

    def load(self) -> MachineLoad | None:
        """What was measured (None: never started, or no /proc/stat)."""
        return self._load

    def _measured(self) -> MachineLoad | None:
        assert self._start is not None
        t0, before, tree_before, delay_before = self._start
        after = machine_cpu_times()
        delay_after = tree_run_delay_ns(self.root)
        window_s = time.perf_counter() - t0
        if after is None or window_s <= 0:
            return None
        per_core = (after.total - before.total) / after.cpu_count  # ticks each core lived
        if per_core <= 0:  # a window shorter than the kernel's tick: the clock's account
            per_core = window_s * os.sysconf("SC_CLK_TCK")
        tree = tree_cpu_ticks(self.root) - tree_before
        busy = after.busy - before.busy
        waited = None
        if delay_before is not None and delay_after is not None:
            waited = max(0.0, (delay_after - delay_before) / 1e9 / window_s)
        with self._gpu_lock:
            gpu = (
                (self._gpu_others, sorted(self._gpu_pids), self._gpu_memory)
                if self._gpu_seen
                else (None, [], None)
            )
        return MachineLoad(
            window_s=window_s,
            cpu_count=after.cpu_count,
            case_cpu_cores=max(0.0, tree / per_core),
            other_cpu_cores=max(0.0, (busy - tree) / per_core),
            case_cpu_wait_cores=waited,
            gpu_other_processes=gpu[0],
            gpu_other_pids=gpu[1],
            gpu_other_memory_bytes=gpu[2],
        )

    def _sample_gpu(self) -> None:
        listed = nvml_compute_processes(self.nvml_handle)
        if listed is None:
            return
        ours = set(tree_pids(self.root))
        others = [(pid, used) for pid, used in listed if pid not in ours]
        if listed and len(others) == len(listed):  # another pid namespace: one is the case's
            count, pids = len(listed) - 1, []
            memory = None
        else:
            count, pids = len(others), [pid for pid, _ in others]
            memory = sum(used or 0 for _, used in others) if others else None
        with self._gpu_lock:
            self._gpu_seen = True
            self._gpu_others = max(self._gpu_others, count)
            self._gpu_pids.update(pids)
            if memory is not None:
                self._gpu_memory = max(self._gpu_memory or 0, memory)


def nvml_compute_processes(handle: Any) -> list[tuple[int, int | None]] | None:
    """``(pid, used GPU memory)`` of each compute process NVML lists on ``handle``'s device;
    None when NVML cannot say."""
    try:
        import pynvml

        processes = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except Exception:  # best effort: a load figure never fails a case
        return None
    return [(int(p.pid), p.usedGpuMemory) for p in processes]
