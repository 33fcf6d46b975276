"""Memory estimation without a GPU: formulas, a traced step, and the verdict on a profile.

    estimate_case(case, profile) -> Estimate      # formulas, the traced step beside them
    estimate_peak_bytes(case, profile) -> int     # formulas only: cheap, for a batch probe

The formulas (:mod:`gpubench.estimate.analytical`) give ``peak_bytes`` and its
breakdown; the traced step (:mod:`gpubench.estimate.traced`, one training step
under fake tensors) is reported beside them, and stands in for them only where
the model's shape does not allow the formulas (a factory without a config).
The verdict rule is :mod:`gpubench.estimate.verdict`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gpubench.estimate import parts
from gpubench.estimate.analytical import Analysis, analyse, fragmentation_bytes
from gpubench.estimate.shape import ModelShape, model_shape
from gpubench.estimate.traced import TraceUnavailable, trace_case
from gpubench.estimate.verdict import verdict
from gpubench.result import Estimate

if TYPE_CHECKING:
    from gpubench.case import Case
    from gpubench.profiles import HardwareProfile

__all__ = ["TracedFigures", "estimate_case", "estimate_peak_bytes", "model_shape"]

FORMULAS = (
    "formulas (gpubench.estimate.analytical): model states after ZeRO (Rajbhandari et al. "
    "2020) and DeepSpeed 0.19.8, activations after Korthikanti et al. 2022"
)


@dataclass(frozen=True)
class TracedFigures:
    """The traced step's answer, or why there is none."""

    peak_bytes: int | None = None
    breakdown: dict[str, int] = field(default_factory=dict)
    note: str | None = None


def estimate_peak_bytes(case: Case, profile: HardwareProfile) -> int:
    """The formulas' peak device bytes of ``case`` on ``profile`` (no tracing)."""
    return analyse(case, model_shape(case), profile.kind).peak_bytes


def estimate_case(case: Case, profile: HardwareProfile, *, trace: bool = True) -> Estimate:
    """Predict ``case``'s peak device memory on ``profile`` and whether it fits."""
    shape = model_shape(case)
    analysis = analyse(case, shape, profile.kind)
    traced = trace_step(case, profile.kind) if trace else TracedFigures()
    notes = list(analysis.notes)
    if traced.note:
        notes.append(traced.note)
    peak, tensors, method = _chosen_peak(analysis, traced, shape, profile.kind)
    notes.append(f"peak at the {analysis.phase} (formulas)")
    return Estimate(
        peak_bytes=peak,
        capacity_bytes=profile.memory_bytes,
        verdict=verdict(peak, tensors, profile.memory_bytes, profile.kind),
        headroom_bytes=profile.memory_bytes - peak,
        method=method,
        breakdown=analysis.breakdown,
        traced_peak_bytes=traced.peak_bytes,
        traced_breakdown=traced.breakdown,
        host_bytes=analysis.host_bytes,
        host_breakdown=analysis.host_breakdown,
        notes=notes,
    )


def _chosen_peak(
    analysis: Analysis, traced: TracedFigures, shape: ModelShape, device_kind: str
) -> tuple[int, int, str]:
    """(peak, tensor bytes, method): the formulas' figure where they describe the model,
    else the traced step's, else the formulas' lower bound (model states only)."""
    if analysis.activations_known:
        return analysis.peak_bytes, analysis.tensor_bytes, FORMULAS
    if traced.peak_bytes is not None:
        # the trace holds tensors only: the device's constants and the allocator's margin
        # on top, as the formulas add them
        context = analysis.breakdown.get(parts.CUDA_CONTEXT, 0)
        tensors = traced.peak_bytes + context
        margin = fragmentation_bytes(traced.peak_bytes, device_kind)
        method = (
            f"traced step (gpubench.estimate.traced): {shape.source} gives no layer shapes "
            "for the formulas; the formulas' device constants and allocator margin added"
        )
        return tensors + margin, tensors, method
    method = f"{FORMULAS}; LOWER BOUND: activations unknown for {shape.source}"
    return analysis.peak_bytes, analysis.tensor_bytes, method


def trace_step(case: Case, device_kind: str) -> TracedFigures:
    """The traced step's peak and breakdown (tensors only: the device's constants are the
    formulas'), or a note saying why there is none."""
    try:
        step = trace_case(case, device_kind)
    except TraceUnavailable as exc:
        return TracedFigures(note=f"not traced: {exc}")
    note = "; ".join(f"traced: {n}" for n in step.notes) or None
    return TracedFigures(peak_bytes=int(step.peak_bytes), breakdown=dict(step.breakdown), note=note)
