"""Plain PyTorch training: AdamW, autocast, GradScaler, torch.compile, DDP under torchrun.

The engine only builds the optimizer step (:class:`TorchTrainStep`); the
device, trackers, model build, loop and metrics are every engine's
(:class:`~gpubench.worker.engines.base.TrainingEngine`). One step is ``grad_accum``
micro-batches of forward (under autocast for bf16/fp16), loss and backward
(DDP all-reduces on the last one only), then the unclipped gradient norm with
``clip_grad_norm_`` and the optimizer step (through the GradScaler for fp16).
bf16-pure runs no autocast: the model was cast to bf16 at its build
(:func:`~gpubench.worker.engines.recipe.cast_model`), so its gradients and AdamW's states
are bf16 too; the loss is still taken in fp32 (``lm_loss``).
The step marks its phases on the run's clock (``ctx.phases``,
:mod:`gpubench.worker.measure.phases`): per micro-batch ``data`` (``next_batch``),
``forward`` (logits under autocast and the loss), ``backward`` (scaling the loss and its
backward, DDP's all-reduce on the last micro-batch included); then ``clip`` (the
GradScaler's unscale and ``clip_grad_norm_``, the unclipped norm with it), ``optimizer``
(the optimizer's step, through the GradScaler for fp16) and ``rest`` (the loss
accumulation, the GradScaler's update, the learning-rate schedule's step, ``zero_grad``).
Under torchrun (``WORLD_SIZE`` > 1) the model is wrapped in
DistributedDataParallel (NCCL on CUDA, gloo on CPU) before it is compiled.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, cast

import torch

from gpubench.worker.engines.base import TrainingEngine
from gpubench.worker.engines.context import TrainingContext
from gpubench.worker.engines.loop import TrainStep
from gpubench.worker.engines.recipe import (
    AUTOCAST_DTYPES,
    adamw,
    lm_loss,
    max_grad_norm,
)
from gpubench.worker.engines.schedule import lr_scheduler

if TYPE_CHECKING:
    from gpubench.worker.data import DataStream
    from gpubench.worker.models.built import BuiltModel


class TorchEngine(TrainingEngine):
    """Plain PyTorch training: AdamW, autocast, GradScaler, checkpointing, compile, DDP."""

    name = "torch"

    def build_step(self, ctx: TrainingContext, model: BuiltModel, stream: DataStream) -> TrainStep:
        """The case's optimizer step on ``model``, wrapped in DDP under torchrun and
        compiled when flagged. benchmarks/inprocess_step.py times it against a bare loop's."""
        case, device = ctx.case, ctx.device
        params = [p for p in model.module.parameters() if p.requires_grad]
        optimizer = adamw(case, params)
        ddp: Any = None
        if ctx.ranks.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ddp = DistributedDataParallel(
                model.module, device_ids=[device.index] if device.type == "cuda" else None
            )
            model.module = ddp
        if case.flags.compile:
            # compiling the DDP wrapper (not the other way round) lets dynamo split graphs
            # at DDP's buckets and keep communication overlapping computation
            model.module = cast("torch.nn.Module", torch.compile(model.module))
        return TorchTrainStep(ctx, model, stream, optimizer, params, ddp)


class TorchTrainStep:
    """One optimizer step: returns (mean micro-batch loss, unclipped gradient norm)."""

    def __init__(
        self,
        ctx: TrainingContext,
        model: BuiltModel,
        stream: DataStream,
        optimizer: torch.optim.Optimizer,
        params: list[torch.nn.Parameter],
        ddp: Any = None,
    ) -> None:
        case, device = ctx.case, ctx.device
        self.device = device
        self.model = model
        self.stream = stream
        self.optimizer = optimizer
        self.scheduler = lr_scheduler(case, optimizer)  # stepped after each optimizer step
        self.params = params
        self.ddp = ddp  # DistributedDataParallel wrapper under torchrun, else None
        self.mark = ctx.phases.mark  # "from here on the step is in <phase>"
        self.accum = case.flags.grad_accum
        self.max_norm = max_grad_norm(case)
        dtype = AUTOCAST_DTYPES.get(case.flags.precision)
        self.autocast_dtype = getattr(torch, dtype) if dtype else None
        fp16 = case.flags.precision == "fp16"
        self.scaler = torch.amp.GradScaler(device.type) if fp16 else None

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(self.accum):
            self._micro_batch(loss_sum, last=micro == self.accum - 1)
        grad_norm = self._optimizer_step()
        return loss_sum / self.accum, grad_norm

    def _micro_batch(self, loss_sum: torch.Tensor, last: bool) -> None:
        """Forward, loss (added to ``loss_sum``) and backward of one micro-batch."""
        self.mark("data")
        x, y = self.stream.next_batch()  # [B, T] each
        with self._no_sync(last):
            self.mark("forward")
            with self._autocast():
                logits = self.model.logits(x)  # [B, T, V]
            loss = lm_loss(logits, y)
            self.mark("rest")
            loss_sum += loss.detach()
            self.mark("backward")
            scaled = loss / self.accum
            if self.scaler is not None:
                scaled = self.scaler.scale(scaled)
            scaled.backward()

    def _optimizer_step(self) -> torch.Tensor:
        """Take the unclipped gradient norm, clip, step and zero the gradients."""
        self.mark("clip")
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # the norm and the clip see true gradients
        grad_norm = self._clip_grad_norm()
        self.mark("optimizer")
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skipped when the gradients are not finite
            self.mark("rest")
            self.scaler.update()
        else:
            self.optimizer.step()
            self.mark("rest")
        self.scheduler.step()  # also after a step the GradScaler skipped: the schedule counts
        # optimizer steps taken, as DeepSpeed's does
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def lr(self) -> float:
        """The learning rate the next step uses (the schedule's, Series.lr)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def loss_scale(self) -> float | None:
        """The GradScaler's scale after the step (Series.loss_scale); None without one."""
        return None if self.scaler is None else float(self.scaler.get_scale())

    def _clip_grad_norm(self) -> torch.Tensor:
        """Clip the gradients to ``max_norm``; the unclipped global norm (an FSDP step
        overrides it: its norm is a DTensor)."""
        return torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _no_sync(self, last_micro_batch: bool) -> contextlib.AbstractContextManager[Any]:
        """DDP all-reduces gradients once per optimizer step, on the last micro-batch."""
        if self.ddp is not None and not last_micro_batch:
            return self.ddp.no_sync()  # type: ignore[no-any-return]
        return contextlib.nullcontext()
