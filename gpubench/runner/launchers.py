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

A case on one machine gets torchrun's ``--standalone`` (a local rendezvous on a free
port); a case that spans machines (``Case.nnodes`` > 1), or any torchrun case when the
session names a rendezvous, gets torchrun's own rendezvous options (:class:`Rendezvous`):
every node runs the same pytest command, and each node's torchrun of one case meets the
others' at the endpoint under an id derived from the case, so no launcher of ours is
involved.
"""

from __future__ import annotations

import hashlib
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
DEFAULT_RDZV_BACKEND = "c10d"  # torchrun's own: the store is hosted by the endpoint's agent
RDZV_ID_PREFIX = "gpubench"


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


class RendezvousError(ValueError):
    """A multi-node case without the rendezvous it needs (the message names the option)."""


@dataclass(frozen=True)
class Rendezvous:
    """torchrun's rendezvous, as the session's options give it: where the nodes meet
    (``HOST:PORT``, the same on every node), through which backend, and an id the user
    chose for the job (``None``: none, the case alone names it)."""

    endpoint: str
    backend: str = DEFAULT_RDZV_BACKEND
    job_id: str | None = None

    def id_for(self, case_key: str) -> str:
        """The rendezvous id of one case: the same on every node that runs it (each node's
        pytest session has its own run id, so the case's key names it, not the run), and
        different for the next case, so a node that starts the next case early cannot join
        the last one's rendezvous. ``job_id`` (``$SLURM_JOB_ID``, a CI run id) keeps two
        jobs sharing an endpoint apart."""
        digest = hashlib.sha256(case_key.encode("utf-8")).hexdigest()[:16]
        return f"{self.job_id or RDZV_ID_PREFIX}-{digest}"


def case_key(case: Case, profile: str, repeat: int = 0) -> str:
    """What names one run of a case on every node: its id, profile and rerun number."""
    return f"{case.id}|{profile}|{repeat}"


@dataclass(frozen=True)
class TorchrunLauncher:
    """``nproc`` workers on each of ``nnodes`` hosts through torchrun; rank 0 writes the
    result. Without ``rendezvous`` (one host only) torchrun's ``--standalone``; with it,
    ``--nnodes``, ``--rdzv-backend``, ``--rdzv-endpoint`` and ``--rdzv-id``."""

    nproc: int
    nnodes: int = 1
    rendezvous: Rendezvous | None = None
    rdzv_id: str = ""  # the case's: Rendezvous.id_for

    def __post_init__(self) -> None:
        for name in ("nproc", "nnodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        if self.nnodes > 1 and self.rendezvous is None:
            raise RendezvousError(
                f"nnodes={self.nnodes}: a case on {self.nnodes} machines needs a rendezvous "
                "endpoint HOST:PORT, the same on every node (--gpubench-rdzv-endpoint)"
            )
        if self.rendezvous is not None and not self.rdzv_id:
            raise ValueError("a rendezvous needs the case's id (Rendezvous.id_for)")

    def rendezvous_args(self) -> list[str]:
        """torchrun's options that say how its ranks find each other."""
        if self.rendezvous is None:
            return ["--standalone"]
        return [
            "--nnodes",
            str(self.nnodes),
            "--rdzv-backend",
            self.rendezvous.backend,
            "--rdzv-endpoint",
            self.rendezvous.endpoint,
            "--rdzv-id",
            self.rdzv_id,
        ]

    def argv(self, paths: WorkerPaths) -> list[str]:
        return [
            sys.executable,
            "-m",
            TETHER_MODULE,
            sys.executable,
            "-m",
            "torch.distributed.run",
            *self.rendezvous_args(),
            "--nproc-per-node",
            str(self.nproc),
            "-m",
            WORKER_MODULE,
            *worker_args(paths),
        ]

    def env(self) -> dict[str, str]:
        return import_path_env() | {PARENT_PID_ENV: str(os.getpid())}


def launcher_for(
    case: Case, rendezvous: Rendezvous | None = None, *, profile: str = "", repeat: int = 0
) -> Launcher:
    """The launcher a case needs: a plain process for one rank on one machine, torchrun for
    several; a torchrun case meets at ``rendezvous`` when the session gives one (and must,
    when it spans machines: RendezvousError). ``profile`` and ``repeat`` name the case's
    run in its rendezvous id."""
    if case.nproc == 1 and case.nnodes == 1:
        return ProcessLauncher()
    if rendezvous is None:
        return TorchrunLauncher(case.nproc, case.nnodes)
    rdzv_id = rendezvous.id_for(case_key(case, profile, repeat))
    return TorchrunLauncher(case.nproc, case.nnodes, rendezvous, rdzv_id)
