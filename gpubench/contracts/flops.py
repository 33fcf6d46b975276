"""Training FLOPs per token of a GPT, and model FLOPs utilisation (MFU).

One formula, the one the public GPT-2 trainers report MFU with: PaLM
(Chowdhery et al. 2022, "PaLM: Scaling Language Modeling with Pathways",
appendix B) counts a training step of a decoder-only transformer as

    6 N + 12 L H Q T   FLOPs per token

with N the parameters that take part in a matrix multiply, L layers, H heads
of width Q (H Q = d_model) and T the sequence length: 6 N for the forward
(2 N) and backward (4 N) matmuls, 12 L H Q T for the attention scores and their
weighted sum. nanoGPT's ``estimate_mfu`` and llm.c use the same count, with the
token embedding in N (tied to the output head, whose matmul it pays for) and
the learned positional table out of it (a lookup, no matmul). Recomputation
under activation checkpointing (``grad_ckpt``) is not counted: MFU counts the
model's FLOPs, not the hardware's (PaLM, appendix B), so a checkpointed case
shows a lower MFU for the same work, never a higher one.

N is known two ways, one count: for a built-in GPT from its config
(:func:`case_flops_per_token`, no model built), for any model the worker built
from the module (:func:`gpubench.worker.models.built.count_matmul_params`): its unique
parameters less the lookup tables no output head shares, which is nanoGPT's N
(norms and biases included, under 0.2 % of a GPT-2).

MFU = tokens/s x FLOPs per token / (the profile's dense peak FLOP/s x devices).
Torch-free: the report and the estimator read it without a worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpubench.contracts.catalog.sizes import BUILTIN_MODELS, builtin_config, gpt_param_count

if TYPE_CHECKING:
    from gpubench.contracts.case import Case
    from gpubench.contracts.profiles import HardwareProfile

FORMULA = "6N + 12·L·d·T per token (PaLM, Chowdhery et al. 2022, appendix B)"
# matmuls in a tensor-core dtype: autocast bf16/fp16, or a model cast to bf16 (bf16-pure)
TENSOR_CORE_PRECISIONS = ("bf16", "fp16", "bf16-pure")


def training_flops_per_token(
    matmul_params: int, n_layers: int, d_model: int, seq_len: int
) -> float:
    """``6 N + 12 L d T``: FLOPs of one token's forward and backward (the module doc)."""
    for name, value in (
        ("matmul_params", matmul_params),
        ("n_layers", n_layers),
        ("d_model", d_model),
        ("seq_len", seq_len),
    ):
        if value <= 0:
            raise ValueError(f"{name}={value!r} must be positive")
    return 6.0 * matmul_params + 12.0 * n_layers * d_model * seq_len


def shape_flops_per_token(
    matmul_params: int | None, n_layers: int | None, d_model: int | None, seq_len: int
) -> float | None:
    """:func:`training_flops_per_token` of a built model, or None when any of its shape
    could not be read (a factory module without ``n_layer``/``d_model``, ...)."""
    if not matmul_params or not n_layers or not d_model:
        return None
    return training_flops_per_token(matmul_params, n_layers, d_model, seq_len)


def case_flops_per_token(case: Case) -> float | None:
    """Training FLOPs per token of ``case``'s model: built-in GPTs only (their shape is
    known without building them); None for a factory or ``hf:`` model."""
    if case.model not in BUILTIN_MODELS:
        return None
    config = builtin_config(case)
    params = gpt_param_count(
        config.n_layer, config.n_embd, config.vocab_size, config.block_size, config.bias
    )
    positional = config.block_size * config.n_embd
    return training_flops_per_token(
        params - positional, config.n_layer, config.n_embd, case.seq_len
    )


def peak_flops(profile: HardwareProfile, precision: str, *, tf32: bool = False) -> float | None:
    """The profile's dense peak FLOP/s for ``precision``: the tensor-core BF16/FP16 figure
    under autocast or bf16-pure, the FP32 one otherwise; None when the profile has no
    figure, and for FP32 with TF32 matmuls allowed (they run on tensor cores, a rate no
    profile states: the FP32 figure would make the MFU up to 8x too high)."""
    if precision in TENSOR_CORE_PRECISIONS:
        return profile.bf16_flops
    return None if tf32 else profile.fp32_flops


def case_peak_flops(case: Case, profile: HardwareProfile, devices: int) -> float | None:
    """The peak of ``devices`` cards of ``profile`` for ``case``'s precision and TF32 flag
    (:func:`peak_flops` x devices); None when the profile has no figure for them."""
    peak = peak_flops(profile, case.flags.precision, tf32=case.flags.tf32)
    return None if peak is None else peak * devices


def mfu(tokens_per_s: float, flops_per_token: float, peak: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak, a fraction."""
    if peak <= 0:
        raise ValueError(f"peak={peak!r} FLOP/s must be positive")
    return tokens_per_s * flops_per_token / peak
