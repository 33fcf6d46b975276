"""The DeepSpeed engine: ZeRO stages and CPU offload, stepping in every engine's loop.

The engine supplies DeepSpeed's set-up before the memory cap
(:mod:`gpubench.worker.engines.deepspeed_setup`) and one optimizer step
(:class:`DeepSpeedTrainStep`) on ``deepspeed.initialize`` with the case's
config (:mod:`gpubench.worker.engines.deepspeed_config`); the device, trackers,
model build and size check, loop and metrics are every engine's
(:class:`~gpubench.worker.engines.base.TrainingEngine`). One optimizer step is
``grad_accum`` micro-batches of ``engine(x)`` -> loss -> ``engine.backward(loss)``
-> ``engine.step()`` (DeepSpeed divides the loss by ``grad_accum`` and steps
the optimizer on the last micro-batch).

The step marks its phases on the run's clock (``ctx.phases``,
:mod:`gpubench.worker.measure.phases`): per micro-batch ``data`` (``next_batch``),
``forward`` (``engine(x)`` and the loss), ``backward`` (``engine.backward``: with ZeRO
the gradients' reduce or reduce-scatter at the accumulation boundary), ``optimizer``
(``engine.step()``: the optimizer step on the last micro-batch, with DeepSpeed's own
gradient clipping inside it, and DeepSpeed's bookkeeping on the others); ``rest`` (the
loss accumulation, reading the gradient norm). ``clip`` is only the step's own clip
(fp32 without ZeRO, below); where DeepSpeed clips, the clip is part of ``optimizer``.

The recorded gradient norm is the unclipped global norm DeepSpeed computed
for the step, ``engine.get_global_grad_norm()``: DeepSpeed copies it from its
optimizer wrapper, and every wrapper keeps one (ZeRO 1-3, the bf16 and fp16
optimizers; ``inf`` on an fp16 overflow step, which DeepSpeed skips), whether
or not it clips. fp32 without ZeRO has no wrapper
(:func:`~gpubench.worker.engines.deepspeed_config.engine_clips`): there DeepSpeed's
clipping is off and the step clips itself with ``clip_grad_norm_`` over the
module's parameters after the last backward (whose all-reduce has run) and
before ``engine.step()``, inside the step's time as the torch engine's clip is.

Not supported: models too big to build whole on one device (ZeRO-3 here
partitions a model built whole, not one built under ``deepspeed.zero.Init``),
NVMe offload, pipeline parallelism.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from gpubench.contracts.case import Case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.protocol import ProgressWriter
from gpubench.worker.engines.base import TrainingEngine
from gpubench.worker.engines.context import TrainingContext
from gpubench.worker.engines.deepspeed_config import deepspeed_config, engine_clips
from gpubench.worker.engines.deepspeed_setup import set_up_deepspeed, start_deepspeed_group
from gpubench.worker.engines.distributed import Ranks
from gpubench.worker.engines.loop import TrainStep
from gpubench.worker.engines.recipe import lm_loss, max_grad_norm
from gpubench.worker.engines.schedule import lr_scheduler

if TYPE_CHECKING:
    from gpubench.worker.data import DataStream
    from gpubench.worker.models.built import BuiltModel


class DeepSpeedEngine(TrainingEngine):
    """DeepSpeed training: ZeRO 0-3, optimizer and parameter offload, bf16/fp16."""

    name = "deepspeed"

    def set_up_framework(
        self, case: Case, profile: HardwareProfile, progress: ProgressWriter
    ) -> Ranks:
        self.cold_start += set_up_deepspeed(case, profile, progress)
        return start_deepspeed_group()

    def build_step(self, ctx: TrainingContext, model: BuiltModel, stream: DataStream) -> TrainStep:
        import deepspeed

        case = ctx.case

        engine, *_ = deepspeed.initialize(
            model=model.module,
            model_parameters=[p for p in model.module.parameters() if p.requires_grad],
            config=deepspeed_config(case, ctx.profile, model.n_params),
            # DeepSpeed steps the schedule with the optimizer and keeps it in its checkpoints
            lr_scheduler=lambda optimizer: lr_scheduler(case, optimizer),
        )
        if case.flags.compile:
            engine.compile()
        model.module = engine  # BuiltModel.logits calls engine(x): DeepSpeed's forward
        own_norm = engine_clips(case)
        if not own_norm and not hasattr(engine.optimizer, "_global_grad_norm"):
            raise RuntimeError(
                f"DeepSpeed's optimizer {type(engine.optimizer).__name__} keeps no gradient "
                f"norm for case {case.id!r}; gpubench expects a norm-keeping wrapper for "
                f"precision={case.flags.precision!r}, zero_stage={case.flags.zero_stage}"
            )
        return DeepSpeedTrainStep(ctx, model, stream, engine, own_norm)


class DeepSpeedTrainStep:
    """One optimizer step: returns (mean micro-batch loss, unclipped gradient norm)."""

    def __init__(
        self,
        ctx: TrainingContext,
        model: BuiltModel,
        stream: DataStream,
        engine: Any,
        own_norm: bool,
    ) -> None:
        case = ctx.case
        self.device = ctx.device
        self.model = model
        self.stream = stream
        self.engine = engine  # deepspeed.DeepSpeedEngine
        self.own_norm = own_norm  # the step clips and takes the norm (engine_clips)
        self.accum = case.flags.grad_accum
        self.max_norm = max_grad_norm(case)
        self.mark = ctx.phases.mark  # "from here on the step is in <phase>"

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor | float]:
        loss_sum = torch.zeros((), device=self.device)
        grad_norm: torch.Tensor | float = math.nan
        for micro in range(self.accum):
            last = micro == self.accum - 1
            norm = self._micro_batch(loss_sum, clip=self.own_norm and last)
            if norm is not None:
                grad_norm = norm
        self.mark("rest")
        if not self.own_norm:
            reported = self.engine.get_global_grad_norm()
            grad_norm = math.nan if reported is None else reported
        return loss_sum / self.accum, grad_norm

    def _micro_batch(self, loss_sum: torch.Tensor, clip: bool) -> torch.Tensor | None:
        """Forward, loss (added to ``loss_sum``), backward and ``engine.step()`` (which steps
        the optimizer on the last micro-batch only); with ``clip``, the step clips before
        ``engine.step()`` and returns the unclipped gradient norm."""
        self.mark("data")
        x, y = self.stream.next_batch()  # [B, T] each
        self.mark("forward")
        logits = self.model.logits(x)  # [B, T, V]
        loss = lm_loss(logits, y)
        self.mark("rest")
        loss_sum += loss.detach()
        self.mark("backward")
        self.engine.backward(loss)  # DeepSpeed scales by 1 / grad_accum
        del logits, loss
        grad_norm = None
        if clip:
            self.mark("clip")
            grad_norm = torch.nn.utils.clip_grad_norm_(
                self.engine.module.parameters(), self.max_norm
            )
        self.mark("optimizer")
        self.engine.step()
        return grad_norm

    def lr(self) -> float:
        """The learning rate the next step uses (the schedule's, Series.lr)."""
        return float(self.engine.get_lr()[0])

    def loss_scale(self) -> float | None:
        """fp16: the dynamic loss scale after the step (Series.loss_scale), the ``cur_scale``
        of DeepSpeed's fp16 optimizer or ZeRO's loss scaler; None for bf16 and fp32."""
        if not self.engine.fp16_enabled():
            return None
        optimizer = self.engine.optimizer
        config = getattr(optimizer, "loss_scale_config", None)  # FP16_Optimizer (no ZeRO)
        scale = config.cur_scale if config is not None else getattr(optimizer, "cur_scale", None)
        return None if scale is None else float(scale)

    def skipped_steps(self) -> int:
        """Optimizer steps DeepSpeed skipped so far (an fp16 overflow; bf16's overflow check)."""
        return int(self.engine.skipped_steps)
