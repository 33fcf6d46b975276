"""The child side of the worker protocol: ``python -m gpubench.worker --job J --result R
--progress P``.

Reads ``job.json`` (``{"case", "profile", "nodeid", "run_id"}``), caps memory
to the profile's capacity, runs the case's engine and writes ``result.json``
atomically. Exit codes (docs/architecture.md): 0 when a Result was written
(``ok``, ``over_capacity``, ``oom``, ``diverged``), 1 after an unexpected
exception (a ``crashed`` Result with the traceback is still written when the
job could be read). Under torchrun every rank writes its Result (rank 0 to
``--result``, rank N beside it: :func:`~gpubench.runner.protocol.rank_result_path`),
and a rank whose case did not end ``ok`` exits ``EXIT_RANK_FAILED``: torchrun
then stops the other ranks at once instead of leaving them blocked in a
collective (NCCL) until the case's time limit, and the parent reports the
first rank's failure, not rank 0's "peer closed the connection"
(:func:`gpubench.runner.classify.merge_rank_results`).

Memory capacity on a ``cpu`` profile, and why ``RLIMIT_DATA``: since Linux
4.7 the data limit counts every private writable mapping (brk heap and
anonymous ``mmap``), which is where glibc's malloc, and therefore torch's
``DefaultCPUAllocator``, gets tensor memory. Over the cap ``mmap`` fails with
ENOMEM and torch raises ``RuntimeError("... DefaultCPUAllocator: can't
allocate memory ...")``, numpy and Python raise ``MemoryError``; the engine
reports either as ``oom``. Checked on torch 2.13 (CPU build, Linux 6.x) with
gpt-tiny under caps of 40 to 1024 MiB: the allocation failed in the forward
(linear, GELU, attention), in the backward, in the loss, or on a later step,
and every time the worker reported ``oom`` and exited 0, never a signal or an
abort. ``RLIMIT_AS`` would also count read-only library mappings and
``PROT_NONE`` reservations (VmSize ~770 MiB here against VmData ~300 MiB; a
CUDA build reserves far more), none of which is memory the training uses.
The data limit counts allocated rather than resident memory, so it is a
little conservative (an untouched allocation counts), and a thread's stack
counts, which is why the samplers start with small stacks
(:func:`gpubench.trackers.start_daemon`) and :func:`prime_runtime` starts
torch's own threads and lazy imports before the baseline is read. So does the
engine's ``prepare`` (the process group under torchrun, whose gloo set-up maps
tens of MiB and starts threads; DeepSpeed: its import, and the build of its
compiled ops, whose compiler processes would inherit the cap). A thread that
cannot start under the cap reads as an ``oom`` too (its stack is data). The soft limit is set
to that baseline plus the profile's ``memory_bytes``, the hard limit is kept,
and the soft limit is put back (in ``finally``) before the result is written,
so writing it never fails for want of memory.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpubench.case import Case
from gpubench.profiles import HardwareProfile
from gpubench.result import Environment, ErrorInfo, Result
from gpubench.runner.protocol import ProgressWriter, rank_result_path, write_json_atomic

EXIT_OK = 0  # a Result was written, whatever its status
EXIT_ERROR = 1  # an unexpected exception; a crashed Result was written if possible
EXIT_RANK_FAILED = 3  # torchrun, several ranks: this rank's Result is not ok; stop the rest


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gpubench.worker", description="Run one gpubench case (child side)."
    )
    parser.add_argument("--job", required=True, type=Path, help="job.json to read")
    parser.add_argument("--result", required=True, type=Path, help="result.json to write")
    parser.add_argument("--progress", type=Path, default=None, help="progress.jsonl to append")
    return parser.parse_args(argv)


def is_rank_zero() -> bool:
    """True outside torchrun and on its rank 0."""
    return os.environ.get("RANK", "0") == "0"


def rank_and_world() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) as torchrun set them; (0, 1) for a single process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# -- memory capacity -------------------------------------------------------------------------
def vm_data_bytes() -> int | None:
    """This process's data segment size (``VmData`` of /proc/self/status), or None."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


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
    _rlimit_saved: tuple[int, int] | None = None

    @classmethod
    def apply(cls, profile: HardwareProfile) -> CapacityLimit:
        if profile.kind == "cuda":
            return cls._apply_cuda(profile)
        return cls._apply_cpu(profile)

    @classmethod
    def _apply_cpu(cls, profile: HardwareProfile) -> CapacityLimit:
        import resource

        prime_runtime()
        base = vm_data_bytes()
        if base is None:
            raise RuntimeError("cannot read VmData from /proc/self/status to cap memory")
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        limit = base + int(profile.memory_bytes)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
        return cls(
            capacity_bytes=int(profile.memory_bytes), host_capped=True, _rlimit_saved=(soft, hard)
        )

    @classmethod
    def _apply_cuda(cls, profile: HardwareProfile) -> CapacityLimit:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(
                f"profile {profile.name!r} needs CUDA, but torch {torch.__version__} "
                "sees no CUDA device"
            )
        index = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(index)
        total = torch.cuda.get_device_properties(index).total_memory
        emulated = profile.memory_bytes < total
        if emulated:
            # the caching allocator refuses (OutOfMemoryError) past this fraction
            torch.cuda.set_per_process_memory_fraction(profile.memory_bytes / total, index)
        return cls(capacity_bytes=int(profile.memory_bytes), emulated=emulated)

    def release(self) -> None:
        """Lift the CPU cap again (the soft limit as it was), so the answer can be written."""
        if self._rlimit_saved is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_DATA, self._rlimit_saved)
            self._rlimit_saved = None


