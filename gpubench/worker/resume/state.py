"""What decides the steps after a checkpoint, read the same way before the save and after the
load, and each difference between the two said in a sentence with its figures.

:func:`snapshot` reads a run's :class:`TrainingState`: the model's weights (a float64 sum per
tensor), the optimizer's AdamW moments (which parameters have them, and their sums), the
learning-rate schedule (its step and the rate it gives next), the data position
(``stream.state_dict()``), the RNG states (torch CPU and CUDA, Python's ``random``), the
fp16 loss scale and the engine's own step counters. The saving run stores its snapshot
beside the checkpoint; the resumed run takes one after loading, and :func:`differences`
names every part that is not what the checkpoint held. numpy's global generator is not
read: gpubench's training draws from none (the data streams hold their own generators).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

MOMENTS = ("exp_avg", "exp_avg_sq")  # AdamW's first and second moments


@dataclass
class TrainingState:
    """The live objects of one run that a checkpoint must restore."""

    module: torch.nn.Module
    optimizer: torch.optim.Optimizer  # the one that holds the moments (DeepSpeed's inner one)
    scheduler: Any  # torch.optim.lr_scheduler.LambdaLR
    stream: Any  # the data stream: state_dict() / load_state_dict()
    device: torch.device
    scaler: Any = None  # torch.amp.GradScaler (fp16), else None
    loss_scale: Callable[[], float | None] = lambda: None
    counters: Callable[[], dict[str, int]] = field(default=lambda: {})


def inner_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer under DeepSpeed's wrappers (ZeRO, bf16, fp16), which holds the
    moments; ``optimizer`` itself when it is one."""
    while not isinstance(optimizer, torch.optim.Optimizer) and hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"no torch optimizer under {type(optimizer).__name__}")
    return optimizer


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every generator the training may draw from: torch's CPU one, CUDA's, Python's."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _moment_sums(optimizer: torch.optim.Optimizer) -> tuple[int, int, torch.Tensor]:
    """(parameters, parameters with AdamW moments, each parameter's sum of |moments|)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    sums, with_state = [], 0
    for param in params:
        state = optimizer.state.get(param, {})
        moments = [state[m] for m in MOMENTS if m in state]
        with_state += bool(moments)
        sums.append(sum(float(m.detach().double().abs().sum()) for m in moments))
    return len(params), with_state, torch.tensor(sums, dtype=torch.float64)


def snapshot(state: TrainingState) -> dict[str, Any]:
    """The parts of ``state`` that decide the next steps, as tensors and plain numbers (a
    ``torch.load(weights_only=True)`` reads them back)."""
    weights = [t for t in state.module.state_dict().values() if t.is_floating_point()]
    n_params, with_state, moments = _moment_sums(state.optimizer)
    scale = state.scaler.get_scale() if state.scaler is not None else state.loss_scale()
    return {
        "model": torch.tensor([float(t.detach().double().sum()) for t in weights]),
        "optimizer_params": n_params,
        "optimizer_with_state": with_state,
        "optimizer_moments": moments,
        "lr_step": int(state.scheduler.last_epoch),
        "lr": float(state.optimizer.param_groups[0]["lr"]),
        "data": {k: v.clone() for k, v in state.stream.state_dict().items()},
        "rng": rng_state(state.device),
        "loss_scale": None if scale is None else float(scale),
        "counters": dict(state.counters()),
    }


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape != b.shape or not torch.equal(a.cpu(), b.cpu())
    return bool(a != b)


def differences(saved: dict[str, Any], loaded: dict[str, Any], save_step: int) -> list[str]:
    """Each part of ``loaded`` (read after the load) that is not what ``saved`` (read at the
    save, after step ``save_step``) held, in a sentence with figures; [] when all agree."""
    found = []
    if saved["model"].shape != loaded["model"].shape:
        found.append(
            f"model weights differ: {loaded['model'].numel()} floating-point tensors loaded, "
            f"the checkpoint has {saved['model'].numel()}"
        )
    elif off := int((saved["model"] != loaded["model"]).sum()):
        found.append(
            f"model weights not restored: {off} of {saved['model'].numel()} tensors differ "
            "from the checkpoint's"
        )
    found += _optimizer_differences(saved, loaded)
    found += _lr_differences(saved, loaded, save_step)
    if any(_differs(v, loaded["data"].get(k)) for k, v in saved["data"].items()):
        found.append(
            f"data position differs: the next batch is not the one the run drew after step "
            f"{save_step} (the stream's {', '.join(sorted(saved['data']))} is not the "
            "checkpoint's)"
        )
    rng = [name for name, v in saved["rng"].items() if _differs(v, loaded["rng"].get(name))]
    if rng:
        found.append(f"RNG state differs: {', '.join(rng)} generator not the checkpoint's")
    if saved["loss_scale"] != loaded["loss_scale"]:
        found.append(
            f"loss scale {loaded['loss_scale']} after loading, the checkpoint's "
            f"{saved['loss_scale']}"
        )
    for name, value in saved["counters"].items():
        if loaded["counters"].get(name) != value:
            found.append(
                f"step counter {name} is {loaded['counters'].get(name)}, the checkpoint's {value}"
            )
    return found


def _optimizer_differences(saved: dict[str, Any], loaded: dict[str, Any]) -> list[str]:
    n, with_state = loaded["optimizer_params"], loaded["optimizer_with_state"]
    if with_state != saved["optimizer_with_state"] or n != saved["optimizer_params"]:
        return [
            f"optimizer state not restored: {with_state} of {n} parameters have AdamW "
            f"moments (the checkpoint has {saved['optimizer_with_state']} of "
            f"{saved['optimizer_params']})"
        ]
    if _differs(saved["optimizer_moments"], loaded["optimizer_moments"]):
        off = int((saved["optimizer_moments"] != loaded["optimizer_moments"]).sum())
        return [
            f"optimizer state differs: the AdamW moments of {off} of {n} parameters are not "
            "the checkpoint's"
        ]
    return []


def _lr_differences(saved: dict[str, Any], loaded: dict[str, Any], save_step: int) -> list[str]:
    found = []
    if loaded["lr_step"] != saved["lr_step"]:
        found.append(
            f"learning-rate schedule not restored: it is at step {loaded['lr_step']}, the "
            f"checkpoint's at step {saved['lr_step']}"
        )
    if loaded["lr"] != saved["lr"]:
        found.append(
            f"learning rate {loaded['lr']:.3e} at step {save_step + 1}, the run used "
            f"{saved['lr']:.3e}"
        )
    return found
