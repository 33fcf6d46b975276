"""Model ladder × memory optimisations (the "GPT-2 ladder validation plan" seed).

    pytest suites/test_model_ladder.py --gpu-profile rtx5080

GPT-2 small → medium → ~500M → ~1B under fp32/bf16 × activation checkpointing ×
gradient accumulation, on the card the profile describes (a smaller profile
than the physical GPU is emulated by capping the caching allocator). Each cell
ends ok (fits), oom or over_capacity: the ladder's job is to find where a size
stops fitting, so an OOM is a finding (XFAIL with the reason), not a failure; a
crash, a hang or a diverged loss is. A fitting cell must also leave the safety
margin the plan asks for (2 GiB below the card's capacity), otherwise it "fits"
only on paper (a finding too). The go/no-go test answers the plan's question:
does every size have a configuration that fits with the margin?

The ladder ends with the cells a user tries next where no row above fits: the
training state moved to the host, each engine's way, for every size (bf16, with
and without checkpointing): DeepSpeed ZeRO-2 with the optimizer offloaded
(ZeRO-Offload), ZeRO-3 with the optimizer and the parameters offloaded, and
FSDP2 with its CPUOffloadPolicy. The DeepSpeed cells need gpubench[deepspeed]
(without it they skip, saying so); all need host RAM for what they offload.
Estimated for this suite (``--gpubench-estimate-only``, 2026-12-03), no plain
gpt-1b cell fits a 16 GB card (rtx5070ti, rtx5080: 21.26 GiB with bf16 and
checkpointing), and these do, with the 2 GiB margin:

    gpt-1b, bf16                     peak on the card   checkpointed   host RAM
    ZeRO-2 + optimizer offload             11.88 GiB       7.22 GiB    15.07 GiB
    ZeRO-3 + optimizer, param offload       9.21 GiB       4.54 GiB    16.96 GiB
    FSDP2 + CPUOffloadPolicy                9.73 GiB       5.07 GiB    15.07 GiB

so the ladder answers GO on a 16 GB card; ZeRO-2 offload without checkpointing is
the cell expected to be fastest (no recomputation, the parameters stay on the
card), which only a run can confirm. On the 12 GB rtx3060, where gpt-500m with
checkpointing leaves under the margin (11.56 GiB), its offload cells and gpt-1b's
fit but for ZeRO-2 without checkpointing (gpt-500m ZeRO-2 checkpointed: 6.08 GiB,
host 8.02 GiB). The go/no-go stays a question: each size's most
offloaded cell still holds its activations and the loss's [B, T, V] buffers
(gpt2-small 3.85 GiB ... gpt-1b 4.54 GiB), so on a 6 GiB card
(``--gpu-profile rtx3060:6GiB``) it is NO-GO for gpt2-medium and up.

Every cell is also checked for what it costs in loss, as the plan asks ("final perplexity
within 2 % of baseline", the baseline being vanilla fp32): after its steps each cell
evaluates 64 held-out sequences, and a cell whose held-out loss is more than 2 % above
that of the same size's fp32 cell without checkpointing (the accumulation cells: fp32
at batch 8 in one step, the same global batch; the offload cells: the plain torch
engine's fp32) fails, naming both figures. Where the reference does not fit (fp32 of the
larger sizes on a small card) the cell is not compared, and the report says so.
"""

from __future__ import annotations

import pytest

import gpubench
from gpubench import HardwareProfile, Result
from gpubench.contracts.units import GiB, format_bytes

SAFETY_MARGIN_BYTES = 2 * GiB
SIZES = ["gpt2-small", "gpt2-medium", "gpt-500m", "gpt-1b"]
# the plan's baseline: vanilla fp32, the plain torch engine, one micro-batch of 8
BASELINE = {"precision": "fp32", "grad_ckpt": False}
# a fixed warm-up, so that every cell trains the same 40 steps before its held-out loss is
# compared with its baseline's ("auto" would end each cell's warm-up at its own step)
WARMUP = 10

LADDER = gpubench.matrix(
    model=SIZES,
    precision=["fp32", "bf16"],
    grad_ckpt=[False, True],
    batch_size=8,
    seq_len=512,
    steps=30,
    warmup=WARMUP,
    requires_gpu=True,
    quality_reference=BASELINE,
) + gpubench.matrix(  # the same global batch through accumulation: 2 × 4 instead of 8
    model=["gpt2-medium", "gpt-1b"],
    precision="bf16",
    grad_ckpt=[False, True],
    grad_accum=4,
    batch_size=2,
    seq_len=512,
    steps=30,
    warmup=WARMUP,
    requires_gpu=True,
    quality_reference={**BASELINE, "grad_accum": 1, "batch_size": 8},
)
# each engine's way of moving training state to the host: ZeRO-Offload (Ren et al. 2021),
# ZeRO-3 with parameters offloaded too (ZeRO-Infinity's CPU case, Rajbhandari et al. 2021),
# FSDP2's CPUOffloadPolicy (parameters, gradients and the optimizer step on the CPU)
OFFLOAD = [
    dict(engine="deepspeed", zero_stage=2, offload_optimizer=True),
    dict(engine="deepspeed", zero_stage=3, offload_optimizer=True, offload_params=True),
    dict(engine="fsdp", offload_params=True),
]
for offload in OFFLOAD:
    LADDER += gpubench.matrix(
        **offload,
        model=SIZES,
        precision="bf16",
        grad_ckpt=[False, True],
        batch_size=8,
        seq_len=512,
        steps=30,
        warmup=WARMUP,
        requires_gpu=True,
        quality_reference={
            **BASELINE,
            "engine": "torch",
            "zero_stage": 0,
            "offload_optimizer": False,
            "offload_params": False,
        },
    )


def _configuration(result: Result) -> str:
    """The case's id, with the host RAM an offloaded cell's state needs (its estimate)."""
    host = result.estimate.host_bytes if result.estimate else None
    return f"{result.case.id} (host RAM {format_bytes(host)})" if host else result.case.id


@LADDER
def test_ladder(gpubench_result: Result, gpubench_profile: HardwareProfile):
    """A crash, a hang, a divergence or a loss that does not fall is a defect (red); a cell
    that does not fit, or fits without the plan's margin, is a finding (XFAIL). A held-out
    loss more than 2 % above the fp32 baseline's fails the cell after this body (the
    plugin's quality check), a finding or not."""
    gpubench.assert_healthy(gpubench_result)
    gpubench.xfail_unless_fits(gpubench_result, gpubench_profile, SAFETY_MARGIN_BYTES)


@gpubench.go_no_go(LADDER)
def test_ladder_go_no_go(gpubench_results: list[Result], gpubench_profile: HardwareProfile):
    """GO when every model size has a configuration that fits with the 2 GiB margin (the
    plan's "1B fits in 16 GB with optimizations, peak < 14 GB"), naming them, with the host
    RAM an offloaded one needs; NO-GO names the sizes without one."""
    fitting: dict[str, list[str]] = {r.case.model: [] for r in gpubench_results}
    for r in gpubench_results:
        if r.status == "ok" and not gpubench.fit_finding(r, gpubench_profile, SAFETY_MARGIN_BYTES):
            fitting[r.case.model].append(_configuration(r))
    for model, cases in fitting.items():
        print(f"{model}: {', '.join(cases) or 'no configuration'} fits with the margin")
    without = [model for model, cases in fitting.items() if not cases]
    if without:
        pytest.xfail(
            f"NO-GO on {gpubench_profile.name}: no configuration of {', '.join(without)} "
            f"fits with {SAFETY_MARGIN_BYTES / GiB:g} GiB free"
        )