# -- the run ---------------------------------------------------------------------------------
def run_job(job: dict[str, Any], progress: ProgressWriter) -> tuple[Result, int]:
    """Run one job; returns its Result and the exit code. Never raises for a case's failure."""
    case = Case.from_dict(job["case"])
    profile = HardwareProfile.from_dict(job["profile"])
    started_at = now_iso()
    capacity: CapacityLimit | None = None
    exit_code = EXIT_OK
    try:
        import torch  # noqa: F401 - imported before the cap so it counts as baseline

        from gpubench.engines import get_engine

        engine = get_engine(case.engine)
        engine.prepare(case, profile)  # the framework's set-up (imports, op builds): uncapped
        capacity = CapacityLimit.apply(profile)
        try:
            result = engine.run(case, profile, progress)
        finally:
            capacity.release()
    except Exception as exc:  # anything the engine did not classify
        if capacity is not None:
            capacity.release()
        # an allocation failure outside the training loop (the engine's own set-up
        # under the cap) is still an OOM: a Result with exit 0; anything else crashed
        oom = _is_oom(exc, host_capped=capacity is not None and capacity.host_capped)
        result = Result(
            case=case,
            profile=profile.to_dict(),
            status="oom" if oom else "crashed",
            error=ErrorInfo(
                type=type(exc).__name__,
                message=str(exc).strip()[:4000],
                traceback="".join(traceback.format_exception(exc)),
            ),
        )
        exit_code = EXIT_OK if oom else EXIT_ERROR
    if capacity is not None:
        result.metrics.capacity_bytes = capacity.capacity_bytes
        result.metrics.capacity_emulated = capacity.emulated
    result.environment = _fingerprint(profile)
    result.nodeid = job.get("nodeid")
    result.run_id = job.get("run_id")
    result.worker_pid = os.getpid()
    result.started_at = started_at
    return result, exit_code


def _is_oom(exc: BaseException, host_capped: bool) -> bool:
    try:
        from gpubench.engines.torch_engine import is_oom
    except ImportError:
        return isinstance(exc, MemoryError)
    return is_oom(exc, host_capped)


def _fingerprint(profile: HardwareProfile) -> Environment:
    try:
        from gpubench.trackers.environment import fingerprint

        return fingerprint(cuda=profile.kind == "cuda", cpu_only=profile.kind != "cuda")
    except Exception:  # a fingerprint must never cost the answer
        traceback.print_exc()
        return Environment()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    progress = ProgressWriter(args.progress if is_rank_zero() else None)
    try:
        progress.emit("starting")
        job = json.loads(Path(args.job).read_text(encoding="utf-8"))
        result, exit_code = run_job(job, progress)
        rank, world = rank_and_world()
        write_json_atomic(rank_result_path(args.result, rank), result.to_dict())
        if result.error is not None and exit_code != EXIT_OK:
            print(result.error.traceback, file=sys.stderr, end="")
        if world > 1 and exit_code == EXIT_OK and not result.ran:
            if result.error is not None:
                print(f"rank {rank}: {result.status}: {result.error.message}", file=sys.stderr)
            return EXIT_RANK_FAILED
        return exit_code
    except Exception:  # the job itself is unreadable: no Result can be built
        traceback.print_exc()
        return EXIT_ERROR
    finally:
        progress.close()


if __name__ == "__main__":
    sys.exit(main())
