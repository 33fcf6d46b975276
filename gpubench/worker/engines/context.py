"""What one run trains and where: the case, its profile, the device, this rank, and the
clock its steps' phases are timed on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gpubench.contracts.case import Case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.worker.engines.distributed import Ranks
from gpubench.worker.measure.phases import PhaseClock, phase_clock

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TrainingContext:
    """Handed to every part of a run: the model build, the engine's step, the loop, the
    metrics.

    ``phases`` is the run's one phase clock: the engine's train step marks its phases on
    it, the loop opens and reads it around each step (a
    :class:`~gpubench.worker.measure.phases.NoPhases` that does nothing where
    ``case.time_phases`` is off).
    """

    case: Case
    profile: HardwareProfile
    device: torch.device
    ranks: Ranks
    phases: PhaseClock = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "phases", phase_clock(self.case.time_phases, self.device))

    @property
    def tokens_per_step(self) -> int:
        """Tokens one optimizer step consumes on all ranks together."""
        return self.case.tokens_per_step * self.ranks.world_size

    @property
    def samples_per_step(self) -> int:
        """Sequences one optimizer step consumes on all ranks together."""
        return self.case.batch_size * self.case.flags.grad_accum * self.ranks.world_size
