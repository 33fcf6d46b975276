"""How a case's worker is started: one small interface, two launchers.

A launcher only says *what* to run (the command line and extra environment
for a case's :class:`~gpubench.contracts.protocol.WorkerPaths`);
:func:`gpubench.runner.process.run_case` does the starting, watching and
killing, the same way for every launcher.

Every worker gets the parent's import path (:func:`import_path_env`): pytest
puts a test file's folder (or rootdir) on ``sys.path`` before importing it, so
``model="mymodels:make"`` with ``mymodels.py`` beside the test imports in the
test; the worker, a fresh interpreter, would not find it without the same
entries on its ``PYTHONPATH``.

Both tie the case to this process (:mod:`gpubench.worker.tether`): the worker asks
the kernel for SIGKILL when its parent, this process, dies, and torchrun is
started through ``python -m gpubench.worker.tether``, which asks the same for
torchrun and names it as the parent its ranks, workers, expect.

A launcher says how many processes a case has, nothing about its engine:
:class:`ProcessLauncher` pins a world of one (``RANK=0``, ``WORLD_SIZE=1``,
``LOCAL_RANK=0``), whatever rank pytest itself holds (under torchrun or SLURM),
and torchrun sets its own ranks' values. What an engine needs beyond that
(DeepSpeed's rendezvous address and op cache) it sets itself, in the worker
(:mod:`gpubench.worker.engines.deepspeed_setup`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from gpubench.contracts.case import Case
from gpubench.contracts.protocol import WorkerPaths
from gpubench.worker.tether import PARENT_PID_ENV

WORKER_MODULE = "gpubench.worker"
TETHER_MODULE = "gpubench.worker.tether"
SINGLE_PROCESS_WORLD = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}


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


@dataclass(frozen=True)
class ProcessLauncher:
    """One worker process: ``python -m gpubench.worker``."""

    def argv(self, paths: WorkerPaths) -> list[str]:
        return [sys.executable, "-m", WORKER_MODULE, *worker_args(paths)]

    def env(self) -> dict[str, str]:
        return import_path_env() | SINGLE_PROCESS_WORLD | {PARENT_PID_ENV: str(os.getpid())}


@dataclass(frozen=True)
class TorchrunLauncher:
    """``nproc`` workers on this host through torchrun; rank 0 writes the result."""

    nproc: int

    def __post_init__(self) -> None:
        if isinstance(self.nproc, bool) or not isinstance(self.nproc, int) or self.nproc < 1:
            raise ValueError(f"nproc={self.nproc!r} must be an integer >= 1")

    def argv(self, paths: WorkerPaths) -> list[str]:
        return [
            sys.executable,
            "-m",
            TETHER_MODULE,
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
        return import_path_env() | {PARENT_PID_ENV: str(os.getpid())}


def launcher_for(case: Case) -> Launcher:
    """The launcher a case needs: a plain process for one rank, torchrun for several."""
    if case.nproc == 1:
        return ProcessLauncher()
    return TorchrunLauncher(case.nproc)
