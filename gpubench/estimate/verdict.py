"""The verdict of a predicted peak on a profile's capacity.

- ``fits``: the peak, the allocator's margin included, is within capacity;
- ``over_capacity``: the tensors fit, but not with the allocator's margin on top
  (``peak - fragmentation <= capacity < peak``): the run may finish or may OOM
  depending on how the caching allocator packs its blocks, the seed's "PASS*" band;
- ``oom``: even the tensors (the peak less the margin) exceed capacity.

On a ``cpu`` profile there is no such band: the cap (``RLIMIT_DATA``) refuses every
allocation past it, and a run there ends ``ok`` or ``oom``, never ``over_capacity``.
The verdict is ``fits`` when the peak, the measured margin of glibc's malloc
included, is within the cap, else ``oom`` (docs/estimate.md: the margin was
fitted so that every bisected case trains at its peak figure).

The names are the Result statuses (``fits`` stands for ``ok``), so an estimate
and a run of the same case can be compared directly.
"""

from __future__ import annotations

FITS = "fits"
OVER_CAPACITY = "over_capacity"
OOM = "oom"


def verdict(
    peak_bytes: int, tensor_bytes: int, capacity_bytes: int, device_kind: str = "cuda"
) -> str:
    """``fits``, ``over_capacity`` or ``oom`` for a peak whose tensors hold ``tensor_bytes``
    (``tensor_bytes <= peak_bytes``: the peak less the allocator's margin) on a profile of
    ``device_kind`` (``cpu``: ``fits`` or ``oom`` only)."""
    if tensor_bytes > peak_bytes:
        raise ValueError(f"tensor_bytes={tensor_bytes} above peak_bytes={peak_bytes}")
    if peak_bytes <= capacity_bytes:
        return FITS
    if tensor_bytes > capacity_bytes or device_kind == "cpu":
        return OOM
    return OVER_CAPACITY
