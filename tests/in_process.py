"""One case trained in this process by an engine, as a Result: what the engine tests share.

The worker would add its capacity, environment and conditions; these tests look at what the
engine measured (metrics, series, status) on a CPU profile with no peaks and no price.
"""

from __future__ import annotations

from gpubench.contracts.case import Case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.protocol import ProgressWriter
from gpubench.contracts.result import Result
from gpubench.worker.engines import get_engine

CPU_TEST = HardwareProfile(
    name="cpu-test",
    kind="cpu",
    memory_bytes=8 * 2**30,
    bf16_flops=None,
    fp32_flops=None,
    memory_bandwidth=None,
)


def train(
    case: Case, profile: HardwareProfile = CPU_TEST, progress: ProgressWriter | None = None
) -> Result:
    """``case``'s engine run in this process on ``profile``, its Measurement as a Result."""
    measured = get_engine(case.engine).run(case, profile, progress or ProgressWriter(None))
    return Result(
        case=case,
        profile=profile,
        status=measured.status,
        metrics=measured.metrics,
        series=measured.series,
        error=measured.error,
    )
