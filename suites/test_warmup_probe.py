"""Warm-up probe: steady-state throughput after warm-up, batch-size scaling,
precision and attention-kernel choices (the "warm-up probe report" seed).

    pytest suites/test_warmup_probe.py --gpu-profile rtx5070ti

The seed sampled 10–15 minutes per probe and read medians off charts by eye.
Here warm-up (compile, autotune, allocator growth) is detected from the
step-time series and excluded, and each probe reports median tokens/s with
p10/p90 and its coefficient of variation.
"""

from __future__ import annotations

import gpubench
from gpubench import HardwareProfile, Result

PROBE = dict(model="gpt2-small", seq_len=1024, steps=50, max_warmup_steps=100, requires_gpu=True)

BATCH_SCALING = gpubench.matrix(**PROBE, precision="bf16", batch_size=[4, 8, 16, 32])
KERNELS = gpubench.matrix(
    **PROBE, batch_size=8, precision=["bf16", "fp16"], attention=["sdpa", "math"]
)
COMPILED = gpubench.matrix(**PROBE, batch_size=8, precision="bf16", compile=True)


@BATCH_SCALING + KERNELS + COMPILED
def test_steady_state_throughput(gpubench_result: Result, gpubench_profile: HardwareProfile):
    result = gpubench_result
    gpubench.assert_healthy(result)
    # a batch that does not fit (oom) or fits only above the card (over_capacity) is a finding
    gpubench.xfail_unless_fits(result, gpubench_profile)
    if result.ran:
        m = result.metrics
        assert m.steady_state_detected, (
            f"{result.describe()}: no steady state within {result.case.max_warmup_steps} steps"
        )
        assert m.tokens_per_s is not None and m.tokens_per_s.cv < 0.10, result.describe()
