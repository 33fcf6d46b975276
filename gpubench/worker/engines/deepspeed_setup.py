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
  their build (tens of seconds): :func:`default_torch_extensions_dir`, one
  folder per environment;
- the ``deepspeed`` import;
- the compiled ops the case loads (:func:`ops_for`), built on first use: the
  compiler runs in child processes, which would inherit the cap. An op not in
  the cache yet is announced on the progress line (``building-ops``) before
  its build starts, and an op built in this run (its library new or rewritten)
  makes the run cold (``Result.cold_start``);
- the process group (:func:`start_deepspeed_group`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

from gpubench.contracts.case import Case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.protocol import ProgressWriter
from gpubench.worker.engines.distributed import Ranks

LOCATION_HASH_CHARS = 8
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
    """gpubench's per-user cache of compiled torch extensions (DeepSpeed's ops), read
    without importing torch or DeepSpeed: ``$XDG_CACHE_HOME/gpubench/torch_extensions/
    <python>-torch<torch>-ds<deepspeed>-<hash>`` (``~/.cache/...`` without
    XDG_CACHE_HOME), one folder per Python ABI, torch build, DeepSpeed version and
    DeepSpeed install location (``<hash>``, a short hash of its folder).

    The location belongs in the key: torch rebuilds an op whenever its build
    command changes, and DeepSpeed's command names its sources and headers by
    their absolute paths, so two environments sharing one folder (two
    virtualenvs, a CI clone beside a working copy) rebuilt every op each time
    the other had run.
    """
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    python = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
    name = f"{python}-torch{_version('torch')}"
    deepspeed_dir = _package_dir("deepspeed")
    if deepspeed_dir is not None:
        digest = hashlib.sha256(str(deepspeed_dir).encode()).hexdigest()[:LOCATION_HASH_CHARS]
        name += f"-ds{_version('deepspeed')}-{digest}"
    return cache / "gpubench" / "torch_extensions" / name


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)  # torch: e.g. 2.13.0+cpu
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _package_dir(package: str) -> Path | None:
    """Where ``package`` would be imported from (resolved), without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]).resolve()


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


def load_ops(names: list[str], progress: ProgressWriter | None = None) -> list[str]:
    """Build (once, into ``TORCH_EXTENSIONS_DIR``) and load each op DeepSpeed can build here,
    first telling ``progress`` which of them are not in the cache (``building-ops``);
    returns the ops this call built (their library is new or was rewritten: a cached op
    torch rebuilt because its sources changed is found too).

    DeepSpeed keeps a loaded op for the process, so its later ``load()`` of the
    same op (in ``init_distributed`` or ``DeepSpeedCPUAdam``) costs nothing.
    """
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator
    from deepspeed.git_version_info import installed_ops

    # the same test DeepSpeed applies before it loads an op; reading it probes every op
    # builder once (compiler checks in subprocesses), which is best done before the cap too
    compatible = deepspeed.ops.__compatible_ops__
    builders = [get_accelerator().create_op_builder(name) for name in names]
    builders = [b for b in builders if b is not None and compatible.get(b.NAME, False)]
    # an op built into the install (DS_BUILD_OPS=1) is not built here
    jit = [b.name for b in builders if not installed_ops.get(b.name, False)]
    before = op_library_versions(jit)
    if progress is not None:
        announce_op_builds(jit, progress)
    for builder in builders:
        builder.load()
    after = op_library_versions(jit)
    return [name for name in jit if after[name] is not None and after[name] != before[name]]


def op_library_versions(
    op_names: list[str], extensions_dir: Path | None = None
) -> dict[str, tuple[int, int] | None]:
    """Each op's library in the cache as ``(mtime_ns, inode)``, None where there is none
    (:func:`ops_not_built` says where torch puts it): a build writes a new one."""
    if extensions_dir is None:
        extensions_dir = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or "")
    versions: dict[str, tuple[int, int] | None] = {}
    for name in op_names:
        try:
            stat = (extensions_dir / name / f"{name}.so").stat()
            versions[name] = (stat.st_mtime_ns, stat.st_ino)
        except OSError:
            versions[name] = None
    return versions


def announce_op_builds(
    op_names: list[str], progress: ProgressWriter, extensions_dir: Path | None = None
) -> list[str]:
    """Tell the progress line which of ``op_names`` are about to be built (``building-ops``);
    returns them."""
    to_build = ops_not_built(op_names, extensions_dir)
    if to_build:
        progress.emit("building-ops", detail=", ".join(to_build))
    return to_build


def ops_not_built(op_names: list[str], extensions_dir: Path | None = None) -> list[str]:
    """The ops among ``op_names`` (DeepSpeed's builder ``name``, torch's extension name)
    whose library is not in the cache: torch builds extension ``N`` into
    ``$TORCH_EXTENSIONS_DIR/N/N.so``. (One found there may still be rebuilt, if its
    sources changed since: that build goes unannounced.)"""
    if extensions_dir is None:
        extensions_dir = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or "")
    return [name for name in op_names if not (extensions_dir / name / f"{name}.so").is_file()]


def set_up_deepspeed(
    case: Case, profile: HardwareProfile, progress: ProgressWriter | None = None
) -> list[str]:
    """The environment, the import and the case's compiled ops (the module doc); returns
    what made this run cold (the ops it built, said with where), [] when nothing did."""
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
    built = load_ops(ops_for(case, accelerator_name(profile)), progress)
    if not built:
        return []
    where = os.environ.get("TORCH_EXTENSIONS_DIR") or "TORCH_EXTENSIONS_DIR"
    return [f"built DeepSpeed op(s) {', '.join(built)} into {where}"]


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
