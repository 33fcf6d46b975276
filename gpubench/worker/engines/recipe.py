"""What every engine trains the same way, so that engines differ only in how they step.

The optimizer's hyperparameters, the language-model loss, the autocast dtypes (and
bf16-pure's model dtype) and the model and token stream an engine's step is built on
(:func:`build_for_training`): a torch case and a DeepSpeed case of the same
flags train the same model on the same tokens with the same AdamW.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from gpubench.contracts.case import Case
from gpubench.worker.engines.context import TrainingContext

if TYPE_CHECKING:
    import torch

    from gpubench.worker.data import DataStream
    from gpubench.worker.models.built import BuiltModel

ADAMW_BETAS = (0.9, 0.95)  # nanoGPT / GPT-3 (Brown et al. 2020, appendix B)
ADAMW_WEIGHT_DECAY = 0.1
AUTOCAST_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}  # precision -> torch dtype name
# precision -> the dtype the whole model is cast to before its optimizer is made: weights,
# gradients and AdamW's states in that dtype, no autocast, no fp32 master copy
MODEL_DTYPES = {"bf16-pure": "bfloat16"}


def cast_model(case: Case, module: torch.nn.Module) -> None:
    """Cast ``module``'s floating-point parameters and buffers to the case's model dtype
    (:data:`MODEL_DTYPES`); nothing for the other precisions, whose weights stay fp32."""
    import torch

    dtype = MODEL_DTYPES.get(case.flags.precision)
    if dtype is not None:
        module.to(getattr(torch, dtype))


def max_grad_norm(case: Case) -> float:
    """The clipping threshold; ``inf`` for ``grad_clip=None`` (the norm is still taken)."""
    return math.inf if case.grad_clip is None else case.grad_clip


def adamw(case: Case, params: list[torch.nn.Parameter]) -> torch.optim.AdamW:
    """The recipe's AdamW over ``params`` (fused when the case asks)."""
    import torch

    return torch.optim.AdamW(
        params,
        lr=case.lr,
        betas=ADAMW_BETAS,
        weight_decay=ADAMW_WEIGHT_DECAY,
        fused=True if case.flags.fused_adamw else None,
    )


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of logits [B, T, V] against targets [B, T], in fp32."""
    import torch.nn.functional as F

    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))


def build_for_training(ctx: TrainingContext) -> tuple[BuiltModel, DataStream]:
    """The case's model on the device, checked against its declared size before any step is
    timed and set to training mode, and this rank's slice of the case's token stream."""
    from gpubench.worker.data import data_stream
    from gpubench.worker.models import build_model

    case, device, ranks = ctx.case, ctx.device, ctx.ranks
    model = build_model(case, device)
    model.check_declared_size()  # before an engine wraps or partitions the parameters
    cast_model(case, model.module)  # bf16-pure: before any engine makes its optimizer
    model.module.train()
    stream = data_stream(case, model.vocab_size, device, ranks.rank, ranks.world_size)
    return model, stream
