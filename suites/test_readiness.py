"""Readiness gate: will a ~500M model train on this card, and with which switches?

    pytest suites/test_readiness.py --gpu-profile rtx3060        # needs gpubench[deepspeed]

The seed report ran a matrix of CPU-offload × gradient checkpointing for a
~500M model under DeepSpeed ZeRO-2 on a 12 GB card and marked each cell PASS,
PASS* (peak above the card, survived only by spilling) or OOM, with peak GPU
memory, tokens/s, loss at start and end, CPU RAM and step-time variance. Here
each cell is its own worker process, so a stale allocator from one cell cannot
turn the next into an OOM, and the statuses map one to one: ``ok`` (PASS),
``over_capacity`` (PASS*), ``oom`` (OOM). Plain torch rows (no ZeRO, no
offload) are the baseline the switches are judged against. PASS* and OOM are
the gate's answers, shown as XFAIL with the reason; the go/no-go test says GO
when a ZeRO-2 cell passes.

The seed trusted a 20-hour run only after a checkpoint-resume check: the ZeRO-2 cells
save after half their measured steps, resume in a fresh worker and compare the next
steps' losses (``resume_check=True``, Result.resume); a cell whose resume check fails
fails its test with what differed, and is no GO.
"""

from __future__ import annotations

import pytest

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
    resume_check=True,  # the seed's checkpoint-resume loss continuity
    offload_optimizer=[False, True],
    grad_ckpt=[False, True],
)
# the baseline: the same model with plain torch, with and without checkpointing
TORCH_BASELINE = gpubench.matrix(**CELL, grad_ckpt=[False, True])


@ZERO2_OFFLOAD_BY_CHECKPOINTING + TORCH_BASELINE
def test_readiness_cell(gpubench_result: Result, gpubench_profile: HardwareProfile):
    """PASS (ok) passes; PASS* (over_capacity) and OOM are answers (XFAIL, the reason
    given); a crash, a hang, a divergence or a loss that does not fall is a defect."""
    result = gpubench_result
    gpubench.assert_healthy(result)
    if result.ran:
        assert result.metrics.nonfinite_steps == 0, result.describe()
        assert result.metrics.peak_rss_bytes, "host RAM of the offloaded state must be measured"
    gpubench.xfail_unless_fits(result, gpubench_profile)


@gpubench.go_no_go(ZERO2_OFFLOAD_BY_CHECKPOINTING)
def test_readiness_go_no_go(gpubench_results: list[Result], gpubench_profile: HardwareProfile):
    """GO when a ZeRO-2 cell fits the card (PASS) and resumes from its checkpoint with the
    same losses; NO-GO otherwise: the seed's gate."""
    passing = [
        r.case.id
        for r in gpubench_results
        if r.status == "ok" and not (r.resume and r.resume.verdict == "failed")
    ]
    if not passing:
        cells = ", ".join(
            f"{r.case.id}: {r.status}" + (f", resume {r.resume.verdict}" if r.resume else "")
            for r in gpubench_results
        )
        pytest.xfail(f"NO-GO on {gpubench_profile.name}: no ZeRO-2 cell fits ({cells})")
    print(f"GO on {gpubench_profile.name}: {', '.join(passing)}")
