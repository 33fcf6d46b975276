"""The learning rate per optimizer step: linear warm-up, then constant, cosine or linear decay.

``lr_warmup_steps`` steps ramp the rate linearly from ``lr / lr_warmup_steps`` to ``lr``
(GPT-3's and nanoGPT's warm-up); after it the rate stays at ``lr`` (``constant``) or
decays to ``LR_MIN_RATIO x lr`` at ``lr_decay_steps`` along a half cosine (``cosine``,
Loshchilov & Hutter 2017, "SGDR", without restarts) or a straight line (``linear``), and
stays there. 10 % is the floor Chinchilla decays to (Hoffmann et al. 2022, section 3.1)
and nanoGPT's ``min_lr``. The schedule is a ``torch.optim.lr_scheduler.LambdaLR`` over a
plain callable object, so its ``state_dict`` (the step it is at, and this object's
settings) saves and loads like the optimizer's, ``weights_only`` included.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from gpubench.contracts.case import STEPS_AUTO, WARMUP_AUTO, Case

if TYPE_CHECKING:
    import torch

LR_MIN_RATIO = 0.1  # the decayed rate's floor, a fraction of lr


def decay_steps(case: Case) -> int:
    """The step the decay ends at: ``lr_decay_steps``, or the most steps the case can take
    (its warm-up, ``max_warmup_steps`` when automatic, plus its measured steps,
    ``max_steps`` for ``steps="auto"``)."""
    if case.lr_decay_steps is not None:
        return case.lr_decay_steps
    warmup = case.max_warmup_steps if case.warmup == WARMUP_AUTO else int(case.warmup)
    measured = case.max_steps if case.steps == STEPS_AUTO else int(case.steps)
    return max(case.lr_warmup_steps + 1, warmup + measured)


class LRSchedule:
    """The multiplier of ``lr`` after ``step`` optimizer steps (LambdaLR's ``lr_lambda``)."""

    def __init__(self, kind: str, warmup_steps: int, decay_steps: int) -> None:
        self.kind = kind
        self.warmup_steps = warmup_steps
        self.decay_steps = decay_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        span = max(1, self.decay_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        if self.kind == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:  # linear
            shape = 1.0 - progress
        return LR_MIN_RATIO + (1.0 - LR_MIN_RATIO) * shape

    @classmethod
    def of(cls, case: Case) -> LRSchedule:
        return cls(case.lr_schedule, case.lr_warmup_steps, decay_steps(case))


def lr_scheduler(case: Case, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """The case's schedule over ``optimizer``: stepped once per optimizer step, after it."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRSchedule.of(case))
