"""What the validation kit runs, at two scales: ``gpu`` (the real check) and ``smoke`` (CPU).

Every case is named; the checks (:mod:`gpubench.validation.checks`) find their
Results by these names. The ``gpu`` plan is sized to finish in well under 7
minutes on one H100/H200, DeepSpeed's op build included; the ``smoke`` plan
runs the same kit on the ``cpu`` profile with gpt-mini in about two minutes,
so the kit cannot rot between GPU sessions. Cases a CPU cannot run (fp16,
TF32) are left out of ``smoke``, and their checks say why they were skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCALES = ("gpu", "smoke")

# the checks' case names
BF16 = "bf16"
FP16 = "fp16-gradscaler"
TF32 = "tf32"
FUSED_ADAMW = "fused-adamw"
REFERENCE = "reference"
ZERO2 = "zero2"
ZERO2_OFFLOAD = "zero2-offload"
FITS = "emulated-fits"
TOO_BIG = "emulated-too-big"
HARNESS = "harness"
# training correctness (issue 20): pure bf16 beside autocast bf16, their held-out losses
# compared; the readiness suite's ZeRO-2 cell saved, resumed in a fresh worker and compared
BF16_PURE = "bf16-pure"
RESUME = "resume-readiness"
EVAL_BATCHES = 8
# the memory estimator checked on a GPU: the readiness suite's cells, few steps (a peak is
# reached in the first optimizer step; the second confirms it)
ESTIMATE_500M = "estimate-500m"
ESTIMATE_500M_CKPT = "estimate-500m-ckpt"
ESTIMATE_ZERO2_OFFLOAD = "estimate-500m-zero2-offload-ckpt"

# nanoGPT and llm.c pad GPT-2's 50,257-token vocabulary to 50,304 (a multiple of 128), which
# keeps the output head's matmul on fast tensor-core tiles; the reference run does the same.
PADDED_GPT2_VOCAB = 50_304
MFU_TARGET = 0.45  # above nanoGPT's ~37 % on an A100 and llm.c's ~38 % on an H100


@dataclass(frozen=True)
class Plan:
    """The cases of one scale: ``main`` on the machine's own profile (``auto``),
    ``emulated`` on a smaller ``emulated_profile``, and the harness ratio's case."""

    scale: str
    main_profile: str  # "auto" on a GPU; the smoke scale names cpu, whatever the machine has
    main: dict[str, dict[str, Any]]
    emulated_profile: str
    emulated: dict[str, dict[str, Any]]
    harness: dict[str, Any]
    harness_pairs: int
    timeout_s: float  # per case
    # the kit's whole run: past it, the harness ratio and the kernel profile are skipped (and
    # say so) rather than cut off by the caller's limit; the gpu scale fits a 10-minute command
    budget_s: float
    # |estimated - measured| / measured a case's memory estimate may miss by, on a GPU
    # against cuda-reserved (docs/estimate.md)
    estimate_tolerance: float = 0.10
    skipped: dict[str, str] = field(default_factory=dict)  # check -> why this scale skips it

    def cases(self) -> dict[str, dict[str, Any]]:
        return {**self.main, **self.emulated}


def _gpu() -> Plan:
    small = dict(
        model="gpt2-small", seq_len=1024, batch_size=8, steps=20, max_warmup_steps=20, lr=6e-4
    )
    return Plan(
        scale="gpu",
        main_profile="auto",
        main={
            BF16: dict(small, precision="bf16", eval_batches=EVAL_BATCHES),
            BF16_PURE: dict(small, precision="bf16-pure", eval_batches=EVAL_BATCHES),
            FP16: dict(small, precision="fp16"),
            TF32: dict(small, precision="fp32", tf32=True),
            FUSED_ADAMW: dict(small, precision="bf16", fused_adamw=True),
            # the reference speed: bf16, compiled, SDPA (flash), fused AdamW, a batch of 32
            # sequences (~25 GiB: fills an 80 GiB card's compute, not its memory)
            REFERENCE: dict(
                small,
                precision="bf16",
                compile=True,
                attention="sdpa",
                fused_adamw=True,
                batch_size=32,
                vocab_size=PADDED_GPT2_VOCAB,
                steps=30,
                max_warmup_steps=30,
            ),
            ZERO2: dict(small, precision="bf16", engine="deepspeed", zero_stage=2, steps=10),
            ZERO2_OFFLOAD: dict(
                small,
                precision="bf16",
                engine="deepspeed",
                zero_stage=2,
                offload_optimizer=True,
                steps=10,
            ),
            **_readiness_cells(),
            # suites/test_readiness.py's ZeRO-2 cell with its resume check: a ~7 GB
            # checkpoint written, loaded in a fresh worker, 4 steps compared
            RESUME: dict(
                model="gpt-500m",
                precision="bf16",
                batch_size=4,
                seq_len=1024,
                grad_ckpt=True,
                engine="deepspeed",
                zero_stage=2,
                steps=8,
                warmup=2,
                resume_check=True,
            ),
        },
        emulated_profile="rtx3060",  # 12 GiB
        emulated={
            FITS: dict(model="gpt2-small", precision="bf16", batch_size=2, seq_len=512, steps=5),
            # 355M fp32 parameters, gradients and AdamW states (5.7 GB) and the activations of
            # 16 x 1024 tokens through 24 layers (tens of GB): far above 12 GiB
            TOO_BIG: dict(
                model="gpt2-medium", precision="fp32", batch_size=16, seq_len=1024, steps=5
            ),
        },
        harness=dict(small, precision="bf16", steps=20, warmup=5),
        harness_pairs=2,
        timeout_s=300.0,
        budget_s=420.0,
    )


