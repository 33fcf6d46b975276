"""Device memory: torch's CUDA peaks plus NVML's per-process figure, sampled ~10 Hz.

torch's ``max_memory_allocated``/``max_memory_reserved`` see only the caching
allocator; NVML's per-process ``usedGpuMemory`` also sees the CUDA context,
cuBLAS/cuDNN workspaces and NCCL buffers, which is what a card's capacity has
to hold. Both are recorded; everything is best effort (no NVML, no figure: None).
On a CPU device every figure is None (host memory is ``ProcessTreeRSS``'s job).
"""

from __future__ import annotations

import os
from typing import Any

from gpubench.worker.trackers.base import PeriodicSampler, Tracker


class DeviceMemoryTracker(Tracker):
    """Peak device memory of this process while the block runs."""

    def __init__(self, device: Any = "cpu", interval_s: float = 0.1) -> None:
        import torch

        self.device = torch.device(device)
        self.is_cuda = self.device.type == "cuda"
        self.interval_s = interval_s
        self.pid = os.getpid()
        self._peak_allocated: int | None = None
        self._peak_reserved: int | None = None
        self.nvml_peak_used_bytes: int | None = None
        self._sampler = PeriodicSampler(self._sample_nvml, interval_s, "gpubench-nvml-sampler")
        self._nvml_handle: Any = None
        self._nvml_initialised = False
        self._active = False  # inside the block on a CUDA device

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if not self.is_cuda:
            return
        import torch

        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self._active = True
        self._nvml_handle = self._open_nvml()
        if self._nvml_handle is not None:
            self._sample_nvml()
            self._sampler.start()

    def stop(self) -> None:
        try:
            self._sampler.stop()
            if self._active:
                self._read_torch_peaks()
                self._active = False
                if self._nvml_handle is not None:
                    self._sample_nvml()  # a last sample, after the work
        finally:
            self._close_nvml()

    # -- getters -----------------------------------------------------------------------------
    @property
    def peak_allocated_bytes(self) -> int | None:
        """``torch.cuda.max_memory_allocated`` since the block began (live while inside)."""
        if self._active:
            self._read_torch_peaks()
        return self._peak_allocated

    @property
    def peak_reserved_bytes(self) -> int | None:
        """``torch.cuda.max_memory_reserved`` since the block began (live while inside)."""
        if self._active:
            self._read_torch_peaks()
        return self._peak_reserved

    @property
    def nvml_handle(self) -> Any:
        """NVML's handle of the device in use while the block runs (None: CPU, no NVML)."""
        return self._nvml_handle

    def current_allocated_bytes(self) -> int | None:
        """``torch.cuda.memory_allocated`` now; None on CPU."""
        if not self.is_cuda:
            return None
        import torch

        return int(torch.cuda.memory_allocated(self.device))

    # -- internals ---------------------------------------------------------------------------
    def _read_torch_peaks(self) -> None:
        import torch

        try:
            self._peak_allocated = int(torch.cuda.max_memory_allocated(self.device))
            self._peak_reserved = int(torch.cuda.max_memory_reserved(self.device))
        except Exception:  # best effort: memory figures never fail a case
            pass

    def _open_nvml(self) -> Any:
        """NVML handle of the device in use, or None (no pynvml, no driver, not found)."""
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
            self._nvml_initialised = True
            return _nvml_handle_for(pynvml, self.device)
        except Exception:  # best effort: memory figures never fail a case
            return None

    def _close_nvml(self) -> None:
        if not self._nvml_initialised:
            return
        self._nvml_initialised = False
        self._nvml_handle = None
        try:
            import pynvml

            pynvml.nvmlShutdown()
        except Exception:  # best effort: memory figures never fail a case
            pass

    def _sample_nvml(self) -> None:
        used = nvml_process_used_bytes(self._nvml_handle, self.pid)
        if used is not None and (
            self.nvml_peak_used_bytes is None or used > self.nvml_peak_used_bytes
        ):
            self.nvml_peak_used_bytes = used


def nvml_process_used_bytes(handle: Any, pid: int) -> int | None:
    """GPU memory NVML attributes to ``pid`` on ``handle``'s device, or None.

    None also when the pid is not listed: inside a container without the host's
    pid namespace NVML reports host pids, which never match ``os.getpid()``.
    """
    if handle is None:
        return None
    try:
        import pynvml

        processes = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except Exception:  # best effort: memory figures never fail a case
        return None
    used = [p.usedGpuMemory for p in processes if p.pid == pid and p.usedGpuMemory is not None]
    return int(sum(used)) if used else None


def _nvml_handle_for(pynvml: Any, device: Any) -> Any:
    """Map a torch CUDA device to its NVML handle.

    CUDA and NVML may number devices differently (CUDA_VISIBLE_DEVICES, PCI
    ordering), so match by UUID first, then torch's own mapping, then the index.
    """
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        uuid = str(torch.cuda.get_device_properties(index).uuid)
        wanted = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            found = pynvml.nvmlDeviceGetUUID(handle)
            found = found.decode() if isinstance(found, bytes) else str(found)
            if found == wanted:
                return handle
    except Exception:  # best effort: memory figures never fail a case
        pass
    try:
        nvml_index = torch.cuda._get_nvml_device_index(index)
    except Exception:  # best effort: memory figures never fail a case
        nvml_index = index
    return pynvml.nvmlDeviceGetHandleByIndex(nvml_index)
