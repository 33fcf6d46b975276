"""Trackers: context managers that measure one thing each while a case trains.

Each tracker is used as ``with tracker:`` (or ``with tracker.track():``) and read
through getters afterwards; the engine combines them with :class:`contextlib.ExitStack`.
Clean-up (stopping a sampler thread, a final sample) is always in ``finally``
(:mod:`gpubench.worker.trackers.base`).
"""

from __future__ import annotations

from gpubench.worker.trackers.base import PeriodicSampler, Tracker, start_daemon
from gpubench.worker.trackers.host import ProcessTreeRSS
from gpubench.worker.trackers.memory import DeviceMemoryTracker
from gpubench.worker.trackers.timing import SteadyStateDetector, StepTimer

__all__ = [
    "DeviceMemoryTracker",
    "PeriodicSampler",
    "ProcessTreeRSS",
    "SteadyStateDetector",
    "StepTimer",
    "Tracker",
    "start_daemon",
]
