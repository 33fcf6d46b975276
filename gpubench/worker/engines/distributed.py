"""This process's place among torchrun's workers, and the collectives the loop needs.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :meth:`Ranks.from_env`
is the one place gpubench reads them (1 of 1 without torchrun). The process
group is started before the worker caps memory (:func:`start_process_group`,
from an engine's ``prepare``): gloo's set-up maps tens of MiB and starts
threads, which are the runtime's, not the case's. Decisions that end a phase
(steady state, divergence) are agreed across ranks with one small all-reduce
per step (:meth:`Ranks.any`), so no rank is left waiting in a collective.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpubench.contracts.profiles import HardwareProfile
from gpubench.worker.engines.device import device_for

if TYPE_CHECKING:
    import torch


@dataclass
class Ranks:
    """This process's place among torchrun's workers (1 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this process started the process group (and closes it)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Ranks:
        """The ranks torchrun set in ``environ`` (default: this process's environment)."""
        env = os.environ if environ is None else environ
        return cls(
            rank=int(env.get("RANK", "0")),
            world_size=int(env.get("WORLD_SIZE", "1")),
            local_rank=int(env.get("LOCAL_RANK", "0")),
        )

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def init(self, device: torch.device) -> None:
        """Start the process group when several ranks run (NCCL on CUDA, gloo otherwise)."""
        import torch.distributed as dist

        if self.distributed and not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                import torch

                torch.cuda.set_device(device)  # NCCL's communicator binds to this device
            dist.init_process_group(
                backend=backend, device_id=device if backend == "nccl" else None
            )
            self.owns_group = True

    def any(self, flags: list[bool], device: torch.device) -> list[bool]:
        """Element-wise OR of ``flags`` over all ranks (identity with one rank)."""
        if not self.distributed:
            return flags
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([float(f) for f in flags], device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return [bool(v) for v in tensor.tolist()]

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            with contextlib.suppress(Exception):
                dist.destroy_process_group()
            self.owns_group = False


def start_process_group(profile: HardwareProfile) -> Ranks:
    """This process's Ranks, with the process group started when torchrun runs the case."""
    ranks = Ranks.from_env()
    ranks.init(device_for(profile, ranks.local_rank))
    return ranks
