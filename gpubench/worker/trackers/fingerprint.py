"""The environment fingerprint every Result carries (pytest-benchmark's machine_info).

Safe to call in the parent process: torch.cuda is only touched when CUDA is
already initialised in this process or the caller asks (``cuda=True``);
otherwise GPU facts come from NVML, which creates no CUDA context. deepspeed
and transformers are looked up by distribution metadata, never imported.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from gpubench.contracts.profiles import first_visible_device
from gpubench.contracts.result import Environment

GIT_TIMEOUT_S = 2.0


def fingerprint(cuda: bool = False, cpu_only: bool = False) -> Environment:
    """Describe this machine and software stack.

    ``cuda=True``: read the device through torch.cuda (the worker on a CUDA
    profile, where CUDA is in use anyway). ``cpu_only=True``: the device is the
    CPU even if a GPU is present (a ``cpu`` profile). Every probe is best effort.
    """
    import torch

    use_torch_cuda = not cpu_only and (cuda or _cuda_initialised(torch))
    host_memory = int(psutil.virtual_memory().total)
    cpu = cpu_model()
    gpu = None
    if not cpu_only:
        gpu = _torch_cuda_device(torch) if use_torch_cuda else _nvml(_nvml_device)
    # no GPU in use: the device is the CPU, and its memory the host's
    device, device_count, device_memory = gpu if gpu is not None else (cpu, 1, host_memory)
    git_commit, git_dirty = git_state(Path.cwd())
    return Environment(
        hostname=socket.gethostname(),
        platform=platform.platform(),
        python=platform.python_version(),
        torch=str(torch.__version__),
        cuda=torch.version.cuda,
        cudnn=_cudnn_version(torch),
        driver=_nvml(_driver_version),
        device=device,
        device_count=device_count,
        device_memory_bytes=device_memory,
        cpu=cpu,
        cpu_count=_cpu_count(),
        host_memory_bytes=host_memory,
        deepspeed=package_version("deepspeed"),
        transformers=package_version("transformers"),
        gpubench=_gpubench_version(),
        git_commit=git_commit,
        git_dirty=git_dirty,
        allocator_conf=os.environ.get("PYTORCH_CUDA_ALLOC_CONF")
        or os.environ.get("PYTORCH_ALLOC_CONF"),
        torch_threads=int(torch.get_num_threads()),
        launch_env=tuple(launch_environment(os.environ).items()),
        launch_command=tuple(launch_command(os.environ)),
    )


# -- how the case's processes were launched --------------------------------------------------
# What a multi-GPU run's speed and correctness hang on, and what a report written by hand
# had to reconstruct: NCCL's and torch's tuning, the devices and threads each rank saw. Exact
# names, then prefixes. What torchrun sets anew for every launch (MASTER_PORT, the ranks and
# world sizes, TORCHELASTIC_RUN_ID, its error file) is left out: the command line says it, and
# it would make every case's environment differ. A name that looks like a secret is never
# recorded, whatever its prefix.
LAUNCH_VARIABLES = (
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "GLOO_SOCKET_IFNAME",
    "PYTORCH_CUDA_ALLOC_CONF",
    "PYTORCH_ALLOC_CONF",
)
LAUNCH_PREFIXES = ("NCCL_", "TORCH_", "CUDA_LAUNCH_", "UCX_", "FI_")
SECRET_MARKS = ("TOKEN", "SECRET", "PASSWORD", "KEY", "CREDENTIAL")


def launch_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The launch-relevant variables of ``environ`` (:data:`LAUNCH_VARIABLES`, and those
    starting with :data:`LAUNCH_PREFIXES`), minus anything named like a secret."""
    return {
        name: value
        for name, value in sorted(environ.items())
        if (name in LAUNCH_VARIABLES or name.startswith(LAUNCH_PREFIXES))
        and not any(mark in name.upper() for mark in SECRET_MARKS)
    }


def launch_command(environ: Mapping[str, str]) -> list[str]:
    """torchrun's command line when this process is one of its ranks (torchrun, the
    elastic agent, is then the parent and sets ``TORCHELASTIC_RUN_ID``); [] otherwise: a
    single worker has no launcher worth recording, and the runner's own command is pytest's."""
    if "TORCHELASTIC_RUN_ID" not in environ:
        return []
    try:
        return [str(arg) for arg in psutil.Process(os.getppid()).cmdline()]
    except (psutil.Error, OSError):
        return []


# -- probes ----------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(name: str) -> str | None:
    """Installed version of a distribution, without importing it."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_state(cwd: Path) -> tuple[str | None, bool | None]:
    """(HEAD commit, dirty) of the git work tree at ``cwd``; (None, None) outside one.

    Dirty means tracked files differ from HEAD; untracked files (run outputs,
    caches) do not count.
    """
    commit = _git(cwd, "rev-parse", "HEAD")
    if not commit:
        return None, None
    status = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    return commit, (bool(status) if status is not None else None)


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip()


def _cuda_initialised(torch: Any) -> bool:
    try:
        return bool(torch.cuda.is_initialized())
    except Exception:
        return False


def _cudnn_version(torch: Any) -> str | None:
    try:
        if not torch.backends.cudnn.is_available():
            return None
        version = torch.backends.cudnn.version()
    except Exception:
        return None
    return str(version) if version is not None else None


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may run on
    except (AttributeError, OSError):
        return os.cpu_count() or 0


def _gpubench_version() -> str:
    from gpubench.version import __version__

    return __version__


def _torch_cuda_device(torch: Any) -> tuple[str, int, int] | None:
    try:
        if not torch.cuda.is_available():
            return None
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return str(props.name), int(torch.cuda.device_count()), int(props.total_memory)
    except Exception:
        return None


def _nvml(probe: Any) -> Any:
    """Run ``probe(pynvml)`` between nvmlInit and nvmlShutdown; None on any failure."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        return probe(pynvml)
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _driver_version(pynvml: Any) -> str:
    version = pynvml.nvmlSystemGetDriverVersion()
    return version.decode() if isinstance(version, bytes) else str(version)


def _nvml_device(pynvml: Any) -> tuple[str, int, int] | None:
    """(name, visible count, total memory) of the first visible GPU, per NVML.

    CUDA_VISIBLE_DEVICES is read as profile detection reads it (an index or a
    ``GPU-`` UUID), so a result names the GPU the case ran on."""
    count = int(pynvml.nvmlDeviceGetCount())
    visible = first_visible_device()
    if count == 0 or visible == "":
        return None
    if visible is None or visible.isdigit():
        handle = pynvml.nvmlDeviceGetHandleByIndex(int(visible or 0))
    else:
        handle = pynvml.nvmlDeviceGetHandleByUUID(visible)
    entries = os.environ.get("CUDA_VISIBLE_DEVICES")
    if entries is not None:
        count = min(count, len([e for e in entries.split(",") if e.strip()]))
    name = pynvml.nvmlDeviceGetName(handle)
    name = name.decode() if isinstance(name, bytes) else str(name)
    total = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
    return name, count, total
