"""gpubench: declarative GPU training benchmarks as a pytest plugin.

import gpubench

@gpubench.matrix(model=["gpt2-small", "gpt2-medium"], precision=["fp32", "bf16"])
def test_ladder(gpubench_result):
    assert gpubench_result.fits, gpubench_result.describe()
"""

from __future__ import annotations

from gpubench.case import Case, CaseError, Flags, make_case
from gpubench.matrix import Matrix, matrix, single_case
from gpubench.probe import BatchProbe, ProbeError, probe_batch_size
from gpubench.profiles import HardwareProfile
from gpubench.result import Metrics, Result, Stats
from gpubench.version import __version__

__all__ = [
    "BatchProbe",
    "Case",
    "CaseError",
    "Flags",
    "HardwareProfile",
    "Matrix",
    "Metrics",
    "ProbeError",
    "Result",
    "Stats",
    "__version__",
    "make_case",
    "matrix",
    "probe_batch_size",
    "single_case",
]
