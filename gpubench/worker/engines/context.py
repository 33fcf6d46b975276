"""What one run trains and where: the case, its profile, the device and this rank."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpubench.contracts.case import Case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.worker.engines.distributed import Ranks

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TrainingContext:
    """Handed to every part of a run: the model build, the engine's step, the loop, the
    metrics."""

    case: Case
    profile: HardwareProfile
    device: torch.device
    ranks: Ranks

    @property
    def tokens_per_step(self) -> int:
        """Tokens one optimizer step consumes on all ranks together."""
        return self.case.tokens_per_step * self.ranks.world_size

    @property
    def samples_per_step(self) -> int:
        """Sequences one optimizer step consumes on all ranks together."""
        return self.case.batch_size * self.case.flags.grad_accum * self.ranks.world_size
