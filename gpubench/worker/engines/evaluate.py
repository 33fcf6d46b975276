"""The held-out loss after training: what the quality check compares across flags.

After the last measured step, outside every timed figure (the loop has already
stopped the step clock and recorded the wall time's end), a case with
``eval_batches > 0`` evaluates its trained model on ``stream.held_out(eval_batches)``:
batches the training never draws, the same on every rank and for every case of the
same data, seed and shape (:mod:`gpubench.worker.data`). The model is in eval mode
(dropout off) under ``torch.no_grad()``, and runs as it trained: through the
engine's wrapper (DDP, the DeepSpeed engine, the FSDP-sharded module: whatever
``BuiltModel.module`` now is) and under the step's own autocast dtype (the torch
engine's bf16/fp16; FSDP's mixed precision policy and DeepSpeed cast inside the
module, so their steps have none). The figure is the mean next-token
cross-entropy over every target token (:func:`~gpubench.worker.engines.recipe.lm_loss`,
in fp32), summed in fp64 and all-reduced over the ranks, so every rank reports
the same number.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from gpubench.contracts.result import Metrics
from gpubench.worker.engines.context import TrainingContext
from gpubench.worker.engines.recipe import lm_loss

if TYPE_CHECKING:
    import torch

    from gpubench.worker.data import DataStream
    from gpubench.worker.models.built import BuiltModel


@dataclass(frozen=True)
class HeldOutLoss:
    """The held-out evaluation of one run, agreed over its ranks."""

    loss: float  # mean next-token cross-entropy, nats per token
    tokens: int  # target tokens it averages over (one rank's: every rank saw the same)

    @property
    def perplexity(self) -> float:
        """exp(loss); inf where the loss is too large to exponentiate."""
        try:
            return math.exp(self.loss)
        except OverflowError:
            return math.inf


def with_held_out(metrics: Metrics, held_out: HeldOutLoss | None) -> Metrics:
    """``metrics`` with ``eval_loss``, ``eval_perplexity`` and ``eval_tokens``; unchanged
    where nothing was evaluated. A non-finite loss (a model that trained into NaN without
    the loop calling it diverged) leaves the figures None: Metrics holds finite numbers."""
    if held_out is None or not math.isfinite(held_out.loss):
        return metrics
    perplexity = held_out.perplexity
    return replace(
        metrics,
        eval_loss=held_out.loss,
        eval_perplexity=perplexity if math.isfinite(perplexity) else None,
        eval_tokens=held_out.tokens,
    )


def evaluate(
    ctx: TrainingContext, model: BuiltModel, stream: DataStream, train_step: Any
) -> HeldOutLoss | None:
    """The trained ``model``'s loss on ``ctx.case.eval_batches`` held-out batches of
    ``stream``, as ``train_step`` computes its forward; None when the case asks for none."""
    import torch

    n_batches = ctx.case.eval_batches
    if n_batches <= 0:
        return None
    module = model.module  # the engine's wrapper: DDP, DeepSpeed's engine, the FSDP root
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            total = torch.zeros((), dtype=torch.float64, device=ctx.device)
            tokens = 0
            for x, y in stream.held_out(n_batches):  # [B, T] each
                with _autocast(ctx.device, getattr(train_step, "autocast_dtype", None)):
                    logits = model.logits(x)  # [B, T, V]
                total += lm_loss(logits, y).double() * y.numel()
                tokens += y.numel()
                del logits
    finally:
        module.train(was_training)
    return HeldOutLoss(loss=_agreed_mean(ctx, total, tokens), tokens=tokens)


def _autocast(device: torch.device, dtype: Any) -> contextlib.AbstractContextManager[Any]:
    """The training step's autocast (None: the module casts, or fp32)."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _agreed_mean(ctx: TrainingContext, total: torch.Tensor, tokens: int) -> float:
    """Every rank's loss sum and token count summed over the ranks, then divided: the same
    figure on every rank (each evaluated the same batches, so it is each one's own mean up
    to the last bits of a sharded forward's reductions)."""
    import torch

    if not ctx.ranks.distributed:
        return float(total) / tokens
    import torch.distributed as dist

    both = torch.stack(
        [total, torch.tensor(float(tokens), dtype=torch.float64, device=total.device)]
    )
    dist.all_reduce(both, op=dist.ReduceOp.SUM)
    loss_sum, count = both.tolist()
    return float(loss_sum / count)
