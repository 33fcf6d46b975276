"""Model ladder × memory optimisations (the "GPT-2 ladder validation plan" seed).

    pytest suites/test_model_ladder.py --gpu-profile rtx5080

GPT-2 small → medium → ~500M → ~1B under fp32/bf16 × activation checkpointing ×
gradient accumulation, on the card the profile describes (a smaller profile
than the physical GPU is emulated by capping the caching allocator). Each cell
ends ok (fits), oom or over_capacity: the ladder's job is to find where a size
stops fitting, so an OOM is a finding, not a failure; a crash, a hang or a
diverged loss is. A fitting cell must also leave the safety margin the plan
asks for (2 GiB below the card's capacity) — otherwise it "fits" only on paper.
"""

from __future__ import annotations

import gpubench
from gpubench import HardwareProfile, Result

SAFETY_MARGIN_BYTES = 2 * 2**30

LADDER = gpubench.matrix(
    model=["gpt2-small", "gpt2-medium", "gpt-500m", "gpt-1b"],
    precision=["fp32", "bf16"],
    grad_ckpt=[False, True],
    batch_size=8,
    seq_len=512,
    steps=30,
    requires_gpu=True,
) + gpubench.matrix(  # the same global batch through accumulation: 2 × 4 instead of 8
    model=["gpt2-medium", "gpt-1b"],
    precision="bf16",
    grad_ckpt=[False, True],
    grad_accum=4,
    batch_size=2,
    seq_len=512,
    steps=30,
    requires_gpu=True,
)


@LADDER
def test_ladder(gpubench_result: Result, gpubench_profile: HardwareProfile):
    result = gpubench_result
    assert result.status in ("ok", "oom", "over_capacity"), result.describe()
    if result.status == "ok":
        # --gpubench-estimate-only: the estimate's peak answers the margin question
        if result.predicted:
            assert result.estimate is not None
            peak = result.estimate.peak_bytes
        else:
            assert result.metrics.loss_decreased, result.describe()
            peak = result.peak_memory_bytes or 0
        headroom = gpubench_profile.memory_bytes - peak
        assert headroom >= SAFETY_MARGIN_BYTES, (
            f"{result.describe()}: only {headroom / 2**30:.2f} GiB left of "
            f"{gpubench_profile.memory_bytes / 2**30:.1f} GiB; the plan asks for 2 GiB"
        )
