"""A case's peak memory against its profile's capacity: what can be compared, decided once.

On a GPU profile the device's peak (:attr:`Metrics.peak_device_bytes`) is what the
capacity must hold. On a ``cpu`` profile the capacity is a cap the kernel enforces
*above* the worker's data size after its imports (``RLIMIT_DATA``, capacity.py),
and that baseline is not recorded: the peak host RSS, which includes it, is an
upper bound of what training used. So there a case that trained to the end fits
by construction, its share of capacity is not shown, and the RSS is only used
where an upper bound answers the question (memory under half the capacity).
"""

from __future__ import annotations

from gpubench.contracts.result import Result


def capacity_bytes(result: Result) -> int:
    """The capacity the case ran under."""
    return result.metrics.capacity_bytes or result.profile.memory_bytes


def device_share(result: Result) -> float | None:
    """The device's peak as a share of capacity; None without a device figure (a cpu
    profile, or a case that never measured)."""
    peak = result.metrics.peak_device_bytes
    return peak / capacity_bytes(result) if peak else None


def share_upper_bound(result: Result) -> float | None:
    """A share of capacity the case's use is certainly at or below: the device's, else
    the peak host RSS (which includes the worker's imports) over a cpu profile's cap."""
    share = device_share(result)
    if share is not None:
        return share
    rss = result.metrics.peak_rss_bytes
    return rss / capacity_bytes(result) if rss and result.profile.is_cpu else None


def fits_with_margin(result: Result, margin: float) -> bool:
    """Trained to the end with its peak within capacity less ``margin``; on a cpu profile,
    trained to the end (the kernel held it to the cap)."""
    if not result.fits:
        return False
    share = device_share(result)
    return share <= 1 - margin if share is not None else result.profile.is_cpu
