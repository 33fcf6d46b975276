"""The Result of a case that was estimated, not run (``--gpubench-estimate-only``).

Its status is the estimate's verdict (``fits`` is ``ok``), it is marked
``predicted`` (so :attr:`~gpubench.contracts.result.Result.ran` is False and nothing reads
a measurement into it), and its metrics and series are empty: a prediction has
no measured throughput, no loss and no measured memory, only the estimate, which
carries the predicted tokens/s (:mod:`gpubench.estimate.throughput`: a bound and a
range, calibrated from ``measured`` Results of the same workload where given). A case the
estimator cannot answer (a factory that fails to build, or hangs: see
:mod:`gpubench.estimate.isolated`) is ``crashed``, with the reason.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from typing import Any

from gpubench.contracts.case import Case
from gpubench.contracts.profiles import HardwareProfile
from gpubench.contracts.result import ErrorInfo, Result
from gpubench.estimate.isolated import estimate_safely
from gpubench.estimate.throughput import calibrate


def predicted_result(
    case: Case,
    profile: HardwareProfile,
    *,
    nodeid: str | None = None,
    run_id: str | None = None,
    trace: bool = True,
    measured: Sequence[Result] = (),
) -> Result:
    """Estimate ``case`` on ``profile`` and answer with a predicted Result; its tokens/s range
    is calibrated from ``measured`` (Results the user already has) where one matches."""
    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    start = time.perf_counter()
    answer: dict[str, Any]
    try:
        estimate = calibrate(estimate_safely(case, profile, trace=trace), case, profile, measured)
        answer = {"status": estimate.status, "estimate": estimate}
    except Exception as exc:  # the case cannot be estimated: said, never guessed
        answer = {"status": "crashed", "error": ErrorInfo.from_exception(exc)}
    return Result(
        case=case,
        profile=profile,
        predicted=True,
        nodeid=nodeid,
        run_id=run_id,
        started_at=started_at,
        duration_s=time.perf_counter() - start,
        **answer,
    )
