"""Why a measured Result cannot be what it says: :func:`implausible_reasons`.

Pure and torch-free: the worker fills ``Result.implausible`` with it when it
assembles a Result, and the reports call it on records written before that
field existed. Each reason is a full sentence naming its figures.

The rules, on the model FLOPs utilisation the worker measured
(``Metrics.mfu``, :mod:`gpubench.contracts.flops`: one cited formula, recomputation not
counted) and on the declared model size:

- MFU above 100 %: no card runs faster than its peak, so the model or the token
  count is not what was declared (a seed report's "970 tok/s" from a tiny model
  loaded by mistake).
- MFU above :data:`MFU_BOUND`: faster than any published dense training.
- MFU under :data:`MFU_FLOOR` on a GPU, for a case that trained to the end:
  the wrong model was measured or the pipeline stalled (a seed report
  celebrates 38 tokens/s for a 125M model on two A100s: about 0.005 %).
- The built model's parameter count more than
  :data:`PARAM_TOLERANCE` off its declared one.
"""

from __future__ import annotations

from gpubench.contracts.case import Case
from gpubench.contracts.flops import case_flops_per_token, case_peak_flops
from gpubench.contracts.result import Result

# The highest dense-training MFU published: Megatron-LM 52 % on A100s (Narayanan et al.
# 2021, "Efficient Large-Scale Language Model Training on GPU Clusters", table 1: 163 of
# 312 TFLOP/s), MegaScale 55.2 % (Jiang et al. 2024, NSDI), PaLM 46.2 % MFU / 57.8 % HFU
# (Chowdhery et al. 2022, table 3); single-GPU GPT trainers print up to about 74 % on an
# A100 (karpathy/nanochat PR #147). 80 % leaves a margin above the best ever reported. One
# bound for every card: a HardwareProfile cannot yet carry its own.
MFU_BOUND = 0.80
# Under 1 % on a GPU: nanoGPT issue #182's consumer cards without torch.compile print 7-8 %,
# a 2x TITAN Xp run starved by gradient accumulation 0.96 % (nanoGPT issue #466); below
# that no sane training configuration lands, only a wrong model or a stalled input.
MFU_FLOOR = 0.01
# ... for a model big enough to keep a GPU's tensor cores busy. A small one is bound by
# kernel launches in eager mode, not by FLOPs: gpt-mini (4.3M parameters, 28 MFLOP/token)
# would need 350,000 tokens/s for 1 % of an H100. GPT-2 small (124M) is the smallest size
# the figures above were printed for.
MFU_FLOOR_MIN_PARAMS = 100_000_000
PARAM_TOLERANCE = 0.10  # |counted - declared| / declared above this fails the case


def parameter_mismatch(n_params: int, declared: int | None, declared_by: str) -> str | None:
    """The sentence for a build more than ``PARAM_TOLERANCE`` off its ``declared`` count
    (``declared_by`` says where that count came from), or None when it is within it."""
    if declared is None:
        return None
    if declared > 0 and abs(n_params - declared) <= PARAM_TOLERANCE * declared:
        return None
    off = f"{100 * (n_params - declared) / declared:+.0f} %" if declared > 0 else "not > 0"
    return (
        f"declared {declared:,} parameters ({declared_by}), the model built has {n_params:,} "
        f"({off}, beyond ±{100 * PARAM_TOLERANCE:.0f} %): the benchmark would measure a different "
        "model than declared"
    )


def declared_by(case: Case) -> str:
    """Where a case's declared parameter count comes from, for the mismatch sentence."""
    if case.expect_params is not None:
        return f"expect_params={case.expect_params:,}"
    return f"the declared size of {case.model}"


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.3g} %"


def flops_per_token(result: Result) -> float | None:
    """The Result's model FLOPs per token; for a record older than schema v4, a built-in
    model's from its case (:func:`~gpubench.contracts.flops.case_flops_per_token`)."""
    measured = result.metrics.model_flops_per_token
    return measured if measured is not None else case_flops_per_token(result.case)


def result_mfu(result: Result) -> float | None:
    """The Result's MFU; for a record older than schema v4, derived from its tokens/s, its
    model and its profile the way the worker derives it (None where any is unknown)."""
    if result.metrics.mfu is not None:
        return result.metrics.mfu
    if result.metrics.capacity_emulated:  # the speed is the physical card's, not the profile's
        return None
    per_token, tokens_per_s = flops_per_token(result), result.tokens_per_s
    peak = case_peak_flops(result.case, result.profile, result.case.nproc)
    if per_token is None or not tokens_per_s or not peak:
        return None
    return tokens_per_s * per_token / peak


def _mfu_figures(result: Result, mfu: float) -> str:
    return (
        f"MFU {_pct(mfu)} ({result.tokens_per_s or 0.0:,.0f} tok/s x "
        f"{(flops_per_token(result) or 0.0) / 1e6:,.1f} MFLOP/token on "
        f"{result.case.nproc} x {result.profile.name}, {result.case.flags.precision})"
    )


def mfu_reasons(result: Result) -> list[str]:
    """The MFU rules: above the peak, above :data:`MFU_BOUND`, or under :data:`MFU_FLOOR`
    on a GPU for a case that trained to the end."""
    mfu = result_mfu(result)
    if mfu is None:
        return []
    figures = _mfu_figures(result, mfu)
    if mfu > 1.0:
        return [
            f"{figures} is above the card's peak: the model or the token count is not what "
            "was declared."
        ]
    if mfu > MFU_BOUND:
        return [
            f"{figures} is above {_pct(MFU_BOUND)}, more than any published dense training "
            "reaches: check the model and the token count."
        ]
    big_enough = result.metrics.n_params >= MFU_FLOOR_MIN_PARAMS
    if mfu < MFU_FLOOR and big_enough and result.ran and result.profile.kind == "cuda":
        return [
            f"{figures} is under {_pct(MFU_FLOOR)}, far below any sane value on a GPU: "
            "measured the wrong model, or the pipeline stalled."
        ]
    return []


def parameter_sentence(n_params: int, declared: int | None, case: Case) -> str | None:
    """The declared-size rule's sentence for ``case`` (the worker's ParameterCountMismatch
    message too), or None when the build is within the tolerance or nothing was declared."""
    sentence = parameter_mismatch(n_params, declared, declared_by(case))
    return None if sentence is None else sentence + "."


def parameter_reasons(result: Result) -> list[str]:
    """The declared-size rule on a Result's counted and declared parameters."""
    m = result.metrics
    if not m.n_params:  # never built: nothing was counted
        return []
    sentence = parameter_sentence(m.n_params, m.declared_params, result.case)
    return [] if sentence is None else [sentence]


def implausible_reasons(result: Result) -> list[str]:
    """Every reason ``result``'s figures cannot be what it declares; empty when none."""
    return [*parameter_reasons(result), *mfu_reasons(result)]