def _readiness_cells() -> dict[str, dict[str, Any]]:
    """suites/test_readiness.py's cells (gpt-500m, bf16, 4 x 1024 tokens), three steps each:
    their estimates against the measured peaks."""
    cell = dict(model="gpt-500m", precision="bf16", batch_size=4, seq_len=1024, steps=3, warmup=1)
    return {
        ESTIMATE_500M: cell,
        ESTIMATE_500M_CKPT: dict(cell, grad_ckpt=True),
        ESTIMATE_ZERO2_OFFLOAD: dict(
            cell, grad_ckpt=True, engine="deepspeed", zero_stage=2, offload_optimizer=True
        ),
    }


def _smoke() -> Plan:
    mini = dict(model="gpt-mini", seq_len=128, batch_size=8, steps=8, max_warmup_steps=6, lr=1e-3)
    cpu_only = "needs CUDA: the smoke scale runs on the cpu profile"
    return Plan(
        scale="smoke",
        main_profile="cpu",
        main={
            # bf16 matmuls on an AVX2-only CPU are ~150x slower than fp32: a quarter of the tokens
            BF16: dict(
                mini,
                precision="bf16",
                batch_size=4,
                seq_len=64,
                steps=4,
                max_warmup_steps=3,
                eval_batches=2,
            ),
            BF16_PURE: dict(
                mini,
                precision="bf16-pure",
                batch_size=4,
                seq_len=64,
                steps=4,
                max_warmup_steps=3,
                eval_batches=2,
            ),
            FUSED_ADAMW: dict(mini, fused_adamw=True),
            # no torch.compile at this scale: inductor's C++ build of gpt-mini takes about a
            # minute on 2 cores, and the kit's test must stay short; the gpu scale compiles
            REFERENCE: dict(mini, fused_adamw=True),
            ZERO2: dict(mini, engine="deepspeed", zero_stage=2),
            ZERO2_OFFLOAD: dict(mini, engine="deepspeed", zero_stage=2, offload_optimizer=True),
            RESUME: dict(mini, engine="deepspeed", zero_stage=2, warmup=2, resume_check=True),
        },
        emulated_profile="cpu:512MiB",  # RLIMIT_DATA, the CPU stand-in for a smaller card
        emulated={
            FITS: dict(model="gpt-tiny", batch_size=8, seq_len=64, steps=3, warmup=1),
            # 4096 x 128 tokens x 256-way float32 logits = 512 MiB per copy: above the cap
            TOO_BIG: dict(model="gpt-tiny", batch_size=4096, seq_len=128, steps=3, warmup=1),
        },
        harness=dict(model="gpt-mini", batch_size=8, seq_len=128, steps=10, warmup=2),
        harness_pairs=1,
        timeout_s=240.0,
        budget_s=1800.0,
        skipped={
            FP16: cpu_only,
            "fp16-loss-scale": cpu_only,
            TF32: cpu_only + " (TF32 is an Ampere+ tensor-core mode)",
            "gpu-profile-auto": "the smoke scale runs on the cpu profile, not auto",
            "compile": "torch.compile on CPU builds C++ for about a minute on 2 cores; the "
            "smoke scale leaves it to the gpu scale",
            "estimate-vs-measured": "the ±10 % target is against a GPU's cuda-reserved; the "
            "cpu figure is the resident set, where the measured cpu margin (15 % + 64 MiB) "
            "dominates the kit's tiny cases: suites/test_estimate_cpu.py checks the cpu",
        },
    )


def plan_for(scale: str) -> Plan:
    if scale not in SCALES:
        raise ValueError(f"scale {scale!r} is not valid; valid: {', '.join(SCALES)}")
    return _gpu() if scale == "gpu" else _smoke()
