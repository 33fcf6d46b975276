"""The verdict of a predicted peak on a profile's capacity.

- ``fits``: the peak, the allocator's margin included, is within capacity;
- ``over_capacity``: the tensors fit, but not with the allocator's margin on top
  (``peak - fragmentation <= capacity < peak``): the run may finish or may OOM
  depending on how the caching allocator packs its blocks, the seed's "PASS*" band;
- ``oom``: even the tensors (the peak less the margin) exceed capacity.

On a ``cpu`` profile a run ends ``ok`` or ``oom`` (``RLIMIT_DATA`` refuses every
allocation past the cap), and ``over_capacity`` says what it says on a card: too close
to call, the tensors fit and the measured margin of glibc's malloc does not
(docs/estimate.md: cases in that band went either way).

The names are the Result statuses (``fits`` stands for ``ok``), so an estimate
and a run of the same case can be compared directly.
"""

from __future__ import annotations

FITS = "fits"
OVER_CAPACITY = "over_capacity"
OOM = "oom"


def verdict(peak_bytes: int, tensor_bytes: int, capacity_bytes: int) -> str:
    """``fits``, ``over_capacity`` or ``oom`` for a peak whose tensors hold ``tensor_bytes``
    (``tensor_bytes <= peak_bytes``: the peak less the allocator's margin)."""
    if tensor_bytes > peak_bytes:
        raise ValueError(f"tensor_bytes={tensor_bytes} above peak_bytes={peak_bytes}")
    if peak_bytes <= capacity_bytes:
        return FITS
    if tensor_bytes > capacity_bytes:
        return OOM
    return OVER_CAPACITY
