"""The resumed side: a fresh worker loads the checkpoint, checks each restored part, and trains
the steps that followed the save.

Each rank writes ``resumed-rank<r>.json``: its losses and learning rates of those steps,
the seconds the load took, and every part that is not what the checkpoint held
(:func:`gpubench.worker.resume.state.differences`), checked after the load and before the
first step draws a batch or a random number.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import torch

from gpubench.contracts.protocol import ProgressWriter, write_json_atomic
from gpubench.worker.engines.context import TrainingContext
from gpubench.worker.engines.loop import StepLog
from gpubench.worker.resume.job import RESUMED_FILE, SAVED_FILE, SIDE_FILE, ResumeJob, planted_fault
from gpubench.worker.resume.paths import trusted_files
from gpubench.worker.resume.save import checkpoint_module
from gpubench.worker.resume.state import differences, restore_rng, snapshot


def resumed_run(
    ctx: TrainingContext, progress: ProgressWriter, log: StepLog, train_step: Any, resume: ResumeJob
) -> str:
    """Load, check, and train ``resume.steps`` steps, each recorded in ``log``; ``ok``."""
    fault = planted_fault()
    checkpoint = checkpoint_module(ctx.case.engine)
    rank, directory = ctx.ranks.rank, resume.directory
    trusted_files(directory, resume.run_dir)  # refuses a link out before anything is read
    saved = json.loads((directory / SAVED_FILE).read_text(encoding="utf-8"))
    started = time.perf_counter()
    checkpoint.load(train_step, directory, fault)
    held = torch.load(directory / SIDE_FILE.format(rank=rank), weights_only=True)
    state = checkpoint.training_state(train_step)
    if fault != "data":
        state.stream.load_state_dict(held["data"])
    restore_rng(held["rng"], ctx.device)
    load_s = time.perf_counter() - started
    found = differences(held, snapshot(state), int(saved["save_step"]))
    log.timing = "perf_counter"
    for _ in range(resume.steps):
        log.lr.append(train_step.lr())
        started = time.perf_counter()
        loss, grad_norm = train_step()
        loss_f, norm_f = float(loss), float(grad_norm)
        log.add(time.perf_counter() - started, loss_f, norm_f, 0, warmup=False)
        progress.emit("measuring", log.steps, resume.steps)
        if not math.isfinite(loss_f):  # JSON holds finite numbers only: said, not written
            found.append(f"the resumed loss is not finite at step {log.steps} after the save")
            log.loss.pop()
            break
    answer = {"loss": log.loss, "lr": log.lr, "load_s": load_s, "differences": found}
    write_json_atomic(directory / RESUMED_FILE.format(rank=rank), answer)
    return "ok"
