"""gpubench: declarative GPU training benchmarks as a pytest plugin."""

from __future__ import annotations

from gpubench.case import Case, CaseError, Flags, make_case
from gpubench.profiles import HardwareProfile
from gpubench.result import Metrics, Result, Stats

__version__ = "0.1.0"

__all__ = [
    "Case",
    "CaseError",
    "Flags",
    "HardwareProfile",
    "Metrics",
    "Result",
    "Stats",
    "__version__",
    "make_case",
]
