"""Memory estimation without a GPU: formulas, a traced step, and the verdict on a profile.

    estimate_case(case, profile) -> Estimate      # formulas, the traced step beside them
    estimate_peak_bytes(case, profile) -> int     # formulas only: cheap, for a batch probe

The formulas (:mod:`gpubench.estimate.analytical`) give the breakdown, and
``peak_bytes`` for a built-in GPT, whose code they model exactly; the traced
step (:mod:`gpubench.estimate.traced`, one training step under fake tensors) is
reported beside them and decides for another model under the torch engine
(:func:`_chosen_peak`). The verdict rule is :mod:`gpubench.estimate.fit`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gpubench.contracts.catalog.sizes import BUILTIN_MODELS
from gpubench.contracts.result import Estimate
from gpubench.estimate import parts
from gpubench.estimate.analytical import (
    Analysis,
    analyse,
    cublas_workspace_bytes,
    fragmentation_bytes,
)
from gpubench.estimate.fit import verdict
from gpubench.estimate.shape import ModelShape, model_shape
from gpubench.estimate.throughput import predict_throughput, with_prediction
from gpubench.estimate.traced import TraceUnavailable, trace_case

if TYPE_CHECKING:
    from gpubench.contracts.case import Case
    from gpubench.contracts.profiles import HardwareProfile

__all__ = [
    "TracedFigures",
    "estimate_case",
    "estimate_peak_bytes",
    "formulas_model_exactly",
    "model_shape",
]

FORMULAS = (
    "formulas (gpubench.estimate.analytical): model states after ZeRO (Rajbhandari et al. "
    "2020), DeepSpeed 0.19.8 and FSDP2 (Zhao et al. 2023), activations after Korthikanti "
    "et al. 2022"
)


@dataclass(frozen=True)
class TracedFigures:
    """The traced step's answer, or why there is none."""

    peak_bytes: int | None = None
    breakdown: dict[str, int] = field(default_factory=dict)
    note: str | None = None


def formulas_model_exactly(case: Case) -> bool:
    """Whether the formulas model ``case``'s own code (the built-in GPT): then they decide its
    estimate and a trace only checks them, else the trace can decide (:func:`_chosen_peak`)."""
    return case.model in BUILTIN_MODELS


def estimate_peak_bytes(case: Case, profile: HardwareProfile) -> int:
    """The formulas' peak device bytes of ``case`` on ``profile`` (no tracing), in this
    process (:func:`gpubench.estimate.isolated.peak_bytes_safely` keeps a user factory out
    of it)."""
    return analyse(case, model_shape(case), profile.kind).peak_bytes


def estimate_case(case: Case, profile: HardwareProfile, *, trace: bool = True) -> Estimate:
    """Predict ``case``'s peak device memory on ``profile`` and whether it fits, and its
    tokens/s (:mod:`gpubench.estimate.throughput`: the bound and the published range)."""
    shape = model_shape(case)
    analysis = analyse(case, shape, profile.kind)
    traced = trace_step(case, profile.kind) if trace else TracedFigures()
    notes = list(analysis.notes)
    if traced.note:
        notes.append(traced.note)
    peak, tensors, method = _chosen_peak(case, analysis, traced, shape, profile.kind)
    notes.append(f"peak at the {analysis.phase} (formulas)")
    estimate = Estimate(
        peak_bytes=peak,
        capacity_bytes=profile.memory_bytes,
        verdict=verdict(peak, tensors, profile.memory_bytes),
        headroom_bytes=profile.memory_bytes - peak,
        method=method,
        breakdown=analysis.breakdown,
        traced_peak_bytes=traced.peak_bytes,
        traced_breakdown=traced.breakdown,
        host_bytes=analysis.host_bytes,
        host_breakdown=analysis.host_breakdown,
        notes=notes,
    )
    return with_prediction(estimate, predict_throughput(case, profile, shape))


def _chosen_peak(
    case: Case, analysis: Analysis, traced: TracedFigures, shape: ModelShape, device_kind: str
) -> tuple[int, int, str]:
    """(peak, tensor bytes, method).

    The formulas model gpubench's own GPT layer by layer, so they give the figure for a
    built-in model. Another model's blocks (``hf:``, a factory) are only GPT-2-shaped to
    the formulas, while the trace runs the model's own code (its GELU variant, dropout
    masks, gated MLP): for a torch case the traced step decides, with the formulas'
    engine buffers, device constants and allocator margin on top. A DeepSpeed case is
    traced as the equivalent torch step, unpartitioned, so the formulas decide there.
    Without either, the formulas' model states are a lower bound.
    """
    exact = formulas_model_exactly(case)
    if analysis.activations_known and (exact or traced.peak_bytes is None):
        return analysis.peak_bytes, analysis.tensor_bytes, FORMULAS
    if traced.peak_bytes is not None and (case.engine == "torch" or not analysis.activations_known):
        return _traced_peak(analysis, traced, shape, device_kind)
    if analysis.activations_known:
        method = f"{FORMULAS}; {case.engine} is traced only as the torch step: formulas used"
        return analysis.peak_bytes, analysis.tensor_bytes, method
    method = f"{FORMULAS}; LOWER BOUND: activations unknown for {shape.source}"
    return analysis.peak_bytes, analysis.tensor_bytes, method


def _traced_peak(
    analysis: Analysis, traced: TracedFigures, shape: ModelShape, device_kind: str
) -> tuple[int, int, str]:
    """The traced tensors, with what the trace does not hold (DDP's buckets, the CUDA
    context) and the allocator's margin added as the formulas count them."""
    assert traced.peak_bytes is not None
    untraced = sum(analysis.breakdown.get(p, 0) for p in (parts.ENGINE_BUFFERS, parts.CUDA_CONTEXT))
    tensors = traced.peak_bytes + untraced + cublas_workspace_bytes(device_kind)
    margin = fragmentation_bytes(traced.peak_bytes, device_kind)
    method = (
        f"traced step (gpubench.estimate.traced) of {shape.source}: the model's own code, "
        "with the formulas' engine buffers, device constants and allocator margin added "
        "(the breakdown is the formulas', the traced_breakdown the trace's)"
    )
    return tensors + margin, tensors, method


def trace_step(case: Case, device_kind: str) -> TracedFigures:
    """The traced step's peak and breakdown (tensors only: the device's constants are the
    formulas'), or a note saying why there is none."""
    try:
        step = trace_case(case, device_kind)
    except TraceUnavailable as exc:
        return TracedFigures(note=f"not traced: {exc}")
    note = "; ".join(f"traced: {n}" for n in step.notes) or None
    return TracedFigures(peak_bytes=int(step.peak_bytes), breakdown=dict(step.breakdown), note=note)
