"""One GPU (or k) per pytest-xdist worker: which of the machine's GPUs a worker's cases see.

Under ``pytest -n N`` every worker would otherwise start its cases on GPU 0. Each worker
holds its own slice of the visible GPUs instead, ``k`` each (``--gpubench-gpus-per-worker``,
default: the visible GPUs divided evenly over the workers, at least 1): worker ``gwI``
holds the I-th slice. A case gets the first ``nproc`` GPUs of its worker's slice through
``CUDA_VISIBLE_DEVICES`` in its worker's environment (which the Result's
``environment.launch_env`` records); a case needing more than the worker holds is skipped
with both numbers; without xdist, a case needing more GPUs than the machine shows is
skipped the same way (two ranks cannot share one GPU's NCCL communicator).

The visible GPUs are the parent's ``CUDA_VISIBLE_DEVICES`` when set (indices or UUIDs,
kept as written), else NVML's device count: never CUDA, which would hold a context in the
pytest process for the whole session. Nothing is pinned outside xdist, with no GPU visible,
or for a ``cpu`` profile. Each worker works out its own slice from the same inputs (its
id, the worker count, the same environment), so no worker waits for another.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gpubench.contracts.case import Case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.profiles.detect import nvml_device_count

VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
GPUS_PER_WORKER_OPTION = "--gpubench-gpus-per-worker"


class DeviceError(ValueError):
    """The GPUs cannot be shared out as asked (the message gives the figures)."""


def visible_devices(
    environ: Mapping[str, str], count_gpus: Callable[[], int] = nvml_device_count
) -> tuple[str, ...]:
    """The GPUs this process may hand out, as CUDA_VISIBLE_DEVICES entries: the parent's
    list when set (CUDA stops at the first negative or empty entry, and so does this),
    else ``0..n-1`` for the ``n`` GPUs NVML counts."""
    listed = environ.get(VISIBLE_ENV)
    if listed is None:
        return tuple(str(i) for i in range(count_gpus()))
    devices: list[str] = []
    for entry in (e.strip() for e in listed.split(",")):
        if not entry or entry.startswith("-"):
            break
        devices.append(entry)
    return tuple(devices)


def worker_index(worker_id: str) -> int:
    """xdist's worker id ``gw3`` -> 3; DeviceError for an id xdist did not number."""
    match = re.fullmatch(r"gw(\d+)", worker_id)
    if match is None:
        raise DeviceError(
            f"xdist worker id {worker_id!r} is not gw<N>: cannot tell which GPUs it holds; "
            f"run without custom --tx ids, or give {GPUS_PER_WORKER_OPTION} 0 to pin nothing"
        )
    return int(match.group(1))


def gpus_per_worker(visible: int, workers: int, requested: int | None) -> int:
    """``requested``, or the visible GPUs divided evenly over the workers (at least 1)."""
    if requested is not None:
        return requested
    return max(1, visible // max(1, workers))


def worker_devices(
    visible: Sequence[str], index: int, workers: int, requested: int | None = None
) -> tuple[str, ...]:
    """The slice of ``visible`` that worker ``index`` of ``workers`` holds; DeviceError
    when ``workers`` slices of that size are more GPUs than are visible."""
    per_worker = gpus_per_worker(len(visible), workers, requested)
    if per_worker * workers > len(visible):
        raise DeviceError(
            f"-n {workers} workers x {per_worker} GPU(s) each needs {per_worker * workers} "
            f"GPUs, and {len(visible)} are visible ({', '.join(visible) or 'none'}); run "
            f"fewer workers (-n {max(1, len(visible) // per_worker)}), give fewer per "
            f"worker ({GPUS_PER_WORKER_OPTION}), or {GPUS_PER_WORKER_OPTION} 0 to pin "
            "nothing (the workers then share the GPUs)"
        )
    if not 0 <= index < workers:
        raise DeviceError(f"xdist worker {index} of {workers}: no such worker")
    return tuple(visible[index * per_worker : (index + 1) * per_worker])


@dataclass(frozen=True)
class XdistWorker:
    """Who this process is under pytest-xdist: its id (``gw0``) and how many workers run."""

    worker_id: str
    workers: int


class DevicePlan:
    """The GPUs this process's cases run on. ``worker`` None (not an xdist worker) or
    ``requested`` 0 pins nothing; otherwise the worker's slice is worked out on first use
    (NVML is read only when a GPU case is collected)."""

    def __init__(
        self,
        worker: XdistWorker | None = None,
        requested: int | None = None,
        environ: Mapping[str, str] = os.environ,
        count_gpus: Callable[[], int] = nvml_device_count,
    ) -> None:
        self.worker = worker
        self.requested = requested
        self._environ = environ
        self._count_gpus = count_gpus
        self._held: tuple[str, ...] | None = None
        self._visible: tuple[str, ...] | None = None
        self._resolved = False

    @property
    def held(self) -> tuple[str, ...] | None:
        """This worker's GPUs; None when nothing is pinned. DeviceError when they cannot
        be shared out."""
        if not self._resolved:
            self._held = self._resolve()
            self._resolved = True
        return self._held

    def _resolve(self) -> tuple[str, ...] | None:
        if self.worker is None or self.requested == 0:
            return None
        visible = self.visible
        if not visible:
            return None
        index = worker_index(self.worker.worker_id)
        return worker_devices(visible, index, self.worker.workers, self.requested)

    @property
    def visible(self) -> tuple[str, ...]:
        """Every GPU this process may use (read once)."""
        if self._visible is None:
            self._visible = visible_devices(self._environ, self._count_gpus)
        return self._visible

    def skip_reason(self, case: Case, profile: HardwareProfile) -> str | None:
        """Why this worker cannot run ``case`` on ``profile``: it needs more GPUs (``nproc``
        on this node) than the worker holds; None when it can or nothing is pinned."""
        if profile.is_cpu:
            return None
        held = self.held
        if held is None:  # nothing pinned: the machine's visible GPUs are the case's
            visible = self.visible
            if not visible or case.nproc <= len(visible):
                return None  # none visible: the worker says the profile needs CUDA
            return (
                f"needs {case.nproc} GPUs (nproc={case.nproc}) and this machine shows "
                f"{len(visible)} ({VISIBLE_ENV}/NVML: {', '.join(visible)})"
            )
        if case.nproc <= len(held):
            return None
        assert self.worker is not None
        return (
            f"needs {case.nproc} GPUs (nproc={case.nproc}) and xdist worker "
            f"{self.worker.worker_id} holds {len(held)} ({GPUS_PER_WORKER_OPTION} "
            f"{len(held)}); run with fewer workers or more GPUs per worker"
        )

    def env(self, case: Case, profile: HardwareProfile) -> dict[str, str]:
        """The environment that pins ``case``'s worker to its GPUs: the first ``nproc`` of
        the worker's; {} when nothing is pinned."""
        held = None if profile.is_cpu else self.held
        if held is None:
            return {}
        return {VISIBLE_ENV: ",".join(held[: case.nproc])}
