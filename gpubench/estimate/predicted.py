"""The Result of a case that was estimated, not run (``--gpubench-estimate-only``).

Its status is the estimate's verdict (``fits`` is ``ok``), it is marked
``predicted`` (so :attr:`~gpubench.result.Result.ran` is False and nothing reads
a measurement into it), and its metrics and series are empty: a prediction has
no throughput, no loss and no measured memory, only the estimate.
"""

from __future__ import annotations

import datetime
import time

from gpubench.case import Case
from gpubench.profiles import HardwareProfile
from gpubench.result import Result


def predicted_result(
    case: Case,
    profile: HardwareProfile,
    *,
    nodeid: str | None = None,
    run_id: str | None = None,
    trace: bool = True,
) -> Result:
    """Estimate ``case`` on ``profile`` and answer with a predicted Result."""
    from gpubench.estimate import estimate_case

    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    start = time.perf_counter()
    estimate = estimate_case(case, profile, trace=trace)
    return Result(
        case=case,
        profile=profile,
        status=estimate.status,
        estimate=estimate,
        predicted=True,
        nodeid=nodeid,
        run_id=run_id,
        started_at=started_at,
        duration_s=time.perf_counter() - start,
    )
