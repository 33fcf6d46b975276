"""The conditions a case was measured under, beside its figures: was the machine busy with
other work, was the run cold (building ops, filling caches a later run finds ready).

Both are measured in the worker (:mod:`gpubench.worker.trackers.load`,
:mod:`gpubench.worker.engines.deepspeed_setup`, :mod:`gpubench.worker.engines.warmth`)
and judged here, torch-free, so that the Result, the summary and the gate say the same
thing with the same numbers. docs/baselines.md says how the bounds were chosen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpubench.contracts.schema import record_fields
from gpubench.contracts.units import GiB

# Other work of at least this many cores' worth, on average over the measured steps ...
BUSY_OTHER_CORES = 0.5
# ... while the case's threads waited for a CPU at least this many cores' worth of the
# time (the scheduler's run delay): the case and the other work competed for the cores.
# A case that sleeps on its GPU or data is not slowed by a neighbour filling idle cores;
# a CPU case whose intra-op threads use every core is, badly.
BUSY_WAIT_CORES = 0.25
# Without the scheduler's figure (a kernel without schedstat): less than this many cores'
# worth left idle stands for the competition
BUSY_IDLE_CORES = 0.5


@dataclass(frozen=True)
class MachineLoad:
    """What else the machine did while the case's measured steps ran.

    CPU: the machine's busy time from ``/proc/stat`` (user, nice, system, irq, softirq
    and a hypervisor's steal, over every core) minus the CPU time of the case's own
    process tree (the worker and its descendants; under torchrun, torchrun's tree of
    ranks), both over the wall time of the measured steps, in cores' worth: 1.0 is one
    core busy for the whole window. GPU: the other processes NVML lists on the case's
    device during that window (None: not looked at: a CPU case, or no NVML).
    """

    window_s: float  # wall time of the measured steps
    cpu_count: int  # cores the machine's figures are over (/proc/stat's cpuN lines)
    case_cpu_cores: float  # the case's process tree: CPU seconds / window_s
    other_cpu_cores: float  # busy outside that tree (processes, kernel, steal) / window_s
    # the tree's threads runnable but waiting for a CPU / window_s (None: no schedstat)
    case_cpu_wait_cores: float | None = None
    # GPU (NVML, on the case's device): the most other processes listed at once (None: not
    # looked at: a CPU case, or no NVML), their pids (empty where NVML's pids are another
    # pid namespace's, a container's host: none matched the case's, so the others are the
    # entries beyond its own), and the most GPU memory they held at once
    gpu_other_processes: int | None = None
    gpu_other_pids: list[int] = field(default_factory=list)
    gpu_other_memory_bytes: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "machine_load") -> MachineLoad:
        fields = record_fields(cls, data, where)
        fields["gpu_other_pids"] = [int(pid) for pid in fields.get("gpu_other_pids") or []]
        return cls(**fields)

    @property
    def idle_cores(self) -> float:
        return max(0.0, self.cpu_count - self.case_cpu_cores - self.other_cpu_cores)

    @property
    def cpu_busy(self) -> bool:
        """Other work took cores the case was competing for (the bounds above)."""
        if self.other_cpu_cores < BUSY_OTHER_CORES:
            return False
        if self.case_cpu_wait_cores is not None:
            return self.case_cpu_wait_cores >= BUSY_WAIT_CORES
        return self.idle_cores < BUSY_IDLE_CORES

    @property
    def gpu_busy(self) -> bool:
        return bool(self.gpu_other_processes)

    @property
    def busy(self) -> bool:
        return self.cpu_busy or self.gpu_busy

    def reasons(self) -> list[str]:
        """Why the machine counts as busy, each with its figures; [] when it does not."""
        found = []
        if self.cpu_busy:
            waited = self.case_cpu_wait_cores
            found.append(
                f"{self.other_cpu_cores:.1f} of {self.cpu_count} cores busy with other work "
                f"(the case's processes used {self.case_cpu_cores:.1f}"
                + (f" and waited for a CPU {waited:.1f}" if waited is not None else "")
                + ")"
            )
        if self.gpu_busy:
            pids = self.gpu_other_pids
            listed = f" (pid {', '.join(map(str, pids[:4]))}{', ...' if len(pids) > 4 else ''})"
            held = self.gpu_other_memory_bytes
            found.append(
                f"{self.gpu_other_processes} other process(es) on the GPU"
                + (listed if pids else "")
                + (f" holding {held / GiB:.1f} GiB" if held else "")
            )
        return found


def busy_sentence(load: MachineLoad | None) -> str | None:
    """``machine busy: ...`` for a busy measurement, else None."""
    if load is None or not load.busy:
        return None
    return "machine busy during the measured steps: " + "; ".join(load.reasons())


def cold_sentence(cold_start: list[str]) -> str | None:
    """``cold start: ...`` for a run that built or filled what a later run finds ready."""
    return "cold start: " + "; ".join(cold_start) if cold_start else None
