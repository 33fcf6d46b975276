"""The memory cap a case trains under: its profile's capacity, enforced in the worker.

On a ``cpu`` profile the soft ``RLIMIT_DATA`` is set to the worker's data size
after imports plus the profile's ``memory_bytes``, so the cap bounds what
training allocates, as a GPU's capacity does. Since Linux 4.7 the data limit
counts every private writable mapping (brk heap and anonymous ``mmap``), which
is where glibc's malloc, and so torch's ``DefaultCPUAllocator``, gets tensor
memory: over the cap torch raises "DefaultCPUAllocator: can't allocate
memory", numpy and Python ``MemoryError``, and the engine reports ``oom``.
``RLIMIT_AS`` would count read-only library mappings and ``PROT_NONE``
reservations too, none of which is memory the training uses. The data limit
counts allocated rather than resident memory (a little conservative), and a
thread's stack counts: hence the samplers' small stacks
(:func:`gpubench.worker.trackers.start_daemon`) and :func:`prime_runtime`, which
starts torch's own threads and lazy imports before the baseline is read.
docs/architecture.md says how this was checked.

On a CUDA profile smaller than the card, ``torch.cuda.set_per_process_memory_fraction``
makes the caching allocator refuse past the profile's capacity
(``capacity_emulated``).
"""

from __future__ import annotations

from dataclasses import dataclass

from gpubench.contracts.profiles import HardwareProfile
from gpubench.worker.engines.device import device_for
from gpubench.worker.engines.distributed import Ranks

_RLIMIT_MAX = 2**63 - 1  # the most setrlimit takes (a C long); a larger cap is no cap


def _self_status_bytes(field: str) -> int | None:
    """A size of /proc/self/status (``VmData:``, ``VmRSS:``, reported in kB), or None."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def vm_data_bytes() -> int | None:
    """This process's data segment size (``VmData`` of /proc/self/status), or None."""
    return _self_status_bytes("VmData:")


def resident_bytes() -> int | None:
    """This process's resident set now (``VmRSS`` of /proc/self/status), or None."""
    return _self_status_bytes("VmRSS:")


def prime_runtime() -> None:
    """One throw-away training step on a tiny layer, before any memory cap.

    torch initialises a good deal lazily on first use: the intra-op thread pool
    (its threads' stacks), the autograd engine, and ``torch._dynamo``, which
    ``torch.optim`` imports on an optimizer's first construction (seconds and
    tens of MiB). That is the runtime's baseline, not memory the case's training
    uses, so it is paid before the cap is measured from.
    """
    import torch

    layer = torch.nn.Linear(64, 64)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-3)
    layer(torch.ones(8, 64)).square().mean().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@dataclass
class CapacityLimit:
    """The memory cap the case ran under; :meth:`release` undoes what :meth:`apply` did."""

    capacity_bytes: int | None = None
    emulated: bool = False
    host_capped: bool = False  # RLIMIT_DATA was lowered (a cpu profile)
    # the resident set when the cap was applied: the runtime (imports, torch's threads),
    # no case yet; peak RSS above it is what the case's training added on the host
    runtime_rss_bytes: int | None = None
    _rlimit_saved: tuple[int, int] | None = None

    @classmethod
    def apply(cls, profile: HardwareProfile) -> CapacityLimit:
        if profile.kind == "cuda":
            return cls._apply_cuda(profile)
        return cls._apply_cpu(profile)

    @classmethod
    def _apply_cpu(cls, profile: HardwareProfile) -> CapacityLimit:
        prime_runtime()
        return cls.cap_host(int(profile.memory_bytes))

    @classmethod
    def cap_host(cls, memory_bytes: int) -> CapacityLimit:
        """Let this process (and what it forks) allocate ``memory_bytes`` more than its data
        segment holds now: the soft ``RLIMIT_DATA``, never above the hard limit."""
        import resource

        base = vm_data_bytes()
        if base is None:
            raise RuntimeError("cannot read VmData from /proc/self/status to cap memory")
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        limit = min(base + memory_bytes, _RLIMIT_MAX)  # setrlimit takes a C long
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
        return cls(
            capacity_bytes=memory_bytes,
            host_capped=True,
            runtime_rss_bytes=resident_bytes(),
            _rlimit_saved=(soft, hard),
        )

    @classmethod
    def _apply_cuda(cls, profile: HardwareProfile) -> CapacityLimit:
        import torch

        device = device_for(profile, Ranks.from_env().local_rank)
        torch.cuda.set_device(device)
        total = torch.cuda.get_device_properties(device).total_memory
        emulated = profile.memory_bytes < total
        if emulated:
            # the caching allocator refuses (OutOfMemoryError) past this fraction
            torch.cuda.set_per_process_memory_fraction(profile.memory_bytes / total, device)
        return cls(
            capacity_bytes=int(profile.memory_bytes),
            emulated=emulated,
            runtime_rss_bytes=resident_bytes(),
        )

    def release(self) -> None:
        """Lift the CPU cap again (the soft limit as it was), so the answer can be written."""
        if self._rlimit_saved is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_DATA, self._rlimit_saved)
            self._rlimit_saved = None
