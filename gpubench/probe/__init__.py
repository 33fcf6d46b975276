"""The batch-size probe: the largest batch of a case that fits a profile, found with few
isolated worker runs, and the tokens/s curve up to it (docs/probe.md)."""

from __future__ import annotations

from gpubench.probe.batch import BATCH_LIMIT, probe_batch_size, run_in_worker
from gpubench.probe.outcome import BatchProbe, ProbeError
from gpubench.probe.start import estimated_peak_bytes

__all__ = [
    "BATCH_LIMIT",
    "BatchProbe",
    "ProbeError",
    "estimated_peak_bytes",
    "probe_batch_size",
    "run_in_worker",
]
