"""Warm-up probe: steady-state throughput after warm-up, batch-size scaling,
precision and attention-kernel choices (the "warm-up probe report" seed).

    pytest suites/test_warmup_probe.py --gpu-profile rtx5070ti

The seed sampled 10–15 minutes per probe and read medians off charts by eye.
Here warm-up (compile, autotune, allocator growth) is detected from the
step-time series and excluded, and each probe measures until its median
tokens/s is known to the session's precision (``--gpubench-precision``,
default ±1 % at 95 % confidence; steps="auto"), at most 3,000 steps or 10
minutes of measured steps: the seed's budget, spent only where the number
needs it. Each probe reports the median with its interval.
"""

from __future__ import annotations

import gpubench
from gpubench import HardwareProfile, Result

# at most 10 minutes of measured steps (the seed's 10-15 per probe, warm-up besides)
PROBE = dict(
    model="gpt2-small",
    seq_len=1024,
    steps="auto",
    max_steps=3000,
    max_seconds=600.0,
    max_warmup_steps=100,
    requires_gpu=True,
)

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
        achieved, target = 100 * (m.precision_achieved or 0), 100 * (m.precision_target or 0)
        assert m.precision_reached, (
            f"{result.describe()}: the median tok/s is known to ±{achieved:.1f} %, not the "
            f"±{target:g} % aimed at, after {m.measured_steps} steps (stopped at "
            f"{m.stop_reason}): the card's clocks or a neighbour's work kept it moving"
        )
