"""An executed case's estimate, set beside what the worker measured.

Every case that runs also gets its :class:`~gpubench.contracts.result.Estimate`, with the
error against the measured figure the estimate is comparable to:

- on a CUDA profile, ``torch.cuda.max_memory_reserved`` (``cuda-reserved``: what
  the caching allocator held, fragmentation included) against the estimate
  without the parts outside the allocator (the CUDA context);
- on a ``cpu`` profile, the worker's peak resident set above the runtime's
  (``host-rss-above-runtime``: ``peak_rss_bytes - runtime_rss_bytes``, roughly what
  the case's training added) against the whole estimate. The cap itself counts
  ``VmData`` (allocated, not resident), and ``peak_rss_bytes`` is the process
  tree's high-water mark since the worker started, so this figure is an
  approximation: a case whose helpers (compile workers) hold memory reads high.

Only a case that trained to the end is compared: one that stopped early never
reached its peak. ``error_pct`` is ``100 x (estimated - measured) / measured``:
positive when the estimate is above what was measured.
"""

from __future__ import annotations

import dataclasses

from gpubench.contracts.result import Estimate, Result
from gpubench.estimate.parts import OUTSIDE_ALLOCATOR
from gpubench.estimate.throughput import compared_throughput

CUDA_SOURCE = "cuda-reserved"
HOST_SOURCE = "host-rss-above-runtime"


def comparable_bytes(estimate: Estimate, source: str) -> int:
    """The estimate's figure that ``source``'s measurement counts."""
    if source == CUDA_SOURCE:
        return estimate.peak_bytes - sum(estimate.breakdown.get(p, 0) for p in OUTSIDE_ALLOCATOR)
    return estimate.peak_bytes


def measured_peak(result: Result) -> tuple[int, str] | None:
    """(bytes, source) of the measured figure an estimate is compared with, or None."""
    metrics = result.metrics
    if not result.ran:
        return None
    if result.profile.kind == "cuda":
        reserved = metrics.peak_reserved_bytes
        return (reserved, CUDA_SOURCE) if reserved else None
    if metrics.peak_rss_bytes and metrics.runtime_rss_bytes is not None:
        added = metrics.peak_rss_bytes - metrics.runtime_rss_bytes
        return (added, HOST_SOURCE) if added > 0 else None
    return None


def compared(estimate: Estimate, result: Result) -> Estimate:
    """``estimate`` with the measured figure of ``result`` and its error filled, where
    ``result`` has one; and the predicted tokens/s's error (:mod:`~.throughput`)."""
    estimate = compared_throughput(estimate, result)
    measured = measured_peak(result)
    if measured is None:
        return estimate
    measured_bytes, source = measured
    error = 100.0 * (comparable_bytes(estimate, source) - measured_bytes) / measured_bytes
    return dataclasses.replace(
        estimate,
        measured_bytes=measured_bytes,
        measured_source=source,
        error_pct=round(error, 2),
    )
