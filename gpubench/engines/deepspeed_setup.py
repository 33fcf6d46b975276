"""DeepSpeed's own set-up in the worker, before the memory cap: environment, import, ops.

What is DeepSpeed's rather than the case's, done by the DeepSpeed engine's
``start`` before the worker caps memory:

- the environment (:func:`deepspeed_environment`): ``DS_ACCELERATOR`` from the
  profile (``cpu`` or ``cuda``; a cpu profile on a machine with a GPU must not
  pick the GPU), a rendezvous for a world of one when torchrun set none
  (DeepSpeed's ``init_distributed`` wants ``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` even for one process;
  with one missing it goes looking for MPI), and ``TORCH_EXTENSIONS_DIR`` when
  unset, so that the compiled ops are cached and only the first case pays
  their build (tens of seconds): ``$XDG_CACHE_HOME/gpubench/torch_extensions/
  <python>-<torch>`` (``~/.cache/...`` without XDG_CACHE_HOME), one folder per
  Python ABI and torch build, as torch's own default keeps one per Python and
  CUDA version;
- the ``deepspeed`` import;
- the compiled ops the case loads (:func:`ops_for`), built on first use: the
  compiler runs in child processes, which would inherit the cap;
- the process group (:func:`start_deepspeed_group`).
"""

from __future__ import annotations

import importlib.metadata
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

from gpubench.case import Case
from gpubench.engines.distributed import Ranks
from gpubench.profiles import HardwareProfile

SHM_COMM_OP = "ShareMemCommBuilder"  # the CPU accelerator's shared-memory collectives
CPU_ADAM_OP = "CPUAdamBuilder"  # DeepSpeedCPUAdam, the optimizer of optimizer offload


def accelerator_name(profile: HardwareProfile) -> str:
    """The ``DS_ACCELERATOR`` a profile runs on: ``cpu`` (gloo) or ``cuda`` (NCCL)."""
    return "cuda" if profile.kind == "cuda" else "cpu"


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


def deepspeed_environment(profile: HardwareProfile, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to set in ``environ`` before DeepSpeed is imported (the module doc).

    ``DS_ACCELERATOR`` is the profile's; ``TORCH_EXTENSIONS_DIR`` the user's when set.
    A world of one (the single-process launcher pins ``WORLD_SIZE=1``) gets a fresh
    rendezvous on a free local port, whatever ``MASTER_ADDR``/``MASTER_PORT`` it
    inherited: concurrent cases (pytest-xdist) must not share a port, and a world of one
    has no peer to meet elsewhere. Under torchrun its rendezvous stands.
    """
    wanted = {"DS_ACCELERATOR": accelerator_name(profile)}
    if "TORCH_EXTENSIONS_DIR" not in environ:
        wanted["TORCH_EXTENSIONS_DIR"] = str(default_torch_extensions_dir())
    if not Ranks.from_env(environ).distributed:
        wanted |= single_process_rendezvous()
    return wanted


def ops_for(case: Case, accelerator: str) -> list[str]:
    """The compiled ops (DeepSpeed op builder names) a case loads, so they are built early."""
    ops = [SHM_COMM_OP] if accelerator == "cpu" else []  # loaded by init_distributed
    if case.flags.offload_optimizer:
        ops.append(CPU_ADAM_OP)
    return ops


def load_ops(names: list[str]) -> None:
    """Build (once, into ``TORCH_EXTENSIONS_DIR``) and load each op DeepSpeed can build here.

    DeepSpeed keeps a loaded op for the process, so its later ``load()`` of the
    same op (in ``init_distributed`` or ``DeepSpeedCPUAdam``) costs nothing.
    """
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    # the same test DeepSpeed applies before it loads an op; reading it probes every op
    # builder once (compiler checks in subprocesses), which is best done before the cap too
    compatible = deepspeed.ops.__compatible_ops__
    for name in names:
        builder = get_accelerator().create_op_builder(name)
        if builder is not None and compatible.get(builder.NAME, False):
            builder.load()


def set_up_deepspeed(case: Case, profile: HardwareProfile) -> None:
    """The environment, the import and the case's compiled ops (the module doc)."""
    os.environ.update(deepspeed_environment(profile, os.environ))
    import deepspeed  # noqa: F401 - imported here so it counts as the runtime's
    from deepspeed.accelerator import get_accelerator

    chosen = get_accelerator().device_name()
    if chosen != accelerator_name(profile):
        raise RuntimeError(
            f"DeepSpeed runs on accelerator {chosen!r}, but profile {profile.name!r} needs "
            f"{accelerator_name(profile)!r} (deepspeed was imported before "
            "DS_ACCELERATOR could be set)"
        )
    load_ops(ops_for(case, accelerator_name(profile)))


def start_deepspeed_group() -> Ranks:
    """DeepSpeed's process group as :class:`Ranks`: ``deepspeed.init_distributed`` starts it
    on the accelerator's backend (gloo on CPU, NCCL on CUDA) from the rendezvous in the
    environment, or adopts one already started; the engine's run closes it."""
    import deepspeed
    import torch.distributed as dist

    ranks = Ranks.from_env()
    started_here = not dist.is_initialized()
    deepspeed.init_distributed()
    ranks.owns_group = started_here
    return ranks
