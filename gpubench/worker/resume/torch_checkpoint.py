"""The torch engine's checkpoint: one ``torch.save`` of the state dicts (model, optimizer,
learning-rate schedule, GradScaler), written by rank 0 (DDP's ranks hold the same
weights), read back by every rank with ``torch.load(weights_only=True)``: tensors and plain
values only, no code runs on loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gpubench.worker.resume.state import TrainingState

# ``step``: the engine's TorchTrainStep (typed loosely: the engines import this package)
FORMAT = "torch.save"
TRAIN_FILE = "train.pt"


def training_state(step: Any) -> TrainingState:
    return TrainingState(
        module=step.model.module,
        optimizer=step.optimizer,
        scheduler=step.scheduler,
        stream=step.stream,
        device=step.device,
        scaler=step.scaler,
    )


def save(step: Any, directory: Path, rank: int) -> None:
    if rank != 0:
        return
    state = {
        "model": step.model.module.state_dict(),
        "optimizer": step.optimizer.state_dict(),
        "scheduler": step.scheduler.state_dict(),
        "scaler": step.scaler.state_dict() if step.scaler is not None else None,
    }
    torch.save(state, directory / TRAIN_FILE)


def load(step: Any, directory: Path, fault: str | None) -> None:
    """Restore every part from the checkpoint, less the one a planted ``fault`` names."""
    state = torch.load(directory / TRAIN_FILE, map_location=step.device, weights_only=True)
    step.model.module.load_state_dict(state["model"])
    if fault != "optimizer":
        step.optimizer.load_state_dict(state["optimizer"])
    if fault != "lr":
        step.scheduler.load_state_dict(state["scheduler"])
    if step.scaler is not None and state["scaler"] is not None:
        step.scaler.load_state_dict(state["scaler"])
