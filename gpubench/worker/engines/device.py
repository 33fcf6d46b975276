"""The device a case trains on: chosen from the profile, made ready, emptied after an OOM."""

from __future__ import annotations

import contextlib
import gc
from typing import TYPE_CHECKING

from gpubench.contracts.case import Case
from gpubench.contracts.profiles import HardwareProfile

if TYPE_CHECKING:
    import torch


def require_cuda(profile: HardwareProfile) -> None:
    """Raise RuntimeError when a CUDA profile meets a torch that sees no CUDA device."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(
            f"profile {profile.name!r} needs CUDA, but torch {torch.__version__} "
            "sees no CUDA device"
        )


def device_for(profile: HardwareProfile, local_rank: int = 0) -> torch.device:
    """``cuda:<local_rank>`` for a CUDA profile, else ``cpu``."""
    import torch

    if profile.kind != "cuda":
        return torch.device("cpu")
    require_cuda(profile)
    return torch.device("cuda", local_rank)


def prepare_device(case: Case, profile: HardwareProfile, local_rank: int = 0) -> torch.device:
    """The case's device, made ready: fp16 refused off CUDA, torch seeded, TF32 as flagged."""
    import torch

    device = device_for(profile, local_rank)
    if case.flags.precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision='fp16' needs a CUDA profile; profile {profile.name!r} is "
            f"{profile.kind!r} (valid on cpu: fp32, bf16, bf16-pure)"
        )
    torch.manual_seed(case.seed)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = case.flags.tf32
        torch.backends.cudnn.allow_tf32 = case.flags.tf32
    return device


def release_memory(device: torch.device) -> None:
    """After an OOM: collect what the dropped frames held and return cached device memory."""
    import torch

    gc.collect()
    if device.type == "cuda":
        with contextlib.suppress(Exception):
            torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
