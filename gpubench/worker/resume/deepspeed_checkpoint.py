"""The DeepSpeed engine's checkpoint: DeepSpeed's own ``save_checkpoint`` /
``load_checkpoint`` (model, ZeRO's optimizer partitions, the learning-rate schedule it
holds, its step counters), collective on every rank. The data position and RNG states go in
gpubench's side file (:mod:`gpubench.worker.resume.save`), read with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpubench.worker.resume.state import TrainingState, inner_optimizer

# ``step``: the engine's DeepSpeedTrainStep (typed loosely: the engines import this package)
FORMAT = "deepspeed"
TAG = "gpubench"  # the checkpoint's tag: one checkpoint per directory


def training_state(step: Any) -> TrainingState:
    engine = step.engine

    def loss_scale() -> float | None:
        scale: Any = getattr(engine.optimizer, "cur_scale", None)  # fp16's loss scaler
        return None if scale is None else float(scale)

    def counters() -> dict[str, int]:
        return {
            "global_steps": int(engine.global_steps),
            "global_samples": int(engine.global_samples),
        }

    return TrainingState(
        module=engine.module,
        optimizer=inner_optimizer(engine.optimizer),
        scheduler=engine.lr_scheduler,
        stream=step.stream,
        device=step.device,
        loss_scale=loss_scale,
        counters=counters,
    )


def save(step: Any, directory: Path, rank: int) -> None:
    step.engine.save_checkpoint(str(directory), tag=TAG)


def load(step: Any, directory: Path, fault: str | None) -> None:
    """DeepSpeed's load, less the part a planted ``fault`` names (its own switches)."""
    path, _ = step.engine.load_checkpoint(
        str(directory),
        tag=TAG,
        load_optimizer_states=fault != "optimizer",
        load_lr_scheduler_states=fault != "lr",
    )
    if path is None:
        raise FileNotFoundError(f"DeepSpeed found no checkpoint {TAG!r} in {directory}")
