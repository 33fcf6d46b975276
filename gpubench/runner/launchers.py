"""How a case's worker is started: one small interface, two launchers.

A launcher only says *what* to run (the command line and extra environment
for a case's :class:`~gpubench.runner.protocol.WorkerPaths`);
:func:`gpubench.runner.process.run_case` does the starting, watching and
killing, the same way for every launcher.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ProcessLauncher:
    """One worker process: ``python -m gpubench.worker``."""

    def argv(self, paths: WorkerPaths) -> list[str]:
        return [sys.executable, "-m", WORKER_MODULE, *worker_args(paths)]

    def env(self) -> dict[str, str]:
        return {}


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
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(self.nproc),
            "-m",
            WORKER_MODULE,
            *worker_args(paths),
        ]

    def env(self) -> dict[str, str]:
        return {}


def launcher_for(case: Case) -> Launcher:
    """The launcher a case needs: a plain process for one rank, torchrun for several."""
    if case.nproc == 1:
        return ProcessLauncher()
    return TorchrunLauncher(case.nproc)
