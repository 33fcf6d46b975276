"""Step timing: CUDA events on a GPU, ``time.perf_counter`` on a CPU; steady-state detection.

Timing rules (docs/architecture.md, "Measurement rules"): a step's time covers
data, forward, backward, clip and optimizer step. On CUDA the device is
synchronised before the start event is recorded and the end event is waited
on, so the clock brackets exactly the step's device work (nanoGPT ``bench.py``
does the same with ``torch.cuda.synchronize()``). Every step's time is kept;
the caller decides which steps are warm-up. A phase clock handed to the timer
(:class:`~gpubench.worker.measure.phases.PhaseClock`) takes the timer's start and
end as its first and last marks, so the step's phases add up to its time.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

from gpubench.worker.trackers.base import Tracker


class StepTimer(Tracker):
    """Times one step per ``with timer:`` block and keeps every step's time.

    >>> timer = StepTimer("cpu")
    >>> with timer:
    ...     pass
    >>> len(timer.times_s)
    1
    """

    def __init__(self, device: Any = "cpu", phases: Any = None) -> None:
        import torch

        self.phases = phases  # a PhaseClock: begins at the start mark, ends at the end mark
        self.device = torch.device(device)
        self.is_cuda = self.device.type == "cuda"
        self.timing = "cuda-events" if self.is_cuda else "perf_counter"
        self.times_s: list[float] = []
        self._t0: float | None = None
        self._start_event: Any = None
        self._end_event: Any = None
        if self.is_cuda:
            # One pair reused: every step ends with a synchronise on the end event,
            # so the pair is free again before the next step records into it.
            self._start_event = torch.cuda.Event(enable_timing=True)
            self._end_event = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        if self.is_cuda:
            import torch

            torch.cuda.synchronize(self.device)  # nothing earlier may leak into this step
            self._start_event.record()
            start = self._start_event
        else:
            self._t0 = start = time.perf_counter()
        if self.phases is not None:
            self.phases.begin(start)

    def stop(self) -> None:
        if self.is_cuda:
            if self._start_event is None:
                return
            self._end_event.record()
            if self.phases is not None:
                self.phases.end(self._end_event)
            self._end_event.synchronize()
            elapsed = self._start_event.elapsed_time(self._end_event) / 1000.0  # ms -> s
        else:
            if self._t0 is None:
                return
            now = time.perf_counter()
            if self.phases is not None:
                self.phases.end(now)
            elapsed = now - self._t0
            self._t0 = None
        self.times_s.append(elapsed)

    @property
    def last_s(self) -> float:
        """The most recent step's time in seconds."""
        if not self.times_s:
            raise RuntimeError("no step has been timed yet")
        return self.times_s[-1]


class SteadyStateDetector:
    """Decides when warm-up is over from a stream of step times.

    Steady once the last ``window`` step times have a coefficient of variation
    (sample stdev / mean) below ``max_cv`` *and* their median is within
    ``max_drift`` (relative) of the previous, non-overlapping window's median.
    Needs at least ``2 * window`` times. Pure: no torch, no clock.
    """

    def __init__(self, window: int = 5, max_cv: float = 0.10, max_drift: float = 0.10) -> None:
        if window < 2:
            raise ValueError(f"window={window} must be >= 2 (a CV needs two values)")
        self.window = window
        self.max_cv = max_cv
        self.max_drift = max_drift
        self.times_s: list[float] = []
        self.steady_at: int | None = None  # number of times seen when first steady

    def add(self, step_time_s: float) -> bool:
        """Record one step time; True when the series is (now) steady."""
        self.times_s.append(float(step_time_s))
        steady = self.is_steady(self.times_s)
        if steady and self.steady_at is None:
            self.steady_at = len(self.times_s)
        return steady

    @property
    def steady(self) -> bool:
        """Whether the series has been steady at any point so far."""
        return self.steady_at is not None

    def is_steady(self, times_s: Sequence[float]) -> bool:
        w = self.window
        if len(times_s) < 2 * w:
            return False
        last = list(times_s[-w:])
        previous = list(times_s[-2 * w : -w])
        if not all(math.isfinite(t) and t > 0 for t in last + previous):
            return False
        cv = statistics.stdev(last) / statistics.fmean(last)
        median_last = statistics.median(last)
        median_previous = statistics.median(previous)
        drift = abs(median_last - median_previous) / median_previous
        return cv < self.max_cv and drift <= self.max_drift
