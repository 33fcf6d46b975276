"""gpubench: declarative GPU training benchmarks as a pytest plugin.

import gpubench

@gpubench.matrix(model=["gpt2-small", "gpt2-medium"], precision=["fp32", "bf16"])
def test_ladder(gpubench_result):
    assert gpubench_result.fits, gpubench_result.describe()
"""

from __future__ import annotations

from gpubench.case import Case, CaseError, Flags, make_case
from gpubench.matrix import Matrix, matrix, single_case
from gpubench.profiles import HardwareProfile
from gpubench.result import Metrics, Result, Stats

__version__ = "0.1.0"

__all__ = [
    "Case",
    "CaseError",
    "Flags",
    "HardwareProfile",
    "Matrix",
    "Metrics",
    "Result",
    "Stats",
    "__version__",
    "make_case",
    "matrix",
    "single_case",
]
