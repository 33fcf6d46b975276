"""The ``deepspeed.initialize`` config that runs a Case as its flags say.

- ``precision``: ``bf16`` -> ``"bf16": {"enabled": true}``, ``fp16`` ->
  ``"fp16": {"enabled": true, "loss_scale": 0}`` (dynamic loss scaling). Unlike
  the torch engine's autocast (fp32 weights, bf16/fp16 matmuls), DeepSpeed
  keeps the model's weights in bf16/fp16 and fp32 master weights in the
  optimizer: the usual DeepSpeed set-up, and what its memory figures assume.
  ``bf16-pure`` -> ``"bf16": {"enabled": true, "bf16_master_weights_and_grads": true,
  "bf16_optimizer_states": true}``: DeepSpeed 0.19.8's ZeRO optimizer then keeps its
  weight partition, gradients and AdamW's states in bf16, no fp32 copy
  (``runtime/base_optimizer.py`` ``_configure_master_weights``). Its config refuses both
  keys without ZeRO 1-3, and with optimizer offload its ``DeepSpeedCPUAdam`` would have to
  be built with ``fp32_optimizer_states=False``, which the config's optimizer cannot ask
  for: the Case refuses both at collection (``gpubench.contracts.case``).
- ``zero_stage`` -> ``zero_optimization.stage``; ``offload_optimizer`` /
  ``offload_params`` -> ``offload_optimizer`` / ``offload_param`` with
  ``device: cpu`` (``pin_memory`` on CUDA only: pinned host memory serves
  copies to a GPU).
- The optimizer is AdamW with the recipe's lr, betas and weight decay
  (:mod:`gpubench.worker.engines.recipe`). Without optimizer offload it is
  ``torch.optim.AdamW`` (DeepSpeed's ``torch_adam``; ``fused_adamw`` passes
  ``fused=True``), so a DeepSpeed case and a torch case differ by ZeRO, not by
  the optimizer; DeepSpeed's own ``FusedAdam`` would need its op compiled
  (with nvcc on CUDA). With optimizer offload DeepSpeed uses its
  ``DeepSpeedCPUAdam``, a compiled op (``cpu_adam``); ``fused_adamw`` is
  refused with it (Flags).
- ``grad_clip`` -> ``gradient_clipping`` (``0.0``, DeepSpeed's "no clipping",
  for ``grad_clip=None``), except where the engine clips itself
  (:func:`engine_clips`), where it is ``0.0`` too.
- ZeRO's ``reduce_bucket_size`` and ``allgather_bucket_size`` are DeepSpeed's
  default (5e8 elements) or the model's parameter count, whichever is
  smaller: DeepSpeed allocates the whole reduce bucket up front (2 GB in fp32),
  and a bucket at least as big as all the gradients is only ever filled up to
  them, so the smaller bucket changes the memory, not the communication.
"""

from __future__ import annotations

from typing import Any

from gpubench.contracts.case import Case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.worker.engines.recipe import ADAMW_BETAS, ADAMW_WEIGHT_DECAY

STEPS_PER_PRINT = 2**31 - 1  # DeepSpeed prints a progress line every this many steps: never
ZERO_BUCKET_ELEMENTS = 500_000_000  # DeepSpeed's default bucket sizes (runtime/zero/config.py)


def engine_clips(case: Case) -> bool:
    """Whether the engine, not DeepSpeed, clips ``case``'s gradients and takes their norm.

    True for fp32 without ZeRO: DeepSpeed 0.19.8's ``_do_optimizer_sanity_check``
    then wraps no optimizer (the model and gradient-accumulation dtypes are both
    fp32), steps the bare torch AdamW, and clips in ``clip_fp32_gradients``
    without keeping the norm. Taking the norm beside that would cost two norm
    passes a step where the torch engine pays one.
    """
    return case.flags.precision == "fp32" and case.flags.zero_stage == 0


def deepspeed_config(
    case: Case, profile: HardwareProfile, n_params: int | None = None
) -> dict[str, Any]:
    """The config for ``case`` on ``profile``; ``n_params`` (the built model's) caps ZeRO's
    bucket sizes (see the module doc)."""
    flags = case.flags
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": case.batch_size,
        "gradient_accumulation_steps": flags.grad_accum,
        # 0.0: DeepSpeed does not clip (grad_clip=None, or the engine clips: engine_clips)
        "gradient_clipping": (
            0.0 if case.grad_clip is None or engine_clips(case) else float(case.grad_clip)
        ),
        "optimizer": {"type": "AdamW", "params": _adamw_params(case)},
        "zero_optimization": _zero_config(case, profile, n_params),
        "steps_per_print": STEPS_PER_PRINT,
        "wall_clock_breakdown": False,
    }
    if flags.precision == "bf16":
        config["bf16"] = {"enabled": True}
    elif flags.precision == "fp16":
        config["fp16"] = {"enabled": True, "loss_scale": 0}  # 0: dynamic loss scaling
    elif flags.precision == "bf16-pure":
        config["bf16"] = {
            "enabled": True,
            "bf16_master_weights_and_grads": True,
            "bf16_optimizer_states": True,
        }
    return config


def _zero_config(case: Case, profile: HardwareProfile, n_params: int | None) -> dict[str, Any]:
    flags = case.flags
    pin_memory = profile.kind == "cuda"
    zero: dict[str, Any] = {"stage": flags.zero_stage}
    if flags.zero_stage and n_params is not None:
        bucket = min(ZERO_BUCKET_ELEMENTS, max(1, n_params))
        zero["reduce_bucket_size"] = bucket
        zero["allgather_bucket_size"] = bucket
    if flags.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin_memory}
    if flags.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": pin_memory}
    return zero


def _adamw_params(case: Case) -> dict[str, Any]:
    adamw: dict[str, Any] = {
        "lr": case.lr,
        "betas": list(ADAMW_BETAS),
        "weight_decay": ADAMW_WEIGHT_DECAY,
    }
    if not case.flags.offload_optimizer:
        adamw["torch_adam"] = True  # torch.optim.AdamW, as the torch engine uses
        if case.flags.fused_adamw:
            adamw["fused"] = True
    return adamw
