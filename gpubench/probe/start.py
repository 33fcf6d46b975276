"""Where the search starts: the largest batch the memory estimate says fits the profile.

The estimate is analytical and cheap, so it is asked as often as it takes (a doubling,
then a bisection over its answers); only the search's probes run a worker.
"""

from __future__ import annotations

from collections.abc import Callable

from gpubench.contracts.case import Case
from gpubench.contracts.profiles import HardwareProfile

Predict = Callable[[Case, HardwareProfile], int]  # predicted peak bytes of a case on a profile


def estimated_peak_bytes(case: Case, profile: HardwareProfile) -> int:
    """The memory estimator's predicted peak, by the formulas (:mod:`gpubench.estimate`;
    imported on first use: the estimator imports torch). A factory model's shape is read
    once, in a child process (:func:`gpubench.estimate.isolated.shape_safely`: the user's
    code never runs in the session's process); one that cannot be read there predicts
    nothing fits, so the search starts at a batch of 1 and walks up."""
    from gpubench.estimate.isolated import EstimateFailed, peak_bytes_safely

    try:
        return int(peak_bytes_safely(case, profile))
    except EstimateFailed:
        return UNKNOWN_PEAK


UNKNOWN_PEAK = 2**62  # no estimate: more than any capacity


def predicted_largest_batch(
    case: Case, profile: HardwareProfile, predict: Predict, limit: int
) -> int:
    """The largest batch in ``[1, limit]`` predicted to fit ``profile``'s memory; 1 when none
    is (the prediction may be wrong: a batch of 1 is still worth a probe)."""

    def predicted_fit(batch: int) -> bool:
        return predict(case.replace(batch_size=batch), profile) <= profile.memory_bytes

    if not predicted_fit(1):
        return 1
    fitting, failing = 1, 2
    while failing <= limit and predicted_fit(failing):
        fitting, failing = failing, failing * 2
    if failing > limit:
        if predicted_fit(limit):
            return limit
        failing = limit
    while failing - fitting > 1:
        middle = (fitting + failing) // 2
        fitting, failing = (middle, failing) if predicted_fit(middle) else (fitting, middle)
    return fitting
