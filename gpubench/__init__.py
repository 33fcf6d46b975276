"""gpubench: declarative GPU training benchmarks as a pytest plugin.

import gpubench

@gpubench.matrix(model=["gpt2-small", "gpt2-medium"], precision=["fp32", "bf16"])
def test_ladder(gpubench_result):
    assert gpubench_result.fits, gpubench_result.describe()

The records (Case, Result, HardwareProfile) are imported with the package; the
declaration (matrix) and the batch probe on first use, so a worker process, which
imports ``gpubench.worker``, loads nothing of the parent's side through this file.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gpubench.contracts.case import Case, CaseError, Flags, make_case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.result import Metrics, Result, Stats
from gpubench.version import __version__

if TYPE_CHECKING:
    from gpubench.declaration import Matrix, go_no_go, matrix, single_case
    from gpubench.outcomes import assert_healthy, fit_finding, xfail_unless_fits
    from gpubench.probe import BatchProbe, ProbeError, probe_batch_size

_ON_FIRST_USE = {
    "Matrix": "gpubench.declaration",
    "matrix": "gpubench.declaration",
    "single_case": "gpubench.declaration",
    "go_no_go": "gpubench.declaration",
    "assert_healthy": "gpubench.outcomes",
    "xfail_unless_fits": "gpubench.outcomes",
    "fit_finding": "gpubench.outcomes",
    "BatchProbe": "gpubench.probe",
    "ProbeError": "gpubench.probe",
    "probe_batch_size": "gpubench.probe",
}

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
    "assert_healthy",
    "fit_finding",
    "go_no_go",
    "make_case",
    "matrix",
    "probe_batch_size",
    "single_case",
    "xfail_unless_fits",
]


def __getattr__(name: str) -> Any:
    """The parent side's public names, imported when first asked for (PEP 562)."""
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module 'gpubench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
