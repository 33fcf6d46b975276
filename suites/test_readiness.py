"""Readiness gate: will a ~500M model train on this card, and with which switches?

    pytest suites/test_readiness.py --gpu-profile rtx3060        # needs gpubench[deepspeed]

The seed report ran a matrix of CPU-offload × gradient checkpointing for a
~500M model under DeepSpeed ZeRO-2 on a 12 GB card and marked each cell PASS,
PASS* (peak above the card, survived only by spilling) or OOM, with peak GPU
memory, tokens/s, loss at start and end, CPU RAM and step-time variance. Here
each cell is its own worker process, so a stale allocator from one cell cannot
turn the next into an OOM, and the statuses map one to one: ``ok`` (PASS),
``over_capacity`` (PASS*), ``oom`` (OOM). Plain torch rows (no ZeRO, no
offload) are the baseline the switches are judged against.
"""

from __future__ import annotations

import gpubench
from gpubench import HardwareProfile, Result

CELL = dict(
    model="gpt-500m", precision="bf16", batch_size=4, seq_len=1024, steps=20, requires_gpu=True
)

# the seed's gate: ZeRO-2 × optimizer offload to CPU × activation checkpointing
ZERO2_OFFLOAD_BY_CHECKPOINTING = gpubench.matrix(
    **CELL,
    engine="deepspeed",
    zero_stage=2,
    offload_optimizer=[False, True],
    grad_ckpt=[False, True],
)
# the baseline: the same model with plain torch, with and without checkpointing
TORCH_BASELINE = gpubench.matrix(**CELL, grad_ckpt=[False, True])


@ZERO2_OFFLOAD_BY_CHECKPOINTING + TORCH_BASELINE
def test_readiness_cell(gpubench_result: Result, gpubench_profile: HardwareProfile):
    result = gpubench_result
    # PASS (ok), PASS* (over_capacity) and OOM are all answers; anything else is a defect.
    assert result.status in ("ok", "over_capacity", "oom"), result.describe()
    if result.ran:
        assert result.metrics.loss_decreased, result.describe()
        assert result.metrics.nonfinite_steps == 0, result.describe()
        assert result.metrics.peak_rss_bytes, "host RAM of the offloaded state must be measured"
