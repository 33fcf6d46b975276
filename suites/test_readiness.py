"""Readiness gate: will a ~500M model train on this card, and with which switches?

    pytest suites/test_readiness.py --gpu-profile rtx3060

The seed report ran a matrix of CPU-offload × gradient checkpointing for a
~500M model under DeepSpeed ZeRO-2 on a 12 GB card and marked each cell PASS,
PASS* (peak above the card, survived by spilling) or OOM. Each cell here is a
separate worker process, so a stale allocator from one cell cannot turn the
next into an OOM. ZeRO-2 with optimizer offload arrives with the DeepSpeed
engine; until then the gate covers the torch engine's memory switches
(precision × checkpointing × accumulation) for the same model and sequence.
"""

from __future__ import annotations

import gpubench
from gpubench import HardwareProfile, Result

READINESS = gpubench.matrix(
    model="gpt-500m",
    precision=["fp32", "bf16"],
    grad_ckpt=[False, True],
    grad_accum=[1, 4],
    batch_size=4,
    seq_len=1024,
    steps=20,
    requires_gpu=True,
)


@READINESS
def test_readiness_cell(gpubench_result: Result, gpubench_profile: HardwareProfile):
    result = gpubench_result
    # PASS (ok), PASS* (over_capacity) and OOM are all answers; anything else is a defect.
    assert result.status in ("ok", "over_capacity", "oom"), result.describe()
    if result.ran:
        assert result.metrics.loss_decreased, result.describe()
        assert result.metrics.nonfinite_steps == 0, result.describe()
