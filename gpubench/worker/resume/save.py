"""The saving side: the case's own run writes its checkpoint after step k, between two steps.

:class:`CheckpointSaver` is the loop's ``after_step`` hook. ``case.resume_check=True``
saves after the warm-up (its length is known when it ends) plus half the measured steps
(``steps="auto"``: half of ``MIN_AUTO_STEPS``, so the save falls inside every run); a
number saves after that step, counted from the first (warm-up included). The save runs
outside the step timer; a run whose last step is k saves nothing (no step follows to
compare). Rank 0 writes ``saved.json`` (the step, the seconds, the format) last, so the
parent finds it only beside a whole checkpoint.
"""

from __future__ import annotations

import time
from types import ModuleType
from typing import Any

import torch

from gpubench.contracts.case import MIN_AUTO_STEPS, STEPS_AUTO, Case
from gpubench.contracts.protocol import write_json_atomic
from gpubench.worker.engines.context import TrainingContext
from gpubench.worker.engines.loop import StepLog
from gpubench.worker.resume import deepspeed_checkpoint, torch_checkpoint
from gpubench.worker.resume.job import ENGINES, SAVED_FILE, SIDE_FILE, ResumeJob
from gpubench.worker.resume.state import snapshot

CHECKPOINTS = dict(zip(ENGINES, (torch_checkpoint, deepspeed_checkpoint), strict=True))


def checkpoint_module(engine: str) -> ModuleType:
    """How ``engine`` saves and loads; ValueError for one the resume check does not cover."""
    if engine not in CHECKPOINTS:
        raise ValueError(
            f"the resume check covers engine {', '.join(CHECKPOINTS)}; not engine={engine!r}"
        )
    return CHECKPOINTS[engine]


def save_step(case: Case, log: StepLog, warming_up: bool) -> int | None:
    """The step to save after, or None while it is not known yet (an open warm-up)."""
    if not isinstance(case.resume_check, bool):
        return int(case.resume_check)
    if warming_up:
        return None
    measured = MIN_AUTO_STEPS if case.steps == STEPS_AUTO else int(case.steps)
    return log.warmup_steps + max(1, measured // 2)


class CheckpointSaver:
    """The loop's ``after_step`` hook: saves once, after the save step."""

    def __init__(self, ctx: TrainingContext, train_step: Any, resume: ResumeJob) -> None:
        self.ctx = ctx
        self.train_step = train_step
        self.directory = resume.directory
        self.checkpoint = checkpoint_module(ctx.case.engine)
        self.done = False

    def __call__(self, log: StepLog, warming_up: bool) -> None:
        if self.done or log.stop_reason:  # the last step: none follows to compare
            return
        step = save_step(self.ctx.case, log, warming_up)
        if step is None or log.steps != step:
            return
        self.done = True
        rank = self.ctx.ranks.rank
        started = time.perf_counter()
        # what the checkpoint holds, read now: the resumed run checks its parts against it
        side = snapshot(self.checkpoint.training_state(self.train_step))
        self.checkpoint.save(self.train_step, self.directory, rank)
        torch.save(side, self.directory / SIDE_FILE.format(rank=rank))
        save_s = time.perf_counter() - started
        if rank == 0:
            saved = {"save_step": step, "save_s": save_s, "format": self.checkpoint.FORMAT}
            write_json_atomic(self.directory / SAVED_FILE, saved)
