"""Predicted tokens/s of a case on a profile: a roofline bound, and an expected range below it.

**The bound** (Williams et al. 2009, "Roofline: an insightful visual performance model",
CACM 52(4)): a step can go no faster than its FLOPs at the card's dense peak, nor than the
bytes it must move at the card's memory bandwidth. Per rank, in tokens/s:

    min(peak FLOP/s / training FLOPs per token,          # gpubench.contracts.flops (PaLM)
        bandwidth bytes/s / bytes per token)
    x ranks

The bytes are a floor, the traffic no implementation avoids (activations, the logits and
the caches' misses come on top, so the true figure is higher and the bound looser): per
optimizer step, each micro-batch reads every weight in the forward and again in the
backward (for the input gradients) and writes every gradient; then AdamW
(``torch.optim.AdamW``, Loshchilov & Hutter 2019) reads the weight, its gradient and its two
moments and writes the weight and the moments, all fp32: 28 bytes a parameter, split over
the ranks under ZeRO/FSDP and taken off the device by an offloaded optimizer. Weights and
gradients are fp32 under the torch and FSDP engines (autocast keeps fp32 masters) and
16-bit under DeepSpeed bf16/fp16 (``engines/deepspeed_config.py``).

**The range** is an achieved model FLOPs utilisation (MFU) band times the compute bound:

- *calibrated*, where the user has a measured Result of the same model, sequence length
  and precision (on any card): its MFU carries over, scaled by the ratio of the peaks (the
  same MFU on a card of twice the peak is twice the tokens/s), its p10-p90 spread kept;
- else *published*: the span of the MFU that published runs of comparable models reached
  with bf16/fp16 on NVIDIA data-centre cards (:data:`PUBLISHED_MFU`, each run cited);
  under ``grad_ckpt`` divided by 4/3, the forward recomputed (PaLM, appendix B).

Both are capped at the bound. Every figure names its method and its source in the
Estimate (``throughput_method``, ``throughput_source``); a prediction is never a
measurement (see :class:`~gpubench.contracts.result.Estimate`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpubench.contracts.flops import (
    FORMULA,
    TENSOR_CORE_PRECISIONS,
    case_flops_per_token,
    case_peak_flops,
    shape_flops_per_token,
)
from gpubench.contracts.plausibility import flops_per_token as result_flops_per_token
from gpubench.contracts.plausibility import result_mfu
from gpubench.contracts.result import Estimate, Result

if TYPE_CHECKING:
    from gpubench.contracts.case import Case
    from gpubench.contracts.profiles import HardwareProfile
    from gpubench.estimate.shape import ModelShape

ADAMW_BYTES = 28  # fp32: reads weight, gradient, exp_avg, exp_avg_sq; writes the last three
RECOMPUTE = 4 / 3  # grad_ckpt: 8N + 16LdT FLOPs done for the 6N + 12LdT counted (PaLM app. B)
ROOFLINE = "roofline (Williams et al. 2009)"


@dataclass(frozen=True)
class PublishedRun:
    """A published training run: what it reported and the MFU that makes by this count."""

    name: str
    configuration: str
    tokens_per_s_per_gpu: float | None  # as reported or derived from what was reported
    mfu: float  # by gpubench's count (6N + 12LdT over the dense peak), a fraction
    source: str


# GPT-2 124M by this count: 855,166,464 FLOPs a token at T = 1024 (vocabulary 50,257; nanoGPT
# and llm.c pad it to 50,304, 0.2 % more), over 312 TFLOP/s (A100) or 989.5 (H100 SXM)
PUBLISHED_RUNS: tuple[PublishedRun, ...] = (
    PublishedRun(
        "nanoGPT, GPT-2 124M, 8x A100 40GB",
        "bf16 autocast, torch.compile, flash SDPA, 12 x 1024 tokens x 5 micro-batches a GPU; "
        "600,000 steps of 491,520 tokens (295B) in 'about 4 days' (README; the config says "
        "~5): 85,300-106,700 tok/s a GPU",
        106_667,
        0.29,
        "https://github.com/karpathy/nanoGPT (README, config/train_gpt2.py)",
    ),
    PublishedRun(
        "llm.c, GPT-2 124M, 8x A100 80GB SXM",
        "bf16, cuDNN flash attention, 64 x 1024 tokens a GPU (524,288 a step); 10B tokens in "
        "~90 minutes: 231,000 tok/s a GPU ('up to ~60 % MFU' by llm.c's count)",
        231_481,
        0.63,
        "https://github.com/karpathy/llm.c/discussions/481",
    ),
    PublishedRun(
        "llm.c, GPT-2 124M, 8x H100 SXM (HBM3)",
        "as above, October 2024: median step 139 ms for 524,288 tokens: 471,000 tok/s a GPU",
        471_482,
        0.41,
        "https://github.com/KellerJordan/modded-nanogpt/blob/master/records/101324_llmc/README.md",
    ),
    PublishedRun(
        "GPT-3 175B (as PaLM tabulates it)",
        "V100s; the lowest MFU of PaLM's table 3",
        None,
        0.213,
        "Chowdhery et al. 2022, 'PaLM', table 3 https://arxiv.org/abs/2204.02311",
    ),
    PublishedRun(
        "PaLM 540B",
        "6144 TPU v4, bf16",
        None,
        0.462,
        "Chowdhery et al. 2022, 'PaLM', table 3 https://arxiv.org/abs/2204.02311",
    ),
)
# the band: the lowest and the highest MFU of the published runs (rounded outwards)
PUBLISHED_MFU = (0.20, 0.65)
PUBLISHED_SOURCE = "published MFU 20-65 %: " + "; ".join(
    f"{run.name} {100 * run.mfu:.0f} % ({run.source})" for run in PUBLISHED_RUNS
)
SMALLEST_PUBLISHED_PARAMS = 100_000_000  # the band's smallest runs are GPT-2 124M


@dataclass(frozen=True)
class ThroughputPrediction:
    bound: float | None = None  # tokens/s, all ranks
    low: float | None = None
    high: float | None = None
    method: str | None = None
    source: str | None = None


def flops_per_token(case: Case, shape: ModelShape | None) -> float | None:
    """Training FLOPs per token of ``case``'s model: a built-in's from its config, another's
    from its shape (None where its layers or width are unknown)."""
    builtin = case_flops_per_token(case)
    if builtin is not None or shape is None:
        return builtin
    return shape_flops_per_token(shape.matmul_params, shape.n_layer, shape.d_model, case.seq_len)


def ranks(case: Case) -> int:
    return case.nproc * case.nnodes


def bytes_per_token(case: Case, n_params: int) -> float:
    """The fewest bytes one rank moves per token it trains (the module doc's floor)."""
    flags = case.flags
    sixteen_bit = flags.precision == "bf16-pure" or (
        case.engine == "deepspeed" and flags.precision in TENSOR_CORE_PRECISIONS
    )
    weight = 2 if sixteen_bit else 4  # bytes a weight (and a gradient) is stored in
    sharded = (case.engine == "deepspeed" and flags.zero_stage > 0) or case.engine == "fsdp"
    optimizer = 0.0 if flags.offload_optimizer else ADAMW_BYTES * n_params
    if sharded:
        optimizer /= ranks(case)
    moved = flags.grad_accum * 3 * weight * n_params + optimizer
    return moved / case.tokens_per_step


def roofline(
    case: Case, profile: HardwareProfile, per_token: float, n_params: int
) -> tuple[float | None, str]:
    """(the bound in tokens/s over all ranks, or None, and what bounds it)."""
    peak = case_peak_flops(case, profile, ranks(case)) or 0.0
    bandwidth = profile.memory_bandwidth or 0.0
    compute = peak / per_token if peak else None
    memory = bandwidth * ranks(case) / bytes_per_token(case, n_params) if bandwidth else None
    if compute is None and memory is None:
        return None, f"{profile.name} states no peak for {case.flags.precision} nor a bandwidth"
    if memory is not None and (compute is None or memory < compute):
        said = f"memory-bound: {bandwidth / 1e9:,.0f} GB/s over the bytes a step must move "
        said += "(weights read twice, gradients written, AdamW's states)"
        if compute is None:
            said += f"; no {case.flags.precision} peak stated: compute not bounded"
        return memory, said
    said = f"compute-bound: {peak / 1e12:,.1f} TFLOP/s over {per_token / 1e6:,.1f} MFLOP/token"
    if memory is None:
        said += "; the profile states no memory bandwidth: bytes not bounded"
    return compute, said


def predict_throughput(
    case: Case, profile: HardwareProfile, shape: ModelShape | None = None
) -> ThroughputPrediction:
    """``case``'s predicted tokens/s on ``profile``: the bound and the published range below
    it (:func:`calibrate` replaces the range with one from the user's measured Results)."""
    per_token = flops_per_token(case, shape)
    n_params = shape.n_params if shape is not None else None
    if per_token is None or not n_params:
        return ThroughputPrediction(
            method=f"not predicted: the FLOPs per token of {case.model} are unknown "
            "(its layers or width could not be read)"
        )
    bound, bound_said = roofline(case, profile, per_token, n_params)
    peak = case_peak_flops(case, profile, ranks(case))
    method = f"{ROOFLINE}, {bound_said}; FLOPs {FORMULA}"
    if bound is None or peak is None:
        return ThroughputPrediction(bound=bound, method=f"{method}; no range: no peak to scale")
    band, band_method, source = _published(case, profile, n_params)
    if band is None:
        return ThroughputPrediction(bound=bound, method=f"{method}; no range: {band_method}")
    low, high = (min(bound, mfu * peak / per_token) for mfu in band)
    capped = "; capped at the bound" if high == bound else ""
    return ThroughputPrediction(
        bound=bound,
        low=low,
        high=high,
        method=f"{method}; range: {band_method}{capped}",
        source=source,
    )


def _published(
    case: Case, profile: HardwareProfile, n_params: int
) -> tuple[tuple[float, float] | None, str, str | None]:
    if profile.is_cpu:
        return None, "no published MFU of a CPU run: calibrate from a measured Result", None
    low, high = PUBLISHED_MFU
    said = f"published MFU band {100 * low:.0f}-{100 * high:.0f} % (bf16 GPT runs)"
    if case.flags.grad_ckpt:
        low, high = low / RECOMPUTE, high / RECOMPUTE
        said += ", / 4/3 for grad_ckpt's recomputed forward"
    if case.flags.precision not in TENSOR_CORE_PRECISIONS:
        said += "; no published fp32 run: the bf16 band is used"
    if n_params < SMALLEST_PUBLISHED_PARAMS:
        said += (
            f"; {n_params / 1e6:,.1f}M parameters is smaller than the published runs "
            "(124M and up): expect the low end or below"
        )
    if case.flags.offload_optimizer or case.flags.offload_params:
        said += "; the offloaded step's host time is not counted: an upper estimate"
    return (low, high), said, PUBLISHED_SOURCE


def same_workload(case: Case, other: Case) -> bool:
    """Whether a measured case's MFU carries over to ``case``: the same model (and config),
    sequence length and precision."""
    return (
        other.model == case.model
        and other.model_config == case.model_config
        and other.seq_len == case.seq_len
        and other.flags.precision == case.flags.precision
    )


def calibration_results(case: Case, measured: Sequence[Result]) -> list[Result]:
    """The measured Results ``case`` is calibrated from: each trained to the end with an MFU
    (its profile states a peak); those of the same case if any, else of the same workload;
    those measured on a quiet machine if any, else the busy ones (the method says so)."""
    usable = [
        r for r in measured if r.ran and same_workload(case, r.case) and result_mfu(r) is not None
    ]
    usable = [r for r in usable if r.case.id == case.id] or usable
    return [r for r in usable if not r.busy] or usable


def calibrate(
    estimate: Estimate, case: Case, profile: HardwareProfile, measured: Sequence[Result]
) -> Estimate:
    """``estimate`` with its range made from the measured Results of ``case``'s workload
    (:func:`calibration_results`): each one's MFU, at its p10 and p90 tokens/s, times
    ``profile``'s peak over the FLOPs per token, capped at the bound. Unchanged where none
    matches or ``profile`` states no peak for the case's precision."""
    found = calibration_results(case, measured)
    peak = case_peak_flops(case, profile, ranks(case))
    if not found or peak is None:
        return estimate
    mfus: list[float] = []
    for r in found:
        mfu, tps = result_mfu(r), r.metrics.tokens_per_s
        assert mfu is not None and tps is not None
        spread = [tps.p10, tps.p90] if tps.p10 and tps.p90 else [tps.median]
        mfus += [mfu * value / tps.median for value in spread]
    per_token = result_flops_per_token(found[0])
    assert per_token is not None  # result_mfu needs it
    bound = estimate.tokens_per_s_bound
    low, high = (mfu * peak / per_token for mfu in (min(mfus), max(mfus)))
    if bound is not None:
        low, high = min(low, bound), min(high, bound)
    kept = (estimate.throughput_method or "").split("; range: ", 1)[0]
    said = (
        f"range: calibrated: the MFU measured on "
        f"{', '.join(sorted({r.profile.name for r in found}))} ({100 * min(mfus):.1f}-"
        f"{100 * max(mfus):.1f} %, p10-p90) carried over to {profile.name}, scaled by the "
        f"ratio of the peaks ({peak / 1e12:,.3g} TFLOP/s here)"
    )
    if any(r.busy for r in found):
        said += "; measured on a busy machine (other work took the cores): a low MFU"
    source = "; ".join(
        f"Result {r.case.id} on {r.profile.name} (run {r.run_id or 'unnamed'}): "
        f"{r.tokens_per_s or 0:,.0f} tok/s, MFU {100 * (result_mfu(r) or 0):.1f} %"
        for r in found
    )
    return dataclasses.replace(
        estimate,
        tokens_per_s_low=low,
        tokens_per_s_high=high,
        throughput_method=f"{kept}; {said}" if kept else said,
        throughput_source=source,
    )


def with_prediction(estimate: Estimate, prediction: ThroughputPrediction) -> Estimate:
    """``estimate`` carrying ``prediction``."""
    return dataclasses.replace(
        estimate,
        tokens_per_s_bound=prediction.bound,
        tokens_per_s_low=prediction.low,
        tokens_per_s_high=prediction.high,
        throughput_method=prediction.method,
        throughput_source=prediction.source,
    )


def predicted_middle(estimate: Estimate) -> float | None:
    """The middle of the predicted range, the figure an error is stated for."""
    if estimate.tokens_per_s_low is None or estimate.tokens_per_s_high is None:
        return None
    return (estimate.tokens_per_s_low + estimate.tokens_per_s_high) / 2


def compared_throughput(estimate: Estimate, result: Result) -> Estimate:
    """``estimate`` with the error of its predicted tokens/s against ``result``'s measured
    median, where the case trained to the end and both exist."""
    middle, measured = predicted_middle(estimate), result.tokens_per_s
    if middle is None or not measured or not result.ran:
        return estimate
    error = 100.0 * (middle - measured) / measured
    return dataclasses.replace(estimate, tokens_per_s_error_pct=round(error, 2))
