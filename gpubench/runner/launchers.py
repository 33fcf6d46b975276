"""How a case's worker is started: one small interface, two launchers.

A launcher only says *what* to run (the command line and extra environment
for a case's :class:`~gpubench.runner.protocol.WorkerPaths`);
:func:`gpubench.runner.process.run_case` does the starting, watching and
killing, the same way for every launcher.

Every worker gets the parent's import path (:func:`import_path_env`): pytest
puts a test file's folder (or rootdir) on ``sys.path`` before importing it, so
``model="mymodels:make"`` with ``mymodels.py`` beside the test imports in the
test; the worker, a fresh interpreter, would not find it without the same
entries on its ``PYTHONPATH``.

DeepSpeed cases (``engine="deepspeed"``) get two things more in their
environment (:func:`deepspeed_env`):

- ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
  for a single process (0, 1, 0, 127.0.0.1, a free port). DeepSpeed's
  ``init_distributed`` wants all five even for one process; with one missing
  it goes looking for MPI (``mpi4py``). torchrun sets them for ``nproc`` > 1.
- ``TORCH_EXTENSIONS_DIR``, when the parent has not set it: where DeepSpeed's
  ops (``cpu_adam``, the CPU accelerator's ``shm_comm``), compiled on first use,
  are cached, so that only the first case pays the build (tens of seconds).
  The default is ``$XDG_CACHE_HOME/gpubench/torch_extensions/<python>-<torch>``
  (``~/.cache/...`` without XDG_CACHE_HOME), one folder per Python ABI and torch
  build, as torch's own default (``~/.cache/torch_extensions/py311_cpu``) keeps
  one per Python and CUDA version.
"""

from __future__ import annotations

import importlib.metadata
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from gpubench.case import Case
from gpubench.runner.protocol import WorkerPaths

WORKER_MODULE = "gpubench.worker"


@runtime_checkable
class Launcher(Protocol):
    """Builds the command line that runs one case's worker."""

    def argv(self, paths: WorkerPaths) -> list[str]:
        """The command to start, given the case's working-directory files."""
        ...

    def env(self) -> dict[str, str]:
        """Environment variables to set on top of the parent's."""
        ...


def worker_args(paths: WorkerPaths) -> list[str]:
    """The worker's own arguments: where to read the job and write the answer."""
    return [
        "--job",
        str(paths.job),
        "--result",
        str(paths.result),
        "--progress",
        str(paths.progress),
    ]


def import_path_env() -> dict[str, str]:
    """``PYTHONPATH`` for a worker: this process's ``sys.path`` entries that a fresh
    interpreter of the same Python would not have (those pytest or the user added),
    ahead of any PYTHONPATH already set. The interpreter's own folders (stdlib,
    site-packages) are left out so nothing shadows the standard library."""
    own = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    extra: list[str] = []
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        real = os.path.realpath(entry)
        if any(real == prefix or real.startswith(prefix + os.sep) for prefix in own):
            continue
        if entry not in extra:
            extra.append(entry)
    inherited = os.environ.get("PYTHONPATH")
    if inherited:
        extra.append(inherited)
    return {"PYTHONPATH": os.pathsep.join(extra)} if extra else {}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def single_process_rendezvous() -> dict[str, str]:
    """The torch.distributed environment of a world of one, on a free local port."""
    return {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }


def default_torch_extensions_dir() -> Path:
    """gpubench's per-user cache of compiled torch extensions (DeepSpeed's ops), one
    folder per Python ABI and torch build, read without importing torch."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    try:
        torch_build = importlib.metadata.version("torch")  # e.g. 2.13.0+cpu
    except importlib.metadata.PackageNotFoundError:
        torch_build = "unknown"
    python = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
    return cache / "gpubench" / "torch_extensions" / f"{python}-torch{torch_build}"


def deepspeed_env(single_process: bool) -> dict[str, str]:
    """What a DeepSpeed case's worker needs on top of the parent's environment."""
    env: dict[str, str] = {}
    if "TORCH_EXTENSIONS_DIR" not in os.environ:
        env["TORCH_EXTENSIONS_DIR"] = str(default_torch_extensions_dir())
    if single_process:
        env |= single_process_rendezvous()
    return env


@dataclass(frozen=True)
class ProcessLauncher:
    """One worker process: ``python -m gpubench.worker``."""

    deepspeed: bool = False  # a DeepSpeed case: add deepspeed_env(single_process=True)

    def argv(self, paths: WorkerPaths) -> list[str]:
        return [sys.executable, "-m", WORKER_MODULE, *worker_args(paths)]

    def env(self) -> dict[str, str]:
        # computed at launch, so the free port is free when the worker starts
        return import_path_env() | (deepspeed_env(single_process=True) if self.deepspeed else {})


@dataclass(frozen=True)
class TorchrunLauncher:
    """``nproc`` workers on this host through torchrun; rank 0 writes the result."""

    nproc: int
    deepspeed: bool = False  # a DeepSpeed case: add the op cache (torchrun sets the ranks)

    def __post_init__(self) -> None:
        if isinstance(self.nproc, bool) or not isinstance(self.nproc, int) or self.nproc < 1:
            raise ValueError(f"nproc={self.nproc!r} must be an integer >= 1")

    def argv(self, paths: WorkerPaths) -> list[str]:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(self.nproc),
            "-m",
            WORKER_MODULE,
            *worker_args(paths),
        ]

    def env(self) -> dict[str, str]:
        return import_path_env() | (deepspeed_env(single_process=False) if self.deepspeed else {})


def launcher_for(case: Case) -> Launcher:
    """The launcher a case needs: a plain process for one rank, torchrun for several."""
    deepspeed = case.engine == "deepspeed"
    if case.nproc == 1:
        return ProcessLauncher(deepspeed=deepspeed)
    return TorchrunLauncher(case.nproc, deepspeed=deepspeed)
